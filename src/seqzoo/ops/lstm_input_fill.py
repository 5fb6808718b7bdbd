"""The input site of the fused LSTM loop: gate inputs ``d ⊙ N_x(x W_ih^T + b_ih)`` chunk by chunk, and their
gradients (``N_x`` none, LayerNorm or ATN; the ATN chunk runs in one C call where the kernels are built)."""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from seqzoo.ops import workspace
from seqzoo.ops.gemm import linear, mm, mm_into
from seqzoo.ops.lstm_kernel_abi import NATIVE_DTYPES, InputAtnCfg, native_lib, ptr
from seqzoo.ops.lstm_sites import SiteNorm, scaled_affine
from seqzoo.ops.window_norm import WindowState, window_init_state


class InputFill:
    """Gate inputs ``d ⊙ N_x(xp_t)`` of a chunk, time-major; ``N_x`` None, LayerNorm or ATN, done here per chunk.

    With ``weight_ih`` the input is the raw ``x`` and ``xp = x W_ih^T + b_ih`` is one GEMM per chunk (its
    gradients ``dx``, ``dW_ih``, ``db_ih`` too), so neither ``xp``, its normalized form nor their gradients
    ever exist as whole (B, L, 4H) tensors (fresh 32 MiB buffers cost more than the normalization itself on
    this machine). ATN needs no per-step work at this site: a chunk's window sums come from a float64
    prefix sum over the per-step ``(Σa, Σa²)`` history, and in backward the gradient of each step's window
    statistics reaches the earlier steps of the window through a suffix sum, both per chunk.
    """

    def __init__(self, xin: Tensor, norm: SiteNorm | None, d: Tensor, keep: bool, state: WindowState | None = None,
                 weight_ih: Tensor | None = None, bias_ih: Tensor | None = None, lp: torch.dtype | None = None) -> None:
        self.xin, self.norm, self.d, self.keep = xin, norm, d, keep
        self.weight_ih, self.bias_ih, self.lp = weight_ih, bias_ih, lp
        if lp is not None and weight_ih is not None:
            self.weight_ih_lp = weight_ih.to(lp)
        self.stats: list[tuple[Tensor, Tensor]] = []
        self.xp_chunks: list[Tensor] = []
        self.x_work: Tensor | None = None
        self.grad_w: Tensor | None = None
        self.grad_b: Tensor | None = None
        bsz, seq_len = xin.shape[0], xin.shape[1]
        feat = weight_ih.shape[0] if weight_ih is not None else xin.shape[2]
        self.features = feat
        if norm is not None:
            self.weight_f, self.bias_f = scaled_affine(norm, feat, d, xin)
        self.k = norm.window if norm is not None else None
        if self.k is not None:
            k = self.k
            if state is None:
                state = window_init_state(bsz, k, device=xin.device, dtype=xin.dtype)
            ring, _, count = state
            self.count0 = count
            offs = torch.arange(k, device=xin.device)
            idx = (count.unsqueeze(1) - k + offs) % k
            self.E = xin.new_zeros(seq_len + k, bsz, 2)  # E[k + t]: step t's (Σa, Σa²); E[:k] the incoming ring
            self.E[:k] = ring.to(xin.dtype).gather(2, idx.unsqueeze(1).expand(bsz, 2, k)).permute(2, 0, 1)
            self.P = torch.zeros(seq_len + k + 1, bsz, 2, dtype=torch.float64, device=xin.device)  # P[i] = Σ E[:i]
            torch.cumsum(self.E[:k].double(), 0, out=self.P[1:k + 1])
            steps = torch.arange(1, seq_len + 1, device=xin.device).unsqueeze(1) + count.unsqueeze(0)
            self.IC = (1.0 / (torch.clamp(steps, max=k).double() * feat)).unsqueeze(-1)  # (L, B, 1)
            self.MEAN = xin.new_empty(seq_len, bsz, 1)
            self.RS = xin.new_empty(seq_len, bsz, 1)

    def _input_chunk(self, t0: int, n: int) -> Tensor:
        """A time-major copy of the raw input chunk (``x`` or ``xp``) in a reused workspace."""
        if self.x_work is None:
            self.x_work = workspace.take((n, self.xin.shape[0], self.xin.shape[2]), self.xin.dtype,
                                         self.xin.device)  # the first chunk is longest
        xc = self.x_work[:n]
        xc.copy_(self.xin[:, t0:t0 + n].transpose(0, 1))
        return xc

    def _xp_chunk(self, t0: int, n: int, k_chunk: int | None = None) -> Tensor:
        """The projected input chunk ``xp`` (n, B, 4H): saved in forward, or recomputed/copied."""
        if self.weight_ih is None:
            return self._input_chunk(t0, n)
        if k_chunk is not None and self.xp_chunks:
            return self.xp_chunks[k_chunk]
        xc = self._input_chunk(t0, n)
        bsz = xc.shape[1]
        flat = xc.view(n * bsz, -1)
        if self.lp is not None:  # bfloat16 GEMM, float32 result (plus the bias)
            xp_lp = mm(flat.to(self.lp), self.weight_ih_lp.t())
            xp = (torch.add(self.bias_ih, xp_lp) if self.bias_ih is not None else xp_lp.to(flat.dtype))
            xp = xp.view(n, bsz, self.features)
        else:
            xp = linear(flat, self.weight_ih, self.bias_ih).view(n, bsz, self.features)
        if self.keep and k_chunk is None and self.norm is not None:
            self.xp_chunks.append(xp)
        return xp

    def fill(self, t0: int, n: int, out: Tensor) -> Tensor:
        if self.norm is None:
            if self.weight_ih is None:
                torch.mul(self.xin[:, t0:t0 + n].transpose(0, 1), self.d, out=out)
                return out
            return self._xp_chunk(t0, n).mul_(self.d)
        xc = self._xp_chunk(t0, n)
        if self.k is None:
            y, mu, rs = torch.native_layer_norm(xc, (self.features,), self.weight_f, self.bias_f, self.norm.eps)
            if self.keep:
                self.stats.append((mu, rs))
            return y
        k = self.k
        y = xc if self.weight_ih is not None and not self.keep else workspace.take(xc.shape, xc.dtype, xc.device)
        if self._native_atn(xc, y, t0, n, "forward"):
            return y
        e = self.E[k + t0:k + t0 + n]
        torch.sum(xc, -1, out=e[..., 0])
        torch.linalg.vecdot(xc, xc, out=e[..., 1])
        torch.cumsum(e.double(), 0, out=self.P[k + t0 + 1:k + t0 + n + 1])
        self.P[k + t0 + 1:k + t0 + n + 1] += self.P[k + t0]
        m = (self.P[k + t0 + 1:k + t0 + n + 1] - self.P[t0 + 1:t0 + n + 1]) * self.IC[t0:t0 + n]  # (mean, E a²)
        mean = m[..., 0:1]
        rs = torch.rsqrt(torch.clamp(m[..., 1:2] - mean * mean, min=0.0) + self.norm.eps)
        self.MEAN[t0:t0 + n] = mean
        self.RS[t0:t0 + n] = rs
        torch.sub(xc, self.MEAN[t0:t0 + n], out=y)
        y.mul_(self.RS[t0:t0 + n]).mul_(self.weight_f)
        if self.bias_f is not None:
            y.add_(self.bias_f)
        return y

    def _native_atn(self, xc: Tensor, out: Tensor, t0: int, n: int, direction: str,
                    dgates: Tensor | None = None) -> bool:
        """Run this chunk's ATN forward (``out`` = y) or backward (``out`` = dx) in one C call, if available."""
        lib = native_lib(xc)
        if lib is None or not xc.is_contiguous() or (dgates is not None and not dgates.is_contiguous()):
            return False
        assert self.norm is not None and self.k is not None
        if not hasattr(self, "native_cfg"):
            w = self.norm.weight
            self.native_keep = (self.weight_f.detach().contiguous(),
                                self.bias_f.detach().contiguous() if self.bias_f is not None else None,
                                w.detach().contiguous() if w is not None else None)
            wf, bf, wu = self.native_keep
            self.native_cfg = InputAtnCfg(B=xc.shape[1], F=self.features, k=self.k, eps=float(self.norm.eps),
                                           E=self.E.data_ptr(), P=self.P.data_ptr(), IC=self.IC.data_ptr(),
                                           MEAN=self.MEAN.data_ptr(), RS=self.RS.data_ptr(), wf=ptr(wf), bf=ptr(bf),
                                           w=ptr(wu))
        cfg = self.native_cfg
        cfg.n, cfg.t0, cfg.xc = n, t0, xc.data_ptr()
        suffix = NATIVE_DTYPES[xc.dtype]
        if direction == "forward":
            cfg.y = out.data_ptr()
            getattr(lib, f"input_atn_forward_{suffix}")(ctypes.byref(cfg))
            return True
        assert dgates is not None
        cfg.dg, cfg.dx, cfg.Q = dgates.data_ptr(), out.data_ptr(), self.Q.data_ptr()
        cfg.gw, cfg.gb = ptr(self.grad_w), ptr(self.grad_b)
        getattr(lib, f"input_atn_backward_{suffix}")(ctypes.byref(cfg))
        return True

    def final_state(self) -> WindowState | None:
        if self.k is None:
            return None
        k, seq_len = self.k, self.xin.shape[1]
        bsz = self.E.shape[1]
        idx = (self.count0.unsqueeze(1) + seq_len - k + torch.arange(k, device=self.E.device)) % k
        ring = self.E.new_empty(bsz, 2, k).scatter_(2, idx.unsqueeze(1).expand(bsz, 2, k),
                                                     self.E[seq_len:].permute(1, 2, 0))
        sums = (self.P[seq_len + k] - self.P[seq_len]).to(self.E.dtype)
        return ring, sums, self.count0 + seq_len

    # backward
    def begin_backward(self, need_x: bool, need_w_ih: bool, need_b_ih: bool) -> None:
        bsz, seq_len = self.xin.shape[0], self.xin.shape[1]
        w, b = (self.norm.weight, self.norm.bias) if self.norm is not None else (None, None)
        self.grad_w = torch.zeros_like(w) if w is not None else None
        self.grad_b = torch.zeros_like(b) if b is not None else None
        self.grad_x: Tensor | None = None
        self.grad_x_tm: Tensor | None = None
        if need_x and self.weight_ih is None:
            self.grad_x = self.xin.new_empty(self.xin.shape)
            self.grad_x_tm = self.grad_x.transpose(0, 1)
        elif need_x:  # time-major (a GEMM writes each chunk), transposed once at the end
            self.grad_x_tm = self.xin.new_empty(seq_len, bsz, self.xin.shape[2])
        self.grad_w_ih = torch.zeros_like(self.weight_ih) if need_w_ih and self.weight_ih is not None else None
        self.grad_b_ih = torch.zeros_like(self.bias_ih) if need_b_ih and self.bias_ih is not None else None
        if self.k is not None:
            self.Q = torch.zeros(seq_len + self.k + 1, bsz, 2, dtype=torch.float64, device=self.xin.device)

    def grad_input(self) -> Tensor | None:
        if self.grad_x is None and self.grad_x_tm is not None:
            self.grad_x = self.grad_x_tm.transpose(0, 1).contiguous()
        return self.grad_x

    def backward(self, k_chunk: int, t0: int, n: int, dgates: Tensor) -> None:
        """Gradients of the chunk's input (and projection) from ``dgates``; the norm's gain and bias grads."""
        dxp = dgates if self.norm is None else self._norm_backward(k_chunk, t0, n, dgates)
        if self.weight_ih is None:
            if self.grad_x_tm is not None:
                self.grad_x_tm[t0:t0 + n].copy_(dxp)
            return
        bsz, d_in = self.xin.shape[0], self.xin.shape[2]
        flat = dxp.reshape(n * bsz, self.features)
        if self.lp is not None:
            flat_lp = flat.to(self.lp)
            if self.grad_x_tm is not None:
                self.grad_x_tm[t0:t0 + n].view(n * bsz, d_in).copy_(mm(flat_lp, self.weight_ih_lp))
            if self.grad_w_ih is not None:
                self.grad_w_ih.add_(mm(flat_lp.t(), self._input_chunk(t0, n).view(n * bsz, d_in).to(self.lp)))
        else:
            if self.grad_x_tm is not None:
                mm_into(self.grad_x_tm[t0:t0 + n].view(n * bsz, d_in), flat, self.weight_ih)
            if self.grad_w_ih is not None:
                mm_into(self.grad_w_ih, flat.t(), self._input_chunk(t0, n).view(n * bsz, d_in), accumulate=True)
        if self.grad_b_ih is not None:
            self.grad_b_ih.add_(flat.sum(0))

    def _norm_backward(self, k_chunk: int, t0: int, n: int, dgates: Tensor) -> Tensor:
        assert self.norm is not None
        w, b = self.norm.weight, self.norm.bias
        xc = self._xp_chunk(t0, n, k_chunk)
        if self.k is None:
            mu, rs = self.stats[k_chunk]
            dx, dw, db = torch.ops.aten.native_layer_norm_backward(
                dgates, xc, (self.features,), mu, rs, w, b, [True, w is not None, b is not None])
            if self.grad_w is not None:
                self.grad_w.add_(dw)
            if self.grad_b is not None:
                self.grad_b.add_(db)
            return dx
        k = self.k
        dx_native = workspace.take(xc.shape, xc.dtype, xc.device)
        if self._native_atn(xc, dx_native, t0, n, "backward", dgates):
            return dx_native
        mean, rs = self.MEAN[t0:t0 + n], self.RS[t0:t0 + n]
        z = (xc - mean).mul_(rs)
        if self.grad_b is not None:
            self.grad_b.add_(dgates.sum((0, 1)))
        if self.grad_w is not None:
            self.grad_w.add_((dgates * z).sum((0, 1)))
        dz = dgates * w if w is not None else dgates
        s_a, s_b = dz.sum(-1, keepdim=True).double(), torch.linalg.vecdot(dz, z).unsqueeze(-1).double()
        ic, rsd, md = self.IC[t0:t0 + n], rs.double(), mean.double()
        ds = torch.cat([ic * (md * rsd * rsd * s_b - rsd * s_a), -ic * rsd * rsd * s_b], -1)  # d(S1, S2)·(1, 2)
        # Q[u] = Σ_{v ≥ u} ds[v]; step t gets R_t = Q[t] - Q[t + k] (the steps whose window holds t)
        self.Q[t0:t0 + n] = torch.flip(torch.cumsum(torch.flip(ds, (0,)), 0), (0,)) + self.Q[t0 + n]
        r = (self.Q[t0:t0 + n] - self.Q[t0 + k:t0 + n + k]).to(xc.dtype)
        dx = torch.addcmul(r[..., 0:1], dz, rs)
        return dx.addcmul_(xc, r[..., 1:2])


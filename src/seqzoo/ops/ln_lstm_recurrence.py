"""The LSTM time loop with normalized recurrent sites (LN-LSTM / ATN-LSTM layout of Ba et al. 2016).

Per step, with ``xn_t`` the normalized input site (LayerNorm: done chunk by chunk inside the fast path;
ATN: for all steps at once by ``ops.window_norm.window_normalize_sequence`` before the loop)::

    gates_t = xn_t + N_h(h_{t-1} W_hh^T + b_hh)             # N_h over all 4H pre-activations jointly
    c_t     = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g)                 # torch gate order (i, f, g, o)
    h_t     = σ(o) ⊙ tanh(N_c(c_t))                          # the carried c_t stays un-normalized

Each in-loop site norm ``N`` is described by a ``SiteNorm(window, weight, bias, eps)``: ``window=None``
is LayerNorm over the current pre-activation, ``window=k`` is Assorted-Time Normalization (statistics
pooled over the last ``k`` pre-activations of the site, spec §1; its state is the ring buffer of
``ops.window_norm``). ``norm_lstm_sequence_reference`` is the slow, obviously-correct twin (autograd
through a plain loop); ``norm_lstm_sequence`` is the fast path with the same contract: a custom autograd
Function with a hand-written backward through time (the same design as ``ops.lstm_recurrence``):

* Forward: time-major chunks of gate buffers; per step one ``addmm`` for the recurrent pre-activation
  (kept for backward), the site norm (LayerNorm: one ``native_layer_norm``; ATN: running window sums of
  ``(Σa, Σa²)`` updated in O(1) from a time-major history, a dozen tiny ops on (B, 2) tensors), one
  ``sigmoid_`` over all 4H gates (``tanh(z) = 2σ(2z) − 1`` with the g rows scaled by 2 through the norm's
  gain and bias) and a sigmoid for ``tanh(N_c(c_t))`` (the c-site gain and bias are doubled).
* Backward: everything that does not depend on the incoming gradient is computed per chunk before its
  steps; per step the site backward is one ``native_layer_norm_backward`` (LayerNorm) or, for ATN, the
  gradient of the window statistics as two per-sample scalars (one tiny ``bmm`` with a per-chunk 2x2
  factor) whose effect on the earlier steps of the window is a reverse running sum; ``dW_hh``, ``db_hh``
  and the norm gains and biases are one reduction per chunk.

C kernels: on CPU in float32/float64 each chunk of steps runs in one C call (``csrc/norm_lstm_step.cpp``, built
and cached by ``ops.native_kernels``), recurrent products included (split by columns over the OpenMP threads):
forward the site statistics, gates, cell update and output; backward the gate derivatives from the saved
activations, both site backwards (with their gain/bias gradients accumulated in place) and the padding
pass-through. An ATN input site is one C call per chunk. Under the bf16 path the per-step products stay bfloat16
oneDNN GEMMs in Python and only the pointwise work of a step is one C call. Python keeps the chunking, the large
GEMMs (``ops.gemm``: oneDNN) and the per-chunk reductions; without a compiler (or with ``SEQZOO_NATIVE=0``) the
torch-op loop described above runs instead, with the same results. Both are tested against the reference twin.
Identity sites (``SiteNorm(0, ...)``) make the same loop serve the plain LSTM.

Limits (the caller falls back to the generic loop): ATN sites take no ``mask``, and gradients do not flow
into or out of the ATN window states (``h_state``/``c_state`` must not require grad; the returned states
are detached) — the spec resets windows per batch and per BPTT segment, so nothing crosses them. The
variance clamp at 0 of the reference is not differentiated (only matters for a constant window).
"""

from __future__ import annotations

import ctypes
from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from seqzoo.ops import native_kernels, workspace
from seqzoo.ops.gemm import addmm_into, linear, mm, mm_into
from seqzoo.ops.lstm_recurrence import _backward_buffers, _chunk_steps, _gate_scale, _time_major_mask
from seqzoo.ops.window_norm import WindowState, window_init_state, window_moments_step

_TRAIN_CHUNK_BYTES = 8 << 20
_INFER_CHUNK_BYTES = 2 << 20


class SiteNorm(NamedTuple):
    """One site: ``window`` None (LayerNorm), k >= 1 (ATN) or 0 (identity: no normalization, no affine).

    ``weight``/``bias`` are the affine gain and shift (or None), ``eps`` the variance floor.
    """

    window: int | None
    weight: Tensor | None
    bias: Tensor | None
    eps: float = 1e-5


IDENTITY_SITE = SiteNorm(0, None, None)


def _is_identity(norm: SiteNorm | None) -> bool:
    return norm is not None and norm.window == 0


def _is_window(norm: SiteNorm) -> bool:
    return norm.window is not None and norm.window > 0


# ----- the reference twin ---------------------------------------------------------------------
def _site_reference(norm: SiteNorm, a: Tensor, state: WindowState | None) -> tuple[Tensor, WindowState | None]:
    if _is_identity(norm):
        return a, None
    if norm.window is None:
        return F.layer_norm(a, (a.shape[-1],), norm.weight, norm.bias, norm.eps), None
    assert state is not None
    mean, var, state = window_moments_step(a, state, norm.window)
    y = (a - mean.unsqueeze(-1)) * torch.rsqrt(var.unsqueeze(-1) + norm.eps)
    if norm.weight is not None:
        y = y * norm.weight
    if norm.bias is not None:
        y = y + norm.bias
    return y, state


def _fresh(norm: SiteNorm, state: WindowState | None, like: Tensor, features: int) -> WindowState | None:
    if not _is_window(norm):
        return None
    if state is None:
        return window_init_state(like.shape[0], norm.window, device=like.device, dtype=like.dtype)
    return tuple(state)  # type: ignore[return-value]


def norm_lstm_sequence_reference(
    xp: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor, bias_hh: Tensor | None, norms: dict[str, SiteNorm],
    mask: Tensor | None = None, states: dict[str, WindowState] | None = None, *, weight_ih: Tensor | None = None,
    bias_ih: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, dict[str, WindowState]]:
    """``(hs (B, L, H), h_T, c_T, window states)`` by a plain autograd loop (padded steps carry all state).

    ``xp`` is the projected input ``W_ih x_t + b_ih`` of every step; ``norms`` maps the sites "h", "c" and
    optionally "x" (without it ``xp`` is used as given, i.e. already normalized) to their norm; ``states``
    holds incoming window states of ATN sites (missing: a fresh window) and the result the final ones.
    With ``weight_ih`` the first argument is the raw input and ``xp = F.linear(x, weight_ih, bias_ih)``.
    """
    if weight_ih is not None:
        xp = F.linear(xp, weight_ih, bias_ih)
    hidden = h0.shape[-1]
    feats = {"x": 4 * hidden, "h": 4 * hidden, "c": hidden}
    st = {site: _fresh(norm, (states or {}).get(site), h0, feats[site]) for site, norm in norms.items()}
    h, c = h0, c0
    outs = []
    masks = mask.unbind(1) if mask is not None else [None] * xp.shape[1]
    for xp_t, m in zip(xp.unbind(1), masks):
        new = dict(st)
        xn_t = xp_t
        if "x" in norms:
            xn_t, new["x"] = _site_reference(norms["x"], xp_t, st["x"])
        a = h @ weight_hh.t()
        if bias_hh is not None:
            a = a + bias_hh
        y, new["h"] = _site_reference(norms["h"], a, st["h"])
        i, f, g, o = (xn_t + y).chunk(4, dim=-1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        cn, new["c"] = _site_reference(norms["c"], c_new, st["c"])
        h_new = torch.sigmoid(o) * torch.tanh(cn)
        if m is not None:
            h_new = torch.where(m.unsqueeze(-1), h_new, h)
            c_new = torch.where(m.unsqueeze(-1), c_new, c)
            new = {site: _where_state(m, new[site], st[site]) for site in new}
        h, c, st = h_new, c_new, new
        outs.append(h)
    return torch.stack(outs, 1), h, c, {site: v for site, v in st.items() if v is not None}


def _where_state(m: Tensor, new: WindowState | None, old: WindowState | None) -> WindowState | None:
    if new is None or old is None:
        return new
    return tuple(torch.where(m.view(-1, *([1] * (s.dim() - 1))), s, o) for s, o in zip(new, old))  # type: ignore


# ----- fast path: site norms inside the loop ------------------------------------------------------
_GRAD_INPUT_ONLY = [True, False, False]


class _LNSite:
    """LayerNorm site. Forward output is ``weight_f ⊙ ẑ + bias_f`` (gain and bias pre-scaled by the caller)."""

    def __init__(self, norm: SiteNorm, features: int, scale: Tensor | float, like: Tensor, keep: bool) -> None:
        self.norm, self.features, self.keep = norm, (features,), keep
        self.weight_f, self.bias_f = _scaled_affine(norm, features, scale, like)
        self.mu: list[Tensor] = []
        self.rs: list[Tensor] = []

    def forward(self, t: int, a: Tensor) -> Tensor:
        y, mu, rs = torch.native_layer_norm(a, self.features, self.weight_f, self.bias_f, self.norm.eps)
        if self.keep:
            self.mu.append(mu)
            self.rs.append(rs)
        return y

    def final_state(self) -> WindowState | None:
        return None

    def native_cfg(self, seq_len: int, like: Tensor) -> _SiteCfg:
        """The C kernel's view of this site; with ``keep`` the per-step (mean, rs) go to (L, B, 1) buffers."""
        cfg = _site_cfg(0, 1, self.features[0], seq_len, self.norm, self.weight_f, self.bias_f, self)
        if self.keep:
            self.MU = like.new_empty(seq_len, like.shape[0], 1)
            self.RS = like.new_empty(seq_len, like.shape[0], 1)
            cfg.mu, cfg.rs = self.MU.data_ptr(), self.RS.data_ptr()
        return cfg

    # backward
    def begin_backward(self, like: Tensor) -> None:
        self.grad_w = torch.zeros_like(self.norm.weight) if self.norm.weight is not None else None
        self.grad_b = torch.zeros_like(self.norm.bias) if self.norm.bias is not None else None

    def begin_chunk(self, t0: int, n: int, a: Tensor) -> None:
        pass

    def backward(self, t: int, dy: Tensor, a: Tensor) -> Tensor:
        return torch.ops.aten.native_layer_norm_backward(dy, a, self.features, self.mu[t], self.rs[t], self.norm.weight,
                                                         None, _GRAD_INPUT_ONLY)[0]

    def end_chunk(self, t0: int, n: int, a: Tensor, dy: Tensor) -> None:
        if self.grad_b is not None:
            self.grad_b.add_(dy.sum((0, 1)))
        if self.grad_w is not None:
            z = (a - torch.stack(self.mu[t0:t0 + n])) * torch.stack(self.rs[t0:t0 + n])
            self.grad_w.add_((z.mul_(dy)).sum((0, 1)))


def _scaled_affine(norm: SiteNorm, features: int, scale: Tensor | float, like: Tensor) -> tuple[Tensor, Tensor | None]:
    """``(scale * weight, scale * bias)``, the weight defaulting to ones (the forward folds the gate scaling in)."""
    w = norm.weight if norm.weight is not None else like.new_ones(features)
    return w * scale, (norm.bias * scale if norm.bias is not None else None)


class _WindowSite:
    """ATN site: LayerNorm with statistics over the last ``k`` pre-activations, O(1) window sums per step.

    Time-major histories: ``E[k + t]`` holds step t's ``(Σa, Σa²)`` (``E[:k]`` the incoming ring, oldest
    first), ``W[t + 1]`` the window sums after step t, ``M[t]`` the window ``(mean, E[a²])``, ``RS[t]``
    the reciprocal standard deviation.
    """

    def __init__(self, norm: SiteNorm, features: int, scale: Tensor | float, state: WindowState | None,
                 seq_len: int, like: Tensor) -> None:
        k = norm.window
        assert k is not None
        self.norm, self.k, self.features, self.seq_len = norm, k, features, seq_len
        bsz = like.shape[0]
        self.weight_f, self.bias_f = _scaled_affine(norm, features, scale, like)
        if state is None:
            state = window_init_state(bsz, k, device=like.device, dtype=like.dtype)
        ring, sums, count = state
        self.count0 = count
        offs = torch.arange(k, device=like.device)
        idx = (count.unsqueeze(1) - k + offs) % k  # slots of the steps count-k .. count-1
        self.E = like.new_zeros(seq_len + k, bsz, 2)
        self.E[:k] = ring.to(like.dtype).gather(2, idx.unsqueeze(1).expand(bsz, 2, k)).permute(2, 0, 1)
        self.W = like.new_empty(seq_len + 1, bsz, 2)
        self.W[0] = sums.to(like.dtype)
        steps = torch.arange(1, seq_len + 1, device=like.device).unsqueeze(1) + count.unsqueeze(0)  # (L, B)
        self.IC = (1.0 / (torch.clamp(steps, max=k).to(like.dtype) * features)).unsqueeze(-1)  # (L, B, 1)
        self.M = like.new_empty(seq_len, bsz, 2)
        self.RS = like.new_empty(seq_len, bsz, 1)
        self.z_work = like.new_empty(bsz, features)
        self._views_made = False

    def _views(self) -> None:
        """Per-step views for the torch-op loop (made on first use: the C kernels index the buffers directly)."""
        if not self._views_made:
            self.E_s, self.W_s, self.M_s, self.RS_s = self.E.unbind(0), self.W.unbind(0), self.M.unbind(0), \
                self.RS.unbind(0)
            self.IC_s = self.IC.unbind(0)
            self._views_made = True

    def forward(self, t: int, a: Tensor) -> Tensor:
        self._views()
        k = self.k
        e = self.E_s[k + t]
        torch.sum(a, -1, out=e[:, 0])
        torch.linalg.vecdot(a, a, out=e[:, 1])
        w_new = self.W_s[t + 1]
        torch.add(self.W_s[t], e, out=w_new)
        w_new.sub_(self.E_s[t])  # the step leaving the window (zeros before the first step)
        m = self.M_s[t]
        torch.mul(w_new, self.IC_s[t], out=m)
        mean = m[:, 0:1]
        var = torch.addcmul(m[:, 1:2], mean, mean, value=-1)
        var.clamp_(min=0.0).add_(self.norm.eps)
        rs = self.RS_s[t]
        torch.rsqrt(var, out=rs)
        z = torch.sub(a, mean, out=self.z_work)
        z.mul_(rs)
        if self.bias_f is not None:
            return torch.addcmul(self.bias_f, z, self.weight_f)
        return z.mul(self.weight_f)

    def native_cfg(self, seq_len: int, like: Tensor) -> _SiteCfg:
        cfg = _site_cfg(1, self.k, self.features, seq_len, self.norm, self.weight_f, self.bias_f, self)
        cfg.rs, cfg.E, cfg.W = self.RS.data_ptr(), self.E.data_ptr(), self.W.data_ptr()
        cfg.IC, cfg.M = self.IC.data_ptr(), self.M.data_ptr()
        return cfg

    def final_state(self) -> WindowState:
        """The window after the last step, in ``ops.window_norm``'s ring layout (detached)."""
        k, seq_len = self.k, self.seq_len
        bsz = self.E.shape[1]
        offs = torch.arange(k, device=self.E.device)
        idx = (self.count0.unsqueeze(1) + seq_len - k + offs) % k
        ring = self.E.new_empty(bsz, 2, k).scatter_(2, idx.unsqueeze(1).expand(bsz, 2, k),
                                                     self.E[seq_len:].permute(1, 2, 0))
        return ring, self.W[seq_len].clone(), self.count0 + seq_len

    # backward
    def begin_backward(self, like: Tensor) -> None:
        self.grad_w = torch.zeros_like(self.norm.weight) if self.norm.weight is not None else None
        self.grad_b = torch.zeros_like(self.norm.bias) if self.norm.bias is not None else None
        bsz = like.shape[1]
        self.DS = like.new_zeros(self.seq_len + self.k, bsz, 2)  # d(window sums) of every step
        self.R = like.new_zeros(bsz, 2)  # Σ of DS over the steps whose window holds the current step
        self.sab = like.new_empty(bsz, 2)

    def begin_chunk(self, t0: int, n: int, a: Tensor) -> None:
        """Per chunk: ẑ and the 2x2 factor mapping (Σdz, Σdz·ẑ) to d(Σa, Σa²)·(1, 2) of the window sums."""
        self._views()
        if not hasattr(self, "DS_s"):
            self.DS_s = self.DS.unbind(0)
        mean, ic, rs = self.M[t0:t0 + n, :, 0:1], self.IC[t0:t0 + n], self.RS[t0:t0 + n]
        self.z = (a - mean).mul_(rs)
        c = a.new_zeros(n, a.shape[1], 2, 2)
        ic_rs = ic * rs  # (n, B, 1)
        c[..., 0, 0] = -ic_rs[..., 0]
        c[..., 1, 0] = (ic_rs * rs * mean)[..., 0]
        c[..., 1, 1] = -(ic_rs * rs)[..., 0]  # doubled: d(Σa²) enters da as 2a
        self.C_s = c.unbind(0)
        self.z_s = self.z.unbind(0)
        self.t0 = t0

    def backward(self, t: int, dy: Tensor, a: Tensor) -> Tensor:
        j = t - self.t0
        dz = dy * self.weight_f_unscaled if self.norm.weight is not None else dy
        sab = self.sab
        torch.sum(dz, -1, out=sab[:, 0])
        torch.linalg.vecdot(dz, self.z_s[j], out=sab[:, 1])
        ds = self.DS_s[t]
        torch.bmm(sab.unsqueeze(1), self.C_s[j], out=ds.unsqueeze(1))
        self.R.add_(ds)
        if t + self.k < self.seq_len:
            self.R.sub_(self.DS_s[t + self.k])
        da = torch.addcmul(self.R[:, 0:1], dz, self.RS_s[t])
        return da.addcmul_(a, self.R[:, 1:2])

    @property
    def weight_f_unscaled(self) -> Tensor:
        assert self.norm.weight is not None
        return self.norm.weight

    def end_chunk(self, t0: int, n: int, a: Tensor, dy: Tensor) -> None:
        if self.grad_b is not None:
            self.grad_b.add_(dy.sum((0, 1)))
        if self.grad_w is not None:
            self.grad_w.add_((self.z * dy).sum((0, 1)))


class _IdentitySite:
    """An un-normalized site: the forward output is ``scale ⊙ a`` (the gate scaling), the backward passes ``dy``."""

    grad_w = grad_b = None

    def __init__(self, features: int, scale: Tensor | float, like: Tensor) -> None:
        self.features = features
        self.weight_f = like.new_ones(features) * scale

    def forward(self, t: int, a: Tensor) -> Tensor:
        return a * self.weight_f

    def final_state(self) -> None:
        return None

    def native_cfg(self, seq_len: int, like: Tensor) -> _SiteCfg:
        return _site_cfg(2, 0, self.features, seq_len, IDENTITY_SITE, self.weight_f, None, self)

    def begin_backward(self, like: Tensor) -> None:
        pass

    def begin_chunk(self, t0: int, n: int, a: Tensor) -> None:
        pass

    def backward(self, t: int, dy: Tensor, a: Tensor) -> Tensor:
        return dy

    def end_chunk(self, t0: int, n: int, a: Tensor, dy: Tensor) -> None:
        pass


def _make_site(norm: SiteNorm, features: int, scale: Tensor | float, state: WindowState | None, seq_len: int,
               like: Tensor, keep: bool) -> _LNSite | _WindowSite | _IdentitySite:
    if _is_identity(norm):
        return _IdentitySite(features, scale, like)
    if norm.window is None:
        return _LNSite(norm, features, scale, like, keep)
    return _WindowSite(norm, features, scale, state, seq_len, like)


class _InputFill:
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
            self.weight_f, self.bias_f = _scaled_affine(norm, feat, d, xin)
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
        lib = _native_lib(xc)
        if lib is None or not xc.is_contiguous() or (dgates is not None and not dgates.is_contiguous()):
            return False
        assert self.norm is not None and self.k is not None
        if not hasattr(self, "native_cfg"):
            w = self.norm.weight
            self.native_keep = (self.weight_f.detach().contiguous(),
                                self.bias_f.detach().contiguous() if self.bias_f is not None else None,
                                w.detach().contiguous() if w is not None else None)
            wf, bf, wu = self.native_keep
            self.native_cfg = _InputAtnCfg(B=xc.shape[1], F=self.features, k=self.k, eps=float(self.norm.eps),
                                           E=self.E.data_ptr(), P=self.P.data_ptr(), IC=self.IC.data_ptr(),
                                           MEAN=self.MEAN.data_ptr(), RS=self.RS.data_ptr(), wf=_ptr(wf), bf=_ptr(bf),
                                           w=_ptr(wu))
        cfg = self.native_cfg
        cfg.n, cfg.t0, cfg.xc = n, t0, xc.data_ptr()
        suffix = _NATIVE_DTYPES[xc.dtype]
        if direction == "forward":
            cfg.y = out.data_ptr()
            getattr(lib, f"input_atn_forward_{suffix}")(ctypes.byref(cfg))
            return True
        assert dgates is not None
        cfg.dg, cfg.dx, cfg.Q = dgates.data_ptr(), out.data_ptr(), self.Q.data_ptr()
        cfg.gw, cfg.gb = _ptr(self.grad_w), _ptr(self.grad_b)
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


# ----- native step kernels (csrc/norm_lstm_step.cpp) ----------------------------------------------
_c_int, _c_ptr = ctypes.c_int32, ctypes.c_void_p


class _SiteCfg(ctypes.Structure):
    """Mirror of ``SiteCfg`` in ``csrc/norm_lstm_step.cpp`` (pointers to contiguous tensors of the loop dtype)."""

    _fields_ = [("kind", _c_int), ("k", _c_int), ("F", _c_int), ("L", _c_int), ("eps", ctypes.c_double),
                ("wf", _c_ptr), ("bf", _c_ptr), ("w", _c_ptr), ("mu", _c_ptr), ("rs", _c_ptr), ("E", _c_ptr),
                ("W", _c_ptr), ("IC", _c_ptr), ("M", _c_ptr), ("DS", _c_ptr), ("R", _c_ptr), ("gw", _c_ptr),
                ("gb", _c_ptr)]


class _LoopCfg(ctypes.Structure):
    """Mirror of ``LoopCfg``: the loop's buffers (chunk pointers are reset per chunk) and its two sites."""

    _fields_ = [("B", _c_int), ("H", _c_int), ("has_mask", _c_int), ("pad", _c_int), ("hs", _c_ptr), ("cs", _c_ptr),
                ("acts", _c_ptr), ("pre", _c_ptr), ("tcn", _c_ptr), ("mask", _c_ptr), ("q", _c_ptr), ("dcn", _c_ptr),
                ("da", _c_ptr), ("dh", _c_ptr), ("dc", _c_ptr),
                ("sh", _SiteCfg), ("sc", _SiteCfg)]


def _ptr(t: Tensor | None) -> int | None:
    return t.data_ptr() if t is not None else None


def _site_cfg(kind: int, k: int, features: int, seq_len: int, norm: SiteNorm, weight_f: Tensor,
              bias_f: Tensor | None, owner) -> _SiteCfg:
    # Contiguous copies are kept on the owner so the pointers stay valid for the whole call.
    owner.native_w = norm.weight.detach().contiguous() if norm.weight is not None else None
    owner.native_wf = weight_f.detach().contiguous()
    owner.native_bf = bias_f.detach().contiguous() if bias_f is not None else None
    return _SiteCfg(kind=kind, k=k, F=features, L=seq_len, eps=float(norm.eps), wf=_ptr(owner.native_wf),
                    bf=_ptr(owner.native_bf), w=_ptr(owner.native_w))


class _InputAtnCfg(ctypes.Structure):
    """Mirror of ``InputAtnCfg``: the ATN input site of one chunk (forward and backward)."""

    _fields_ = [("B", _c_int), ("F", _c_int), ("k", _c_int), ("n", _c_int), ("t0", _c_int), ("pad", _c_int),
                ("eps", ctypes.c_double), ("xc", _c_ptr), ("y", _c_ptr), ("E", _c_ptr), ("P", _c_ptr), ("IC", _c_ptr),
                ("MEAN", _c_ptr), ("RS", _c_ptr), ("wf", _c_ptr), ("bf", _c_ptr), ("dg", _c_ptr), ("dx", _c_ptr),
                ("Q", _c_ptr), ("w", _c_ptr), ("gw", _c_ptr), ("gb", _c_ptr)]


_NATIVE_DTYPES = {torch.float32: "f32", torch.float64: "f64"}


def native_available(like: Tensor) -> bool:
    """True when the C step kernels will run this loop for tensors like ``like`` (CPU, float32/float64, built)."""
    return _native_lib(like) is not None


def _native_lib(like: Tensor) -> ctypes.CDLL | None:
    """The step-kernel library when it applies to this loop (CPU, float32/float64), else None."""
    if like.device.type != "cpu" or like.dtype not in _NATIVE_DTYPES:
        return None
    return native_kernels.load("norm_lstm_step")


def _state_buffers(h0: Tensor, c0: Tensor, seq_len: int) -> tuple[Tensor, Tensor]:
    """Time-major ``hs``, ``cs`` (L+1, B, H) with ``h0``/``c0`` first, from the workspace pool."""
    hs = workspace.take((seq_len + 1, *h0.shape), h0.dtype, h0.device)
    hs[0] = h0
    cs = workspace.take((seq_len + 1, *h0.shape), h0.dtype, h0.device)
    cs[0] = c0
    return hs, cs


def _forward_chunk_steps(h0: Tensor, keep: bool) -> int:
    four_h = 4 * h0.shape[1]
    return _chunk_steps(h0.shape[0], 2 * four_h + h0.shape[1], h0.element_size(),
                        _TRAIN_CHUNK_BYTES if keep else _INFER_CHUNK_BYTES)


def _forward_chunks(fill: _InputFill, h0: Tensor, seq_len: int, step: int, keep: bool,
                    chunks: list[tuple[Tensor, Tensor, Tensor]], pre_in_inference: bool = True):
    """Yield ``(t0, n, acts, pre, tcn)`` per chunk: the filled gate inputs and the (reused unless ``keep``) buffers.

    With ``keep`` each chunk's buffers are new and appended to ``chunks`` for backward; ``pre`` (the recurrent
    pre-activations) is only allocated in inference when ``pre_in_inference``.
    """
    bsz, hidden = h0.shape
    four_h = 4 * hidden
    work: tuple[Tensor, Tensor, Tensor] | None = None
    for t0 in range(0, seq_len, step):
        n = min(step, seq_len - t0)
        if keep or work is None:
            m_alloc = n if keep else min(step, seq_len)
            gate_buf = workspace.take((m_alloc if fill.norm is None else 0, bsz, four_h), h0.dtype, h0.device)
            pre_buf = workspace.take((m_alloc if keep or pre_in_inference else 0, bsz, four_h), h0.dtype, h0.device)
            work = (gate_buf, pre_buf, workspace.take((m_alloc, bsz, hidden), h0.dtype, h0.device))
        buf = fill.fill(t0, n, work[0][:n])
        if not buf.is_contiguous():
            buf = buf.contiguous()
        pre, tcn = work[1][:n], work[2][:n]
        if keep:
            chunks.append((buf, pre, tcn))
        yield t0, n, buf, pre, tcn


def _forward_native(lib, fill: _InputFill, h0: Tensor, c0: Tensor, weight_hh: Tensor, bias_hh: Tensor | None,
                    site_h, site_c, mask_tm: Tensor | None, keep: bool, lp: torch.dtype | None):
    """``_forward_core`` through the C kernels: one call per chunk (per step under bf16); same outputs and buffers."""
    bsz, seq_len = fill.xin.shape[0], fill.xin.shape[1]
    hidden = h0.shape[1]
    fn = getattr(lib, f"norm_lstm_forward_step_{_NATIVE_DTYPES[h0.dtype]}")
    w_lp = weight_hh.to(lp) if lp is not None else None
    hs, cs = _state_buffers(h0, c0, seq_len)
    mask_u8 = mask_tm.view(torch.uint8).contiguous() if mask_tm is not None else None
    cfg = _LoopCfg(B=bsz, H=hidden, has_mask=int(mask_u8 is not None), hs=hs.data_ptr(), cs=cs.data_ptr(),
                   mask=_ptr(mask_u8), sh=site_h.native_cfg(seq_len, h0), sc=site_c.native_cfg(seq_len, h0))
    ref = ctypes.byref(cfg)
    step = _forward_chunk_steps(h0, keep)
    chunks: list[tuple[Tensor, Tensor, Tensor]] = []
    if w_lp is None:  # whole chunks in C: the recurrent products too (split by columns over the threads)
        chunk_fn = getattr(lib, f"norm_lstm_forward_chunk_{_NATIVE_DTYPES[h0.dtype]}")
        w_t = weight_hh.detach().t().contiguous()  # (H, 4H)
        b_hh = bias_hh.detach().contiguous() if bias_hh is not None else None
        p_work = None if keep else h0.new_empty(bsz, 4 * hidden)
    else:  # bf16 path: one bfloat16 GEMM per step through oneDNN, then the step kernel
        h_steps = hs.unbind(0)
    for t0, n, buf, pre, tcn in _forward_chunks(fill, h0, seq_len, step, keep, chunks, pre_in_inference=False):
        cfg.acts, cfg.pre, cfg.tcn = buf.data_ptr(), (pre.data_ptr() if keep else None), tcn.data_ptr()
        if w_lp is None:
            chunk_fn(ref, t0, n, _c_ptr(w_t.data_ptr()), _c_ptr(_ptr(b_hh)), _c_ptr(_ptr(p_work)))
            continue
        for j in range(n):
            p_lp = mm(h_steps[t0 + j].to(lp), w_lp.t())
            p = torch.add(bias_hh, p_lp) if bias_hh is not None else p_lp.to(h0.dtype)
            fn(ref, t0 + j, j, _c_ptr(p.data_ptr()))
    return hs, cs, chunks, step, cfg


def _backward_chunk_native(lib, cfg: _LoopCfg, t0: int, n: int, weight_hh: Tensor, w_lp: Tensor | None, lp,
                           chunk: tuple[Tensor, Tensor, Tensor], qk: Tensor, dcnk: Tensor, dak: Tensor,
                           extra: Tensor | None, need_h0: bool) -> tuple[Tensor | None, Tensor | None]:
    """One chunk of the backward loop through the C kernels; returns ``(extra, dh0)``.

    The kernels write the chunk's gate gradients into ``qk``, the c-site's into ``dcnk`` and the recurrent
    pre-activation gradients into ``dak``, and accumulate the two in-loop sites' gain/bias gradients. In float32 and
    float64 the whole chunk is one call, recurrent products included. Under bf16 (``w_lp``) it is one call per step
    and ``extra`` carries ``da_{t+1} W_hh`` (a bfloat16 GEMM) from the step after, which the kernel adds into
    ``dh_t``.
    """
    suffix = _NATIVE_DTYPES[qk.dtype]
    ref = ctypes.byref(cfg)
    acts, pre, tcn = chunk
    cfg.acts, cfg.pre, cfg.tcn = acts.data_ptr(), pre.data_ptr(), tcn.data_ptr()
    cfg.q, cfg.dcn, cfg.da = qk.data_ptr(), dcnk.data_ptr(), dak.data_ptr()
    if w_lp is None:  # the whole chunk in C, recurrent products included
        assert extra is None
        dh0 = qk.new_empty(qk.shape[1], weight_hh.shape[1]) if t0 == 0 and need_h0 else None
        w = weight_hh.detach().contiguous()
        getattr(lib, f"norm_lstm_backward_chunk_{suffix}")(ref, t0, n, _c_ptr(w.data_ptr()), _c_ptr(_ptr(dh0)))
        return None, dh0
    fn = getattr(lib, f"norm_lstm_backward_step_{suffix}")
    da_s = dak.unbind(0)
    dh0 = None
    for j in range(n - 1, -1, -1):
        t = t0 + j
        fn(ref, t, j, _c_ptr(_ptr(extra)))
        if t > 0 or need_h0:
            extra = mm(da_s[j].to(lp), w_lp).to(qk.dtype)
        else:
            extra = None
        if t == 0:
            dh0 = extra
    return extra, dh0


def _forward_core(fill: _InputFill, h0: Tensor, c0: Tensor, weight_hh: Tensor, bias_hh: Tensor | None,
                  site_h: _LNSite | _WindowSite, site_c: _LNSite | _WindowSite, mask_tm: Tensor | None,
                  keep: bool, lp: torch.dtype | None = None):
    """The forward loop; returns ``(hs, c_T, chunks, step)`` with ``chunks`` per chunk ``(acts, pre_h, tanh_cn)``."""
    seq_len = fill.xin.shape[1]
    hidden = h0.shape[1]
    h2, h3 = 2 * hidden, 3 * hidden
    w_t = weight_hh.t()
    w_lp_t = weight_hh.to(lp).t() if lp is not None else None
    hs, cs = _state_buffers(h0, c0, seq_len)
    minus_one = torch.full((), -1.0, dtype=h0.dtype, device=h0.device)
    step = _forward_chunk_steps(h0, keep)
    h_steps, c_steps = hs.unbind(0), cs.unbind(0)
    m_steps = mask_tm.unbind(0) if mask_tm is not None else None
    chunks: list[tuple[Tensor, Tensor, Tensor]] = []
    for t0, n, buf, pre, tcn in _forward_chunks(fill, h0, seq_len, step, keep, chunks):
        a_s, i_s, f_s = buf.unbind(0), buf[..., :hidden].unbind(0), buf[..., hidden:h2].unbind(0)
        g_s, o_s = buf[..., h2:h3].unbind(0), buf[..., h3:].unbind(0)
        p_s, tc_s = pre.unbind(0), tcn.unbind(0)
        for j in range(n):
            t = t0 + j
            c_prev, c_t, h_prev, h_t, p = c_steps[t], c_steps[t + 1], h_steps[t], h_steps[t + 1], p_s[j]
            if w_lp_t is not None:  # bfloat16 GEMM, float32 pre-activation
                p_lp = mm(h_prev.to(lp), w_lp_t)
                if bias_hh is not None:
                    torch.add(bias_hh, p_lp, out=p)
                else:
                    p.copy_(p_lp)
            else:
                addmm_into(p, bias_hh, h_prev, w_t)
            a = a_s[j]
            a.add_(site_h.forward(t, p))
            a.sigmoid_()
            g = g_s[j]
            torch.add(minus_one, g, alpha=2, out=g)
            torch.mul(f_s[j], c_prev, out=c_t)
            c_t.addcmul_(i_s[j], g)
            y = site_c.forward(t, c_t)
            y.sigmoid_()
            tc = tc_s[j]
            torch.add(minus_one, y, alpha=2, out=tc)
            torch.mul(o_s[j], tc, out=h_t)
            if m_steps is not None:
                torch.where(m_steps[t], h_t, h_prev, out=h_t)
                torch.where(m_steps[t], c_t, c_prev, out=c_t)
    return hs, cs, chunks, step


class _NormLSTMSequence(torch.autograd.Function):
    """``norm_lstm_sequence`` with a hand-written backward through time."""

    @staticmethod
    def forward(ctx, xp, weight_ih, bias_ih, h0, c0, weight_hh, bias_hh, gx, bx, gh, bh, gc, bc, mask,  # type: ignore
                cfg):
        mask_tm = _time_major_mask(mask)
        fill, site_h, site_c = cfg.make_sites(xp, h0, keep=True, weight_ih=weight_ih, bias_ih=bias_ih)
        lib = _native_lib(h0)
        ctx.native = None
        if lib is not None:
            hs, cs, chunks, step, ctx.native = _forward_native(lib, fill, h0, c0, weight_hh, bias_hh, site_h, site_c,
                                                               mask_tm, keep=True, lp=cfg.lp)
        else:
            hs, cs, chunks, step = _forward_core(fill, h0, c0, weight_hh, bias_hh, site_h, site_c, mask_tm,
                                                 keep=True, lp=cfg.lp)
        cfg.collect_states(fill, site_h, site_c)
        ctx.step, ctx.sites, ctx.n_chunks, ctx.lp = step, (fill, site_h, site_c), len(chunks), cfg.lp
        ctx.save_for_backward(xp, hs, cs, weight_hh, mask_tm, *[x for ch in chunks for x in ch])
        return hs[1:].transpose(0, 1).contiguous(), hs[-1].clone(), cs[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_ys, grad_h, grad_c):  # type: ignore[override]
        xp, hs, cs, weight_hh, mask_tm, *flat = ctx.saved_tensors
        chunks = [tuple(flat[3 * i:3 * i + 3]) for i in range(ctx.n_chunks)]
        fill, site_h, site_c = ctx.sites
        fill.xin = xp
        need = ctx.needs_input_grad
        grad_xp, dh0, dc0, grad_w, grad_b = _backward_core(chunks, ctx.step, hs, cs, weight_hh, mask_tm, fill, site_h,
                                                           site_c, grad_ys, grad_h, grad_c, need, ctx.lp, ctx.native)
        ctx.sites = ctx.native = None
        return (grad_xp, fill.grad_w_ih, fill.grad_b_ih, dh0, dc0, grad_w, grad_b,
                fill.grad_w if need[7] else None, fill.grad_b if need[8] else None,
                site_h.grad_w if need[9] else None, site_h.grad_b if need[10] else None,
                site_c.grad_w if need[11] else None, site_c.grad_b if need[12] else None, None, None)


def _backward_core(chunks, step, hs, cs, weight_hh, mask_tm, fill, site_h, site_c, grad_ys, grad_h, grad_c, need,
                   lp=None, native: _LoopCfg | None = None):
    seq_len, bsz, hidden = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    four_h, h2, h3 = 4 * hidden, 2 * hidden, 3 * hidden
    need_xn, need_w_ih, need_b_ih, need_h0, need_c0, need_w, need_b = need[:7]
    one = torch.ones((), dtype=hs.dtype, device=hs.device)
    dh_steps, dc, grad_w, grad_b = _backward_buffers(hs, grad_ys, grad_h, grad_c, need_w, need_b)
    dh: Tensor | None = dh_steps[seq_len - 1]
    fill.begin_backward(need_xn, need_w_ih, need_b_ih)
    w_lp = weight_hh.to(lp) if lp is not None else None
    site_h.begin_backward(hs)
    site_c.begin_backward(hs)
    lib, extra = None, None
    if native is not None:
        lib = _native_lib(hs)
        dc = dc.contiguous()
        native.dh, native.dc = dh_steps[0].data_ptr(), dc.data_ptr()
        for site, site_cfg in ((site_h, native.sh), (site_c, native.sc)):
            site_cfg.gw, site_cfg.gb = _ptr(site.grad_w), _ptr(site.grad_b)
            if isinstance(site, _WindowSite):
                site_cfg.DS, site_cfg.R = site.DS.data_ptr(), site.R.data_ptr()
    first = chunks[0][0]
    q_work = workspace.take(first.shape, hs.dtype, hs.device)
    da_work = workspace.take(first.shape, hs.dtype, hs.device)
    dcn_work = workspace.take((first.shape[0], bsz, hidden), hs.dtype, hs.device)
    for kk in range(len(chunks) - 1, -1, -1):
        acts, pre, tcn = chunks[kk]
        n = acts.shape[0]
        t0 = kk * step
        qk, dak, dcnk = q_work[:n], da_work[:n], dcn_work[:n]
        if native is not None:
            extra, dh0 = _backward_chunk_native(lib, native, t0, n, weight_hh, w_lp, lp, chunks[kk], qk, dcnk, dak,
                                                extra, need_h0)
            if t0 == 0:
                dh = dh0
                if dh is not None and mask_tm is not None:  # a padded first step passes dh_0 to h0
                    dh.addcmul_(dh_steps[0], (~mask_tm[0]).to(hs.dtype))
        else:
            i_act, f_act, g_act, o_act = acts[..., :hidden], acts[..., hidden:h2], acts[..., h2:h3], acts[..., h3:]
            q_i, q_f, q_g, q_o = qk[..., :hidden], qk[..., hidden:h2], qk[..., h2:h3], qk[..., h3:]
            torch.addcmul(i_act, i_act, i_act, value=-1, out=q_i)  # i (1 - i) * g
            q_i.mul_(g_act)
            torch.addcmul(f_act, f_act, f_act, value=-1, out=q_f)  # f (1 - f) * c_{t-1}
            q_f.mul_(cs[t0:t0 + n])
            torch.addcmul(one, g_act, g_act, value=-1, out=q_g)  # (1 - g^2) * i
            q_g.mul_(i_act)
            torch.addcmul(o_act, o_act, o_act, value=-1, out=q_o)  # o (1 - o) * tanh(N_c(c))
            q_o.mul_(tcn)
            r = torch.addcmul(one, tcn, tcn, value=-1).mul_(o_act)  # d N_c(c_t) / d h_t
            pass_s = None
            if mask_tm is not None:
                mk = mask_tm[t0:t0 + n]
                qk.mul_(mk)
                r.mul_(mk)
                fwd_c = torch.where(mk, f_act, one)
                pass_s = (~mk).to(hs.dtype).unbind(0)
            else:
                fwd_c = f_act
            c_chunk = cs[t0 + 1:t0 + n + 1]
            site_h.begin_chunk(t0, n, pre)
            site_c.begin_chunk(t0, n, c_chunk)
            q_s, q3_s = qk.unbind(0), qk[..., :h3].unflatten(-1, (3, hidden)).unbind(0)
            qo_s, r_s, fc_s = q_o.unbind(0), r.unbind(0), fwd_c.unbind(0)
            p_s, cc_s, dcn_s, da_s = pre.unbind(0), c_chunk.unbind(0), dcnk.unbind(0), dak.unbind(0)
            for j in range(n - 1, -1, -1):
                t = t0 + j
                dcn = torch.mul(dh, r_s[j], out=dcn_s[j])
                dc.add_(site_c.backward(t, dcn, cc_s[j]))
                q3_s[j].mul_(dc.unsqueeze(1))
                qo_s[j].mul_(dh)
                dc.mul_(fc_s[j])
                da = da_s[j]
                da.copy_(site_h.backward(t, q_s[j], p_s[j]))
                if w_lp is not None and (t > 0 or need_h0):
                    dh_lp = mm(da.to(lp), w_lp)
                    dh_next = dh_steps[t - 1].add_(dh_lp) if t > 0 else dh_lp.to(da.dtype)
                elif t > 0:
                    dh_next = mm_into(dh_steps[t - 1], da, weight_hh, accumulate=True)
                elif need_h0:
                    dh_next = mm(da, weight_hh)
                else:
                    dh_next = None
                if dh_next is not None and pass_s is not None:
                    dh_next.addcmul_(dh, pass_s[j])
                dh = dh_next
        da_flat = dak.view(n * bsz, four_h)
        if grad_w is not None:
            if lp is not None:
                grad_w.add_(mm(da_flat.t().to(lp), hs[t0:t0 + n].view(n * bsz, hidden).to(lp)))
            else:
                mm_into(grad_w, da_flat.t(), hs[t0:t0 + n].view(n * bsz, hidden), accumulate=True)
        if grad_b is not None:
            grad_b.add_(da_flat.sum(0))
        if native is None:
            site_h.end_chunk(t0, n, pre, qk)
            site_c.end_chunk(t0, n, cs[t0 + 1:t0 + n + 1], dcnk)
        fill.backward(kk, t0, n, qk)
    return fill.grad_input(), (dh if need_h0 else None), (dc if need_c0 else None), grad_w, grad_b


class _Config:
    """Non-tensor arguments of the autograd Function (site norms, incoming window states) and its side outputs."""

    def __init__(self, norms: dict[str, SiteNorm], states: dict[str, WindowState], hidden: int,
                 lp: torch.dtype | None = None) -> None:
        self.norms, self.states, self.hidden, self.lp = norms, states, hidden, lp
        self.states_out: dict[str, WindowState] = {}

    def make_sites(self, xp: Tensor, h0: Tensor, keep: bool, weight_ih: Tensor | None = None,
                   bias_ih: Tensor | None = None) -> tuple[_InputFill, _LNSite | _WindowSite, _LNSite | _WindowSite]:
        hidden, seq_len = self.hidden, xp.shape[1]
        d = _gate_scale(hidden, h0)
        norm_x = self.norms.get("x")
        norm_x = None if _is_identity(norm_x) else norm_x
        return (_InputFill(xp, norm_x, d, keep, self.states.get("x"), weight_ih, bias_ih, self.lp),
                _make_site(self.norms["h"], 4 * hidden, d, self.states.get("h"), seq_len, h0, keep),
                _make_site(self.norms["c"], hidden, 2.0, self.states.get("c"), seq_len, h0, keep))

    def collect_states(self, fill: _InputFill, site_h, site_c) -> None:
        for site, st in (("x", fill.final_state()), ("h", site_h.final_state()), ("c", site_c.final_state())):
            if st is not None:
                self.states_out[site] = st


def _grad_wanted(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def norm_lstm_sequence(
    xp: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor, bias_hh: Tensor | None, norms: dict[str, SiteNorm],
    mask: Tensor | None = None, states: dict[str, WindowState] | None = None, *, weight_ih: Tensor | None = None,
    bias_ih: Tensor | None = None, matmul_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor, Tensor, dict[str, WindowState]]:
    """Fast twin of ``norm_lstm_sequence_reference`` (same arguments and outputs; see the module docstring).

    With ``weight_ih`` (and ``bias_ih``) the first argument is the raw input ``x (B, L, input_size)`` and
    the projection is done chunk by chunk inside (gradients for ``x``, ``weight_ih``, ``bias_ih`` too).

    ``matmul_dtype=torch.bfloat16`` (the bf16 path, as autocast runs ``nn.LSTM``) runs every GEMM (the
    projection, the per-step recurrent products, the weight and input gradients) in bfloat16 with float32
    results and accumulation across chunks; norms, gates and the cell state stay float32. Under CPU autocast to
    bfloat16 that is the default; otherwise the loop runs in the weights' dtype with autocast off.
    Double backward is not supported.
    """
    if torch.is_autocast_enabled(xp.device.type):
        dt = weight_hh.dtype
        if matmul_dtype is None and xp.device.type == "cpu" and torch.get_autocast_dtype("cpu") == torch.bfloat16:
            matmul_dtype = torch.bfloat16
        with torch.autocast(xp.device.type, enabled=False):
            return norm_lstm_sequence(xp.to(dt), h0.to(dt), c0.to(dt), weight_hh, bias_hh, norms, mask, states,
                                      weight_ih=weight_ih, bias_ih=bias_ih, matmul_dtype=matmul_dtype)
    hidden = weight_hh.shape[1]
    width = 4 * hidden if weight_ih is None else weight_ih.shape[1]
    if xp.dim() != 3 or xp.shape[-1] != width or weight_hh.shape[0] != 4 * hidden or xp.shape[1] == 0:
        raise ValueError(f"norm_lstm_sequence: input must be (batch, seq_len>0, {width}) and weight_hh "
                         f"(4*hidden, hidden); got {tuple(xp.shape)}, {tuple(weight_hh.shape)}")
    if weight_ih is not None and weight_ih.shape[0] != 4 * hidden:
        raise ValueError(f"norm_lstm_sequence: weight_ih must be (4*hidden, input_size), got {tuple(weight_ih.shape)}")
    if set(norms) - {"x", "h", "c"} or not {"h", "c"} <= set(norms):
        raise ValueError(f"norm_lstm_sequence: norms must have the sites 'h', 'c' (and maybe 'x'), got {sorted(norms)}")
    states = dict(states or {})
    if any(_is_window(n) for n in norms.values()) and mask is not None:
        raise ValueError("norm_lstm_sequence: ATN (window) sites take no mask; use the reference loop")
    if any(t.requires_grad for st in states.values() for t in st):
        raise ValueError("norm_lstm_sequence: window states must not require grad")
    mask = mask.bool() if mask is not None else None
    cfg = _Config(norms, states, hidden, matmul_dtype)
    params = tuple(p for site in ("x", "h", "c") for p in ((norms[site].weight, norms[site].bias) if site in norms
                                                              else (None, None)))
    if _grad_wanted(xp, weight_ih, bias_ih, h0, c0, weight_hh, bias_hh, *params):
        hs, h_t, c_t = _NormLSTMSequence.apply(xp, weight_ih, bias_ih, h0, c0, weight_hh, bias_hh, *params, mask, cfg)
        return hs, h_t, c_t, cfg.states_out
    fill, site_h, site_c = cfg.make_sites(xp, h0, keep=False, weight_ih=weight_ih, bias_ih=bias_ih)
    lib = _native_lib(h0)
    if lib is not None:
        hs_tm, cs, _, _, _ = _forward_native(lib, fill, h0, c0, weight_hh, bias_hh, site_h, site_c,
                                             _time_major_mask(mask), keep=False, lp=cfg.lp)
    else:
        hs_tm, cs, _, _ = _forward_core(fill, h0, c0, weight_hh, bias_hh, site_h, site_c, _time_major_mask(mask),
                                        keep=False, lp=cfg.lp)
    cfg.collect_states(fill, site_h, site_c)
    return hs_tm[1:].transpose(0, 1).contiguous(), hs_tm[-1].clone(), cs[-1].clone(), cfg.states_out

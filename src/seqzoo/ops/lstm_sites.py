"""The normalization sites of the fused LSTM loop: what a site is (``SiteNorm``) and its three implementations.

A site normalizes one pre-activation per step: LayerNorm (``LNSite``), Assorted-Time Normalization over the last
``k`` steps (``WindowSite``, O(1) running window sums) or nothing (``IdentitySite``, which lets the same loop serve
the plain LSTM). Each site has the same protocol for ``ops.lstm_loop``: ``forward(t, a)`` per step (torch-op loop),
``native_cfg`` (its view for the C kernels), ``final_state``, and the backward hooks ``begin_backward``,
``begin_chunk``, ``backward(t, dy, a)`` and ``end_chunk``. Forward outputs include the gate scaling (the caller
passes ``scale``), so ``tanh`` can run as a sigmoid.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from seqzoo.ops.lstm_kernel_abi import SiteCfg, site_cfg
from seqzoo.ops.window_norm import WindowState, window_init_state


class SiteNorm(NamedTuple):
    """One site: ``window`` None (LayerNorm), k >= 1 (ATN) or 0 (identity: no normalization, no affine).

    ``weight``/``bias`` are the affine gain and shift (or None), ``eps`` the variance floor.
    """

    window: int | None
    weight: Tensor | None
    bias: Tensor | None
    eps: float = 1e-5


IDENTITY_SITE = SiteNorm(0, None, None)


def is_identity(norm: SiteNorm | None) -> bool:
    return norm is not None and norm.window == 0


def is_window(norm: SiteNorm) -> bool:
    return norm.window is not None and norm.window > 0



_GRAD_INPUT_ONLY = [True, False, False]


class LNSite:
    """LayerNorm site. Forward output is ``weight_f ⊙ ẑ + bias_f`` (gain and bias pre-scaled by the caller)."""

    def __init__(self, norm: SiteNorm, features: int, scale: Tensor | float, like: Tensor, keep: bool) -> None:
        self.norm, self.features, self.keep = norm, (features,), keep
        self.weight_f, self.bias_f = scaled_affine(norm, features, scale, like)
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

    def native_cfg(self, seq_len: int, like: Tensor) -> SiteCfg:
        """The C kernel's view of this site; with ``keep`` the per-step (mean, rs) go to (L, B, 1) buffers."""
        cfg = site_cfg(0, 1, self.features[0], seq_len, self.norm, self.weight_f, self.bias_f, self)
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


def scaled_affine(norm: SiteNorm, features: int, scale: Tensor | float, like: Tensor) -> tuple[Tensor, Tensor | None]:
    """``(scale * weight, scale * bias)``, the weight defaulting to ones (the forward folds the gate scaling in)."""
    w = norm.weight if norm.weight is not None else like.new_ones(features)
    return w * scale, (norm.bias * scale if norm.bias is not None else None)


class WindowSite:
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
        self.weight_f, self.bias_f = scaled_affine(norm, features, scale, like)
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

    def native_cfg(self, seq_len: int, like: Tensor) -> SiteCfg:
        cfg = site_cfg(1, self.k, self.features, seq_len, self.norm, self.weight_f, self.bias_f, self)
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
        self.DS_s: tuple[Tensor, ...] | None = None  # its per-step views, made on first use
        self.R = like.new_zeros(bsz, 2)  # Σ of DS over the steps whose window holds the current step
        self.sab = like.new_empty(bsz, 2)

    def begin_chunk(self, t0: int, n: int, a: Tensor) -> None:
        """Per chunk: ẑ and the 2x2 factor mapping (Σdz, Σdz·ẑ) to d(Σa, Σa²)·(1, 2) of the window sums."""
        self._views()
        if getattr(self, "DS_s", None) is None:
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


class IdentitySite:
    """An un-normalized site: the forward output is ``scale ⊙ a`` (the gate scaling), the backward passes ``dy``."""

    grad_w = grad_b = None

    def __init__(self, features: int, scale: Tensor | float, like: Tensor) -> None:
        self.features = features
        self.weight_f = like.new_ones(features) * scale

    def forward(self, t: int, a: Tensor) -> Tensor:
        return a * self.weight_f

    def final_state(self) -> None:
        return None

    def native_cfg(self, seq_len: int, like: Tensor) -> SiteCfg:
        return site_cfg(2, 0, self.features, seq_len, IDENTITY_SITE, self.weight_f, None, self)

    def begin_backward(self, like: Tensor) -> None:
        pass

    def begin_chunk(self, t0: int, n: int, a: Tensor) -> None:
        pass

    def backward(self, t: int, dy: Tensor, a: Tensor) -> Tensor:
        return dy

    def end_chunk(self, t0: int, n: int, a: Tensor, dy: Tensor) -> None:
        pass


def make_site(norm: SiteNorm, features: int, scale: Tensor | float, state: WindowState | None, seq_len: int,
               like: Tensor, keep: bool) -> LNSite | WindowSite | IdentitySite:
    if is_identity(norm):
        return IdentitySite(features, scale, like)
    if norm.window is None:
        return LNSite(norm, features, scale, like, keep)
    return WindowSite(norm, features, scale, state, seq_len, like)


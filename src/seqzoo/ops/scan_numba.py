"""The optional numba backend of ``ops.scan.linear_scan``: the plain recurrence as one compiled loop.

It reads ``b`` and writes ``x`` once (the memory bound) and forms the loop's sums in the loop's order. Kernels are
compiled on first use (a few seconds per dtype) and cached on disk by numba where it can write; numba is optional
and imported only here, on first use.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

NUMBA_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)

_KERNELS: dict[str, Any] = {}


def numba_available() -> bool:
    """Whether the optional numba backend can be used (numba importable)."""
    if "available" not in _KERNELS:
        try:
            import numba  # noqa: F401
        except (ImportError, OSError):
            _KERNELS["available"] = False
        else:
            _KERNELS["available"] = True
    return _KERNELS["available"]


def numba_applies(b: Tensor) -> bool:
    return b.device.type == "cpu" and b.dtype in NUMBA_DTYPES and numba_available()


_BLOCK_BYTES = 512 * 1024  # backwards-in-time loops work on blocks of this size (see _kernels)


def _kernels() -> dict[str, Any]:
    """The compiled loops (compiled on first call, once per dtype).

    ``a`` comes as ``(Ba, La, P)`` with ``Ba`` in ``{1, B}`` and ``La`` in ``{1, L}``, so one kernel serves the
    time-invariant and the per-step case (fewer compilations); step ``t`` uses ``a[:, t + shift]`` (clamped; the
    clamped value only ever multiplies a zero state). Walking memory backwards step by step ran ~10x slower than
    forwards here (the hardware prefetcher does not follow it), so ``scan_down`` copies blocks of ``_BLOCK_BYTES``
    forwards into a cache-resident buffer, runs the recurrence backwards there, and copies the block out forwards.
    """
    if "scan_up" in _KERNELS:
        return _KERNELS
    import numba

    def jit(fn):  # cache the machine code on disk where numba finds a writable place, else compile per process
        try:
            return numba.njit(cache=True, nogil=True)(fn)
        except RuntimeError:
            return numba.njit(cache=False, nogil=True)(fn)

    @jit
    def scan_up(a, b, x0, out, shift):  # x_t = a_{t+shift} x_{t-1} + b_t, t = 0 .. L-1
        B, L, P = b.shape
        La = a.shape[1]
        s = np.empty(P, dtype=b.dtype)
        for i in range(B):
            ai = i if a.shape[0] > 1 else 0
            s[:] = x0[i]
            for t in range(L):
                at = min(max(t + shift, 0), La - 1)
                for p in range(P):
                    s[p] = a[ai, at, p] * s[p] + b[i, t, p]
                    out[i, t, p] = s[p]

    @jit
    def scan_down(a, b, x0, out, shift, block):  # x_t = a_{t+shift} x_{t+1} + b_t, t = L-1 .. 0
        B, L, P = b.shape
        La = a.shape[1]
        s = np.empty(P, dtype=b.dtype)
        buf = np.empty((block, P), dtype=b.dtype)
        abuf = np.empty((block if La > 1 else 1, P), dtype=a.dtype)
        for i in range(B):
            ai = i if a.shape[0] > 1 else 0
            s[:] = x0[i]
            end = L
            while end > 0:
                start = max(0, end - block)
                n = end - start
                for j in range(n):
                    for p in range(P):
                        buf[j, p] = b[i, start + j, p]
                if La > 1:
                    for j in range(n):
                        at = min(max(start + j + shift, 0), La - 1)
                        for p in range(P):
                            abuf[j, p] = a[ai, at, p]
                else:
                    for p in range(P):
                        abuf[0, p] = a[ai, 0, p]
                for k in range(n):
                    j = n - 1 - k
                    ja = j if La > 1 else 0
                    for p in range(P):
                        s[p] = abuf[ja, p] * s[p] + buf[j, p]
                        buf[j, p] = s[p]
                for j in range(n):
                    for p in range(P):
                        out[i, start + j, p] = buf[j, p]
                end = start

    @jit
    def grad_a(g, x, x0, ga, reverse):  # ga[t or 0] += g_t conj(x_prev_t), walking memory forwards
        B, L, P = g.shape
        Lg = ga.shape[1]
        for i in range(B):
            for t in range(L):
                tp = t + 1 if reverse else t - 1
                at = t if Lg > 1 else 0
                if 0 <= tp < L:
                    for p in range(P):
                        ga[i, at, p] += g[i, t, p] * np.conj(x[i, tp, p])
                else:
                    for p in range(P):
                        ga[i, at, p] += g[i, t, p] * np.conj(x0[i, p])

    _KERNELS.update(scan_up=scan_up, scan_down=scan_down, grad_a=grad_a)
    return _KERNELS


def _np(t: Tensor):
    return t.detach().resolve_conj().resolve_neg().numpy()


def _as3d(a: Tensor) -> Tensor:
    return a if a.dim() == 3 else a.view(1, 1, -1)


def _block(b: Tensor) -> int:
    return max(8, _BLOCK_BYTES // (b.shape[2] * b.element_size()))


def _numba_run(out: Tensor, a3: Tensor, b: Tensor, x0: Tensor, down: bool, shift: int) -> None:
    k = _kernels()
    if down:
        k["scan_down"](_np(a3), _np(b), _np(x0), _np(out), shift, _block(b))
    else:
        k["scan_up"](_np(a3), _np(b), _np(x0), _np(out), shift)


def numba_forward(out: Tensor, a: Tensor, b: Tensor, x0: Tensor | None, reverse: bool) -> None:
    x0 = torch.zeros(b.shape[0], b.shape[2], dtype=b.dtype) if x0 is None else x0.contiguous()
    _numba_run(out, _as3d(a), b, x0, reverse, 0)


def numba_backward(a: Tensor, grad_out: Tensor, out: Tensor, x0: Tensor | None, reverse: bool,
                    want_a: bool) -> tuple[Tensor, Tensor | None]:
    """``g`` (gradient of ``b``) by the opposite-direction scan with ``conj(a)`` shifted one step, and ``grad_a``."""
    B, L, P = out.shape
    zeros = torch.zeros(B, P, dtype=out.dtype)
    g = torch.empty_like(grad_out)
    m3 = _as3d(a).conj().resolve_conj()
    # forward scan: g_t = gout_t + conj(a_{t+1}) g_{t+1} (downwards); reverse scan: conj(a_{t-1}) g_{t-1} (upwards)
    _numba_run(g, m3, grad_out, zeros, not reverse, -1 if reverse else 1)
    if not want_a:
        return g, None
    per_step = a.dim() == 3
    ga = torch.zeros(B, L if per_step else 1, P, dtype=out.dtype)
    _kernels()["grad_a"](_np(g), _np(out), _np(zeros if x0 is None else x0.contiguous()), _np(ga), reverse)
    return g, (ga if per_step else ga.sum((0, 1)))

"""Linear recurrence ``x_t = a_t * x_{t-1} + b_t`` over time, batch-first, real or complex.

``linear_scan`` is the fast path; ``linear_scan_reference`` is its slow, obviously-correct twin (autograd
through a plain Python loop). Shapes: ``b`` is ``(B, L, P)``; ``a`` is either time-invariant ``(P,)`` or per
step ``(B, L, P)``; the optional initial state ``x0`` is ``(B, P)`` (zero when omitted). With
``reverse=True`` the recurrence runs backwards in time, ``x_t = a_t * x_{t+1} + b_t`` with ``x_L = x0``.

Why a chunked scan (and not a log-depth one): on a few CPU cores this recurrence is memory-bound, and
a Hillis-Steele or Blelloch scan moves the data O(log L) times. Here time is cut into ``C`` chunks of
``K`` steps (``(B, L, P) -> (B, C, K, P)``) and every pass is a loop over the ``K`` positions inside a
chunk that works on all chunks of all sequences at once (``B*C*P`` elements per op, so few large ops):

1. chunk ends: run the recurrence inside every chunk from a zero state, keeping only its last value,
   and the product of the chunk's multipliers (``a^K`` when ``a`` is time-invariant);
2. carries: the chunk-level recurrence ``s_c = A_c * s_{c-1} + e_c`` over the ``C`` chunk ends, itself
   solved by this scan (recursively, with a smaller chunk) or by a loop when short;
3. outputs: run the recurrence inside every chunk again, now from the carried state, writing ``x``.

The data are read twice and written once (the minimum is once each). Nothing divides by a cumulative
product and no logarithms are taken: every value is the same sum of products the loop forms, only
associated differently, so ``|a| < 1`` underflow is harmless; the chunk multiplier ``a^K`` is formed in double
precision, so its rounding does not pile up over many chunks and the error stays that of the loop.

Measured on 2 cores (docs/benchmarks.md) the chunked scan is only 1-3x faster than the step loop and
10-20x off the memory bound: each op touches every chunk at one position, i.e. many short runs of ``P``
values spread over the whole tensor, which the memory system serves far below streaming speed.

Backends. ``backend="torch"`` is the chunked scan above (dependency-free, any device). ``backend="numba"``
runs the plain recurrence as one compiled loop over (batch, time, state; ``ops.scan_numba``) when the
optional ``numba`` package is installed: it reads ``b`` and writes ``x`` once, so it runs at the memory bound,
and it forms the loop's sums in the loop's order (equal to ``linear_scan_reference`` up to the last bit of a
complex product). ``"auto"`` (default) takes numba for CPU tensors of float32/64 or complex64/128 when it can
be imported, else the chunked scan. Kernels are compiled on first use (a few seconds per dtype) and cached on
disk by numba (``__pycache__``) where it can write.

The backward pass is written by hand (``torch.autograd.Function``): the gradient of the states is the
same recurrence run in the opposite direction with ``conj(a)`` shifted by one step, ``dL/db = g``,
``dL/da_t = g_t * conj(x_{t-1})`` (summed over batch and time when ``a`` is time-invariant) and
``dL/dx0 = conj(a_first) * g_first`` (PyTorch's conjugate-Wirtinger convention, so complex parameters
train with the usual optimizers).
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from seqzoo.ops.scan_numba import NUMBA_DTYPES, numba_applies, numba_available
from seqzoo.ops.scan_numba import numba_backward as _numba_backward  # module globals: tests spy on them
from seqzoo.ops.scan_numba import numba_forward as _numba_forward

DEFAULT_CHUNK = None  # chunk length of the chunked scan: None picks min(256, max(8, L // 16))
BACKENDS = ("auto", "torch", "numba")


# ----- reference twin ------------------------------------------------------------------------------

def linear_scan_reference(a: Tensor, b: Tensor, x0: Tensor | None = None, *, reverse: bool = False) -> Tensor:
    """``x (B, L, P)`` by a plain loop over time (autograd through the loop); see the module docstring."""
    a, b, x0 = _check(a, b, x0)
    per_step = a.dim() == 3
    L = b.shape[1]
    if L == 0:
        return b.clone()
    order = range(L - 1, -1, -1) if reverse else range(L)
    bs = b.unbind(1)
    as_ = a.unbind(1) if per_step else None
    state = x0 if x0 is not None else torch.zeros_like(bs[0])
    outs: list[Tensor] = [bs[0]] * L
    for t in order:
        state = (as_[t] if per_step else a) * state + bs[t]
        outs[t] = state
    return torch.stack(outs, 1)


# ----- fast path -----------------------------------------------------------------------------------

def linear_scan(a: Tensor, b: Tensor, x0: Tensor | None = None, *, reverse: bool = False,
                chunk: int | None = DEFAULT_CHUNK, backend: str = "auto") -> Tensor:
    """``x (B, L, P)`` with ``x_t = a_t * x_{t-1} + b_t`` (``x_{-1} = x0``), or backwards when ``reverse``.

    Args:
        a: multipliers, time-invariant ``(P,)`` or per step ``(B, L, P)``.
        b: inputs ``(B, L, P)``.
        x0: state before the first step (the last step when ``reverse``), ``(B, P)``; zero when None.
        reverse: run from ``t = L-1`` down to 0.
        chunk: steps per chunk of the chunked scan (>= 2; None: ``min(256, max(8, L // 16))``, long chunks
            measured fastest on CPU); results do not depend on it beyond rounding.
        backend: ``"auto"``, ``"torch"`` (chunked scan) or ``"numba"`` (compiled loop; needs numba).
    """
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 2):
        raise ValueError(f"linear_scan: chunk must be None or an integer >= 2, got {chunk!r}")
    if backend not in BACKENDS:
        raise ValueError(f"linear_scan: backend must be one of {BACKENDS}, got {backend!r}")
    a, b, x0 = _check(a, b, x0)
    if b.shape[1] == 0:
        return b.clone()
    if chunk is None:
        chunk = min(256, max(8, b.shape[1] // 16))
    use_numba = numba_applies(b)
    if backend == "numba" and not use_numba:
        if not numba_available():
            raise ImportError("linear_scan: backend='numba' needs the optional numba package (pip install numba)")
        raise ValueError(f"linear_scan: backend='numba' runs on CPU tensors of {sorted(map(str, NUMBA_DTYPES))}, "
                         f"got {b.dtype} on {b.device}")
    return _LinearScan.apply(a, b, x0, reverse, chunk, use_numba and backend != "torch")


def _check(a: Tensor, b: Tensor, x0: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Validate shapes and bring ``a``, ``b``, ``x0`` to one common dtype."""
    if b.dim() != 3:
        raise ValueError(f"linear_scan: b must have shape (batch, seq_len, state), got {tuple(b.shape)}")
    B, L, P = b.shape
    if a.shape != (P,) and a.shape != b.shape:
        raise ValueError(f"linear_scan: a must have shape ({P},) (time-invariant) or {tuple(b.shape)} (per step, "
                         f"like b), got {tuple(a.shape)}")
    if x0 is not None and x0.shape != (B, P):
        raise ValueError(f"linear_scan: x0 must have shape (batch, state)=({B}, {P}), got {tuple(x0.shape)}")
    tensors = [t for t in (a, b, x0) if t is not None]
    for t in tensors:
        if not (t.is_floating_point() or t.is_complex()):
            raise TypeError(f"linear_scan: a, b and x0 must be floating point or complex, got {t.dtype}")
    dtype = b.dtype
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    a, b = a.to(dtype), b.to(dtype)
    return a, b, (x0.to(dtype) if x0 is not None else None)


def _wide(dtype: torch.dtype) -> torch.dtype:
    """The double-precision twin of ``dtype`` (chunk multipliers are formed in it)."""
    return torch.complex128 if dtype.is_complex else torch.float64


def _power(a: Tensor, n: int) -> Tensor:
    """``a ** n`` elementwise by repeated squaring in double precision, rounded once to ``a.dtype``.

    The chunk multiplier is applied once per chunk to every carried state, so a rounding bias in it would
    add up coherently over many chunks; forming it in double keeps the scan as accurate as the loop.
    """
    result = torch.ones_like(a, dtype=_wide(a.dtype))
    base = a.to(_wide(a.dtype))
    while n:
        if n & 1:
            result = result * base
        n >>= 1
        if n:
            base = base * base
    return result.to(a.dtype)


def _loop_into(out: Tensor, a: Tensor, b: Tensor, x0: Tensor | None, reverse: bool) -> None:
    """Sequential recurrence writing into ``out`` (used for short sequences and chunk tails)."""
    L = b.shape[1]
    per_step = a.dim() == 3
    order = range(L - 1, -1, -1) if reverse else range(L)
    prev = x0
    for t in order:
        if prev is None:
            out[:, t].copy_(b[:, t])
        else:
            torch.addcmul(b[:, t], prev, a[:, t] if per_step else a, out=out[:, t])
        prev = out[:, t]


def _scan_into(out: Tensor, a: Tensor, b: Tensor, x0: Tensor | None, reverse: bool, chunk: int) -> None:
    """The chunked scan (see the module docstring) writing into ``out`` (strides ``(*, P, 1)`` like ``b``)."""
    B, L, P = b.shape
    K = chunk
    C = L // K
    if C < 2:
        _loop_into(out, a, b, x0, reverse)
        return
    per_step = a.dim() == 3
    r = L - C * K
    main = slice(r, L) if reverse else slice(0, C * K)  # the chunk grid is aligned to where the scan starts
    bv = b[:, main].unflatten(1, (C, K))
    xv = out[:, main].unflatten(1, (C, K))
    av = a[:, main].unflatten(1, (C, K)) if per_step else a
    ks = range(K - 1, -1, -1) if reverse else range(K)

    # 1. chunk ends from a zero incoming state, and each chunk's total multiplier
    k0, *rest = ks
    e = bv[:, :, k0].clone()
    tmp = torch.empty_like(e)
    for k in rest:
        torch.addcmul(bv[:, :, k], e, av[:, :, k] if per_step else a, out=tmp)
        e, tmp = tmp, e
    mult = torch.prod(av, dim=2, dtype=_wide(a.dtype)).to(a.dtype) if per_step else _power(a, K)

    # 2. state after each chunk, then the state entering each chunk
    ends = torch.empty_like(e)
    _scan_into(ends, mult, e, x0, reverse, max(2, math.isqrt(C)))
    incoming = torch.empty_like(e)
    first, shifted_to, shifted_from = (C - 1, slice(0, C - 1), slice(1, C)) if reverse else \
        (0, slice(1, C), slice(0, C - 1))
    if x0 is None:
        incoming[:, first].zero_()
    else:
        incoming[:, first].copy_(x0)
    incoming[:, shifted_to].copy_(ends[:, shifted_from])

    # 3. outputs inside every chunk from its incoming state
    prev = incoming
    for k in ks:
        torch.addcmul(bv[:, :, k], prev, av[:, :, k] if per_step else a, out=xv[:, :, k])
        prev = xv[:, :, k]

    # the steps after the last whole chunk
    if r:
        if reverse:
            tail = slice(0, r)
            state = out[:, r]
        else:
            tail = slice(C * K, L)
            state = out[:, C * K - 1]
        _loop_into(out[:, tail], a[:, tail] if per_step else a, b[:, tail], state, reverse)


@contextmanager
def _one_thread():
    """Run the chunked scan's ops on one intra-op thread.

    Its ops work on slices strided over the whole tensor; split over 2 threads they ran 30-100x slower than on one
    (measured at B=16, P=64, L=16k: 2.0 s instead of 64 ms for one pass), while one thread keeps them near the
    single-core memory speed.
    """
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, x0: Tensor | None, reverse: bool, chunk: int,  # type: ignore[override]
                use_numba: bool) -> Tensor:
        b = b.contiguous()
        if a.dim() == 3:
            a = a.contiguous()
        out = torch.empty_like(b, memory_format=torch.contiguous_format)
        if use_numba:
            _numba_forward(out, a, b, x0, reverse)
        else:
            with _one_thread():
                _scan_into(out, a, b, x0, reverse, chunk)
        ctx.save_for_backward(a, x0, out)
        ctx.reverse, ctx.chunk, ctx.use_numba = reverse, chunk, use_numba
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        a, x0, out = ctx.saved_tensors
        reverse, chunk = ctx.reverse, ctx.chunk
        grad_out = grad_out.contiguous()
        L = out.shape[1]
        per_step = a.dim() == 3
        if ctx.use_numba:
            g, grad_a = _numba_backward(a, grad_out, out, x0, reverse, ctx.needs_input_grad[0])
            grad_x0 = None
            if x0 is not None and ctx.needs_input_grad[2]:
                first = L - 1 if reverse else 0
                grad_x0 = g[:, first] * (a[:, first] if per_step else a).conj()
            return grad_a, (g if ctx.needs_input_grad[1] else None), grad_x0, None, None, None
        # g_t = grad_out_t + conj(a_{t+1}) g_{t+1}: the same recurrence in the other direction
        if per_step:
            m = torch.empty_like(a)
            if reverse:
                m[:, 0].zero_()
                m[:, 1:].copy_(a[:, :-1].conj())
            else:
                m[:, -1].zero_()
                m[:, :-1].copy_(a[:, 1:].conj())
        else:
            m = a.conj().resolve_conj()
        g = torch.empty_like(grad_out)
        with _one_thread():
            _scan_into(g, m, grad_out, None, not reverse, chunk)

        grad_a = grad_x0 = None
        first = L - 1 if reverse else 0  # the step that reads x0
        if x0 is not None and ctx.needs_input_grad[2]:
            a_first = a[:, first] if per_step else a
            grad_x0 = g[:, first] * a_first.conj()
        if ctx.needs_input_grad[0]:
            # x_prev_t: the state the step t multiplies (x_{t-1} forward, x_{t+1} reverse; x0 at the first step)
            g_rest, prev_rest = (g[:, :-1], out[:, 1:]) if reverse else (g[:, 1:], out[:, :-1])
            g_first = g[:, first]
            if per_step:
                grad_a = torch.empty_like(g)
                torch.mul(g_rest, prev_rest.conj(), out=grad_a[:, :-1] if reverse else grad_a[:, 1:])
                if x0 is None:
                    grad_a[:, first].zero_()
                else:
                    torch.mul(g_first, x0.conj(), out=grad_a[:, first])
            else:
                grad_a = (g_rest * prev_rest.conj()).sum((0, 1))
                if x0 is not None:
                    grad_a = grad_a + (g_first * x0.conj()).sum(0)
        grad_b = g if ctx.needs_input_grad[1] else None
        return grad_a, grad_b, grad_x0, None, None, None

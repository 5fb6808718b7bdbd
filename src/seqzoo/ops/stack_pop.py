"""The pop term of the nondeterministic stack DP: a blocked log-semiring contraction with its hand-written backward.

Each step of the DP (``ops/stack_dp.py``) adds, for every pair of earlier positions, the weight of popping back to
them: a contraction over (l, u) of ``tri[j, l, a, (u, y)] + p[l, (u, y), r]`` in the log semiring. The fast path
shifts both operands by their maxima and runs it as a batched matrix product in blocks of ``block_elements``
(bounded memory); where the shifted products would underflow, the exact log-sum-exp twin
(``pop_forward_exact`` / ``pop_backward_exact``) takes over for that block. Both are tested against each other in
``tests/test_stack_dp.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor

LOG_ZERO = -1e30  # the log semiring's zero: finite (the papers' code uses -1e10), so no -inf - -inf NaN in a gradient


def _pop_blocks(rows: int, cols: int, batch: int, s: int, q: int, block_elements: int) -> int:
    per_row = max(1, batch * cols * s * s * q)
    return max(1, min(rows, block_elements // per_row))


def _pop_layout(tri: Tensor, p: Tensor, j0: int, j1: int, q: int) -> Tensor:
    """``e[b, j, a, y, r, (l, u)] = tri[j, l, a, (u, y)] + p[l, (u, y), r]`` for rows ``j0..j1-1`` and the columns
    ``l >= j0`` they can use; the reduced axes (l, u) are last and contiguous."""
    b, rows, _, s, _ = tri.shape
    g = s // q
    cols = rows - j0
    t = tri[:, j0:j1, j0:].reshape(b, j1 - j0, cols, s, q, g).permute(0, 1, 3, 5, 2, 4)  # [j, a, y, l, u]
    t = t.reshape(b, j1 - j0, s, g, 1, cols * q)
    pl = p[:, j0:].reshape(b, cols, q, g, q).permute(0, 3, 4, 1, 2).reshape(b, 1, 1, g, q, cols * q)  # [y, r, l, u]
    return t + pl


def pop_forward_exact(tri: Tensor, p: Tensor, q: int, block_elements: int) -> Tensor:
    """``Pp[j, a, (r, y)] = LSE_{l >= j, u} tri[j, l, a, (u, y)] + p[l, (u, y), r]``.

    ``tri (B, J, J, S, S)`` (entries with l < j are LOG_ZERO), ``p (B, J, S, Q)``; returns ``(B, J, S, S)``.
    """
    b, rows, _, s, _ = tri.shape
    out = tri.new_empty(b, rows, s, s)
    step = _pop_blocks(rows, rows, b, s, q, block_elements)
    for j0 in range(0, rows, step):
        j1 = min(rows, j0 + step)
        e = _pop_layout(tri, p, j0, j1, q)
        m = e.amax(-1, keepdim=True)
        lse = e.sub_(m).exp_().sum(-1).log_().add_(m.squeeze(-1))  # [j, a, y, r]
        out[:, j0:j1] = lse.transpose(-1, -2).reshape(b, j1 - j0, s, s)
    return out


def pop_backward_exact(tri: Tensor, p: Tensor, pp: Tensor, dpp: Tensor, dtri: Tensor, q: int,
                       block_elements: int) -> Tensor:
    """Backward of ``pop_forward_exact``: adds into ``dtri`` in place and returns ``dp (B, J, S, Q)``."""
    b, rows, _, s, _ = tri.shape
    g = s // q
    dp = torch.zeros(b, rows, q, g, q, dtype=p.dtype, device=p.device)  # [l, u, y, r]
    pp5 = pp.view(b, rows, s, q, g).transpose(-1, -2).unsqueeze(-1)  # [j, a, y, r, 1]
    dpp5 = dpp.view(b, rows, s, q, g).transpose(-1, -2).unsqueeze(-1)
    step = _pop_blocks(rows, rows, b, s, q, block_elements)
    for j0 in range(0, rows, step):
        j1 = min(rows, j0 + step)
        cols = rows - j0
        w = _pop_layout(tri, p, j0, j1, q).sub_(pp5[:, j0:j1]).exp_().mul_(dpp5[:, j0:j1])  # [j, a, y, r, (l, u)]
        dt = w.sum(4).view(b, j1 - j0, s, g, cols, q).permute(0, 1, 4, 2, 5, 3)  # [j, l, a, u, y]
        dtri[:, j0:j1, j0:] += dt.reshape(b, j1 - j0, cols, s, s)
        dp[:, j0:] += w.sum((1, 2)).view(b, g, q, cols, q).permute(0, 3, 4, 1, 2)
    return dp.view(b, rows, s, q)


def _pop_matrices(tri: Tensor, p: Tensor, j0: int, j1: int, q: int) -> tuple[Tensor, Tensor]:
    """The pop contraction of rows ``j0..j1-1`` as a batched log-matmul: ``X[(b, y), (j, a), (l, u)]`` and
    ``Y[(b, y), (l, u), r]``."""
    b, rows, _, s, _ = tri.shape
    g = s // q
    cols = rows - j0
    x = tri[:, j0:j1, j0:].reshape(b, j1 - j0, cols, s, q, g).permute(0, 5, 1, 3, 2, 4)
    y = p[:, j0:].reshape(b, cols, q, g, q).permute(0, 3, 1, 2, 4)
    return x.reshape(b * g, (j1 - j0) * s, cols * q), y.reshape(b * g, cols * q, q)


def _underflow_floor(dtype: torch.dtype) -> float:
    """A shifted sum below this may have lost terms to underflow; such entries are recomputed exactly."""
    return 1e-20 if torch.finfo(dtype).bits <= 32 else 1e-200


def _shifted_exps(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``exp(x - mx)`` and ``exp(y - my)`` with per-row / per-column maxima (the contraction index is first
    balanced by the column maxima of x, which removes a common scale per split point)."""
    ck = x.amax(1, keepdim=True)
    ck = torch.where(ck > LOG_ZERO / 2, ck, torch.zeros_like(ck))
    xs, ys = x - ck, y + ck.transpose(1, 2)
    mx, my = xs.amax(2, keepdim=True), ys.amax(1, keepdim=True)
    return xs.sub_(mx).exp_(), ys.sub_(my).exp_(), mx, my


def pop_forward(tri: Tensor, p: Tensor, q: int, block_elements: int) -> Tensor:
    """Same as ``pop_forward_exact`` by shifted exp-matmuls; entries whose shifted sum could have underflowed are
    recomputed with an exact log-sum-exp, so the result is exact to float precision in every case."""
    b, rows, _, s, _ = tri.shape
    g = s // q
    out = tri.new_empty(b, rows, s, s)
    step = _pop_blocks(rows, rows, b, s, 1, block_elements)
    floor = _underflow_floor(tri.dtype)
    for j0 in range(0, rows, step):
        j1 = min(rows, j0 + step)
        x, y = _pop_matrices(tri, p, j0, j1, q)
        ex, ey, mx, my = _shifted_exps(x, y)
        prod = torch.bmm(ex, ey)
        c = prod.clamp_min(floor).log_().add_(mx).add_(my)  # [(b, y), (j, a), r]
        bad = prod < floor
        if bool(bad.any()):
            i, m, n = bad.nonzero(as_tuple=True)
            c[i, m, n] = torch.logsumexp(x[i, m] + y[i, :, n], -1)
        out[:, j0:j1] = c.view(b, g, j1 - j0, s, q).permute(0, 2, 3, 4, 1).reshape(b, j1 - j0, s, s)
    return out


def pop_backward(tri: Tensor, p: Tensor, pp: Tensor, dpp: Tensor, dtri: Tensor, q: int,
                 block_elements: int) -> Tensor:
    """Backward of ``pop_forward`` (same math as ``pop_backward_exact``): adds into ``dtri``, returns ``dp``."""
    b, rows, _, s, _ = tri.shape
    g = s // q
    dp = torch.zeros(b, g, rows, q, q, dtype=p.dtype, device=p.device)  # [y, l, u, r]
    step = _pop_blocks(rows, rows, b, s, 1, block_elements)
    floor = _underflow_floor(tri.dtype)
    for j0 in range(0, rows, step):
        j1 = min(rows, j0 + step)
        cols = rows - j0
        x, y = _pop_matrices(tri, p, j0, j1, q)
        ex, ey, mx, my = _shifted_exps(x, y)
        c = pp[:, j0:j1].reshape(b, j1 - j0, s, q, g).permute(0, 4, 1, 2, 3).reshape(b * g, (j1 - j0) * s, q)
        dc = dpp[:, j0:j1].reshape(b, j1 - j0, s, q, g).permute(0, 4, 1, 2, 3).reshape(b * g, (j1 - j0) * s, q)
        prod = torch.bmm(ex, ey)
        bad = prod < floor
        h = dc / prod.clamp_min(floor)  # dC * exp(mx + my - C)
        if bool(bad.any()):
            h = torch.where(bad, torch.zeros_like(h), h)
        dx = torch.bmm(h, ey.transpose(1, 2)).mul_(ex)
        dy = torch.bmm(ex.transpose(1, 2), h).mul_(ey)
        if bool(bad.any()):
            i, m, n = bad.nonzero(as_tuple=True)
            w = torch.exp(x[i, m] + y[i, :, n] - c[i, m, n].unsqueeze(-1)) * dc[i, m, n].unsqueeze(-1)
            dx.index_put_((i, m), w, accumulate=True)
            dy_t = dy.transpose(1, 2)
            dy_t.index_put_((i, n), w, accumulate=True)
        dtri[:, j0:j1, j0:] += dx.view(b, g, j1 - j0, s, cols, q).permute(0, 2, 4, 3, 5, 1).reshape(
            b, j1 - j0, cols, s, s)
        dp[:, :, j0:] += dy.view(b, g, cols, q, q)
    return dp.permute(0, 2, 3, 1, 4).reshape(b, rows, s, q)

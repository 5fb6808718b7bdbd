"""Scaled Cayley transform of a skew-symmetric matrix and the Neumann-series update of its inverse.

``U = (I + A)^{-1} (I - A) D`` is orthogonal for every skew-symmetric ``A`` (``Aᵀ = -A``) and every
diagonal ``D`` with entries ±1 (scoRNN, Helfrich et al. 2018; NC-GRU, Mucllari et al. 2022). ``D``
with ``ρ`` entries -1 lets ``U`` reach matrices with eigenvalue -1, which the plain Cayley image
cannot.

The expensive part is ``M = (I + A)^{-1}``. NC-GRU keeps it up to date between exact recomputes
with a Neumann series: when ``A`` moves by ``ΔA``,
``(I + A + ΔA)^{-1} = (I + M ΔA)^{-1} M = Σ_k (-M ΔA)^k M``, truncated at a small order. The series
converges only while ``‖M ΔA‖ < 1`` (small optimizer steps). ``ΔA`` must be the step the optimizer
actually took (Adam's step is not ``lr · ∂L/∂A``), which is why callers pass it in.

Functions (each fast path has a slow, obviously correct twin used by the tests):

* ``cayley_reference(A, d)``: ``U`` by a linear solve, differentiable by autograd.
* ``cayley_from_inverse(A, M, d)``: ``U = M (I - A) D`` with a given (cached) inverse ``M``; its
  backward is the closed form ``∂L/∂A = -Mᵀ G (Uᵀ + D)`` (for the full matrix ``A``; the gradient
  with respect to the independent upper-triangle entries is ``Vᵀ - V`` with ``V = Mᵀ G (Uᵀ + D)``,
  the scoRNN formula).
* ``cayley_inverse(A)``: the exact ``(I + A)^{-1}`` (computed in float64).
* ``neumann_inverse_update(M, delta, order)``: the truncated series above.
* ``skew_from_upper(raw)``: ``A`` from the strictly upper triangle of a free matrix.
* ``scornn_skew_init(n)`` and ``sign_diagonal(n, rho)``: scoRNN's initialization of ``A`` and ``D``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def _check_square(name: str, t: Tensor) -> int:
    if t.dim() != 2 or t.shape[0] != t.shape[1]:
        raise ValueError(f"{name} must be a square matrix (n, n), got shape {tuple(t.shape)}")
    return t.shape[0]


def _check_diag(d: Tensor, n: int) -> None:
    if d.shape != (n,):
        raise ValueError(f"d must be the diagonal of D as a vector of shape ({n},), got shape {tuple(d.shape)}")


def skew_from_upper(raw: Tensor) -> Tensor:
    """``A = T - Tᵀ`` with ``T`` the strictly upper triangle of ``raw``; the rest of ``raw`` is ignored.

    The independent entries of ``A`` are then exactly ``raw[i, j]`` for ``i < j``, so the gradient
    they receive is the scoRNN gradient ``Vᵀ - V`` (upper entries) and an optimizer step on ``raw``
    moves ``A`` by a skew-symmetric ``ΔA`` by construction.
    """
    _check_square("raw", raw)
    upper = torch.triu(raw, diagonal=1)
    return upper - upper.transpose(0, 1)


def sign_diagonal(n: int, rho: int, *, dtype: torch.dtype | None = None, device=None) -> Tensor:
    """The diagonal of ``D``: ``n - rho`` entries +1 followed by ``rho`` entries -1."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(rho, bool) or not isinstance(rho, int) or not 0 <= rho <= n:
        raise ValueError(f"rho (number of -1 entries of D) must be an integer in [0, {n}], got {rho!r}")
    d = torch.ones(n, dtype=dtype or torch.get_default_dtype(), device=device)
    if rho:
        d[n - rho:] = -1.0
    return d


def scornn_skew_init(n: int, *, generator: torch.Generator | None = None, dtype: torch.dtype | None = None
                     ) -> Tensor:
    """scoRNN's initial ``A``: 2×2 blocks ``[[0, s], [-s, 0]]`` on the diagonal, ``s = -tan(θ/2)``.

    ``θ ~ U(0, π/2)`` per block; ``s = -sqrt((1 - cos θ)/(1 + cos θ))`` makes the Cayley image of each
    block a rotation by ``θ``. With odd ``n`` the last row and column stay zero.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    dtype = dtype or torch.get_default_dtype()
    k = n // 2
    theta = torch.rand(k, generator=generator, dtype=torch.float64) * (math.pi / 2)
    s = -torch.sqrt((1 - torch.cos(theta)) / (1 + torch.cos(theta)))
    a = torch.zeros(n, n, dtype=torch.float64)
    idx = torch.arange(k) * 2
    a[idx, idx + 1] = s
    a[idx + 1, idx] = -s
    return a.to(dtype)


def cayley_reference(A: Tensor, d: Tensor) -> Tensor:
    """The reference twin: ``U = (I + A)^{-1}(I - A) D`` by ``torch.linalg.solve`` (autograd end to end)."""
    n = _check_square("A", A)
    _check_diag(d, n)
    eye = torch.eye(n, dtype=A.dtype, device=A.device)
    return torch.linalg.solve(eye + A, eye - A) * d


def cayley_inverse(A: Tensor) -> Tensor:
    """The exact ``(I + A)^{-1}``, computed in float64 and returned in ``A``'s dtype (no gradient)."""
    n = _check_square("A", A)
    a64 = A.detach().to(torch.float64)
    eye = torch.eye(n, dtype=torch.float64, device=A.device)
    return torch.linalg.inv(eye + a64).to(A.dtype)


def neumann_inverse_update(M: Tensor, delta: Tensor, order: int = 2) -> Tensor:
    """``(M^{-1} + delta)^{-1} ≈ Σ_{k=0}^{order} (-M delta)^k M`` (no gradient).

    ``M`` is the current ``(I + A)^{-1}`` and ``delta = A_new - A_old`` the actual step of ``A``.
    Evaluated as a Horner scheme, ``order`` matrix products plus one.
    """
    n = _check_square("M", M)
    if delta.shape != (n, n):
        raise ValueError(f"delta must have the shape of M {(n, n)}, got {tuple(delta.shape)}")
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order of the Neumann series must be an integer >= 1, got {order!r}")
    with torch.no_grad():
        X = M @ delta
        # S = I - X + X² - ... ± X^order via Horner: S = I - X S_{k-1}
        S = torch.eye(n, dtype=M.dtype, device=M.device) - X
        for _ in range(order - 1):
            S = torch.eye(n, dtype=M.dtype, device=M.device) - X @ S
        return S @ M


def neumann_step_norm(M: Tensor, delta: Tensor) -> float:
    """``‖M delta‖_2`` (spectral norm): the series converges while it is below 1."""
    with torch.no_grad():
        return float(torch.linalg.matrix_norm(M @ delta, ord=2))


class _CayleyFromInverse(torch.autograd.Function):
    """``U = M (I - A) D`` with the closed-form Cayley gradient ``∂L/∂A = -Mᵀ G (Uᵀ + D)``."""

    @staticmethod
    def forward(ctx, A: Tensor, M: Tensor, d: Tensor) -> Tensor:  # type: ignore[override]
        U = (M - M @ A) * d
        ctx.save_for_backward(M, U, d)
        return U

    @staticmethod
    @once_differentiable
    def backward(ctx, G: Tensor):  # type: ignore[override]
        M, U, d = ctx.saved_tensors
        grad_a = None
        if ctx.needs_input_grad[0]:
            right = U.transpose(0, 1) + torch.diag(d)
            grad_a = -(M.transpose(0, 1) @ G @ right)
        return grad_a, None, None


def cayley_from_inverse(A: Tensor, M: Tensor, d: Tensor) -> Tensor:
    """``U = M (I - A) D`` from a cached inverse ``M ≈ (I + A)^{-1}``; gradient flows to ``A`` only.

    The backward uses ``M`` as the inverse, as NC-GRU does; with ``M`` exact it equals autograd
    through ``cayley_reference``.
    """
    n = _check_square("A", A)
    if M.shape != (n, n):
        raise ValueError(f"M must have the shape of A {(n, n)}, got {tuple(M.shape)}")
    _check_diag(d, n)
    if torch.is_autocast_enabled(A.device.type):  # build U in full precision; its users may autocast it
        with torch.autocast(A.device.type, enabled=False):
            return _CayleyFromInverse.apply(A, M.detach().to(A.dtype), d.detach().to(A.dtype))
    return _CayleyFromInverse.apply(A, M.detach(), d.detach())


def orthogonality_residual(U: Tensor) -> tuple[float, float]:
    """``(‖UᵀU - I‖_F, max|UᵀU - I|)``, computed in float64.

    Float64 so that what remains is the weight's own rounding (~1e-7 per entry for float32), not the rounding of
    the product ``UᵀU`` (which in float32 alone is of the same order and would hide a drift of that size).
    """
    n = _check_square("U", U)
    with torch.no_grad():
        u = U.detach().double()
        err = u.transpose(0, 1) @ u - torch.eye(n, dtype=torch.float64, device=U.device)
        return float(torch.linalg.matrix_norm(err)), float(err.abs().max())


def orthogonality_error(U: Tensor) -> float:
    """``‖UᵀU - I‖_F`` (float64; see :func:`orthogonality_residual`)."""
    return orthogonality_residual(U)[0]

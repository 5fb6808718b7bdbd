"""Regularized least squares ``W = argmin ‖A W − T‖² + λ‖W‖²``, differentiable in ``A`` and ``T``.

Target-space learning (Fairbank, Samothrakis & Citi 2022; spec stacks-memory-equilibrium-translation-privacy.md
§6.2) computes every layer's weights from its targets with this solve inside ``forward``, so the loss gradient
reaches the targets through it. Two algebraically equal forms, picked by shape:

* over-determined (``rows >= cols``): ``W = (AᵀA + λI)⁻¹ AᵀT`` (a ``cols × cols`` system);
* under-determined (``rows < cols``): ``W = Aᵀ(AAᵀ + λI)⁻¹T`` (a ``rows × rows`` system; the minimum-norm solution
  as λ → 0, like ``tf.linalg.lstsq(fast=True)`` of the official code).

The solve runs in float64 by default (spec §6.5: with λ = 0.001 the normal equations of float32 data lose most of
their digits) and returns the input dtype. ``ridge_solve_reference`` is the slow twin: an SVD-based least-squares
solve of the augmented system ``[A; √λ I] W ≈ [T; 0]``, never the normal equations.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _check(A: Tensor, T: Tensor, lam: float) -> None:
    if A.dim() != 2 or T.dim() != 2 or A.shape[0] != T.shape[0]:
        raise ValueError(f"ridge_solve: expected A (rows, cols) and T (rows, outputs) with equal rows, got "
                         f"{tuple(A.shape)} and {tuple(T.shape)}")
    if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0):
        raise ValueError(f"ridge_solve: lam must be a finite number >= 0, got {lam!r}")


def ridge_solve(A: Tensor, T: Tensor, lam: float, *, float64: bool = True) -> Tensor:
    """``(cols, outputs)`` weights minimising ``‖A W − T‖² + lam ‖W‖²`` (see the module docstring)."""
    _check(A, T, lam)
    out_dtype = torch.promote_types(A.dtype, T.dtype)
    if float64:
        A, T = A.double(), T.double()
    rows, cols = A.shape
    if rows >= cols:
        gram = A.mT @ A
        rhs = A.mT @ T
        W = torch.linalg.solve(gram + lam * torch.eye(cols, dtype=A.dtype, device=A.device), rhs)
    else:
        gram = A @ A.mT
        W = A.mT @ torch.linalg.solve(gram + lam * torch.eye(rows, dtype=A.dtype, device=A.device), T)
    return W.to(out_dtype)


def ridge_solve_reference(A: Tensor, T: Tensor, lam: float) -> Tensor:
    """The slow twin of ``ridge_solve``: SVD least squares of ``[A; √lam I] W ≈ [T; 0]`` in float64."""
    _check(A, T, lam)
    out_dtype = torch.promote_types(A.dtype, T.dtype)
    A64, T64 = A.double(), T.double()
    cols = A.shape[1]
    if lam > 0:
        A64 = torch.cat([A64, math.sqrt(lam) * torch.eye(cols, dtype=torch.float64, device=A.device)])
        T64 = torch.cat([T64, T64.new_zeros(cols, T.shape[1])])
    # the minimum-norm solution (gelsd) where lam = 0 leaves it under-determined
    return torch.linalg.lstsq(A64.cpu(), T64.cpu(), driver="gelsd").solution.to(A.device, out_dtype)

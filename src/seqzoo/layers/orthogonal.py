"""A reusable orthogonal square weight: the scaled Cayley transform with a Neumann-updated inverse.

``CayleyOrthogonal(n)`` holds a skew-symmetric ``A`` (its independent upper-triangle entries are
the parameter ``raw``) and a fixed ±1 diagonal ``D``; ``module.weight`` is
``U = (I + A)^{-1}(I - A) D``, orthogonal and differentiable with respect to ``A``.

The inverse ``M = (I + A)^{-1}`` is cached in a buffer. When ``A`` has moved since the cache was
made (an optimizer step), the cache is brought up to date with the Neumann series of the *actual*
step ``ΔA = A - A_prev`` (``A_prev`` is a buffer too), and recomputed exactly every
``recompute_every`` updates, or at once when the step is too large for the series
(``‖M ΔA‖_F >= max_step_norm``). Between exact recomputes ``U`` is orthogonal only approximately
(error of the order of ``‖M ΔA‖^{order+1}``), as in NC-GRU.

When the cache is updated:

* lazily, on the first ``weight`` access after ``A`` changed (default ``auto_update=True``), so
  no change to a training loop is needed;
* or eagerly: call ``update_orthogonal(model)`` right after ``optimizer.step()``; it walks the
  model and updates every ``CayleyOrthogonal`` (the lazy check then finds nothing to do). A trainer
  that wants forward passes free of side effects sets ``auto_update=False`` and calls it.

Everything that defines ``U`` is in the ``state_dict`` (``raw``, ``d``, ``inverse``, ``a_prev`` and
the update counter), so a saved and loaded module gives bit-identical weights. Changing the dtype
(``module.double()``) recomputes the cached inverse of ``A_prev`` exactly in the new precision.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqzoo.ops.cayley import (
    cayley_from_inverse,
    cayley_inverse,
    neumann_inverse_update,
    orthogonality_error,
    orthogonality_residual,
    scornn_skew_init,
    sign_diagonal,
    skew_from_upper,
)


class CayleyOrthogonal(nn.Module):
    """An ``n × n`` orthogonal matrix ``U = (I + A)^{-1}(I - A) D`` trained through skew-symmetric ``A``.

    Args:
        n: size of the matrix.
        rho: number of -1 entries of ``D`` (default ``n // 2``; NC-GRU used 20 for n=50, 50 for n=100).
        neumann_order: order of the Neumann series of the inverse update (1 or 2 in NC-GRU).
        recompute_every: exact recompute of the inverse after this many updates (NC-GRU: 49 on the
            synthetic tasks, 100 on char-PTB). 1 means always exact.
        max_step_norm: a step with ``‖M ΔA‖_F`` at or above this is not expanded but recomputed exactly.
        auto_update: bring the cache up to date on ``weight`` access when ``A`` changed.
        init: ``"scornn"`` (2×2 rotation blocks, angles U(0, π/2)) or ``"zeros"`` (``U = D``).
    """

    def __init__(self, n: int, *, rho: int | None = None, neumann_order: int = 2, recompute_every: int = 50,
                 max_step_norm: float = 0.5, auto_update: bool = True, init: str = "scornn",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"CayleyOrthogonal: n must be a positive integer, got {n!r}")
        rho = n // 2 if rho is None else rho
        if isinstance(neumann_order, bool) or not isinstance(neumann_order, int) or neumann_order < 1:
            raise ValueError(f"CayleyOrthogonal: neumann_order must be an integer >= 1, got {neumann_order!r}")
        if isinstance(recompute_every, bool) or not isinstance(recompute_every, int) or recompute_every < 1:
            raise ValueError(f"CayleyOrthogonal: recompute_every must be an integer >= 1, got {recompute_every!r}")
        if not 0.0 < float(max_step_norm) <= 1.0:
            raise ValueError(f"CayleyOrthogonal: max_step_norm must be in (0, 1] (the series diverges beyond 1), "
                             f"got {max_step_norm!r}")
        if init not in ("scornn", "zeros"):
            raise ValueError(f"CayleyOrthogonal: init must be 'scornn' or 'zeros', got {init!r}")
        self.n = n
        self.rho = rho
        self.neumann_order = neumann_order
        self.recompute_every = recompute_every
        self.max_step_norm = float(max_step_norm)
        self.auto_update = auto_update
        self.init = init
        self.raw = nn.Parameter(torch.zeros(n, n))
        self.register_buffer("d", sign_diagonal(n, rho))
        self.register_buffer("inverse", torch.eye(n))
        self.register_buffer("a_prev", torch.zeros(n, n))
        self.register_buffer("updates_since_recompute", torch.zeros((), dtype=torch.int64))
        self.reset_parameters(generator)

    # ----- parameters and cache ---------------------------------------------------------------
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-draw ``A`` (scoRNN blocks or zeros) and recompute the inverse exactly."""
        with torch.no_grad():
            self.raw.zero_()
            if self.init == "scornn":
                self.raw.copy_(torch.triu(scornn_skew_init(self.n, generator=generator, dtype=self.raw.dtype), 1))
        self.recompute()

    @property
    def A(self) -> Tensor:
        """The skew-symmetric matrix (differentiable function of ``raw``)."""
        return skew_from_upper(self.raw)

    def recompute(self) -> None:
        """Exact inverse of ``I + A`` for the current ``A`` (and reset the update counter)."""
        with torch.no_grad():
            a = skew_from_upper(self.raw)
            self.inverse = cayley_inverse(a)
            self.a_prev = a.clone()
            self.updates_since_recompute = torch.zeros((), dtype=torch.int64, device=a.device)

    def after_optimizer_step(self) -> bool:
        """Bring the cached inverse up to date with the current ``A``; returns True when it changed.

        Uses the Neumann series of the actual step ``ΔA = A - A_prev``, or an exact recompute when
        the counter reaches ``recompute_every`` or the step is too large for the series.
        """
        with torch.no_grad():
            a = skew_from_upper(self.raw)
            if a.dtype != self.a_prev.dtype or a.device != self.a_prev.device:
                self.recompute()
                return True
            if torch.equal(a, self.a_prev):
                return False
            delta = a - self.a_prev
            count = int(self.updates_since_recompute) + 1
            step_norm = float(torch.linalg.matrix_norm(self.inverse @ delta))
            if count >= self.recompute_every or not step_norm < self.max_step_norm:
                self.recompute()
                return True
            # Buffers are replaced, not written in place, so a graph that saved the old inverse stays valid.
            self.inverse = neumann_inverse_update(self.inverse, delta, self.neumann_order)
            self.a_prev = a.clone()
            self.updates_since_recompute = torch.full((), count, dtype=torch.int64, device=a.device)
            return True

    # ----- the weight -------------------------------------------------------------------------
    @property
    def weight(self) -> Tensor:
        """``U = M (I - A) D`` (``M`` the cached inverse); gradients flow to ``raw`` by the Cayley formula."""
        if self.auto_update:
            self.after_optimizer_step()
        return cayley_from_inverse(skew_from_upper(self.raw), self.inverse, self.d)

    def forward(self) -> Tensor:
        return self.weight

    def orthogonality_error(self) -> float:
        """``‖UᵀU - I‖_F`` of the current weight (without updating the cache)."""
        with torch.no_grad():
            return orthogonality_error(cayley_from_inverse(skew_from_upper(self.raw), self.inverse, self.d))

    def module_metrics(self) -> dict[str, float]:
        """Orthogonality of the ``U`` the next forward uses, for the trainer's train rows (issue 20).

        ``orth_error`` = ``‖UᵀU - I‖_F`` and ``orth_error_maxabs`` = ``max|UᵀU - I|``, both from
        :func:`~seqzoo.ops.cayley.orthogonality_residual` (float64, the rule ``orthogonality_error`` uses). Called by
        the trainer after each optimizer step; with ``auto_update`` the cache is brought up to date first, exactly as
        the next ``weight`` access would (so the run's numbers do not change).
        """
        if self.auto_update:
            self.after_optimizer_step()
        with torch.no_grad():
            fro, maxabs = orthogonality_residual(cayley_from_inverse(skew_from_upper(self.raw), self.inverse, self.d))
        return {"orth_error": fro, "orth_error_maxabs": maxabs}

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        dtype = self.inverse.dtype
        out = super()._apply(fn, recurse)
        if self.inverse.dtype != dtype:  # a cast loses the precision of the inverse: rebuild it for A_prev
            with torch.no_grad():
                self.inverse = cayley_inverse(self.a_prev)
        return out

    def extra_repr(self) -> str:
        return (f"{self.n}, rho={self.rho}, neumann_order={self.neumann_order}, "
                f"recompute_every={self.recompute_every}, auto_update={self.auto_update}")


def orthogonal_modules(model: nn.Module) -> list[CayleyOrthogonal]:
    """Every ``CayleyOrthogonal`` inside ``model``."""
    return [m for m in model.modules() if isinstance(m, CayleyOrthogonal)]


def update_orthogonal(model: nn.Module) -> int:
    """Call after ``optimizer.step()``: update the cached inverse of every ``CayleyOrthogonal`` in ``model``.

    Returns how many were updated. Safe to call when nothing changed (it then does nothing).
    """
    return sum(bool(m.after_optimizer_step()) for m in orthogonal_modules(model))

"""Deep equilibrium layer: the output is the fixed point ``z* = f(z*, x)`` of one weight-tied function.

Bai, Kolter & Koltun, "Deep Equilibrium Models" (NeurIPS 2019); spec stacks-memory-equilibrium-translation-privacy.md
§4. ``DEQ(f)`` wraps any module ``f(z, x, **context) -> z`` (same shape as ``z``):

1. forward: ``z* = solver(f(·, x), z0)`` under ``no_grad`` (``seqzoo.ops.fixed_point``; nothing is stored);
2. one tracked call ``z_new = f(z*, x)`` gives the gradients with respect to the parameters and ``x``;
3. backward, by ``grad``:

   * ``"implicit"``: an ``autograd.Function`` replaces the gradient ``g`` arriving at ``z_new`` by the solution of
     ``w = w J_f + g`` (``J_f = ∂f/∂z`` at ``z*``), found by a fixed-point solver that uses only vector–Jacobian
     products on the graph of the tracked call; so ``∂ℓ/∂θ = w ∂f/∂θ`` (implicit function theorem). Saved memory
     is one ``f`` call, whatever the number of forward iterations.
   * ``"phantom"``: ``k`` damped steps ``z ← τ f(z, x) + (1 − τ) z`` from the detached ``z*``, differentiated by
     autograd (Geng et al. 2021); ``"jfb"``: one undamped step (``k = 1, τ = 1``, Fung et al. 2022).

``jac_reg > 0`` (train mode) adds the Hutchinson estimate ``‖εᵀ J_f‖² / n`` (ε Gaussian, one VJP on the tracked
call, Bai et al. 2021) as ``jacobian_loss()``, which ``seqzoo.training.jacobian.JacobianRegularization`` adds to the
training loss (with probability ``jac_freq`` per step). ``VariationalDropout`` inside ``f`` draws one mask per solve
(ordinary dropout, a new mask per iteration, would destroy the fixed point); ``DEQ`` resets the masks before each
forward. Solver statistics (forward and backward iterations, residuals, converged fraction, fallbacks) accumulate
in train mode and reach the trainer's metrics through ``module_metrics()``; ``last_stats`` holds the latest solve.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from seqzoo.ops.fixed_point import METHODS, STOPS, SolverStats, check_options, solve

GRADS = ("implicit", "phantom", "jfb")


class VariationalDropout(nn.Module):
    """Dropout whose mask is drawn once (at the first call after ``reset``) and reused until the next ``reset``.

    The mask has the shape of the first input it sees; inputs of another shape are an error (a DEQ's iterates all
    share one shape). Identity in eval mode or with ``p = 0``.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p
        self.mask: Tensor | None = None

    def reset(self) -> None:
        self.mask = None

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.mask is None or self.mask.shape != x.shape:
            if self.mask is not None:
                raise ValueError(f"VariationalDropout: input shape {tuple(x.shape)} differs from the mask's "
                                 f"{tuple(self.mask.shape)}; call reset() before a new solve")
            keep = 1.0 - self.p
            self.mask = torch.empty_like(x).bernoulli_(keep) / keep
        return x * self.mask


def reset_dropout(module: nn.Module) -> None:
    """Forget the masks of every ``VariationalDropout`` in ``module`` (a new solve draws new ones)."""
    for m in module.modules():
        if isinstance(m, VariationalDropout):
            m.reset()


class _ImplicitGrad(torch.autograd.Function):
    """Identity forward; backward returns ``w`` solving ``w = w J_f(z*) + g`` (VJPs only).

    The VJPs reuse the graph of the tracked call ``z_new = f(z*)`` (kept with ``retain_graph``; the outer backward
    then runs through it once more for the parameters), so the backward holds one graph of ``f``, not two.
    """

    @staticmethod
    def forward(ctx, z_new: Tensor, z_star: Tensor, opts: dict[str, Any],
                record: Callable[[SolverStats], None]) -> Tensor:
        ctx.opts, ctx.record = opts, record
        ctx.save_for_backward(z_new, z_star)
        return z_new.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        z_new, z_star = ctx.saved_tensors

        def linear_map(w: Tensor) -> Tensor:
            (vjp,) = torch.autograd.grad(z_new, z_star, w, retain_graph=True)
            return vjp + grad

        with torch.no_grad():
            w, stats = solve(linear_map, grad.detach(), **ctx.opts)
        ctx.record(stats)
        return w, None, None, None


class DEQ(nn.Module):
    """``z = deq(x, z0=None, **context)``: the equilibrium of ``f(z, x, **context)`` with a chosen gradient.

    Args:
        f: module ``f(z, x, **context) -> z`` (its output has ``z``'s shape); acts on each sample separately.
        solver, max_iter, tol, stop: forward solve (``seqzoo.ops.fixed_point``; deq: Anderson, 30, 1e-3, "rel").
        b_solver, b_max_iter, b_tol: backward linear solve of the implicit gradient, stopped on the relative
            residual ``‖w J + g − w‖ / ‖w J + g‖`` (scale-free: the incoming gradient of a mean loss is tiny).
        eval_max_iter: iteration cap in eval mode (None: ``max_iter``; deq evaluates with a larger cap).
        grad: ``"implicit"``, ``"phantom"`` or ``"jfb"``.
        phantom_steps, tau: ``k`` and ``τ`` of the phantom gradient.
        anderson_m, anderson_lam, anderson_beta: Anderson settings (both solves).
        jac_reg: weight of the Hutchinson Jacobian penalty (0 = off); ``jac_freq``: probability per forward.

    ``z0`` (forward argument) is the initial estimate; None means zeros of ``x``'s shape (deq's initial estimate).
    """

    def __init__(self, f: nn.Module, *, solver: str = "anderson", max_iter: int = 30, tol: float = 1e-3,
                 stop: str = "rel", b_solver: str = "anderson", b_max_iter: int = 35, b_tol: float = 1e-6,
                 eval_max_iter: int | None = None, grad: str = "implicit", phantom_steps: int = 1, tau: float = 1.0,
                 anderson_m: int = 6, anderson_lam: float = 1e-4, anderson_beta: float = 1.0, jac_reg: float = 0.0,
                 jac_freq: float = 1.0) -> None:
        super().__init__()
        check_options(solver, max_iter, tol, stop)
        check_options(b_solver, b_max_iter, b_tol, "rel")
        if eval_max_iter is not None:
            check_options(solver, eval_max_iter, tol, stop)
        if grad not in GRADS:
            raise ValueError(f"grad must be one of {GRADS}, got {grad!r}")
        if isinstance(phantom_steps, bool) or not isinstance(phantom_steps, int) or phantom_steps < 1:
            raise ValueError(f"phantom_steps must be an integer >= 1, got {phantom_steps!r}")
        if not 0.0 < tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {tau}")
        if jac_reg < 0 or not 0.0 <= jac_freq <= 1.0:
            raise ValueError(f"jac_reg must be >= 0 and jac_freq in [0, 1], got {jac_reg}, {jac_freq}")
        self.f = f
        self.solver, self.max_iter, self.tol, self.stop = solver, max_iter, tol, stop
        self.b_solver, self.b_max_iter, self.b_tol = b_solver, b_max_iter, b_tol
        self.eval_max_iter = eval_max_iter
        self.grad = grad
        self.phantom_steps, self.tau = (1, 1.0) if grad == "jfb" else (phantom_steps, tau)
        self.anderson = {"m": anderson_m, "lam": anderson_lam, "beta": anderson_beta}
        self.jac_reg, self.jac_freq = jac_reg, jac_freq
        self._jac_loss: Tensor | None = None
        self.last_stats: SolverStats | None = None
        self.last_backward_stats: SolverStats | None = None
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def _solver_kwargs(self, method: str) -> dict[str, Any]:
        return dict(self.anderson) if method == "anderson" else {}

    def _accumulate(self, prefix: str, stats: SolverStats) -> None:
        if not self.training:
            return
        for key, value in stats.summary().items():
            name = f"{prefix}_{key}"
            if key == "rel_residual_max":
                self._sums[name] = max(self._sums.get(name, 0.0), value)
                self._counts[name] = 1
            else:
                self._sums[name] = self._sums.get(name, 0.0) + value
                self._counts[name] = self._counts.get(name, 0) + 1

    def _record_backward(self, stats: SolverStats) -> None:
        self.last_backward_stats = stats
        self._accumulate("bwd", stats)

    def module_metrics(self) -> dict[str, float]:
        """Forward (``fwd_*``) and backward (``bwd_*``) solver statistics averaged since the last call."""
        out = {k: v / self._counts[k] for k, v in self._sums.items()}
        self._sums, self._counts = {}, {}
        return out

    def jacobian_loss(self) -> Tensor | None:
        """The weighted Jacobian penalty of the last training forward (then forgotten), or None."""
        loss, self._jac_loss = self._jac_loss, None
        return loss

    def forward(self, x: Tensor, z0: Tensor | None = None, **context: Any) -> Tensor:
        reset_dropout(self.f)
        self._jac_loss = None

        def fn(z: Tensor) -> Tensor:
            return self.f(z, x, **context)

        with torch.no_grad():
            z0 = torch.zeros_like(x) if z0 is None else z0
            cap = self.max_iter if (self.training or self.eval_max_iter is None) else self.eval_max_iter
            z_star, stats = solve(fn, z0, self.solver, max_iter=cap, tol=self.tol, stop=self.stop,
                                  **self._solver_kwargs(self.solver))
        self.last_stats = stats
        self._accumulate("fwd", stats)
        if not torch.is_grad_enabled():
            return fn(z_star)
        if self.grad != "implicit":
            z = z_star.detach()
            for _ in range(self.phantom_steps):
                z = self.tau * fn(z) + (1 - self.tau) * z if self.tau != 1.0 else fn(z)
            return z
        zs = z_star.detach().requires_grad_(True)
        z_new = fn(zs)
        if self.training and self.jac_reg > 0 and float(torch.rand(())) < self.jac_freq:
            eps = torch.randn_like(zs)
            (vjp,) = torch.autograd.grad(z_new, zs, eps, create_graph=True)
            self._jac_loss = self.jac_reg * vjp.pow(2).sum() / eps.numel()
        if not z_new.requires_grad:
            return z_new
        opts = dict(method=self.b_solver, max_iter=self.b_max_iter, tol=self.b_tol, stop="rel",
                    **self._solver_kwargs(self.b_solver))
        return _ImplicitGrad.apply(z_new, zs, opts, self._record_backward)

    def extra_repr(self) -> str:
        return (f"solver={self.solver}, max_iter={self.max_iter}, tol={self.tol}, stop={self.stop}, grad={self.grad}, "
                f"b_solver={self.b_solver}, jac_reg={self.jac_reg}")


def explicit_unroll(f: nn.Module, x: Tensor, n_steps: int, z0: Tensor | None = None, **context: Any) -> Tensor:
    """``n_steps`` applications ``z ← f(z, x)`` from ``z0`` (zeros of ``x``'s shape) with autograd.

    The DEQ's explicit weight-tied twin (same ``f``, depth ``n_steps``).
    """
    reset_dropout(f)
    z = torch.zeros_like(x) if z0 is None else z0
    for _ in range(n_steps):
        z = f(z, x, **context)
    return z


__all__ = ["DEQ", "GRADS", "METHODS", "STOPS", "VariationalDropout", "explicit_unroll", "reset_dropout"]

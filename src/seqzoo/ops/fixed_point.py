"""Batched fixed-point solvers for ``z = f(z)``: plain iteration, Anderson acceleration and Broyden's method.

Deep equilibrium models (spec stacks-memory-equilibrium-translation-privacy.md §4.2) find ``z*`` with
``f(z*) = z*`` in every forward pass and solve a linear fixed point ``w = w J + g`` in every backward pass. The
solvers here work on a batch ``z (B, ...)`` and treat each sample as its own problem: a sample stops (its iterate is
frozen) once its residual is below ``tol``, and the loop ends when every sample has stopped or after ``max_iter``
evaluations of ``f``. ``f`` is still called on the whole batch (it may close over batched inputs), so it must act on
each sample separately. Every solver returns the iterate with the lowest residual it saw per sample (never a worse
later one) and a ``SolverStats``.

Residuals: ``abs = ‖f(z) − z‖`` and ``rel = abs / ‖f(z)‖`` per sample; ``stop="rel"`` (deq's default) or ``"abs"``
says which one is compared with ``tol``.

Failures never raise mid-training (spec §4.8): a singular or ill-conditioned Anderson system (``solve_ex`` reports
it, or gives non-finite weights) falls back to a plain damped step for that sample and is counted in
``stats.fallbacks``; a Broyden rank-one update with a vanishing denominator is skipped (also counted); a sample whose
``f`` value becomes non-finite is frozen at its best iterate and marked ``diverged``. The best iterate starts as
``z0`` (deq issue #26: "lowest_xest referenced before assignment" when the solver diverged at once).

Anderson's regularization ``lam`` is relative to the largest diagonal entry of the Gram matrix (scale-free): deq's
absolute ``λ = 1e-4`` swamps the Gram matrix once residuals fall below ``1e-2`` and stalls the solver far above a
``1e-6`` tolerance.

``*_reference`` are slow twins for tests: one sample at a time, Python lists of past iterates, a dense inverse
Jacobian for Broyden (Sherman–Morrison on the full matrix), the same stopping rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

Fn = Callable[[Tensor], Tensor]
METHODS = ("iteration", "anderson", "broyden")
STOPS = ("rel", "abs")


@dataclass
class SolverStats:
    """Per-sample outcome of one solve (all ``(B,)`` tensors) and batch-level counters."""

    iterations: Tensor  # f-evaluations until the sample stopped (max_iter when it never did)
    abs_residual: Tensor  # ‖f(z) − z‖ of the returned iterate
    rel_residual: Tensor  # abs_residual / ‖f(z)‖
    converged: Tensor  # bool: residual below tol
    diverged: Tensor  # bool: f became non-finite; the sample holds its best finite iterate
    nfev: int  # evaluations of f on the whole batch
    fallbacks: int  # Anderson systems that fell back to a plain step, Broyden updates skipped (active samples)

    def summary(self) -> dict[str, float]:
        """Batch means (and the worst relative residual) as plain floats, for logging."""
        return {"iterations": float(self.iterations.float().mean()), "nfev": float(self.nfev),
                "abs_residual": float(self.abs_residual.mean()), "rel_residual": float(self.rel_residual.mean()),
                "rel_residual_max": float(self.rel_residual.max()) if self.rel_residual.numel() else 0.0,
                "converged": float(self.converged.float().mean()), "diverged": float(self.diverged.float().mean()),
                "fallbacks": float(self.fallbacks)}


def check_options(method: str, max_iter: int, tol: float, stop: str) -> None:
    """Raise a clear ``ValueError`` for a bad solver setting."""
    if method not in METHODS:
        raise ValueError(f"fixed-point solver must be one of {METHODS}, got {method!r}")
    if stop not in STOPS:
        raise ValueError(f"stop mode must be one of {STOPS}, got {stop!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")


def residuals(fz: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    """``(abs, rel)`` residuals per sample of flattened ``(B, n)`` iterates ``z`` and images ``fz``."""
    ab = (fz - z).norm(dim=1)
    return ab, ab / fz.norm(dim=1).clamp_min(torch.finfo(fz.dtype).tiny)


class _Tracker:
    """Best iterate, residuals, per-sample stop and divergence bookkeeping shared by the batched solvers."""

    def __init__(self, z0: Tensor, tol: float, stop: str) -> None:
        b = z0.shape[0]
        self.tol, self.stop = tol, stop
        self.best = z0.clone()
        inf = torch.full((b,), float("inf"), dtype=z0.dtype, device=z0.device)
        self.best_abs, self.best_rel = inf.clone(), inf.clone()
        self.active = torch.ones(b, dtype=torch.bool, device=z0.device)
        self.converged = torch.zeros_like(self.active)
        self.diverged = torch.zeros_like(self.active)
        self.iterations = torch.zeros(b, dtype=torch.long, device=z0.device)
        self.nfev = 0
        self.fallbacks = 0

    def observe(self, z: Tensor, fz: Tensor) -> None:
        """Record one evaluation ``fz = f(z)`` of the active samples."""
        self.nfev += 1
        ab, rel = residuals(fz, z)
        finite = torch.isfinite(fz).all(1) & torch.isfinite(z).all(1)
        act = self.active
        self.iterations += act.long()
        key, best_key = (rel, self.best_rel) if self.stop == "rel" else (ab, self.best_abs)
        better = act & finite & (key < best_key)
        self.best = torch.where(better[:, None], z, self.best)
        self.best_abs = torch.where(better, ab, self.best_abs)
        self.best_rel = torch.where(better, rel, self.best_rel)
        done = act & finite & (key <= self.tol)
        bad = act & ~finite
        self.converged |= done
        self.diverged |= bad
        self.active = act & ~done & ~bad

    def stats(self) -> SolverStats:
        return SolverStats(self.iterations, self.best_abs, self.best_rel, self.converged, self.diverged, self.nfev,
                           self.fallbacks)


def _start(f: Fn, z0: Tensor, tol: float, stop: str) -> tuple[torch.Size, Fn, Tensor, _Tracker]:
    """The shape of ``z0``, ``f`` on flat ``(B, n)`` iterates, the flat ``z0`` and a fresh tracker."""
    shape = z0.shape
    x = z0.reshape(shape[0], -1)
    return shape, (lambda v: f(v.view(shape)).reshape(shape[0], -1)), x, _Tracker(x, tol, stop)


def fixed_point_iteration(f: Fn, z0: Tensor, *, max_iter: int = 40, tol: float = 1e-3, stop: str = "rel",
                          tau: float = 1.0) -> tuple[Tensor, SolverStats]:
    """``z ← τ f(z) + (1 − τ) z`` until the residual of each sample is below ``tol`` (torchdeq's default solver)."""
    check_options("iteration", max_iter, tol, stop)
    shape, g, z, tr = _start(f, z0, tol, stop)
    for _ in range(max_iter):
        fz = g(z)
        tr.observe(z, fz)
        if not bool(tr.active.any()):
            break
        z = torch.where(tr.active[:, None], tau * fz + (1 - tau) * z, tr.best)
    return tr.best.view(shape), tr.stats()


def anderson(f: Fn, z0: Tensor, *, max_iter: int = 50, tol: float = 1e-3, stop: str = "rel", m: int = 6,
             lam: float = 1e-4, beta: float = 1.0) -> tuple[Tensor, SolverStats]:
    """Anderson acceleration with memory ``m``, relative regularization ``lam`` and mixing ``beta`` (deq defaults).

    With ``G_i = F_i − X_i`` over the last ``n = min(k, m)`` iterates, solve the bordered system
    ``[[0, 1ᵀ], [1, G Gᵀ + lam · max diag(G Gᵀ) · I]] [ν; α] = [1; 0]`` (``min ‖Σ α_i G_i‖`` s.t. ``Σ α_i = 1``) and
    step to ``x = β Σ α_i F_i + (1 − β) Σ α_i X_i``.
    """
    check_options("anderson", max_iter, tol, stop)
    if m < 1:
        raise ValueError(f"Anderson memory m must be >= 1, got {m}")
    shape, g, x, tr = _start(f, z0, tol, stop)
    b, n_feat = x.shape
    X = x.new_zeros(b, m, n_feat)
    F = x.new_zeros(b, m, n_feat)
    for k in range(max_iter):
        fx = g(x)
        slot = k % m
        X[:, slot], F[:, slot] = x, fx
        tr.observe(x, fx)
        if not bool(tr.active.any()):
            break
        n = min(k + 1, m)
        if n == 1:
            x_new = beta * fx + (1 - beta) * x
        else:
            G = F[:, :n] - X[:, :n]
            gram = G @ G.transpose(1, 2)
            scale = gram.diagonal(dim1=1, dim2=2).amax(1).clamp_min(torch.finfo(x.dtype).tiny)
            H = x.new_zeros(b, n + 1, n + 1)
            H[:, 0, 1:] = 1
            H[:, 1:, 0] = 1
            H[:, 1:, 1:] = gram + lam * scale[:, None, None] * torch.eye(n, dtype=x.dtype, device=x.device)
            rhs = x.new_zeros(b, n + 1, 1)
            rhs[:, 0] = 1
            sol, info = torch.linalg.solve_ex(H, rhs)
            alpha = sol[:, 1:, 0]
            bad = (info != 0) | ~torch.isfinite(alpha).all(1)
            if bool(bad.any()):  # singular Gram: a plain damped step from the newest iterate for those samples
                tr.fallbacks += int((bad & tr.active).sum())
                onehot = torch.zeros_like(alpha)
                onehot[:, slot] = 1
                alpha = torch.where(bad[:, None], onehot, torch.nan_to_num(alpha))
            ax = (alpha[:, None] @ X[:, :n])[:, 0]
            af = (alpha[:, None] @ F[:, :n])[:, 0]
            x_new = beta * af + (1 - beta) * ax
        x = torch.where(tr.active[:, None], x_new, tr.best)
    return tr.best.view(shape), tr.stats()


def _bmatvec(U: Tensor, VT: Tensor, v: Tensor) -> Tensor:
    """``(−I + U Vᵀ) v`` per sample: the low-rank inverse-Jacobian estimate times ``v``."""
    return -v + (U @ (VT @ v[:, :, None]))[:, :, 0]


def _brmatvec(U: Tensor, VT: Tensor, v: Tensor) -> Tensor:
    """``vᵀ (−I + U Vᵀ)`` per sample."""
    return -v + ((v[:, None] @ U) @ VT)[:, 0]


def broyden(f: Fn, z0: Tensor, *, max_iter: int = 30, tol: float = 1e-3, stop: str = "rel"
            ) -> tuple[Tensor, SolverStats]:
    """Broyden's ("good") method on ``g(z) = f(z) − z`` with ``B_0 = −I`` and Sherman–Morrison rank-one updates.

    ``B = −I + U Vᵀ`` is kept as low-rank factors (memory ``O(max_iter · n)`` per sample); the step is
    ``z ← z − B g(z)``; the iterate with the lowest residual is returned (spec §4.2).
    """
    check_options("broyden", max_iter, tol, stop)
    shape, f_flat, x, tr = _start(f, z0, tol, stop)
    b, n_feat = x.shape
    U = x.new_zeros(b, n_feat, max_iter)
    VT = x.new_zeros(b, max_iter, n_feat)
    fx = f_flat(x)
    tr.observe(x, fx)
    gx = fx - x
    update = gx  # −B_0 g
    for k in range(max_iter - 1):
        if not bool(tr.active.any()):
            break
        act = tr.active[:, None]
        dx = torch.where(act, update, torch.zeros_like(update))
        x_new = x + dx
        fx_new = f_flat(x_new)
        tr.observe(x_new, fx_new)
        gx_new = fx_new - x_new
        dg = gx_new - gx
        finite = torch.isfinite(gx_new).all(1, keepdim=True)
        x, gx = torch.where(finite, x_new, x), torch.where(finite, gx_new, gx)
        dg = torch.where(finite, dg, torch.zeros_like(dg))
        Uk, VTk = U[:, :, :k], VT[:, :k]
        vT = _brmatvec(Uk, VTk, dx)
        den = (vT * dg).sum(1, keepdim=True)
        ok = (den.abs() > torch.finfo(x.dtype).eps * vT.norm(dim=1, keepdim=True) * dg.norm(dim=1, keepdim=True)) \
            & finite & act
        tr.fallbacks += int((~ok[:, 0] & tr.active & finite[:, 0]).sum())
        u = (dx - _bmatvec(Uk, VTk, dg)) / torch.where(ok, den, torch.ones_like(den))
        U[:, :, k] = torch.where(ok, u, torch.zeros_like(u))
        VT[:, k] = torch.where(ok, vT, torch.zeros_like(vT))
        update = -_bmatvec(U[:, :, : k + 1], VT[:, : k + 1], gx)
    return tr.best.view(shape), tr.stats()


def solve(f: Fn, z0: Tensor, method: str = "anderson", *, max_iter: int = 30, tol: float = 1e-3, stop: str = "rel",
          **kwargs) -> tuple[Tensor, SolverStats]:
    """Dispatch by name: ``"iteration"`` (``tau``), ``"anderson"`` (``m``, ``lam``, ``beta``) or ``"broyden"``."""
    check_options(method, max_iter, tol, stop)
    fn = {"iteration": fixed_point_iteration, "anderson": anderson, "broyden": broyden}[method]
    return fn(f, z0, max_iter=max_iter, tol=tol, stop=stop, **kwargs)


# ----- slow reference twins (one sample at a time) ----------------------------------------------------------------

def _per_sample(f: Fn, z0: Tensor, i: int) -> Fn:
    """``f`` restricted to sample ``i`` (the other samples held at ``z0``) on flat vectors."""
    def fi(v: Tensor) -> Tensor:
        z = z0.clone()
        z[i] = v.view(z0.shape[1:])
        return f(z)[i].reshape(-1)
    return fi


def _ref_result(z0: Tensor, outs: list[tuple[Tensor, float, float, int, bool]], nfev: int) -> tuple[Tensor,
                                                                                                     SolverStats]:
    z = torch.stack([o[0] for o in outs]).view(z0.shape)
    t = dict(dtype=z0.dtype, device=z0.device)
    conv = torch.tensor([o[4] for o in outs], dtype=torch.bool, device=z0.device)
    return z, SolverStats(torch.tensor([o[3] for o in outs], dtype=torch.long, device=z0.device),
                          torch.tensor([o[1] for o in outs], **t), torch.tensor([o[2] for o in outs], **t), conv,
                          torch.zeros_like(conv), nfev, 0)


def _ref_loop(f: Fn, z0: Tensor, tol: float, stop: str, max_iter: int, step) -> tuple[Tensor, SolverStats]:
    """Run ``step(fi, x, fx, k, memory) -> x_next`` per sample with the shared stopping rule."""
    outs, nfev = [], 0
    for i in range(z0.shape[0]):
        fi = _per_sample(f, z0, i)
        x = z0[i].reshape(-1).clone()
        best = (x.clone(), float("inf"), float("inf"))
        memory: dict = {}
        its, conv = 0, False
        for k in range(max_iter):
            fx = fi(x)
            its += 1
            ab = float((fx - x).norm())
            rel = ab / max(float(fx.norm()), torch.finfo(fx.dtype).tiny)
            key = rel if stop == "rel" else ab
            if key < (best[1] if stop == "rel" else best[2]):
                best = (x.clone(), rel, ab)
            if key <= tol:
                conv = True
                break
            x = step(fi, x, fx, k, memory)
        nfev = max(nfev, its)
        outs.append((best[0], best[2], best[1], its, conv))
    return _ref_result(z0, outs, nfev)


def fixed_point_iteration_reference(f: Fn, z0: Tensor, *, max_iter: int = 40, tol: float = 1e-3, stop: str = "rel",
                                    tau: float = 1.0) -> tuple[Tensor, SolverStats]:
    """Slow twin of ``fixed_point_iteration``."""
    return _ref_loop(f, z0, tol, stop, max_iter, lambda fi, x, fx, k, mem: tau * fx + (1 - tau) * x)


def anderson_reference(f: Fn, z0: Tensor, *, max_iter: int = 50, tol: float = 1e-3, stop: str = "rel", m: int = 6,
                       lam: float = 1e-4, beta: float = 1.0) -> tuple[Tensor, SolverStats]:
    """Slow twin of ``anderson``: the constrained least squares solved per sample from Python lists."""
    def step(fi, x, fx, k, mem):
        hist = mem.setdefault("hist", [])
        hist.append((x.clone(), fx.clone()))
        del hist[:-m]
        if len(hist) == 1:
            return beta * fx + (1 - beta) * x
        G = torch.stack([fv - xv for xv, fv in hist])
        gram = G @ G.T
        n = len(hist)
        H = torch.zeros(n + 1, n + 1, dtype=x.dtype)
        H[0, 1:] = H[1:, 0] = 1
        H[1:, 1:] = gram + lam * float(gram.diagonal().max()) * torch.eye(n, dtype=x.dtype)
        rhs = torch.zeros(n + 1, dtype=x.dtype)
        rhs[0] = 1
        alpha = torch.linalg.solve(H, rhs)[1:]
        return beta * sum(a * fv for a, (_, fv) in zip(alpha, hist)) + (1 - beta) * sum(
            a * xv for a, (xv, _) in zip(alpha, hist))
    return _ref_loop(f, z0, tol, stop, max_iter, step)


def broyden_reference(f: Fn, z0: Tensor, *, max_iter: int = 30, tol: float = 1e-3, stop: str = "rel"
                      ) -> tuple[Tensor, SolverStats]:
    """Slow twin of ``broyden``: a dense inverse-Jacobian estimate ``B`` updated by Sherman–Morrison."""
    def step(fi, x, fx, k, mem):
        gx = fx - x
        if "B" in mem:
            dx, dg = x - mem["x"], gx - mem["g"]
            B = mem["B"]
            vT = dx @ B
            B = B + torch.outer(dx - B @ dg, vT) / (vT @ dg)
        else:
            B = -torch.eye(x.numel(), dtype=x.dtype)
        mem.update(B=B, x=x.clone(), g=gx.clone())
        return x - B @ gx
    return _ref_loop(f, z0, tol, stop, max_iter, step)

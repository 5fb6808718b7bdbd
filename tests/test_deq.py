"""DEQ layer (spec §4.7 items 1 and 3): implicit gradient vs 200-step unrolled autograd vs central finite
differences (float64), inexact gradients, saved memory independent of the forward iterations, variational dropout,
solver statistics reaching ``module_metrics`` and the Jacobian penalty."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seqzoo.experiments.bench import saved_bytes
from seqzoo.layers.deq import DEQ, VariationalDropout, explicit_unroll


class TanhCell(nn.Module):
    """``f(z; x) = tanh(W z + U x + b)`` with ``W`` rescaled to spectral norm ``rho`` (a contraction)."""

    def __init__(self, d: int = 32, rho: float = 0.9, dropout: float = 0.0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        W = torch.randn(d, d, generator=g, dtype=torch.float64)
        self.W = nn.Parameter(W * rho / torch.linalg.matrix_norm(W, ord=2))
        self.U = nn.Parameter(torch.randn(d, d, generator=g, dtype=torch.float64) / d ** 0.5)
        self.b = nn.Parameter(0.1 * torch.randn(d, generator=g, dtype=torch.float64))
        self.drop = VariationalDropout(dropout)

    def forward(self, z, x):
        return torch.tanh(self.drop(z) @ self.W.T + x @ self.U.T + self.b)


def _x(batch: int = 4, d: int = 32) -> torch.Tensor:
    return torch.randn(batch, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _grads(loss_fn, params) -> torch.Tensor:
    for p in params:
        p.grad = None
    loss_fn().backward()
    return torch.cat([p.grad.reshape(-1) for p in params])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_implicit_gradient_matches_unrolled_autograd_and_finite_differences() -> None:
    cell, x = TanhCell(), _x()
    params = [cell.W, cell.U, cell.b]
    deq = DEQ(cell, solver="anderson", max_iter=200, tol=1e-13, b_max_iter=200, b_tol=1e-13)

    def loss_deq():
        return deq(x).pow(2).sum()

    g_ift = _grads(loss_deq, params)
    g_unroll = _grads(lambda: explicit_unroll(cell, x, 200).pow(2).sum(), params)
    assert _rel(g_ift, g_unroll) < 1e-4
    assert float(torch.nn.functional.cosine_similarity(g_ift, g_unroll, dim=0)) > 0.9999
    assert deq.last_backward_stats is not None and bool(deq.last_backward_stats.converged.all())
    # central finite differences along random directions of all parameters at once
    gen = torch.Generator().manual_seed(2)
    h = 1e-6
    for _ in range(4):
        dirs = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
        with torch.no_grad():
            for p, v in zip(params, dirs):
                p.add_(h * v)
            up = float(loss_deq())
            for p, v in zip(params, dirs):
                p.sub_(2 * h * v)
            down = float(loss_deq())
            for p, v in zip(params, dirs):
                p.add_(h * v)
        fd = (up - down) / (2 * h)
        analytic = float(g_ift @ torch.cat([v.reshape(-1) for v in dirs]))
        assert abs(analytic - fd) / abs(fd) < 1e-4, (analytic, fd)


def test_gradient_with_respect_to_the_input() -> None:
    cell = TanhCell()
    x = _x().requires_grad_(True)
    deq = DEQ(cell, max_iter=200, tol=1e-13, b_max_iter=200, b_tol=1e-13)
    (gx,) = torch.autograd.grad(deq(x).pow(2).sum(), x)
    x2 = x.detach().requires_grad_(True)
    (gu,) = torch.autograd.grad(explicit_unroll(cell, x2, 200).pow(2).sum(), x2)
    assert _rel(gx, gu) < 1e-4


def test_inexact_gradients_jfb_and_phantom() -> None:
    cell, x = TanhCell(rho=0.95), _x()
    params = [cell.W, cell.U, cell.b]
    exact = _grads(lambda: explicit_unroll(cell, x, 300).pow(2).sum(), params)
    cos = {}
    for grad, kw in (("implicit", {}), ("jfb", {}), ("phantom", {"phantom_steps": 8, "tau": 0.8})):
        deq = DEQ(cell, max_iter=200, tol=1e-12, b_max_iter=200, b_tol=1e-12, grad=grad, **kw)
        g = _grads(lambda deq=deq: deq(x).pow(2).sum(), params)
        cos[grad] = float(torch.nn.functional.cosine_similarity(g, exact, dim=0))
    assert cos["implicit"] > 0.9999
    assert cos["jfb"] < cos["phantom"] < cos["implicit"], cos


def test_saved_memory_does_not_grow_with_forward_iterations() -> None:
    cell, x = TanhCell(rho=0.99), _x(batch=16)
    sizes = {}
    for iters in (5, 40):
        deq = DEQ(cell, solver="iteration", max_iter=iters, tol=0.0, b_max_iter=5)
        sizes[("deq", iters)] = saved_bytes(lambda deq=deq: deq(x).sum().backward(), [])
        assert deq.last_stats.nfev == iters  # tol 0: every iteration ran
        sizes[("unroll", iters)] = saved_bytes(lambda n=iters: explicit_unroll(cell, x, n).sum().backward(), [])
    assert sizes[("deq", 5)] == sizes[("deq", 40)], sizes
    assert sizes[("unroll", 40)] > 6 * sizes[("unroll", 5)] / 2, sizes
    assert sizes[("deq", 40)] * 5 < sizes[("unroll", 40)], sizes


def test_variational_dropout_keeps_one_mask_per_solve() -> None:
    torch.manual_seed(0)
    cell, x = TanhCell(dropout=0.3), _x()
    deq = DEQ(cell, max_iter=100, tol=1e-10).train()
    z = deq(x)
    assert bool(deq.last_stats.converged.all())  # a mask redrawn per iteration would never converge
    mask = cell.drop.mask.clone()
    with torch.no_grad():
        torch.testing.assert_close(cell(z, x), z, atol=1e-8, rtol=0)
    deq(x)
    assert not torch.equal(cell.drop.mask, mask)  # a new solve draws a new mask
    deq.eval()
    torch.testing.assert_close(cell.drop(z), z)


def test_module_metrics_report_solver_health_and_reset() -> None:
    cell, x = TanhCell(), _x()
    deq = DEQ(cell, max_iter=50, tol=1e-6).train()
    deq(x).sum().backward()
    deq(x).sum().backward()
    m = deq.module_metrics()
    for key in ("fwd_iterations", "fwd_rel_residual", "fwd_rel_residual_max", "fwd_converged", "fwd_fallbacks",
                "bwd_iterations", "bwd_rel_residual"):
        assert key in m, sorted(m)
    assert m["fwd_converged"] == 1.0 and m["fwd_rel_residual_max"] <= 1e-6 and m["fwd_iterations"] > 1
    assert deq.module_metrics() == {}


def test_jacobian_penalty_is_a_differentiable_hutchinson_estimate() -> None:
    torch.manual_seed(0)
    cell, x = TanhCell(d=8), _x(batch=256, d=8)
    deq = DEQ(cell, max_iter=100, tol=1e-10, jac_reg=1.0).train()
    z = deq(x)
    loss = deq.jacobian_loss()
    assert loss is not None and deq.jacobian_loss() is None
    with torch.no_grad():  # exact mean ||J||_F^2 / d over the batch
        zs = z.detach()
        jac = torch.stack([torch.autograd.functional.jacobian(lambda v, i=i: cell(v[None], x[i:i + 1])[0], zs[i])
                           for i in range(x.shape[0])])
        exact = float(jac.pow(2).sum() / zs.numel())
    assert abs(float(loss.detach()) - exact) / exact < 0.2
    loss.backward()
    assert cell.W.grad is not None and torch.isfinite(cell.W.grad).all()


def test_bad_options_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="grad must be one of"):
        DEQ(TanhCell(), grad="backprop")
    with pytest.raises(ValueError, match="solver must be one of"):
        DEQ(TanhCell(), solver="newton")
    with pytest.raises(ValueError, match="tau"):
        DEQ(TanhCell(), grad="phantom", tau=0.0)

"""Scaled Cayley transform, Neumann inverse update and the CayleyOrthogonal module (NC-GRU spec §2.1, §2.4)."""

from __future__ import annotations

import pytest
import torch

from seqzoo.layers.orthogonal import CayleyOrthogonal, orthogonal_modules, update_orthogonal
from seqzoo.ops.cayley import (
    cayley_from_inverse,
    cayley_inverse,
    cayley_reference,
    neumann_inverse_update,
    orthogonality_error,
    orthogonality_residual,
    scornn_skew_init,
    sign_diagonal,
    skew_from_upper,
)


def random_skew(n: int, scale: float, gen: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    m = torch.randn(n, n, generator=gen, dtype=dtype) * scale
    return m - m.T


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(7)


# ----- ops -------------------------------------------------------------------------------------------
def test_orthogonality_residual_is_float64_and_shared(gen) -> None:
    """One float64 rule for ‖UᵀU − I‖_F and max|UᵀU − I|: the op, the module's method and its train metrics agree."""
    assert orthogonality_residual(2 * torch.eye(3)) == pytest.approx((3 * 3 ** 0.5, 3.0))
    q = torch.linalg.qr(torch.randn(64, 64, generator=gen, dtype=torch.float64))[0].float()
    q64 = q.double()
    err = q64.T @ q64 - torch.eye(64, dtype=torch.float64)
    fro, maxabs = orthogonality_residual(q)
    assert fro == float(torch.linalg.matrix_norm(err)) and maxabs == float(err.abs().max())
    assert orthogonality_error(q) == fro
    # the float32 product's own rounding is of the size of the error it measures: a float32 rule would differ
    err32 = q.T @ q - torch.eye(64)
    assert abs(float(torch.linalg.matrix_norm(err32)) - fro) > 1e-3 * fro
    mod = CayleyOrthogonal(16, rho=4, generator=torch.Generator().manual_seed(3))
    out = mod.module_metrics()
    assert (out["orth_error"], out["orth_error_maxabs"]) == orthogonality_residual(mod.weight.detach())
    assert mod.orthogonality_error() == out["orth_error"]


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_orthogonal_after_exact_recompute(dtype, tol, gen) -> None:
    n = 24
    a = random_skew(n, 0.3, gen).to(dtype)
    d = sign_diagonal(n, 9, dtype=dtype)
    u = cayley_from_inverse(a, cayley_inverse(a), d)
    assert orthogonality_error(u) < tol
    torch.testing.assert_close(u, cayley_reference(a, d), rtol=0, atol=50 * tol)
    # D really has rho entries -1, and D changes U (columns flip sign)
    assert int((d < 0).sum()) == 9
    torch.testing.assert_close(u[:, -1], -cayley_reference(a, torch.ones(n, dtype=dtype))[:, -1])


def test_scornn_init_is_skew_with_rotation_blocks(gen) -> None:
    a = scornn_skew_init(7, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(a, -a.T, rtol=0, atol=0)
    assert torch.count_nonzero(a[6]) == 0 and torch.count_nonzero(a[:, 6]) == 0  # odd n: last row/col zero
    u = cayley_reference(a, torch.ones(7, dtype=torch.float64))
    for j in range(3):  # each 2x2 block maps to a rotation by theta in (0, pi/2): cos theta in (0, 1)
        c = u[2 * j, 2 * j]
        assert 0.0 < float(c) < 1.0
        torch.testing.assert_close(u[2 * j + 1, 2 * j + 1], c)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_neumann_update_matches_exact_inverse(order, gen) -> None:
    n = 16
    a = random_skew(n, 0.3, gen)
    m = cayley_inverse(a)
    for eps in (1e-2, 1e-3):
        delta = random_skew(n, eps, gen)
        exact = torch.linalg.inv(torch.eye(n, dtype=torch.float64) + a + delta)
        approx = neumann_inverse_update(m, delta, order)
        rel = float(torch.linalg.matrix_norm(approx - exact) / torch.linalg.matrix_norm(exact))
        x = float(torch.linalg.matrix_norm(m @ delta))
        # truncation error of a geometric series: about ||X||^(order+1)
        assert rel < 3 * x ** (order + 1) + 1e-13, (order, eps, rel, x)
        assert rel < (1e-4 if eps == 1e-3 else 1e-2)
    with pytest.raises(ValueError, match="order"):
        neumann_inverse_update(m, delta, 0)
    with pytest.raises(ValueError, match="shape"):
        neumann_inverse_update(m, delta[:3], 1)


def test_gradient_is_the_skew_cayley_gradient(gen) -> None:
    """raw.grad mirrored to a skew matrix equals the scoRNN/NC-GRU formula Vᵀ - V and the true derivative."""
    n = 9
    raw = torch.triu(torch.randn(n, n, generator=gen, dtype=torch.float64) * 0.3, 1).requires_grad_()
    d = sign_diagonal(n, 4, dtype=torch.float64)
    target = torch.randn(n, n, generator=gen, dtype=torch.float64)

    def loss_of(u):
        return (u * target).sum() + (u[:3] ** 2).sum()

    a = skew_from_upper(raw)
    u = cayley_from_inverse(a, cayley_inverse(a), d)
    u.retain_grad()
    loss_of(u).backward()
    g_upper = torch.triu(raw.grad, 1)
    assert torch.count_nonzero(raw.grad - g_upper) == 0  # entries on/below the diagonal are not parameters
    grad_a = g_upper - g_upper.T
    torch.testing.assert_close(grad_a, -grad_a.T, rtol=0, atol=0)  # skew-symmetric
    # the spec's closed form: V = (I + A)^{-T} G (D + Uᵀ), dL/dA = Vᵀ - V
    with torch.no_grad():
        inv = torch.linalg.inv(torch.eye(n, dtype=torch.float64) + a)
        v = inv.T @ u.grad @ (torch.diag(d) + u.T)
        torch.testing.assert_close(grad_a, v.T - v, rtol=1e-10, atol=1e-12)
    # autograd through the reference twin (linear solve) gives the same parameter gradient
    raw2 = raw.detach().clone().requires_grad_()
    loss_of(cayley_reference(skew_from_upper(raw2), d)).backward()
    torch.testing.assert_close(raw.grad, raw2.grad, rtol=1e-10, atol=1e-12)
    # and finite differences along a random skew direction E: dL = <grad_a, E>_F / 2
    e = random_skew(n, 1.0, gen)
    h = 1e-6
    with torch.no_grad():
        a0 = skew_from_upper(raw)
        lp = loss_of(cayley_reference(a0 + h * e, d))
        lm = loss_of(cayley_reference(a0 - h * e, d))
    fd = float((lp - lm) / (2 * h))
    assert abs(fd - 0.5 * float((grad_a * e).sum())) < 1e-6 * max(1.0, abs(fd))


def test_input_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="square"):
        skew_from_upper(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="rho"):
        sign_diagonal(4, 5)
    with pytest.raises(ValueError, match="diagonal of D"):
        cayley_reference(torch.zeros(3, 3), torch.ones(4))
    with pytest.raises(ValueError, match="neumann_order"):
        CayleyOrthogonal(4, neumann_order=0)
    with pytest.raises(ValueError, match="recompute_every"):
        CayleyOrthogonal(4, recompute_every=0)
    with pytest.raises(ValueError, match="max_step_norm"):
        CayleyOrthogonal(4, max_step_norm=2.0)
    with pytest.raises(ValueError, match="init"):
        CayleyOrthogonal(4, init="eye")


# ----- module --------------------------------------------------------------------------------------
def _fit_problem(n: int, dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, n, generator=g, dtype=dtype)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return x, x @ q.to(dtype).T  # targets of an orthogonal map


@pytest.mark.parametrize(("dtype", "tol_recompute", "tol_between"), [(torch.float32, 1e-5, 1e-3),
                                                                      (torch.float64, 1e-10, 1e-3)])
def test_stays_orthogonal_over_1000_adam_steps(dtype, tol_recompute, tol_between) -> None:
    n = 8
    torch.manual_seed(0)
    mod = CayleyOrthogonal(n, rho=3, recompute_every=50).to(dtype)
    opt = torch.optim.Adam(mod.parameters(), lr=1e-3)
    x, y = _fit_problem(n, dtype)
    first = None
    worst_between = 0.0
    for step in range(1000):
        loss = ((x @ mod.weight.T - y) ** 2).mean()
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
        update_orthogonal(mod)
        err = mod.orthogonality_error()
        if int(mod.updates_since_recompute) == 0:
            assert err < tol_recompute, (step, err)
        worst_between = max(worst_between, err)
        # the cache follows the actual Adam step, so it stays close to the exact inverse
        exact = cayley_inverse(mod.A.detach())
        assert float(torch.linalg.matrix_norm(mod.inverse - exact)) < 1e-4
    assert worst_between < tol_between
    assert float(loss.detach()) < 0.5 * first  # it also learns


def test_actual_step_not_lr_times_gradient() -> None:
    """With Adam the Neumann update from lr·grad would be wrong; the module uses A - A_prev instead."""
    n = 10
    torch.manual_seed(1)
    mod = CayleyOrthogonal(n, recompute_every=1000).double()
    opt = torch.optim.Adam(mod.parameters(), lr=1e-3)
    x, y = _fit_problem(n, torch.float64)
    for _ in range(3):
        loss = ((x @ mod.weight.T - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        a_before = mod.A.detach().clone()
        grad_a = torch.triu(mod.raw.grad, 1) - torch.triu(mod.raw.grad, 1).T
        opt.step()
        assert update_orthogonal(mod) == 1
        exact = cayley_inverse(mod.A.detach())
        err_actual = float(torch.linalg.matrix_norm(mod.inverse - exact))
        naive = neumann_inverse_update(cayley_inverse(a_before), -1e-3 * grad_a, 2)
        err_naive = float(torch.linalg.matrix_norm(naive - exact))
        # Adam moves every entry by about lr, so ||M dA|| ~ 1e-2 and the order-2 series is off by ~1e-7;
        # the series of lr * grad misses the actual step itself (~1e-2).
        assert err_actual < 1e-6 and err_actual < 1e-3 * err_naive, (err_actual, err_naive)


def test_lazy_update_equals_eager_update_and_state_round_trips() -> None:
    torch.manual_seed(2)
    a = CayleyOrthogonal(6).double()
    b = CayleyOrthogonal(6, auto_update=False).double()
    b.load_state_dict(a.state_dict())
    opt_a = torch.optim.SGD(a.parameters(), lr=1e-2)
    opt_b = torch.optim.SGD(b.parameters(), lr=1e-2)
    for _ in range(5):
        for mod, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            (mod.weight[0] ** 3).sum().backward()
            opt.step()
        update_orthogonal(b)  # eager; a updates itself on the next weight access
        torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=0)
    # a module built fresh and loaded from the state dict gives the identical weight
    c = CayleyOrthogonal(6).double()
    c.load_state_dict(a.state_dict())
    torch.testing.assert_close(c.weight, a.weight, rtol=0, atol=0)
    assert orthogonal_modules(torch.nn.Sequential(a, torch.nn.Linear(2, 2), b)) == [a, b]


def test_large_jump_and_dtype_change_recompute_exactly() -> None:
    torch.manual_seed(3)
    mod = CayleyOrthogonal(12, recompute_every=1000)
    with torch.no_grad():
        mod.raw.add_(torch.randn(12, 12))  # far too large for the series: must recompute, not expand
    assert mod.orthogonality_error() > 1e-2  # stale cache before the update
    mod.after_optimizer_step()
    assert int(mod.updates_since_recompute) == 0 and mod.orthogonality_error() < 1e-5
    mod = mod.double()  # the cast rebuilds the inverse in float64
    assert mod.inverse.dtype == torch.float64 and mod.orthogonality_error() < 1e-10

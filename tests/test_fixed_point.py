"""Fixed-point solvers (spec §4.7 item 2): batched solvers vs their slow twins, speed-up over plain iteration,
per-sample stop, and the failure paths (singular Gram, divergence) that must not raise."""

from __future__ import annotations

import pytest
import torch

from seqzoo.ops import fixed_point as fp


def _contraction(d: int = 32, rho: float = 0.99, batch: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    # symmetric, so the spectral radius equals the spectral norm rho and plain iteration really is slow
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    W = A + A.T
    W = W * rho / torch.linalg.matrix_norm(W, ord=2)
    U = torch.randn(d, d, generator=g, dtype=torch.float64) / d ** 0.5
    x = 0.05 * torch.randn(batch, d, generator=g, dtype=torch.float64)
    b = 0.01 * torch.randn(d, generator=g, dtype=torch.float64)
    return (lambda z: torch.tanh(z @ W.T + x @ U.T + b)), torch.zeros(batch, d, dtype=torch.float64)


@pytest.mark.parametrize("method", fp.METHODS)
def test_batched_solvers_match_their_reference_twins(method: str) -> None:
    f, z0 = _contraction(d=8, rho=0.9, batch=3)
    fast = {"iteration": fp.fixed_point_iteration, "anderson": fp.anderson, "broyden": fp.broyden}[method]
    slow = {"iteration": fp.fixed_point_iteration_reference, "anderson": fp.anderson_reference,
            "broyden": fp.broyden_reference}[method]
    z, st = fast(f, z0, max_iter=400, tol=1e-9)
    zr, sr = slow(f, z0, max_iter=400, tol=1e-9)
    torch.testing.assert_close(z, zr, rtol=1e-8, atol=1e-10)
    assert torch.equal(st.iterations, sr.iterations), (st.iterations, sr.iterations)
    assert bool(st.converged.all()) and bool(sr.converged.all())
    torch.testing.assert_close(st.rel_residual, sr.rel_residual, rtol=1e-6, atol=1e-14)


def test_anderson_and_broyden_need_far_fewer_evaluations_than_plain_iteration() -> None:
    f, z0 = _contraction(d=32, rho=0.99, batch=4)
    counts = {}
    for method in fp.METHODS:
        z, st = fp.solve(f, z0, method, max_iter=3000, tol=1e-6)
        assert bool(st.converged.all()), (method, st.rel_residual)
        assert float(st.rel_residual.max()) <= 1e-6
        counts[method] = int(st.iterations.max())
        fz = f(z)
        assert float(((fz - z).norm(dim=1) / fz.norm(dim=1)).max()) <= 1e-6
    assert counts["iteration"] > 200, counts
    assert counts["anderson"] * 4 < counts["iteration"] and counts["broyden"] * 4 < counts["iteration"], counts


def test_per_sample_stop_freezes_converged_samples() -> None:
    d = 6
    scales = torch.tensor([0.1, 0.95], dtype=torch.float64)[:, None]  # sample 0 converges much sooner
    x = torch.ones(2, d, dtype=torch.float64)

    def f(z):
        return scales * z + x

    z, st = fp.fixed_point_iteration(f, torch.zeros(2, d, dtype=torch.float64), max_iter=500, tol=1e-8, stop="abs")
    assert int(st.iterations[0]) < int(st.iterations[1])
    alone, st0 = fp.fixed_point_iteration(lambda v: scales[:1] * v + x[:1], torch.zeros(1, d, dtype=torch.float64),
                                          max_iter=500, tol=1e-8, stop="abs")
    assert torch.equal(z[:1], alone) and int(st0.iterations[0]) == int(st.iterations[0])


def test_singular_gram_falls_back_without_raising() -> None:
    # f(z) = z + c has no fixed point and every residual equals c, so G G^T has rank one (singular without lam)
    c = torch.randn(2, 5, dtype=torch.float64)
    z, st = fp.anderson(lambda z: z + c, torch.zeros(2, 5, dtype=torch.float64), max_iter=10, tol=1e-6, lam=0.0)
    assert st.fallbacks > 0 and bool(torch.isfinite(z).all())
    assert not bool(st.converged.any()) and int(st.iterations.max()) == 10


@pytest.mark.parametrize("method", fp.METHODS)
def test_divergence_keeps_the_best_finite_iterate(method: str) -> None:
    def f(z):  # sample 1 blows up to inf/nan after a few steps; sample 0 is a contraction
        out = torch.stack([0.5 * z[0] + 1.0, torch.exp(torch.exp(z[1] + 3.0))])
        return out

    z, st = fp.solve(f, torch.zeros(2, 4, dtype=torch.float64), method, max_iter=40, tol=1e-8)
    assert bool(torch.isfinite(z).all())
    assert bool(st.converged[0]) and not bool(st.converged[1])
    torch.testing.assert_close(z[0], torch.full((4,), 2.0, dtype=torch.float64), rtol=0, atol=1e-7)


def test_bad_options_are_clear_errors() -> None:
    f, z0 = _contraction(d=4, batch=1)
    with pytest.raises(ValueError, match="solver must be one of"):
        fp.solve(f, z0, "newton")
    with pytest.raises(ValueError, match="stop mode"):
        fp.solve(f, z0, "anderson", stop="max")
    with pytest.raises(ValueError, match="max_iter"):
        fp.solve(f, z0, "broyden", max_iter=0)

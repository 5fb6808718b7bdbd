"""The nondeterministic stack DP: brute-force equality, gradients, windowing, chunking, padding and errors."""

from __future__ import annotations

import pytest
import torch

from seqzoo.ops.stack_dp import (
    LOG_ZERO,
    StackDP,
    full_stack_dp,
    initial_state,
    limited_stack_dp,
    limited_stack_dp_step,
    stack_dp_brute_force,
    stack_dp_reference,
)

D64 = torch.float64


def weights(b: int, n: int, q: int, g: int, *, seed: int, scale: float = 1.0, normalized: bool = False,
            requires_grad: bool = False, dtype: torch.dtype = D64) -> tuple[torch.Tensor, ...]:
    """Random log weights; ``normalized`` makes each (state, top) row a distribution over all actions (NS-RNN)."""
    gen = torch.Generator().manual_seed(seed)
    s = q * g
    logits = scale * torch.randn(b, n, s, 2 * s + q, generator=gen, dtype=D64)
    if normalized:
        logits = torch.log_softmax(logits, -1)
    push = logits[..., :s].reshape(b, n, q, g, q, g)
    repl = logits[..., s:2 * s].reshape(b, n, q, g, q, g)
    pop = logits[..., 2 * s:].reshape(b, n, q, g, q)
    out = tuple(x.clone().to(dtype).requires_grad_(requires_grad) for x in (push, repl, pop))
    return out


def unnormalized(log_alpha: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return log_alpha + z.cumsum(1).unsqueeze(-1)


def live(x: torch.Tensor) -> torch.Tensor:
    """State entries with zero weight (``LOG_ZERO`` plus something float absorbs) clamped to a constant: their
    finite-difference derivative is 0 by absorption while the local analytical one is not (no loss gradient ever
    reaches them, since they only enter through exp(LOG_ZERO) = 0)."""
    return x.clamp(min=-1e3)


def gradcheck(f, inputs) -> bool:
    return torch.autograd.gradcheck(f, inputs, fast_mode=True)


def assert_log_close(got: torch.Tensor, want: torch.Tensor, rel: float = 1e-6) -> None:
    """Relative error of the weights exp(.) below ``rel`` where the weight is nonzero; zero stays (numerically) zero."""
    live = want > LOG_ZERO / 2
    assert torch.all(got[~live] < -1e3), "zero weights must stay zero"
    err = (got[live] - want[live]).abs().max()  # |log a - log b| ~ relative error of a vs b
    assert err < rel, f"max relative error {float(err):.3g}"


# ----- equality with brute-force enumeration --------------------------------------------------------------

@pytest.mark.parametrize(("q", "g"), [(2, 2), (2, 3), (1, 3), (3, 2)])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_fast_dp_equals_enumeration_of_all_runs(q: int, g: int, n: int) -> None:
    for seed, scale, normalized in ((0, 1.0, False), (1, 3.0, False), (2, 1.0, True)):
        push, repl, pop = weights(2, n, q, g, seed=seed + 10 * n, scale=scale, normalized=normalized)
        brute = stack_dp_brute_force(push, repl, pop)
        log_alpha, z, _ = full_stack_dp(push, repl, pop)
        assert_log_close(unnormalized(log_alpha, z), brute)
        assert_log_close(stack_dp_reference(push, repl, pop), brute)
        # the normalized output is log softmax of alpha: log alpha - logsumexp(log alpha)
        torch.testing.assert_close(log_alpha.logsumexp(-1), torch.zeros(2, n, dtype=D64), atol=1e-12, rtol=0)


def test_brute_force_counts_the_runs_of_a_known_case() -> None:
    """All weights 1 (log 0), |Q| = |Gamma| = 1: alpha[t] counts the runs of length t."""
    push, repl, pop = (torch.zeros(1, 3, 1, 1, 1, 1, dtype=D64), torch.zeros(1, 3, 1, 1, 1, 1, dtype=D64),
                       torch.zeros(1, 3, 1, 1, 1, dtype=D64))
    brute = stack_dp_brute_force(push, repl, pop)
    # t=1: push (1); t=2: push or repl (2); t=3: from height 3 push/repl/pop (3), from height 2 push/repl (2) -> 5
    torch.testing.assert_close(brute.exp().squeeze(), torch.tensor([1.0, 2.0, 5.0], dtype=D64))
    log_alpha, z, _ = full_stack_dp(push, repl, pop)
    torch.testing.assert_close(unnormalized(log_alpha, z).exp().squeeze(), torch.tensor([1.0, 2.0, 5.0], dtype=D64))


def test_first_three_steps_by_hand_in_the_official_layout() -> None:
    """alpha[1..3] written out by hand, in the index layout the official iclr2022 code uses (row (q, x), reading
    index q * |Gamma| + x): the layer's readings and gradients agreed with that code to 1e-14 in float64 (see
    docs/results/rns-rnn-small.md), and this pins the conventions that comparison relied on."""
    q, g = 2, 2
    push, repl, pop = (w[0] for w in weights(1, 3, q, g, seed=7, scale=2.0))  # (3, Q, G, Q, G), (3, Q, G, Q)
    la, z, _ = full_stack_dp(push[None], repl[None], pop[None])
    got = unnormalized(la, z)[0].view(3, q, g)
    lse = torch.logsumexp
    a1 = push[0, 0, 0]  # the first action is a push onto the bottom symbol (state 0, symbol 0)
    a2 = torch.logaddexp(lse(a1[:, :, None, None] + push[1], (0, 1)),  # push, push
                         lse(a1[:, :, None, None] + repl[1], (0, 1)))  # push, replace (no pop: height 2)
    # t = 3, by start time i of the last push still on the stack: i = 2 (any two steps, then push), i = 1 (push,
    # push, replace), i = 0 (push, replace, replace; or push, push, pop, which exposes the first pushed (u, y))
    from_2 = lse(a2[:, :, None, None] + push[2], (0, 1))
    after_push = lse(a1[:, :, None, None] + push[1], (0, 1))
    from_1 = lse(after_push[:, :, None, None] + repl[2], (0, 1))
    after_repl = lse(a1[:, :, None, None] + repl[1], (0, 1))
    from_0_repl = lse(after_repl[:, :, None, None] + repl[2], (0, 1))
    e = a1[:, :, None, None, None] + push[1][..., None] + pop[2][None, None]  # [u, y, s, z, r]
    from_0_pop = lse(e, (0, 2, 3)).T  # [r, y]
    a3 = lse(torch.stack([from_2, from_1, from_0_repl, from_0_pop]), 0)
    torch.testing.assert_close(got[0], a1, rtol=0, atol=1e-12)
    torch.testing.assert_close(got[1], a2, rtol=0, atol=1e-12)
    torch.testing.assert_close(got[2], a3, rtol=0, atol=1e-12)


def test_fast_dp_equals_reference_on_longer_sequences_with_large_weights() -> None:
    """Unnormalized RNS weights of size ~30 per step: the stored values stay O(1) and agree with the reference."""
    push, repl, pop = weights(3, 9, 2, 2, seed=5, scale=30.0)
    ref = stack_dp_reference(push, repl, pop)
    log_alpha, z, (gamma, alpha) = full_stack_dp(push, repl, pop)
    assert_log_close(unnormalized(log_alpha, z), ref, rel=1e-9)
    live = gamma > LOG_ZERO / 2
    assert gamma[live].abs().max() < 1e3 and alpha[alpha > LOG_ZERO / 2].abs().max() < 1e3
    # float32 gives the same stack readings
    p32 = [x.float() for x in (push, repl, pop)]
    la32, _, _ = full_stack_dp(*p32)
    torch.testing.assert_close(la32.double().softmax(-1), log_alpha.softmax(-1), atol=1e-4, rtol=0)


# ----- gradients -------------------------------------------------------------------------------------------

def test_gradcheck_full_dp() -> None:
    inputs = weights(2, 5, 2, 2, seed=3, requires_grad=True)

    def f(push, repl, pop):
        log_alpha, z, (gamma, alpha) = full_stack_dp(push, repl, pop)
        return log_alpha, z, live(gamma), live(alpha)

    assert gradcheck(f, inputs)


def test_full_gradcheck_on_a_tiny_case() -> None:
    """Every Jacobian entry (not a random projection) for one sequence of 5 steps with |Q| = 1, |Gamma| = 2."""
    inputs = weights(1, 5, 1, 2, seed=2, requires_grad=True)

    def f(push, repl, pop):
        log_alpha, z, (gamma, alpha) = full_stack_dp(push, repl, pop, mask=torch.tensor([[1, 1, 0, 1, 1]]).bool())
        return log_alpha, z, live(gamma)

    assert torch.autograd.gradcheck(f, inputs)


def test_gradcheck_full_dp_with_padding_chunks_and_small_blocks() -> None:
    inputs = weights(2, 6, 2, 2, seed=4, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)

    def f(push, repl, pop):
        a1, z1, state = full_stack_dp(push[:, :3], repl[:, :3], pop[:, :3], mask=mask[:, :3], block_elements=1)
        a2, z2, state = full_stack_dp(push[:, 3:], repl[:, 3:], pop[:, 3:], mask=mask[:, 3:], state=state)
        return torch.cat([a1, a2], 1), torch.cat([z1, z2], 1), live(state[0]), live(state[1])

    assert gradcheck(f, inputs)


def test_gradcheck_limited_dp() -> None:
    inputs = weights(2, 6, 2, 2, seed=6, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)

    def f(push, repl, pop):
        log_alpha, z, state = limited_stack_dp(push, repl, pop, window=3, mask=mask)
        return log_alpha, z, live(state[0]), live(state[1])

    assert gradcheck(f, inputs)


def test_fast_gradients_equal_reference_gradients() -> None:
    push, repl, pop = weights(2, 7, 2, 3, seed=7, scale=2.0, requires_grad=True)
    ref = stack_dp_reference(push, repl, pop)
    log_alpha, z, _ = full_stack_dp(push, repl, pop)
    w = torch.randn(ref.shape, generator=torch.Generator().manual_seed(0), dtype=D64)
    g_ref = torch.autograd.grad((ref * w).sum(), (push, repl, pop))
    g_fast = torch.autograd.grad((unnormalized(log_alpha, z) * w).sum(), (push, repl, pop))
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_backward_twice_with_retained_graph() -> None:
    push, repl, pop = weights(1, 5, 2, 2, seed=8, requires_grad=True)
    log_alpha, z, _ = full_stack_dp(push, repl, pop)
    loss = (log_alpha * torch.arange(log_alpha.numel(), dtype=D64).view_as(log_alpha)).sum() + z.sum()
    g1 = torch.autograd.grad(loss, push, retain_graph=True)[0]
    g2 = torch.autograd.grad(loss, push)[0]
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)


def test_gradient_reaches_a_carried_state() -> None:
    push, repl, pop = weights(1, 4, 2, 2, seed=9)
    _, _, state = full_stack_dp(push[:, :2], repl[:, :2], pop[:, :2])
    gamma0, alpha0 = (s.detach().requires_grad_(True) for s in state)

    def f(gamma0, alpha0):
        log_alpha, _, _ = full_stack_dp(push[:, 2:], repl[:, 2:], pop[:, 2:], state=(gamma0, alpha0))
        return log_alpha

    assert gradcheck(f, (gamma0, alpha0))


# ----- windowed (memory-limited) DP, chunking, padding ----------------------------------------------------

def windowed_reference(push, repl, pop, window: int) -> torch.Tensor:
    """``stack_dp_reference`` restricted to gamma[i->t] with i >= t - window (a loop twin of the limited DP)."""
    b, n, q, g = push.shape[:4]
    s = q * g
    pu, re, po = push.reshape(b, n, s, s), repl.reshape(b, n, s, s), pop.reshape(b, n, s, q)
    alpha = {0: torch.full((b, s), LOG_ZERO, dtype=D64).index_fill(1, torch.tensor([0]), 0.0)}
    gamma: dict[tuple[int, int], torch.Tensor] = {}
    out = []
    for t in range(1, n + 1):
        gamma[(t - 1, t)] = pu[:, t - 1]
        for i in range(max(0, t - window), t - 1):
            terms = [torch.logsumexp(gamma[(i, t - 1)][:, :, :, None] + re[:, t - 1][:, None], dim=2)]
            for k in range(i + 1, t - 1):
                left, right = gamma[(i, k)].view(b, s, q, g), gamma[(k, t - 1)].view(b, q, g, s)
                e = left[..., None, None] + right[:, None, :, :, :, None] + po[:, t - 1][:, None, None, None]
                terms.append(torch.logsumexp(e, dim=(2, 4)).transpose(2, 3).reshape(b, s, s))
            gamma[(i, t)] = torch.logsumexp(torch.stack(terms), 0)
        starts = range(max(0, t - window), t)
        alpha[t] = torch.logsumexp(torch.stack([alpha[i][:, :, None] + gamma[(i, t)] for i in starts]), dim=(0, 2))
        out.append(alpha[t])
    return torch.stack(out, 1)


@pytest.mark.parametrize("window", [1, 2, 3, 5])
def test_limited_dp_equals_its_loop_twin(window: int) -> None:
    push, repl, pop = weights(2, 8, 2, 2, seed=11, scale=2.0)
    log_alpha, z, _ = limited_stack_dp(push, repl, pop, window=window)
    assert_log_close(unnormalized(log_alpha, z), windowed_reference(push, repl, pop, window), rel=1e-9)


def test_limited_dp_with_a_large_window_equals_the_full_dp() -> None:
    push, repl, pop = weights(2, 7, 2, 3, seed=12)
    full, z_full, _ = full_stack_dp(push, repl, pop)
    for window in (7, 8, 12):
        lim, z_lim, _ = limited_stack_dp(push, repl, pop, window=window)
        torch.testing.assert_close(lim, full, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(z_lim, z_full, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("limited", [False, True])
def test_chunks_equal_one_pass(limited: bool) -> None:
    push, repl, pop = weights(3, 9, 2, 2, seed=13)

    def run(sl, state=None):
        if limited:
            return limited_stack_dp(push[:, sl], repl[:, sl], pop[:, sl], window=4, state=state)
        return full_stack_dp(push[:, sl], repl[:, sl], pop[:, sl], state=state)

    whole, z_whole, state_whole = run(slice(0, 9))
    parts, zs, state = [], [], None
    for sl in (slice(0, 2), slice(2, 3), slice(3, 9)):
        a, z, state = run(sl, state)
        parts.append(a)
        zs.append(z)
    torch.testing.assert_close(torch.cat(parts, 1), whole, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.cat(zs, 1), z_whole, rtol=0, atol=1e-12)
    for a, b in zip(state, state_whole):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    if limited:
        assert state[0].shape == (3, 3, 3, 4, 4) and state[1].shape == (3, 4, 4)
    else:
        assert state[0].shape == (3, 9, 9, 4, 4) and state[1].shape == (3, 10, 4)


@pytest.mark.parametrize("limited", [False, True])
def test_padded_steps_are_skipped(limited: bool) -> None:
    push, repl, pop = weights(1, 8, 2, 3, seed=14)
    mask = torch.tensor([[1, 1, 0, 0, 1, 1, 0, 1]], dtype=torch.bool)
    real = mask[0].nonzero().squeeze(1)
    garbage = [x.clone() for x in (push, repl, pop)]
    for x in garbage:
        x[:, ~mask[0]] = 1e4  # whatever a padded step computes must not matter

    def run(p, r, o, m=None):
        if limited:
            return limited_stack_dp(p, r, o, window=3, mask=m)
        return full_stack_dp(p, r, o, mask=m)

    padded, z, _ = run(*garbage, m=mask)
    skipped, z_skip, _ = run(push[:, real], repl[:, real], pop[:, real])
    torch.testing.assert_close(padded[:, real], skipped, rtol=0, atol=1e-12)
    torch.testing.assert_close(z[:, real], z_skip, rtol=0, atol=1e-12)
    assert torch.all(z[:, ~mask[0]] == 0)
    torch.testing.assert_close(padded[:, 2], padded[:, 1])  # a padded step repeats the reading


# ----- API and errors ----------------------------------------------------------------------------------------

def test_incremental_api_matches_the_sequence_function() -> None:
    push, repl, pop = weights(2, 5, 2, 2, seed=15)
    dp = StackDP(initial_state(2, 2, 2, dtype=D64), 5, 2)
    steps = [dp.step(push[:, t], repl[:, t], pop[:, t])[0] for t in range(5)]
    log_alpha, _, state = full_stack_dp(push, repl, pop)
    torch.testing.assert_close(torch.stack(steps, 1), log_alpha, rtol=0, atol=0)
    for a, b in zip(dp.state(), state):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="more steps"):
        dp.step(push[:, 0], repl[:, 0], pop[:, 0])


def test_bad_inputs_raise_clear_errors() -> None:
    push, repl, pop = weights(1, 3, 2, 2, seed=16)
    with pytest.raises(ValueError, match="pop"):
        full_stack_dp(push, repl, pop[..., :1])
    with pytest.raises(ValueError, match="leading dims"):
        full_stack_dp(push[:, 0], repl[:, 0], pop[:, 0])
    with pytest.raises(ValueError, match="state must be"):
        StackDP((torch.zeros(1, 2, 2, 4, 4), torch.zeros(1, 2, 4)), 3, 2)
    with pytest.raises(ValueError, match="window"):
        initial_state(1, 2, 2, window=0)
    with pytest.raises(ValueError, match="active"):
        StackDP(initial_state(1, 2, 2, dtype=D64), 3, 2).step(push[:, 0], repl[:, 0], pop[:, 0],
                                                             torch.ones(1, dtype=torch.long))
    with pytest.raises(ValueError, match="state must be"):
        limited_stack_dp_step(initial_state(2, 2, 2, window=3, dtype=D64), push[:, 0], repl[:, 0], pop[:, 0])
    with pytest.raises(TypeError, match="dtype"):
        full_stack_dp(push, repl.float(), pop)


# ----- the pop contraction: shifted exp-matmul (with exact fallback) vs the broadcast twin ------------------

@pytest.mark.parametrize(("dtype", "scale", "expect_fallback"), [
    (torch.float64, 1.0, False), (torch.float32, 1.0, False), (torch.float64, 400.0, True), (torch.float32, 60.0, True),
])
def test_pop_contraction_matches_the_exact_twin(dtype: torch.dtype, scale: float, expect_fallback: bool) -> None:
    from seqzoo.ops import stack_pop as sd

    g = torch.Generator().manual_seed(0)
    b, rows, q, s = 2, 7, 2, 6
    tri = scale * torch.randn(b, rows, rows, s, s, generator=g, dtype=D64)
    lower = (torch.arange(rows)[:, None] > torch.arange(rows)[None, :]).view(1, rows, rows, 1, 1)
    tri = torch.where(lower, torch.full_like(tri, LOG_ZERO), tri).to(dtype)  # l < j: no such split
    p = (scale * torch.randn(b, rows, s, q, generator=g, dtype=D64)).to(dtype)
    x, y = sd._pop_matrices(tri, p, 0, rows, q)
    ex, ey, _, _ = sd._shifted_exps(x, y)
    assert bool((torch.bmm(ex, ey) < sd._underflow_floor(dtype)).any()) == expect_fallback
    fast = sd.pop_forward(tri, p, q, 1 << 22)
    exact = sd.pop_forward_exact(tri.double(), p.double(), q, 1 << 22)
    tol = 1e-12 if dtype == D64 else 1e-6
    torch.testing.assert_close(fast.double(), exact, rtol=tol, atol=tol * scale)
    dpp = torch.randn(b, rows, s, s, generator=g, dtype=D64).to(dtype)
    dtri_fast, dtri_exact = torch.zeros_like(tri), torch.zeros_like(tri, dtype=D64)
    dp_fast = sd.pop_backward(tri, p, fast, dpp, dtri_fast, q, 1 << 22)
    dp_exact = sd.pop_backward_exact(tri.double(), p.double(), exact, dpp.double(), dtri_exact, q, 1 << 22)
    grad_tol = 1e-10 if dtype == D64 else 1e-4  # float32 exponents of size ~200 carry ~1e-5 absolute rounding
    for got, want in ((dtri_fast, dtri_exact), (dp_fast, dp_exact)):
        torch.testing.assert_close(got.double(), want, rtol=grad_tol, atol=grad_tol * float(want.abs().max()))

"""The nondeterministic stack dynamic program of the NS-RNN and RNS-RNN (DuSell & Chiang 2020, 2022; spec §1.2-1.3).

A weighted pushdown automaton with states ``Q`` and stack symbols ``Gamma`` (``S = |Q| |Gamma|`` state/top pairs)
starts in state 0 with the bottom symbol 0 on its stack. At each step ``t`` it takes exactly one transition, which
reads the current state ``q`` and top ``x``: push ``push[q,x,r,y]`` (go to r, put y on x), replace
``repl[q,x,r,y]`` (go to r, replace x by y) or pop ``pop[q,x,r]`` (go to r, remove x). The bottom symbol is never
replaced or popped, so the first transition is a push. The DP sums the weights of all runs:

* ``gamma[i->t][q,x -> r,y]``: runs from time i (state q, top x) to t (state r, top y directly on that x) that
  never expose x in between;
* ``alpha[t][r,y] = sum_i sum_{q,x} alpha[i][q,x] gamma[i->t][q,x -> r,y]``: all runs ending in (r, y) at t.

Recurrence: ``gamma[t-1->t] = push_t``; for ``i <= t-2`` a replace extends ``gamma[i->t-1]`` and, for
``i <= t-3``, a pop closes a split ``gamma[i->k] gamma[k->t-1] pop_t`` for ``i < k <= t-2``. Time O(n^3), space
O(n^2) per sequence.

Numerics. Everything is in log space. The small contractions (replace, the pop factor, alpha) are exact
broadcast log-sum-exps. The O(t^2) pop contraction is a log-matmul done as ``log(exp(X - mx) @ exp(Y - my))``
after balancing every split point by its column maximum; wherever that shifted sum is small enough that terms may
have underflowed (below 1e-20 in float32, 1e-200 in float64) the entry is recomputed with an exact log-sum-exp,
so no precision is traded for the speed (``pop_forward_exact`` is the broadcast twin the tests compare with).
After each step the new column and ``alpha[t]`` are shifted by ``z_t = logsumexp(alpha[t])``, i.e. the step's
weights are divided by the total weight gained, so stored values stay O(1) instead of growing with t (with the
unnormalized RNS weights they would otherwise grow without bound and lose float32 resolution). The stack reading
``softmax(alpha[t])`` does not change; the unnormalized ``log alpha[t]`` is the stored value plus
``sum_{j<=t} z_j``. "Zero" is the finite ``LOG_ZERO = -1e30`` (the papers' code uses -1e10), so no
``-inf - -inf`` NaNs appear in gradients.

Implementations:

* ``StackDP`` (and ``full_stack_dp`` for given weight sequences): the full DP. One custom autograd function per step
  writes its column into a preallocated triangle and keeps only O(t) extra tensors, so forward+backward memory is
  O(n^2) (plain autograd would save an O(t^2) tensor at every step: O(n^3)). The pop contraction is done in
  blocks of start times to bound the transient memory.
* ``limited_stack_dp_step`` / ``limited_stack_dp``: the memory-limited (incremental) version with window D: only
  ``gamma[i->t]`` with ``t - D <= i`` are kept; the state is the last ``(D-1) x (D-1)`` corner of gamma and the last
  D alphas; time O(n D^2). With ``D >= n`` it equals the full DP.
* ``stack_dp_reference``: the slow, obviously-correct twin (plain loops and autograd, unnormalized).
* ``stack_dp_brute_force``: enumerates every run of the automaton (tiny n only).

Padding: a step with ``active`` False leaves the automaton where it was. The full DP appends a copy of the previous
column (the run "waits" one step; a push at that step has weight zero), which gives the same future as skipping the
step; the limited DP keeps its state unchanged.
"""

from __future__ import annotations

import math
from itertools import product

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from seqzoo.ops.stack_pop import LOG_ZERO, pop_backward, pop_forward

DEFAULT_BLOCK_ELEMENTS = 1 << 22

State = tuple[Tensor, Tensor]


# ----- shapes and initial state ----------------------------------------------------------------------

def _check_weights(push: Tensor, repl: Tensor, pop: Tensor, lead: int, who: str) -> tuple[int, int]:
    """Validate ``push/repl (*, Q, G, Q, G)`` and ``pop (*, Q, G, Q)`` with ``lead`` leading dims; return (Q, G)."""
    if push.dim() != lead + 4 or repl.dim() != lead + 4 or pop.dim() != lead + 3:
        raise ValueError(f"{who}: expected push/repl of shape (*, Q, Gamma, Q, Gamma) and pop (*, Q, Gamma, Q) with "
                         f"{lead} leading dims, got {tuple(push.shape)}, {tuple(repl.shape)}, {tuple(pop.shape)}")
    q, g = push.shape[-4], push.shape[-3]
    lead_shape = push.shape[:lead]
    if (push.shape[lead:] != (q, g, q, g) or repl.shape != push.shape or pop.shape[:lead] != lead_shape
            or pop.shape[lead:] != (q, g, q)):
        raise ValueError(f"{who}: inconsistent weight shapes push {tuple(push.shape)}, repl {tuple(repl.shape)}, "
                         f"pop {tuple(pop.shape)}; expected (*, Q, Gamma, Q, Gamma) twice and (*, Q, Gamma, Q)")
    if not (push.is_floating_point() and repl.dtype == push.dtype and pop.dtype == push.dtype):
        raise TypeError(f"{who}: weights must share one floating dtype, got {push.dtype}, {repl.dtype}, {pop.dtype}")
    return q, g


def initial_state(batch: int, n_states: int, n_symbols: int, *, window: int | None = None,
                  device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> State:
    """The DP state before the first step: state 0 with the bottom symbol 0, nothing else.

    Full DP (``window=None``): ``gamma (B, 0, 0, S, S)`` and ``alpha (B, 1, S)``. Limited DP with window D:
    ``gamma (B, D-1, D-1, S, S)`` (all zero weight) and ``alpha (B, D, S)`` (zero except the last row at (0, 0)).
    ``gamma[:, j, l]`` holds ``gamma[s0+j -> s0+1+l]`` and ``alpha[:, j]`` holds ``alpha[s0+j]``, where s0 is the
    first start time kept.
    """
    if n_states < 1 or n_symbols < 1:
        raise ValueError(f"need n_states >= 1 and n_symbols >= 1, got {n_states}, {n_symbols}")
    s = n_states * n_symbols
    dtype = dtype or torch.get_default_dtype()
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    w = 0 if window is None else window - 1
    gamma = torch.full((batch, w, w, s, s), LOG_ZERO, device=device, dtype=dtype)
    alpha = torch.full((batch, w + 1, s), LOG_ZERO, device=device, dtype=dtype)
    alpha[:, -1, 0] = 0.0
    return gamma, alpha


def reading(log_alpha: Tensor, n_states: int, observe_state: bool) -> Tensor:
    """Stack reading from a (normalized or not) ``log alpha[t] (B, S)``: distribution over (state, top) pairs
    (``observe_state``, the "+S" variant) or over top symbols only."""
    probs = torch.softmax(log_alpha, -1)
    if observe_state:
        return probs
    return probs.view(probs.shape[0], n_states, -1).sum(1)


# ----- the per-step core (shared by the full and the windowed DP) --------------------------------------

def _lse(x: Tensor, dims: tuple[int, ...] | int) -> Tensor:
    return torch.logsumexp(x, dim=dims)


def _core_forward(tr: Tensor, av: Tensor, push: Tensor, repl: Tensor, pop: Tensor, q: int,
                  block_elements: int) -> dict[str, Tensor]:
    """One step from the triangle ``tr (B, W, W, S, S)`` (ends up to t-1) and ``av (B, W+1, S)``.

    Returns the raw new column ``colraw (B, W+1, S, S)`` (starts s0..t-1), ``araw (B, S)``, ``z (B,)`` and the
    intermediates the backward needs.
    """
    b, w = tr.shape[0], tr.shape[1]
    s = push.shape[-1]
    colraw = tr.new_full((b, w + 1, s, s), LOG_ZERO)
    colraw[:, w] = push
    saved: dict[str, Tensor] = {}
    if w >= 1:
        x = tr[:, :, w - 1]  # gamma[s0+j -> t-1]
        rp = _lse(x.unsqueeze(-1) + repl[:, None, None], 3)
        colraw[:, :w] = rp
        saved["rp"] = rp
        if w >= 2:
            xp = tr[:, 1:, w - 1]  # gamma[k -> t-1] for k = s0+1 .. t-2
            p = _lse(xp.unsqueeze(-1) + pop[:, None, None], 3)  # (B, W-1, S, Q)
            pp = pop_forward(tr[:, :w - 1, :w - 1], p, q, block_elements)
            colraw[:, :w - 1] = torch.logaddexp(rp[:, :w - 1], pp)
            saved["p"], saved["pp"] = p, pp
    araw = _lse(av.unsqueeze(-1) + colraw, (1, 2))
    z = _lse(araw, 1)
    saved.update(colraw=colraw, araw=araw, z=z)
    return saved


def _core_backward(tr: Tensor, av: Tensor, repl: Tensor, pop: Tensor, saved: dict[str, Tensor], gcol: Tensor,
                   galpha: Tensor, gz: Tensor, dtr: Tensor, dav: Tensor, q: int, block_elements: int
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of ``col = colraw - z``, ``alpha = araw - z`` and ``z``: adds into ``dtr``/``dav`` in place and
    returns ``(dpush, drepl, dpop)``."""
    w = tr.shape[1]
    colraw, araw, z = saved["colraw"], saved["araw"], saved["z"]
    gz_total = gz - gcol.sum((1, 2, 3)) - galpha.sum(-1)
    garaw = galpha + gz_total.unsqueeze(-1) * torch.exp(araw - z.unsqueeze(-1))
    wa = torch.exp(av.unsqueeze(-1) + colraw - araw[:, None, None, :]) * garaw[:, None, None, :]
    dav += wa.sum(-1)
    gcolraw = gcol + wa
    dpush = gcolraw[:, w]
    drepl = torch.zeros_like(repl)
    dpop = torch.zeros_like(pop)
    if w >= 1:
        rp = saved["rp"]
        drp = gcolraw[:, :w].clone()
        if w >= 2:
            p, pp = saved["p"], saved["pp"]
            c = colraw[:, :w - 1]
            dpp = gcolraw[:, :w - 1] * torch.exp(pp - c)
            drp[:, :w - 1] = gcolraw[:, :w - 1] * torch.exp(rp[:, :w - 1] - c)
            dp = pop_backward(tr[:, :w - 1, :w - 1], p, pp, dpp, dtr[:, :w - 1, :w - 1], q, block_elements)
            xp = tr[:, 1:, w - 1]
            gp = torch.exp(xp.unsqueeze(-1) + pop[:, None, None] - p.unsqueeze(-2)) * dp.unsqueeze(-2)
            dtr[:, 1:, w - 1] += gp.sum(-1)
            dpop = gp.sum((1, 2))
        x = tr[:, :, w - 1]
        gr = torch.exp(x.unsqueeze(-1) + repl[:, None, None] - rp.unsqueeze(-2)) * drp.unsqueeze(-2)
        dtr[:, :, w - 1] += gr.sum(-1)
        drepl = gr.sum((1, 2))
    return dpush, drepl, dpop


# ----- full DP: a tape of preallocated buffers and one autograd node per step --------------------------

class _Tape:
    """Buffers of the full DP: ``gamma[:, i, k-1] = gamma[i->k]`` and ``alpha[:, t]``, plus their gradients."""

    def __init__(self, gamma0: Tensor, alpha0: Tensor, n_steps: int, n_states: int, block_elements: int) -> None:
        b, t0 = gamma0.shape[0], gamma0.shape[1]
        s = alpha0.shape[-1]
        n = t0 + n_steps
        self.q, self.s, self.block = n_states, s, block_elements
        self.gamma = gamma0.new_full((b, n, n, s, s), LOG_ZERO)
        self.gamma[:, :t0, :t0] = gamma0
        self.alpha = alpha0.new_full((b, n + 1, s), LOG_ZERO)
        self.alpha[:, :t0 + 1] = alpha0
        self.t0, self.t, self.capacity = t0, t0, n
        self._dgamma: Tensor | None = None
        self._dalpha: Tensor | None = None

    def grads(self) -> tuple[Tensor, Tensor]:
        if self._dgamma is None:
            self._dgamma = torch.zeros_like(self.gamma)
            self._dalpha = torch.zeros_like(self.alpha)
        return self._dgamma, self._dalpha  # type: ignore[return-value]


class _Load(torch.autograd.Function):
    """Start of a tape: makes the initial state (if it needs gradients) part of the graph."""

    @staticmethod
    def forward(ctx, gamma0: Tensor, alpha0: Tensor, tape: _Tape) -> Tensor:  # type: ignore[override]
        ctx.tape = tape
        return gamma0.new_zeros(())

    @staticmethod
    @once_differentiable
    def backward(ctx, gtoken: Tensor):  # type: ignore[override]
        tape: _Tape = ctx.tape
        dg, da = tape.grads()
        t0 = tape.t0
        out_g = dg[:, :t0, :t0].clone()
        out_a = da[:, :t0 + 1].clone()
        dg[:, :t0, :t0] = 0
        da[:, :t0 + 1] = 0
        return out_g, out_a, None


class _Step(torch.autograd.Function):
    """One time step of the full DP on the tape; returns the normalized ``log alpha[t]``, ``z_t`` and a token that
    orders the backward of the steps (step t runs only after every later step)."""

    @staticmethod
    def forward(ctx, token: Tensor, push: Tensor, repl: Tensor, pop: Tensor, active: Tensor | None,  # type: ignore
                tape: _Tape):
        t = tape.t + 1
        if t > tape.capacity:
            raise RuntimeError(f"StackDP: more steps than the {tape.capacity - tape.t0} it was created for")
        if active is not None:
            keep = active.view(-1, 1, 1)
            push, repl, pop = (torch.where(keep, x, torch.zeros_like(x)) for x in (push, repl, pop))
        tr = tape.gamma[:, :t - 1, :t - 1]
        av = tape.alpha[:, :t]
        saved = _core_forward(tr, av, push, repl, pop, tape.q, tape.block)
        z = saved["z"]
        col = saved["colraw"] - z.view(-1, 1, 1, 1)
        alpha = saved["araw"] - z.unsqueeze(-1)
        if active is not None:
            prev = torch.cat([tape.gamma[:, :t - 1, t - 2] if t >= 2 else col[:, :0],
                              torch.full_like(col[:, :1], LOG_ZERO)], 1)
            col = torch.where(active.view(-1, 1, 1, 1), col, prev)
            alpha = torch.where(active.view(-1, 1), alpha, av[:, t - 1])
            z = torch.where(active, z, torch.zeros_like(z))
        else:
            z = z.clone()  # not the tensor kept in ctx.saved (an output held by its own node is a reference cycle)
        tape.gamma[:, :t, t - 1] = col
        tape.alpha[:, t] = alpha
        tape.t = t
        ctx.tape, ctx.t, ctx.active = tape, t, active
        if any(ctx.needs_input_grad):
            ctx.saved = saved
            ctx.weights = (repl, pop)
        return alpha.clone(), z, token.new_zeros(())

    @staticmethod
    @once_differentiable
    def backward(ctx, galpha_out: Tensor, gz: Tensor, gtoken: Tensor):  # type: ignore[override]
        tape: _Tape = ctx.tape
        t, active = ctx.t, ctx.active
        dg, da = tape.grads()
        gcol = dg[:, :t, t - 1].clone()
        dg[:, :t, t - 1] = 0
        galpha = da[:, t] + galpha_out
        da[:, t] = 0
        if active is not None:
            idle = (~active).to(gcol.dtype)
            act = active.to(gcol.dtype)
            if t >= 2:
                dg[:, :t - 1, t - 2] += gcol[:, :t - 1] * idle.view(-1, 1, 1, 1)
            da[:, t - 1] += galpha * idle.unsqueeze(-1)
            gcol = gcol * act.view(-1, 1, 1, 1)
            galpha = galpha * act.unsqueeze(-1)
            gz = gz * act
        repl, pop = ctx.weights
        tr = tape.gamma[:, :t - 1, :t - 1]
        av = tape.alpha[:, :t]
        dpush, drepl, dpop = _core_backward(tr, av, repl, pop, ctx.saved, gcol, galpha, gz,
                                            dg[:, :t - 1, :t - 1], da[:, :t], tape.q, tape.block)
        if active is not None:
            keep = active.view(-1, 1, 1)
            dpush, drepl, dpop = (torch.where(keep, x, torch.zeros_like(x)) for x in (dpush, drepl, dpop))
        return None, dpush, drepl, dpop, None, None


class _Dump(torch.autograd.Function):
    """End of a tape: the state ``(gamma (B, T, T, S, S), alpha (B, T+1, S))`` as differentiable copies."""

    @staticmethod
    def forward(ctx, token: Tensor, tape: _Tape):  # type: ignore[override]
        ctx.tape = tape
        t = tape.t
        ctx.t = t
        return tape.gamma[:, :t, :t].clone(), tape.alpha[:, :t + 1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dgamma: Tensor, dalpha: Tensor):  # type: ignore[override]
        dg, da = ctx.tape.grads()
        t = ctx.t
        dg[:, :t, :t] += dgamma
        da[:, :t + 1] += dalpha
        return None, None


class StackDP:
    """The full nondeterministic-stack DP, advanced one step at a time (the controller needs ``alpha[t]`` before it
    can compute the weights of step t+1).

    ``dp = StackDP(state, n_steps, n_states)``; ``log_alpha_t, z_t = dp.step(push, repl, pop, active)`` with
    log weights ``push/repl (B, Q, G, Q, G)``, ``pop (B, Q, G, Q)`` and ``active (B,)`` bool (False = padding);
    ``dp.state()`` is the state after the last step. ``log_alpha_t (B, S)`` is normalized (logsumexp 0); the
    unnormalized value adds ``sum_{j<=t} z_j``. Gradients flow to the weights and to a state that requires them.
    """

    def __init__(self, state: State, n_steps: int, n_states: int, *,
                 block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> None:
        gamma0, alpha0 = state
        if gamma0.dim() != 5 or alpha0.dim() != 3 or gamma0.shape[1] != gamma0.shape[2] \
                or alpha0.shape[1] != gamma0.shape[1] + 1 or gamma0.shape[-1] != alpha0.shape[-1] \
                or gamma0.shape[-2] != alpha0.shape[-1] or alpha0.shape[0] != gamma0.shape[0]:
            raise ValueError("StackDP: state must be (gamma (B, T, T, S, S), alpha (B, T+1, S)), got "
                             f"{tuple(gamma0.shape)} and {tuple(alpha0.shape)}")
        if alpha0.shape[-1] % n_states:
            raise ValueError(f"StackDP: S={alpha0.shape[-1]} is not a multiple of n_states={n_states}")
        self.n_states = n_states
        self.tape = _Tape(gamma0.detach(), alpha0.detach(), n_steps, n_states, block_elements)
        if gamma0.requires_grad or alpha0.requires_grad:
            self.token = _Load.apply(gamma0, alpha0, self.tape)
        else:
            self.token = gamma0.new_zeros(())

    def step(self, push: Tensor, repl: Tensor, pop: Tensor, active: Tensor | None = None) -> tuple[Tensor, Tensor]:
        q, g = _check_weights(push, repl, pop, 1, "StackDP.step")
        s = q * g
        if q != self.n_states or s != self.tape.s:
            raise ValueError(f"StackDP.step: weights are for |Q|={q}, |Gamma|={g} but the DP has S={self.tape.s}, "
                             f"|Q|={self.n_states}")
        b = push.shape[0]
        if active is not None and (active.shape != (b,) or active.dtype != torch.bool):
            raise ValueError(f"StackDP.step: active must be a bool tensor of shape ({b},), got {active.dtype} "
                             f"{tuple(active.shape)}")
        alpha, z, self.token = _Step.apply(self.token, push.reshape(b, s, s), repl.reshape(b, s, s),
                                           pop.reshape(b, s, q), active, self.tape)
        return alpha, z

    def state(self) -> State:
        return _Dump.apply(self.token, self.tape)


def full_stack_dp(push: Tensor, repl: Tensor, pop: Tensor, *, state: State | None = None, mask: Tensor | None = None,
             block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> tuple[Tensor, Tensor, State]:
    """The full DP over given log weights ``push/repl (B, n, Q, G, Q, G)``, ``pop (B, n, Q, G, Q)``.

    Returns the normalized ``log alpha (B, n, S)`` (step t at index t-1), the log normalizers ``z (B, n)`` (the
    unnormalized log alpha is ``log_alpha + z.cumsum(1)``) and the final state.
    """
    q, g = _check_weights(push, repl, pop, 2, "full_stack_dp")
    b, n = push.shape[:2]
    if state is None:
        state = initial_state(b, q, g, device=push.device, dtype=push.dtype)
    dp = StackDP(state, n, q, block_elements=block_elements)
    alphas, zs = [], []
    for t in range(n):
        a, z = dp.step(push[:, t], repl[:, t], pop[:, t], None if mask is None else mask[:, t].bool())
        alphas.append(a)
        zs.append(z)
    return torch.stack(alphas, 1), torch.stack(zs, 1), dp.state()


# ----- memory-limited DP (window D) --------------------------------------------------------------------

class _WindowStep(torch.autograd.Function):
    """One step of the windowed DP: ``(gamma_w, alpha_w, weights) -> (new column, log alpha[t], z_t)``."""

    @staticmethod
    def forward(ctx, gw: Tensor, aw: Tensor, push: Tensor, repl: Tensor, pop: Tensor, q: int,  # type: ignore
                block_elements: int):
        saved = _core_forward(gw, aw, push, repl, pop, q, block_elements)
        z = saved["z"]
        ctx.q, ctx.block = q, block_elements
        ctx.saved = saved
        ctx.save_for_backward(gw, aw, repl, pop)
        return saved["colraw"] - z.view(-1, 1, 1, 1), saved["araw"] - z.unsqueeze(-1), z.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, gcol: Tensor, galpha: Tensor, gz: Tensor):  # type: ignore[override]
        gw, aw, repl, pop = ctx.saved_tensors
        dgw = torch.zeros_like(gw)
        daw = torch.zeros_like(aw)
        dpush, drepl, dpop = _core_backward(gw, aw, repl, pop, ctx.saved, gcol, galpha, gz, dgw, daw, ctx.q,
                                            ctx.block)
        return dgw, daw, dpush, drepl, dpop, None, None


def limited_stack_dp_step(state: State, push: Tensor, repl: Tensor, pop: Tensor, active: Tensor | None = None, *,
                          block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> tuple[Tensor, Tensor, State]:
    """One step of the memory-limited DP. ``state = (gamma (B, D-1, D-1, S, S), alpha (B, D, S))`` from
    ``initial_state(..., window=D)``; returns ``(log alpha[t] (B, S) normalized, z_t (B,), new state)``. Where
    ``active`` is False the state is returned unchanged (and ``log alpha`` is the previous one, ``z`` is 0)."""
    q, g = _check_weights(push, repl, pop, 1, "limited_stack_dp_step")
    gw, aw = state
    b, s = push.shape[0], q * g
    if gw.dim() != 5 or aw.dim() != 3 or aw.shape[1] != gw.shape[1] + 1 or gw.shape[1] != gw.shape[2] \
            or aw.shape[-1] != s or gw.shape[-1] != s or gw.shape[0] != b or aw.shape[0] != b:
        raise ValueError(f"limited_stack_dp_step: state must be (gamma (B, D-1, D-1, S, S), alpha (B, D, S)) with "
                         f"B={b}, S={s}; got {tuple(gw.shape)} and {tuple(aw.shape)}")
    push, repl, pop = push.reshape(b, s, s), repl.reshape(b, s, s), pop.reshape(b, s, q)
    if active is not None:
        keep = active.view(-1, 1, 1)
        push, repl, pop = (torch.where(keep, x, torch.zeros_like(x)) for x in (push, repl, pop))
    col, alpha, z = _WindowStep.apply(gw, aw, push, repl, pop, q, block_elements)
    w = gw.shape[1]
    if w >= 1:  # drop the oldest start, append the new end column
        shifted = torch.cat([gw[:, 1:, 1:], torch.full_like(gw[:, :1, 1:], LOG_ZERO)], 1)
        new_gw = torch.cat([shifted, col[:, 1:].unsqueeze(2)], 2)
    else:
        new_gw = gw
    new_aw = torch.cat([aw[:, 1:], alpha.unsqueeze(1)], 1)
    if active is not None:
        new_gw = torch.where(active.view(-1, 1, 1, 1, 1), new_gw, gw)
        new_aw = torch.where(active.view(-1, 1, 1), new_aw, aw)
        alpha = torch.where(active.view(-1, 1), alpha, aw[:, -1])
        z = torch.where(active, z, torch.zeros_like(z))
    return alpha, z, (new_gw, new_aw)


def limited_stack_dp(push: Tensor, repl: Tensor, pop: Tensor, window: int, *, state: State | None = None,
                     mask: Tensor | None = None, block_elements: int = DEFAULT_BLOCK_ELEMENTS
                     ) -> tuple[Tensor, Tensor, State]:
    """The memory-limited DP over given weight sequences (same shapes and outputs as ``full_stack_dp``)."""
    q, g = _check_weights(push, repl, pop, 2, "limited_stack_dp")
    b, n = push.shape[:2]
    if state is None:
        state = initial_state(b, q, g, window=window, device=push.device, dtype=push.dtype)
    elif state[1].shape[1] != window:
        raise ValueError(f"limited_stack_dp: state is for window {state[1].shape[1]}, not {window}")
    alphas, zs = [], []
    for t in range(n):
        a, z, state = limited_stack_dp_step(state, push[:, t], repl[:, t], pop[:, t],
                                            None if mask is None else mask[:, t].bool(),
                                            block_elements=block_elements)
        alphas.append(a)
        zs.append(z)
    return torch.stack(alphas, 1), torch.stack(zs, 1), state


# ----- references ------------------------------------------------------------------------------------

def stack_dp_reference(push: Tensor, repl: Tensor, pop: Tensor) -> Tensor:
    """Unnormalized ``log alpha (B, n, S)`` by the recurrence written out with plain loops (slow, O(n^3) memory)."""
    q, g = _check_weights(push, repl, pop, 2, "stack_dp_reference")
    b, n = push.shape[:2]
    s = q * g
    pu, re, po = push.reshape(b, n, s, s), repl.reshape(b, n, s, s), pop.reshape(b, n, s, q)
    alpha = [torch.full((b, s), LOG_ZERO, dtype=push.dtype, device=push.device)]
    alpha[0] = alpha[0].index_fill(1, torch.tensor([0], device=push.device), 0.0)
    gamma: dict[tuple[int, int], Tensor] = {}
    out = []
    for t in range(1, n + 1):
        gamma[(t - 1, t)] = pu[:, t - 1]
        for i in range(t - 1):
            terms = [torch.logsumexp(gamma[(i, t - 1)][:, :, :, None] + re[:, t - 1][:, None], dim=2)]
            for k in range(i + 1, t - 1):
                left = gamma[(i, k)].view(b, s, q, g)  # [a, u, y]
                right = gamma[(k, t - 1)].view(b, q, g, s)  # [u, y, c]
                e = (left[:, :, :, :, None, None] + right[:, None, :, :, :, None]
                     + po[:, t - 1][:, None, None, None, :, :])  # [a, u, y, c, r]
                terms.append(torch.logsumexp(e, dim=(2, 4)).transpose(2, 3).reshape(b, s, s))
            gamma[(i, t)] = torch.logsumexp(torch.stack(terms), dim=0)
        a = torch.logsumexp(torch.stack([alpha[i][:, :, None] + gamma[(i, t)] for i in range(t)]), dim=(0, 2))
        alpha.append(a)
        out.append(a)
    return torch.stack(out, 1)


def stack_dp_brute_force(push: Tensor, repl: Tensor, pop: Tensor) -> Tensor:
    """Unnormalized ``log alpha (B, n, S)`` by enumerating every run of the automaton (exponential: tiny n only).

    A run is a sequence of transitions from state 0 with stack [0]; replace needs a symbol above the bottom and pop
    needs two (the bottom is never replaced or popped).
    """
    q, g = _check_weights(push, repl, pop, 2, "stack_dp_brute_force")
    b, n = push.shape[:2]
    s = q * g
    pu, re, po = push.double().tolist(), repl.double().tolist(), pop.double().tolist()
    out = torch.full((b, n, s), -math.inf, dtype=torch.float64)
    for bi in range(b):
        sums: list[dict[int, list[float]]] = [dict() for _ in range(n)]
        # depth-first over runs: (time, state, stack contents, log weight so far)
        todo: list[tuple[int, int, tuple[int, ...], float]] = [(0, 0, (0,), 0.0)]
        while todo:
            t, state, stack, logw = todo.pop()
            if t > 0:
                sums[t - 1].setdefault(state * g + stack[-1], []).append(logw)
            if t == n:
                continue
            x = stack[-1]
            for r, y in product(range(q), range(g)):
                todo.append((t + 1, r, stack + (y,), logw + pu[bi][t][state][x][r][y]))
                if len(stack) >= 2:
                    todo.append((t + 1, r, stack[:-1] + (y,), logw + re[bi][t][state][x][r][y]))
            if len(stack) >= 3:
                for r in range(q):
                    todo.append((t + 1, r, stack[:-1], logw + po[bi][t][state][x][r]))
        for t in range(n):
            for key, vals in sums[t].items():
                m = max(vals)
                out[bi, t, key] = m + math.log(sum(math.exp(v - m) for v in vals))
    return out.to(push.dtype)

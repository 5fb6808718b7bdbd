"""``SequenceModel(post_norm=...)``: norms between stacked layers with per-time-step batch statistics."""

from __future__ import annotations

import math

import pytest
import torch

from seqzoo.layers.bln import bln_weights
from seqzoo.layers.post_norm import PostNormLayer, SequenceBatchNorm, make_post_norm
from seqzoo.models.sequence_model import SequenceModel


def _model(post_norm: str | None, layer: str = "lstm_native", **kw) -> SequenceModel:
    torch.manual_seed(0)
    args = dict(d_model=6, n_layers=2, d_input=3, d_output=4, post_norm=post_norm)
    return SequenceModel(layer, **{**args, **kw}).double()


def _train_population(model: SequenceModel, length: int = 6, n: int = 5) -> None:
    """A few train-mode passes on inputs whose scale grows with time, so every step has its own statistics."""
    model.train()
    g = torch.Generator().manual_seed(1)
    scale = torch.linspace(0.5, 3.0, length, dtype=torch.float64).view(1, length, 1)
    with torch.no_grad():
        for _ in range(n):
            model(torch.randn(8, length, 3, generator=g, dtype=torch.float64) * scale + scale)
    model.eval()


def test_off_by_default_and_validated() -> None:
    plain = _model(None)
    assert not any(isinstance(m, PostNormLayer) for m in plain.layers)
    assert all(isinstance(m, PostNormLayer) for m in _model("bln").layers)
    with pytest.raises(ValueError, match="post_norm"):
        _model("group")
    with pytest.raises(ValueError, match="post norm"):
        make_post_norm("group", 4)


@pytest.mark.parametrize("kind", ["batch", "bln"])
def test_per_step_populations_differ_and_are_used_per_position(kind: str) -> None:
    model = _model(kind)
    _train_population(model)
    pop = model.layers[0].norm.population if kind == "batch" else model.layers[0].norm.bln.population
    assert int(pop.steps_seen) == 6
    assert not torch.allclose(pop.running_mean[0], pop.running_mean[5])
    x = torch.randn(3, 9, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full, state_full = model(x)
        a, state = model(x[:, :4])
        b, state = model(x[:, 4:], state)  # steps 4.. (and beyond the trained 6, which reuse step 5)
        torch.testing.assert_close(torch.cat([a, b], 1), full)
        for s_full, s_chunk in zip(state_full, state):
            for u, v in zip(s_full, s_chunk):
                torch.testing.assert_close(u, v)
        assert int(state[0][-1][0]) == 9  # the step counter at the end of the state
        stepped, st = [], None
        for t in range(x.shape[1]):
            y, st = model.step(x[:, t], st)
            stepped.append(y)
        torch.testing.assert_close(torch.stack(stepped, 1), full)


@pytest.mark.parametrize("kind", ["batch", "bln"])
def test_counter_follows_real_tokens_under_padding(kind: str) -> None:
    model = _model(kind, layer="lstm")
    _train_population(model)
    x = torch.randn(2, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    nxt = torch.randn(2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        _, state = model(x, mask=mask)
        out, _ = model(nxt, state)
        _, ref_state = model(x[1:, :2])
        ref, _ = model(nxt[1:], ref_state)  # continues at step 2, not at the batch's step 5
    assert [int(c) for c in state[0][-1]] == [5, 2]
    torch.testing.assert_close(out[1], ref[0])


def test_train_statistics_are_per_step_and_ignore_padding() -> None:
    norm = SequenceBatchNorm(4, eps=1e-12).double().train()
    h = torch.randn(6, 3, 4, dtype=torch.float64) * torch.tensor([1.0, 5.0, 20.0], dtype=torch.float64).view(1, 3, 1)
    pos = torch.arange(3).expand(6, 3)
    y = norm(h, pos)
    torch.testing.assert_close(y.mean(0), torch.zeros(3, 4, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(y.var(0, unbiased=False), torch.full((3, 4), 1.0, dtype=torch.float64))
    mask = torch.ones(6, 3, dtype=torch.bool)
    mask[4:, 2] = False
    garbage = h.clone()
    garbage[4:, 2] = 1e3
    y2 = SequenceBatchNorm(4).double().train()(garbage, pos, mask)
    ref = SequenceBatchNorm(4).double().train()(h[:4], pos[:4])
    torch.testing.assert_close(y2[:4, 2], ref[:, 2])


def test_batch_of_one_bn_collapses_and_population_stays_finite() -> None:
    model = _model("batch")
    model.train()
    x = torch.randn(1, 5, 3, dtype=torch.float64)
    out, _ = model(x)
    pop = model.layers[-1].norm.population
    assert torch.equal(pop.running_var, torch.ones_like(pop.running_var))  # not updated from one sample
    out2, _ = model(torch.randn(1, 5, 3, dtype=torch.float64))
    torch.testing.assert_close(out, out2)  # every norm output is its bias: the input is ignored
    model.eval()
    assert torch.isfinite(model(x)[0]).all()


def test_bln_batch_of_one_is_scaled_layer_norm() -> None:
    norm = make_post_norm("bln", 8).double().train()
    h = torch.randn(1, 4, 8, dtype=torch.float64)
    y = norm(h, torch.arange(4).unsqueeze(0))
    ln = torch.nn.functional.layer_norm(h, (8,), eps=1e-3)
    torch.testing.assert_close(y, (1 - 1e-4) * ln / math.sqrt(8))
    w_l, w_b = bln_weights(25)
    assert w_l + w_b == pytest.approx(1.0)


def test_fast_population_update_matches_per_step_update() -> None:
    fast, slow = SequenceBatchNorm(4).double().train(), SequenceBatchNorm(4).double().train()
    h = torch.randn(5, 3, 4, dtype=torch.float64)
    pos = torch.arange(3).expand(5, 3)
    fast(h, pos)  # no mask: all steps updated at once
    slow(h, pos, torch.ones(5, 3, dtype=torch.bool))  # with a mask: step by step
    for name in ("running_mean", "running_var", "steps_seen"):
        torch.testing.assert_close(getattr(fast.population, name), getattr(slow.population, name))


def test_layer_post_norm_is_stateless_and_step_exact_in_train() -> None:
    model = _model("layer")
    assert model.step_exact_in_train and all(len(s) == 2 for s in model.init_state(2))
    assert not _model("bln").step_exact_in_train
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    out, _ = model(x)
    stepped, st = [], None
    for t in range(4):
        y, st = model.step(x[:, t], st)
        stepped.append(y)
    torch.testing.assert_close(torch.stack(stepped, 1), out)

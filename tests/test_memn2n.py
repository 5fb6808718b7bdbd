"""MemN2N (layers/memory.py): position encoding, tying, random noise, the nil word, linear start and its hook.

The generic QA checks (gradients, empty slots, batch invariance, save/load) are in tests/test_conformance.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import seqzoo
from seqzoo.errors import ConfigError
from seqzoo.layers.memory import MemN2N, encode_reference, position_encoding, random_time_slots
from seqzoo.training.hooks import PlateauSwitchHook, module_hooks, plateaued


def small(**kw) -> MemN2N:
    torch.manual_seed(0)
    return MemN2N(**{"vocab_size": 9, "d_model": 4, "hops": 3, "memory_size": 6, **kw}).double()


def batch(gen: torch.Generator, b: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    story = torch.randint(1, 9, (b, 4, 3), generator=gen)
    story[:, 3] = 0
    story[:, :, 2] = 0
    return torch.randint(1, 9, (b, 2), generator=gen), story


def test_position_encoding_matches_the_paper_formula_for_j3_d4() -> None:
    """l_kj = (1 - j/J) - (k/d)(1 - 2j/J), J = 3 words, d = 4 (spec §2.6 unit test)."""
    got = position_encoding(torch.ones(3, dtype=torch.bool), 4, torch.float64)
    want = torch.tensor([[(1 - j / 3) - (k / 4) * (1 - 2 * j / 3) for k in range(1, 5)] for j in range(1, 4)],
                        dtype=torch.float64)
    torch.testing.assert_close(got, want)
    # J counts the sentence's words, not the padded width: padding keeps the real words' weights
    padded = position_encoding(torch.tensor([True, True, True, False, False]), 4, torch.float64)
    torch.testing.assert_close(padded[:3], want)


def test_encoding_is_the_weighted_sum_of_word_rows() -> None:
    """The embedding-bag encoding equals the reference twin (gathered rows x the PE formula, summed), for one table
    and for tables side by side with temporal rows."""
    ids = torch.tensor([[3, 4, 5, 0], [7, 0, 0, 0], [0, 0, 0, 0]])
    time = torch.tensor([9, 10, 11])
    for encoding in ("pe", "bow"):
        model = small(encoding=encoding)
        table = model._with_nil(model.tables[0])
        rows = torch.nn.functional.embedding(ids, table)
        weights = position_encoding(ids.ne(0), 4, torch.float64) if encoding == "pe" else 1.0
        torch.testing.assert_close(model._encode(ids, table), (rows * weights).sum(-2))
        joined = torch.cat([model._with_nil(t) for t in model.tables], 1)
        torch.testing.assert_close(model._encode(ids, joined, time),
                                   encode_reference(ids, joined, 4, encoding, time))


def test_adjacent_tying_shares_tables_between_hops() -> None:
    """A^{k+1} = C^k, B = A^1, W^T = C^K: K + 1 tables in all, each used twice (the same storage)."""
    model = small(hops=3)
    assert len(model.tables) == 4 and not hasattr(model, "answer")
    gen = torch.Generator().manual_seed(0)
    q, story = batch(gen)
    model.eval()
    with torch.no_grad():
        before, _ = model(q, story)
        model.tables[1].add_(0.5)  # C^1 = A^2: changing it changes the answer through both hops
        after, _ = model(q, story)
    assert not torch.allclose(before, after)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 4 * (9 + 6 - 1) * 4  # (V + memory rows - nil) x d per table, nothing else


def test_layerwise_tying_shares_one_a_and_one_c() -> None:
    model = small(tying="layerwise", hops=3)
    assert len(model.tables) == 2 and model.hop_map.weight.shape == (4, 4) and model.answer.weight.shape == (9, 4)
    one_hop = small(tying="layerwise", hops=1)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in one_hop.parameters())
    with pytest.raises(ConfigError, match="d_output"):
        seqzoo.create_model("memn2n", vocab_size=9, d_output=5)
    assert seqzoo.create_model("memn2n", vocab_size=9, d_output=5, tying="layerwise").answer.out_features == 5


def test_random_noise_never_exceeds_the_memory_and_keeps_the_order() -> None:
    torch.manual_seed(0)
    n_real = torch.tensor([0, 1, 5, 10, 10, 3])
    for _ in range(200):
        t = random_time_slots(n_real, 10, 10, 0.1)
        assert t.shape == (6, 10) and int(t.min()) >= 0 and int(t.max()) <= 9
        for row, n in zip(t, n_real.tolist()):
            real = row[:n]
            assert bool((real[1:] >= real[:-1]).all())  # the latest sentence keeps the smallest index
            assert len(set(real.tolist())) == n or int(real.max()) == 9  # distinct unless capped
    # with noise, gaps appear: some row of a long story skips an index
    draws = torch.stack([random_time_slots(torch.tensor([10]), 10, 50, 0.1)[0] for _ in range(200)])
    assert bool((draws != torch.arange(10)).any()) and int(draws.max()) <= 11


def test_random_noise_only_in_training() -> None:
    model = small(random_noise=0.5)
    gen = torch.Generator().manual_seed(1)
    q, story = batch(gen)
    model.eval()
    with torch.no_grad():
        a, b = model(q, story)[0], model(q, story)[0]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    model.train()
    with torch.no_grad():
        outs = [model(q, story)[0] for _ in range(10)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_nil_word_embedding_stays_zero_under_training() -> None:
    model = small()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    gen = torch.Generator().manual_seed(2)
    q, story = batch(gen)
    for _ in range(3):
        out, _ = model(q, story)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(out, torch.tensor([1, 2, 3])).backward()
        opt.step()
    for t in model.tables:
        assert torch.equal(model._with_nil(t)[0], torch.zeros(4, dtype=torch.float64))
    # a question of nil words only reads nothing from the question
    assert torch.equal(model._encode(torch.zeros(1, 3, dtype=torch.int64), model._with_nil(model.tables[0])),
                       torch.zeros(1, 4, dtype=torch.float64))


def test_linear_start_drops_the_softmax_until_switched() -> None:
    model = small(hops=1, temporal=False)
    gen = torch.Generator().manual_seed(3)
    q, story = batch(gen, 2)
    model.eval()
    assert model.awaits_plateau
    p = model.attention(q, story)[:, 0]
    assert not torch.allclose(p.sum(-1), torch.ones(2, dtype=torch.float64))  # raw scores
    assert bool((p[:, 3] == 0).all())  # the empty slot takes no part
    assert model.switch_on_plateau() and not model.switch_on_plateau() and not model.awaits_plateau
    p = model.attention(q, story)[:, 0]
    torch.testing.assert_close(p.sum(-1), torch.ones(2, dtype=torch.float64))
    assert bool((p[:, 3] == 0).all())
    assert model.module_metrics() == {"linear_start": 0.0}
    assert not small(linear_start=False).awaits_plateau


def test_plateau_hook_switches_when_the_validation_loss_stops_falling() -> None:
    assert not plateaued([3.0, 2.0], 2) and not plateaued([3.0, 2.0, 1.0, 0.5], 2)
    assert not plateaued([3.0, 2.0, 2.5, 1.9], 2) and plateaued([3.0, 2.0, 2.5, 2.1], 2)
    assert plateaued([3.0, 2.0, 2.0], 1)
    model = small(linear_start_patience=2)
    assert [type(h) for h in module_hooks(model, [])] == [PlateauSwitchHook]
    assert module_hooks(model, [PlateauSwitchHook()]) == []
    assert module_hooks(torch.nn.Linear(2, 2), []) == []
    spec = SimpleNamespace(loss="cross_entropy", metrics=("error", "cross_entropy"), primary_metric="error")
    history: list[dict] = []
    trainer = SimpleNamespace(task=SimpleNamespace(spec=spec), state=SimpleNamespace(history=history))
    hook = PlateauSwitchHook()
    for ce, still_linear in ((2.0, True), (1.5, True), (1.6, True), (1.4, True), (1.45, True), (1.41, False)):
        history.append({"step": len(history), "split": "valid", "cross_entropy": ce, "error": 50.0})
        hook.after_step(trainer, model)
        assert model.awaits_plateau == still_linear, history


def test_the_linear_start_phase_is_saved_with_the_weights(tmp_path) -> None:
    model = seqzoo.create_model("memn2n", vocab_size=9, memory_size=6, d_model=4)
    model.switch_on_plateau()
    seqzoo.save_model(model, tmp_path)
    assert not seqzoo.load_model(tmp_path).awaits_plateau


def test_bad_inputs_and_arguments_are_clear_errors() -> None:
    model = small()
    q = torch.ones(2, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match="memory_size=6"):
        model(q, torch.ones(2, 7, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"word ids must lie in \[0, 9\)"):
        model(q, torch.full((2, 2, 3), 9))
    with pytest.raises(ValueError, match="story must be integer"):
        model(q, torch.ones(2, 3))
    for bad in ({"encoding": "cnn"}, {"tying": "none"}, {"hops": 0}, {"random_noise": 1.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            seqzoo.create_model("memn2n", vocab_size=9, **bad)

"""CFL tasks: grammars, length-conditioned sampling, the inside parser, the lower bound and the metric."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from seqzoo.tasks import create_task, list_tasks
from seqzoo.tasks.cfl import (
    dyck_grammar,
    hardest_cfl_grammar,
    marked_reversal_grammar,
    padded_reversal_grammar,
    unmarked_reversal_grammar,
)
from seqzoo.tasks.pcfg import PCFG, Rule, cont

NAMES = ["cfl-marked-reversal", "cfl-unmarked-reversal", "cfl-padded-reversal", "cfl-dyck", "cfl-hardest"]
SMALL = {"min_length": 8, "max_length": 16, "test_min_length": 8, "test_max_length": 20, "n_valid": 64,
         "n_test_per_length": 4}


def test_all_registered() -> None:
    assert set(NAMES) <= set(list_tasks("cfl-*"))


# ----- the lower bound: reference values of the spec (§1.6) -------------------------------------------

@pytest.mark.parametrize(("name", "valid", "test"), [
    ("cfl-marked-reversal", 0.3843, 0.3847),
    ("cfl-unmarked-reversal", 0.3908, 0.3901),
    ("cfl-dyck", 0.6885, 0.6994),
])
def test_expected_lower_bound_matches_spec(name: str, valid: float, test: float) -> None:
    task = create_task(name)  # lengths 40-80, test 40-100
    assert task.expected_lower_bound("valid") == pytest.approx(valid, abs=5e-5)
    assert task.expected_lower_bound("test") == pytest.approx(test, abs=5e-5)


def test_reversal_bound_closed_form() -> None:
    """Reversal strings are uniform given the length: E[-log p | L] = floor(L/2) ln 2 + ln N_valid."""
    for name, lengths in (("cfl-marked-reversal", range(41, 80, 2)), ("cfl-unmarked-reversal", range(40, 81, 2))):
        task = create_task(name)
        assert task.valid_lengths("valid") == list(lengths)
        n = len(lengths)
        expected = sum((L // 2) * math.log(2) + math.log(n) for L in lengths) / sum(L + 1 for L in lengths)
        assert task.expected_lower_bound("valid") == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", ["cfl-marked-reversal", "cfl-dyck"])
def test_bound_of_generated_data_is_near_the_expectation(name: str) -> None:
    task = create_task(name, n_valid=300)
    data_bound = task.lower_bound("valid")
    assert data_bound == pytest.approx(task.expected_lower_bound("valid"), abs=0.01)
    base = task.baseline()
    assert base["cross_entropy"] == pytest.approx(data_bound) and base["ce_minus_bound"] == 0.0
    assert base["expected_cross_entropy"] == pytest.approx(task.expected_lower_bound("valid"))


def test_per_string_bound_of_reversal() -> None:
    task = create_task("cfl-unmarked-reversal", **SMALL)
    t = task.build("valid").tensors
    n_valid = len(task.valid_lengths("valid"))
    expected = (t["lengths"] // 2).double() * math.log(2) + math.log(n_valid)
    torch.testing.assert_close(t["bound_nll"], expected, rtol=1e-12, atol=1e-12)


def test_ambiguous_grammars_have_a_data_bound_only() -> None:
    for name in ("cfl-padded-reversal", "cfl-hardest"):
        task = create_task(name, **SMALL)
        assert task.expected_lower_bound() is None
        base = task.baseline()
        assert base["cross_entropy"] == pytest.approx(task.lower_bound("valid"))
        assert 0.0 < base["cross_entropy"] < math.log(len(task.grammar.terminals) + 1)


# ----- grammars, inside probabilities, the parser and the sampler ---------------------------------------

def test_cont() -> None:
    assert cont(1) == 0.5 and cont(0.5) == pytest.approx(1 / 3) and cont(39) == pytest.approx(0.975)


@pytest.mark.parametrize(("builder", "length", "chunk"), [
    (padded_reversal_grammar, 8, 4096), (dyck_grammar, 8, 4096), (marked_reversal_grammar, 7, 4096),
    (unmarked_reversal_grammar, 8, 4096), (hardest_cfl_grammar, 6, 2048),
])
def test_parser_sums_to_the_inside_probability(builder, length: int, chunk: int) -> None:
    """Summing p_G(w) over every string of one length gives I[S, L] (checks the parser on ambiguous grammars)."""
    g = builder()
    strings = np.array(list(itertools.product(range(len(g.terminals)), repeat=length)))
    lp = g.log_prob(strings, chunk=chunk)
    total = np.exp(lp[np.isfinite(lp)]).sum()
    assert total == pytest.approx(g.inside(length)[g.start, length], rel=1e-10)
    assert np.isfinite(lp).any()


def test_padded_reversal_counts_every_parse() -> None:
    """'00' has three derivations: 0 T0 0 with T0 -> eps, 0 T1 0 with T1 -> eps, and T0 -> 0 0."""
    g = padded_reversal_grammar()
    p, q = cont(60), cont(30)
    expected = p * (1 - p) * (1 - q) / 2 + (1 - p) * q * q * (1 - q) / 2
    assert math.exp(g.log_prob(np.array([[0, 0]]))[0]) == pytest.approx(expected, rel=1e-12)
    assert g.log_prob(np.array([[0, 1]]))[0] == -math.inf


@pytest.mark.parametrize(("builder", "length"), [(padded_reversal_grammar, 6), (dyck_grammar, 6)])
def test_sampler_follows_the_conditional_distribution(builder, length: int) -> None:
    g = builder()
    rng = np.random.default_rng(0)
    n = 20000
    counts: dict[tuple[int, ...], int] = {}
    for _ in range(n):
        w = tuple(g.sample(length, rng))
        counts[w] = counts.get(w, 0) + 1
    strings = np.array(list(counts))
    probs = np.exp(g.log_prob(strings)) / g.inside(length)[g.start, length]
    freq = np.array([counts[tuple(w)] for w in strings]) / n
    assert np.all(np.abs(freq - probs) < 4 * np.sqrt(probs * (1 - probs) / n) + 1e-3)
    # every string of that length with probability > 1% was drawn
    every = np.array(list(itertools.product(range(len(g.terminals)), repeat=length)))
    p_all = np.exp(g.log_prob(every)) / g.inside(length)[g.start, length]
    assert {tuple(w) for w in every[p_all > 0.01]} <= set(counts)


def test_samples_belong_to_their_languages() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        w = marked_reversal_grammar().sample(21, rng)
        assert w[10] == 2 and w[:10] == w[11:][::-1] and 2 not in w[:10] + w[11:]
        w = unmarked_reversal_grammar().sample(20, rng)
        assert w == w[::-1]
        w = dyck_grammar().sample(20, rng)
        stack: list[int] = []
        for s in w:  # ( ) [ ] = 0 1 2 3
            if s in (0, 2):
                stack.append(s)
            else:
                assert stack and stack.pop() == s - 1
        assert not stack
        w = hardest_cfl_grammar().sample(25, rng)
        assert len(w) == 25 and w[-1] == 5  # ends with ';'
        assert np.isfinite(hardest_cfl_grammar().log_prob(np.array([w]))[0])


def test_grammar_validation_errors() -> None:
    with pytest.raises(ValueError, match="sum to"):
        PCFG("S", [Rule("S", ("a",), 0.5)], ("a",))
    with pytest.raises(ValueError, match="unknown symbol"):
        PCFG("S", [Rule("S", ("b",), 1.0)], ("a",))
    with pytest.raises(ValueError, match="cycle"):
        PCFG("S", [Rule("S", ("T",), 0.5), Rule("S", ("a",), 0.5), Rule("T", ("S",), 1.0)], ("a",))
    with pytest.raises(ValueError, match="no string of length"):
        marked_reversal_grammar().sample(4, np.random.default_rng(0))


# ----- the task: data layout, determinism, metric ------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_data_layout(name: str) -> None:
    task = create_task(name, **SMALL)
    spec = task.spec
    data = task.build("valid")
    t = data.tensors
    assert len(data) == 64 and spec.input_kind == "tokens" and spec.decoder == "step"
    assert spec.vocab_size == spec.d_output == len(task.grammar.terminals) + 1
    lengths = t["lengths"]
    assert set(lengths.tolist()) <= set(task.valid_lengths("valid"))
    assert torch.all(lengths[1:] >= lengths[:-1]), "evaluation sets are sorted by length"
    for i in range(len(data)):
        n = int(lengths[i])
        assert t["inputs"][i, 0] == task.bos and t["targets"][i, n] == task.eos
        torch.testing.assert_close(t["inputs"][i, 1:n + 1], t["targets"][i, :n])
        assert t["mask"][i].sum() == n + 1 and t["mask"][i, :n + 1].all()
    assert torch.equal(t["mask"], t["loss_mask"])
    batch = data.batch(slice(0, 8))  # the shortest strings: trimmed to their own longest
    assert batch["inputs"].shape[1] == int(batch["lengths"].max()) + 1
    test = task.build("test").tensors
    per_len = torch.bincount(test["lengths"])
    assert set(per_len[per_len > 0].tolist()) == {SMALL["n_test_per_length"]}
    assert sorted(set(test["lengths"].tolist())) == task.valid_lengths("test")


def test_train_batches_share_one_length_and_are_deterministic() -> None:
    task = create_task("cfl-dyck", **SMALL)
    a, b = task.train_batch(3, 10, seed=1), task.train_batch(3, 10, seed=1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["mask"].all() and len(set(a["lengths"].tolist())) == 1
    c = task.train_batch(4, 10, seed=1)
    assert not torch.equal(a["inputs"][:, :5], c["inputs"][:, :5]) or a["inputs"].shape != c["inputs"].shape
    lengths = {int(task.train_batch(s, 2)["lengths"][0]) for s in range(40)}
    assert len(lengths) > 3 and lengths <= set(task.valid_lengths("train"))


def test_eval_sets_are_fixed_by_seed() -> None:
    t1 = create_task("cfl-marked-reversal", **SMALL).build("valid", seed=0).tensors
    t2 = create_task("cfl-marked-reversal", **SMALL).build("valid", seed=0).tensors
    t3 = create_task("cfl-marked-reversal", **SMALL).build("valid", seed=1).tensors
    assert torch.equal(t1["inputs"], t2["inputs"]) and not torch.equal(t1["inputs"], t3["inputs"])


def _marked_reversal_oracle(task, batch: dict) -> torch.Tensor:
    """Logits of the true next-symbol distribution of marked reversal (lengths uniform over the valid ones)."""
    valid = task.valid_lengths("valid")
    inputs, lengths = batch["inputs"], batch["lengths"]
    b, width = inputs.shape
    probs = torch.zeros(b, width, 4, dtype=torch.float64)
    for i in range(b):
        n = int(lengths[i])
        half = (n - 1) // 2
        for k in range(n + 1):  # prediction after reading k symbols
            if k < half:  # '#' comes next iff L = 2k + 1, given L >= 2k + 1
                remaining = [L for L in valid if L >= 2 * k + 1]
                p_mark = (1.0 / len(remaining)) if 2 * k + 1 in remaining else 0.0
                probs[i, k, 2] = p_mark
                probs[i, k, :2] = (1 - p_mark) / 2
            elif k == half:
                probs[i, k, 2] = 1.0 / len([L for L in valid if L >= 2 * k + 1])
                probs[i, k, :2] = (1 - probs[i, k, 2]) / 2
            else:
                probs[i, k, int(batch["targets"][i, k])] = 1.0  # the mirrored half and EOS are determined
    return torch.log(probs.clamp_min(1e-300))


def test_oracle_reaches_the_bound_exactly() -> None:
    """The true conditional distribution scores -log p(w) per string, so ce_minus_bound is 0 and CE is the bound."""
    task = create_task("cfl-marked-reversal", **SMALL)
    data = task.build("valid")
    sums: dict[str, list[float]] = {}
    for batch in data.batches(16):
        out = _marked_reversal_oracle(task, batch)
        for k, (s, c) in task.metric_sums(out, batch).items():
            acc = sums.setdefault(k, [0.0, 0.0])
            acc[0] += s
            acc[1] += c
    assert sums["ce_minus_bound"][0] / sums["ce_minus_bound"][1] == pytest.approx(0.0, abs=1e-9)
    assert sums["cross_entropy"][0] / sums["cross_entropy"][1] == pytest.approx(task.lower_bound("valid"), rel=1e-9)


def test_ce_minus_bound_is_ce_minus_data_bound_for_any_model() -> None:
    task = create_task("cfl-dyck", **SMALL)
    data = task.build("valid")
    g = torch.Generator().manual_seed(0)
    totals = {"cross_entropy": [0.0, 0.0], "ce_minus_bound": [0.0, 0.0]}
    for batch in data.batches(10):
        out = torch.randn(*batch["inputs"].shape, task.spec.d_output, generator=g, dtype=torch.float64)
        m = task.metric_sums(out, batch)
        for k in totals:
            totals[k][0] += m[k][0]
            totals[k][1] += m[k][1]
    ce = totals["cross_entropy"][0] / totals["cross_entropy"][1]
    diff = totals["ce_minus_bound"][0] / totals["ce_minus_bound"][1]
    assert diff == pytest.approx(ce - task.lower_bound("valid"), rel=1e-9)
    # on a training batch (no stored bound) the metric parses the strings itself
    batch = task.train_batch(0, 4)
    out = torch.randn(*batch["inputs"].shape, task.spec.d_output, generator=g, dtype=torch.float64)
    s, c = task.metric_sums(out, batch)["ce_minus_bound"]
    assert math.isfinite(s) and c == float(batch["mask"].sum())


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="min_length"):
        create_task("cfl-dyck", min_length=20, max_length=10)
    with pytest.raises(ValueError, match="no string with length"):
        create_task("cfl-marked-reversal", min_length=40, max_length=40)
    with pytest.raises(ValueError, match="n_valid"):
        create_task("cfl-dyck", n_valid=0)
    with pytest.raises(TypeError, match="max_length"):
        create_task("cfl-dyck", max_lenght=10)

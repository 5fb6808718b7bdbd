"""DFA object (running, minimization, comparison, counting, drawing) and the formal-language tasks."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

import seqzoo
from seqzoo.dfa import DFA, MISSING
from seqzoo.tasks import create_task
from seqzoo.tasks.formal_languages import is_balanced, nesting_depth, tomita_dfa, tomita_rule


def all_words(alphabet: str, max_len: int) -> list[str]:
    return ["".join(w) for n in range(max_len + 1) for w in itertools.product(alphabet, repeat=n)]


def mod_dfa(modulus: int, accept: set[int]) -> DFA:
    """Binary numbers read most significant bit first, state = value mod ``modulus``."""
    delta = tuple((2 * r % modulus, (2 * r + 1) % modulus) for r in range(modulus))
    return DFA(("0", "1"), delta, 0, frozenset(accept))


def residual_classes(dfa: DFA, depth: int) -> int:
    """Number of Myhill–Nerode classes among reachable states, told apart by suffixes up to ``depth``."""
    full = dfa.complete()
    suffixes = all_words("".join(full.alphabet), depth)
    sigs = set()
    for q in full.reachable_states():
        sig = []
        for s in suffixes:
            r = q
            for ch in s:
                r = full.step(r, ch)
            sig.append(r in full.accepting)
        sigs.add(tuple(sig))
    return len(sigs)


# ----- DFA ------------------------------------------------------------------------------------------

def test_run_accept_trace_and_missing_transitions() -> None:
    d = DFA.from_transitions("ab", {("s", "a"): "t", ("t", "b"): "s"}, "s", ["s"])
    assert d.accepts("") and d.accepts("abab") and not d.accepts("aba")
    assert not d.accepts("b") and d.run("b") is None  # a missing transition rejects
    assert d.trace("aba") == [0, 1, 0, 1]
    full = d.complete()
    assert full.is_complete and full.n_states == 3 and full.labels[-1] == "dead"
    assert all(full.accepts(w) == d.accepts(w) for w in all_words("ab", 6))
    with pytest.raises(ValueError, match="not in the alphabet"):
        d.accepts("abc")
    with pytest.raises(ValueError, match="transitions to"):
        DFA(("a",), ((5,),), 0, frozenset())


def test_minimize_textbook_examples() -> None:
    # divisibility by 3 built with 6 states (value mod 6, accept 0 and 3) -> the 3-state mod-3 automaton
    six = mod_dfa(6, {0, 3})
    small = six.minimize()
    assert small.n_states == 3 and small.equivalent(mod_dfa(3, {0}))
    # an even number of a's counted mod 4 (accept 0, 2), plus an unreachable state -> 2 states
    d = DFA(("a", "b"), ((1, 0), (2, 1), (3, 2), (0, 3), (0, 0)), 0, frozenset({0, 2, 4}))
    m = d.minimize()
    assert m.n_states == 2 and d.reachable().n_states == 4
    assert all(m.accepts(w) == (w.count("a") % 2 == 0) for w in all_words("ab", 7))
    # "ends with ab" with duplicated states -> 3 states
    t = {("0", "a"): "1", ("0", "b"): "0", ("1", "a"): "1'", ("1", "b"): "2", ("1'", "a"): "1", ("1'", "b"): "2",
         ("2", "a"): "1", ("2", "b"): "0"}
    e = DFA.from_transitions("ab", t, "0", ["2"]).minimize()
    assert e.n_states == 3 and all(e.accepts(w) == w.endswith("ab") for w in all_words("ab", 7))
    # a partial automaton minimizes to the complete minimal one (dead state counted)
    one_star = DFA.from_transitions("01", {("ok", "1"): "ok"}, "ok", ["ok"])
    assert one_star.minimize().n_states == 2 and one_star.minimize().is_complete
    # the empty language
    assert DFA(("a",), ((0,),), 0, frozenset()).minimize().n_states == 1


def test_minimize_random_automata_against_brute_force() -> None:
    rng = random.Random(0)
    for _ in range(40):
        n = rng.randint(1, 8)
        delta = tuple(tuple(rng.choice([*range(n), MISSING]) for _ in "ab") for _ in range(n))
        acc = frozenset(q for q in range(n) if rng.random() < 0.4)
        d = DFA(("a", "b"), delta, 0, acc)
        m = d.minimize()
        assert m.n_states == residual_classes(d, n + 1)
        assert all(m.accepts(w) == d.accepts(w) for w in all_words("ab", 7))
        assert m.minimize().n_states == m.n_states


def test_difference_finds_a_shortest_distinguishing_word() -> None:
    a, b = tomita_dfa(4), tomita_dfa(7)
    w = a.difference(b)
    assert w is not None and a.accepts(w) != b.accepts(w)
    assert all(a.accepts(v) == b.accepts(v) for v in all_words("01", len(w) - 1))
    assert a.difference(a.minimize()) is None and a.equivalent(tomita_dfa(4))


def test_count_words_and_uniform_sample() -> None:
    d = tomita_dfa(4)
    for n in range(9):
        words = ["".join(w) for w in itertools.product("01", repeat=n)]
        pos = [w for w in words if "000" not in w]
        assert d.count(n) == len(pos) and d.count(n, accepted=False) == len(words) - len(pos)
        assert list(d.words(n)) == pos
    rng = random.Random(1)
    draws = [d.sample(4, rng, accepted=False) for _ in range(3000)]
    assert all("000" in w for w in draws)
    counts = {w: draws.count(w) for w in set(draws)}
    assert len(counts) == 3 and max(counts.values()) < 1.2 * min(counts.values())  # 0000, 0001, 1000
    assert tomita_dfa(1).sample(5, rng, accepted=True) == "11111"
    assert tomita_dfa(2).sample(5, rng, accepted=True) is None  # no positive string of odd length


def test_serialization_dot_and_drawing(tmp_path) -> None:
    d = tomita_dfa(3)
    again = DFA.from_dict(d.to_dict())
    assert again.equivalent(d) and again.delta == d.delta and again.labels == d.labels
    dot = d.to_dot()
    assert dot.count("->") == len(d.edges()) + 1 and "doublecircle" in dot
    png = d.draw(tmp_path / "sub" / "t3.png", title="Tomita 3")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert tomita_dfa(1).draw(tmp_path / "t1.png").exists()


# ----- Tomita ---------------------------------------------------------------------------------------

MINIMAL_STATES = {1: 2, 2: 3, 3: 5, 4: 4, 5: 4, 6: 3, 7: 5}


@pytest.mark.parametrize("grammar", range(1, 8))
def test_tomita_dfas_match_the_definitions(grammar: int) -> None:
    d = tomita_dfa(grammar)
    assert d.n_states == MINIMAL_STATES[grammar]
    for w in all_words("01", 11):
        assert d.accepts(w) == tomita_rule(grammar, w), (grammar, w)


def test_tomita3_is_the_later_reading() -> None:
    # an odd run of ones, then an even run of zeros, then ones, then an odd run of zeros: rejected
    assert not tomita_rule(3, "1001100010")
    assert tomita_rule(3, "110") and tomita_rule(3, "1001") and not tomita_rule(3, "10") and tomita_rule(3, "1")


def test_tomita_splits() -> None:
    task = create_task("tomita", grammar=4, n_train=300, n_valid=120, n_test=100, exhaustive_len=4)
    tr, va, te = (task.examples(s) for s in ("train", "valid", "test"))
    words = [{w for w, _ in ex} for ex in (tr, va, te)]
    assert not (words[0] & words[1]) and not (words[0] & words[2]) and not (words[1] & words[2])
    assert all(len(w) <= 22 for w in words[0]) and all(23 <= len(w) <= 28 for w in words[1])
    assert all(29 <= len(w) <= 34 for w in words[2])
    assert set(all_words("01", 4)) <= words[0]
    for ex in (tr, va, te):
        assert all(y == tomita_rule(4, w) for w, y in ex)
    assert sum(y for _, y in va) == 60 and len(va) == 120  # balanced
    again = create_task("tomita", grammar=4, n_train=300, n_valid=120, n_test=100, exhaustive_len=4)
    assert again.examples("test") == te
    d = task.build("valid").tensors
    assert task.decode(d["inputs"], d["mask"]) == [w for w, _ in va]
    assert bool((d["inputs"][:, 0] == 1).all()) and d["inputs"].shape[1] == 29  # start symbol, longest + 1


def test_balanced_accuracy_is_exact_over_batches() -> None:
    task = create_task("tomita", grammar=1, n_train=50, n_valid=200, n_test=200)
    d = task.build("valid")
    y = d.tensors["targets"]
    assert 0 < int(y.sum()) < 20  # Tomita 1 has one positive per length: a skewed split
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(len(y), 2, generator=g)
    pred = logits.argmax(-1)
    want = 0.5 * (float((pred[y == 1] == 1).double().mean()) + float((pred[y == 0] == 0).double().mean()))
    s = c = 0.0
    start = 0
    for batch in d.batches(37):  # consecutive slices of the split
        n = len(batch["targets"])
        bs, bc = task.metric_sums(logits[start:start + n], batch)["balanced_accuracy"]
        s, c, start = s + bs, c + bc, start + n
    assert abs(s / c - want) < 1e-12
    always_reject = torch.tensor([[1.0, 0.0]]).expand(len(y), 2)
    sums = task.metric_sums(always_reject, d.tensors)
    assert abs(sums["balanced_accuracy"][0] / sums["balanced_accuracy"][1] - 0.5) < 1e-12
    assert sums["accuracy"][0] / sums["accuracy"][1] > 0.9
    assert task.baseline()["balanced_accuracy"] == 0.5


# ----- balanced parentheses and palindromes ---------------------------------------------------------

def test_balanced_parentheses_depth_extrapolation() -> None:
    task = create_task("balanced_parens", n_train=200, n_valid=100, n_test=60)
    for split, (lo, hi) in {"train": (1, 5), "valid": (6, 10), "test": (6, 10)}.items():
        ex = task.examples(split)
        pos = [w for w, y in ex if y]
        neg = [w for w, y in ex if not y]
        assert abs(len(pos) - len(neg)) <= 1
        assert all(is_balanced(w) and lo <= nesting_depth(w) <= hi for w in pos)
        assert all(not is_balanced(w) and w.count("(") != w.count(")") for w in neg)
        assert all(len(w) <= 100 for w, _ in ex)
    d = task.build("test").tensors
    assert d["inputs"].max() < task.spec.vocab_size and task.spec.extra["eval_depths"] == [6, 10]


def test_palindromes() -> None:
    task = create_task("palindrome", n_train=300, n_valid=100, n_test=100)
    tr = task.examples("train")
    assert all(y == (w == w[::-1]) for w, y in tr)
    assert all(len(w) <= 16 for w, _ in tr) and all(17 <= len(w) <= 24 for w, _ in task.examples("valid"))
    near = [w for w, y in task.examples("valid") if not y and sum(a != b for a, b in zip(w, w[::-1])) == 2]
    assert near, "near-miss negatives (one broken mirrored pair) are missing"


@pytest.mark.parametrize(("name", "kwargs"), [("tomita", {"grammar": 5, "n_train": 50}),
                                              ("balanced_parens", {"n_train": 40, "n_valid": 20, "n_test": 20}),
                                              ("palindrome", {"n_train": 40, "n_valid": 20, "n_test": 20})])
def test_models_run_on_the_tasks_with_padding(name: str, kwargs: dict) -> None:
    task = create_task(name, **kwargs)
    model = seqzoo.create_model("sr_lstm_p", d_model=8, **task.spec.model_kwargs())
    batch = task.train_batch(0, 16)
    out, _ = model(batch["inputs"], mask=batch["mask"])
    assert out.shape == (16, 2)
    loss = task.loss(out, batch)
    loss.backward()
    assert torch.isfinite(loss)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="grammar must be an integer 1..7"):
        create_task("tomita", grammar=8)
    with pytest.raises(ValueError, match="max_eval_len"):
        create_task("tomita", min_eval_len=30, max_eval_len=25)
    with pytest.raises(ValueError, match="n_letters"):
        create_task("balanced_parens", n_letters=30)
    with pytest.raises(ValueError, match="lengths >= 2"):
        create_task("palindrome", max_train_len=1)


def test_dfa_lives_below_the_layers_and_is_re_exported() -> None:
    """The automaton is a leaf module the tasks import; the layers' old import path still names the same class."""
    import seqzoo.dfa
    import seqzoo.layers.automaton

    assert seqzoo.layers.automaton.DFA is seqzoo.dfa.DFA
    assert "torch" not in seqzoo.dfa.__dict__ and "seqzoo.layers" not in seqzoo.dfa.__dict__

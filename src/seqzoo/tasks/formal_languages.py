"""Formal-language recognition: Tomita grammars 1–7, balanced parentheses, palindromes (SR-RNN spec §9.3).

Every task is binary classification of a whole string (``per_sequence``, class 1 = in the language).
Strings are token ids ``[<s>, symbols...]`` right-padded with ``<pad>`` (id 0) and a ``mask``; the start
symbol makes the empty string a one-token sequence and gives extracted automata a start state.

Splits are fixed by (task, version, parameters): the validation and test sets hold strings that are NOT
in the training set (the official Tomita-5 validation file is a copy of the training file) and are longer
or deeper than the training strings by default, so they measure extrapolation. Classes are balanced where
the language allows it; where it does not (Tomita 1 and 2 have one or no positive string per length), the
split is skewed, which is why the primary metric is balanced accuracy. Each example carries a ``weight``
``N / (2·N_class)`` over its split, so ``Σ w·correct / Σ w`` summed over any batches is exactly the
split's balanced accuracy (mean of the per-class accuracies).

* ``tomita`` (grammar 1–7, alphabet {0, 1}): (1) ``1*``; (2) ``(10)*``; (3) no odd-length run of 1s is
  later followed by an odd-length run of 0s (runs are maximal; "later" as in the Weiss et al. generator);
  (4) no ``000``; (5) even number of 0s and of 1s; (6) ``(#0 − #1) ≡ 0 (mod 3)``; (7) ``0*1*0*1*``.
  Labels come from hand-built DFAs (``tomita_dfa``), cross-checked against direct rules in the tests.
  Training: every string up to ``exhaustive_len`` plus ``n_train`` class-balanced random ones up to
  ``max_train_len``; validation: lengths ``min_eval_len..max_eval_len`` (23–28); test: longer still,
  ``min_test_len..max_test_len`` (29–34), so that Tomita 1 and 2, which have at most one positive string
  per length, keep positives in the test split too. Random strings of a class and
  length are drawn uniformly among all strings of that class and length (counting on the DFA).
* ``balanced_parens`` (letters a.., ``(``, ``)``): positives from ``S → (S) | SS | letter`` with a
  chosen maximal nesting depth (train ``min_train_depth..max_train_depth``, evaluation
  ``min_eval_depth..max_eval_depth``), length ≤ ``max_len``; negatives are positives of the same depths
  with about half the characters replaced by random symbols, kept only if the counts of ``(`` and ``)``
  differ (the official construction), so they are never balanced.
* ``palindrome`` (``n_symbols`` letters): positives are palindromes; negatives are, half each, a
  palindrome with one mirrored pair broken (a near miss) and a uniformly random non-palindrome.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from seqzoo.dfa import DFA
from seqzoo.errors import ConfigError
from seqzoo.tasks.base import Batch, Task, TaskSpec, TensorDataset, check_int, derive_seed
from seqzoo.tasks.registry import register_task

PAD, START = "<pad>", "<s>"
Example = tuple[str, bool]


# ----- Tomita grammars ------------------------------------------------------------------------------

def _tomita_table(g: int) -> tuple[dict[tuple[str, str], str], str, list[str]]:
    """Transitions (dead state left implicit), start and accepting states of Tomita grammar g."""
    if g == 1:
        return {("ok", "1"): "ok"}, "ok", ["ok"]
    if g == 2:
        return {("even", "1"): "odd", ("odd", "0"): "even"}, "even", ["even"]
    if g == 3:
        # no flag yet: in 0s (A) / odd 1-run (B) / even 1-run (C); after an odd 1-run ended: odd 0-run (D),
        # even 0-run (E), in a 1-run (F). An odd 0-run that ends (a 1 follows) after the flag is fatal.
        t = {("A", "0"): "A", ("A", "1"): "B", ("B", "0"): "D", ("B", "1"): "C", ("C", "0"): "A", ("C", "1"): "B",
             ("D", "0"): "E", ("E", "0"): "D", ("E", "1"): "F", ("F", "0"): "D", ("F", "1"): "F"}
        return t, "A", ["A", "B", "C", "E", "F"]
    if g == 4:
        t = {("z0", "1"): "z0", ("z0", "0"): "z1", ("z1", "1"): "z0", ("z1", "0"): "z2", ("z2", "1"): "z0"}
        return t, "z0", ["z0", "z1", "z2"]
    if g == 5:
        t = {}
        for a in (0, 1):
            for b in (0, 1):
                t[(f"{a}{b}", "0")] = f"{1 - a}{b}"
                t[(f"{a}{b}", "1")] = f"{a}{1 - b}"
        return t, "00", ["00"]
    if g == 6:
        t = {(f"m{r}", "0"): f"m{(r + 1) % 3}" for r in range(3)}
        t.update({(f"m{r}", "1"): f"m{(r - 1) % 3}" for r in range(3)})
        return t, "m0", ["m0"]
    if g == 7:
        t = {("a", "0"): "a", ("a", "1"): "b", ("b", "1"): "b", ("b", "0"): "c", ("c", "0"): "c", ("c", "1"): "d",
             ("d", "1"): "d"}
        return t, "a", ["a", "b", "c", "d"]
    raise ConfigError(f"tomita: grammar must be an integer 1..7, got {g!r}")


def tomita_dfa(grammar: int) -> DFA:
    """The minimal complete DFA of Tomita grammar ``grammar`` (1..7) over {"0", "1"}."""
    if isinstance(grammar, bool) or not isinstance(grammar, int):
        raise ConfigError(f"tomita: grammar must be an integer 1..7, got {grammar!r}")
    t, start, acc = _tomita_table(grammar)
    return DFA.from_transitions(("0", "1"), t, start, acc).minimize()


def tomita_rule(grammar: int, word: str) -> bool:
    """Membership by the grammar's definition (independent of the DFAs; used to check them)."""
    if grammar == 1:
        return "0" not in word
    if grammar == 2:
        return len(word) % 2 == 0 and word == "10" * (len(word) // 2)
    if grammar == 3:
        runs: list[tuple[str, int]] = []
        for ch in word:
            if runs and runs[-1][0] == ch:
                runs[-1] = (ch, runs[-1][1] + 1)
            else:
                runs.append((ch, 1))
        seen_odd_ones = False
        for ch, n in runs:
            if ch == "0" and n % 2 == 1 and seen_odd_ones:
                return False
            if ch == "1" and n % 2 == 1:
                seen_odd_ones = True
        return True
    if grammar == 4:
        return "000" not in word
    if grammar == 5:
        return word.count("0") % 2 == 0 and word.count("1") % 2 == 0
    if grammar == 6:
        return (word.count("0") - word.count("1")) % 3 == 0
    if grammar == 7:
        return word.count("10") <= 1
    raise ConfigError(f"tomita: grammar must be an integer 1..7, got {grammar!r}")


def _spread(total: int, capacity: dict[int, int]) -> dict[int, int]:
    """Split ``total`` over lengths as evenly as their capacities allow (water filling)."""
    take = dict.fromkeys(capacity, 0)
    left = total
    keys = sorted(capacity, key=lambda k: (capacity[k], k))
    for i, k in enumerate(keys):
        share = left // (len(keys) - i) + (1 if left % (len(keys) - i) else 0)
        take[k] = min(capacity[k], share)
        left -= take[k]
    return take


def sample_by_class(dfa: DFA, lengths: Sequence[int], n: int, rng: random.Random, exclude: set[str]) -> list[Example]:
    """About ``n/2`` unique words per class over ``lengths`` (a short class's deficit goes to the other)."""
    capacity = {c: {L: dfa.count(L, c) for L in lengths} for c in (True, False)}
    totals = {c: sum(capacity[c].values()) for c in (True, False)}
    want = {True: n // 2, False: n - n // 2}
    for c in (True, False):
        short = want[c] - totals[c]
        if short > 0:
            want[c] = totals[c]
            want[not c] += short
    out: list[Example] = []
    for c in (True, False):
        for L, k in _spread(want[c], capacity[c]).items():
            if k == 0:
                continue
            if k >= capacity[c][L]:
                words = [w for w in dfa.words(L, c) if w not in exclude]
            else:
                chosen: set[str] = set()
                for _ in range(50 * k + 100):
                    w = dfa.sample(L, rng, c)
                    if w not in exclude:
                        chosen.add(w)  # type: ignore[arg-type]
                        if len(chosen) == k:
                            break
                words = sorted(chosen)
            out.extend((w, c) for w in words)  # type: ignore[misc]
    return out


def fill_classes(n: int, draw: Callable[[bool], str], exclude: set[str], attempts: int = 50) -> list[Example]:
    """About ``n/2`` new unique words per class from ``draw(positive)``; a class that runs out leaves its
    share to the other one (bounded number of draws)."""
    seen = set(exclude)
    got: dict[bool, list[str]] = {True: [], False: []}
    for c in (True, False):
        want = n // 2 if c else n - len(got[True])
        for _ in range(attempts * want + 100):
            if len(got[c]) >= want:
                break
            w = draw(c)
            if w not in seen:
                seen.add(w)
                got[c].append(w)
    return [(w, True) for w in got[True]] + [(w, False) for w in got[False]]


# ----- shared machinery ---------------------------------------------------------------------------

class FormalLanguageTask(Task):
    """Base of the string-classification tasks: vocabulary, encoding, fixed splits, balanced accuracy."""

    fresh_train_data = False
    non_data_params: tuple[str, ...] = ()
    alphabet: tuple[str, ...] = ()

    def _set_spec(self, max_len: int, extra: dict[str, Any]) -> None:
        self.vocab: tuple[str, ...] = (PAD, START, *self.alphabet)
        self.start_symbol = START
        self._ids = {s: i for i, s in enumerate(self.vocab)}
        self._splits: dict[str, list[Example]] | None = None
        self.spec = TaskSpec(input_kind="tokens", vocab_size=len(self.vocab), output_kind="per_sequence", d_output=2,
                             loss="cross_entropy", metrics=("balanced_accuracy", "accuracy"),
                             primary_metric="balanced_accuracy", higher_is_better=True, seq_len=max_len + 1,
                             extra={"vocab": list(self.vocab), "alphabet": list(self.alphabet),
                                    "start_symbol": START, "pad_id": 0, **extra})

    # subclasses: membership and the examples of each split
    def label(self, word: str) -> bool:  # pragma: no cover
        raise NotImplementedError

    def generate(self, split: str, rng: random.Random, exclude: set[str]) -> list[Example]:  # pragma: no cover
        raise NotImplementedError

    def examples(self, split: str) -> list[Example]:
        """The ``(word, label)`` pairs of a split; no word of valid/test occurs in an earlier split."""
        if split not in ("train", "valid", "test"):
            raise ConfigError(f"split must be one of ('train', 'valid', 'test'), got {split!r}")
        if self._splits is None:
            splits: dict[str, list[Example]] = {}
            seen: set[str] = set()
            for name in ("train", "valid", "test"):
                rng = random.Random(derive_seed(self.name, self.version, self.data_params(), name))
                ex = self.generate(name, rng, set(seen))
                unique: dict[str, bool] = {}
                for w, y in ex:
                    if w not in seen and w not in unique:
                        unique[w] = y
                ex = list(unique.items())
                rng.shuffle(ex)
                seen.update(unique)
                splits[name] = ex
            self._splits = splits
        return self._splits[split]

    def encode(self, words: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``(inputs (N, L) int64, mask (N, L) bool)`` with the start symbol in front and right padding."""
        L = 1 + max((len(w) for w in words), default=0)
        inputs = torch.zeros(len(words), L, dtype=torch.long)
        mask = torch.zeros(len(words), L, dtype=torch.bool)
        for i, w in enumerate(words):
            ids = [self._ids[START]]
            for ch in w:
                if ch not in self._ids or ch in (PAD, START):
                    raise ValueError(f"{self.name}: symbol {ch!r} of {w!r} is not in the alphabet {self.alphabet}")
                ids.append(self._ids[ch])
            inputs[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = True
        return inputs, mask

    def decode(self, inputs: Tensor, mask: Tensor | None = None) -> list[str]:
        """Token ids back to words (start symbol and padding removed)."""
        lengths = mask.long().sum(1).tolist() if mask is not None else [inputs.shape[1]] * inputs.shape[0]
        return ["".join(self.vocab[t] for t in row[1:n]) for row, n in zip(inputs.tolist(), lengths)]

    def dataset(self, split: str) -> TensorDataset:
        ex = self.examples(split)
        if not ex:
            raise ValueError(f"{self.name}: split {split!r} is empty with parameters {self.params}")
        words = [w for w, _ in ex]
        inputs, mask = self.encode(words)
        targets = torch.tensor([int(y) for _, y in ex], dtype=torch.long)
        counts = torch.bincount(targets, minlength=2).double()
        weight = (len(ex) / (2.0 * counts.clamp(min=1.0)))[targets]  # float64: exact sums over batches
        return TensorDataset({"inputs": inputs, "mask": mask, "targets": targets, "weight": weight})

    def custom_metric(self, name: str, outputs: Tensor, batch: Batch) -> Tensor | tuple[float, float]:
        if name == "balanced_accuracy":
            targets = batch["targets"]
            correct = (outputs.argmax(-1) == targets).double()
            w = batch.get("weight")
            if w is None:  # a batch from elsewhere: weights from its own class counts
                counts = torch.bincount(targets, minlength=2).double()
                w = (len(targets) / (2.0 * counts.clamp(min=1.0)))[targets]
            w = w.double()
            return float((w * correct).sum()), float(w.sum())
        return super().custom_metric(name, outputs, batch)

    def baseline(self) -> dict[str, float]:
        """Always answering the training set's majority class, measured on the test split."""
        train = torch.tensor([int(y) for _, y in self.examples("train")])
        test = torch.tensor([int(y) for _, y in self.examples("test")])
        majority = int(torch.bincount(train, minlength=2).argmax())
        return {"accuracy": float((test == majority).double().mean()), "balanced_accuracy": 0.5}

    def class_counts(self) -> dict[str, dict[str, int]]:
        return {s: {"positive": sum(y for _, y in self.examples(s)), "total": len(self.examples(s))}
                for s in ("train", "valid", "test")}


def _check_range(task: str, lo_name: str, lo: int, hi_name: str, hi: int, minimum: int) -> None:
    check_int(task, lo_name, lo, minimum)
    check_int(task, hi_name, hi, minimum)
    if hi < lo:
        raise ConfigError(f"{task}: {hi_name} ({hi}) must be >= {lo_name} ({lo})")


# ----- tasks ---------------------------------------------------------------------------------------

@register_task
class TomitaTask(FormalLanguageTask):
    """Tomita grammar 1–7 membership, trained on short strings and evaluated on longer ones."""

    name = "tomita"
    paper = "Tomita 1982; Wang & Niepert 2019 (SR-RNN)"
    version = 1
    alphabet = ("0", "1")

    def __init__(self, grammar: int = 4, exhaustive_len: int = 7, max_train_len: int = 22, n_train: int = 2000,
                 min_eval_len: int = 23, max_eval_len: int = 28, min_test_len: int = 29, max_test_len: int = 34,
                 n_valid: int = 500, n_test: int = 500) -> None:
        if isinstance(grammar, bool) or grammar not in range(1, 8):
            raise ConfigError(f"tomita: grammar must be an integer 1..7, got {grammar!r}")
        check_int("tomita", "exhaustive_len", exhaustive_len, 0)
        if exhaustive_len > 14:
            raise ConfigError(f"tomita: exhaustive_len must be <= 14 (2^15 strings), got {exhaustive_len}")
        check_int("tomita", "max_train_len", max_train_len, exhaustive_len)
        check_int("tomita", "n_train", n_train, 0)
        _check_range("tomita", "min_eval_len", min_eval_len, "max_eval_len", max_eval_len, 0)
        _check_range("tomita", "min_test_len", min_test_len, "max_test_len", max_test_len, 0)
        check_int("tomita", "n_valid", n_valid, 1)
        check_int("tomita", "n_test", n_test, 1)
        super().__init__(grammar=grammar, exhaustive_len=exhaustive_len, max_train_len=max_train_len, n_train=n_train,
                         min_eval_len=min_eval_len, max_eval_len=max_eval_len, min_test_len=min_test_len,
                         max_test_len=max_test_len, n_valid=n_valid, n_test=n_test)
        self.grammar = grammar
        self.dfa = tomita_dfa(grammar)
        self._set_spec(max(max_train_len, max_eval_len, max_test_len),
                       {"grammar": grammar, "minimal_states": self.dfa.n_states})

    def label(self, word: str) -> bool:
        return self.dfa.accepts(word)

    def generate(self, split: str, rng: random.Random, exclude: set[str]) -> list[Example]:
        p = self.params
        if split == "train":
            out = [(w, True) for L in range(p["exhaustive_len"] + 1) for w in self.dfa.words(L, True)]
            out += [(w, False) for L in range(p["exhaustive_len"] + 1) for w in self.dfa.words(L, False)]
            lengths = list(range(p["exhaustive_len"] + 1, p["max_train_len"] + 1))
            if lengths and p["n_train"]:
                out += sample_by_class(self.dfa, lengths, p["n_train"], rng, {w for w, _ in out})
            return out  # type: ignore[return-value]
        lo, hi = (p["min_eval_len"], p["max_eval_len"]) if split == "valid" else (p["min_test_len"], p["max_test_len"])
        return sample_by_class(self.dfa, list(range(lo, hi + 1)), p[f"n_{split}"], rng, exclude)


def is_balanced(word: str) -> bool:
    depth = 0
    for ch in word:
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            return False
    return depth == 0


def nesting_depth(word: str) -> int:
    depth = best = 0
    for ch in word:
        depth += (ch == "(") - (ch == ")")
        best = max(best, depth)
    return best


@register_task
class BalancedParenthesesTask(FormalLanguageTask):
    """Is the string balanced? Trained on nesting depths 1–5, evaluated on deeper strings (6–10)."""

    name = "balanced_parens"
    paper = "Wang & Niepert 2019 (SR-RNN)"
    version = 1

    def __init__(self, min_train_depth: int = 1, max_train_depth: int = 5, min_eval_depth: int = 6,
                 max_eval_depth: int = 10, max_len: int = 100, n_letters: int = 26, n_train: int = 1000,
                 n_valid: int = 250, n_test: int = 250) -> None:
        _check_range("balanced_parens", "min_train_depth", min_train_depth, "max_train_depth", max_train_depth, 1)
        _check_range("balanced_parens", "min_eval_depth", min_eval_depth, "max_eval_depth", max_eval_depth, 1)
        check_int("balanced_parens", "n_letters", n_letters, 1)
        if n_letters > 26:
            raise ConfigError(f"balanced_parens: n_letters must be <= 26 (a-z), got {n_letters}")
        check_int("balanced_parens", "max_len", max_len, 2 * max(max_train_depth, max_eval_depth) + 1)
        check_int("balanced_parens", "n_train", n_train, 1)
        check_int("balanced_parens", "n_valid", n_valid, 1)
        check_int("balanced_parens", "n_test", n_test, 1)
        super().__init__(min_train_depth=min_train_depth, max_train_depth=max_train_depth,
                         min_eval_depth=min_eval_depth, max_eval_depth=max_eval_depth, max_len=max_len,
                         n_letters=n_letters, n_train=n_train, n_valid=n_valid, n_test=n_test)
        self.letters = tuple("abcdefghijklmnopqrstuvwxyz"[:n_letters])
        self.alphabet = (*self.letters, "(", ")")
        self.max_len = max_len
        self._set_spec(max_len, {"train_depths": [min_train_depth, max_train_depth],
                                 "eval_depths": [min_eval_depth, max_eval_depth]})

    def label(self, word: str) -> bool:
        return is_balanced(word)

    def _items(self, rng: random.Random, max_depth: int) -> str:
        """One to three items, each a letter or (if depth allows) a parenthesized group, nesting <= max_depth."""
        parts = []
        for _ in range(1 + (rng.random() < 0.4) + (rng.random() < 0.2)):
            if max_depth > 0 and rng.random() < 0.3:
                parts.append("(" + self._items(rng, max_depth - 1) + ")")
            else:
                parts.append(rng.choice(self.letters))
        return "".join(parts)

    def positive(self, depth: int, rng: random.Random) -> str:
        """A balanced string with nesting depth exactly ``depth`` and length <= max_len."""
        for _ in range(1000):
            core = "".join(rng.choice(self.letters) for _ in range(rng.randint(1, 2)))
            for level in range(1, depth + 1):
                left = self._items(rng, level - 1) if rng.random() < 0.3 else ""
                right = self._items(rng, level - 1) if rng.random() < 0.3 else ""
                core = "(" + left + core + right + ")"
            word = (self._items(rng, depth) if rng.random() < 0.5 else "") + core + (
                self._items(rng, depth) if rng.random() < 0.5 else "")
            if len(word) <= self.max_len:
                return word
        raise ConfigError(f"balanced_parens: could not draw a depth-{depth} string of length <= {self.max_len}")

    def negative(self, depth: int, rng: random.Random) -> str:
        """A depth-``depth`` positive with each character replaced w.p. 1/2, kept once ( and ) counts differ."""
        symbols = self.alphabet
        while True:
            word = "".join(rng.choice(symbols) if rng.random() < 0.5 else ch for ch in self.positive(depth, rng))
            if word.count("(") != word.count(")"):
                return word

    def generate(self, split: str, rng: random.Random, exclude: set[str]) -> list[Example]:
        p = self.params
        lo, hi = ((p["min_train_depth"], p["max_train_depth"]) if split == "train"
                  else (p["min_eval_depth"], p["max_eval_depth"]))
        def draw(positive: bool) -> str:
            depth = rng.randint(lo, hi)
            return self.positive(depth, rng) if positive else self.negative(depth, rng)

        return fill_classes(p[f"n_{split}"], draw, exclude)


@register_task
class PalindromeTask(FormalLanguageTask):
    """Is the string a palindrome? Trained on short strings, evaluated on longer ones."""

    name = "palindrome"
    paper = "Wang & Niepert 2019 (SR-RNN)"
    version = 1

    def __init__(self, n_symbols: int = 2, min_train_len: int = 1, max_train_len: int = 16, min_eval_len: int = 17,
                 max_eval_len: int = 24, n_train: int = 1000, n_valid: int = 500, n_test: int = 500) -> None:
        check_int("palindrome", "n_symbols", n_symbols, 2)
        if n_symbols > 26:
            raise ConfigError(f"palindrome: n_symbols must be <= 26, got {n_symbols}")
        _check_range("palindrome", "min_train_len", min_train_len, "max_train_len", max_train_len, 0)
        _check_range("palindrome", "min_eval_len", min_eval_len, "max_eval_len", max_eval_len, 0)
        if max_train_len < 2 or max_eval_len < 2:
            raise ConfigError("palindrome: every split needs lengths >= 2 (shorter strings are all palindromes), got "
                             f"max_train_len={max_train_len}, max_eval_len={max_eval_len}")
        check_int("palindrome", "n_train", n_train, 1)
        check_int("palindrome", "n_valid", n_valid, 1)
        check_int("palindrome", "n_test", n_test, 1)
        super().__init__(n_symbols=n_symbols, min_train_len=min_train_len, max_train_len=max_train_len,
                         min_eval_len=min_eval_len, max_eval_len=max_eval_len, n_train=n_train, n_valid=n_valid,
                         n_test=n_test)
        self.alphabet = tuple("abcdefghijklmnopqrstuvwxyz"[:n_symbols])
        self._set_spec(max(max_train_len, max_eval_len), {})

    def label(self, word: str) -> bool:
        return word == word[::-1]

    def positive(self, length: int, rng: random.Random) -> str:
        half = "".join(rng.choice(self.alphabet) for _ in range(length // 2))
        middle = rng.choice(self.alphabet) if length % 2 else ""
        return half + middle + half[::-1]

    def negative(self, length: int, rng: random.Random) -> str:
        if rng.random() < 0.5:  # near miss: break one mirrored pair
            w = list(self.positive(length, rng))
            i = rng.randrange(length // 2)
            w[i] = rng.choice([a for a in self.alphabet if a != w[i]])
            return "".join(w)
        while True:
            w = "".join(rng.choice(self.alphabet) for _ in range(length))
            if w != w[::-1]:
                return w

    def generate(self, split: str, rng: random.Random, exclude: set[str]) -> list[Example]:
        p = self.params
        lo, hi = ((p["min_train_len"], p["max_train_len"]) if split == "train"
                  else (p["min_eval_len"], p["max_eval_len"]))
        def draw(positive: bool) -> str:
            if positive:
                return self.positive(rng.randint(lo, hi), rng)
            return self.negative(rng.randint(max(lo, 2), hi), rng)

        return fill_classes(p[f"n_{split}"], draw, exclude)

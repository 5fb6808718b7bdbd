"""The five context-free language tasks of the NS-RNN / RNS-RNN papers (DuSell & Chiang 2020, 2022; spec §1.5-1.6).

Each task is a PCFG (probabilities of the papers' experiment scripts) sampled *conditioned on length*: a length L
is drawn uniformly from the valid lengths of a range (those the grammar can produce), then the string is expanded
top-down choosing each rule and each split of the remaining length among a rule's symbols in proportion to the
rule probability times the inside probabilities ``I[X, l]`` (total probability that X yields exactly l symbols).
The task is next-symbol prediction: the input is ``[BOS, w_1 .. w_L]``, the target ``[w_1 .. w_L, EOS]``, so the
first symbol and the end of the string are scored too (``L + 1`` scored steps). Strings of one training batch share
one length (as in the papers); evaluation sets hold independent lengths, sorted by length and right-padded
(``mask`` / ``loss_mask`` False on padding; each batch is trimmed to its longest string).

Lower bound (spec §1.6). With lengths uniform over the ``N`` valid lengths of a split's range, a string has
probability ``p(w) = p_G(w) / (N * I[S, L])``, where ``p_G`` sums over all parses (an inside pass over the string).
No model can beat ``sum_w -log p(w) / sum_w (|w| + 1)`` nats per symbol in expectation. Every evaluation example
carries its own ``-log p(w)`` (``bound_nll``), and the metric ``ce_minus_bound`` is
``(sum_w model NLL(w) - sum_w -log p(w)) / sum_w (|w| + 1)``: the cross-entropy difference the papers report, exact
over any number of batches. ``baseline()`` gives the bound: the exact expectation for the three unambiguous
grammars (from an inside/entropy dynamic program; marked reversal 0.3843, unmarked 0.3908, Dyck 0.6885 nats/symbol
at lengths 40-80) and, for every task, the bound of the generated validation set. The per-length test curves of the
papers' code drop the ``log N`` length term; here the test set holds the same number of strings per valid length of
its range, so its length distribution is uniform and the term stays in.

The grammar machinery (``PCFG``, general) is in ``seqzoo.tasks.pcfg``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from seqzoo.errors import ConfigError
from seqzoo.tasks.base import Batch, Task, TaskSpec, TensorDataset, check_int, derive_seed, generator
from seqzoo.tasks.pcfg import PCFG, Rule, cont
from seqzoo.tasks.registry import register_task

# ----- the five grammars ---------------------------------------------------------------------------

def marked_reversal_grammar() -> PCFG:
    """``w # w^R`` over {0, 1}: ``S -> a S a`` (p/2 each), ``S -> #`` (1 - p), p = cont(60)."""
    p = cont(60)
    rules = [Rule("S", ("0", "S", "0"), p / 2), Rule("S", ("1", "S", "1"), p / 2), Rule("S", ("#",), 1 - p)]
    return PCFG("S", rules, ("0", "1", "#"), unambiguous=True)


def unmarked_reversal_grammar() -> PCFG:
    """``w w^R`` over {0, 1}: ``S -> a S a`` (p/2 each), ``S -> eps`` (1 - p), p = cont(60)."""
    p = cont(60)
    rules = [Rule("S", ("0", "S", "0"), p / 2), Rule("S", ("1", "S", "1"), p / 2), Rule("S", (), 1 - p)]
    return PCFG("S", rules, ("0", "1"), unambiguous=True)


def padded_reversal_grammar() -> PCFG:
    """``w a^k w^R``: ``S -> a S a`` (p/2 each), ``S -> T_a`` ((1-p)/2 each), ``T_a -> a T_a`` (g) | eps (1-g)."""
    p, g = cont(60), cont(30)
    rules = [Rule("S", ("0", "S", "0"), p / 2), Rule("S", ("1", "S", "1"), p / 2),
             Rule("S", ("T0",), (1 - p) / 2), Rule("S", ("T1",), (1 - p) / 2),
             Rule("T0", ("0", "T0"), g), Rule("T0", (), 1 - g), Rule("T1", ("1", "T1"), g), Rule("T1", (), 1 - g)]
    return PCFG("S", rules, ("0", "1"))


def dyck_grammar() -> PCFG:
    """Dyck language with two bracket types: ``S -> S T`` (s) | T; ``T -> ( S ) | [ S ]`` (t/2 each) | ``( ) | [ ]``."""
    s, t = cont(1), cont(40 - 1)
    rules = [Rule("S", ("S", "T"), s), Rule("S", ("T",), 1 - s),
             Rule("T", ("(", "S", ")"), t / 2), Rule("T", ("[", "S", "]"), t / 2),
             Rule("T", ("(", ")"), (1 - t) / 2), Rule("T", ("[", "]"), (1 - t) / 2)]
    return PCFG("S", rules, ("(", ")", "[", "]"), unambiguous=True)


def hardest_cfl_grammar() -> PCFG:
    """Greibach's hardest context-free language with the scripts' parameters (spec §1.5)."""
    c, u, v, q, s, t = cont(0.5), cont(0.5), cont(2 - 1), 0.25, cont(1.5), cont(3)
    rules = [Rule("S'", ("R", "$", "Q", "S", "L", ";"), 1.0),
             Rule("L", ("L'", ",", "U"), 1.0),
             Rule("L'", (",", "V", "L'"), c), Rule("L'", (), 1 - c),
             Rule("R", ("U", ",", "R'"), 1.0),
             Rule("R'", ("R'", "V", ","), c), Rule("R'", (), 1 - c),
             Rule("U", ("W", "U"), u), Rule("U", (), 1 - u),
             Rule("V", ("W", "V"), v), Rule("V", ("W",), 1 - v),
             *[Rule("W", (a,), 1 / 5) for a in ("(", ")", "[", "]", "$")],
             Rule("Q", ("L", ";", "R"), q), Rule("Q", (), 1 - q),
             Rule("S", ("S", "Q", "T"), s), Rule("S", ("T",), 1 - s),
             Rule("T", ("(", "Q", "S", "Q", ")"), t / 2), Rule("T", ("(", "Q", ")"), (1 - t) / 2),
             Rule("T", ("[", "Q", "S", "Q", "]"), t / 2), Rule("T", ("[", "Q", "]"), (1 - t) / 2)]
    return PCFG("S'", rules, ("(", ")", "[", "]", ",", ";", "$"))


# ----- padded evaluation data --------------------------------------------------------------------

class PaddedTokenDataset(TensorDataset):
    """A ``TensorDataset`` whose batches are cut to their longest string (``mask`` True on real steps)."""

    def batch(self, index: Tensor | slice) -> Batch:
        out = super().batch(index)
        width = int(out["mask"].sum(1).max()) if out["mask"].numel() else 0
        return {k: (v[:, :width] if v.dim() == 2 and k in _STEP_KEYS else v) for k, v in out.items()}


_STEP_KEYS = ("inputs", "targets", "mask", "loss_mask")


class CFLTask(Task):
    """Next-symbol prediction on strings of a PCFG, sampled conditioned on length (base class of the five)."""

    version = 1
    paper = "DuSell & Chiang 2020, 2022 (NS-RNN, RNS-RNN)"
    non_data_params = ("n_valid", "n_test_per_length")
    grammar_builder = staticmethod(marked_reversal_grammar)

    def __init__(self, min_length: int = 40, max_length: int = 80, test_min_length: int = 40,
                 test_max_length: int = 100, n_valid: int = 1000, n_test_per_length: int = 100) -> None:
        for name, value, low in (("min_length", min_length, 0), ("max_length", max_length, 0),
                                 ("test_min_length", test_min_length, 0), ("test_max_length", test_max_length, 0),
                                 ("n_valid", n_valid, 1), ("n_test_per_length", n_test_per_length, 1)):
            check_int(self.name, name, value, low)
        if min_length > max_length or test_min_length > test_max_length:
            raise ConfigError(f"{self.name}: need min_length <= max_length and test_min_length <= test_max_length, "
                             f"got {min_length}..{max_length} and {test_min_length}..{test_max_length}")
        super().__init__(min_length=min_length, max_length=max_length, test_min_length=test_min_length,
                         test_max_length=test_max_length, n_valid=n_valid, n_test_per_length=n_test_per_length)
        self.grammar = self.grammar_builder()
        self.ranges = {"train": (min_length, max_length), "valid": (min_length, max_length),
                       "test": (test_min_length, test_max_length)}
        for split, (lo, hi) in self.ranges.items():
            if not self.grammar.valid_lengths(lo, hi):
                raise ConfigError(f"{self.name}: the grammar produces no string with length in [{lo}, {hi}] "
                                 f"({split} range)")
        self.n_valid, self.n_test_per_length = n_valid, n_test_per_length
        n_sym = len(self.grammar.terminals)
        self.bos = self.eos = n_sym  # input token BOS and output class EOS share the id after the terminals
        self.spec = TaskSpec(input_kind="tokens", vocab_size=n_sym + 1, output_kind="per_step", d_output=n_sym + 1,
                             loss="cross_entropy", metrics=("cross_entropy", "ce_minus_bound", "accuracy"),
                             primary_metric="ce_minus_bound", seq_len=max(max_length, test_max_length) + 1,
                             extra={"terminals": list(self.grammar.terminals), "bos": self.bos, "eos": self.eos,
                                    "lengths": {k: list(v) for k, v in self.ranges.items()}})

    # ----- data -------------------------------------------------------------------------------
    def valid_lengths(self, split: str) -> list[int]:
        lo, hi = self.ranges[split]
        return self.grammar.valid_lengths(lo, hi)

    def _encode(self, strings: list[list[int]], split: str, with_bound: bool = True) -> Batch:
        n, width = len(strings), max(len(s) for s in strings) + 1
        inputs = torch.full((n, width), self.bos, dtype=torch.long)
        targets = torch.zeros(n, width, dtype=torch.long)
        lengths = torch.tensor([len(s) for s in strings], dtype=torch.long)
        for i, s in enumerate(strings):
            if s:
                w = torch.tensor(s, dtype=torch.long)
                inputs[i, 1:len(s) + 1] = w
                targets[i, :len(s)] = w
            targets[i, len(s)] = self.eos
        mask = torch.arange(width).unsqueeze(0) <= lengths.unsqueeze(1)
        batch = {"inputs": inputs, "targets": targets, "mask": mask, "loss_mask": mask.clone(), "lengths": lengths}
        if with_bound:
            batch["bound_nll"] = self.string_bound_nll(strings, split)
        return batch

    def string_bound_nll(self, strings: list[list[int]], split: str) -> Tensor:
        """``-log p(w)`` of each string under the data distribution of ``split`` (length uniform over its range)."""
        log_n = math.log(len(self.valid_lengths(split)))
        out = torch.empty(len(strings), dtype=torch.float64)
        by_len: dict[int, list[int]] = {}
        for i, s in enumerate(strings):
            by_len.setdefault(len(s), []).append(i)
        table = self.grammar.inside(max(by_len))
        for n, idx in by_len.items():
            arr = np.array([strings[i] for i in idx], dtype=np.int64).reshape(len(idx), n)
            lp = self.grammar.log_prob(arr)
            if not np.all(np.isfinite(lp)):
                raise ValueError(f"{self.name}: a string of length {n} is not in the language")
            out[idx] = torch.from_numpy(-lp + math.log(table[self.grammar.start, n]) + log_n)
        return out

    def _rng(self, g: torch.Generator) -> np.random.Generator:
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=g)))

    def sample_strings(self, lengths: Sequence[int], rng: np.random.Generator) -> list[list[int]]:
        return [self.grammar.sample(n, rng) for n in lengths]

    def sample(self, n: int, g: torch.Generator, split: str = "valid") -> Batch:
        """``n`` strings with independent lengths, uniform over the valid lengths of ``split``, sorted by length."""
        rng = self._rng(g)
        valid = self.valid_lengths(split)
        lengths = sorted(valid[i] for i in rng.integers(0, len(valid), size=n))
        return self._encode(self.sample_strings(lengths, rng), split)

    def build(self, split: str, seed: int = 0) -> TensorDataset:
        if split not in self.ranges:
            raise ConfigError(f"split must be one of {tuple(self.ranges)}, got {split!r}")
        key = (split, seed)
        if key not in self._cache:
            g = generator(self.name, self.version, self.data_params(), split, seed)
            if split == "test":
                rng = self._rng(g)
                lengths = [n for n in self.valid_lengths("test") for _ in range(self.n_test_per_length)]
                batch = self._encode(self.sample_strings(lengths, rng), "test")
            else:
                batch = self.sample(self.n_valid, g, split)
            self._cache[key] = PaddedTokenDataset(batch)
        return self._cache[key]

    def train_batch(self, step: int, batch_size: int, seed: int = 0) -> Batch:
        """Fresh strings of one shared length (uniform over the valid training lengths), as in the papers."""
        rng = np.random.default_rng(derive_seed(self.name, self.version, self.data_params(), "train", seed, step))
        valid = self.valid_lengths("train")
        n = valid[int(rng.integers(0, len(valid)))]
        return self._encode(self.sample_strings([n] * batch_size, rng), "train", with_bound=False)

    # ----- metrics and bound ------------------------------------------------------------------
    def custom_metric(self, name: str, outputs: Tensor, batch: Batch) -> Tensor | tuple[float, float]:
        if name != "ce_minus_bound":
            return super().custom_metric(name, outputs, batch)
        mask = batch["loss_mask"]
        nll = self._pointwise("cross_entropy", outputs, batch["targets"]).double() * mask.double()
        bound = batch.get("bound_nll")
        if bound is None:  # e.g. a training batch: parse its strings now
            strings = [row[1:int(n) + 1].tolist() for row, n in zip(batch["inputs"], batch["lengths"])]
            bound = self.string_bound_nll(strings, "train")
        return float(nll.sum() - bound.double().sum()), float(mask.sum())

    def lower_bound(self, split: str = "valid", seed: int = 0) -> float:
        """The bound of a generated set: ``sum_w -log p(w) / sum_w (|w| + 1)`` nats per symbol."""
        t = self.build(split, seed).tensors
        return float(t["bound_nll"].sum() / (t["lengths"] + 1).sum())

    def expected_lower_bound(self, split: str = "valid") -> float | None:
        """The exact expected bound over the split's length range (unambiguous grammars only, else None)."""
        if not self.grammar.unambiguous:
            return None
        lengths = self.valid_lengths(split)
        log_n = math.log(len(lengths))
        total = sum(self.grammar.expected_neg_log_prob(n) + log_n for n in lengths)
        return total / sum(n + 1 for n in lengths)

    def baseline(self) -> dict[str, float]:
        """Lower bound on cross-entropy (nats/symbol): exact expectation where computable, and on the valid set."""
        data_bound = self.lower_bound("valid")
        exact = self.expected_lower_bound("valid")
        return {"cross_entropy": data_bound, "ce_minus_bound": 0.0,
                "expected_cross_entropy": exact if exact is not None else data_bound}


@register_task
class MarkedReversalTask(CFLTask):
    """Marked reversal ``w # w^R`` over {0, 1} (a deterministic CFL)."""

    name = "cfl-marked-reversal"
    grammar_builder = staticmethod(marked_reversal_grammar)


@register_task
class UnmarkedReversalTask(CFLTask):
    """Unmarked reversal ``w w^R`` over {0, 1} (nondeterministic: the middle is not marked)."""

    name = "cfl-unmarked-reversal"
    grammar_builder = staticmethod(unmarked_reversal_grammar)


@register_task
class PaddedReversalTask(CFLTask):
    """Padded reversal ``w a^k w^R`` over {0, 1} (ambiguous, nondeterministic)."""

    name = "cfl-padded-reversal"
    grammar_builder = staticmethod(padded_reversal_grammar)


@register_task
class DyckTask(CFLTask):
    """Dyck language with two bracket types."""

    name = "cfl-dyck"
    grammar_builder = staticmethod(dyck_grammar)


@register_task
class HardestCFLTask(CFLTask):
    """Greibach's hardest context-free language (ambiguous)."""

    name = "cfl-hardest"
    grammar_builder = staticmethod(hardest_cfl_grammar)

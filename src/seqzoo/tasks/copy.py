"""Copying problem (Hochreiter & Schmidhuber 1997; ATN spec §1.2).

``K`` symbols drawn uniformly from ``{1..n_symbols}``, then ``T`` blanks (0), then the marker
``n_symbols + 1``, then ``K - 1`` blanks: length ``T + 2K``. The target is 0 (blank) for the
first ``T + K`` steps and then the ``K`` symbols in order, so the first symbol is due at the
marker step itself. Inputs are one-hot over ``n_symbols + 2`` values; outputs score the
``n_symbols + 1`` classes ``0..n_symbols``; the loss is cross-entropy averaged over all steps.

A memoryless predictor gets the blanks right and guesses uniformly at the recall steps:
cross-entropy ``K·ln(n_symbols)/(T + 2K)`` (0.1733 for the default T=100, K=10, 8 symbols) and
recall accuracy ``1/n_symbols``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from seqzoo.tasks.base import Batch, Task, TaskSpec, check_int
from seqzoo.tasks.registry import register_task


def recall_accuracy_sums(outputs: Tensor, targets: Tensor, n_recall: int) -> tuple[float, float]:
    """``(correct, count)`` of the argmax prediction over the last ``n_recall`` steps of each sequence."""
    pred = outputs[:, -n_recall:].argmax(-1)
    correct = (pred == targets[:, -n_recall:]).double()
    return float(correct.sum()), float(correct.numel())


@register_task
class CopyTask(Task):
    """Copying problem: reproduce K symbols after a delay of T blanks, when a marker asks for them."""

    name = "copy"
    paper = "Hochreiter & Schmidhuber 1997"
    version = 1

    def __init__(self, seq_len: int = 100, n_symbols: int = 8, n_copy: int = 10, n_valid: int = 1000,
                 n_test: int = 1000) -> None:
        check_int("copy", "seq_len (number of blanks T)", seq_len, 0)
        check_int("copy", "n_symbols", n_symbols, 1)
        check_int("copy", "n_copy", n_copy, 1)
        check_int("copy", "n_valid", n_valid, 1)
        check_int("copy", "n_test", n_test, 1)
        super().__init__(seq_len=seq_len, n_symbols=n_symbols, n_copy=n_copy, n_valid=n_valid, n_test=n_test)
        self.seq_len, self.n_symbols, self.n_copy = seq_len, n_symbols, n_copy
        self.marker = n_symbols + 1
        self.total_len = seq_len + 2 * n_copy
        self.eval_sizes = {"valid": n_valid, "test": n_test}
        self.spec = TaskSpec(input_kind="features", d_input=n_symbols + 2, output_kind="per_step",
                             d_output=n_symbols + 1, loss="cross_entropy",
                             metrics=("cross_entropy", "recall_accuracy"), primary_metric="cross_entropy",
                             seq_len=self.total_len,
                             extra={"blank_len": seq_len, "n_recall": n_copy, "marker": self.marker})

    def sample(self, n: int, g: torch.Generator) -> Batch:
        T, K = self.seq_len, self.n_copy
        symbols = torch.randint(1, self.n_symbols + 1, (n, K), generator=g)
        tokens = torch.zeros(n, self.total_len, dtype=torch.long)
        tokens[:, :K] = symbols
        tokens[:, T + K] = self.marker
        targets = torch.zeros(n, self.total_len, dtype=torch.long)
        targets[:, T + K:] = symbols
        inputs = torch.nn.functional.one_hot(tokens, self.n_symbols + 2).float()
        return {"inputs": inputs, "targets": targets}

    def custom_metric(self, name: str, outputs: Tensor, batch: Batch) -> Tensor | tuple[float, float]:
        if name == "recall_accuracy":
            return recall_accuracy_sums(outputs, batch["targets"], self.n_copy)
        return super().custom_metric(name, outputs, batch)

    def baseline(self) -> dict[str, float]:
        return {"cross_entropy": self.n_copy * math.log(self.n_symbols) / self.total_len,
                "recall_accuracy": 1.0 / self.n_symbols}

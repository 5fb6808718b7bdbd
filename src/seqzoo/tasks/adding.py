"""Adding problem (Hochreiter & Schmidhuber 1997; ATN spec §1.2).

Two input channels per step: ``x1 ~ U(0, 1)`` and a marker channel with exactly one 1 in
``[0, ⌊(T-1)/2⌋)`` and one in ``[⌊(T-1)/2⌋, T)``. Target: the sum of the two marked values,
read at the last step. Predicting 1 always gives MSE = 2/12 ≈ 0.167.
"""

from __future__ import annotations

import torch

from seqzoo.tasks.base import Batch, Task, TaskSpec, check_int
from seqzoo.tasks.registry import register_task


@register_task
class AddingTask(Task):
    """Adding problem: regress the sum of two marked values of a length-T sequence."""

    name = "adding"
    paper = "Hochreiter & Schmidhuber 1997"
    version = 1

    def __init__(self, seq_len: int = 100, n_valid: int = 1000, n_test: int = 1000) -> None:
        check_int("adding", "seq_len (two disjoint marker ranges)", seq_len, 3)
        check_int("adding", "n_valid", n_valid, 1)
        check_int("adding", "n_test", n_test, 1)
        super().__init__(seq_len=seq_len, n_valid=n_valid, n_test=n_test)
        self.seq_len = seq_len
        self.eval_sizes = {"valid": n_valid, "test": n_test}
        self.spec = TaskSpec(input_kind="features", d_input=2, output_kind="per_sequence", d_output=1,
                             loss="mse", metrics=("mse",), primary_metric="mse", seq_len=seq_len)

    def sample(self, n: int, g: torch.Generator) -> Batch:
        T = self.seq_len
        half = (T - 1) // 2
        values = torch.rand(n, T, generator=g)
        first = torch.randint(0, max(half, 1), (n,), generator=g)
        second = torch.randint(half, T, (n,), generator=g)
        marks = torch.zeros(n, T)
        rows = torch.arange(n)
        marks[rows, first] = 1.0
        marks[rows, second] = 1.0
        target = (values[rows, first] + values[rows, second]).unsqueeze(-1)
        return {"inputs": torch.stack([values, marks], -1), "targets": target}

    def baseline(self) -> dict[str, float]:
        return {"mse": 2.0 / 12.0}

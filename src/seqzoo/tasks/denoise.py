"""Denoise problem (GORU, as used by NC-GRU; spec §2.2).

With noise length ``T`` the sequence has ``T + 20`` steps. Ten data symbols from ``{1..9}`` sit at
sorted random positions among the first ``T + 9`` steps (every other position there is noise, 0);
step ``T + 9`` holds the marker (index 10) and the last 10 inputs are 0. The target is 0 for the
first ``T + 10`` steps, then the ten symbols in position order. Outputs score 10 classes (0..9);
the loss is cross-entropy over all steps.

Inputs are one-hot of depth 10, as in the reference code. The marker index 10 does not fit in
depth 10, so the marker step is an **all-zero vector**: it is told apart from blanks (index 0,
``e_0``) by the absence of any active feature. This is deliberate and reproduced faithfully.

Positions: the reference draws them *with* replacement, so two symbols may land on one position
(the later one overwrites the earlier, while the target still lists both: an unlearnable target).
By default positions are distinct (``distinct_positions=True``) so every target is learnable;
``distinct_positions=False`` reproduces the reference draw.

A memoryless predictor gets the zeros right and guesses uniformly over the 9 symbols at the recall
steps: cross-entropy ``10·ln 9/(T + 20)`` (0.0999 for T=200) and recall accuracy 1/9.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from seqzoo.errors import ConfigError
from seqzoo.tasks.base import Batch, Task, TaskSpec, check_int
from seqzoo.tasks.copy import recall_accuracy_sums
from seqzoo.tasks.registry import register_task


@register_task
class DenoiseTask(Task):
    """Denoise problem: recall ten symbols scattered in noise, in order, after a marker."""

    name = "denoise"
    paper = "GORU task, as used by NC-GRU (Mucllari et al. 2022)"
    version = 1
    n_data = 10  # data symbols per sequence
    n_alphabet = 9  # symbols are 1..9
    depth = 10  # one-hot depth of the input (the marker index 10 is all-zero)

    def __init__(self, seq_len: int = 200, distinct_positions: bool = True, n_valid: int = 1000,
                 n_test: int = 1000) -> None:
        check_int("denoise", "seq_len (noise length T)", seq_len, 1)
        check_int("denoise", "n_valid", n_valid, 1)
        check_int("denoise", "n_test", n_test, 1)
        if not isinstance(distinct_positions, bool):
            raise ConfigError(f"denoise: distinct_positions must be True or False, got {distinct_positions!r}")
        super().__init__(seq_len=seq_len, distinct_positions=distinct_positions, n_valid=n_valid, n_test=n_test)
        self.seq_len, self.distinct_positions = seq_len, distinct_positions
        self.total_len = seq_len + 2 * self.n_data
        self.marker_step = seq_len + self.n_data - 1
        self.eval_sizes = {"valid": n_valid, "test": n_test}
        self.spec = TaskSpec(input_kind="features", d_input=self.depth, output_kind="per_step",
                             d_output=self.n_alphabet + 1, loss="cross_entropy",
                             metrics=("cross_entropy", "recall_accuracy"), primary_metric="cross_entropy",
                             seq_len=self.total_len,
                             extra={"noise_len": seq_len, "n_recall": self.n_data, "marker_step": self.marker_step})

    def sample(self, n: int, g: torch.Generator) -> Batch:
        K, span = self.n_data, self.marker_step  # positions are drawn in [0, T + 9)
        symbols = torch.randint(1, self.n_alphabet + 1, (n, K), generator=g)
        if self.distinct_positions:
            positions = torch.rand(n, span, generator=g).argsort(-1)[:, :K]
        else:
            positions = torch.randint(0, span, (n, K), generator=g)
        positions = positions.sort(-1).values
        # With repeated positions the later symbol wins (as in the reference); keep only the last of each run
        # so the write below has no duplicate indices.
        keep = torch.ones(n, K, dtype=torch.bool)
        keep[:, :-1] = positions[:, 1:] != positions[:, :-1]
        rows = torch.arange(n).unsqueeze(1).expand(n, K)
        tokens = torch.zeros(n, self.total_len, dtype=torch.long)
        tokens[rows[keep], positions[keep]] = symbols[keep]
        tokens[:, self.marker_step] = self.depth  # index 10: one past the one-hot depth
        inputs = torch.nn.functional.one_hot(tokens, self.depth + 1)[..., :self.depth].float()
        targets = torch.zeros(n, self.total_len, dtype=torch.long)
        targets[:, -K:] = symbols
        return {"inputs": inputs, "targets": targets}

    def custom_metric(self, name: str, outputs: Tensor, batch: Batch) -> Tensor | tuple[float, float]:
        if name == "recall_accuracy":
            return recall_accuracy_sums(outputs, batch["targets"], self.n_data)
        return super().custom_metric(name, outputs, batch)

    def baseline(self) -> dict[str, float]:
        return {"cross_entropy": self.n_data * math.log(self.n_alphabet) / self.total_len,
                "recall_accuracy": 1.0 / self.n_alphabet}

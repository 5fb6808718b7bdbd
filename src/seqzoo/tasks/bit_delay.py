"""Delayed bit-stream tasks of the target-space paper's RNN experiments (spec §6.3).

The input is a stream of random bits ``b_0, b_1, ...`` (one feature per step), ``delay + n_scored`` steps long. The
output at step ``t >= delay`` is one of two classes:

* ``recall``: ``b_{t-delay}``, the bit seen ``delay`` steps ago;
* ``xor``: ``b_{t-delay} XOR b_t``;
* ``add``: the sum bit of the binary addition of the two streams ``a_t = b_{t-delay}`` and ``b_t``, least
  significant bit first, with the carry running from ``t = delay`` (``s = a + b + carry; out = s mod 2``).

Only the last ``n_scored`` outputs count (``loss_mask``; the first ``delay`` have nothing to recall). As in the
official script the data are fixed sets (``n_train`` training sequences, the paper uses 8,000), not fresh batches.
Without a memory of ``b_{t-delay}`` every output is a fair coin, so the baseline is 50% accuracy and
cross-entropy ``ln 2``.
"""

from __future__ import annotations

import math

import torch

from seqzoo.errors import ConfigError
from seqzoo.tasks.base import Task, TaskSpec, TensorDataset, check_int, generator
from seqzoo.tasks.registry import register_task

OPS = ("recall", "xor", "add")


def bit_targets(bits: torch.Tensor, delay: int, op: str) -> torch.Tensor:
    """Targets ``(N, L)`` int64 of bit streams ``bits (N, L)`` (0 before ``delay``, where nothing is scored)."""
    a, b = bits[:, :-delay], bits[:, delay:]
    if op == "recall":
        out = a
    elif op == "xor":
        out = a ^ b
    else:
        carry = torch.zeros_like(a[:, 0])
        cols = []
        for t in range(a.shape[1]):
            s = a[:, t] + b[:, t] + carry
            carry = s // 2
            cols.append(s % 2)
        out = torch.stack(cols, 1) if cols else a
    targets = torch.zeros_like(bits)
    targets[:, delay:] = out
    return targets


@register_task
class BitDelayTask(Task):
    """Recall, XOR or add the bit seen ``delay`` steps ago (the target-space paper's RNN bit tasks)."""

    name = "bit_delay"
    paper = "Fairbank, Samothrakis & Citi 2022"
    version = 1
    fresh_train_data = False
    non_data_params = ("n_train", "n_valid", "n_test")

    def __init__(self, op: str = "recall", delay: int = 20, n_scored: int = 50, n_train: int = 2000,
                 n_valid: int = 1000, n_test: int = 1000) -> None:
        if op not in OPS:
            raise ConfigError(f"bit_delay: op must be one of {OPS}, got {op!r}")
        check_int("bit_delay", "delay", delay, 1)
        check_int("bit_delay", "n_scored", n_scored, 1)
        for name, v in (("n_train", n_train), ("n_valid", n_valid), ("n_test", n_test)):
            check_int("bit_delay", name, v, 1)
        super().__init__(op=op, delay=delay, n_scored=n_scored, n_train=n_train, n_valid=n_valid, n_test=n_test)
        self.op, self.delay, self.n_scored = op, delay, n_scored
        self.sizes = {"train": n_train, "valid": n_valid, "test": n_test}
        self.spec = TaskSpec(input_kind="features", d_input=1, output_kind="masked_steps", d_output=2,
                             loss="cross_entropy", metrics=("accuracy", "cross_entropy"), primary_metric="accuracy",
                             higher_is_better=True, seq_len=delay + n_scored, extra={"op": op, "delay": delay})

    def dataset(self, split: str) -> TensorDataset:
        # each split has its own stream, seeded without the split sizes: a larger set extends a smaller one
        g = generator(self.name, self.version, self.data_params(), split)
        bits = torch.randint(0, 2, (self.sizes[split], self.delay + self.n_scored), generator=g)
        loss_mask = torch.zeros(bits.shape, dtype=torch.bool)
        loss_mask[:, self.delay:] = True
        return TensorDataset({"inputs": bits.float().unsqueeze(-1), "targets": bit_targets(bits, self.delay, self.op),
                              "loss_mask": loss_mask})

    def baseline(self) -> dict[str, float]:
        return {"accuracy": 0.5, "cross_entropy": math.log(2.0)}

"""Operator and FLOP counts (``experiments/op_count.py``) and the DP step's operator count (``dp_speed``)."""

from __future__ import annotations

import torch

from seqzoo.experiments.op_count import count_flops, count_ops, fused_lstm_flops_per_token


def test_count_ops_counts_top_level_operators_only() -> None:
    a, b = torch.ones(3, 4), torch.ones(4, 5)
    assert count_ops(lambda: torch.add(a, a)) == 1
    # linear calls addmm/t inside: one top-level operator, the nested ones are not counted
    lin = torch.nn.Linear(4, 5)
    assert count_ops(lambda: lin(a)) == 1
    assert count_ops(lambda: (a @ b).relu().sum()) == 3


def test_count_flops_of_a_matrix_product() -> None:
    a, b = torch.ones(2, 3), torch.ones(3, 4)
    assert count_flops(lambda: a @ b) == 2 * 2 * 3 * 4
    assert count_flops(lambda: a + 1) == 0


def test_lstm_flops_are_the_gate_products() -> None:
    # FlopCounterMode sees nothing of the fused aten::lstm; 2 x 4H x (input + H) a token per layer and direction
    m = torch.nn.Sequential(torch.nn.LSTM(16, 32, num_layers=2, bidirectional=True))
    assert count_flops(lambda: m(torch.ones(1, 3, 16))) == 0
    assert fused_lstm_flops_per_token(m) == 2 * (2 * 4 * 32 * (16 + 32) + 2 * 4 * 32 * (64 + 32))


def test_dp_step_runs_more_operators_than_the_plain_step() -> None:
    """The count the dp-norm page quotes (136 vs 54 on the card's MLP at lot 64) is a property of the code, not of
    the machine: it is the same on every call."""
    from seqzoo.experiments.dp_speed import card_model_and_task, dp_step_ops

    model, task = card_model_and_task(None)
    ops = dp_step_ops(model, task, lot=16)
    assert set(ops) == {"plain", "seqzoo", "opacus"}
    assert 0 < ops["plain"] < ops["seqzoo"]
    assert dp_step_ops(model, task, lot=16) == ops

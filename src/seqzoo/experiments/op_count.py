"""Counts of the work one call does: aten operators (each costs a fixed dispatch/autograd overhead, which dominates
at small widths) and floating-point operations. Counts are the same on a loaded machine, unlike times, so they can
explain a speed ratio when the cores are busy (``benchmarks/bench_brt.py --ops``, ``experiments.dp_speed --ops``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def count_ops(step: Callable[[], Any]) -> int:
    """Top-level aten operators of one call of ``step`` (forward and backward; an operator called from inside
    another aten operator is not counted)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return sum(1 for e in prof.events() if e.name.startswith("aten::")
               and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")))


def count_flops(step: Callable[[], Any]) -> int:
    """Floating-point operations of one call of ``step`` (matrix products, convolutions and attention, as
    ``torch.utils.flop_counter.FlopCounterMode`` counts them; elementwise operators count 0)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def fused_lstm_flops_per_token(model: Any) -> int:
    """Matrix-product FLOP per token of every ``nn.LSTM`` in ``model``: 2 x 4H x (input + H) per layer and
    direction. ``count_flops`` gives the fused ``aten::lstm`` 0, so a model's total is ``count_flops`` plus this."""
    import torch

    total = 0
    for m in model.modules():
        if isinstance(m, torch.nn.LSTM):
            dirs = 2 if m.bidirectional else 1
            for layer in range(m.num_layers):
                d_in = m.input_size if layer == 0 else m.hidden_size * dirs
                total += 2 * 4 * m.hidden_size * (d_in + m.hidden_size) * dirs
    return total

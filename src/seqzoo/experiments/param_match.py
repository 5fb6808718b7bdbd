"""Parameter matching for cards: count a preset's parameters and find the width that matches a target.

Papers compare models "of equal size"; a card picks the baseline's width whose total parameter count is
closest to the other model's. Models are built on the meta device, so counting needs no memory and no data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def token_model(model: str, model_args: dict[str, Any], vocab: int) -> Any:
    """Preset ``model`` built as a token model over ``vocab`` classes (input and output), sized by the same rule
    as a run (``run_config.model_args_for`` with a per-step token task's spec); fresh weights, no data needed."""
    from seqzoo.models import create_model
    from seqzoo.tasks.base import TaskSpec
    from seqzoo.training.run_config import model_args_for

    spec = TaskSpec(input_kind="tokens", output_kind="per_step", d_output=vocab, loss="cross_entropy",
                    metrics=("ce",), primary_metric="ce", vocab_size=vocab)
    return create_model(model, **model_args_for(model, model_args, spec))


def count_params(model: str, model_args: dict[str, Any], vocab: int) -> int:
    """Parameters of ``token_model(model, model_args, vocab)``, built on the meta device (no memory, no data)."""
    import torch

    with torch.device("meta"):
        m = token_model(model, model_args, vocab)
    return sum(p.numel() for p in m.parameters())


def closest_width(target: int, n_params: Callable[[int], int], *, min_width: int = 1) -> int:
    """The width ``h >= min_width`` whose ``n_params(h)`` (increasing in h) is closest to ``target``.

    Doubling then bisection: O(log h) model builds. Ties go to the smaller width.
    """
    lo = hi = min_width
    if n_params(lo) >= target:
        return lo
    while n_params(hi) < target:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # n_params(lo) < target <= n_params(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if n_params(mid) < target else (lo, mid)
    return lo if target - n_params(lo) <= n_params(hi) - target else hi

"""DP-SGD step time vs the non-private step and vs Opacus, on the same model and lot, in one process.

Three optimizer steps on one fixed lot of ``lot`` training examples (SGD, the model in train mode):

* **plain**: the non-private step (forward of the lot, mean loss, backward, ``optimizer.step``);
* **seqzoo**: ``privacy.DPSGD.compute_gradients`` (per-sample gradients, flat clipping, noise, / L) + step;
* **opacus**: Opacus 1.6 ``GradSampleModule`` (per-sample gradients by module hooks) + ``DPOptimizer`` (clipping,
  noise, / L) + step, on a copy of the same model with the same weights.

Rounds are interleaved (plain, seqzoo, opacus, then again) after warm-up; the median over rounds is reported and
every round is kept, so the spread under load is visible. ``python -m seqzoo.experiments.dp_speed`` prints the
digits MLP of the ``dp-norm`` card (no norm and LayerNorm, 1 thread); with ``--ops``, the aten operators of each step
instead (``dp_step_ops``: a count, meaningful on a busy machine). The seqzoo step of these models uses ghost
clipping (``training/ghost_clip.py``); Opacus 1.6's default ``GradSampleModule`` materializes per-example gradients.
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def _steps(model: nn.Module, task: Any, *, lot: int, sigma: float, clip: float, seed: int
           ) -> dict[str, Callable[[], None]]:
    """The three steps (plain, seqzoo, opacus) on copies of ``model`` and one fixed lot, models in train mode."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    from seqzoo.training.evaluation import batch_loss, score_batch
    from seqzoo.training.privacy import DPSGD, resolve_privacy

    cpu = torch.device("cpu")
    data = task.build("train")
    batch = data.batch(slice(0, lot))
    settings = resolve_privacy({"sigma": sigma, "clip": clip, "per_sample": "auto"}, task, model, 1, lot)
    hook = DPSGD(settings, task, seed=seed, device=cpu)
    models = {"plain": copy.deepcopy(model), "seqzoo": copy.deepcopy(model)}
    gsm = GradSampleModule(copy.deepcopy(model), loss_reduction="mean")
    opt = {k: torch.optim.SGD(m.parameters(), lr=1e-3) for k, m in models.items()}
    opacus_opt = DPOptimizer(torch.optim.SGD(gsm.parameters(), lr=1e-3), noise_multiplier=sigma, max_grad_norm=clip,
                             expected_batch_size=lot, loss_reduction="mean")

    class _Step:
        done = 0

    def plain() -> None:
        m = models["plain"]
        opt["plain"].zero_grad(set_to_none=True)
        batch_loss(task, score_batch(m, task, batch, device=cpu), batch).backward()
        opt["plain"].step()

    def ours() -> None:
        m = models["seqzoo"]
        opt["seqzoo"].zero_grad(set_to_none=True)
        hook.compute_gradients(_Step(), m, batch)
        opt["seqzoo"].step()

    def opacus() -> None:
        opacus_opt.zero_grad(set_to_none=True)
        out = gsm(batch["inputs"])
        out = out[0] if isinstance(out, tuple) else out
        with warnings.catch_warnings():  # Opacus's module hooks on an input that needs no gradient
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            task.loss(out, batch).backward()
        opacus_opt.step()

    for m in (*models.values(), gsm):
        m.train()
    return {"plain": plain, "seqzoo": ours, "opacus": opacus}


def dp_step_times(model: nn.Module, task: Any, *, lot: int = 64, sigma: float = 1.0, clip: float = 1.0,
                  rounds: int = 7, steps_per_round: int = 10, warmup: int = 2, seed: int = 0) -> dict[str, Any]:
    """Seconds per step of the three variants (median over ``rounds``) and the ratios to the plain step."""
    fns = _steps(model, task, lot=lot, sigma=sigma, clip=clip, seed=seed)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(warmup + rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(steps_per_round):
                fn()
            if r >= warmup:
                times[name].append((time.perf_counter() - t0) / steps_per_round)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"seconds": med, "rounds": times, "threads": torch.get_num_threads(), "lot": lot,
            "ratio_seqzoo_plain": med["seqzoo"] / med["plain"], "ratio_opacus_plain": med["opacus"] / med["plain"],
            "ratio_seqzoo_opacus": med["seqzoo"] / med["opacus"],
            "per_round_seqzoo_plain": [a / b for a, b in zip(times["seqzoo"], times["plain"])],
            "per_round_seqzoo_opacus": [a / b for a, b in zip(times["seqzoo"], times["opacus"])]}


def card_model_and_task(norm: str | None = None) -> tuple[nn.Module, Any]:
    """The ``dp-norm`` card's MLP (64-128-128-10, tanh) and digits task (1,437 train / 60 public / 300 test)."""
    from seqzoo.models import create_model
    from seqzoo.tasks import create_task

    task = create_task("digits", layout="rows", n_valid=60, n_test=300)
    torch.manual_seed(0)
    model = create_model("mlp", seq_len=8, d_input=8, d_output=10, d_model=128, n_layers=2, norm=norm,
                         activation="tanh")
    return model, task


def dp_step_ops(model: nn.Module, task: Any, *, lot: int = 64, sigma: float = 1.0, clip: float = 1.0,
                seed: int = 0) -> dict[str, int]:
    """Top-level aten operators of one step of each variant, after two warm-up steps (``op_count.count_ops``):
    a count, so it means the same on a loaded machine."""
    from seqzoo.experiments.op_count import count_ops

    fns = _steps(model, task, lot=lot, sigma=sigma, clip=clip, seed=seed)
    for fn in fns.values():
        fn(), fn()
    return {name: count_ops(fn) for name, fn in fns.items()}


def main() -> None:  # pragma: no cover - a command-line entry
    """Print the three step times of the card's MLP (no norm and LayerNorm) on 1 thread, lot 64; ``--ops``: the
    operator count of each step instead (no timing)."""
    import sys

    torch.set_num_threads(1)
    for norm in (None, "layer"):
        model, task = card_model_and_task(norm)
        if "--ops" in sys.argv[1:]:
            print(f"norm={norm}: aten operators per step {dp_step_ops(model, task)}")
            continue
        out = dp_step_times(model, task, rounds=7, steps_per_round=20)
        ms = {k: round(1000 * v, 3) for k, v in out["seconds"].items()}
        print(f"norm={norm}: median ms/step {ms}; seqzoo/plain {out['ratio_seqzoo_plain']:.2f} (rounds "
              f"{min(out['per_round_seqzoo_plain']):.2f}-{max(out['per_round_seqzoo_plain']):.2f}); opacus/plain "
              f"{out['ratio_opacus_plain']:.2f}; seqzoo/opacus {out['ratio_seqzoo_opacus']:.3f} (rounds "
              f"{min(out['per_round_seqzoo_opacus']):.3f}-{max(out['per_round_seqzoo_opacus']):.3f})")


if __name__ == "__main__":  # pragma: no cover
    main()

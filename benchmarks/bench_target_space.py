"""Cost of a target-space training step (the least-squares solves) relative to the same network in weight space.

    PYTHONPATH=src python benchmarks/bench_target_space.py [--steps 50] [--repeats 5] [--threads 1] [--json out.json]

One training step = forward + backward + Adam on one batch. Two pairs, each the same architecture and forward:

* ``mlp``: ``ts_mlp`` vs ``ws_mlp`` (2-5-5-5-2 tanh, dense shortcuts) on the 194 two-spirals points, full batch;
  target space adds four ridge solves on the 194-row realisation batch and its propagation.
* ``rnn``: ``ts_rnn`` vs ``ws_rnn`` (23 tanh units, delay-20 recall, sequences of 70 steps, batch 100); target
  space adds one solve over the 100 x 70 realisation rows, the SCU pass of the RNN over the realisation sequences
  and the output layer's solve.

The two models of a pair run in interleaved rounds of ``--steps`` steps and the best round of each is kept, so a
burst of load from other processes hits both alike; the ratio is given per round too (median and range).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

import seqzoo
from seqzoo.tasks import create_task
from seqzoo.training.target_space import use_task_realisation


def _step_fn(name: str, task_name: str, task_args: dict[str, Any], model_args: dict[str, Any], batch: int):
    task = create_task(task_name, **task_args)
    data = task.build("train").tensors
    x, y = data["inputs"][:batch], data["targets"][:batch]
    mask = data.get("loss_mask")
    mask = mask[:batch] if mask is not None else None
    torch.manual_seed(0)
    model = seqzoo.create_model(name, **model_args)
    use_task_realisation(model, task, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        out, _ = model(x)
        if mask is not None:
            loss = torch.nn.functional.cross_entropy(out[mask], y[mask])
        else:
            loss = torch.nn.functional.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


PAIRS: dict[str, tuple[str, str, str, dict[str, Any], dict[str, Any], int]] = {
    "mlp": ("ts_mlp", "ws_mlp", "two_spirals", {}, {}, 194),
    "rnn": ("ts_rnn", "ws_rnn", "bit_delay", {"op": "recall", "delay": 20, "n_train": 200},
            {"d_model": 23, "realisation_size": 100, "realisation_len": 70}, 100),
}


def bench(steps: int = 50, repeats: int = 5) -> dict[str, Any]:
    """Per pair: best ms per step of each model, and the per-round ratios target / weight."""
    out: dict[str, Any] = {}
    for pair, (ts, ws, task, targs, margs, batch) in PAIRS.items():
        fns = {ts: _step_fn(ts, task, targs, margs, batch), ws: _step_fn(ws, task, targs, margs, batch)}
        for fn in fns.values():  # warm-up
            fn()
        best = {k: float("inf") for k in fns}
        ratios = []
        for _ in range(repeats):
            per = {}
            for k, fn in fns.items():
                start = time.perf_counter()
                for _ in range(steps):
                    fn()
                per[k] = (time.perf_counter() - start) / steps
                best[k] = min(best[k], per[k])
            ratios.append(per[ts] / per[ws])
        out[pair] = {"ms_per_step": {k: round(1e3 * v, 3) for k, v in best.items()},
                     "ratio_best": round(best[ts] / best[ws], 3), "ratio_median": round(statistics.median(ratios), 3),
                     "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    res = {"threads": args.threads, "steps": args.steps, "repeats": args.repeats, **bench(args.steps, args.repeats)}
    print(json.dumps(res, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()

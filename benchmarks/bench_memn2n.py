"""MemN2N questions/s on joint bAbI batches, against its reference twin, measured in one process.

    PYTHONPATH=src python benchmarks/bench_memn2n.py [--batch 32] [--d-model 20 50] [--rounds 7] [--threads 1]
                                                    [--json out.json]

Inputs: the first training batches of ``babi`` with ``tasks="all"`` (memory 50, 175 words; batches cut to their
longest story and sentence, as in training), or random batches of the same shapes when the data is absent.
Timed per batch: **fwd** (eval mode, no grad) and **fwd+bwd** (train mode: random noise on, linear start off,
cross-entropy on the answers, backward), of

* ``memn2n``: the model as it trains (sentences as weighted embedding bags, one lookup for all hop tables);
* ``reference``: the same model and weights with the slow twin ``encode_reference`` (gathered word rows times the
  position-encoding matrix, summed) in place of the bag encoding (the anchor).

Rounds are interleaved (every variant, then the next round) after one warm-up round; the report gives questions/s
of the median round and the ratio reference time / memn2n time (median, and the min-max over rounds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

from seqzoo.layers.memory import MemN2N, encode_reference
from seqzoo.tasks import create_task


class ReferenceMemN2N(MemN2N):
    """MemN2N with the reference encoding (for timing only)."""

    def _encode(self, ids: torch.Tensor, weight: torch.Tensor, time: torch.Tensor | None = None) -> torch.Tensor:
        return encode_reference(ids, weight, self.d_model, self.encoding, time)


def batches(n: int, size: int) -> list[dict[str, torch.Tensor]]:
    try:
        task = create_task("babi", tasks="all")
        return [task.train_batch(i, size) for i in range(n)]
    except FileNotFoundError:
        gen = torch.Generator().manual_seed(0)
        return [{"inputs": torch.randint(1, 175, (size, 7), generator=gen),
                 "story": torch.randint(1, 175, (size, 50, 8), generator=gen),
                 "targets": torch.randint(1, 175, (size,), generator=gen)} for _ in range(n)]


def run(batch_size: int, d_model: int, rounds: int, n_batches: int = 20) -> dict[str, Any]:
    data = batches(n_batches, batch_size)
    torch.manual_seed(0)
    fast = MemN2N(175, d_model=d_model, memory_size=50, linear_start=False)
    ref = ReferenceMemN2N(175, d_model=d_model, memory_size=50, linear_start=False)
    ref.load_state_dict(fast.state_dict())
    with torch.no_grad():  # the two encodings agree (the tests check this to float64 rounding)
        fast.eval(), ref.eval()
        a, b = fast(data[0]["inputs"], data[0]["story"])[0], ref(data[0]["inputs"], data[0]["story"])[0]
        assert torch.allclose(a, b, atol=1e-4), float((a - b).abs().max())

    def fwd(model: MemN2N) -> None:
        model.eval()
        with torch.no_grad():
            for x in data:
                model(x["inputs"], x["story"])

    def fwd_bwd(model: MemN2N) -> None:
        model.train()
        for x in data:
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x["inputs"], x["story"])[0], x["targets"]).backward()

    times: dict[str, list[float]] = {f"{m}/{k}": [] for m in ("memn2n", "reference") for k in ("fwd", "fwd+bwd")}
    for r in range(rounds + 1):
        for name, model in (("memn2n", fast), ("reference", ref)):
            for kind, fn in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
                start = time.perf_counter()
                fn(model)
                if r:  # round 0 warms up
                    times[f"{name}/{kind}"].append(time.perf_counter() - start)
    questions = n_batches * batch_size
    out: dict[str, Any] = {"batch": batch_size, "d_model": d_model, "rounds": rounds, "questions": questions}
    for kind in ("fwd", "fwd+bwd"):
        mine, anchor = times[f"memn2n/{kind}"], times[f"reference/{kind}"]
        ratios = [b / a for a, b in zip(mine, anchor)]
        out[kind] = {"memn2n_q_per_s": questions / statistics.median(mine),
                     "reference_q_per_s": questions / statistics.median(anchor),
                     "speedup_median": statistics.median(ratios), "speedup_min": min(ratios),
                     "speedup_max": max(ratios)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--d-model", type=int, nargs="+", default=[20, 50])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = [run(args.batch, d, args.rounds) for d in args.d_model]
    for res in results:
        for kind in ("fwd", "fwd+bwd"):
            r = res[kind]
            print(f"d={res['d_model']:3d} B={res['batch']} {kind:8s} memn2n {r['memn2n_q_per_s']:9.0f} q/s  "
                  f"reference {r['reference_q_per_s']:9.0f} q/s  reference/memn2n time {r['speedup_median']:.2f} "
                  f"({r['speedup_min']:.2f}-{r['speedup_max']:.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

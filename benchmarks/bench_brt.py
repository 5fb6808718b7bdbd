"""Training throughput of the Block-Recurrent Transformer: ``brt`` (Rec:fixed:skip) and ``slide_xl`` (its sliding-window
baseline) against the existing ``transformer`` preset (full causal attention, rotary) at equal width and depth, and
``slide_xl+1``, the sliding-window model with one more layer (the paper's cost-matched baseline, Slide:13 for a
12-layer recurrent model: its Table 1 has Rec:fixed:skip at 0.99 of Slide:13's step time).

One process, the three models built side by side; every round times one forward+backward (token-level cross-entropy,
the same input) of each model in turn, so load on the machine hits all three alike; the ratios are per round and the
table gives their median and range over the rounds, with tokens/s (median) of each model.

    PYTHONPATH=src python benchmarks/bench_brt.py                       # d=128, 4 layers, L=512, batch 8, 5 rounds
    PYTHONPATH=src python benchmarks/bench_brt.py --length 2048 --threads 2 --json out.json
    PYTHONPATH=src python benchmarks/bench_brt.py --d-model 64 --depth 3 --window 32 --states 32 --length 384 \
        --recurrent-layer 1 --ops                                   # the brt card's shapes, plus aten ops per step

``--ops`` also counts the aten operators one forward+backward runs (``torch.profiler``, operators called from
another aten operator not counted) and its FLOPs (``torch.utils.flop_counter``): at small widths each operator
costs mostly its fixed overhead, so the count explains step-time ratios that FLOPs do not. Both are counts, so they
mean the same on a loaded machine; the times do not.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time


def build(name: str, d: int, depth: int, heads: int, window: int, states: int, vocab: int,
          recurrent_layer: int | None = None):
    import seqzoo

    if name == "slide_xl+1":
        return build("slide_xl", d, depth + 1, heads, window, states, vocab)
    kw = {"d_model": d, "vocab_size": vocab, "d_input": None, "d_output": vocab}
    if name == "transformer":
        return seqzoo.create_model(name, n_layers=depth, layer_kwargs={"n_heads": heads}, **kw)
    rec = [] if name == "slide_xl" else [min(2, depth - 1) if recurrent_layer is None else recurrent_layer]
    return seqzoo.create_model(name, layer_kwargs={"depth": depth, "n_heads": heads, "window": window,
                                                   "n_states": states, "recurrent_layers": rec}, **kw)


def main() -> None:
    import torch

    from seqzoo.experiments.op_count import count_flops, count_ops

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--states", type=int, default=64)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--recurrent-layer", type=int, default=None, help="index of brt's recurrent layer (default: "
                    "min(2, depth - 1); the brt card uses depth // 2)")
    ap.add_argument("--ops", action="store_true", help="also count aten operators per forward+backward")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vocab = 64
    names = ("transformer", "slide_xl", "slide_xl+1", "brt")
    models = {n: build(n, args.d_model, args.depth, args.heads, args.window, args.states, vocab,
                       args.recurrent_layer).train() for n in names}
    x = torch.randint(0, vocab, (args.batch, args.length))
    y = torch.randint(0, vocab, (args.batch, args.length))

    def once(model) -> float:
        t0 = time.perf_counter()
        nll, _ = model(x, targets=y)
        nll.mean().backward()
        dt = time.perf_counter() - t0
        model.zero_grad(set_to_none=True)
        return dt

    for m in models.values():  # warm-up
        once(m)
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for n in names:
            times[n].append(once(models[n]))
    tokens = args.batch * args.length
    rows = {}
    for n in names:
        ratios = [t / a for t, a in zip(times[n], times["transformer"])]
        vs_slide = [t / s for t, s in zip(times[n], times["slide_xl"])]
        vs_deeper = [t / s for t, s in zip(times[n], times["slide_xl+1"])]
        rows[n] = {"params": sum(p.numel() for p in models[n].parameters()),
                   "tokens_per_s": tokens / statistics.median(times[n]),
                   "time_vs_transformer": statistics.median(ratios), "range_vs_transformer": [min(ratios), max(ratios)],
                   "time_vs_slide": statistics.median(vs_slide), "range_vs_slide": [min(vs_slide), max(vs_slide)],
                   "time_vs_deeper_slide": statistics.median(vs_deeper),
                   "range_vs_deeper_slide": [min(vs_deeper), max(vs_deeper)]}
        if args.ops:
            rows[n]["aten_ops"] = count_ops(functools.partial(once, models[n]))
            rows[n]["gflop"] = count_flops(functools.partial(once, models[n])) / 1e9
    print(f"fwd+bwd, d={args.d_model}, {args.depth} layers, {args.heads} heads, L={args.length}, batch {args.batch}, "
          f"W={args.window}, S={args.states}, {args.threads} thread(s), {args.rounds} rounds (median [min, max])")
    print(f"{'model':<12} {'params':>8} {'tokens/s':>9}  {'time / transformer':>20}  {'time / slide_xl':>20}  "
          f"{'time / slide_xl+1':>20}")
    for n, r in rows.items():
        cols = "  ".join(f"{r[k]:>6.2f} [{r[f'range_{k[5:]}'][0]:.2f}, {r[f'range_{k[5:]}'][1]:.2f}]"
                         for k in ("time_vs_transformer", "time_vs_slide", "time_vs_deeper_slide"))
        ops = f"  {r['aten_ops']:>6} aten ops  {r['gflop']:.3f} GFLOP" if "aten_ops" in r else ""
        print(f"{n:<12} {r['params']:>8} {r['tokens_per_s']:>9.0f}  {cols}{ops}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

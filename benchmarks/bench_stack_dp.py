"""Benchmark of the nondeterministic stack DP (seqzoo.ops.stack_dp): forward and backward time and peak memory.

Each length runs in a fresh subprocess so that the peak resident set size (``ru_maxrss``) measured after one
forward+backward, minus the RSS before it, is the DP's own peak memory. Times are the best of ``--repeats`` runs
after that first one. The scaling exponents are fitted on the two longest lengths (time should be ~n^3 and memory
~n^2: the DP keeps an O(n^2) triangle and no O(t^2) tensor per step).

    /work/venv/bin/python benchmarks/bench_stack_dp.py                 # n = 40, 80, 160, batch 10, |Q|=2, |G|=3
    /work/venv/bin/python benchmarks/bench_stack_dp.py --lengths 20 40 --json out.json

``--official SRC`` times the official NS/RNS-RNN stack (DuSell & Chiang, tag iclr2022; ``SRC`` is its ``src``
folder, with ``torch_semiring_einsum`` and ``attrs`` importable) against ours in one process, back to back on the same
weights (RNS setting: unnormalized weights, reading over (state, top), float32), forward+backward through every
step's reading. It is a measuring tool only: nothing of the official code is part of seqzoo.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time


def run_one(n: int, batch: int, q: int, g: int, repeats: int, threads: int, window: int | None) -> dict:
    import torch

    from seqzoo.ops.stack_dp import full_stack_dp, limited_stack_dp

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    s = q * g
    weights = [torch.randn(batch, n, q, g, q, g, generator=gen), torch.randn(batch, n, q, g, q, g, generator=gen),
               torch.randn(batch, n, q, g, q, generator=gen)]
    weights = [w.requires_grad_(True) for w in weights]

    def once() -> tuple[float, float]:
        t0 = time.perf_counter()
        if window is None:
            log_alpha, z, _ = full_stack_dp(*weights)
        else:
            log_alpha, z, _ = limited_stack_dp(*weights, window=window)
        t1 = time.perf_counter()
        (log_alpha.square().sum() + z.sum()).backward()
        t2 = time.perf_counter()
        for w in weights:
            w.grad = None
        return t1 - t0, t2 - t1

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    first = once()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
    runs = [once() for _ in range(repeats)] or [first]
    fwd = min(r[0] for r in runs)
    bwd = min(r[1] for r in runs)
    n_tri = n if window is None else window - 1
    tape_mb = 2 * batch * n_tri * n_tri * s * s * 4 / 2**20  # gamma buffer + its gradient, float32
    return {"n": n, "batch": batch, "n_states": q, "n_symbols": g, "window": window, "forward_s": fwd,
            "backward_s": bwd, "total_s": fwd + bwd, "peak_rss_mb": peak_kb / 1024, "gamma_buffers_mb": tape_mb,
            "torch": torch.__version__, "threads": threads}


def _time_official_pair(n: int, batch: int, q: int, g: int, repeats: int, block_size: int, stack_cls, semiring
                        ) -> dict[str, list[float]]:
    """Forward+backward through every step's reading, ours and the official stack alternating, same weights."""
    import torch

    from seqzoo.ops.stack_dp import full_stack_dp

    gen = torch.Generator().manual_seed(n)
    weights = [torch.randn(batch, n, q, g, q, g, generator=gen), torch.randn(batch, n, q, g, q, g, generator=gen),
               torch.randn(batch, n, q, g, q, generator=gen)]
    weights = [w.requires_grad_(True) for w in weights]
    coef = torch.randn(batch, n, q * g, generator=gen)

    def ours() -> None:
        log_alpha, _, _ = full_stack_dp(*weights)
        (torch.softmax(log_alpha, -1) * coef).sum().backward()

    def official() -> None:
        st = stack_cls(batch_size=batch, num_states=q, stack_alphabet_size=g, sequence_length=n,
                       normalize_reading=True, include_states_in_reading=True, block_size=block_size,
                       dtype=torch.float32, device="cpu", semiring=semiring)
        reads = []
        for t in range(n):
            st.update(weights[0][:, t], weights[1][:, t], weights[2][:, t])
            reads.append(st.reading())
        (torch.stack(reads, 1) * coef).sum().backward()

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        for w in weights:
            w.grad = None
        return time.perf_counter() - t0

    timed(ours)  # warm-up
    times: dict[str, list[float]] = {"ours": [], "official": []}
    for _ in range(repeats):
        times["official"].append(timed(official))
        times["ours"].append(timed(ours))
    return times


def compare_official(src: str, lengths: list[int], batch: int, q: int, g: int, repeats: int, threads: int,
                     block_size: int) -> list[dict]:
    """Ours vs the official stack, alternating within each repeat; returns per-length times and ratios."""
    import statistics
    import warnings

    import torch

    sys.path.insert(0, src)
    warnings.filterwarnings("ignore", message="Using a non-tuple sequence")
    from nsrnn.models.nondeterministic_stack import NondeterministicStack  # type: ignore[import-not-found]
    from nsrnn.semiring import log  # type: ignore[import-not-found]

    torch.set_num_threads(threads)
    rows = []
    for n in lengths:
        times = _time_official_pair(n, batch, q, g, repeats, block_size, NondeterministicStack, log)
        ratios = [o / s for o, s in zip(times["official"], times["ours"])]
        row = {"n": n, "batch": batch, "n_states": q, "n_symbols": g, "block_size": block_size, "threads": threads,
               "ours_s": times["ours"], "official_s": times["official"], "ratio": ratios,
               "ratio_median": statistics.median(ratios), "torch": torch.__version__}
        rows.append(row)
        print(f"n={n:4d}  ours {statistics.median(times['ours']):8.3f} s [{min(times['ours']):.3f}-"
              f"{max(times['ours']):.3f}]  official {statistics.median(times['official']):8.3f} s "
              f"[{min(times['official']):.3f}-{max(times['official']):.3f}]  official/ours median "
              f"{row['ratio_median']:.1f}x [{min(ratios):.1f}-{max(ratios):.1f}]", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[40, 80, 160])
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--n-states", type=int, default=2)
    ap.add_argument("--n-symbols", type=int, default=3)
    ap.add_argument("--window", type=int, default=None, help="benchmark the memory-limited DP with this window")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="write the rows to this file")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--official", default=None, metavar="SRC",
                    help="time the official iclr2022 stack (its src folder) against ours in this process")
    ap.add_argument("--block-size", type=int, default=32, help="official code's einsum block size (paper: 32)")
    args = ap.parse_args()
    if args.official is not None:
        rows = compare_official(args.official, args.lengths, args.batch, args.n_states, args.n_symbols,
                                max(args.repeats, 3), args.threads, args.block_size)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
        return
    if args.one is not None:
        print(json.dumps(run_one(args.one, args.batch, args.n_states, args.n_symbols, args.repeats, args.threads,
                                 args.window)))
        return
    rows = []
    for n in args.lengths:
        cmd = [sys.executable, __file__, "--one", str(n), "--batch", str(args.batch), "--n-states",
               str(args.n_states), "--n-symbols", str(args.n_symbols), "--repeats", str(args.repeats), "--threads",
               str(args.threads)] + (["--window", str(args.window)] if args.window else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"n={n:4d}  forward {r['forward_s']:8.3f} s  backward {r['backward_s']:8.3f} s  "
              f"peak {r['peak_rss_mb']:8.1f} MB  (gamma buffers {r['gamma_buffers_mb']:.1f} MB)", flush=True)
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        k = math.log(b["n"] / a["n"])
        t_exp = math.log(b["total_s"] / a["total_s"]) / k
        m_exp = math.log(max(b["peak_rss_mb"], 1e-3) / max(a["peak_rss_mb"], 1e-3)) / k
        print(f"scaling n={a['n']} -> {b['n']}: time ~ n^{t_exp:.2f}, peak memory ~ n^{m_exp:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

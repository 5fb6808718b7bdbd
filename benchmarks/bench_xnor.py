"""Packed binary GEMM (XNOR-popcount) vs fp32 ``torch.mm`` at 4096 x 4096, in one process.

    PYTHONPATH=src python benchmarks/bench_xnor.py [--n 4096] [--repeats 5] [--threads 2] [--json out.json]

Prints the per-round speed ratios (fp32 time / binary time; > 1: the binary GEMM is faster) with their median and
spread, with and without packing the left operand, and the weight memory of both. See
``seqzoo.experiments.binary_gemm_speed``.
"""

from __future__ import annotations

import argparse
import json

from seqzoo.experiments.binary_gemm_speed import binary_gemm_speed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    res = binary_gemm_speed(args.n, args.repeats, args.threads)
    print(f"n={res['n']} threads={res['threads']} kernel={res['kernel']}")
    for key in ("mm_fp32", "xnor", "xnor_with_packing"):
        print(f"  {key:18s} " + " ".join(f"{t:.3f}" for t in res["times_s"][key]) + " s")
    for key in ("xnor", "xnor_with_packing"):
        r = res[f"ratio_{key}"]
        print(f"  speed ratio mm/{key}: median {r['median']:.2f}x (min {r['min']:.2f}, max {r['max']:.2f})")
    mib = 2 ** 20
    fp32, packed = res["weight_bytes_fp32"] / mib, res["weight_bytes_packed"] / mib
    print(f"  weights: fp32 {fp32:.1f} MiB, packed {packed:.2f} MiB ({res['memory_ratio']:.0f}x smaller)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()

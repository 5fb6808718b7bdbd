"""Speed of the packed XNOR-popcount GEMM (``seqzoo.ops.xnor``) against fp32 ``torch.mm``, in one process.

``binary_gemm_speed(n)`` times ``torch.mm(a, b.T)`` on float32 ``(n, n)`` matrices (the anchor) and the binary GEMM
of the same shapes on packed signs, in interleaved rounds (anchor, then binary, then binary including the packing of
the left operand, as ``BinaryLinear`` does per call; the right operand is a weight, packed once). It reports each
round's ratio ``anchor time / binary time`` and their median, min and max (the spread under load), the times, the
kernel's popcount path, the thread count, and the weight memory of both (float32 vs packed bits: 32× smaller).
The result of the first round is checked against the exact integer product of a few rows.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch


def binary_gemm_speed(n: int = 4096, repeats: int = 5, threads: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Times (seconds) and speed ratios of the binary GEMM vs fp32 ``torch.mm`` at ``(n, n) x (n, n)``."""
    from seqzoo.ops import xnor

    if threads is not None:
        torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    pb = xnor.pack_signs(b)
    pa = xnor.pack_signs(a)
    torch.mm(a, b.T)  # warm-up (and the kernel build) outside the rounds
    out = xnor.xnor_gemm(pa, pb)
    rows = slice(0, 3)
    want = (torch.where(a[rows] >= 0, 1, -1).long() @ torch.where(b >= 0, 1, -1).long().T).to(torch.int32)
    if not torch.equal(out[rows], want):
        raise AssertionError("binary GEMM differs from the integer ±1 product")
    times: dict[str, list[float]] = {"mm_fp32": [], "xnor": [], "xnor_with_packing": []}
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b.T)
        times["mm_fp32"].append(time.perf_counter() - t)
        t = time.perf_counter()
        xnor.xnor_gemm(pa, pb)
        times["xnor"].append(time.perf_counter() - t)
        t = time.perf_counter()
        xnor.xnor_gemm(xnor.pack_signs(a), pb)
        times["xnor_with_packing"].append(time.perf_counter() - t)
    result: dict[str, Any] = {"n": n, "repeats": repeats, "threads": torch.get_num_threads(),
                              "kernel": xnor.kernel_features(), "times_s": times,
                              "weight_bytes_fp32": b.numel() * 4, "weight_bytes_packed": pb.nbytes,
                              "memory_ratio": b.numel() * 4 / pb.nbytes}
    for key in ("xnor", "xnor_with_packing"):
        ratios = [m / x for m, x in zip(times["mm_fp32"], times[key])]
        result[f"ratio_{key}"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
                                  "rounds": ratios}
    return result

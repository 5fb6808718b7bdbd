"""Packed binary GEMM (XNOR-popcount, spec §8.1/§8.3): equal to the integer ±1 product exactly, for K not a multiple
of 64 too, on every path (C vector, C scalar, torch-op twin); packing vs its twin; BinaryLinear vs the float W1/A1
Linear."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from seqzoo.layers.quant import BinaryLinear, Linear
from seqzoo.ops import native_kernels, xnor

SHAPES = [(1, 1, 1), (5, 7, 63), (6, 5, 64), (7, 13, 65), (9, 11, 200), (4, 4, 511), (3, 6, 513), (33, 17, 1000)]


def _pm1(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, 1, -1).to(torch.int64)


def _paths() -> list[str]:
    return ["auto", "scalar", "reference"] if xnor.kernel_features() is not None else ["reference"]


@pytest.mark.parametrize("m,n,k", SHAPES)
def test_xnor_gemm_equals_integer_product(m: int, n: int, k: int) -> None:
    g = torch.Generator().manual_seed(m * 1000 + k)
    a, b = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g)
    a[0, 0] = 0.0  # sign(0) = +1
    want = (_pm1(a) @ _pm1(b).T).to(torch.int32)
    pa, pb = xnor.pack_signs(a), xnor.pack_signs(b)
    for path in _paths():
        assert torch.equal(xnor.xnor_gemm(pa, pb, path=path), want), path
    assert torch.equal(xnor.binary_matmul(a, b), want)


def test_pack_matches_twin_and_padding_is_zero() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 130, generator=g)
    packed, ref = xnor.pack_signs(x), xnor.pack_signs_reference(x)
    assert torch.equal(packed.words, ref.words)
    assert packed.words.shape == (10, 8) and packed.k == 130
    assert (packed.words[:, 3:] == 0).all()  # words past ceil(130 / 64) = 3 are padding
    ones = xnor.pack_signs(torch.ones(1, 64))
    assert int(ones.words[0, 0]) == -1  # all 64 bits set (two's complement)
    assert xnor.pack_signs(torch.ones(4096, 4096)).nbytes * 32 == 4096 * 4096 * 4  # the 32x weight saving


def test_kernel_off_falls_back_to_the_twin() -> None:
    native_kernels.set_enabled(False)
    try:
        a, b = torch.randn(3, 70), torch.randn(4, 70)
        assert torch.equal(xnor.binary_matmul(a, b), (_pm1(a) @ _pm1(b).T).to(torch.int32))
        with pytest.raises(RuntimeError, match="not available"):
            xnor.xnor_gemm(xnor.pack_signs(a), xnor.pack_signs(b), path="scalar")
    finally:
        native_kernels.set_enabled(None)


def test_mismatched_k_is_an_error() -> None:
    with pytest.raises(ValueError, match="same K"):
        xnor.xnor_gemm(xnor.pack_signs(torch.randn(2, 10)), xnor.pack_signs(torch.randn(2, 11)))


@pytest.mark.parametrize("act_range", [(-1.0, 1.0), (0.0, 1.0)])
def test_binary_linear_matches_the_float_w1a1_linear(act_range) -> None:
    torch.manual_seed(0)
    lin = Linear(100, 7, quant="w1a1", act_range=act_range).eval()
    fast = BinaryLinear.from_linear(lin)
    x = torch.randn(5, 3, 100)
    x[1, 2, 4] = float("nan")
    with torch.no_grad():
        y, y_fast = lin(x), fast(x)
    assert torch.equal(y.isnan(), y_fast.isnan()) and bool(y_fast[1, 2].isnan().all())
    torch.testing.assert_close(y_fast.nan_to_num(), y.nan_to_num(), rtol=1e-5, atol=1e-5)
    assert fast.weight_bytes == 7 * 8 * 8  # 7 rows of 512 bits
    with pytest.raises(Exception, match="w1a1"):
        BinaryLinear.from_linear(Linear(4, 4, quant="w2a2"))


_FRESH = textwrap.dedent("""
    import numpy as np, torch
    from seqzoo.ops import xnor
    assert np.float32(1e-40) * np.float32(1) != 0, "denormals flushed before anything ran"
    assert xnor.kernel_features() is not None, "the xnor kernel did not load although a compiler is present"
    xnor.binary_matmul(torch.randn(8, 100), torch.randn(4, 100))
    assert np.float32(1e-40) * np.float32(1) != 0, "flush-to-zero set by loading the xnor kernel"
    assert (torch.tensor([1e-40]) * 1.0).item() != 0, "torch: a denormal was flushed after the kernel ran"
    print("OK")
""")


def test_loading_the_kernel_keeps_denormals() -> None:
    """In a fresh interpreter: building/loading and running the xnor kernel leaves FTZ/DAZ off (IEEE build)."""
    if native_kernels._compiler() is None:
        pytest.skip("no C++ compiler: the C kernel cannot be built here")
    env = {**os.environ, "SEQZOO_NATIVE": "1"}
    proc = subprocess.run([sys.executable, "-c", _FRESH], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0 and proc.stdout.startswith("OK"), proc.stdout + proc.stderr[-3000:]


def test_binary_mlp_runs_on_the_packed_kernel_with_the_same_outputs() -> None:
    import copy

    import seqzoo
    from seqzoo.layers.quant import to_binary_inference

    torch.manual_seed(0)
    model = seqzoo.create_model("mlp_q", seq_len=8, d_input=8, d_model=64, n_layers=3).eval()
    for m in model.modules():  # as after training: BN shifts the hidden pre-activations away from exact zeros (at
        if isinstance(m, torch.nn.BatchNorm1d):  # init a sum of 64 ±α is often exactly 0 on the binary path and
            m.running_mean.uniform_(-0.3, 0.3)  # ±1 ulp on the float path, and sign(±0) decides the next layer)
            m.bias.data.uniform_(-0.3, 0.3)
    x = torch.randn(20, 8, 8)
    fast = to_binary_inference(copy.deepcopy(model))
    kinds = [type(m).__name__ for m in fast.body]
    assert kinds.count("BinaryLinear") == 2 and kinds[0] == "Linear"  # the first layer keeps its real input
    with torch.no_grad():
        torch.testing.assert_close(fast(x)[0], model(x)[0], rtol=1e-4, atol=1e-4)

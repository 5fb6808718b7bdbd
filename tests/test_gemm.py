"""``ops.gemm`` (oneDNN route for the loops' matrix products) against plain torch, and the native kernel loader."""

from __future__ import annotations

import pytest
import torch

from seqzoo.ops import gemm, native_kernels

ONEDNN = torch.backends.mkldnn.is_available()


@pytest.fixture(params=["onednn", "aten"])
def backend(request):
    if request.param == "onednn" and not ONEDNN:
        pytest.skip("this torch has no oneDNN")
    gemm.set_backend(request.param)
    yield request.param
    gemm.set_backend(None)


def _mats(dtype, m=7, k=33, n=19, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(m, k, generator=g).to(dtype), torch.randn(k, n, generator=g).to(dtype),
            torch.randn(n, generator=g).to(dtype))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("layout", ["contiguous", "a-transposed", "b-transposed"])
def test_products_equal_torch(backend, dtype, tol, layout):
    a, b, bias = _mats(dtype)
    if layout == "a-transposed":
        a = a.t().contiguous().t()
    elif layout == "b-transposed":
        b = b.t().contiguous().t()
    ref = gemm.mm_reference(a.double(), b.double())
    scale = ref.abs().max().item()
    assert (gemm.mm(a, b).double() - ref).abs().max().item() <= tol * scale
    out = torch.full((a.shape[0], b.shape[1]), 2.0, dtype=dtype)
    gemm.mm_into(out, a, b, accumulate=True)
    assert (out.double() - (ref + 2.0)).abs().max().item() <= tol * scale * 2
    gemm.mm_into(out, a, b)
    assert (out.double() - ref).abs().max().item() <= tol * scale
    gemm.addmm_into(out, bias, a, b)
    assert (out.double() - (ref + bias.double())).abs().max().item() <= tol * scale * 2
    lin = gemm.linear(a, b.t(), bias)
    assert (lin.double() - (ref + bias.double())).abs().max().item() <= tol * scale * 2


def test_backend_selection(monkeypatch):
    monkeypatch.setenv("SEQZOO_GEMM", "aten")
    assert gemm.backend() == "aten"
    monkeypatch.setenv("SEQZOO_GEMM", "auto")
    assert gemm.backend() == ("onednn" if ONEDNN else "aten")
    monkeypatch.setenv("SEQZOO_GEMM", "blas")
    with pytest.raises(ValueError, match="SEQZOO_GEMM must be one of"):
        gemm.backend()
    with pytest.raises(ValueError, match="gemm backend must be one of"):
        gemm.set_backend("mkl")


def test_empty_shapes_fall_back(backend):
    a, b = torch.zeros(0, 4), torch.zeros(4, 3)
    assert gemm.mm(a, b).shape == (0, 3)


def test_native_loader_disabled_and_without_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("SEQZOO_NATIVE", "0")
    assert native_kernels.load("norm_lstm_step") is None
    monkeypatch.setenv("SEQZOO_NATIVE", "1")
    monkeypatch.setenv("SEQZOO_CACHE", str(tmp_path))
    monkeypatch.setattr(native_kernels, "_libs", {})
    monkeypatch.setattr(native_kernels, "_compiler", lambda: None)
    assert native_kernels.load("norm_lstm_step") is None  # the loops fall back to torch ops
    assert not list(tmp_path.rglob("*.so"))


def test_native_loader_builds_once_into_the_cache(monkeypatch, tmp_path):
    if native_kernels._compiler() is None:
        pytest.skip("no C++ compiler on this machine")
    monkeypatch.setenv("SEQZOO_CACHE", str(tmp_path))
    monkeypatch.setattr(native_kernels, "_libs", {})
    lib = native_kernels.load("norm_lstm_step")
    assert lib is not None and lib.seqzoo_abi_version() == native_kernels._ABI_VERSION
    built = list((tmp_path / "kernels").glob("norm_lstm_step-*.so"))
    assert len(built) == 1
    mtime = built[0].stat().st_mtime_ns
    monkeypatch.setattr(native_kernels, "_libs", {})
    assert native_kernels.load("norm_lstm_step") is not None
    assert built[0].stat().st_mtime_ns == mtime  # the cached library was reused, not rebuilt
    assert not list((tmp_path / "kernels").glob(".*"))  # no temporary files left behind

"""Matrix products for the hand-written recurrent loops, routed to oneDNN on CPU where that is faster.

``mm(a, b)`` is ``a @ b`` and ``mm_into(out, a, b, accumulate)`` writes or adds it into ``out``; their reference
twins are ``torch.mm`` / ``Tensor.addmm_``. On CPU, for float32 and bfloat16, the product goes through oneDNN's
inner-product primitive (``torch.ops.mkldnn._linear_pointwise``, the kernel family ``nn.LSTM`` itself runs on)
instead of ATen's BLAS path (MKL). Why: on the AMD EPYC (Zen) development machines MKL's sgemm runs its
non-AVX-512 code path, ~107 GFLOP/s on one core against oneDNN's ~246 GFLOP/s for a 2048³ product, and the
per-step products of an LSTM at B=32, H=256 take 25 ms instead of 44 ms for 256 steps (one thread; numbers and
command in ``docs/benchmarks.md``). That gap, not Python overhead alone, is most of what separated the
seqzoo loops from ``nn.LSTM`` there.

Everything else (float64, complex, other devices, empty shapes, a torch built without oneDNN) uses ATen. Set the
environment variable ``SEQZOO_GEMM=aten`` (read at call time) or call ``set_backend("aten")`` to turn the oneDNN
route off, e.g. to compare the two in one process.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

_BACKENDS = ("auto", "onednn", "aten")
_backend_override: str | None = None
_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


def set_backend(name: str | None) -> None:
    """Force ``"onednn"``/``"aten"`` (or ``"auto"``); ``None`` returns to the ``SEQZOO_GEMM`` setting."""
    if name is not None and name not in _BACKENDS:
        raise ValueError(f"gemm backend must be one of {_BACKENDS}, got {name!r}")
    global _backend_override
    _backend_override = name


def backend() -> str:
    """The backend in force: ``"onednn"`` where oneDNN is usable, else ``"aten"``."""
    name = _backend_override or os.environ.get("SEQZOO_GEMM", "auto").lower()
    if name not in _BACKENDS:
        raise ValueError(f"SEQZOO_GEMM must be one of {_BACKENDS}, got {name!r}")
    if name == "aten":
        return "aten"
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        if name == "onednn":
            raise RuntimeError("SEQZOO_GEMM=onednn, but this torch has no usable oneDNN (mkldnn)")
        return "aten"
    return "onednn"


def _onednn_ok(a: Tensor, b: Tensor) -> bool:
    return (a.device.type == "cpu" and b.device.type == "cpu" and a.dtype == b.dtype and a.dtype in _ONEDNN_DTYPES
            and a.dim() == 2 and b.dim() == 2 and a.numel() > 0 and b.numel() > 0 and backend() == "onednn")


def mm(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for 2-D ``a (M, K)`` and ``b (K, N)`` (a new tensor). Not differentiable through oneDNN."""
    if _onednn_ok(a, b):
        # linear(x, w) = x w^T: with w = b^T (a view) that is a @ b.
        return torch.ops.mkldnn._linear_pointwise(a, b.t(), None, "none", [], "")
    return torch.mm(a, b)


def mm_into(out: Tensor, a: Tensor, b: Tensor, accumulate: bool = False) -> Tensor:
    """``out = a @ b`` (or ``out += a @ b`` with ``accumulate``) in place; returns ``out``."""
    if _onednn_ok(a, b):
        prod = torch.ops.mkldnn._linear_pointwise(a, b.t(), None, "none", [], "")
        return out.add_(prod) if accumulate else out.copy_(prod)
    if accumulate:
        return out.addmm_(a, b)
    return torch.mm(a, b, out=out)


def addmm_into(out: Tensor, bias: Tensor | None, a: Tensor, b: Tensor) -> Tensor:
    """``out = bias + a @ b`` in place (``bias`` broadcast over rows, or None); returns ``out``."""
    if _onednn_ok(a, b) and (bias is None or bias.dtype == a.dtype):
        prod = torch.ops.mkldnn._linear_pointwise(a, b.t(), bias, "none", [], "")
        return out.copy_(prod)
    if bias is None:
        return torch.mm(a, b, out=out)
    return torch.addmm(bias, a, b, out=out)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight^T + bias`` for 2-D ``x (M, K)``, ``weight (N, K)`` (a new tensor), as ``F.linear``."""
    if _onednn_ok(x, weight) and (bias is None or bias.dtype == x.dtype):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return torch.nn.functional.linear(x, weight, bias)


def mm_reference(a: Tensor, b: Tensor) -> Tensor:
    """The twin of ``mm``: plain ``torch.mm``."""
    return torch.mm(a, b)

"""The ctypes mirror of the C ABI of ``csrc/norm_lstm_step.cpp``: its structs, the dtypes it serves and its library.

Field order and types must match the C structs exactly (``SiteCfg``, ``LoopCfg``, ``InputAtnCfg``); the library's
``seqzoo_abi_version`` (checked by ``ops.native_kernels``) changes whenever they do.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from seqzoo.ops import native_kernels

if TYPE_CHECKING:
    from seqzoo.ops.lstm_sites import SiteNorm

_c_int, c_ptr = ctypes.c_int32, ctypes.c_void_p


class SiteCfg(ctypes.Structure):
    """Mirror of ``SiteCfg`` in ``csrc/norm_lstm_step.cpp`` (pointers to contiguous tensors of the loop dtype)."""

    _fields_ = [("kind", _c_int), ("k", _c_int), ("F", _c_int), ("L", _c_int), ("eps", ctypes.c_double),
                ("wf", c_ptr), ("bf", c_ptr), ("w", c_ptr), ("mu", c_ptr), ("rs", c_ptr), ("E", c_ptr),
                ("W", c_ptr), ("IC", c_ptr), ("M", c_ptr), ("DS", c_ptr), ("R", c_ptr), ("gw", c_ptr),
                ("gb", c_ptr)]


class LoopCfg(ctypes.Structure):
    """Mirror of ``LoopCfg``: the loop's buffers (chunk pointers are reset per chunk) and its two sites."""

    _fields_ = [("B", _c_int), ("H", _c_int), ("has_mask", _c_int), ("pad", _c_int), ("hs", c_ptr), ("cs", c_ptr),
                ("acts", c_ptr), ("pre", c_ptr), ("tcn", c_ptr), ("mask", c_ptr), ("q", c_ptr), ("dcn", c_ptr),
                ("da", c_ptr), ("dh", c_ptr), ("dc", c_ptr),
                ("sh", SiteCfg), ("sc", SiteCfg)]


def ptr(t: Tensor | None) -> int | None:
    return t.data_ptr() if t is not None else None


def site_cfg(kind: int, k: int, features: int, seq_len: int, norm: SiteNorm, weight_f: Tensor,
              bias_f: Tensor | None, owner) -> SiteCfg:
    # Contiguous copies are kept on the owner so the pointers stay valid for the whole call.
    owner.native_w = norm.weight.detach().contiguous() if norm.weight is not None else None
    owner.native_wf = weight_f.detach().contiguous()
    owner.native_bf = bias_f.detach().contiguous() if bias_f is not None else None
    return SiteCfg(kind=kind, k=k, F=features, L=seq_len, eps=float(norm.eps), wf=ptr(owner.native_wf),
                    bf=ptr(owner.native_bf), w=ptr(owner.native_w))


class InputAtnCfg(ctypes.Structure):
    """Mirror of ``InputAtnCfg``: the ATN input site of one chunk (forward and backward)."""

    _fields_ = [("B", _c_int), ("F", _c_int), ("k", _c_int), ("n", _c_int), ("t0", _c_int), ("pad", _c_int),
                ("eps", ctypes.c_double), ("xc", c_ptr), ("y", c_ptr), ("E", c_ptr), ("P", c_ptr), ("IC", c_ptr),
                ("MEAN", c_ptr), ("RS", c_ptr), ("wf", c_ptr), ("bf", c_ptr), ("dg", c_ptr), ("dx", c_ptr),
                ("Q", c_ptr), ("w", c_ptr), ("gw", c_ptr), ("gb", c_ptr)]


NATIVE_DTYPES = {torch.float32: "f32", torch.float64: "f64"}


def native_available(like: Tensor) -> bool:
    """True when the C step kernels will run this loop for tensors like ``like`` (CPU, float32/float64, built)."""
    return native_lib(like) is not None


def native_lib(like: Tensor) -> ctypes.CDLL | None:
    """The step-kernel library when it applies to this loop (CPU, float32/float64), else None."""
    if like.device.type != "cpu" or like.dtype not in NATIVE_DTYPES:
        return None
    return native_kernels.load("norm_lstm_step")


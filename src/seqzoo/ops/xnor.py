"""Packed binary GEMM (QNN's XNOR-popcount, spec rnn-cells-and-normalization.md §8.1) and its torch-op twin.

``pack_signs(x)`` packs the signs of a ``(rows, K)`` float tensor into 64-bit words (bit 1 <-> +1, i.e. ``x >= 0``,
so sign(0) = +1; bit t of word w is element ``64 w + t``), each row padded with zero words to a multiple of 8 words
(512 bits, the vector width of the C kernel). ``xnor_gemm(a, b)`` gives the int32 ``(M, N)`` matrix
``a_i · b_j = 2·popcount(XNOR(a_i, b_j)) − K`` of the ±1 rows, computed as ``K − 2·popcount(a_i XOR b_j)`` over the
padded rows (padding bits are 0 in both, so they never differ): exact for any K, not only multiples of 64.

The C kernel (``csrc/xnor_gemm.cpp``, built and cached by ``ops.native_kernels``) uses AVX-512 VPOPCNTDQ, an
AVX-512BW lookup or the scalar ``popcnt`` instruction, whichever the CPU has (``kernel_features()``); without a
compiler, with ``SEQZOO_NATIVE=0`` or for tensors the kernel does not take, the torch-op twin
(``xnor_gemm_reference``, a SWAR popcount on int64) runs. Weights packed once take 1 bit per element: 32× less
memory than float32 (for K a multiple of 512; the padding is at most 511 bits per row).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch
from torch import Tensor

from seqzoo.ops import native_kernels

WORD_BITS = 64
ROW_ALIGN_WORDS = 8  # rows padded to 512 bits


@dataclass(frozen=True)
class PackedSigns:
    """``words (rows, stride)`` int64 (bit patterns of uint64) and the number of real bits ``k`` per row."""

    words: Tensor
    k: int

    @property
    def rows(self) -> int:
        return int(self.words.shape[0])

    @property
    def nbytes(self) -> int:
        return self.words.numel() * 8


def row_stride(k: int) -> int:
    """Words per packed row: ``ceil(k / 64)`` rounded up to a multiple of 8."""
    words = -(-k // WORD_BITS)
    return max(ROW_ALIGN_WORDS, -(-words // ROW_ALIGN_WORDS) * ROW_ALIGN_WORDS)


def _lib() -> ctypes.CDLL | None:
    lib = native_kernels.load("xnor_gemm")
    if lib is not None and not getattr(lib, "_seqzoo_typed", False):
        u64p, i64 = ctypes.c_void_p, ctypes.c_int64
        lib.xnor_features.restype = ctypes.c_int
        lib.xnor_pack_f32.argtypes = [ctypes.c_void_p, i64, i64, i64, u64p]
        lib.xnor_pack_f32.restype = None
        for fn in (lib.xnor_gemm, lib.xnor_gemm_scalar):
            fn.argtypes = [u64p, u64p, i64, i64, i64, i64, ctypes.c_void_p]
            fn.restype = None
        lib._seqzoo_typed = True
    return lib


def kernel_features() -> dict[str, bool] | None:
    """Which popcount path the compiled kernel uses (None: no kernel, the torch-op twin runs)."""
    lib = _lib()
    if lib is None:
        return None
    f = int(lib.xnor_features())
    return {"popcnt": bool(f & 1), "avx512bw": bool(f & 2), "avx512_vpopcntdq": bool(f & 4)}


def _check_matrix(x: Tensor, who: str) -> None:
    if x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"{who}: expected a 2-D floating-point tensor (rows, K), got {x.dtype} of shape "
                         f"{tuple(x.shape)}")


def pack_signs_reference(x: Tensor) -> PackedSigns:
    """Torch-op twin of ``pack_signs``."""
    _check_matrix(x, "pack_signs")
    rows, k = x.shape
    stride = row_stride(k)
    bits = torch.zeros(rows, stride * WORD_BITS, dtype=torch.int64, device=x.device)
    bits[:, :k] = (x >= 0).to(torch.int64)
    shifts = torch.arange(WORD_BITS, dtype=torch.int64, device=x.device)
    words = (bits.view(rows, stride, WORD_BITS) << shifts).sum(-1)  # distinct bits: the sum is the OR (wraps at 63)
    return PackedSigns(words, int(k))


def pack_signs(x: Tensor) -> PackedSigns:
    """The signs of ``x (rows, K)`` packed into 64-bit words (C kernel for float32 on CPU, else the twin)."""
    _check_matrix(x, "pack_signs")
    lib = _lib()
    if lib is None or x.device.type != "cpu" or x.dtype != torch.float32:
        return pack_signs_reference(x)
    x = x.detach().contiguous()
    rows, k = x.shape
    stride = row_stride(k)
    words = torch.empty(rows, stride, dtype=torch.int64)
    if rows:
        lib.xnor_pack_f32(x.data_ptr(), rows, k, stride, words.data_ptr())
    return PackedSigns(words, int(k))


def _popcount64(v: Tensor) -> Tensor:
    """SWAR popcount of int64 bit patterns (torch's ``>>`` is arithmetic: each mask clears the copied sign bits)."""
    v = v - ((v >> 1) & 0x5555555555555555)
    v = (v & 0x3333333333333333) + ((v >> 2) & 0x3333333333333333)
    v = (v + (v >> 4)) & 0x0F0F0F0F0F0F0F0F
    return (v * 0x0101010101010101) >> 56  # the top byte holds the count (<= 64, so its sign bit is 0)


def _check_pair(a: PackedSigns, b: PackedSigns) -> None:
    if a.k != b.k or a.words.shape[1] != b.words.shape[1]:
        raise ValueError(f"xnor_gemm: operands must have the same K, got {a.k} and {b.k}")


def xnor_gemm_reference(a: PackedSigns, b: PackedSigns, block: int = 64) -> Tensor:
    """Torch-op twin: ``K − 2·popcount(a_i XOR b_j)`` as int32 ``(M, N)`` (rows of ``a`` in blocks)."""
    _check_pair(a, b)
    out = torch.empty(a.rows, b.rows, dtype=torch.int32, device=a.words.device)
    for i in range(0, a.rows, block):
        x = a.words[i:i + block, None, :] ^ b.words[None, :, :]
        out[i:i + block] = (a.k - 2 * _popcount64(x).sum(-1)).to(torch.int32)
    return out


def xnor_gemm(a: PackedSigns, b: PackedSigns, *, path: str = "auto") -> Tensor:
    """``a_i · b_j`` of the ±1 rows as int32 ``(M, N)``: ``2·popcount(XNOR) − K``.

    ``path``: ``"auto"`` (the C kernel's best path, else the twin), ``"scalar"`` (the C scalar-popcnt path) or
    ``"reference"`` (the torch-op twin).
    """
    _check_pair(a, b)
    if path not in ("auto", "scalar", "reference"):
        raise ValueError(f"path must be 'auto', 'scalar' or 'reference', got {path!r}")
    lib = _lib() if path != "reference" else None
    if lib is None or a.words.device.type != "cpu" or b.words.device.type != "cpu":
        if path == "scalar":
            raise RuntimeError("xnor_gemm: the C kernel is not available (no compiler or SEQZOO_NATIVE=0)")
        return xnor_gemm_reference(a, b)
    aw, bw = a.words.contiguous(), b.words.contiguous()
    out = torch.empty(a.rows, b.rows, dtype=torch.int32)
    if a.rows and b.rows:
        fn = lib.xnor_gemm_scalar if path == "scalar" else lib.xnor_gemm
        fn(aw.data_ptr(), bw.data_ptr(), a.rows, b.rows, a.k, aw.shape[1], out.data_ptr())
    return out


def binary_matmul(x: Tensor, w: Tensor) -> Tensor:
    """``sign(x) @ sign(w).T`` (sign(0) = +1) as int32 through the packed kernel; ``x (M, K)``, ``w (N, K)``."""
    return xnor_gemm(pack_signs(x), pack_signs(w))

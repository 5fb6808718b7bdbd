"""Reusable CPU work buffers for the hand-written recurrent loops.

Why: on the development machines a freshly mapped buffer costs about 0.3 ms per MiB at first touch, and glibc gives
large blocks back to the OS on free (``brk`` trims, ``munmap``), so a loop that allocates its chunk buffers anew on
every call pays the page faults every call (``docs/benchmarks.md``). ``take`` hands out views of buffers kept here
and reuses a buffer only when nothing outside this module still references its storage: a buffer saved for
backward (also with ``retain_graph=True``), returned to a caller or captured anywhere stays busy until the last
reference is gone. Nothing is ever handed out twice at the same time, so no ``give back`` call exists to forget.

``take`` is ``torch.empty`` for other devices, when ``SEQZOO_WORKSPACE_MB=0``, when the pool is full (default
512 MiB, ``SEQZOO_WORKSPACE_MB``), or on a torch without the storage use-count hook.
"""

from __future__ import annotations

import math
import os
import threading

import torch
from torch import Tensor

_lock = threading.Lock()
_pool: list[Tensor] = []
_USE_COUNT = getattr(torch._C, "_storage_Use_Count", None)


def _limit_bytes() -> int:
    try:
        return int(float(os.environ.get("SEQZOO_WORKSPACE_MB", "512")) * (1 << 20))
    except ValueError as err:
        raise ValueError(f"SEQZOO_WORKSPACE_MB must be a number of MiB, got "
                         f"{os.environ.get('SEQZOO_WORKSPACE_MB')!r}") from err


def _idle(buf: Tensor) -> bool:
    # References: the pool's own tensor and the temporary storage object made here; any view handed out adds one.
    return _USE_COUNT(buf.untyped_storage()._cdata) <= 2  # type: ignore[misc]


def take(shape: tuple[int, ...] | list[int], dtype: torch.dtype, device: torch.device | str = "cpu") -> Tensor:
    """An uninitialized tensor of ``shape`` (like ``torch.empty``), backed by a reused buffer where possible."""
    device = torch.device(device)
    numel = math.prod(shape)
    limit = _limit_bytes()
    if device.type != "cpu" or _USE_COUNT is None or limit <= 0 or numel == 0:
        return torch.empty(shape, dtype=dtype, device=device)
    with _lock:
        best = None
        for buf in _pool:
            if buf.dtype == dtype and numel <= buf.numel() <= 2 * numel and _idle(buf):
                if best is None or buf.numel() < best.numel():
                    best = buf
        if best is None:
            best = torch.empty(numel, dtype=dtype)
            used = sum(b.numel() * b.element_size() for b in _pool)
            if used + best.numel() * best.element_size() > limit:
                return best.view(shape)  # pool full: a plain allocation
            _pool.append(best)
        return best[:numel].view(shape)


def zeros(shape: tuple[int, ...] | list[int], dtype: torch.dtype, device: torch.device | str = "cpu") -> Tensor:
    """``take(...)`` filled with zeros."""
    return take(shape, dtype, device).zero_()


def clear() -> None:
    """Drop every buffer the pool holds (busy ones stay alive with their users)."""
    with _lock:
        _pool.clear()


def pooled_bytes() -> int:
    with _lock:
        return sum(b.numel() * b.element_size() for b in _pool)

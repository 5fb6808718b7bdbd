"""Chunk layout of the hand-written LSTM loops: chunk sizes, gate scaling, time-major buffers.

Both loops (``ops.lstm_loop`` with sites, ``ops.lstm_recurrence`` plain) keep activations in time-major chunks of
at most ``TRAIN_CHUNK_BYTES`` (kept for backward) or reuse one ``INFER_CHUNK_BYTES`` workspace (inference): fresh
whole-sequence buffers cost more in page faults than the gate math. Budgets are read at call time, so tests can
shrink them to exercise chunk boundaries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from seqzoo.ops import workspace

if TYPE_CHECKING:
    from seqzoo.ops.lstm_input_fill import InputFill


TRAIN_CHUNK_BYTES = 8 << 20  # bytes of one kept (steps, B, 4H) chunk in training
INFER_CHUNK_BYTES = 2 << 20  # bytes of the reused inference workspace: small enough to stay in cache


def chunk_budget(keep: bool) -> int:
    """The chunk budget in bytes: training chunks (kept for backward) or the inference workspace."""
    return TRAIN_CHUNK_BYTES if keep else INFER_CHUNK_BYTES


def chunk_steps(bsz: int, four_h: int, itemsize: int, budget: int) -> int:
    """Steps per chunk so that one (steps, B, width) buffer of ``itemsize`` bytes stays within ``budget`` (>= 1)."""
    return max(1, budget // max(1, bsz * four_h * itemsize))


def gate_scale(hidden: int, like: Tensor) -> Tensor:
    """``(4H,)`` vector: 1 on the i, f, o rows and 2 on the g rows (for ``tanh(z) = 2 sigmoid(2z) - 1``)."""
    d = torch.ones(4 * hidden, dtype=like.dtype, device=like.device)
    d[2 * hidden : 3 * hidden] = 2.0
    return d


def backward_buffers(hs: Tensor, grad_ys: Tensor | None, grad_h: Tensor | None, grad_c: Tensor | None,
                      need_w: bool, need_b: bool) -> tuple[tuple[Tensor, ...], Tensor, Tensor | None, Tensor | None]:
    """Start of a hand-written BPTT over time-major ``hs`` (L+1, B, H): ``(dh per step, dc, dW_hh, db_hh)``.

    The dh buffer holds the output gradient of every step (plus ``grad_h`` at the last); the backward loop
    accumulates the recurrent term into it in place.
    """
    seq_len, hidden = hs.shape[0] - 1, hs.shape[2]
    dh_buf = hs.new_empty(seq_len, hs.shape[1], hidden)
    if grad_ys is not None:
        dh_buf.copy_(grad_ys.transpose(0, 1))
    else:
        dh_buf.zero_()
    if grad_h is not None:
        dh_buf[seq_len - 1].add_(grad_h)
    dc = grad_c.clone() if grad_c is not None else torch.zeros_like(hs[0])
    grad_w = hs.new_zeros(4 * hidden, hidden) if need_w else None
    grad_b = hs.new_zeros(4 * hidden) if need_b else None
    return dh_buf.unbind(0), dc, grad_w, grad_b


def time_major_mask(mask: Tensor | None) -> Tensor | None:
    return mask.t().unsqueeze(-1).contiguous() if mask is not None else None  # (L, B, 1)



def grad_wanted(*tensors: Tensor | None) -> bool:
    """True when autograd will need a backward through the loop for any of these tensors."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def state_buffers(h0: Tensor, c0: Tensor, seq_len: int) -> tuple[Tensor, Tensor]:
    """Time-major ``hs``, ``cs`` (L+1, B, H) with ``h0``/``c0`` first, from the workspace pool."""
    hs = workspace.take((seq_len + 1, *h0.shape), h0.dtype, h0.device)
    hs[0] = h0
    cs = workspace.take((seq_len + 1, *h0.shape), h0.dtype, h0.device)
    cs[0] = c0
    return hs, cs


def forward_chunk_steps(h0: Tensor, keep: bool) -> int:
    four_h = 4 * h0.shape[1]
    return chunk_steps(h0.shape[0], 2 * four_h + h0.shape[1], h0.element_size(),
                        chunk_budget(keep))


def forward_chunks(fill: InputFill, h0: Tensor, seq_len: int, step: int, keep: bool,
                    chunks: list[tuple[Tensor, Tensor, Tensor]], pre_in_inference: bool = True):
    """Yield ``(t0, n, acts, pre, tcn)`` per chunk: the filled gate inputs and the (reused unless ``keep``) buffers.

    With ``keep`` each chunk's buffers are new and appended to ``chunks`` for backward; ``pre`` (the recurrent
    pre-activations) is only allocated in inference when ``pre_in_inference``.
    """
    bsz, hidden = h0.shape
    four_h = 4 * hidden
    work: tuple[Tensor, Tensor, Tensor] | None = None
    for t0 in range(0, seq_len, step):
        n = min(step, seq_len - t0)
        if keep or work is None:
            m_alloc = n if keep else min(step, seq_len)
            gate_buf = workspace.take((m_alloc if fill.norm is None else 0, bsz, four_h), h0.dtype, h0.device)
            pre_buf = workspace.take((m_alloc if keep or pre_in_inference else 0, bsz, four_h), h0.dtype, h0.device)
            work = (gate_buf, pre_buf, workspace.take((m_alloc, bsz, hidden), h0.dtype, h0.device))
        buf = fill.fill(t0, n, work[0][:n])
        if not buf.is_contiguous():
            buf = buf.contiguous()
        pre, tcn = work[1][:n], work[2][:n]
        if keep:
            chunks.append((buf, pre, tcn))
        yield t0, n, buf, pre, tcn


"""The plain LSTM over pre-projected (``lstm_sequence``) or raw inputs (``lstm_layer``), and its reference twin.

``gates_t = xp_t + h_{t-1} W_hh^T + b_hh`` with ``xp_t = x_t W_ih^T + b_ih``, torch gate order (i, f, g, o), so
weights copy to and from ``torch.nn.LSTM``. ``mask`` (B, L) bool: where False the step is padding and (h, c) are
carried unchanged (the output at a padded step is the carried ``h``).

``lstm_sequence_reference`` is the slow, obviously-correct twin (autograd through a plain loop). The fast path is
the one hand-written BPTT loop shared with the LN/ATN LSTM, ``ops.lstm_loop.norm_lstm_sequence``, with identity
sites: its C chunk kernels where they are built (CPU, float32/float64), else its torch-op loop. (Until 2026-12-07
this module had a second hand-written loop of its own. Measured without the C kernels at the benchmark shape, that
loop and the shared loop's torch-op path were equal forward+backward (1.14–1.22 vs 1.15–1.23 × ``nn.LSTM``, three
runs); the forward alone was 2–11 % slower on the shared loop (see docs/benchmarks.md). One route was enough.)
``lstm_layer`` does the input projection inside the loop, chunk by chunk, so the (B, L, 4H) projected input and its
gradient never exist as whole tensors. Under autocast both run in the weights' dtype (the cell state is never
accumulated in bfloat16). Double backward is not supported.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqzoo.ops.lstm_loop import norm_lstm_sequence
from seqzoo.ops.lstm_sites import IDENTITY_SITE

PLAIN_SITES = {"x": IDENTITY_SITE, "h": IDENTITY_SITE, "c": IDENTITY_SITE}


def lstm_sequence_reference(
    xp: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor, bias_hh: Tensor | None, mask: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Return ``(hs (B, L, H), h_T, c_T)`` by a plain autograd loop."""
    h, c = h0, c0
    outs = []
    masks = mask.unbind(1) if mask is not None else [None] * xp.shape[1]
    for xp_t, m in zip(xp.unbind(1), masks):
        gates = xp_t + h @ weight_hh.t()
        if bias_hh is not None:
            gates = gates + bias_hh
        i, f, g, o = gates.chunk(4, dim=-1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        if m is not None:
            m = m.unsqueeze(-1)
            h_new = torch.where(m, h_new, h)
            c_new = torch.where(m, c_new, c)
        h, c = h_new, c_new
        outs.append(h)
    return torch.stack(outs, 1), h, c


def _check(who: str, xp_like: Tensor, four_h_of_x: int | None, h0: Tensor, c0: Tensor, weight_hh: Tensor,
           biases: dict[str, Tensor | None], mask: Tensor | None, extra: list[Tensor]) -> None:
    name = "xp" if four_h_of_x is None else "x"
    if xp_like.dim() != 3:
        want = "4*hidden" if four_h_of_x is None else "input_size"
        raise ValueError(f"{who}: {name} must have shape (batch, seq_len, {want}), got {tuple(xp_like.shape)}")
    bsz, seq_len, last = xp_like.shape
    if weight_hh.dim() != 2 or weight_hh.shape[0] != 4 * weight_hh.shape[1]:
        raise ValueError(f"{who}: weight_hh must have shape (4*hidden, hidden), got {tuple(weight_hh.shape)}")
    hidden = weight_hh.shape[1]
    if four_h_of_x is None and last != 4 * hidden:
        raise ValueError(f"{who}: xp last dimension must be 4*hidden={4 * hidden}, got {last}")
    if seq_len == 0:
        raise ValueError(f"{who}: seq_len must be at least 1, got an empty sequence")
    for sname, s in (("h0", h0), ("c0", c0)):
        if s.shape != (bsz, hidden):
            raise ValueError(f"{who}: {sname} must have shape (batch, hidden)={(bsz, hidden)}, got {tuple(s.shape)}")
    for bname, b in biases.items():
        if b is not None and b.shape != (4 * hidden,):
            raise ValueError(f"{who}: {bname} must have shape ({4 * hidden},), got {tuple(b.shape)}")
    if mask is not None and mask.shape != (bsz, seq_len):
        raise ValueError(f"{who}: mask must have shape (batch, seq_len)={(bsz, seq_len)}, got {tuple(mask.shape)}")
    tensors = [xp_like, h0, c0, weight_hh, *extra] + [b for b in biases.values() if b is not None]
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) != 1 or not xp_like.is_floating_point():
        raise TypeError(f"{who}: all tensor arguments but mask must share one floating dtype, "
                        f"got {sorted(str(d) for d in dtypes)}")


def lstm_sequence(
    xp: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor, bias_hh: Tensor | None, mask: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Fast LSTM loop (same contract as ``lstm_sequence_reference``): ``(hs (B, L, H), h_T, c_T)``.

    Under autocast the loop runs in the weights' dtype (float32): xp, h0 and c0 are cast up, so the
    cell state is never accumulated in bfloat16. Double backward is not supported.
    """
    if torch.is_autocast_enabled(xp.device.type):
        dtype = weight_hh.dtype
        with torch.autocast(xp.device.type, enabled=False):
            return lstm_sequence(xp.to(dtype), h0.to(dtype), c0.to(dtype), weight_hh, bias_hh, mask)
    _check("lstm_sequence", xp, None, h0, c0, weight_hh, {"bias_hh": bias_hh}, mask, [])
    hs, h, c, _ = norm_lstm_sequence(xp, h0, c0, weight_hh, bias_hh, PLAIN_SITES, mask)
    return hs, h, c


def lstm_layer(
    x: Tensor, weight_ih: Tensor, bias_ih: Tensor | None, h0: Tensor, c0: Tensor, weight_hh: Tensor,
    bias_hh: Tensor | None, mask: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``lstm_sequence(x W_ih^T + b_ih, h0, c0, W_hh, b_hh, mask)`` with the projection fused into the loop.

    Same outputs and gradients (also for ``x``, ``weight_ih`` and ``bias_ih``); the projected input is
    computed and differentiated per chunk of steps, which saves two (B, L, 4H) buffers per call.
    """
    if torch.is_autocast_enabled(x.device.type):
        dtype = weight_hh.dtype
        with torch.autocast(x.device.type, enabled=False):
            return lstm_layer(x.to(dtype), weight_ih, bias_ih, h0.to(dtype), c0.to(dtype), weight_hh, bias_hh, mask)
    _check("lstm_layer", x, x.shape[-1] if x.dim() == 3 else 0, h0, c0, weight_hh,
           {"bias_ih": bias_ih, "bias_hh": bias_hh}, mask, [weight_ih])
    if weight_ih.shape != (weight_hh.shape[0], x.shape[-1]):
        raise ValueError(f"lstm_layer: weight_ih must have shape (4*hidden, input_size)="
                         f"{(weight_hh.shape[0], x.shape[-1])}, got {tuple(weight_ih.shape)}")
    hs, h, c, _ = norm_lstm_sequence(x, h0, c0, weight_hh, bias_hh, PLAIN_SITES, mask, weight_ih=weight_ih,
                                     bias_ih=bias_ih)
    return hs, h, c

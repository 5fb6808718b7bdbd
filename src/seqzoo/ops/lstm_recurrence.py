"""The LSTM time loop over pre-projected inputs: ``gates_t = xp_t + h_{t-1} W_hh^T + b_hh``.

``lstm_sequence_reference`` is the slow, obviously-correct twin (autograd through a plain loop).
``lstm_sequence`` is the fast path with the same contract: a custom autograd Function with a
hand-written backward through time. ``lstm_layer`` is the same fast loop with the input projection
``x W_ih^T + b_ih`` done inside, chunk by chunk, so the (B, L, 4H) projected input and its gradient
never exist as whole tensors. Gate order is torch's (i, f, g, o), so weights copy to and from
``torch.nn.LSTM``. ``mask`` (B, L) bool: where False the step is padding and (h, c) are carried
unchanged (the output at a padded step is the carried ``h``).

Why the fast path is fast (on CPU, per-step dispatch overhead and memory traffic around the GEMMs are
what an eager loop loses to the fused kernel):

* Time-major chunks: the gate buffer is filled chunk by chunk (``b_hh`` added once, g rows scaled),
  every per-step slice is contiguous, and no buffer exceeds a few MiB. Whole (B, L, 4H) buffers
  (32 MiB at the benchmark size) are served by fresh pages from the OS on every call, and first-touching
  them cost ~14 ms each on the measured machine — as much as all the gate math.
* Forward, eight ops a step: one in-place ``addmm_`` into the gate buffer, one ``sigmoid_`` over all
  4H gates (``tanh(z) = 2 sigmoid(2z) - 1`` with the g rows pre-scaled by 2, one op to fix g), and the
  cell state is stored doubled, ``2c``, so ``tanh(c)`` is again a sigmoid (ATen's CPU tanh is ~4x
  slower than its sigmoid) — the rest are single pointwise ops into preallocated buffers.
* Backward, five ops a step: every factor that does not depend on the incoming gradient (gate
  derivatives times what they multiply) is computed for a whole chunk at once before its steps; the
  ``dh_{t-1}`` GEMM accumulates in place into the output-gradient buffer; ``dW_hh`` (and ``dW_ih`` in
  ``lstm_layer``) are one large GEMM per chunk, not per step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from seqzoo.ops.gemm import addmm_into, mm, mm_into


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


# Chunk budgets (bytes of one (steps, B, 4H) gate chunk). Training chunks are kept for backward; the
# inference workspace is reused chunk after chunk and small enough to stay in cache.
_TRAIN_CHUNK_BYTES = 8 << 20
_INFER_CHUNK_BYTES = 2 << 20

Fill = Callable[[int, int, Tensor], None]  # fill(t0, n, out (n, B, 4H)) with d * (all gate inputs of t0..t0+n)
Consume = Callable[[int, int, Tensor], None]  # consume(t0, n, dgates (n, B, 4H)) for t0..t0+n


def _chunk_steps(bsz: int, four_h: int, itemsize: int, budget: int) -> int:
    return max(1, budget // max(1, bsz * four_h * itemsize))


def _gate_scale(hidden: int, like: Tensor) -> Tensor:
    """``(4H,)`` vector: 1 on the i, f, o rows and 2 on the g rows (for ``tanh(z) = 2 sigmoid(2z) - 1``)."""
    d = torch.ones(4 * hidden, dtype=like.dtype, device=like.device)
    d[2 * hidden : 3 * hidden] = 2.0
    return d


def _backward_buffers(hs: Tensor, grad_ys: Tensor | None, grad_h: Tensor | None, grad_c: Tensor | None,
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


def _time_major_mask(mask: Tensor | None) -> Tensor | None:
    return mask.t().unsqueeze(-1).contiguous() if mask is not None else None  # (L, B, 1)


def _forward_core(
    fill: Fill, seq_len: int, h0: Tensor, c0: Tensor, weight_hh: Tensor, mask_tm: Tensor | None, keep: bool
) -> tuple[Tensor, Tensor, list[Tensor], Tensor | None, int]:
    """The forward loop. Returns ``(hs, c_T, act_chunks, cs2, chunk_steps)``.

    ``hs`` (L+1, B, H) is time-major with ``h0`` first. With ``keep`` the gate activations (i, f, o
    sigmoids, g tanh) are kept in ``act_chunks`` (each (chunk_steps, B, 4H), the last maybe shorter) and
    ``cs2`` (L+1, B, H) holds the doubled cell states ``2c`` with ``2 c0`` first. Without ``keep`` one
    workspace chunk is reused and ``2c`` is updated in place (``cs2`` is kept only when a mask needs the
    previous c).
    """
    bsz, hidden = h0.shape
    four_h = 4 * hidden
    h2, h3 = 2 * hidden, 3 * hidden
    d = _gate_scale(hidden, h0)
    w_t = (weight_hh * d.unsqueeze(1)).t()  # (H, 4H) view; BLAS takes the transposed layout directly
    hs = h0.new_empty(seq_len + 1, bsz, hidden)
    hs[0] = h0
    tanh_c = h0.new_empty(bsz, hidden)
    minus_one = torch.full((), -1.0, dtype=h0.dtype, device=h0.device)
    step = _chunk_steps(bsz, four_h, h0.element_size(), _TRAIN_CHUNK_BYTES if keep else _INFER_CHUNK_BYTES)
    cs2: Tensor | None = None
    if keep or mask_tm is not None:
        cs2 = h0.new_empty(seq_len + 1, bsz, hidden)
        torch.mul(c0, 2, out=cs2[0])
        c_steps = cs2.unbind(0)
    else:
        c_run = c0 * 2
        c_steps = (c_run,) * (seq_len + 1)
    h_steps = hs.unbind(0)
    m_steps = mask_tm.unbind(0) if mask_tm is not None else None
    chunks: list[Tensor] = []
    workspace: Tensor | None = None
    for t0 in range(0, seq_len, step):
        n = min(step, seq_len - t0)
        if keep:
            buf = h0.new_empty(n, bsz, four_h)
            chunks.append(buf)
        else:
            if workspace is None:
                workspace = h0.new_empty(min(step, seq_len), bsz, four_h)
            buf = workspace[:n]
        fill(t0, n, buf)  # overwritten step by step with the activations
        # Per-step views made in one C++ call each (cheaper than slicing in the loop).
        a_s, i_s, f_s = buf.unbind(0), buf[..., :hidden].unbind(0), buf[..., hidden:h2].unbind(0)
        g_s, o_s = buf[..., h2:h3].unbind(0), buf[..., h3:].unbind(0)
        for j in range(n):
            t = t0 + j
            a, g, c_prev, c_t, h_prev, h_t = a_s[j], g_s[j], c_steps[t], c_steps[t + 1], h_steps[t], h_steps[t + 1]
            mm_into(a, h_prev, w_t, accumulate=True)
            a.sigmoid_()
            torch.add(minus_one, g, alpha=2, out=g)  # = tanh of the unscaled g pre-activation
            torch.mul(f_s[j], c_prev, out=c_t)  # 2c_t = f 2c_{t-1} + 2 i g
            c_t.addcmul_(i_s[j], g, value=2)
            torch.sigmoid(c_t, out=tanh_c)
            torch.add(minus_one, tanh_c, alpha=2, out=tanh_c)  # tanh(c_t)
            torch.mul(o_s[j], tanh_c, out=h_t)
            if m_steps is not None:
                torch.where(m_steps[t], h_t, h_prev, out=h_t)
                torch.where(m_steps[t], c_t, c_prev, out=c_t)
    return hs, c_steps[seq_len] * 0.5, chunks, cs2, step


def _backward_core(
    chunks: list[Tensor], step: int, cs2: Tensor, hs: Tensor, weight_hh: Tensor, mask_tm: Tensor | None,
    grad_ys: Tensor | None, grad_h: Tensor | None, grad_c: Tensor | None, need_h0: bool, need_w: bool,
    need_b: bool, consume: Consume | None,
) -> tuple[Tensor | None, Tensor, Tensor | None, Tensor | None]:
    """Backward through time. Returns ``(dh0, dc0, dW_hh, db)``; ``consume`` receives each chunk's dgates."""
    seq_len = hs.shape[0] - 1
    bsz, hidden = hs.shape[1], hs.shape[2]
    four_h = 4 * hidden
    h2, h3 = 2 * hidden, 3 * hidden
    one = torch.ones((), dtype=hs.dtype, device=hs.device)
    minus_one = -one
    dh_steps, dc, grad_w, grad_b = _backward_buffers(hs, grad_ys, grad_h, grad_c, need_w, need_b)
    dh: Tensor | None = dh_steps[seq_len - 1]
    q_work = hs.new_empty(chunks[0].shape)  # one chunk of dgates, reused (the first chunk is the longest)

    for k in range(len(chunks) - 1, -1, -1):
        acts = chunks[k]
        n = acts.shape[0]
        t0 = k * step
        # qk: first every factor that does not depend on the incoming gradient (gate derivative times the
        # value its activation multiplies), for the whole chunk; then turned into dgates in place.
        qk = q_work[:n]
        i_act, f_act, g_act, o_act = acts[..., :hidden], acts[..., hidden:h2], acts[..., h2:h3], acts[..., h3:]
        q_i, q_f, q_g, q_o = qk[..., :hidden], qk[..., hidden:h2], qk[..., h2:h3], qk[..., h3:]
        tanh_c = torch.sigmoid(cs2[t0 + 1 : t0 + n + 1])
        torch.add(minus_one, tanh_c, alpha=2, out=tanh_c)
        torch.addcmul(i_act, i_act, i_act, value=-1, out=q_i)  # i (1 - i) * g
        q_i.mul_(g_act)
        torch.addcmul(f_act, f_act, f_act, value=-1, out=q_f)  # f (1 - f) * c_{t-1}  (cs2 holds 2c)
        q_f.mul_(cs2[t0 : t0 + n]).mul_(0.5)
        torch.addcmul(one, g_act, g_act, value=-1, out=q_g)  # (1 - g^2) * i
        q_g.mul_(i_act)
        torch.addcmul(o_act, o_act, o_act, value=-1, out=q_o)  # o (1 - o) * tanh(c)
        q_o.mul_(tanh_c)
        r = torch.addcmul(one, tanh_c, tanh_c, value=-1).mul_(o_act)  # d c_t / d h_t = o (1 - tanh(c)^2)
        pass_s = None
        if mask_tm is not None:
            mk = mask_tm[t0 : t0 + n]
            qk.mul_(mk)
            r.mul_(mk)
            fwd_c = torch.where(mk, f_act, one)  # d c_t / d c_{t-1}: f on real steps, 1 on padded ones
            pass_s = (~mk).to(hs.dtype).unbind(0)  # padded steps pass dh straight through to h_{t-1}
        else:
            fwd_c = f_act
        q_s, q3_s = qk.unbind(0), qk[..., :h3].unflatten(-1, (3, hidden)).unbind(0)  # q3: the i, f, g blocks
        qo_s, r_s, fc_s = q_o.unbind(0), r.unbind(0), fwd_c.unbind(0)
        for j in range(n - 1, -1, -1):
            t = t0 + j
            dc.addcmul_(dh, r_s[j])
            q3_s[j].mul_(dc.unsqueeze(1))
            qo_s[j].mul_(dh)
            dc.mul_(fc_s[j])
            if t > 0:
                dh_next = mm_into(dh_steps[t - 1], q_s[j], weight_hh, accumulate=True)
            elif need_h0:
                dh_next = mm(q_s[0], weight_hh)
            else:
                dh_next = None
            if dh_next is not None and pass_s is not None:
                dh_next.addcmul_(dh, pass_s[j])
            dh = dh_next
        q_flat = qk.view(n * bsz, four_h)
        if grad_w is not None:  # dW_hh += dgates^T h_{t-1} over the chunk: one GEMM
            mm_into(grad_w, q_flat.t(), hs[t0 : t0 + n].view(n * bsz, hidden), accumulate=True)
        if grad_b is not None:
            grad_b.add_(q_flat.sum(0))
        if consume is not None:
            consume(t0, n, qk)
    return (dh if need_h0 else None), dc, grad_w, grad_b


def _outputs(hs: Tensor, c_last: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return hs[1:].transpose(0, 1).contiguous(), hs[-1].clone(), c_last


def _sequence_fill(xp: Tensor, bias_hh: Tensor | None) -> Fill:
    d = _gate_scale(xp.shape[-1] // 4, xp)
    bias_d = bias_hh * d if bias_hh is not None else None

    def fill(t0: int, n: int, out: Tensor) -> None:
        src = xp[:, t0 : t0 + n].transpose(0, 1)
        if bias_d is not None:
            torch.addcmul(bias_d, src, d, out=out)
        else:
            torch.mul(src, d, out=out)

    return fill


def _layer_fill(x: Tensor, weight_ih: Tensor, bias: Tensor | None) -> Fill:
    """Gate inputs ``d * (x W_ih^T + b)`` of a chunk: a small time-major copy of x, then one GEMM."""
    hidden = weight_ih.shape[0] // 4
    d = _gate_scale(hidden, x)
    w_ih_t = (weight_ih * d.unsqueeze(1)).t()
    bias_d = bias * d if bias is not None else None
    bsz, _, d_in = x.shape
    x_work: list[Tensor] = []

    def fill(t0: int, n: int, out: Tensor) -> None:
        if not x_work:
            x_work.append(x.new_empty(n, bsz, d_in))
        xc = x_work[0][:n]
        xc.copy_(x[:, t0 : t0 + n].transpose(0, 1))
        addmm_into(out.view(n * bsz, 4 * hidden), bias_d, xc.view(n * bsz, d_in), w_ih_t)

    return fill


class _LSTMSequence(torch.autograd.Function):
    """``lstm_sequence`` with a hand-written backward through time."""

    @staticmethod
    def forward(ctx, xp, h0, c0, weight_hh, bias_hh, mask):  # type: ignore[override]
        mask_tm = _time_major_mask(mask)
        hs, c_last, chunks, cs2, step = _forward_core(_sequence_fill(xp, bias_hh), xp.shape[1], h0, c0,
                                                      weight_hh, mask_tm, keep=True)
        ctx.step = step
        ctx.save_for_backward(cs2, hs, weight_hh, mask_tm, *chunks)
        return _outputs(hs, c_last)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_ys, grad_h, grad_c):  # type: ignore[override]
        cs2, hs, weight_hh, mask_tm, *chunks = ctx.saved_tensors
        need_xp, need_h0, need_c0, need_w, need_b, _ = ctx.needs_input_grad
        grad_xp = None
        if need_xp:
            bsz, hidden = hs.shape[1], hs.shape[2]
            grad_xp = hs.new_empty(bsz, hs.shape[0] - 1, 4 * hidden)
            grad_xp_tm = grad_xp.transpose(0, 1)

        def consume(t0: int, n: int, q: Tensor) -> None:
            if need_xp:
                grad_xp_tm[t0 : t0 + n].copy_(q)

        dh0, dc0, grad_w, grad_b = _backward_core(chunks, ctx.step, cs2, hs, weight_hh, mask_tm, grad_ys, grad_h,
                                                  grad_c, need_h0, need_w, need_b, consume)
        return grad_xp, dh0, dc0 if need_c0 else None, grad_w, grad_b, None


class _LSTMLayer(torch.autograd.Function):
    """``lstm_layer``: the input projection is done per chunk inside the forward and the backward."""

    @staticmethod
    def forward(ctx, x, weight_ih, bias_ih, h0, c0, weight_hh, bias_hh, mask):  # type: ignore[override]
        bias = _sum_bias(bias_ih, bias_hh)
        mask_tm = _time_major_mask(mask)
        hs, c_last, chunks, cs2, step = _forward_core(_layer_fill(x, weight_ih, bias), x.shape[1], h0, c0,
                                                      weight_hh, mask_tm, keep=True)
        ctx.step = step
        ctx.save_for_backward(x, weight_ih, cs2, hs, weight_hh, mask_tm, *chunks)
        return _outputs(hs, c_last)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_ys, grad_h, grad_c):  # type: ignore[override]
        x, weight_ih, cs2, hs, weight_hh, mask_tm, *chunks = ctx.saved_tensors
        need_x, need_w_ih, need_b_ih, need_h0, need_c0, need_w_hh, need_b_hh, _ = ctx.needs_input_grad
        bsz, seq_len, d_in = x.shape
        dx_tm = x.new_empty(seq_len, bsz, d_in) if need_x else None
        grad_w_ih = weight_ih.new_zeros(weight_ih.shape) if need_w_ih else None
        x_work: list[Tensor] = []

        def consume(t0: int, n: int, q: Tensor) -> None:
            q_flat = q.view(n * bsz, -1)
            if dx_tm is not None:
                mm_into(dx_tm[t0 : t0 + n].view(n * bsz, d_in), q_flat, weight_ih)
            if grad_w_ih is not None:
                if not x_work:  # the first chunk consumed is the last (maybe shorter) one
                    x_work.append(x.new_empty(min(ctx.step, seq_len), bsz, d_in))
                xc = x_work[0][:n]
                xc.copy_(x[:, t0 : t0 + n].transpose(0, 1))
                mm_into(grad_w_ih, q_flat.t(), xc.view(n * bsz, d_in), accumulate=True)

        dh0, dc0, grad_w_hh, grad_b = _backward_core(chunks, ctx.step, cs2, hs, weight_hh, mask_tm, grad_ys,
                                                     grad_h, grad_c, need_h0, need_w_hh, need_b_ih or need_b_hh,
                                                     consume)
        dx = dx_tm.transpose(0, 1).contiguous() if dx_tm is not None else None
        return (dx, grad_w_ih, grad_b if need_b_ih else None, dh0, dc0 if need_c0 else None, grad_w_hh,
                grad_b if need_b_hh else None, None)


def _sum_bias(bias_ih: Tensor | None, bias_hh: Tensor | None) -> Tensor | None:
    if bias_ih is None:
        return bias_hh
    return bias_ih if bias_hh is None else bias_ih + bias_hh


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


def _grad_wanted(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


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
    mask = mask.bool() if mask is not None else None
    if _grad_wanted(xp, h0, c0, weight_hh, bias_hh):
        return _LSTMSequence.apply(xp, h0, c0, weight_hh, bias_hh, mask)
    hs, c_last, _, _, _ = _forward_core(_sequence_fill(xp, bias_hh), xp.shape[1], h0, c0, weight_hh,
                                        _time_major_mask(mask), keep=False)
    return _outputs(hs, c_last)


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
    mask = mask.bool() if mask is not None else None
    if _grad_wanted(x, weight_ih, bias_ih, h0, c0, weight_hh, bias_hh):
        return _LSTMLayer.apply(x, weight_ih, bias_ih, h0, c0, weight_hh, bias_hh, mask)
    hs, c_last, _, _, _ = _forward_core(_layer_fill(x, weight_ih, _sum_bias(bias_ih, bias_hh)), x.shape[1], h0,
                                        c0, weight_hh, _time_major_mask(mask), keep=False)
    return _outputs(hs, c_last)

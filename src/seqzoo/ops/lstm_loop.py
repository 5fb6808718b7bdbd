"""The LSTM time loop with normalization sites (LN-LSTM / ATN-LSTM layout of Ba et al. 2016; identity sites: plain).

Per step, with ``xn_t`` the normalized input site (LayerNorm: done chunk by chunk inside the fast path;
ATN: for all steps at once by ``ops.window_norm.window_normalize_sequence`` before the loop)::

    gates_t = xn_t + N_h(h_{t-1} W_hh^T + b_hh)             # N_h over all 4H pre-activations jointly
    c_t     = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g)                 # torch gate order (i, f, g, o)
    h_t     = σ(o) ⊙ tanh(N_c(c_t))                          # the carried c_t stays un-normalized

Each in-loop site norm ``N`` is described by a ``SiteNorm(window, weight, bias, eps)`` (``ops.lstm_sites``):
``window=None`` is LayerNorm over the current pre-activation, ``window=k`` is Assorted-Time Normalization (statistics
pooled over the last ``k`` pre-activations of the site, spec §1; its state is the ring buffer of
``ops.window_norm``). ``ops.lstm_reference.norm_lstm_sequence_reference`` is the slow, obviously-correct twin
(autograd through a plain loop); ``norm_lstm_sequence`` is the fast path with the same contract: a custom autograd
Function with a hand-written backward through time, the only one for the LSTM (``ops.lstm_recurrence`` runs the plain
LSTM through it with identity sites):

* Forward: time-major chunks of gate buffers; per step one ``addmm`` for the recurrent pre-activation
  (kept for backward), the site norm (LayerNorm: one ``native_layer_norm``; ATN: running window sums of
  ``(Σa, Σa²)`` updated in O(1) from a time-major history, a dozen tiny ops on (B, 2) tensors), one
  ``sigmoid_`` over all 4H gates (``tanh(z) = 2σ(2z) − 1`` with the g rows scaled by 2 through the norm's
  gain and bias) and a sigmoid for ``tanh(N_c(c_t))`` (the c-site gain and bias are doubled).
* Backward: everything that does not depend on the incoming gradient is computed per chunk before its
  steps; per step the site backward is one ``native_layer_norm_backward`` (LayerNorm) or, for ATN, the
  gradient of the window statistics as two per-sample scalars (one tiny ``bmm`` with a per-chunk 2x2
  factor) whose effect on the earlier steps of the window is a reverse running sum; ``dW_hh``, ``db_hh``
  and the norm gains and biases are one reduction per chunk.

C kernels: on CPU in float32/float64 each chunk of steps runs in one C call (``csrc/norm_lstm_step.cpp``, built
and cached by ``ops.native_kernels``), recurrent products included (split by columns over the OpenMP threads):
forward the site statistics, gates, cell update and output; backward the gate derivatives from the saved
activations, both site backwards (with their gain/bias gradients accumulated in place) and the padding
pass-through. An ATN input site is one C call per chunk. Under the bf16 path the per-step products stay bfloat16
oneDNN GEMMs in Python and only the pointwise work of a step is one C call. Python keeps the chunking, the large
GEMMs (``ops.gemm``: oneDNN) and the per-chunk reductions; without a compiler (or with ``SEQZOO_NATIVE=0``) the
torch-op loop described above runs instead, with the same results. Both are tested against the reference twin.
Identity sites (``SiteNorm(0, ...)``) make the same loop serve the plain LSTM.

The pieces, one module each: ``ops.lstm_sites`` (the site contract and the LN/ATN/identity sites),
``ops.lstm_input_fill`` (the input site and projection per chunk), ``ops.lstm_chunks`` (chunk sizes and buffers),
``ops.lstm_kernel_abi`` (ctypes mirror of the C structs), ``ops.lstm_kernel_driver`` (the C calls per chunk) and
this module (the torch-op loop, the autograd Function and the public entry point).

Limits (the caller falls back to the generic loop): ATN sites take no ``mask``, and gradients do not flow
into or out of the ATN window states (``h_state``/``c_state`` must not require grad; the returned states
are detached) — the spec resets windows per batch and per BPTT segment, so nothing crosses them. The
variance clamp at 0 of the reference is not differentiated (only matters for a constant window).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from seqzoo.ops import workspace
from seqzoo.ops.gemm import addmm_into, mm, mm_into
from seqzoo.ops.lstm_chunks import (
    backward_buffers,
    forward_chunk_steps,
    forward_chunks,
    gate_scale,
    grad_wanted,
    state_buffers,
    time_major_mask,
)
from seqzoo.ops.lstm_input_fill import InputFill
from seqzoo.ops.lstm_kernel_abi import LoopCfg, native_lib, ptr
from seqzoo.ops.lstm_kernel_driver import backward_chunk_native, forward_native
from seqzoo.ops.lstm_sites import LNSite, SiteNorm, WindowSite, is_identity, is_window, make_site
from seqzoo.ops.window_norm import WindowState


def _forward_core(fill: InputFill, h0: Tensor, c0: Tensor, weight_hh: Tensor, bias_hh: Tensor | None,
                  site_h: LNSite | WindowSite, site_c: LNSite | WindowSite, mask_tm: Tensor | None,
                  keep: bool, lp: torch.dtype | None = None):
    """The forward loop; returns ``(hs, c_T, chunks, step)`` with ``chunks`` per chunk ``(acts, pre_h, tanh_cn)``."""
    seq_len = fill.xin.shape[1]
    hidden = h0.shape[1]
    h2, h3 = 2 * hidden, 3 * hidden
    w_t = weight_hh.t()
    w_lp_t = weight_hh.to(lp).t() if lp is not None else None
    hs, cs = state_buffers(h0, c0, seq_len)
    minus_one = torch.full((), -1.0, dtype=h0.dtype, device=h0.device)
    step = forward_chunk_steps(h0, keep)
    h_steps, c_steps = hs.unbind(0), cs.unbind(0)
    m_steps = mask_tm.unbind(0) if mask_tm is not None else None
    chunks: list[tuple[Tensor, Tensor, Tensor]] = []
    for t0, n, buf, pre, tcn in forward_chunks(fill, h0, seq_len, step, keep, chunks):
        a_s, i_s, f_s = buf.unbind(0), buf[..., :hidden].unbind(0), buf[..., hidden:h2].unbind(0)
        g_s, o_s = buf[..., h2:h3].unbind(0), buf[..., h3:].unbind(0)
        p_s, tc_s = pre.unbind(0), tcn.unbind(0)
        for j in range(n):
            t = t0 + j
            c_prev, c_t, h_prev, h_t, p = c_steps[t], c_steps[t + 1], h_steps[t], h_steps[t + 1], p_s[j]
            if w_lp_t is not None:  # bfloat16 GEMM, float32 pre-activation
                p_lp = mm(h_prev.to(lp), w_lp_t)
                if bias_hh is not None:
                    torch.add(bias_hh, p_lp, out=p)
                else:
                    p.copy_(p_lp)
            else:
                addmm_into(p, bias_hh, h_prev, w_t)
            a = a_s[j]
            a.add_(site_h.forward(t, p))
            a.sigmoid_()
            g = g_s[j]
            torch.add(minus_one, g, alpha=2, out=g)
            torch.mul(f_s[j], c_prev, out=c_t)
            c_t.addcmul_(i_s[j], g)
            y = site_c.forward(t, c_t)
            y.sigmoid_()
            tc = tc_s[j]
            torch.add(minus_one, y, alpha=2, out=tc)
            torch.mul(o_s[j], tc, out=h_t)
            if m_steps is not None:
                torch.where(m_steps[t], h_t, h_prev, out=h_t)
                torch.where(m_steps[t], c_t, c_prev, out=c_t)
    return hs, cs, chunks, step


class _NormLSTMSequence(torch.autograd.Function):
    """``norm_lstm_sequence`` with a hand-written backward through time."""

    @staticmethod
    def forward(ctx, xp, weight_ih, bias_ih, h0, c0, weight_hh, bias_hh, gx, bx, gh, bh, gc, bc, mask,  # type: ignore
                cfg):
        mask_tm = time_major_mask(mask)
        fill, site_h, site_c = cfg.make_sites(xp, h0, keep=True, weight_ih=weight_ih, bias_ih=bias_ih)
        lib = native_lib(h0)
        ctx.native = None
        if lib is not None:
            hs, cs, chunks, step, ctx.native = forward_native(lib, fill, h0, c0, weight_hh, bias_hh, site_h, site_c,
                                                               mask_tm, keep=True, lp=cfg.lp)
        else:
            hs, cs, chunks, step = _forward_core(fill, h0, c0, weight_hh, bias_hh, site_h, site_c, mask_tm,
                                                 keep=True, lp=cfg.lp)
        cfg.collect_states(fill, site_h, site_c)
        ctx.step, ctx.sites, ctx.n_chunks, ctx.lp = step, (fill, site_h, site_c), len(chunks), cfg.lp
        # The projected input chunks the input site kept go to the saved tensors too, so autograd frees them after
        # a backward without retain_graph and keeps them for another backward with it.
        xp_chunks, fill.xp_chunks = fill.xp_chunks, []
        ctx.save_for_backward(xp, hs, cs, weight_hh, mask_tm, *[x for ch in chunks for x in ch], *xp_chunks)
        return hs[1:].transpose(0, 1).contiguous(), hs[-1].clone(), cs[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_ys, grad_h, grad_c):  # type: ignore[override]
        xp, hs, cs, weight_hh, mask_tm, *flat = ctx.saved_tensors
        chunks = [tuple(flat[3 * i:3 * i + 3]) for i in range(ctx.n_chunks)]
        fill, site_h, site_c = ctx.sites
        fill.xin, fill.xp_chunks = xp, flat[3 * ctx.n_chunks:]
        need = ctx.needs_input_grad
        grad_xp, dh0, dc0, grad_w, grad_b = _backward_core(chunks, ctx.step, hs, cs, weight_hh, mask_tm, fill, site_h,
                                                           site_c, grad_ys, grad_h, grad_c, need, ctx.lp, ctx.native)
        fill.xp_chunks = []  # the sites stay for a retain_graph backward; their large buffers are saved tensors
        return (grad_xp, fill.grad_w_ih, fill.grad_b_ih, dh0, dc0, grad_w, grad_b,
                fill.grad_w if need[7] else None, fill.grad_b if need[8] else None,
                site_h.grad_w if need[9] else None, site_h.grad_b if need[10] else None,
                site_c.grad_w if need[11] else None, site_c.grad_b if need[12] else None, None, None)


def _backward_core(chunks, step, hs, cs, weight_hh, mask_tm, fill, site_h, site_c, grad_ys, grad_h, grad_c, need,
                   lp=None, native: LoopCfg | None = None):
    seq_len, bsz, hidden = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    four_h, h2, h3 = 4 * hidden, 2 * hidden, 3 * hidden
    need_xn, need_w_ih, need_b_ih, need_h0, need_c0, need_w, need_b = need[:7]
    one = torch.ones((), dtype=hs.dtype, device=hs.device)
    dh_steps, dc, grad_w, grad_b = backward_buffers(hs, grad_ys, grad_h, grad_c, need_w, need_b)
    dh: Tensor | None = dh_steps[seq_len - 1]
    fill.begin_backward(need_xn, need_w_ih, need_b_ih)
    w_lp = weight_hh.to(lp) if lp is not None else None
    site_h.begin_backward(hs)
    site_c.begin_backward(hs)
    lib, extra = None, None
    if native is not None:
        lib = native_lib(hs)
        dc = dc.contiguous()
        native.dh, native.dc = dh_steps[0].data_ptr(), dc.data_ptr()
        for site, site_cfg in ((site_h, native.sh), (site_c, native.sc)):
            site_cfg.gw, site_cfg.gb = ptr(site.grad_w), ptr(site.grad_b)
            if isinstance(site, WindowSite):
                site_cfg.DS, site_cfg.R = site.DS.data_ptr(), site.R.data_ptr()
    first = chunks[0][0]
    q_work = workspace.take(first.shape, hs.dtype, hs.device)
    da_work = workspace.take(first.shape, hs.dtype, hs.device)
    dcn_work = workspace.take((first.shape[0], bsz, hidden), hs.dtype, hs.device)
    for kk in range(len(chunks) - 1, -1, -1):
        acts, pre, tcn = chunks[kk]
        n = acts.shape[0]
        t0 = kk * step
        qk, dak, dcnk = q_work[:n], da_work[:n], dcn_work[:n]
        if native is not None:
            extra, dh0 = backward_chunk_native(lib, native, t0, n, weight_hh, w_lp, lp, chunks[kk], qk, dcnk, dak,
                                                extra, need_h0)
            if t0 == 0:
                dh = dh0
                if dh is not None and mask_tm is not None:  # a padded first step passes dh_0 to h0
                    dh.addcmul_(dh_steps[0], (~mask_tm[0]).to(hs.dtype))
        else:
            i_act, f_act, g_act, o_act = acts[..., :hidden], acts[..., hidden:h2], acts[..., h2:h3], acts[..., h3:]
            q_i, q_f, q_g, q_o = qk[..., :hidden], qk[..., hidden:h2], qk[..., h2:h3], qk[..., h3:]
            torch.addcmul(i_act, i_act, i_act, value=-1, out=q_i)  # i (1 - i) * g
            q_i.mul_(g_act)
            torch.addcmul(f_act, f_act, f_act, value=-1, out=q_f)  # f (1 - f) * c_{t-1}
            q_f.mul_(cs[t0:t0 + n])
            torch.addcmul(one, g_act, g_act, value=-1, out=q_g)  # (1 - g^2) * i
            q_g.mul_(i_act)
            torch.addcmul(o_act, o_act, o_act, value=-1, out=q_o)  # o (1 - o) * tanh(N_c(c))
            q_o.mul_(tcn)
            r = torch.addcmul(one, tcn, tcn, value=-1).mul_(o_act)  # d N_c(c_t) / d h_t
            pass_s = None
            if mask_tm is not None:
                mk = mask_tm[t0:t0 + n]
                qk.mul_(mk)
                r.mul_(mk)
                fwd_c = torch.where(mk, f_act, one)
                pass_s = (~mk).to(hs.dtype).unbind(0)
            else:
                fwd_c = f_act
            c_chunk = cs[t0 + 1:t0 + n + 1]
            site_h.begin_chunk(t0, n, pre)
            site_c.begin_chunk(t0, n, c_chunk)
            q_s, q3_s = qk.unbind(0), qk[..., :h3].unflatten(-1, (3, hidden)).unbind(0)
            qo_s, r_s, fc_s = q_o.unbind(0), r.unbind(0), fwd_c.unbind(0)
            p_s, cc_s, dcn_s, da_s = pre.unbind(0), c_chunk.unbind(0), dcnk.unbind(0), dak.unbind(0)
            for j in range(n - 1, -1, -1):
                t = t0 + j
                dcn = torch.mul(dh, r_s[j], out=dcn_s[j])
                dc.add_(site_c.backward(t, dcn, cc_s[j]))
                q3_s[j].mul_(dc.unsqueeze(1))
                qo_s[j].mul_(dh)
                dc.mul_(fc_s[j])
                da = da_s[j]
                da.copy_(site_h.backward(t, q_s[j], p_s[j]))
                if w_lp is not None and (t > 0 or need_h0):
                    dh_lp = mm(da.to(lp), w_lp)
                    dh_next = dh_steps[t - 1].add_(dh_lp) if t > 0 else dh_lp.to(da.dtype)
                elif t > 0:
                    dh_next = mm_into(dh_steps[t - 1], da, weight_hh, accumulate=True)
                elif need_h0:
                    dh_next = mm(da, weight_hh)
                else:
                    dh_next = None
                if dh_next is not None and pass_s is not None:
                    dh_next.addcmul_(dh, pass_s[j])
                dh = dh_next
        da_flat = dak.view(n * bsz, four_h)
        if grad_w is not None:
            if lp is not None:
                grad_w.add_(mm(da_flat.t().to(lp), hs[t0:t0 + n].view(n * bsz, hidden).to(lp)))
            else:
                mm_into(grad_w, da_flat.t(), hs[t0:t0 + n].view(n * bsz, hidden), accumulate=True)
        if grad_b is not None:
            grad_b.add_(da_flat.sum(0))
        if native is None:
            site_h.end_chunk(t0, n, pre, qk)
            site_c.end_chunk(t0, n, cs[t0 + 1:t0 + n + 1], dcnk)
        fill.backward(kk, t0, n, qk)
    return fill.grad_input(), (dh if need_h0 else None), (dc if need_c0 else None), grad_w, grad_b


class _Config:
    """Non-tensor arguments of the autograd Function (site norms, incoming window states) and its side outputs."""

    def __init__(self, norms: dict[str, SiteNorm], states: dict[str, WindowState], hidden: int,
                 lp: torch.dtype | None = None) -> None:
        self.norms, self.states, self.hidden, self.lp = norms, states, hidden, lp
        self.states_out: dict[str, WindowState] = {}

    def make_sites(self, xp: Tensor, h0: Tensor, keep: bool, weight_ih: Tensor | None = None,
                   bias_ih: Tensor | None = None) -> tuple[InputFill, LNSite | WindowSite, LNSite | WindowSite]:
        hidden, seq_len = self.hidden, xp.shape[1]
        d = gate_scale(hidden, h0)
        norm_x = self.norms.get("x")
        norm_x = None if is_identity(norm_x) else norm_x
        return (InputFill(xp, norm_x, d, keep, self.states.get("x"), weight_ih, bias_ih, self.lp),
                make_site(self.norms["h"], 4 * hidden, d, self.states.get("h"), seq_len, h0, keep),
                make_site(self.norms["c"], hidden, 2.0, self.states.get("c"), seq_len, h0, keep))

    def collect_states(self, fill: InputFill, site_h, site_c) -> None:
        for site, st in (("x", fill.final_state()), ("h", site_h.final_state()), ("c", site_c.final_state())):
            if st is not None:
                self.states_out[site] = st


def norm_lstm_sequence(
    xp: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor, bias_hh: Tensor | None, norms: dict[str, SiteNorm],
    mask: Tensor | None = None, states: dict[str, WindowState] | None = None, *, weight_ih: Tensor | None = None,
    bias_ih: Tensor | None = None, matmul_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor, Tensor, dict[str, WindowState]]:
    """Fast twin of ``norm_lstm_sequence_reference`` (same arguments and outputs; see the module docstring).

    With ``weight_ih`` (and ``bias_ih``) the first argument is the raw input ``x (B, L, input_size)`` and
    the projection is done chunk by chunk inside (gradients for ``x``, ``weight_ih``, ``bias_ih`` too).

    ``matmul_dtype=torch.bfloat16`` (the bf16 path, as autocast runs ``nn.LSTM``) runs every GEMM (the
    projection, the per-step recurrent products, the weight and input gradients) in bfloat16 with float32
    results and accumulation across chunks; norms, gates and the cell state stay float32. Under CPU autocast to
    bfloat16 that is the default; otherwise the loop runs in the weights' dtype with autocast off.
    Double backward is not supported.
    """
    if torch.is_autocast_enabled(xp.device.type):
        dt = weight_hh.dtype
        if matmul_dtype is None and xp.device.type == "cpu" and torch.get_autocast_dtype("cpu") == torch.bfloat16:
            matmul_dtype = torch.bfloat16
        with torch.autocast(xp.device.type, enabled=False):
            return norm_lstm_sequence(xp.to(dt), h0.to(dt), c0.to(dt), weight_hh, bias_hh, norms, mask, states,
                                      weight_ih=weight_ih, bias_ih=bias_ih, matmul_dtype=matmul_dtype)
    hidden = weight_hh.shape[1]
    width = 4 * hidden if weight_ih is None else weight_ih.shape[1]
    if xp.dim() != 3 or xp.shape[-1] != width or weight_hh.shape[0] != 4 * hidden or xp.shape[1] == 0:
        raise ValueError(f"norm_lstm_sequence: input must be (batch, seq_len>0, {width}) and weight_hh "
                         f"(4*hidden, hidden); got {tuple(xp.shape)}, {tuple(weight_hh.shape)}")
    if weight_ih is not None and weight_ih.shape[0] != 4 * hidden:
        raise ValueError(f"norm_lstm_sequence: weight_ih must be (4*hidden, input_size), got {tuple(weight_ih.shape)}")
    if set(norms) - {"x", "h", "c"} or not {"h", "c"} <= set(norms):
        raise ValueError(f"norm_lstm_sequence: norms must have the sites 'h', 'c' (and maybe 'x'), got {sorted(norms)}")
    states = dict(states or {})
    if any(is_window(n) for n in norms.values()) and mask is not None:
        raise ValueError("norm_lstm_sequence: ATN (window) sites take no mask; use the reference loop")
    if any(t.requires_grad for st in states.values() for t in st):
        raise ValueError("norm_lstm_sequence: window states must not require grad")
    mask = mask.bool() if mask is not None else None
    cfg = _Config(norms, states, hidden, matmul_dtype)
    params = tuple(p for site in ("x", "h", "c") for p in ((norms[site].weight, norms[site].bias) if site in norms
                                                              else (None, None)))
    if grad_wanted(xp, weight_ih, bias_ih, h0, c0, weight_hh, bias_hh, *params):
        hs, h_t, c_t = _NormLSTMSequence.apply(xp, weight_ih, bias_ih, h0, c0, weight_hh, bias_hh, *params, mask, cfg)
        return hs, h_t, c_t, cfg.states_out
    fill, site_h, site_c = cfg.make_sites(xp, h0, keep=False, weight_ih=weight_ih, bias_ih=bias_ih)
    lib = native_lib(h0)
    if lib is not None:
        hs_tm, cs, _, _, _ = forward_native(lib, fill, h0, c0, weight_hh, bias_hh, site_h, site_c,
                                             time_major_mask(mask), keep=False, lp=cfg.lp)
    else:
        hs_tm, cs, _, _ = _forward_core(fill, h0, c0, weight_hh, bias_hh, site_h, site_c, time_major_mask(mask),
                                        keep=False, lp=cfg.lp)
    cfg.collect_states(fill, site_h, site_c)
    return hs_tm[1:].transpose(0, 1).contiguous(), hs_tm[-1].clone(), cs[-1].clone(), cfg.states_out

"""The fused LSTM loop through the C kernels (``csrc/norm_lstm_step.cpp``): one call per chunk of steps forward and
backward, recurrent products included (per step under the bf16 path, whose GEMMs stay in oneDNN)."""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from seqzoo.ops.gemm import mm
from seqzoo.ops.lstm_chunks import forward_chunk_steps, forward_chunks, state_buffers
from seqzoo.ops.lstm_input_fill import InputFill
from seqzoo.ops.lstm_kernel_abi import NATIVE_DTYPES, LoopCfg, c_ptr, ptr


def forward_native(lib, fill: InputFill, h0: Tensor, c0: Tensor, weight_hh: Tensor, bias_hh: Tensor | None,
                    site_h, site_c, mask_tm: Tensor | None, keep: bool, lp: torch.dtype | None):
    """The forward loop of ``ops.lstm_loop`` through the C kernels: one call per chunk (per step under bf16)."""
    bsz, seq_len = fill.xin.shape[0], fill.xin.shape[1]
    hidden = h0.shape[1]
    fn = getattr(lib, f"norm_lstm_forward_step_{NATIVE_DTYPES[h0.dtype]}")
    w_lp = weight_hh.to(lp) if lp is not None else None
    hs, cs = state_buffers(h0, c0, seq_len)
    mask_u8 = mask_tm.view(torch.uint8).contiguous() if mask_tm is not None else None
    cfg = LoopCfg(B=bsz, H=hidden, has_mask=int(mask_u8 is not None), hs=hs.data_ptr(), cs=cs.data_ptr(),
                   mask=ptr(mask_u8), sh=site_h.native_cfg(seq_len, h0), sc=site_c.native_cfg(seq_len, h0))
    ref = ctypes.byref(cfg)
    step = forward_chunk_steps(h0, keep)
    chunks: list[tuple[Tensor, Tensor, Tensor]] = []
    if w_lp is None:  # whole chunks in C: the recurrent products too (split by columns over the threads)
        chunk_fn = getattr(lib, f"norm_lstm_forward_chunk_{NATIVE_DTYPES[h0.dtype]}")
        w_t = weight_hh.detach().t().contiguous()  # (H, 4H)
        b_hh = bias_hh.detach().contiguous() if bias_hh is not None else None
        p_work = None if keep else h0.new_empty(bsz, 4 * hidden)
    else:  # bf16 path: one bfloat16 GEMM per step through oneDNN, then the step kernel
        h_steps = hs.unbind(0)
    for t0, n, buf, pre, tcn in forward_chunks(fill, h0, seq_len, step, keep, chunks, pre_in_inference=False):
        cfg.acts, cfg.pre, cfg.tcn = buf.data_ptr(), (pre.data_ptr() if keep else None), tcn.data_ptr()
        if w_lp is None:
            chunk_fn(ref, t0, n, c_ptr(w_t.data_ptr()), c_ptr(ptr(b_hh)), c_ptr(ptr(p_work)))
            continue
        for j in range(n):
            p_lp = mm(h_steps[t0 + j].to(lp), w_lp.t())
            p = torch.add(bias_hh, p_lp) if bias_hh is not None else p_lp.to(h0.dtype)
            fn(ref, t0 + j, j, c_ptr(p.data_ptr()))
    return hs, cs, chunks, step, cfg


def backward_chunk_native(lib, cfg: LoopCfg, t0: int, n: int, weight_hh: Tensor, w_lp: Tensor | None, lp,
                           chunk: tuple[Tensor, Tensor, Tensor], qk: Tensor, dcnk: Tensor, dak: Tensor,
                           extra: Tensor | None, need_h0: bool) -> tuple[Tensor | None, Tensor | None]:
    """One chunk of the backward loop through the C kernels; returns ``(extra, dh0)``.

    The kernels write the chunk's gate gradients into ``qk``, the c-site's into ``dcnk`` and the recurrent
    pre-activation gradients into ``dak``, and accumulate the two in-loop sites' gain/bias gradients. In float32 and
    float64 the whole chunk is one call, recurrent products included. Under bf16 (``w_lp``) it is one call per step
    and ``extra`` carries ``da_{t+1} W_hh`` (a bfloat16 GEMM) from the step after, which the kernel adds into
    ``dh_t``.
    """
    suffix = NATIVE_DTYPES[qk.dtype]
    ref = ctypes.byref(cfg)
    acts, pre, tcn = chunk
    cfg.acts, cfg.pre, cfg.tcn = acts.data_ptr(), pre.data_ptr(), tcn.data_ptr()
    cfg.q, cfg.dcn, cfg.da = qk.data_ptr(), dcnk.data_ptr(), dak.data_ptr()
    if w_lp is None:  # the whole chunk in C, recurrent products included
        assert extra is None
        dh0 = qk.new_empty(qk.shape[1], weight_hh.shape[1]) if t0 == 0 and need_h0 else None
        w = weight_hh.detach().contiguous()
        getattr(lib, f"norm_lstm_backward_chunk_{suffix}")(ref, t0, n, c_ptr(w.data_ptr()), c_ptr(ptr(dh0)))
        return None, dh0
    fn = getattr(lib, f"norm_lstm_backward_step_{suffix}")
    da_s = dak.unbind(0)
    dh0 = None
    for j in range(n - 1, -1, -1):
        t = t0 + j
        fn(ref, t, j, c_ptr(ptr(extra)))
        if t > 0 or need_h0:
            extra = mm(da_s[j].to(lp), w_lp).to(qk.dtype)
        else:
            extra = None
        if t == 0:
            dh0 = extra
    return extra, dh0


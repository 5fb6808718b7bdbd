"""The slow, obviously-correct twin of ``ops.lstm_loop.norm_lstm_sequence``: autograd through a plain loop."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from seqzoo.ops.lstm_sites import SiteNorm, is_identity, is_window
from seqzoo.ops.window_norm import WindowState, window_init_state, window_moments_step


def _site_reference(norm: SiteNorm, a: Tensor, state: WindowState | None) -> tuple[Tensor, WindowState | None]:
    if is_identity(norm):
        return a, None
    if norm.window is None:
        return F.layer_norm(a, (a.shape[-1],), norm.weight, norm.bias, norm.eps), None
    assert state is not None
    mean, var, state = window_moments_step(a, state, norm.window)
    y = (a - mean.unsqueeze(-1)) * torch.rsqrt(var.unsqueeze(-1) + norm.eps)
    if norm.weight is not None:
        y = y * norm.weight
    if norm.bias is not None:
        y = y + norm.bias
    return y, state


def _fresh(norm: SiteNorm, state: WindowState | None, like: Tensor, features: int) -> WindowState | None:
    if not is_window(norm):
        return None
    if state is None:
        return window_init_state(like.shape[0], norm.window, device=like.device, dtype=like.dtype)
    return tuple(state)  # type: ignore[return-value]


def norm_lstm_sequence_reference(
    xp: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor, bias_hh: Tensor | None, norms: dict[str, SiteNorm],
    mask: Tensor | None = None, states: dict[str, WindowState] | None = None, *, weight_ih: Tensor | None = None,
    bias_ih: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, dict[str, WindowState]]:
    """``(hs (B, L, H), h_T, c_T, window states)`` by a plain autograd loop (padded steps carry all state).

    ``xp`` is the projected input ``W_ih x_t + b_ih`` of every step; ``norms`` maps the sites "h", "c" and
    optionally "x" (without it ``xp`` is used as given, i.e. already normalized) to their norm; ``states``
    holds incoming window states of ATN sites (missing: a fresh window) and the result the final ones.
    With ``weight_ih`` the first argument is the raw input and ``xp = F.linear(x, weight_ih, bias_ih)``.
    """
    if weight_ih is not None:
        xp = F.linear(xp, weight_ih, bias_ih)
    hidden = h0.shape[-1]
    feats = {"x": 4 * hidden, "h": 4 * hidden, "c": hidden}
    st = {site: _fresh(norm, (states or {}).get(site), h0, feats[site]) for site, norm in norms.items()}
    h, c = h0, c0
    outs = []
    masks = mask.unbind(1) if mask is not None else [None] * xp.shape[1]
    for xp_t, m in zip(xp.unbind(1), masks):
        new = dict(st)
        xn_t = xp_t
        if "x" in norms:
            xn_t, new["x"] = _site_reference(norms["x"], xp_t, st["x"])
        a = h @ weight_hh.t()
        if bias_hh is not None:
            a = a + bias_hh
        y, new["h"] = _site_reference(norms["h"], a, st["h"])
        i, f, g, o = (xn_t + y).chunk(4, dim=-1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        cn, new["c"] = _site_reference(norms["c"], c_new, st["c"])
        h_new = torch.sigmoid(o) * torch.tanh(cn)
        if m is not None:
            h_new = torch.where(m.unsqueeze(-1), h_new, h)
            c_new = torch.where(m.unsqueeze(-1), c_new, c)
            new = {site: _where_state(m, new[site], st[site]) for site in new}
        h, c, st = h_new, c_new, new
        outs.append(h)
    return torch.stack(outs, 1), h, c, {site: v for site, v in st.items() if v is not None}


def _where_state(m: Tensor, new: WindowState | None, old: WindowState | None) -> WindowState | None:
    if new is None or old is None:
        return new
    return tuple(torch.where(m.view(-1, *([1] * (s.dim() - 1))), s, o) for s, o in zip(new, old))  # type: ignore


"""DEQ-Transformer (spec §4.5 at small width) and its explicit weight-tied twin, as ``SequenceLayer``s.

One function ``f(z; u, memory)`` is shared by both layers (``InjectedAttentionBlock``): causal multi-head
self-attention whose query/key/value pre-activations receive the input injection ``u = W_inj x`` (a k=1 conv,
``d_in -> 3 d_model``), residual + LayerNorm, a position-wise FFN, residual + LayerNorm, and variational dropout on
both residual branches (one mask per solve). Positions are rotary (``seqzoo.layers.attention``) where the official
code uses Transformer-XL relative positions; there is no weight normalization.

* ``DEQTransformer``: the output is the equilibrium ``z* = f(z*; u, memory)`` found by ``seqzoo.layers.deq.DEQ``
  (Anderson forward, implicit backward by default; every ``DEQ`` option is a keyword of the layer).
* ``TiedTransformer``: the same ``f`` applied ``depth`` times from ``z = 0`` with ordinary autograd: the explicit
  equal-depth twin (deq pretrains with such a shallow unroll before switching to the solver).

State carried across chunks (the official code's segment memory): the previous positions' states and injections,
``(mem_z, mem_u, valid)`` with ``mem_z (B, T, d)`` the DEQ's equilibrium (``(B, depth, T, d)`` for the twin: the
input of each of its applications, as Transformer-XL keeps one memory per layer), ``mem_u (B, T, 3d)`` and a
``(B, T)`` bool of real tokens. New queries attend to the memory's real positions and to the chunk causally, so a
chunked pass equals one pass (the DEQ's to its solver tolerance). ``mem_len`` keeps the last ``mem_len`` positions
(None: all, which makes the state grow like an attention cache; set it to carry the state across training segments).
Padded positions (mask False) are held at ``z = 0`` and never attended to.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from seqzoo.layers.attention import apply_rotary, rotary_cos_sin
from seqzoo.layers.deq import DEQ, VariationalDropout, reset_dropout
from seqzoo.layers.protocol import SequenceLayer, State, check_mask


class InjectedAttentionBlock(nn.Module):
    """``f(z (B, L, d), u (B, L, 3d), *, mem_k, mem_v, attn_mask, cos, sin, keep) -> (B, L, d)`` (post-norm)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads or (d_model // n_heads) % 2:
            raise ValueError(f"d_model={d_model} must split into n_heads={n_heads} heads of even size (rotary)")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm_attn = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Linear(d_ff, d_model))
        self.norm_ff = nn.LayerNorm(d_model)
        self.drop_attn = VariationalDropout(dropout)
        self.drop_ff = VariationalDropout(dropout)

    def heads(self, h: Tensor, u: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Rotated queries, keys and values ``(B, H, L, head_dim)`` of states ``h`` with injection ``u``."""
        b, n, _ = h.shape
        q, k, v = (self.qkv(h) + u).view(b, n, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v

    def forward(self, z: Tensor, u: Tensor, *, mem_k: Tensor, mem_v: Tensor, attn_mask: Tensor | None, cos: Tensor,
                sin: Tensor, keep: Tensor | None) -> Tensor:
        b, n, d = z.shape
        q, k, v = self.heads(z, u, cos, sin)
        k_all, v_all = torch.cat((mem_k, k), 2), torch.cat((mem_v, v), 2)
        if attn_mask is None:
            o = F.scaled_dot_product_attention(q, k_all, v_all, is_causal=True)
        else:
            o = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=attn_mask)
        h = self.norm_attn(z + self.drop_attn(self.proj(o.transpose(1, 2).reshape(b, n, d))))
        out = self.norm_ff(h + self.drop_ff(self.ff(h)))
        return out if keep is None else out * keep


class _InjectedTransformer(SequenceLayer):
    """Shared parts of the DEQ and the tied twin: injection, memory, positions, masks."""

    is_causal = True
    supports_step = True
    n_mem: int = 1  # memory slices per position (the twin keeps one per application)

    def __init__(self, d_in: int, d_model: int, *, n_heads: int = 4, d_ff: int | None = None, dropout: float = 0.0,
                 mem_len: int | None = None) -> None:
        super().__init__()
        d_ff = 4 * d_model if d_ff is None else d_ff
        if d_in < 1 or d_model < 1 or d_ff < 1:
            raise ValueError(f"d_in, d_model and d_ff must be >= 1, got {d_in}, {d_model}, {d_ff}")
        if mem_len is not None and (isinstance(mem_len, bool) or not isinstance(mem_len, int) or mem_len < 1):
            raise ValueError(f"mem_len must be an integer >= 1 or None, got {mem_len!r}")
        self.d_in, self.d_model, self.d_output, self.mem_len = d_in, d_model, d_model, mem_len
        self.dropout_p = dropout
        self.inject = nn.Linear(d_in, 3 * d_model)
        self.f = InjectedAttentionBlock(d_model, n_heads, d_ff, dropout)

    @property
    def step_exact_in_train(self) -> bool:  # type: ignore[override]
        """Dropout masks differ between one pass and steps, so exact only without dropout."""
        return self.dropout_p == 0.0

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        w = self.inject.weight
        device, dtype = device or w.device, dtype or w.dtype
        z = torch.zeros(batch_size, *((self.n_mem,) if self.n_mem > 1 else ()), 0, self.d_model, device=device,
                        dtype=dtype)
        return (z, torch.zeros(batch_size, 0, 3 * self.d_model, device=device, dtype=dtype),
                torch.zeros(batch_size, 0, dtype=torch.bool, device=device))

    def state_size(self, seq_len: int) -> int:
        """Scalars per sequence in the memory: ``mem_len`` positions when set (its capacity), else ``seq_len``."""
        per = self.n_mem * self.d_model + 3 * self.d_model + 1
        return (seq_len if self.mem_len is None else self.mem_len) * per

    def _context(self, x: Tensor, state: State | None, mask: Tensor | None, mem_z: Tensor) -> dict[str, Any]:
        """Keyword context of ``f`` for memory states ``mem_z (B, T, d)`` (keys/values computed once per call)."""
        b, n, _ = x.shape
        _, mem_u, valid = state
        t = valid.shape[1]
        real = torch.ones(b, n, dtype=torch.bool, device=x.device) if mask is None else mask
        mem_pos = valid.long().cumsum(1) - valid.long()
        new_pos = valid.long().sum(1, keepdim=True) + real.long().cumsum(1) - real.long()
        cos, sin = rotary_cos_sin(new_pos, self.f.head_dim, dtype=x.dtype)
        mcos, msin = rotary_cos_sin(mem_pos, self.f.head_dim, dtype=x.dtype)
        _, mem_k, mem_v = self.f.heads(mem_z, mem_u, mcos, msin)
        if t == 0 and mask is None:
            attn_mask = None
        else:
            causal = torch.ones(n, t + n, dtype=torch.bool, device=x.device).tril(diagonal=t)
            itself = torch.zeros_like(causal)
            itself[:, t:] = torch.eye(n, dtype=torch.bool, device=x.device)
            attn_mask = ((causal & torch.cat((valid, real), 1)[:, None, None, :]) | itself)
        keep = None if mask is None else mask.unsqueeze(-1).to(x.dtype)
        return {"mem_k": mem_k, "mem_v": mem_v, "attn_mask": attn_mask, "cos": cos, "sin": sin, "keep": keep}

    def _check_state(self, state: State | None, x: Tensor) -> State:
        b = x.shape[0]
        if state is None:
            return self.init_state(b, device=x.device, dtype=x.dtype)
        if len(state) != 3:
            raise ValueError(f"{type(self).__name__}: state must be (mem_z, mem_u, valid), got {len(state)} tensors")
        mem_z, mem_u, valid = state
        t = valid.shape[-1]
        want_z = (b, *((self.n_mem,) if self.n_mem > 1 else ()), t, self.d_model)
        if (tuple(mem_z.shape) != want_z or tuple(mem_u.shape) != (b, t, 3 * self.d_model)
                or tuple(valid.shape) != (b, t) or valid.dtype != torch.bool):
            raise ValueError(f"{type(self).__name__}: state shapes must be mem_z {want_z}, mem_u "
                             f"{(b, t, 3 * self.d_model)}, valid {(b, t)} bool; got {tuple(mem_z.shape)}, "
                             f"{tuple(mem_u.shape)}, {tuple(valid.shape)} {valid.dtype}")
        return state

    def _new_state(self, state: State, z_in: Tensor, u: Tensor, real: Tensor) -> State:
        mem_z, mem_u, valid = state
        dim = 2 if self.n_mem > 1 else 1
        new = (torch.cat((mem_z, z_in.detach()), dim), torch.cat((mem_u, u.detach()), 1), torch.cat((valid, real), 1))
        if self.mem_len is not None and new[2].shape[1] > self.mem_len:
            k = self.mem_len
            new = (new[0][:, :, -k:] if dim == 2 else new[0][:, -k:], new[1][:, -k:], new[2][:, -k:])
        return new

    def _prepare(self, x: Tensor, state: State | None, mask: Tensor | None) -> tuple[State, Tensor, Tensor]:
        who = type(self).__name__
        if x.dim() != 3 or x.shape[-1] != self.d_in or not x.is_floating_point():
            raise ValueError(f"{who}: expected floating-point input (batch, seq_len, {self.d_in}), got "
                             f"{tuple(x.shape)} {x.dtype}")
        mask = check_mask(mask, x, who)
        state = self._check_state(state, x)
        real = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask
        return state, self.inject(x), real


class DEQTransformer(_InjectedTransformer):
    """``y, state = layer(x (B, L, d_in), state, mask=...)``: the equilibrium of the injected attention block.

    Args:
        d_in: input width; d_model: state width; n_heads, d_ff, dropout (variational), mem_len: see the module.
        **deq: options of ``seqzoo.layers.deq.DEQ`` (``solver``, ``max_iter``, ``tol``, ``grad``, ``jac_reg`` ...).
    """

    def __init__(self, d_in: int, d_model: int, *, n_heads: int = 4, d_ff: int | None = None, dropout: float = 0.0,
                 mem_len: int | None = None, **deq: Any) -> None:
        super().__init__(d_in, d_model, n_heads=n_heads, d_ff=d_ff, dropout=dropout, mem_len=mem_len)
        self.deq = DEQ(self.f, **deq)

    def forward(self, x: Tensor, state: State | None = None, *, mask: Tensor | None = None) -> tuple[Tensor, State]:
        state, u, real = self._prepare(x, state, mask)
        ctx = self._context(x, state, mask, state[0])
        z0 = torch.zeros(*x.shape[:2], self.d_model, device=x.device, dtype=x.dtype)
        z = self.deq(u, z0, **ctx)
        return z, self._new_state(state, z, u, real)


class TiedTransformer(_InjectedTransformer):
    """The DEQ's explicit twin: ``f`` applied ``depth`` times from ``z = 0`` (weights tied, ordinary autograd)."""

    def __init__(self, d_in: int, d_model: int, *, depth: int = 6, n_heads: int = 4, d_ff: int | None = None,
                 dropout: float = 0.0, mem_len: int | None = None) -> None:
        super().__init__(d_in, d_model, n_heads=n_heads, d_ff=d_ff, dropout=dropout, mem_len=mem_len)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
        self.depth = self.n_mem = depth

    def forward(self, x: Tensor, state: State | None = None, *, mask: Tensor | None = None) -> tuple[Tensor, State]:
        state, u, real = self._prepare(x, state, mask)
        reset_dropout(self.f)
        z = torch.zeros(*x.shape[:2], self.d_model, device=x.device, dtype=x.dtype)
        inputs = []
        for i in range(self.depth):
            inputs.append(z)
            z = self.f(z, u, **self._context(x, state, mask, state[0][:, i]))
        return z, self._new_state(state, torch.stack(inputs, 1), u, real)


def build_deq_transformer(d_in: int, d_model: int, **kwargs: Any) -> DEQTransformer:
    """Layer factory for ``"deq_transformer"`` (any ``d_in``: the injection maps it to ``3 d_model``)."""
    return DEQTransformer(d_in, d_model, **kwargs)


def build_tied_transformer(d_in: int, d_model: int, **kwargs: Any) -> TiedTransformer:
    """Layer factory for ``"tied_transformer"``."""
    return TiedTransformer(d_in, d_model, **kwargs)

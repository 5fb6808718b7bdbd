"""Block-Recurrent Transformer (Hutchins et al., NeurIPS 2022; spec stacks-memory-... §3) and its sliding-window
baseline, one network as one ``SequenceLayer``.

The stream is cut into blocks of ``window`` (W) tokens. In every layer a token attends causally to its own block
and to the whole previous block (sliding-window Transformer-XL): T5-style relative position bias, queries and keys
L2-normalised with a learned per-head scale, one ``scaled_dot_product_attention`` call for all blocks at once.
Layers listed in ``recurrent_layers`` also carry ``n_states`` (S) state vectors:

* vertical: tokens of block b attend to the tokens (as above) *and*, with a separate softmax, to the state left
  by block b - 1; the two outputs are concatenated and projected (2d -> d), then residual + FFN as usual;
* horizontal: at the end of block b the states (pre-LN, plus learned state ids) attend to themselves and, with a
  separate softmax, to the 2W token keys/values of blocks b - 1 and b (shared with the vertical direction); the
  projected result goes through a gate instead of a residual: ``fixed`` (``c' = c g + h (1 - g)``, ``h`` the
  projection, ``g = sigmoid(b_g)``: meliad's ``bias`` gate) or ``lstm`` (``c' = c f + tanh(W_z h + b_z) i`` with the
  -1 / +1 input / forget offsets). ``skip``: projection + one gate; ``dual``: gate, LN, FFN, second gate. Gate
  kernels are variance-scaling with scale 0.1 and gate biases N(0, 0.1), meliad's initialisation (commit cc1aef5,
  ``transformer/nn_components.py``): a fresh fixed gate keeps about half of the state per block, a fresh LSTM gate
  about sigmoid(1) = 0.73 (the spec's pitfall: a gate that learns to forget lets the model ignore the state for
  good; ``remember_bias`` starts the fixed gate closer to remembering, a deviation from the paper).

The block loop runs only in recurrent layers (a Python loop over blocks, never over tokens); plain layers do all
blocks in one attention call. ``recurrent_layers=()`` is the ``Slide`` baseline; Transformer-XL:W is the same code
trained with segments of W tokens (the task's ``bptt``), a longer cache is a larger ``window``.

State carried across ``forward`` calls (fixed size, so the trainer carries it as truncated BPTT):
``(fill, keys, values, key_valid, states)``: ``fill (B,)`` tokens of the current, unfinished block; ``keys`` and
``values (B, depth, H, 2W, head_dim)`` of the previous block (slots ``[0, W)``) and of the unfinished block (slots
``[W, W + fill)``); ``key_valid (B, 2W)``; ``states (B, n_recurrent, S, d)``. Input state is cut from the graph
(stop-gradient on the cache, as the paper). Block boundaries follow each row's own token count, so chunked input,
``step`` and one pass agree at and inside block boundaries. Padding (``mask`` False) is skipped: it neither enters
the cache nor advances the block nor updates the states, so the state after a padded chunk is the state after each
row's last real token; a new document starts from ``state=None`` (learned initial states, empty cache) or, per row,
from ``reset_rows``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from seqzoo.layers.protocol import SequenceLayer, State, check_input, check_mask

GATES = ("fixed", "lstm")
CONFIGS = ("skip", "dual")


def relative_buckets(distance: Tensor, n_buckets: int, max_distance: int) -> Tensor:
    """T5 one-directional buckets of distances ``>= 0``: exact below ``n_buckets // 2``, log-spaced up to
    ``max_distance``, the last bucket beyond."""
    exact = max(1, n_buckets // 2)
    d = distance.clamp(min=0)
    span = max(max_distance, 2 * exact)
    log_b = exact + (torch.log(d.double().clamp(min=1) / exact) / math.log(span / exact) * (n_buckets - exact))
    return torch.where(d < exact, d, log_b.long().clamp(max=n_buckets - 1))


def _variance_scaling_(weight: Tensor, scale: float) -> None:
    """Normal weights with variance ``scale / fan_in`` (meliad's gate kernels use scale 0.1)."""
    nn.init.normal_(weight, 0.0, math.sqrt(scale / weight.shape[1]))


class FixedGate(nn.Module):
    """``c' = c * g + z * (1 - g)`` with ``g = sigmoid(b_g)``: an exponential moving average per dimension that
    does not look at the input. ``z`` is the sub-layer's output itself (the state projection, or the FFN in
    ``dual``), as in meliad's ``bias`` gate (``nn_components.MLP._gate``): the projection is the gate's ``W_z``, no
    second linear map and no ``b_z``. ``b_g ~ N(remember_bias, 0.1)``; meliad's and the paper's fixed gate use 0, so
    a fresh gate keeps about half of the state per block (the paper's +-1 remember offsets are in the LSTM gate)."""

    def __init__(self, d: int, remember_bias: float = 0.0) -> None:
        super().__init__()
        self.gate_bias = nn.Parameter(torch.empty(d))
        nn.init.normal_(self.gate_bias, remember_bias, 0.1)

    def keep_fraction(self) -> Tensor:
        """``g = sigmoid(b_g)`` per dimension: the share of the old state a block update keeps."""
        return torch.sigmoid(self.gate_bias)

    def forward(self, z: Tensor, c: Tensor) -> Tensor:
        g = self.keep_fraction()
        return c * g + z * (1 - g)


class LSTMGate(nn.Module):
    """``c' = c * f + tanh(W_z h + b_z) * i``, ``i = sigmoid(W_i h + b_i - 1)``, ``f = sigmoid(W_f h + b_f + 1)``:
    the offsets bias a fresh cell toward remembering."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d, 3 * d)
        _variance_scaling_(self.proj.weight, 0.1)
        nn.init.normal_(self.proj.bias, 0.0, 0.1)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        z, i, f = self.proj(h).chunk(3, dim=-1)
        return c * torch.sigmoid(f + 1.0) + torch.tanh(z) * torch.sigmoid(i - 1.0)


def _gate(kind: str, d: int, remember_bias: float) -> nn.Module:
    return FixedGate(d, remember_bias) if kind == "fixed" else LSTMGate(d)


def _heads(t: Tensor, n_heads: int) -> Tensor:
    """``(B, L, d) -> (B, H, L, d / H)``."""
    b, n, d = t.shape
    return t.view(b, n, n_heads, d // n_heads).transpose(1, 2)


def _merge(t: Tensor) -> Tensor:
    """``(B, H, L, dh) -> (B, L, H * dh)``."""
    b, h, n, dh = t.shape
    return t.transpose(1, 2).reshape(b, n, h * dh)


def _scaled(q: Tensor, scale: Tensor) -> Tensor:
    """L2-normalised ``q (B, H, ...)`` times the per-head scale (keys are normalised without one)."""
    return F.normalize(q, dim=-1) * scale.view(-1, *([1] * (q.dim() - 2)))


def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """Attention with the scale already in ``q`` (normalised queries and keys)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)


class SlidingBlockLayer(nn.Module):
    """One pre-LN layer of the sliding-window backbone, on block-aligned input (see ``BlockRecurrentTransformer``).

    ``cross=True`` widens the output projection to ``2d -> d`` for the concatenated token and state attention.
    """

    def __init__(self, d: int, n_heads: int, d_ff: int, n_buckets: int, dropout: float, *, cross: bool = False
                 ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm_attn = nn.LayerNorm(d, bias=False)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.rel_bias = nn.Embedding(n_buckets, n_heads)
        nn.init.zeros_(self.rel_bias.weight)
        self.qk_scale = nn.Parameter(torch.full((n_heads,), math.sqrt(d // n_heads)))
        self.proj = nn.Linear(2 * d if cross else d, d, bias=False)
        self.norm_ff = nn.LayerNorm(d, bias=False)
        self.ff = nn.Sequential(nn.Linear(d, d_ff, bias=False), nn.ReLU(), nn.Linear(d_ff, d, bias=False))
        self.drop = nn.Dropout(dropout)

    def qkv_heads(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Scaled queries, normalised keys and values ``(B, H, L, dh)`` of normed tokens ``h (B, L, d)``."""
        q, k, v = (_heads(t, self.n_heads) for t in self.qkv(h).chunk(3, dim=-1))
        return _scaled(q, self.qk_scale), F.normalize(k, dim=-1), v

    def block_mask(self, allowed: Tensor, buckets: Tensor) -> Tensor:
        """Float mask ``(B, H, nb, W, 2W)``: the relative position bias where ``allowed``, -inf elsewhere."""
        bias = self.rel_bias(buckets).permute(2, 0, 1)  # (H, W, 2W)
        return torch.where(allowed.unsqueeze(1), bias[None, :, None], float("-inf"))

    def self_attention(self, q: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> Tensor:
        """Token self-attention of all blocks at once: ``q (B, H, nb*W, dh)`` against ``keys (B, H, nb, 2W, dh)``."""
        b, h, n, dh = q.shape
        nb, w = keys.shape[2], keys.shape[3] // 2
        return _attend(q.view(b, h, nb, w, dh), keys, values, mask).reshape(b, h, n, dh)

    def finish(self, x: Tensor, attn: Tensor) -> Tensor:
        """Residual add of the projected attention, then the residual FFN."""
        x = x + self.drop(self.proj(attn))
        return x + self.drop(self.ff(self.norm_ff(x)))


class RecurrentBlockLayer(SlidingBlockLayer):
    """A sliding-window layer that also reads and writes ``n_states`` recurrent state vectors (§3.3)."""

    def __init__(self, d: int, n_heads: int, d_ff: int, n_buckets: int, dropout: float, *, n_states: int,
                 gate: str, config: str, remember_bias: float = 0.0) -> None:
        super().__init__(d, n_heads, d_ff, n_buckets, dropout, cross=True)
        self.config = config
        self.q_cross = nn.Linear(d, d, bias=False)  # Q_e': tokens -> states
        self.cross_scale = nn.Parameter(torch.full((n_heads,), math.sqrt(d // n_heads)))
        self.state_init = nn.Parameter(torch.randn(n_states, d) * 0.1)
        self.state_ids = nn.Parameter(torch.randn(n_states, d))
        self.norm_state = nn.LayerNorm(d, bias=False)
        self.state_qkv = nn.Linear(d, 3 * d, bias=False)  # Q_s, K_s, V_s
        self.state_q_cross = nn.Linear(d, d, bias=False)  # Q_s': states -> tokens
        self.state_scale = nn.Parameter(torch.full((n_heads,), math.sqrt(d // n_heads)))
        self.state_cross_scale = nn.Parameter(torch.full((n_heads,), math.sqrt(d // n_heads)))
        self.state_proj = nn.Linear(2 * d, d, bias=False)
        self.gate = _gate(gate, d, remember_bias)
        if config == "dual":
            self.norm_state_ff = nn.LayerNorm(d, bias=False)
            self.state_ff = nn.Sequential(nn.Linear(d, d_ff, bias=False), nn.ReLU(), nn.Linear(d_ff, d, bias=False))
            self.gate_ff = _gate(gate, d, remember_bias)

    def state_heads(self, c: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``Q_s, K_s, V_s, Q_s'`` ``(B, H, S, dh)`` of states ``c (B, S, d)``."""
        z = self.norm_state(c) + self.state_ids
        q, k, v = (_heads(t, self.n_heads) for t in self.state_qkv(z).chunk(3, dim=-1))
        qc = _heads(self.state_q_cross(z), self.n_heads)
        return (_scaled(q, self.state_scale), F.normalize(k, dim=-1), v, _scaled(qc, self.state_cross_scale))

    def update(self, c: Tensor, heads: tuple[Tensor, Tensor, Tensor, Tensor], keys: Tensor, values: Tensor,
               key_ok: Tensor | None) -> Tensor:
        """The state after one block: ``keys/values (B, H, 2W, dh)`` of the previous and current block,
        ``key_ok (B, 2W)`` which of them the states may read (None: all)."""
        q, k, v, qc = heads
        own = _attend(q, k, v)
        read = _attend(qc, keys, values, None if key_ok is None else key_ok[:, None, None, :])
        b, _, s, _ = own.shape  # the two (B, H, S, dh) outputs side by side as (B, S, 2d), one copy
        h = self.state_proj(torch.stack((own, read), 1).permute(0, 3, 1, 2, 4).reshape(b, s, -1))
        c = self.gate(h, c)
        if self.config == "dual":
            c = self.gate_ff(self.state_ff(self.norm_state_ff(c)), c)
        return c


class BlockRecurrentTransformer(SequenceLayer):
    """``y (B, L, d), state = brt(x (B, L, d), state, mask=...)``: the whole network (module docstring).

    Args:
        d_model: width of tokens and states.
        depth: number of layers.
        n_heads: attention heads (``d_model`` divisible by it).
        d_ff: FFN hidden width (default ``4 * d_model``; ReLU, no biases).
        window: block size W (a token sees its block and the previous one: W + 1 to 2W keys).
        n_states: S, state vectors per recurrent layer.
        recurrent_layers: 0-based indices of the recurrent layers; ``()`` is the sliding-window baseline.
        gate: ``"fixed"`` or ``"lstm"``.
        config: ``"skip"`` (projection + gate) or ``"dual"`` (gate, FFN, gate) in the horizontal direction.
        n_buckets: relative position buckets (T5).
        dropout: dropout on the residual branches (train mode only).
        remember_bias: mean of the fixed gate's bias b_g at initialisation (the paper and meliad: 0, so g starts
            near 0.5 and keeps about half the state per block; > 0 starts closer to remembering, as the LSTM gate's
            +1, and is a deviation from the paper). On title-recall a 3,000-step pilot (with the gate's former
            extra W_z) learned the recall with 2 and not with 0 (docs/results/brt-small.md).
    """

    is_causal = True
    supports_step = True

    def __init__(self, d_model: int, *, depth: int = 4, n_heads: int = 4, d_ff: int | None = None, window: int = 64,
                 n_states: int = 64, recurrent_layers: tuple[int, ...] | list[int] = (2,), gate: str = "fixed",
                 config: str = "skip", n_buckets: int = 32, dropout: float = 0.0, remember_bias: float = 0.0) -> None:
        super().__init__()
        d_ff = 4 * d_model if d_ff is None else d_ff
        for name, value in (("depth", depth), ("n_heads", n_heads), ("d_ff", d_ff), ("window", window),
                            ("n_states", n_states), ("n_buckets", n_buckets)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"block_recurrent: {name} must be an integer >= 1, got {value!r}")
        if d_model % n_heads:
            raise ValueError(f"block_recurrent: d_model={d_model} must be divisible by n_heads={n_heads}")
        if gate not in GATES:
            raise ValueError(f"block_recurrent: gate must be one of {GATES}, got {gate!r}")
        if config not in CONFIGS:
            raise ValueError(f"block_recurrent: config must be one of {CONFIGS}, got {config!r}")
        rec = tuple(int(i) for i in recurrent_layers)
        if len(set(rec)) != len(rec) or any(not 0 <= i < depth for i in rec):
            raise ValueError(f"block_recurrent: recurrent_layers must be distinct indices in [0, {depth}), got "
                             f"{list(recurrent_layers)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"block_recurrent: dropout must be in [0, 1), got {dropout}")
        self.d_model = self.d_output = d_model
        self.depth, self.n_heads, self.head_dim = depth, n_heads, d_model // n_heads
        self.window, self.n_states, self.recurrent_layers = window, n_states, tuple(sorted(rec))
        self.dropout_p = dropout
        self.blocks = nn.ModuleList(
            RecurrentBlockLayer(d_model, n_heads, d_ff, n_buckets, dropout, n_states=n_states, gate=gate,
                                config=config, remember_bias=remember_bias) if i in rec
            else SlidingBlockLayer(d_model, n_heads, d_ff, n_buckets, dropout)
            for i in range(depth))
        w = window
        rel = w + torch.arange(w).unsqueeze(1) - torch.arange(2 * w).unsqueeze(0)  # query i (slot W + i), key m
        self.register_buffer("buckets", relative_buckets(rel, n_buckets, 2 * w), persistent=False)
        self.register_buffer("causal", rel >= 0, persistent=False)
        self.register_buffer("itself", rel == 0, persistent=False)

    @property
    def step_exact_in_train(self) -> bool:  # type: ignore[override]
        """Dropout draws differ between one pass and steps, so exact only without dropout."""
        return self.dropout_p == 0.0

    # ----- state --------------------------------------------------------------------------------------------------
    def _rec_layers(self) -> list[RecurrentBlockLayer]:
        return [self.blocks[i] for i in self.recurrent_layers]  # type: ignore[misc]

    def _initial_states(self, batch_size: int, device, dtype) -> Tensor:
        layers = self._rec_layers()
        if not layers:
            return torch.zeros(batch_size, 0, self.n_states, self.d_model, device=device, dtype=dtype)
        init = torch.stack([layer.state_init for layer in layers]).to(device=device, dtype=dtype)
        return init.unsqueeze(0).expand(batch_size, -1, -1, -1)

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        """Empty cache, no tokens in the current block, the learned initial states."""
        p = self.blocks[0].qkv.weight
        device, dtype = device or p.device, dtype or p.dtype
        kv = torch.zeros(batch_size, self.depth, self.n_heads, 2 * self.window, self.head_dim, device=device,
                         dtype=dtype)
        return (torch.zeros(batch_size, dtype=torch.long, device=device), kv, kv.clone(),
                torch.zeros(batch_size, 2 * self.window, dtype=torch.bool, device=device),
                self._initial_states(batch_size, device, dtype).detach().clone())

    def reset_rows(self, state: State, rows: Tensor) -> State:
        """``state`` with the rows where ``rows (B,)`` is True set back to the initial state (a new document)."""
        fresh = self.init_state(rows.shape[0], device=rows.device, dtype=state[1].dtype)
        return tuple(torch.where(rows.view(-1, *([1] * (s.dim() - 1))), f, s) for s, f in zip(state, fresh))

    def state_size(self, seq_len: int) -> int:
        """Fixed: the block counter, two blocks of keys/values per layer with their flags, and the states."""
        w = self.window
        return 1 + 2 * self.depth * 2 * w * self.d_model + 2 * w + len(self.recurrent_layers) * self.n_states * \
            self.d_model

    def _check_state(self, state: State, b: int) -> State:
        if len(state) != 5:
            raise ValueError(f"block_recurrent state must be (fill, keys, values, key_valid, states), got "
                             f"{len(state)} tensors")
        fill, k, v, valid, rec = state
        want = (b, self.depth, self.n_heads, 2 * self.window, self.head_dim)
        want_rec = (b, len(self.recurrent_layers), self.n_states, self.d_model)
        if (tuple(fill.shape) != (b,) or tuple(k.shape) != want or tuple(v.shape) != want
                or tuple(valid.shape) != (b, 2 * self.window) or tuple(rec.shape) != want_rec):
            raise ValueError(f"block_recurrent state shapes {[tuple(t.shape) for t in state]} do not match a batch of "
                             f"{b}: expected fill {(b,)}, keys/values {want}, key_valid {(b, 2 * self.window)}, "
                             f"states {want_rec}")
        return fill, k.detach(), v.detach(), valid, rec.detach()

    # ----- computation --------------------------------------------------------------------------------------------
    def forward(self, x: Tensor, state: State | None = None, *, mask: Tensor | None = None) -> tuple[Tensor, State]:
        check_input(x, self.d_model, "BlockRecurrentTransformer")
        mask = check_mask(mask, x, "BlockRecurrentTransformer")
        b, n, d = x.shape
        w = self.window
        if state is None:
            state = self.init_state(b, device=x.device, dtype=x.dtype)
            rec = self._initial_states(b, x.device, x.dtype)  # with its gradient (the learned initial state)
        else:
            state = self._check_state(state, b)
            rec = state[4]
        fill, k_cache, v_cache, valid_cache, _ = state
        real = torch.ones(b, n, dtype=torch.bool, device=x.device) if mask is None else mask
        total = fill + real.sum(1)  # tokens of the unfinished block plus the new ones, per row
        nb = max(1, -(-int(total.max()) // w)) if n else 1
        lv = nb * w
        # block-aligned grid: row r's j-th real token goes to slot fill[r] + j; padding goes to a dropped slot lv
        slot = torch.where(real, fill.unsqueeze(1) + real.long().cumsum(1) - 1, lv)
        xg = x.new_zeros(b, lv + 1, d).scatter(1, slot.unsqueeze(-1).expand(-1, -1, d), x)[:, :lv]
        pos = torch.arange(lv, device=x.device)
        cached = pos < fill.unsqueeze(1)  # (B, lv): tokens of the unfinished block, keys/values from the cache
        key_ok = torch.cat((valid_cache[:, :w], pos < total.unsqueeze(1)), 1).view(b, nb + 1, w)
        key_ok = torch.cat((key_ok[:, :-1], key_ok[:, 1:]), -1)  # (B, nb, 2W): previous + own block
        allowed = (key_ok.unsqueeze(2) & self.causal) | self.itself  # (B, nb, W, 2W); itself: no empty row
        complete = pos.view(nb, w)[:, -1] < total.unsqueeze(1)  # (B, nb): blocks that end in this call
        if self.recurrent_layers:  # per block, read once: does it end in some / every row; may every row's
            ends_some, ends_all = complete.any(0).tolist(), complete.all(0).tolist()  # states read all 2W keys
            reads_all = key_ok.all(2).all(0).tolist()
        done = total // w  # blocks completed in this call, per row
        new_fill = total - done * w
        rows = torch.arange(b, device=x.device)
        new_k, new_v, new_rec = [], [], []
        r = 0
        for i, layer in enumerate(self.blocks):
            h = layer.norm_attn(xg)
            q, k, v = layer.qkv_heads(h)
            keep = cached[:, None, :w, None]
            k = torch.cat((torch.where(keep, k_cache[:, i, :, w:], k[:, :, :w]), k[:, :, w:]), 2)
            v = torch.cat((torch.where(keep, v_cache[:, i, :, w:], v[:, :, :w]), v[:, :, w:]), 2)
            kx = torch.cat((k_cache[:, i, :, :w], k), 2).unflatten(2, (nb + 1, w))  # (B, H, nb+1, W, dh)
            vx = torch.cat((v_cache[:, i, :, :w], v), 2).unflatten(2, (nb + 1, w))
            keys = torch.cat((kx[:, :, :-1], kx[:, :, 1:]), 3)  # (B, H, nb, 2W, dh)
            values = torch.cat((vx[:, :, :-1], vx[:, :, 1:]), 3)
            o = layer.self_attention(q, keys, values, layer.block_mask(allowed, self.buckets))
            if isinstance(layer, RecurrentBlockLayer):
                c, state_keys, state_values = rec[:, r], [], []
                for j in range(nb):  # the block loop: only the state update is sequential
                    heads = layer.state_heads(c)
                    state_keys.append(heads[1])
                    state_values.append(heads[2])
                    if ends_all[j]:  # the usual case in training: every row's block j ends here
                        c = layer.update(c, heads, keys[:, :, j], values[:, :, j],
                                         None if reads_all[j] else key_ok[:, j])
                    elif ends_some[j]:
                        # rows whose block j is unfinished keep their state (and may read every key: no NaN rows)
                        ok = key_ok[:, j] | ~complete[:, j, None]
                        c_next = layer.update(c, heads, keys[:, :, j], values[:, :, j], ok)
                        c = torch.where(complete[:, j, None, None], c_next, c)
                # every block's tokens read the state left by the block before, in one attention call
                qc = _scaled(_heads(layer.q_cross(h), self.n_heads), layer.cross_scale).unflatten(2, (nb, w))
                reads = _attend(qc, torch.stack(state_keys, 2), torch.stack(state_values, 2)).flatten(2, 3)
                attn = torch.cat((_merge(o), _merge(reads)), -1)
                new_rec.append(c)
                r += 1
            else:
                attn = _merge(o)
            xg = layer.finish(xg, attn)
            # new cache: the last completed block (ext index `done`; 0 = the old previous block) and the unfinished one
            pad = kx.new_zeros(b, self.n_heads, 1, w, self.head_dim)
            kx, vx = torch.cat((kx, pad), 2), torch.cat((vx, pad), 2)
            new_k.append(torch.cat((kx[rows, :, done], kx[rows, :, done + 1]), 2))
            new_v.append(torch.cat((vx[rows, :, done], vx[rows, :, done + 1]), 2))
        slots = torch.arange(2 * w, device=x.device)
        valid = torch.where(slots < w, (done > 0).unsqueeze(1) | valid_cache, slots - w < new_fill.unsqueeze(1))
        keep = valid[:, None, None, :, None]
        keys_out = torch.where(keep, torch.stack(new_k, 1), 0.0)
        values_out = torch.where(keep, torch.stack(new_v, 1), 0.0)
        states_out = torch.stack(new_rec, 1) if new_rec else rec
        y = xg.gather(1, slot.clamp(max=lv - 1).unsqueeze(-1).expand(-1, -1, d))
        if mask is not None:
            y = torch.where(real.unsqueeze(-1), y, 0.0)
        return y, (new_fill, keys_out, values_out, valid, states_out)

    def step(self, x_t: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One token against the caches (the same computation as ``forward`` on a length-1 chunk)."""
        if x_t.dim() != 2 or x_t.shape[-1] != self.d_model:
            raise ValueError(f"BlockRecurrentTransformer.step expects x_t of shape (batch, {self.d_model}), "
                             f"got {tuple(x_t.shape)}")
        y, state = self(x_t.unsqueeze(1), state)
        return y.squeeze(1), state

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, depth={self.depth}, window={self.window}, n_states={self.n_states}, "
                f"recurrent_layers={list(self.recurrent_layers)}")


def build_block_recurrent(d_in: int, d_model: int, **kwargs: Any) -> BlockRecurrentTransformer:
    """Layer factory for ``"block_recurrent"``: the network has residuals, so ``d_in`` must equal ``d_model``."""
    if d_in != d_model:
        raise ValueError(
            f"block_recurrent layer: input width d_in={d_in} must equal d_model={d_model} (the layers have "
            "residuals); use an encoder (encoder='linear' or vocab_size) so the network sees d_model features"
        )
    return BlockRecurrentTransformer(d_model, **kwargs)

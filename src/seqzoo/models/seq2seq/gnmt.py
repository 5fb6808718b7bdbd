"""GNMT (Wu et al. 2016, arXiv 1609.08144; spec stacks-memory-equilibrium-translation-privacy.md §5.2).

Encoder: a bidirectional bottom LSTM layer (forward and backward outputs concatenated), then unidirectional layers;
decoder: unidirectional layers. Residual connections from the 3rd layer from the bottom in both stacks
(``x_i = m_i + x_{i-1}`` for i >= 3). Attention: a feed-forward score with one hidden layer (``v . tanh(W_q q + W_k
k)``); the query is the bottom decoder layer's output, the keys and values the top encoder layer's outputs, and the
context is fed to every decoder layer above the bottom one (concatenated to its input), so the upper layers never
wait for the top layer of the previous step. The query is the bottom layer's output at the current position, which
has read the previous target token (tensorflow/nmt ``gnmt_v2``; the paper's y_{i-1} names the same output by the
step that produced its input). Uniform init in [-0.04, 0.04] (spec §5.3; normalization parameters keep theirs).

Every LSTM layer is a seqzoo layer from ``seqzoo.layers.build_layer`` (``cell="lstm"``: the seqzoo cell under the
recurrent driver, with ``norm=`` for LN/ATN cells and the C kernels; ``cell="lstm_native"``: ``torch.nn.LSTM``).
``quantize_int8`` gives an int8 copy for inference (``torch.ao.quantization.quantize_dynamic`` on the Linear and LSTM
weights; plain seqzoo LSTM layers are first turned into ``torch.nn.LSTM`` with the same weights, the gate order is
the same).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from seqzoo.layers import build_layer
from seqzoo.models.seq2seq.base import PAD, DecoderState, Memory, Seq2SeqModel

RESIDUAL_FROM = 3  # residual connections from the 3rd layer from the bottom (spec §5.2)
INIT_SCALE = 0.04


class MLPAttention(nn.Module):
    """Additive attention ``softmax_S(v . tanh(W_q q + W_k k))`` with a hidden layer of ``d_attention`` units."""

    def __init__(self, d_query: int, d_key: int, d_attention: int) -> None:
        super().__init__()
        self.query = nn.Linear(d_query, d_attention, bias=False)
        self.key = nn.Linear(d_key, d_attention)
        self.score = nn.Linear(d_attention, 1, bias=False)

    def forward(self, q: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``q (B, T, dq)``, ``keys = self.key(values) (B, S, A)`` -> context ``(B, T, dv)``, probs ``(B, T, S)``."""
        s = self.score(torch.tanh(self.query(q).unsqueeze(2) + keys.unsqueeze(1))).squeeze(-1)
        p = torch.softmax(s.masked_fill(~mask.unsqueeze(1), float("-inf")), dim=-1)
        return p @ values, p


def reverse_padded(x: Tensor, mask: Tensor) -> Tensor:
    """Each row's real positions in reverse order (padding stays where it is); its own inverse."""
    lengths = mask.long().sum(1, keepdim=True)
    t = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    idx = torch.where(t < lengths, lengths - 1 - t, t)
    return x.gather(1, idx.unsqueeze(-1).expand_as(x)) if x.dim() == 3 else x.gather(1, idx)


def _zero_state(layer: nn.Module, batch: int, ref: Tensor) -> Any:
    """The layer's initial state for ``batch`` rows like ``ref``."""
    return layer.init_state(batch, device=ref.device, dtype=ref.dtype)


class GNMT(Seq2SeqModel):
    """GNMT encoder-decoder (module docstring).

    Args:
        vocab_size: shared source/target vocabulary (wordpieces).
        d_model: LSTM width (each direction of the bidirectional layer too); embeddings have this width.
        n_encoder_layers, n_decoder_layers: stack depths (the bidirectional layer counts as one).
        d_attention: hidden units of the attention score (default ``d_model``).
        residual: residual connections from layer 3 up (False: the plain-stack ablation).
        dropout: on the embeddings and on every layer's input.
        cell: ``"lstm"`` (seqzoo cell, recurrent driver) or ``"lstm_native"`` (torch.nn.LSTM).
        norm: the cell normalization of ``cell="lstm"`` (``"layer"``, ``"atn"``, ...), None for none.
    """

    def __init__(self, vocab_size: int = 8000, *, d_model: int = 256, n_encoder_layers: int = 4,
                 n_decoder_layers: int = 4, d_attention: int | None = None, residual: bool = True,
                 dropout: float = 0.2, cell: str = "lstm", norm: str | None = None) -> None:
        super().__init__()
        if n_encoder_layers < 2 or n_decoder_layers < 2:
            raise ValueError(f"GNMT needs >= 2 encoder and decoder layers (a bidirectional bottom encoder layer and a "
                             f"bottom decoder layer under the attention), got {n_encoder_layers}+{n_decoder_layers}")
        if vocab_size < 4 or d_model < 1:
            raise ValueError(f"vocab_size must be >= 4 (PAD, UNK, BOS, EOS) and d_model >= 1, got {vocab_size}, "
                             f"{d_model}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        kw = {"norm": norm} if norm is not None else {}
        d = d_model
        self.vocab_size, self.d_model, self.residual = vocab_size, d, residual
        self.src_embed = nn.Embedding(vocab_size, d, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(vocab_size, d, padding_idx=PAD)
        self.enc_fw = build_layer(cell, d, d, **kw)
        self.enc_bw = build_layer(cell, d, d, **kw)
        self.encoder = nn.ModuleList(build_layer(cell, 2 * d if i == 0 else d, d, **kw)
                                     for i in range(n_encoder_layers - 1))
        self.decoder = nn.ModuleList(build_layer(cell, d if i == 0 else 2 * d, d, **kw)
                                     for i in range(n_decoder_layers))
        self.attention = MLPAttention(d, d, d_attention or d)
        self.head = nn.Linear(d, vocab_size)
        self.drop = nn.Dropout(dropout)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if "norm" not in name:
                    p.uniform_(-INIT_SCALE, INIT_SCALE)
            for emb in (self.src_embed, self.tgt_embed):
                emb.weight[PAD].zero_()

    @property
    def step_exact_in_train(self) -> bool:
        return self.drop.p == 0.0

    def _res(self, layer_number: int, x: Tensor, m: Tensor) -> Tensor:
        """``m + x`` from layer RESIDUAL_FROM up (1-based layer number), else ``m``."""
        return m + x if self.residual and layer_number >= RESIDUAL_FROM else m

    def encode(self, inputs: Tensor, mask: Tensor | None = None) -> Memory:
        mask = self.source_mask(inputs, mask)
        x = self.drop(self.src_embed(inputs))
        fw, _ = self.enc_fw(x, mask=mask)
        bw, _ = self.enc_bw(reverse_padded(x, mask), mask=mask)
        h = torch.cat([fw, reverse_padded(bw, mask)], -1)
        for i, layer in enumerate(self.encoder, start=2):
            m, _ = layer(self.drop(h), mask=mask)
            h = self._res(i, h, m)
        return {"values": h, "keys": self.attention.key(h), "mask": mask}

    def _upper(self, x: Tensor, ctx: Tensor, states: list[Any] | None) -> tuple[Tensor, list[Any]]:
        """Decoder layers 2..N over ``x`` (B, T, d) with the context concatenated to each layer's input."""
        new = []
        for i, layer in enumerate(self.decoder[1:], start=2):
            inp = torch.cat([self.drop(x), ctx], -1)
            if states is None:
                m, s = layer(inp)
            else:
                m, s = layer.step(inp.squeeze(1), states[i - 1])
                m = m.unsqueeze(1)
            new.append(s)
            x = self._res(i, x, m)
        return x, new

    def decode(self, memory: Memory, prev: Tensor) -> tuple[Tensor, Tensor]:
        h1, _ = self.decoder[0](self.drop(self.tgt_embed(prev)))
        ctx, p = self.attention(h1, memory["keys"], memory["values"], memory["mask"])
        x, _ = self._upper(h1, ctx, None)
        return self.head(self.drop(x)), p

    def start(self, memory: Memory) -> DecoderState:
        ref = memory["values"]
        layers = tuple(_zero_state(layer, ref.shape[0], ref) for layer in self.decoder)
        return {**memory, "layers": layers, "attn": None}

    def step(self, prev_t: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        states = list(state["layers"])
        h1, s1 = self.decoder[0].step(self.drop(self.tgt_embed(prev_t)), states[0])
        ctx, p = self.attention(h1.unsqueeze(1), state["keys"], state["values"], state["mask"])
        x, upper = self._upper(h1.unsqueeze(1), ctx, states)
        logits = self.head(self.drop(x.squeeze(1)))
        return logits, {**state, "layers": (s1, *upper), "attn": p.squeeze(1)}


def _as_native(layer: nn.Module) -> nn.Module:
    """A plain seqzoo LSTM layer as ``torch.nn.LSTM`` with the same weights (anything else unchanged)."""
    from seqzoo.layers.cells.lstm import LSTMCell
    from seqzoo.layers.native import NativeRecurrent
    from seqzoo.layers.recurrent import Recurrent

    cell = getattr(layer, "cell", None)
    if not (isinstance(layer, Recurrent) and type(cell) is LSTMCell and cell.plain):
        return layer
    class _Native(NativeRecurrent):  # its initial state must not read a float weight (int8 LSTMs have none)
        def init_state(self, batch_size: int, *, device=None, dtype=None):
            z = torch.zeros(batch_size, self.d_output, device=device, dtype=dtype or torch.float32)
            return (z, z.clone())

    native = _Native("lstm", cell.input_size, cell.hidden_size)
    with torch.no_grad():
        native.rnn.weight_ih_l0.copy_(cell.weight_ih)
        native.rnn.weight_hh_l0.copy_(cell.weight_hh)
        native.rnn.bias_ih_l0.copy_(cell.bias_ih)
        native.rnn.bias_hh_l0.copy_(cell.bias_hh)
    return native


def to_native(model: GNMT) -> GNMT:
    """A float copy whose plain seqzoo LSTM layers are ``torch.nn.LSTM`` with the same weights (the int8 path's
    float twin: it separates the speed of the native kernel from the speed of int8 weights)."""
    q = copy.deepcopy(model).eval()
    q.enc_fw, q.enc_bw = _as_native(q.enc_fw), _as_native(q.enc_bw)
    q.encoder = nn.ModuleList(_as_native(m) for m in q.encoder)
    q.decoder = nn.ModuleList(_as_native(m) for m in q.decoder)
    return q


def quantize_int8(model: GNMT) -> GNMT:
    """An int8 copy for CPU inference: dynamic quantization of every Linear and LSTM weight (activations stay float).

    Plain seqzoo LSTM layers become ``torch.nn.LSTM`` first (``to_native``); normalized cells (LN/ATN) stay float.
    """
    return torch.ao.quantization.quantize_dynamic(to_native(model), {nn.Linear, nn.LSTM}, dtype=torch.qint8)

"""ConvS2S (Gehring et al. 2017, arXiv 1705.03122; spec convolutional-and-state-space.md §2), fairseq ``fconv``.

Encoder and decoder are stacks of GLU convolution blocks over token + learned position embeddings (N(0, 0.1)):
``h = (GLU(conv(dropout(x))) + x) * sqrt(0.5)``. The encoder pads symmetrically (odd k: k//2 each side; even k:
(k-1)//2 left, k//2 right) and zeroes padded positions before every convolution, so padding never leaks into real
positions; the decoder pads k-1 on the left (causal). Multi-step attention in every decoder layer l::

    d = (W_d h + b_d + g) * sqrt(0.5)            g: the decoder's input embedding
    a = softmax_S(d . z)                          z: top encoder output projected back to the embedding width
    c = (a @ (z + e) * sqrt(0.5)) * sqrt(m)       e: source embedding, m: number of real source tokens
    h = (W_o c + h) * sqrt(0.5)

(the sqrt(m) = m * sqrt(1/m) undoes the variance shrink of averaging). The encoder output's gradient is scaled by
1 / (2 * number of attention layers) (fairseq's GradMultiply; identity forward). Weight normalization on every
Linear and convolution (over the output channel), fairseq's init: N(0, sqrt(4 (1 - dropout) / fan_in)) before a
GLU, N(0, sqrt((1 - dropout) / fan_in)) otherwise, biases 0; the output layers are fc2 (d -> out_embed), dropout,
fc3 (-> vocabulary).

Incremental decoding keeps, per decoder layer, the last k-1 convolution inputs (a shift buffer) and the position;
``step`` reproduces the full decoder's logits (tests/test_seq2seq_conformance.py checks 1e-5).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm

from seqzoo.models.seq2seq.base import PAD, DecoderState, Memory, Seq2SeqModel

SQRT_HALF = math.sqrt(0.5)


class _GradMultiply(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad * ctx.scale, None


def _embedding(n: int, d: int, padding_idx: int | None) -> nn.Embedding:
    m = nn.Embedding(n, d, padding_idx=padding_idx)
    nn.init.normal_(m.weight, 0.0, 0.1)
    if padding_idx is not None:
        with torch.no_grad():
            m.weight[padding_idx].zero_()
    return m


def _linear(d_in: int, d_out: int, dropout: float = 0.0) -> nn.Linear:
    m = nn.Linear(d_in, d_out)
    nn.init.normal_(m.weight, 0.0, math.sqrt((1.0 - dropout) / d_in))
    nn.init.zeros_(m.bias)
    return weight_norm(m, dim=0)


def _conv(d_in: int, d_out: int, k: int, dropout: float) -> nn.Conv1d:
    m = nn.Conv1d(d_in, d_out, k)
    nn.init.normal_(m.weight, 0.0, math.sqrt(4.0 * (1.0 - dropout) / (k * d_in)))
    nn.init.zeros_(m.bias)
    return weight_norm(m, dim=0)


class ConvS2S(Seq2SeqModel):
    """Convolutional encoder-decoder with multi-step attention (module docstring).

    Args:
        vocab_size: shared source/target vocabulary.
        d_embed: token and position embedding width (also the attention width).
        d_model: convolution width of every block.
        n_encoder_layers, n_decoder_layers, kernel_size: the stacks (fconv_iwslt_de_en: 4 and 3 of 256, k=3).
        d_out_embed: width before the output layer.
        dropout: on embeddings, every block's input and the decoder output.
        max_positions: longest sequence the position embeddings cover.
    """

    def __init__(self, vocab_size: int = 8000, *, d_embed: int = 256, d_model: int = 256, n_encoder_layers: int = 4,
                 n_decoder_layers: int = 3, kernel_size: int = 3, d_out_embed: int = 256, dropout: float = 0.2,
                 max_positions: int = 1024) -> None:
        super().__init__()
        if min(n_encoder_layers, n_decoder_layers, kernel_size, d_embed, d_model, d_out_embed, max_positions) < 1:
            raise ValueError("layer counts, kernel_size, widths and max_positions must be >= 1")
        if vocab_size < 4:
            raise ValueError(f"vocab_size must be >= 4 (PAD, UNK, BOS, EOS), got {vocab_size}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.vocab_size, self.kernel_size, self.max_positions = vocab_size, kernel_size, max_positions
        self.d_model = d_model
        self.drop = nn.Dropout(dropout)
        self.src_embed = _embedding(vocab_size, d_embed, PAD)
        self.src_pos = _embedding(max_positions, d_embed, None)
        self.enc_fc1 = _linear(d_embed, d_model, dropout)
        self.enc_convs = nn.ModuleList(_conv(d_model, 2 * d_model, kernel_size, dropout)
                                       for _ in range(n_encoder_layers))
        self.enc_fc2 = _linear(d_model, d_embed)
        self.tgt_embed = _embedding(vocab_size, d_embed, PAD)
        self.tgt_pos = _embedding(max_positions, d_embed, None)
        self.dec_fc1 = _linear(d_embed, d_model, dropout)
        self.dec_convs = nn.ModuleList(_conv(d_model, 2 * d_model, kernel_size, dropout)
                                       for _ in range(n_decoder_layers))
        self.attn_in = nn.ModuleList(_linear(d_model, d_embed) for _ in range(n_decoder_layers))
        self.attn_out = nn.ModuleList(_linear(d_embed, d_model) for _ in range(n_decoder_layers))
        self.dec_fc2 = _linear(d_model, d_out_embed)
        self.dec_fc3 = _linear(d_out_embed, vocab_size, dropout)
        self.grad_scale = 1.0 / (2.0 * n_decoder_layers)

    @property
    def step_exact_in_train(self) -> bool:
        return self.drop.p == 0.0

    def _positions(self, length: int, offset: int = 0) -> Tensor:
        if offset + length > self.max_positions:
            raise ValueError(f"sequence of {offset + length} tokens is longer than max_positions={self.max_positions}")
        return torch.arange(offset, offset + length, device=self.src_pos.weight.device)

    # ----- encoder --------------------------------------------------------------------------------------------------
    def encode(self, inputs: Tensor, mask: Tensor | None = None) -> Memory:
        mask = self.source_mask(inputs, mask)
        keep = mask.unsqueeze(-1)
        e = self.drop(self.src_embed(inputs) + self.src_pos(self._positions(inputs.shape[1])))
        x = self.enc_fc1(e)
        k = self.kernel_size
        for conv in self.enc_convs:
            residual = x
            h = self.drop(x.masked_fill(~keep, 0.0)).transpose(1, 2)
            h = F.pad(h, ((k - 1) // 2, k // 2))
            x = (F.glu(conv(h), dim=1).transpose(1, 2) + residual) * SQRT_HALF
        z = self.enc_fc2(x).masked_fill(~keep, 0.0)
        z = _GradMultiply.apply(z, self.grad_scale)
        return {"keys": z, "values": (z + e) * SQRT_HALF, "mask": mask}

    # ----- decoder --------------------------------------------------------------------------------------------------
    def _attend(self, i: int, x: Tensor, g: Tensor, memory: Memory) -> tuple[Tensor, Tensor]:
        """Decoder layer ``i``'s attention on its GLU output ``x (B, T, d)``; returns the new x and the probs."""
        d = (self.attn_in[i](x) + g) * SQRT_HALF
        s = (d @ memory["keys"].transpose(1, 2)).masked_fill(~memory["mask"].unsqueeze(1), float("-inf"))
        p = torch.softmax(s.float(), dim=-1).to(x.dtype)
        m = memory["mask"].sum(1).to(x.dtype).view(-1, 1, 1)
        c = (p @ memory["values"]) * m.sqrt()
        return (self.attn_out[i](c) + x) * SQRT_HALF, p

    def _output(self, x: Tensor) -> Tensor:
        return self.dec_fc3(self.drop(self.dec_fc2(x)))

    def decode(self, memory: Memory, prev: Tensor) -> tuple[Tensor, Tensor]:
        g = self.drop(self.tgt_embed(prev) + self.tgt_pos(self._positions(prev.shape[1])))
        x = self.dec_fc1(g)
        k, probs = self.kernel_size, []
        for i, conv in enumerate(self.dec_convs):
            residual = x
            h = F.pad(self.drop(x).transpose(1, 2), (k - 1, 0))
            x, p = self._attend(i, F.glu(conv(h), dim=1).transpose(1, 2), g, memory)
            x = (x + residual) * SQRT_HALF
            probs.append(p)
        return self._output(x), torch.stack(probs).mean(0)

    def start(self, memory: Memory) -> DecoderState:
        B = memory["keys"].shape[0]
        ref = memory["keys"]
        buffers = tuple(ref.new_zeros(B, self.kernel_size - 1, self.d_model) for _ in self.dec_convs)
        return {**memory, "buffers": buffers, "pos": torch.zeros(B, dtype=torch.long, device=ref.device),
                "attn": None}

    def step(self, prev_t: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        pos = state["pos"]
        if int(pos.max()) >= self.max_positions:
            raise ValueError(f"decoding past max_positions={self.max_positions}")
        g = self.drop(self.tgt_embed(prev_t) + self.tgt_pos(pos)).unsqueeze(1)
        x = self.dec_fc1(g)
        buffers, probs = [], []
        for i, conv in enumerate(self.dec_convs):
            residual = x
            window = torch.cat([state["buffers"][i], self.drop(x)], 1)  # the last k inputs of this layer
            buffers.append(window[:, 1:])
            h = F.glu(conv(window.transpose(1, 2)), dim=1).transpose(1, 2)
            x, p = self._attend(i, h, g, state)
            x = (x + residual) * SQRT_HALF
            probs.append(p)
        logits = self._output(x).squeeze(1)
        return logits, {**state, "buffers": tuple(buffers), "pos": pos + 1,
                        "attn": torch.stack(probs).mean(0).squeeze(1)}

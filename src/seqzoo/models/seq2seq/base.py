"""The encoder-decoder protocol every seq2seq model follows (GNMT, ConvS2S), and the token ids they share.

A seq2seq model reads two sequences, so it is its own model kind next to ``SequenceModel``:

* ``input_names = ("inputs", "mask", "prev")``: the source tokens ``(B, S)``, the source mask ``(B, S)`` (True at
  real tokens, right padding) and the decoder input ``prev (B, T)`` = BOS followed by the target shifted right.
  ``model(inputs, mask=..., prev=...)`` returns ``(logits (B, T, V), None)`` (teacher forcing); with
  ``targets=`` it returns the per-position NLL ``(B, T)`` instead (the training tier's ``scores_targets`` loss path).
  No ``state`` argument: a translation pair is never continued from a previous batch.
* ``encode(inputs, mask) -> memory`` (a dict of batch-first tensors), ``decode(memory, prev) -> (logits,
  attention (B, T, S))``, ``start(memory) -> state`` and ``step(prev_t (B,), state) -> (logits (B, V), state)``:
  the incremental decoder. ``state`` is a dict of batch-first tensors (``reorder_state`` selects beams from it
  with one rule); ``state["attn"]`` holds the attention of the last step ``(B, S)`` for the coverage penalty.
  ``step`` reproduces the teacher-forced ``decode`` position by position (tests/test_seq2seq_conformance.py).

Token ids: ``PAD, UNK, BOS, EOS = 0, 1, 2, 3`` in every vocabulary (the translation task trains its sentencepiece
model with exactly these ids).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

PAD, UNK, BOS, EOS = 0, 1, 2, 3
Memory = dict[str, Tensor]
DecoderState = dict[str, Any]


def reorder_state(state: Any, index: Tensor) -> Any:
    """``state`` with every tensor's batch rows (dimension 0) taken at ``index`` (beam selection / expansion)."""
    if torch.is_tensor(state):
        return state.index_select(0, index)
    if isinstance(state, dict):
        return {k: reorder_state(v, index) for k, v in state.items()}
    if isinstance(state, (tuple, list)):
        return type(state)(reorder_state(s, index) for s in state)
    return state


def check_tokens(tokens: Tensor, vocab_size: int, what: str) -> None:
    if tokens.dtype not in (torch.int64, torch.int32) or tokens.dim() != 2:
        raise ValueError(f"{what} must be an integer tensor (batch, length), got {tokens.dtype} "
                         f"{tuple(tokens.shape)}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(f"{what} ids must lie in [0, {vocab_size}), got [{int(tokens.min())}, {int(tokens.max())}]")


class Seq2SeqModel(nn.Module):
    """Base of encoder-decoder models: ``forward`` (teacher forcing) and the loss protocol on top of
    ``encode`` / ``decode`` / ``start`` / ``step`` that subclasses implement."""

    input_names = ("inputs", "mask", "prev")
    is_seq2seq = True
    supports_step = True
    is_causal = True  # the decoder: output t depends on prev[:, :t + 1] only
    scores_targets = True
    vocab_size: int

    def encode(self, inputs: Tensor, mask: Tensor | None = None) -> Memory:  # pragma: no cover
        raise NotImplementedError

    def decode(self, memory: Memory, prev: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def start(self, memory: Memory) -> DecoderState:  # pragma: no cover
        raise NotImplementedError

    def step(self, prev_t: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:  # pragma: no cover
        raise NotImplementedError

    @staticmethod
    def source_mask(inputs: Tensor, mask: Tensor | None) -> Tensor:
        return torch.ones_like(inputs, dtype=torch.bool) if mask is None else mask.to(torch.bool)

    def forward(self, inputs: Tensor, *, mask: Tensor | None = None, prev: Tensor | None = None,
                targets: Tensor | None = None) -> tuple[Tensor, None]:
        """``(logits (B, T, V), None)``; with ``targets`` ``(nll (B, T), None)``."""
        if prev is None:
            raise ValueError(f"{type(self).__name__} needs prev= (decoder input tokens: BOS + target shifted right)")
        check_tokens(inputs, self.vocab_size, "source tokens (inputs)")
        check_tokens(prev, self.vocab_size, "decoder input tokens (prev)")
        logits, _ = self.decode(self.encode(inputs, mask), prev)
        if targets is None:
            return logits, None
        if targets.shape != logits.shape[:-1]:
            raise ValueError(f"targets {tuple(targets.shape)} do not match the decoder positions "
                             f"{tuple(logits.shape[:-1])}")
        nll = nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
        return nll.view(targets.shape), None

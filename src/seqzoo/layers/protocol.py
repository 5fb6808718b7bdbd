"""The layer protocol every seqzoo sequence layer follows.

``y, state = layer(x, state=None, mask=None)`` on batch-first ``x: (B, L, d_model)``;
``y_t, state = layer.step(x_t, state)`` for one time step where ``supports_step`` is True.
States are tuples of tensors (possibly empty) so they can be carried across chunks,
saved and compared without knowing the layer.

Models that read a *set* rather than a sequence (question answering over memories, e.g. MemN2N in
``layers/memory.py``) are a second kind with a smaller protocol, marked ``model_kind = "qa"``:

* ``logits, state = model(inputs, story)``: ``inputs (B, Jq)`` the question's word ids, ``story (B, M, J)`` the
  memories (word-id rows, slot 0 = the most recent; all-zero rows = empty slots; id 0 = the nil word), ``logits
  (B, d_output)``; ``state`` is ``()`` (nothing carried). ``input_names = ("inputs", "story")`` tells the trainer
  which batch keys to pass (tasks with ``output_kind = "qa"``, such as ``babi``, provide them).
* ``is_causal = False`` and ``supports_step = False``: there is no time axis, so step, chunking and look-ahead do
  not apply. What must hold instead (tests/test_conformance.py, QA section): every parameter gets a gradient,
  empty memory slots and padding words change no answer, a row's answer does not depend on the rest of its
  batch, and save -> load round-trips.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

State = tuple[Tensor, ...]


class SequenceLayer(nn.Module):
    """Base class: subclasses set ``d_model``/``d_output`` and override ``forward``.

    Flags:
      * ``is_causal``: output at t depends only on inputs at positions <= t.
      * ``supports_step``: ``step`` is implemented and reproduces ``forward``.
      * ``step_exact_in_train``: ``step``/chunked evaluation equals ``forward`` also in train mode
        (False for norms that use batch-of-sequence statistics at train time).
    """

    d_model: int
    d_output: int
    is_causal: bool = True
    supports_step: bool = False
    step_exact_in_train: bool = True

    def init_state(
        self, batch_size: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """The state before the first time step (empty for stateless layers)."""
        return ()

    def state_size(self, seq_len: int) -> int:
        """Number of scalars per sequence the layer carries after ``seq_len`` steps (memory planning)."""
        return 0

    def step(self, x_t: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One time step: ``x_t: (B, d_model) -> (B, d_output)``; default runs ``forward`` on length 1."""
        if not self.supports_step:
            raise NotImplementedError(f"{type(self).__name__} does not support step(); check supports_step first")
        y, state = self(x_t.unsqueeze(1), state)
        return y.squeeze(1), state

    def forward(self, x: Tensor, state: State | None = None, *, mask: Tensor | None = None):  # pragma: no cover
        raise NotImplementedError


def check_input(x: Tensor, d_model: int, who: str) -> None:
    """Raise a clear error when ``x`` is not ``(B, L, d_model)`` floating point."""
    if x.dim() != 3:
        raise ValueError(f"{who}: expected input of shape (batch, seq_len, {d_model}), got shape {tuple(x.shape)}")
    if x.shape[-1] != d_model:
        raise ValueError(
            f"{who}: expected last dimension {d_model} (d_model), got input of shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{who}: expected a floating-point input, got dtype {x.dtype}")


def check_mask(mask: Tensor | None, x: Tensor, who: str) -> Tensor | None:
    """Validate a ``(B, L)`` boolean mask (True = real position) and return it as bool."""
    if mask is None:
        return None
    if mask.shape != x.shape[:2]:
        raise ValueError(f"{who}: mask must have shape (batch, seq_len)={tuple(x.shape[:2])}, got {tuple(mask.shape)}")
    return mask.bool()

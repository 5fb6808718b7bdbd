"""The one recurrent driver: runs any ``RecurrentCell`` over a batch-first sequence.

The input projection of all steps is one matrix multiply before the loop; the loop iterates
over ``unbind(1)`` (indexing a grad-requiring tensor per step makes backward quadratic); padded
steps (mask False) carry the state unchanged, so the final state is the state after each
sequence's last real token. A cell may offer a fused ``sequence`` path, used when it applies, or a
fused ``sequence_inputs`` path that also does the input projection (chunk by chunk).
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqzoo.layers.cells import CELLS, RecurrentCell
from seqzoo.layers.protocol import SequenceLayer, State, check_input, check_mask


class Recurrent(SequenceLayer):
    """Wrap a cell as a ``SequenceLayer``: ``y (B, L, H), state = Recurrent(cell)(x, state, mask=...)``."""

    is_causal = True
    supports_step = True

    def __init__(self, cell: RecurrentCell) -> None:
        super().__init__()
        self.cell = cell
        self.d_model = cell.input_size
        self.d_output = cell.hidden_size

    @property
    def step_exact_in_train(self) -> bool:  # type: ignore[override]
        return self.cell.step_exact_in_train

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        return self.cell.init_state(batch_size, device=device, dtype=dtype)

    def state_size(self, seq_len: int) -> int:
        return self.cell.state_size()

    def _check_state(self, state: State | None, x: Tensor) -> State:
        if state is None:
            return self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        expected = self.init_state(1, device=x.device, dtype=x.dtype)
        if len(state) != len(expected) or any(s.shape[0] != x.shape[0] for s in state):
            raise ValueError(
                f"{type(self.cell).__name__}: state must be a tuple of {len(expected)} tensors with batch size "
                f"{x.shape[0]}, got {[tuple(s.shape) for s in state]}"
            )
        return tuple(state)

    def forward(self, x: Tensor, state: State | None = None, *, mask: Tensor | None = None):
        who = type(self.cell).__name__
        check_input(x, self.d_model, who)
        mask = check_mask(mask, x, who)
        state = self._check_state(state, x)
        empty = x.shape[0] == 0  # an empty batch, as torch.nn.LSTM accepts: the plain loop handles it
        fast = None if empty else self.cell.sequence_inputs(x, state, mask)
        if fast is not None:
            return fast
        xp = self.cell.project_inputs(x)
        fast = None if empty else self.cell.sequence(xp, state, mask)
        if fast is not None:
            return fast
        outs = []
        masks = mask.unbind(1) if mask is not None else [None] * x.shape[1]
        for xp_t, m in zip(xp.unbind(1), masks):
            h, new_state = self.cell(xp_t, state)
            if m is not None:
                m = m.unsqueeze(-1)
                new_state = tuple(torch.where(m.view(-1, *([1] * (s.dim() - 1))), s, o)
                                  for s, o in zip(new_state, state))
                h = torch.where(m, h, state[0])
            state = new_state
            outs.append(h)
        return torch.stack(outs, 1), state

    def step(self, x_t: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        if x_t.dim() != 2 or x_t.shape[-1] != self.d_model:
            raise ValueError(f"step expects x_t of shape (batch, {self.d_model}), got {tuple(x_t.shape)}")
        if state is None:
            state = self.init_state(x_t.shape[0], device=x_t.device, dtype=x_t.dtype)
        return self.cell(self.cell.project_inputs(x_t), tuple(state))


def build_recurrent(kind: str, d_in: int, hidden_size: int, **cell_kwargs) -> Recurrent:
    """``Recurrent(CELLS[kind](d_in, hidden_size, **cell_kwargs))`` with the relu variant spelled out."""
    if kind not in CELLS:
        from seqzoo.registry_utils import unknown_message

        raise ValueError(unknown_message("cell", kind, CELLS))
    if kind == "rnn_relu":
        cell_kwargs["nonlinearity"] = "relu"
    return Recurrent(CELLS[kind](d_in, hidden_size, **cell_kwargs))

"""Target-space layers (Fairbank, Samothrakis & Citi 2022, "Deep Learning in Target Space"; spec §6.2).

In target space the trainable tensor of a layer is not its weight matrix but its **targets**: the desired
pre-activation sums of its nodes on a fixed realisation batch ``X̄``. The weights are a differentiable function of
the targets, the regularized least-squares fit ``W = argmin ‖Ā W − T‖² + λ‖W‖²`` (``seqzoo.ops.ridge``) of the
layer's realisation inputs ``Ā = [1 | X̄_{l-1}]``, solved inside ``forward``; the real batch then runs through an
ordinary network with these weights, and any optimizer updates the targets. Each layer here holds either its
targets (``space="target"``) or a plain weight matrix (``space="weight"``, the weight-space twin with the same
architecture and forward), so a comparison changes one argument.

* ``TSDense``: ``y = [1, x] W``; targets ``(rows, d_out)``.
* ``TSRNN``: the tanh RNN ``h_t = tanh([1, x_t, h_{t-1}] W)``; targets ``T (B̄, L̄, n)`` of every hidden
  pre-activation of the realisation sequences. One solve over all ``(b, t)`` rows ``[1, x̄_{b,t}, tanh(T_{b,t-1})]``
  (``tanh(T_{b,-1}) = 0``) gives the input and recurrent weights together, as the official ``TSRNNDense``.
* ``TSConv1d``: a causal 1-D convolution; the solve's rows are every position of every realisation sequence, its
  inputs their ``k``-step patches, as the official ``TSConv2D`` does with image patches.

How a realisation batch is propagated from layer to layer (``MODES``): ``"scu"`` (sequential cascade untangling,
the paper's recommended variant) passes on what the computed weights actually achieve (``act(Ā W)``, for the RNN
the hidden states of running it on ``X̄``); ``"ocu"`` (optimistic) passes on ``act(T)``. The models that stack
these layers are in ``seqzoo.models.target_space``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from seqzoo.ops.ridge import ridge_solve

SPACES = ("target", "weight")
MODES = ("scu", "ocu")


def with_bias(x: Tensor) -> Tensor:
    """``[1 | x]``: a column of ones before the last dimension's features."""
    return torch.cat([x.new_ones(*x.shape[:-1], 1), x], -1)


def truncated_normal(shape: tuple[int, ...], std: float) -> Tensor:
    """Normal(0, std²) truncated at ±2 std (TensorFlow's ``truncated_normal``, which the official code uses)."""
    return nn.init.trunc_normal_(torch.empty(shape), std=std, a=-2 * std, b=2 * std)


def glorot_std(fan_in: int, fan_out: int) -> float:
    """The official code's weight-space tanh init ("GlorotNormal6"): ``sqrt(6 / (fan_in + fan_out))``."""
    return math.sqrt(6.0 / (fan_in + fan_out))


class TSDense(nn.Module):
    """A dense layer ``[1, x] W`` whose ``(d_in + 1, d_out)`` matrix is a parameter or solved from targets.

    Args:
        d_in, d_out: input and output widths (the bias row is added here).
        space: ``"target"`` (trainable ``targets (rows, d_out)``) or ``"weight"`` (trainable ``weight``).
        rows: realisation rows (target space only).
        lam: the least-squares regularization λ.
        target_std: std of the truncated-normal initial targets.
    """

    def __init__(self, d_in: int, d_out: int, *, space: str = "target", rows: int | None = None, lam: float = 1e-3,
                 target_std: float = 1.0) -> None:
        super().__init__()
        self.d_in, self.d_out, self.space, self.lam = d_in, d_out, space, lam
        if space == "target":
            if rows is None or rows < 1:
                raise ValueError(f"TSDense: target space needs rows >= 1 (realisation rows), got {rows!r}")
            self.targets = nn.Parameter(truncated_normal((rows, d_out), target_std))
        else:
            self.weight = nn.Parameter(truncated_normal((d_in + 1, d_out), glorot_std(d_in + 1, d_out)))

    def matrix(self, a_bar: Tensor | None) -> Tensor:
        """The ``(d_in + 1, d_out)`` weights; in target space solved from the realisation inputs ``a_bar``
        ``(rows, d_in + 1)`` (bias column included)."""
        if self.space == "weight":
            return self.weight
        if a_bar is None:
            raise ValueError("TSDense: target space needs the realisation inputs to solve for its weights")
        return ridge_solve(a_bar, self.targets, self.lam)

    def sums(self, a_bar: Tensor, weight: Tensor, mode: str) -> Tensor:
        """The realisation's pre-activations passed on: achieved ``Ā W`` (SCU) or the targets (OCU)."""
        return a_bar @ weight if mode == "scu" else self.targets


class TSRNN(nn.Module):
    """The tanh RNN ``h_t = tanh([1, x_t, h_{t-1}] W)`` with ``W`` ((1 + d_input + d_model) × d_model) a parameter
    (weight space) or solved from targets ``(rows, length, d_model)`` on a realisation batch (target space)."""

    def __init__(self, d_input: int, d_model: int, *, space: str = "target", rows: int | None = None,
                 length: int | None = None, lam: float = 1e-3, target_std: float = 1.0) -> None:
        super().__init__()
        self.d_input, self.d_model, self.space, self.lam = d_input, d_model, space, lam
        fan_in = 1 + d_input + d_model
        if space == "target":
            if rows is None or length is None or rows < 1 or length < 1:
                raise ValueError(f"TSRNN: target space needs rows >= 1 and length >= 1, got {rows!r}, {length!r}")
            self.targets = nn.Parameter(truncated_normal((rows, length, d_model), target_std))
        else:
            self.weight = nn.Parameter(truncated_normal((fan_in, d_model), glorot_std(fan_in, d_model)))

    def design(self, x_bar: Tensor) -> Tensor:
        """The solve's rows ``[1, x̄_{b,t}, tanh(T_{b,t-1})]`` of every realisation step: ``(rows·length, fan_in)``."""
        prev = torch.tanh(self.targets[:, :-1])
        prev = torch.cat([prev.new_zeros(prev.shape[0], 1, self.d_model), prev], 1)
        return with_bias(torch.cat([x_bar, prev], -1)).flatten(0, 1)

    def matrix(self, x_bar: Tensor | None) -> Tensor:
        """The recurrence's weights (bias row, then input rows, then recurrent rows)."""
        if self.space == "weight":
            return self.weight
        if x_bar is None:
            raise ValueError("TSRNN: target space needs the realisation sequences to solve for its weights")
        return ridge_solve(self.design(x_bar), self.targets.flatten(0, 1), self.lam)

    def run(self, x: Tensor, weight: Tensor, h: Tensor | None = None, mask: Tensor | None = None
            ) -> tuple[Tensor, Tensor, Tensor]:
        """``(hidden (B, L, n), pre-activations (B, L, n), last state (B, n))`` of ``x (B, L, d_input)``.

        Where ``mask`` (B, L) is False the state is held, so a padded sequence ends in its last real state.
        """
        m = self.d_input
        w_b, w_x, w_h = weight[0], weight[1:1 + m], weight[1 + m:]
        proj = x @ w_x + w_b  # the input projection of all steps in one product
        if h is None:
            h = x.new_zeros(x.shape[0], self.d_model)
        outs, sums = [], []
        for t in range(x.shape[1]):
            s = proj[:, t] + h @ w_h
            new = torch.tanh(s)
            h = new if mask is None else torch.where(mask[:, t, None], new, h)
            outs.append(h)
            sums.append(s)
        if not outs:
            empty = x.new_zeros(x.shape[0], 0, self.d_model)
            return empty, empty, h
        return torch.stack(outs, 1), torch.stack(sums, 1), h

    def realised(self, x_bar: Tensor, weight: Tensor, mode: str) -> Tensor:
        """The realisation's hidden states passed on: running the RNN on ``x̄`` (SCU) or ``tanh(T)`` (OCU)."""
        return self.run(x_bar, weight)[0] if mode == "scu" else torch.tanh(self.targets)


class TSConv1d(nn.Module):
    """A causal 1-D convolution ``y_t = [1, x_{t-k+1}, ..., x_t] W`` in target or weight space.

    As the official ``TSConv2D``: the rows of the solve are every position of every realisation sequence, the input
    matrix their ``k``-step patches (plus the bias column), the targets the desired channel sums at each position
    (``(rows · length, d_out)``). Positions before the start read zeros (or the carried history).
    """

    def __init__(self, d_in: int, d_out: int, kernel_size: int, *, space: str = "target", rows: int | None = None,
                 length: int | None = None, lam: float = 1e-3, target_std: float = 1.0) -> None:
        super().__init__()
        self.d_in, self.d_out, self.kernel_size = d_in, d_out, kernel_size
        self.dense = TSDense(kernel_size * d_in, d_out, space=space,
                             rows=None if rows is None or length is None else rows * length, lam=lam,
                             target_std=target_std)

    def patches(self, x: Tensor, history: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``([1, patch] (B, L, 1 + k·d_in), the padded input (B, k - 1 + L, d_in))`` of ``x (B, L, d_in)``."""
        k = self.kernel_size
        if history is None:
            history = x.new_zeros(x.shape[0], k - 1, self.d_in)
        padded = torch.cat([history, x], 1)
        windows = padded.unfold(1, k, 1)  # (B, L, d_in, k): window t covers padded t .. t + k - 1
        return with_bias(windows.transpose(2, 3).flatten(2)), padded

    def history(self, padded: Tensor, lengths: Tensor | None) -> Tensor:
        """The last ``k - 1`` inputs before each sequence's end (its last real position where ``lengths`` is given)."""
        k, L = self.kernel_size, padded.shape[1] - (self.kernel_size - 1)
        if lengths is None:
            return padded[:, L:]
        index = lengths[:, None] + torch.arange(k - 1, device=padded.device)  # padded positions n_i .. n_i + k - 2
        return torch.gather(padded, 1, index[..., None].expand(-1, -1, self.d_in))

"""Recurrent Batch Normalization (Cooijmans et al. 2016) as a recurrent norm site.

Training: statistics over the batch at each time step (per feature). Inference: population
statistics kept **separately for every time step** t < ``max_steps`` (an exponential moving
average, momentum 0.1 like ``nn.BatchNorm``, with the unbiased variance); a step beyond the last
trained one reuses that step's statistics. The EMA mixes batches of the last ~10 updates, each taken
with other weights: while the weights move fast it lags them (at near-zero-variance steps that lag is
divided by ``sqrt(ε)``). ``refit_batches = N`` gives the paper's rule instead ("estimates obtained by
averaging the minibatch estimates over the training set", on the weights being evaluated, as the
official ``sequential_mnist_evaluate.py`` does): before each evaluation the trainer re-estimates every
row as the plain average over N training batches (``training/population.py``). On the MNIST-test
subset the EMA cost 0.29-0.50 test accuracy at 400 steps (docs/results/recurrent-bn-small.md). ``γ`` starts at
0.1 (the paper's choice that keeps the tanh unsaturated).

Where the gate bias lives: the paper computes ``BN(W_h h) + BN(W_x x) + b``. A cell's sites see
``W_ih x + b_ih`` and ``W_hh h + b_hh`` (the LayerNorm layout), and the batch-mean subtraction
cancels ``b_ih`` and ``b_hh`` exactly, in training and with population statistics alike. So the
``h`` site keeps its own shift ``β_h`` (init 0): it is the paper's ``b`` (the official code's
``ab_betas`` sit on the same term). The ``x`` site has none (``β_x = 0``, a second shift would
only duplicate ``β_h``), and the ``c`` site has ``β_c`` as in the paper. ``shift=`` overrides.
The cell drops ``b_ih`` and ``b_hh`` in front of these sites (``cancels_bias``): their true gradient
is 0, but an adaptive optimizer (RMSprop, Adam) turns the rounding noise of that gradient into steps
of about the learning rate, the biases random-walk, and the population means (an EMA) lag behind
them; at the near-zero-variance steps of MNIST that lag is divided by ``sqrt(ε)``
(docs/results/recurrent-bn-small.md).

Zero-variance steps: where the batch variance of a feature is far below ``ε`` (e.g. the blank
first pixels of MNIST, when every sequence of the batch has the same state), the forward output
is finite (≈ 0) but the backward multiplies the incoming gradient by ``γ / sqrt(ε)`` (31.6 for
γ = 0.1, ε = 1e-5) at every such site and step; through the ``h`` and ``c`` sites of a few dozen
steps that overflows float32 (see docs/results/recurrent-bn-small.md). Cooijmans et al. avoid it
with Gaussian noise (std 0.1) on the initial hidden state; a larger ``ε`` bounds the gain.

The step index is carried in the state, so ``step`` equals ``forward`` in eval mode; in train
mode statistics come from the whole batch at a step, so the flag ``step_exact_in_train`` is
False. With a batch of one the batch variance is zero (the known collapse of BN at B = 1) and
the population variance is not updated (the unbiased estimate is undefined there).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqzoo.errors import ConfigError
from seqzoo.layers.norms import NormState, RecurrentNorm, register_recurrent_norm


class PerStepPopulation(nn.Module):
    """Per-time-step population mean/variance buffers shared by recurrent BN and BLN.

    Updated as an EMA in training. ``refit_batches > 0`` asks for the paper's rule at evaluation instead: the
    trainer re-estimates the rows on the fixed weights as the plain average of the batch statistics of that many
    training batches (``training/population.py``), between ``begin_average`` and ``end_average``.
    """

    def __init__(self, num_features: int, max_steps: int, momentum: float, refit_batches: int = 0) -> None:
        super().__init__()
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        if isinstance(refit_batches, bool) or not isinstance(refit_batches, int) or refit_batches < 0:
            raise ConfigError(f"refit_batches={refit_batches!r}: expected the number of training batches that "
                              "re-estimate the population statistics before an evaluation, an int >= 0 (0: EMA only)")
        self.max_steps, self.momentum, self.refit_batches = max_steps, momentum, refit_batches
        self.register_buffer("running_mean", torch.zeros(max_steps, num_features))
        self.register_buffer("running_var", torch.ones(max_steps, num_features))
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long))
        # while averaging: updates per row, and the rows from before (not state: None outside a refit)
        self._counts: Tensor | None = None
        self._before: tuple[Tensor, Tensor] | None = None

    @torch.no_grad()
    def begin_average(self) -> None:
        """Forget the rows; until ``end_average`` each update adds one equally weighted batch to the average."""
        self._before = (self.running_mean.clone(), self.running_var.clone())
        self.running_mean.zero_()
        self.running_var.zero_()
        self._counts = torch.zeros(self.max_steps, 1, dtype=self.running_mean.dtype,
                                   device=self.running_mean.device)

    @torch.no_grad()
    def end_average(self) -> None:
        """Back to the EMA of training; rows that no batch reached get their values from before the average."""
        if self._counts is not None:
            unseen = self._counts[:, 0] == 0
            self.running_mean[unseen] = self._before[0][unseen]
            self.running_var[unseen] = self._before[1][unseen]
        self._counts, self._before = None, None

    def slot(self, t: int, training: bool) -> int:
        """Buffer row of step ``t``: clamped to the last row, and at inference to the last trained step."""
        if training:
            return min(t, self.max_steps - 1)
        seen = int(self.steps_seen)
        return min(t, max(seen, 1) - 1, self.max_steps - 1)

    @torch.no_grad()
    def update(self, t: int, mean: Tensor, var_biased: Tensor, batch_size: int) -> None:
        self.update_rows(self.slot(t, True), mean.unsqueeze(0), var_biased.unsqueeze(0), batch_size)

    @torch.no_grad()
    def update_rows(self, start: int, mean: Tensor, var_biased: Tensor, batch_size: int) -> None:
        """Update (EMA, or the running average) of the consecutive rows ``start .. start + L - 1`` (all in range)
        from ``(L, F)`` statistics."""
        rows = slice(start, start + mean.shape[0])
        if self._counts is not None:
            self._counts[rows] += 1
        self._blend(self.running_mean, rows, mean)
        if batch_size > 1:  # unbiased variance is undefined for one sample: keep the old estimate
            self._blend(self.running_var, rows, var_biased * (batch_size / (batch_size - 1)))
        self.steps_seen.fill_(max(int(self.steps_seen), start + mean.shape[0]))

    def _blend(self, buf: Tensor, rows: slice, value: Tensor) -> None:
        """``buf[rows] = (1 - m) buf[rows] + m value``: m is the momentum (EMA), or 1/k for a row's k-th batch while
        averaging."""
        value = value.to(buf.dtype)
        if self._counts is None:
            buf[rows].mul_(1 - self.momentum).add_(value, alpha=self.momentum)
        else:
            m = 1.0 / self._counts[rows]
            buf[rows].mul_(1 - m).add_(m * value)

    def get(self, t: int) -> tuple[Tensor, Tensor]:
        i = self.slot(t, False)
        return self.running_mean[i], self.running_var[i]

    def get_rows(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        """``get`` for a tensor of time indices (any shape): population rows clamped as ``slot`` does."""
        idx = pos.clamp(min=0, max=self.slot(self.max_steps, False))
        return self.running_mean[idx], self.running_var[idx]


def step_counter(batch_size: int, device=None) -> tuple[Tensor]:
    return (torch.zeros(batch_size, device=device, dtype=torch.long),)


def current_step(counter: Tensor) -> int:
    """The time index of this step (all real sequences share it under right padding)."""
    return int(counter.max()) if counter.numel() else 0


class RecurrentBatchNorm(RecurrentNorm):
    """``β + γ ⊙ (a − E[a]) / sqrt(Var[a] + ε)`` with statistics per time step.

    ``refit_batches``: 0 evaluates with the EMA kept in training; N > 0 with the paper's population statistics,
    re-estimated by the trainer before every evaluation on the fixed weights (the average over N training batches).
    """

    stateless = False
    num_state = 1
    step_exact_in_train = False
    cancels_bias = True

    def __init__(
        self,
        num_features: int,
        *,
        gamma_init: float = 0.1,
        shift: bool | None = None,
        site: str | None = None,
        eps: float = 1e-5,
        momentum: float = 0.1,
        max_steps: int = 1024,
        refit_batches: int = 0,
    ) -> None:
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.weight = nn.Parameter(torch.full((num_features,), float(gamma_init)))
        if shift is None:  # the cell's biases inside the sites cancel: β_h is the gate bias b, β_x = 0
            shift = site != "x"
        self.bias = nn.Parameter(torch.zeros(num_features)) if shift else None
        self.population = PerStepPopulation(num_features, max_steps, momentum, refit_batches)

    def init_state(self, batch_size: int, device=None, dtype=None) -> NormState:
        return step_counter(batch_size, device)

    def forward(self, a: Tensor, state: NormState = ()) -> tuple[Tensor, NormState]:
        (counter,) = state if state else step_counter(a.shape[0], a.device)
        t = current_step(counter)
        if self.training:
            mean = a.mean(0)
            var = a.var(0, unbiased=False)
            self.population.update(t, mean.detach(), var.detach(), a.shape[0])
        else:
            mean, var = self.population.get(t)
            mean, var = mean.to(a.dtype), var.to(a.dtype)
        y = (a - mean) * torch.rsqrt(var + self.eps) * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y, (counter + 1,)

    def extra_repr(self) -> str:
        return f"{self.num_features}, max_steps={self.population.max_steps}, shift={self.bias is not None}"


register_recurrent_norm("batch", RecurrentBatchNorm)

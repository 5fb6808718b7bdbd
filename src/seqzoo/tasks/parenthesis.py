"""Parenthesis counting (ISAN task, used by NC-GRU; spec §2.2).

Tokens ``( ) [ ] { } a`` (ids 0..6, ``a`` is noise) are drawn i.i.d. uniformly, ``seq_len`` steps
(default 100). At every step the target is, for each of the 3 bracket types, the number of
currently unclosed openers as a saturating counter: an opener adds 1 up to ``max_count`` (default 5;
further openers are not counted), a closer subtracts 1 down to 0. The model outputs
``3 × (max_count + 1)`` scores per step: one block of ``max_count + 1`` per bracket type.

Loss (``loss=``):

* ``"mse"`` (alias ``"identity"``, the reference's choice): the raw outputs are read as
  probabilities and trained by the mean squared error to the one-hot counts (mean over all
  ``3 × (max_count + 1)`` outputs and steps).
* ``"cross_entropy"`` (alias ``"softmax"``): a softmax per bracket type.

Metrics: ``accuracy`` (argmax of each block equals the count, over all steps and types; primary),
``sequence_accuracy`` (every count of a sequence right) and the loss.

Inputs are one-hot vectors of depth 7 (features), as in the reference.

Baseline: the best predictor that sees only the position ``t``, not the tokens. Each counter is a
lazy random walk on ``{0..max_count}`` started at 0 (up and down with probability 1/7 each, clipped),
so its law ``p_t`` at every step is computed exactly; the baseline predicts ``p_t`` (MSE
``(1 - Σ p_t²)/(max_count + 1)``, cross-entropy ``H(p_t)``) and its mode (accuracy ``max p_t``), averaged
over steps.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqzoo.errors import ConfigError
from seqzoo.tasks.base import Batch, Task, TaskSpec, check_int
from seqzoo.tasks.registry import register_task

TOKENS = "()[]{}a"
N_TYPES = 3
_LOSS_ALIASES = {"mse": "mse", "identity": "mse", "cross_entropy": "cross_entropy", "softmax": "cross_entropy"}


def saturating_counts(tokens: Tensor, max_count: int) -> Tensor:
    """``(B, L, 3)`` counts of unclosed openers per bracket type, clipped to ``[0, max_count]`` at every step."""
    bsz, length = tokens.shape
    counts = torch.zeros(bsz, N_TYPES, dtype=torch.long)
    out = torch.empty(bsz, length, N_TYPES, dtype=torch.long)
    kinds = torch.arange(N_TYPES)
    for t in range(length):
        tok = tokens[:, t: t + 1]
        counts = (counts + (tok == 2 * kinds).long()).clamp(max=max_count)
        counts = (counts - (tok == 2 * kinds + 1).long()).clamp(min=0)
        out[:, t] = counts
    return out


def count_marginals(seq_len: int, max_count: int, n_tokens: int = len(TOKENS)) -> Tensor:
    """``(seq_len, max_count + 1)`` float64: the law of one counter after each step (start at 0)."""
    k = max_count + 1
    step = torch.zeros(k, k, dtype=torch.float64)  # step[i, j] = P(j | i)
    p_move = 1.0 / n_tokens
    for i in range(k):
        step[i, min(i + 1, max_count)] += p_move
        step[i, max(i - 1, 0)] += p_move
        step[i, i] += 1.0 - 2 * p_move
    p = torch.zeros(k, dtype=torch.float64)
    p[0] = 1.0
    rows = []
    for _ in range(seq_len):
        p = p @ step
        rows.append(p)
    return torch.stack(rows)


def mode_path_probability(modes: list[int], max_count: int, n_tokens: int = len(TOKENS)) -> float:
    """Probability that all three counters follow the path ``modes`` (all equal to ``modes[t]`` at every t).

    One token moves at most one counter, so all three can change level together only if none moves:
    the path must stay at one level ``l``, kept by noise, by openers when ``l = max_count`` and by
    closers when ``l = 0``.
    """
    prob, level = 1.0, 0
    for m in modes:
        if m != level:
            return 0.0
        prob *= (1 + N_TYPES * (level == max_count) + N_TYPES * (level == 0)) / n_tokens
    return prob


@register_task
class ParenthesisTask(Task):
    """Count unclosed brackets of three types (saturating at max_count) at every step."""

    name = "parenthesis"
    paper = "ISAN task, as used by NC-GRU (Mucllari et al. 2022)"
    version = 1
    non_data_params = ("n_valid", "n_test", "loss")

    def __init__(self, seq_len: int = 100, max_count: int = 5, loss: str = "mse", n_valid: int = 1000,
                 n_test: int = 1000) -> None:
        check_int("parenthesis", "seq_len", seq_len, 1)
        check_int("parenthesis", "max_count", max_count, 1)
        check_int("parenthesis", "n_valid", n_valid, 1)
        check_int("parenthesis", "n_test", n_test, 1)
        if loss not in _LOSS_ALIASES:
            raise ConfigError(f"parenthesis: loss must be one of {sorted(_LOSS_ALIASES)}, got {loss!r}")
        loss = _LOSS_ALIASES[loss]
        super().__init__(seq_len=seq_len, max_count=max_count, loss=loss, n_valid=n_valid, n_test=n_test)
        self.seq_len, self.max_count, self.loss_kind = seq_len, max_count, loss
        self.n_classes = max_count + 1
        self.eval_sizes = {"valid": n_valid, "test": n_test}
        self.spec = TaskSpec(input_kind="features", d_input=len(TOKENS), output_kind="per_step",
                             d_output=N_TYPES * self.n_classes, loss=loss,
                             metrics=("accuracy", "sequence_accuracy", loss), primary_metric="accuracy",
                             higher_is_better=True, seq_len=seq_len,
                             extra={"tokens": TOKENS, "n_types": N_TYPES, "max_count": max_count})

    def sample(self, n: int, g: torch.Generator) -> Batch:
        tokens = torch.randint(0, len(TOKENS), (n, self.seq_len), generator=g)
        inputs = torch.nn.functional.one_hot(tokens, len(TOKENS)).float()
        return {"inputs": inputs, "targets": saturating_counts(tokens, self.max_count)}

    # ----- loss and metrics -------------------------------------------------------------------
    def _blocks(self, outputs: Tensor) -> Tensor:
        if outputs.shape[-1] != N_TYPES * self.n_classes:
            raise ValueError(f"parenthesis: outputs must have {N_TYPES * self.n_classes} scores per step "
                             f"(3 types × {self.n_classes} counts), got shape {tuple(outputs.shape)}")
        return outputs.unflatten(-1, (N_TYPES, self.n_classes))

    def _pointwise_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Per (sequence, step) loss, averaged over the 3 types (and the classes for MSE)."""
        blocks = self._blocks(outputs)
        if self.loss_kind == "mse":
            one_hot = torch.nn.functional.one_hot(targets, self.n_classes).to(blocks.dtype)
            return (blocks - one_hot).pow(2).mean((-1, -2))
        ce = torch.nn.functional.cross_entropy(blocks.flatten(0, -2), targets.flatten(), reduction="none")
        return ce.view(targets.shape).mean(-1)

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        return self._pointwise_loss(outputs, batch["targets"]).mean()

    def metric_sums(self, outputs: Tensor, batch: Batch) -> dict[str, tuple[float, float]]:
        targets = batch["targets"]
        correct = self._blocks(outputs).argmax(-1) == targets  # (B, L, 3)
        values = self._pointwise_loss(outputs, targets).detach().double()
        return {"accuracy": (float(correct.sum()), float(correct.numel())),
                "sequence_accuracy": (float(correct.flatten(1).all(1).sum()), float(correct.shape[0])),
                self.loss_kind: (float(values.sum()), float(values.numel()))}

    def baseline(self) -> dict[str, float]:
        p = count_marginals(self.seq_len, self.max_count)
        entropy = -(p * p.clamp(min=1e-300).log()).sum(-1)
        out = {"accuracy": float(p.max(-1).values.mean()),
               "sequence_accuracy": mode_path_probability(p.argmax(-1).tolist(), self.max_count)}
        out["mse"] = float(((1.0 - (p ** 2).sum(-1)) / self.n_classes).mean())
        out["cross_entropy"] = float(entropy.mean())
        return {k: out[k] for k in self.spec.metrics}

"""Output heads of ``SequenceModel``: linear (optionally tied to the embedding) and the adaptive softmax for large
vocabularies (Grave et al. 2017).

``AdaptiveHead`` holds the parameters of ``torch.nn.AdaptiveLogSoftmaxWithLoss`` (``self.asm``): a head softmax over
the ``cutoffs[0]`` most frequent classes plus one logit per tail cluster, and one small softmax per tail cluster
computed from a down-projected feature (``d / div_value ** (i + 1)`` dims). Class ids must be sorted by decreasing
frequency (the ``lm`` task's vocabulary is).

Two ways to use a head, and the rule for which one a caller takes:

* ``nll(x, targets)``: ``-log p(target)`` per position. The adaptive head evaluates its head softmax and, for each
  tail cluster, only the rows whose target lies in it: never a ``(..., n_classes)`` tensor. Training and evaluation
  score targets this way (``SequenceModel.forward(..., targets=...)``, called by
  ``seqzoo.training.evaluation.score_batch``).
* ``forward(x)``: normalised log-probabilities of every class, for callers that need the distribution (generation,
  beam search, sampling, latency probes). A cross-entropy taken over them is exact: ``log_softmax`` of
  log-probabilities that already sum to one is the identity, and so is its gradient.

Default cutoffs (``default_cutoffs``) and ``div_value = 4`` follow the paper and fairseq; see ``default_cutoffs``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqzoo.errors import ConfigError

HEADS = ("linear", "adaptive")

# Evaluation (no autograd) scores at most this many logits per chunk of positions: bounded memory (16 MB of
# float32) whatever the batch, sequence length and vocabulary.
EVAL_CHUNK_ELEMENTS = 1 << 22


def default_cutoffs(n_classes: int) -> list[int]:
    """Cutoffs used when none are given.

    Rule: a head of the ``min(2000, n // 5)`` most frequent classes, a first tail cluster up to ``min(10000, n //
    2)``, a third cutoff at 50,000 above 100,000 classes, the rest in the last cluster. Up to 10,000 classes this is
    the former ``[n // 5, n // 2]`` (PTB's 10,000 words -> ``[2000, 5000]``, the cutoffs of torch's documentation
    example and of the reference script of issue 21); 33,278 words (WikiText-2) -> ``[2000, 10000]``; 267,735
    (WikiText-103) -> ``[2000, 10000, 50000]``, the shape of fairseq's LSTM/fconv default ``10000,50000,200000``
    with Grave et al.'s small head (2k-4k words). Why a small head: every position pays for the head softmax, only
    the few whose target is rare pay for a tail. Measured (benchmarks/bench_lm.py cutoffs, 39,855 words, step time
    / the reference step with ``[2000, 5000]``, loaded machine): ``[2000, 10000]`` 0.97, ``[2000, 5000]`` 0.98,
    ``[4000, 12000]`` 1.15, ``[n // 5, n // 2]`` 1.41. Fewer clusters when ``n_classes`` is too small for two.
    """
    if n_classes < 3:
        raise ValueError(f"head='adaptive' needs d_output >= 3 (a head and at least one tail cluster), "
                         f"got d_output={n_classes}")
    cuts = {max(1, min(2000, n_classes // 5)), max(2, min(10_000, n_classes // 2))}
    if n_classes > 100_000:
        cuts.add(50_000)
    return sorted(c for c in cuts if c < n_classes)


def check_cutoffs(cutoffs: Sequence[int] | None, n_classes: int) -> list[int]:
    """Validated cutoffs: strictly increasing integers in ``[1, n_classes - 1]`` (the defaults when None)."""
    if cutoffs is None:
        return default_cutoffs(n_classes)
    if (isinstance(cutoffs, (str, bytes)) or not isinstance(cutoffs, Sequence) or not cutoffs
            or any(isinstance(c, bool) or not isinstance(c, int) for c in cutoffs)):
        raise ValueError(f"cutoffs must be a non-empty list of integers, e.g. [2000, 5000]; got {cutoffs!r}")
    cuts = [int(c) for c in cutoffs]
    if any(b <= a for a, b in zip(cuts, cuts[1:])) or cuts[0] < 1 or cuts[-1] >= n_classes:
        raise ValueError(f"cutoffs must be strictly increasing integers in [1, d_output - 1 = {n_classes - 1}] "
                         f"(class ids sorted by decreasing frequency); got {cuts}")
    return cuts


def check_targets(targets: Tensor, n_classes: int) -> None:
    """Raise naming the range when a target id lies outside ``[0, n_classes)``."""
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= n_classes):
        raise ValueError(f"target ids must lie in [0, {n_classes}), got range "
                         f"[{int(targets.min())}, {int(targets.max())}]")


def _tied_embedding(head: nn.Module, embedding: nn.Embedding, width: int, n_classes: int) -> None:
    """Keep a reference to ``embedding`` whose weight is the head's output weight (not registered as a submodule,
    so the weight is saved once, under the embedding's key; ``deepcopy`` and ``.to`` keep it shared)."""
    if not isinstance(embedding, nn.Embedding) or tuple(embedding.weight.shape) != (n_classes, width):
        got = tuple(embedding.weight.shape) if isinstance(embedding, nn.Embedding) else type(embedding).__name__
        raise ConfigError(f"tie_weights=True needs a token embedding of shape (d_output={n_classes}, "
                          f"width={width}) to share with the output head; got {got} (token input with "
                          "vocab_size == d_output, and the last layer's width equal to d_model)")
    head.__dict__["embedding"] = embedding


class TiedLinearHead(nn.Module):
    """``logits = x @ E^T + b`` with ``E`` the token embedding's weight (Press & Wolf 2017; Inan et al. 2017)."""

    def __init__(self, embedding: nn.Embedding, d_in: int, n_classes: int) -> None:
        super().__init__()
        _tied_embedding(self, embedding, d_in, n_classes)
        self.bias = nn.Parameter(torch.zeros(n_classes))
        self.out_features = n_classes

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.embedding.weight, self.bias)


def linear_nll(logits: Tensor, targets: Tensor) -> Tensor:
    """``-log softmax(logits)[target]`` per position (the task's cross-entropy, computed the same way)."""
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten(), reduction="none").view(targets.shape)


class AdaptiveHead(nn.Module):
    """``log_probs (..., n_classes) = AdaptiveHead(d_in, n_classes, cutoffs)(x (..., d_in))``; ``nll(x, targets)``.

    ``embedding``: tie the output weights to this token embedding (``(n_classes, d_in)``): the head's rows of the
    ``cutoffs[0]`` frequent classes are the embedding's rows, and each tail cluster's logits are ``x @ E[rows]^T``
    at full width (a tied tail has no down-projection, so ``div_value`` does not apply to it); only the cluster
    logits of the head keep their own weights.
    """

    def __init__(self, d_in: int, n_classes: int, cutoffs: Sequence[int] | None = None, div_value: float = 4.0,
                 head_bias: bool = False, embedding: nn.Embedding | None = None) -> None:
        super().__init__()
        if isinstance(div_value, bool) or not isinstance(div_value, (int, float)) or not div_value >= 1.0:
            raise ValueError(f"div_value must be a number >= 1 (tail cluster i uses d / div_value**(i+1) dims), "
                             f"got {div_value!r}")
        self.cutoffs = check_cutoffs(cutoffs, n_classes)
        self.in_features, self.n_classes = d_in, n_classes
        self.shortlist_size = self.cutoffs[0]
        self.bounds = [*self.cutoffs, n_classes]
        self.tied = embedding is not None
        if self.tied:
            _tied_embedding(self, embedding, d_in, n_classes)
            self.cluster = nn.Linear(d_in, len(self.cutoffs), bias=head_bias)
            return
        smallest = int(d_in // (float(div_value) ** len(self.cutoffs)))
        if smallest < 1:
            raise ValueError(f"div_value={div_value} leaves the last of {len(self.cutoffs)} tail clusters "
                             f"{d_in} / {div_value}**{len(self.cutoffs)} < 1 dims; use fewer cutoffs or a smaller "
                             "div_value")
        self.asm = nn.AdaptiveLogSoftmaxWithLoss(d_in, n_classes, self.cutoffs, div_value=float(div_value),
                                                 head_bias=head_bias)

    @property
    def widest(self) -> int:
        """Logits per position of the head softmax, the one every position computes (``head_nll`` chunks positions
        by it; ``nll`` splits a tail cluster's rows further without autograd)."""
        return self.shortlist_size + len(self.cutoffs)

    def head_logits(self, x: Tensor) -> Tensor:
        """Logits of the ``cutoffs[0]`` frequent classes followed by one logit per tail cluster."""
        if not self.tied:
            return self.asm.head(x)
        w = self.embedding.weight
        return torch.cat([F.linear(x, w[:self.shortlist_size]), self.cluster(x)], dim=-1)

    def tail_logits(self, i: int, x: Tensor) -> Tensor:
        """Logits of the classes of tail cluster ``i`` (ids ``bounds[i]`` to ``bounds[i + 1] - 1``)."""
        if not self.tied:
            return self.asm.tail[i](x)
        return F.linear(x, self.embedding.weight[self.bounds[i]:self.bounds[i + 1]])

    def forward(self, x: Tensor) -> Tensor:
        """Normalised log-probabilities of every class at every position of ``x`` (for the distribution; use
        ``nll`` to score targets).

        Same values as ``AdaptiveLogSoftmaxWithLoss.log_prob``, built with one concatenation instead of slice
        assignments into a zero tensor (about 2.3x faster forward+backward at 10k classes).
        """
        short = self.shortlist_size
        head = F.log_softmax(self.head_logits(x), dim=-1)
        parts = [head[..., :short]]
        for i in range(len(self.cutoffs)):
            parts.append(F.log_softmax(self.tail_logits(i, x), dim=-1) + head[..., short + i:short + i + 1])
        return torch.cat(parts, dim=-1)

    def nll(self, x: Tensor, targets: Tensor) -> Tensor:
        """``-log p(target)`` per position (shape of ``targets``), touching only the clusters the targets need.

        The head softmax runs on every row; tail cluster i runs only on the rows whose target lies in it. Equal to
        ``-forward(x)[target]`` (and to ``AdaptiveLogSoftmaxWithLoss``'s output) up to float rounding.
        """
        if x.shape[:-1] != targets.shape:
            raise ValueError(f"AdaptiveHead.nll: features {tuple(x.shape)} and targets {tuple(targets.shape)} "
                             "must agree in every dimension but the last")
        check_targets(targets, self.n_classes)
        flat, t = x.reshape(-1, x.shape[-1]), targets.reshape(-1).contiguous()
        short = self.shortlist_size
        in_head = t < short
        # the head's column of each target: the class itself, or the logit of its tail cluster
        cluster = torch.bucketize(t, torch.tensor(self.cutoffs, device=t.device), right=True)  # 0 = head
        column = torch.where(in_head, t, cluster + (short - 1))
        # softmaxes in float32 (logits may be bfloat16 under autocast), as the cross-entropy of a linear head is
        logp = F.log_softmax(self.head_logits(flat).float(), dim=-1).gather(1, column.unsqueeze(1)).squeeze(1)
        for i in range(len(self.cutoffs)):
            rows = (cluster == i + 1).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            size = self.bounds[i + 1] - self.bounds[i]
            step = rows.numel() if torch.is_grad_enabled() else max(1, EVAL_CHUNK_ELEMENTS // size)
            for part in rows.split(step):
                local = F.log_softmax(self.tail_logits(i, flat.index_select(0, part)).float(), dim=-1)
                picked = local.gather(1, (t.index_select(0, part) - self.bounds[i]).unsqueeze(1)).squeeze(1)
                logp = logp.index_add(0, part, picked)
        return -logp.view(targets.shape)


def head_nll(head: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
    """``-log p(target)`` per position from any head: its own ``nll`` where it has one, else the cross-entropy of
    its logits. Without autograd (evaluation) the positions go through in chunks of at most
    ``EVAL_CHUNK_ELEMENTS`` logits, so memory does not grow with batch x length x classes."""
    score = head.nll if callable(getattr(head, "nll", None)) else (lambda f, t: linear_nll(head(f), t))
    if torch.is_grad_enabled():
        return score(x, targets)
    flat, t = x.reshape(-1, x.shape[-1]), targets.reshape(-1)
    width = getattr(head, "widest", None) or getattr(head, "out_features", None) or head(flat[:1]).shape[-1]
    rows = max(1, EVAL_CHUNK_ELEMENTS // width)
    if flat.shape[0] <= rows:
        return score(x, targets)
    return torch.cat([score(flat[i:i + rows], t[i:i + rows]) for i in range(0, flat.shape[0], rows)]
                     ).view(targets.shape)

"""Decoding for every seq2seq model: greedy and batched beam search with GNMT's length and coverage penalties.

Both run the model's incremental decoder (``start`` then one ``step`` per token), so the prefix is never re-run:
recurrent layers carry their state, convolutions shift their input buffers.

Beam search scores a hypothesis Y of source X as GNMT (Wu et al. 2016, spec §5.4)::

    s(Y, X) = log P(Y | X) / lp(Y) + cp(X; Y)
    lp(Y)   = (5 + |Y|)^alpha / (5 + 1)^alpha
    cp(X;Y) = beta * sum_i log(min(sum_j p_ij, 1.0))      (i over real source tokens, j over the target steps)

with ``log P`` the total log-probability (not per token) and ``|Y|`` the number of generated tokens, EOS included.
Finished hypotheses are compared by this penalized score only; live hypotheses are ranked by ``log P`` (what
extends them). The attention row of every step is accumulated per hypothesis and reordered with the beam.
A sentence stops when it has ``beam`` finished hypotheses and the best of them is at least the best score a live
one could still reach (``log P / lp(max_len)``, since log P only falls and cp <= 0), or at its maximum length
``ceil(max_len_ratio * source length) + max_len_extra``, where every live hypothesis is ended.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seqzoo.errors import ConfigError
from seqzoo.models.seq2seq.base import BOS, EOS, PAD, Seq2SeqModel, reorder_state

COVERAGE_FLOOR = 1e-10  # log(min(coverage, 1)) of a never-attended source token: log(1e-10) instead of -inf


def length_penalty(length: int | float | Tensor, alpha: float) -> float | Tensor:
    """GNMT's ``lp = ((5 + |Y|) / 6) ** alpha``."""
    return ((5.0 + length) / 6.0) ** alpha


def coverage_penalty(coverage: Tensor, beta: float, src_mask: Tensor | None = None) -> Tensor:
    """GNMT's ``cp = beta * sum_i log(min(coverage_i, 1))`` over the last axis (source positions; padding skipped).

    ``coverage`` (..., S) is the attention each source token received, summed over the target steps.
    """
    terms = coverage.clamp(max=1.0).clamp(min=COVERAGE_FLOOR).log()
    if src_mask is not None:
        terms = terms * src_mask.to(terms.dtype)
    return beta * terms.sum(-1)


def penalized_score(log_prob: float | Tensor, length: int, coverage: Tensor | None, alpha: float, beta: float,
                    src_mask: Tensor | None = None) -> float | Tensor:
    """``log_prob / lp(length) + cp(coverage)`` (no cp when ``beta`` is 0)."""
    score = log_prob / length_penalty(length, alpha)
    if beta and coverage is not None:
        score = score + coverage_penalty(coverage, beta, src_mask)
    return score


@dataclass(frozen=True)
class DecodeConfig:
    """How to decode: ``beam=1`` is greedy; alpha/beta are GNMT's lp/cp weights (beam search only)."""

    beam: int = 5
    alpha: float = 0.2
    beta: float = 0.2
    max_len_ratio: float = 1.5
    max_len_extra: int = 10

    def __post_init__(self) -> None:
        if isinstance(self.beam, bool) or not isinstance(self.beam, int) or self.beam < 1:
            raise ConfigError(f"beam must be an integer >= 1 (1 = greedy), got {self.beam!r}")
        for name in ("alpha", "beta", "max_len_ratio"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {v!r}")
        if isinstance(self.max_len_extra, bool) or not isinstance(self.max_len_extra, int) or self.max_len_extra < 0:
            raise ConfigError(f"max_len_extra must be an integer >= 0, got {self.max_len_extra!r}")
        if self.max_len_ratio == 0 and self.max_len_extra == 0:
            raise ConfigError("max_len_ratio and max_len_extra are both 0: no token could be generated")


def max_lengths(src_mask: Tensor, ratio: float, extra: int) -> Tensor:
    """Longest output per sentence (EOS included): ``ceil(ratio * source length) + extra`` (at least 1)."""
    n = src_mask.long().sum(1).double()
    return (torch.ceil(ratio * n).long() + extra).clamp(min=1)


def _strip(tokens: list[int]) -> list[int]:
    """Tokens before the first EOS."""
    return tokens[:tokens.index(EOS)] if EOS in tokens else tokens


@torch.no_grad()
def greedy(model: Seq2SeqModel, src: Tensor, src_mask: Tensor | None = None, *, max_len_ratio: float = 1.5,
           max_len_extra: int = 10) -> list[list[int]]:
    """Most likely next token at every step, batched; the tokens of each sentence before its EOS."""
    src_mask = Seq2SeqModel.source_mask(src, src_mask)
    limit = max_lengths(src_mask, max_len_ratio, max_len_extra)
    state = model.start(model.encode(src, src_mask))
    B = src.shape[0]
    tokens = torch.full((B,), BOS, dtype=torch.long, device=src.device)
    done = torch.zeros(B, dtype=torch.bool, device=src.device)
    lengths = torch.zeros(B, dtype=torch.long, device=src.device)
    out = []
    for t in range(int(limit.max())):
        logits, state = model.step(tokens, state)
        tokens = logits.argmax(-1).masked_fill(done, PAD)
        out.append(tokens)
        lengths += (~done).long()
        done |= (tokens == EOS) | (t + 1 >= limit.to(src.device))
        if bool(done.all()):
            break
    rows = torch.stack(out, 1).tolist()
    return [_strip(r[:n]) for r, n in zip(rows, lengths.tolist())]


@torch.no_grad()
def beam_search(model: Seq2SeqModel, src: Tensor, src_mask: Tensor | None = None, *, beam: int = 5,
                alpha: float = 0.2, beta: float = 0.2, max_len_ratio: float = 1.5,
                max_len_extra: int = 10) -> list[list[int]]:
    """Batched beam search (module docstring); the best finished hypothesis of each sentence, without EOS."""
    src_mask = Seq2SeqModel.source_mask(src, src_mask)
    B, K, dev = src.shape[0], beam, src.device
    limit = max_lengths(src_mask, max_len_ratio, max_len_extra).tolist()
    expand = torch.arange(B, device=dev).repeat_interleave(K)
    state = reorder_state(model.start(model.encode(src, src_mask)), expand)
    smask = src_mask.index_select(0, expand)
    scores = torch.full((B, K), -math.inf, device=dev)
    scores[:, 0] = 0.0
    tokens = torch.full((B * K,), BOS, dtype=torch.long, device=dev)
    history = torch.zeros(B * K, 0, dtype=torch.long, device=dev)
    coverage = torch.zeros(smask.shape, device=dev) if beta else None
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    done = [False] * B
    for t in range(max(limit)):
        logits, state = model.step(tokens, state)
        logp = torch.log_softmax(logits.float(), -1)
        V = logp.shape[-1]
        if coverage is not None:
            attn = state.get("attn")
            if attn is None:
                raise ValueError(f"beta={beta}: the coverage penalty needs the model's attention (state['attn'])")
            coverage = coverage + attn.float()
        cand = scores.view(B * K, 1) + logp
        length = t + 1
        # finished: the EOS extension of a live beam, when it ranks among the 2K best candidates (or at max length)
        eos = cand[:, EOS].view(B, K)
        penalized = eos / length_penalty(length, alpha)
        if coverage is not None:
            penalized = penalized + coverage_penalty(coverage, beta, smask).view(B, K)
        kth = cand.view(B, K * V).topk(min(2 * K, K * V), dim=1).values[:, -1:]
        at_max = torch.tensor([length >= m for m in limit], device=dev)
        take = torch.isfinite(eos) & ((eos >= kth) | at_max.unsqueeze(1))
        hist = history.tolist()
        for b, k in take.nonzero().tolist():
            if not done[b]:
                finished[b].append((float(penalized[b, k]), hist[b * K + k]))
        # live: the K best non-EOS extensions
        cand[:, EOS] = -math.inf
        new_scores, idx = cand.view(B, K * V).topk(K, dim=1)
        sel = (torch.arange(B, device=dev).unsqueeze(1) * K + idx // V).view(-1)
        tok = (idx % V).view(-1)
        state = reorder_state(state, sel)
        history = torch.cat([history.index_select(0, sel), tok.unsqueeze(1)], 1)
        if coverage is not None:
            coverage = coverage.index_select(0, sel)
        scores, tokens = new_scores, tok
        for b in range(B):
            if done[b]:
                continue
            if length >= limit[b]:
                done[b] = True
            elif len(finished[b]) >= K:
                reach = float(scores[b].max()) / length_penalty(limit[b], alpha)
                done[b] = max(f[0] for f in finished[b]) >= reach
        if all(done):
            break
        scores = scores.masked_fill(torch.tensor(done, device=dev).unsqueeze(1), -math.inf)
    return [max(f, key=lambda h: h[0])[1] if f else [] for f in finished]


def translate_ids(model: Seq2SeqModel, src: Tensor, src_mask: Tensor | None, config: DecodeConfig
                  ) -> list[list[int]]:
    """Greedy (``beam=1``) or beam search with ``config``'s settings; the model is put in eval mode meanwhile."""
    was_training = model.training
    model.eval()
    try:
        if config.beam == 1:
            return greedy(model, src, src_mask, max_len_ratio=config.max_len_ratio,
                          max_len_extra=config.max_len_extra)
        return beam_search(model, src, src_mask, beam=config.beam, alpha=config.alpha, beta=config.beta,
                           max_len_ratio=config.max_len_ratio, max_len_extra=config.max_len_extra)
    finally:
        model.train(was_training)


def translate_sorted(model: nn.Module, sources: list[list[int]], config: DecodeConfig, *, batch_size: int = 64,
                     progress=None) -> list[list[int]]:
    """Translate token-id sentences in batches of similar length (longest first); outputs in input order.

    ``progress(n)`` (optional) is called with the number of sentences done after each batch.
    """
    order = sorted(range(len(sources)), key=lambda i: -len(sources[i]))
    out: list[list[int]] = [[] for _ in sources]
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(1, max(len(sources[i]) for i in idx))
        src = torch.full((len(idx), width), PAD, dtype=torch.long)
        for r, i in enumerate(idx):
            src[r, :len(sources[i])] = torch.tensor(sources[i], dtype=torch.long)
        mask = src != PAD
        mask[:, 0] = True  # an empty source still has one (padding) position to attend to
        hyps = translate_ids(model, src.to(device), mask.to(device), config)
        for i, h in zip(idx, hyps):
            out[i] = h
        if progress is not None:
            progress(len(idx))
    return out

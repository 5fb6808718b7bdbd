"""End-to-end memory networks (MemN2N; Sukhbaatar, Szlam, Weston & Fergus 2015; spec §2): K hops of soft attention
over a set of sentence memories, answering a question with one word.

Not a per-time-step layer: MemN2N reads a *set* (a story of sentences) and a question, so it is a model of the
question-answering kind (``model_kind = "qa"``, see ``seqzoo.layers.protocol``): ``logits, state =
model(inputs, story)`` with ``inputs (B, Jq)`` the question's word ids, ``story (B, M, J)`` the memories (slot 0 =
the most recent sentence, all-zero rows = empty slots) and ``logits (B, d_output)`` over the words; ``state`` is
``()`` (nothing is carried between calls). Word id 0 is the nil word: its embedding is structurally zero (every
table stores rows 1.. and a zero row is put in front at lookup, so no update can move it), so padding words and
empty slots add nothing; empty slots are also left out of the attention, so the answer does not depend on how many
empty slots or padding columns a batch has.

Pieces (spec §2.2):

* Sentence encoding ``m_i = sum_j l_j * A[x_ij] + T_A[i]``: bag of words (``encoding="bow"``, ``l_j = 1``) or
  position encoding (``"pe"``) with the paper's formula ``l_kj = (1 - j/J) - (k/d)(1 - 2j/J)`` (j = 1..J, k = 1..d),
  where J is the sentence's own number of words (the paper's definition; the Matlab code's alternative formula
  uses the padded width instead, which would make the encoding depend on padding). The question uses the same
  encoding without the temporal term.
* Temporal encoding (``temporal``): learned rows ``T[i]`` per memory slot i (i = 0: the latest sentence), stored as
  ``memory_size`` extra rows of the memory tables, as the official code's "time words", so they are tied with the
  tables they belong to.
* Random noise (``random_noise``, train mode only): the official code's rule, vectorized: per story of n sentences
  draw ``nblank`` in {0..ceil(rn * n)}, a random n-subset of n + nblank time slots, sorted and capped at
  ``memory_size - 1``; the sentences get those temporal indices (empty memories inserted between them).
* Linear start (``linear_start``): the hops use the raw scores ``p_i = u.m_i`` (no softmax) until the validation
  loss stops falling, then the softmax. The phase is the buffer ``linear`` (saved with the weights, so a resumed
  run continues in the right phase); ``switch_on_plateau()`` ends it. The training loop calls it through
  ``training.hooks.PlateauSwitchHook``, which it adds by itself for any model with ``awaits_plateau``; the model
  never looks at the loop.
* Weight tying: ``"adjacent"`` (K + 1 tables E_0..E_K: question B = A^1 = E_0, A^{k+1} = C^k = E_k, answer
  ``W^T = C^K = E_K``, so ``d_output`` must equal ``vocab_size``) or ``"layerwise"`` (one A and one C for every hop, a
  separate question table B and answer matrix W, and ``u^{k+1} = H u^k + o^k`` with a shared linear H).
* K hops (``hops``), ``u^{k+1} = u^k + o^k``; the answer is ``W (o^K + u^K)`` (logits; the task's cross-entropy
  applies the softmax).

Everything is batched: one embedding lookup of all tables for the whole batch of stories, attention as einsum; no
Python loop over stories or sentences (only over the K <= 3 hops).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ENCODINGS = ("bow", "pe")
TYINGS = ("adjacent", "layerwise")


def position_encoding(mask: Tensor, d: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``l (..., J, d)`` for word masks ``(..., J)`` (True = a word): ``(1 - j/J) - (k/d)(1 - 2j/J)``, J = words.

    Positions are 1-based; J is each sentence's number of words (at least 1), so padding columns change nothing
    (their embedding is the nil word's zero anyway).
    """
    j = torch.arange(1, mask.shape[-1] + 1, device=mask.device, dtype=dtype)
    n = mask.sum(-1, keepdim=True).clamp(min=1).to(dtype)  # (..., 1)
    frac = (j / n).unsqueeze(-1)  # (..., J, 1)
    k = torch.arange(1, d + 1, device=mask.device, dtype=dtype) / d  # (d,)
    return (1 - frac) - k * (1 - 2 * frac)


def random_time_slots(n_real: Tensor, n_slots: int, memory_size: int, noise: float) -> Tensor:
    """Temporal indices ``(B, n_slots)`` with empty memories inserted (the official code's random-noise rule).

    Row b: ``nblank`` uniform in {0..ceil(noise * n)} (n = ``n_real[b]``), a random n-subset of the n + nblank slot
    indices sorted ascending (slot 0 = the latest sentence keeps the smallest index), capped at
    ``memory_size - 1``. Entries past n are ``memory_size - 1`` (they belong to empty slots, which are masked).
    The real memories are taken to be the first n slots (the ``babi`` layout: most recent first, empty slots last).
    """
    bsz, device = n_real.shape[0], n_real.device
    n = n_real.to(torch.float64)
    nblank = torch.floor(torch.rand(bsz, device=device, dtype=torch.float64) * (torch.ceil(noise * n) + 1)).long()
    width = n_slots + int(math.ceil(noise * n_slots)) + 1
    valid = torch.arange(width, device=device) < (n_real + nblank).unsqueeze(1)
    keys = torch.where(valid, torch.rand(bsz, width, device=device), torch.full((), 2.0, device=device))
    picked = keys.argsort(dim=1)[:, :n_slots]  # a random permutation of the valid indices, valid ones first
    real = torch.arange(n_slots, device=device) < n_real.unsqueeze(1)
    picked = torch.where(real, picked, torch.full_like(picked, width)).sort(dim=1).values
    return picked.clamp(max=memory_size - 1)


def encode_reference(ids: Tensor, weight: Tensor, d: int, encoding: str, time: Tensor | None = None) -> Tensor:
    """The slow twin of ``MemN2N._encode``: gather every word's rows, weight them (PE: ``position_encoding`` per
    table), sum over the words, add the temporal rows. Straight from the paper's formula; used by the tests and
    as the anchor of ``benchmarks/bench_memn2n.py``."""
    emb = F.embedding(ids, weight)  # (..., J, width)
    if encoding == "pe":
        emb = emb * position_encoding(ids.ne(0), d, weight.dtype).repeat(*([1] * ids.dim()), weight.shape[1] // d)
    out = emb.sum(-2)
    return out if time is None else out + F.embedding(time, weight)


class MemN2N(nn.Module):
    """End-to-end memory network: K attention hops over sentence memories, one-word answers (module docstring).

    Args:
        vocab_size: words including the nil word 0 (sized from the task).
        d_output: answer classes; None = ``vocab_size`` (adjacent tying needs exactly that).
        d_model: embedding width d (paper: 20 per task, 50 joint).
        hops: K (1-3 in the paper).
        encoding: ``"pe"`` (position encoding) or ``"bow"``.
        temporal: learned temporal encoding per memory slot.
        random_noise: fraction of empty memories inserted at train time (0 = off; paper 0.1).
        linear_start: start without the attention softmax until the validation loss stops falling.
        linear_start_patience: evaluations without a new lowest validation loss that end the linear start.
        tying: ``"adjacent"`` or ``"layerwise"``.
        memory_size: the most memories a story may hold (the temporal rows; sized from the task).
        init_std: std of the normal initialisation of every matrix (paper 0.1).
    """

    model_kind = "qa"
    input_names = ("inputs", "story")
    is_causal = False
    supports_step = False

    def __init__(self, vocab_size: int, d_output: int | None = None, *, d_model: int = 20, hops: int = 3,
                 encoding: str = "pe", temporal: bool = True, random_noise: float = 0.1, linear_start: bool = True,
                 linear_start_patience: int = 1, tying: str = "adjacent", memory_size: int = 50,
                 init_std: float = 0.1) -> None:
        super().__init__()
        if vocab_size < 2 or d_model < 1 or memory_size < 1:
            raise ValueError(f"vocab_size must be >= 2, d_model and memory_size >= 1, got {vocab_size}, {d_model}, "
                             f"{memory_size}")
        if not 1 <= hops <= 10:
            raise ValueError(f"hops must be in 1..10, got {hops}")
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        if tying not in TYINGS:
            raise ValueError(f"tying must be one of {TYINGS}, got {tying!r}")
        if not 0.0 <= random_noise < 1.0:
            raise ValueError(f"random_noise must be in [0, 1), got {random_noise}")
        if linear_start_patience < 1:
            raise ValueError(f"linear_start_patience must be >= 1, got {linear_start_patience}")
        d_output = vocab_size if d_output is None else d_output
        if tying == "adjacent" and d_output != vocab_size:
            raise ValueError(f"tying='adjacent' scores answers with the last memory table (W^T = C^K), so d_output "
                             f"must equal vocab_size={vocab_size}, got {d_output}; use tying='layerwise'")
        self.vocab_size, self.d_output, self.d_model, self.hops = vocab_size, d_output, d_model, hops
        self.encoding, self.temporal, self.random_noise, self.tying = encoding, temporal, random_noise, tying
        self.memory_size, self.plateau_patience = memory_size, linear_start_patience
        rows = vocab_size + (memory_size if temporal else 0)

        def table(n_rows: int) -> nn.Parameter:  # rows 1..n_rows-1; the nil row 0 is put in front at lookup
            return nn.Parameter(torch.randn(n_rows - 1, d_model) * init_std)

        if tying == "adjacent":
            self.tables = nn.ParameterList([table(rows) for _ in range(hops + 1)])  # E_0 .. E_K
        else:
            self.tables = nn.ParameterList([table(rows), table(rows)])  # A, C (shared by every hop)
            self.question = table(vocab_size)  # B
            self.answer = nn.Linear(d_model, d_output, bias=False)  # W
            self.hop_map = nn.Linear(d_model, d_model, bias=False)  # H
            for lin in (self.answer, self.hop_map):
                nn.init.normal_(lin.weight, std=init_std)
        self.register_buffer("linear", torch.tensor(bool(linear_start)))

    # ----- linear start -------------------------------------------------------------------------
    @property
    def awaits_plateau(self) -> bool:
        """True while the linear start lasts (the trainer's ``PlateauSwitchHook`` watches the validation loss)."""
        return bool(self.linear)

    def switch_on_plateau(self) -> bool:
        """End the linear start (the softmax goes back into every hop); True when this changed the phase."""
        if not bool(self.linear):
            return False
        self.linear.fill_(False)
        return True

    def module_metrics(self) -> dict[str, float]:
        return {"linear_start": float(bool(self.linear))}

    # ----- computation ----------------------------------------------------------------------------
    @staticmethod
    def _with_nil(table: Tensor) -> Tensor:
        return F.pad(table, (0, 0, 1, 0))

    def _encode(self, ids: Tensor, weight: Tensor, time: Tensor | None = None) -> Tensor:
        """Encoded sentences ``(..., width)`` of ``ids (..., J)`` with the tables ``weight (rows, width)`` side by side
        (width = a multiple of d; the encoding applies to each table), plus the temporal rows ``time (...)``.

        The position encoding is ``l_kj = a_j + (k/d) b_j`` with ``a_j = 1 - j/J`` and ``b_j = 2j/J - 1``, so a
        sentence is two weighted bags of its words' rows (``embedding_bag`` with per-word weights; BoW: one bag with
        weights 1): no gathered ``(..., J, width)`` tensor. Padding words get weight 0 (and the nil row is zero).
        """
        flat = ids.reshape(-1, ids.shape[-1])
        mask = flat.ne(0).to(weight.dtype)
        if self.encoding == "pe":
            j = torch.arange(1, flat.shape[-1] + 1, device=ids.device, dtype=weight.dtype)
            frac = j / mask.sum(-1, keepdim=True).clamp(min=1)
            a, b = (1 - frac) * mask, (2 * frac - 1) * mask
        else:
            a, b = mask, None
        if time is not None:  # the temporal row: weight 1, no position weighting
            flat = torch.cat([flat, time.reshape(-1, 1)], 1)
            a = torch.cat([a, torch.ones_like(a[:, :1])], 1)
            b = None if b is None else torch.cat([b, torch.zeros_like(b[:, :1])], 1)
        if b is None:
            out = F.embedding_bag(flat, weight, per_sample_weights=a, mode="sum")
        else:
            both = F.embedding_bag(torch.cat([flat, flat]), weight, per_sample_weights=torch.cat([a, b]), mode="sum")
            k = torch.arange(1, self.d_model + 1, device=ids.device, dtype=weight.dtype) / self.d_model
            out = both[:flat.shape[0]] + k.repeat(weight.shape[1] // self.d_model) * both[flat.shape[0]:]
        return out.view(*ids.shape[:-1], weight.shape[1])

    def _check(self, inputs: Tensor, story: Tensor) -> None:
        for name, t, dims in (("inputs (the question)", inputs, 2), ("story", story, 3)):
            if t.dtype not in (torch.int64, torch.int32) or t.dim() != dims:
                shape = "(batch, words)" if dims == 2 else "(batch, memories, words)"
                raise ValueError(f"MemN2N: {name} must be integer word ids of shape {shape}, got {t.dtype} "
                                 f"{tuple(t.shape)}")
            if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.vocab_size):
                raise ValueError(f"MemN2N: {name} word ids must lie in [0, {self.vocab_size}), got "
                                 f"[{int(t.min())}, {int(t.max())}]")
        if story.shape[0] != inputs.shape[0]:
            raise ValueError(f"MemN2N: story has {story.shape[0]} rows, the question {inputs.shape[0]}")
        if story.shape[1] > self.memory_size:
            raise ValueError(f"MemN2N: story has {story.shape[1]} memory slots, more than memory_size="
                             f"{self.memory_size}")

    def _time_rows(self, slots: Tensor) -> Tensor:
        """Temporal indices ``(B, M)`` of the memory slots: the slot number, randomized in training (RN)."""
        bsz, m = slots.shape
        if self.training and self.random_noise > 0:
            return random_time_slots(slots.sum(1), m, self.memory_size, self.random_noise)
        return torch.arange(m, device=slots.device).expand(bsz, m)

    def forward(self, inputs: Tensor, story: Tensor, state: tuple = ()) -> tuple[Tensor, tuple]:
        """``(logits (B, d_output), ())`` for questions ``inputs (B, Jq)`` over memories ``story (B, M, J)``."""
        return self._run(inputs, story)[0], ()

    def attention(self, inputs: Tensor, story: Tensor) -> Tensor:
        """The attention weights ``(B, K, M)`` of every hop, without gradients (in the current train/eval mode)."""
        with torch.no_grad():
            return torch.stack(self._run(inputs, story)[1], 1)

    def _run(self, inputs: Tensor, story: Tensor) -> tuple[Tensor, list[Tensor]]:
        self._check(inputs, story)
        tables = [self._with_nil(t) for t in self.tables]
        width = len(tables)
        joined = torch.cat(tables, 1)  # every memory table side by side: one product for all of them
        slots = story.ne(0).any(-1)  # (B, M) real memories
        time = self._time_rows(slots) + self.vocab_size if self.temporal else None
        mem = self._encode(story, joined, time)  # (B, M, width * d)
        mem = mem.view(*mem.shape[:2], width, self.d_model)
        if self.tying == "adjacent":
            u = self._encode(inputs, tables[0])
            keys = [mem[:, :, k] for k in range(self.hops)]
            values = [mem[:, :, k + 1] for k in range(self.hops)]
        else:
            u = self._encode(inputs, self._with_nil(self.question))
            keys, values = [mem[:, :, 0]] * self.hops, [mem[:, :, 1]] * self.hops
        real = slots.to(u.dtype)
        linear = bool(self.linear)
        probs = []
        for k in range(self.hops):
            scores = torch.einsum("bmd,bd->bm", keys[k], u)
            if linear:
                p = scores * real
            else:
                p = torch.softmax(scores.masked_fill(~slots, torch.finfo(scores.dtype).min), -1) * real
            probs.append(p)
            o = torch.einsum("bm,bmd->bd", p, values[k])
            u = (u if self.tying == "adjacent" else self.hop_map(u)) + o
        if self.tying == "adjacent":
            return u @ tables[-1][:self.vocab_size].t(), probs
        return self.answer(u), probs

"""Title recall (``title-recall``): long-range character recall for block-recurrent models (spec
stacks-memory-... §3.5).

Each document is ``seq_len + 1`` characters: a random title of ``title_len`` capital letters, written ``|TITLE|``,
first near the start (offset uniform in ``[0, jitter]``) and then repeated verbatim with gaps of ``period +-
jitter`` characters of filler text between occurrences (random words of a fixed lowercase vocabulary separated by
spaces). Next-character prediction: inputs are characters ``0..seq_len-1``, targets ``1..seq_len``.

Metrics (bits per character, averaged exactly over batches):

* ``recall_bpc``: the title letters of a repeated occurrence whose previous occurrence lies wholly outside the
  attention window of the predicting position: a query at position t (in block ``t // window``) sees keys from
  ``(t // window - 1) * window`` on, as in ``seqzoo.layers.block_recurrent``. A model without memory of the
  title can only guess: ``log2 26 = 4.70`` bits.
* ``filler_bpc``: the filler characters (lowercase letters and spaces).
* ``bpc`` and ``cross_entropy`` (nats, primary): every position.

The baseline is a character unigram, with the memoryless guess on title letters (``recall_bpc = log2 26``).
The default period is longer than the receptive field of a 3-layer sliding-window model with ``window`` 32 (each
layer reaches one block further back), so a ``Slide`` model cannot reach the previous occurrence through depth.
"""

from __future__ import annotations

import math
import string

import torch
from torch import Tensor

from seqzoo.errors import ConfigError
from seqzoo.tasks.base import Batch, Task, TaskSpec, _masked_mean, _masked_sum_count, check_int
from seqzoo.tasks.registry import register_task

ALPHABET = " " + string.ascii_lowercase + string.ascii_uppercase + "|"  # id = index; 0 is the space
MARK = ALPHABET.index("|")
CAPITALS = torch.tensor([ALPHABET.index(c) for c in string.ascii_uppercase])
N_WORDS = 32


def filler_words() -> list[list[int]]:
    """The fixed filler vocabulary: ``N_WORDS`` lowercase words of 2-7 letters (part of the task version)."""
    g = torch.Generator().manual_seed(20220315)
    lengths = torch.randint(2, 8, (N_WORDS,), generator=g).tolist()
    return [(torch.randint(0, 26, (n,), generator=g) + 1).tolist() for n in lengths]


@register_task
class TitleRecallTask(Task):
    """Random capital-letter titles repeated far apart inside filler text; next-character prediction."""

    name = "title-recall"
    paper = "Hutchins et al. 2022 (Block-Recurrent Transformers), spec §3.5 synthetic recall"
    version = 1

    def __init__(self, seq_len: int = 512, title_len: int = 8, period: int = 160, jitter: int = 16,
                 window: int = 32, n_valid: int = 200, n_test: int = 200) -> None:
        check_int("title-recall", "seq_len", seq_len, 2)
        check_int("title-recall", "title_len", title_len, 1)
        check_int("title-recall", "period", period, 1)
        check_int("title-recall", "jitter", jitter, 0)
        check_int("title-recall", "window", window, 1)
        check_int("title-recall", "n_valid", n_valid, 1)
        check_int("title-recall", "n_test", n_test, 1)
        if jitter >= period:
            raise ConfigError(f"title-recall: jitter must be < period, got jitter={jitter}, period={period}")
        super().__init__(seq_len=seq_len, title_len=title_len, period=period, jitter=jitter, window=window,
                         n_valid=n_valid, n_test=n_test)
        self.seq_len, self.title_len, self.period, self.jitter, self.window = seq_len, title_len, period, jitter, window
        self.eval_sizes = {"valid": n_valid, "test": n_test}
        self.words = filler_words()
        self.spec = TaskSpec(input_kind="tokens", vocab_size=len(ALPHABET), output_kind="per_step",
                             d_output=len(ALPHABET), loss="cross_entropy",
                             metrics=("cross_entropy", "bpc", "recall_bpc", "filler_bpc"),
                             primary_metric="cross_entropy", seq_len=seq_len,
                             extra={"alphabet": ALPHABET, "window": window})

    # ----- data -----------------------------------------------------------------------------------------------------
    def _filler(self, n: int, g: torch.Generator) -> list[int]:
        """``n`` characters of filler: words separated by single spaces (cut at ``n``)."""
        out: list[int] = []
        picks = torch.randint(0, N_WORDS, (n // 2 + 1,), generator=g).tolist()
        for w in picks:
            if len(out) >= n:
                break
            out.extend(self.words[w])
            out.append(0)
        return out[:n]

    def document(self, g: torch.Generator) -> tuple[list[int], list[int]]:
        """One document of ``seq_len + 1`` ids and the start of every title occurrence (the ``|``)."""
        n = self.seq_len + 1
        title = CAPITALS[torch.randint(0, 26, (self.title_len,), generator=g)].tolist()
        occurrence = [MARK, *title, MARK]
        doc: list[int] = self._filler(int(torch.randint(0, self.jitter + 1, (1,), generator=g)), g)
        starts = []
        while len(doc) < n:
            starts.append(len(doc))
            doc.extend(occurrence)
            gap = self.period + int(torch.randint(-self.jitter, self.jitter + 1, (1,), generator=g))
            doc.extend(self._filler(gap, g))
        return doc[:n], [s for s in starts if s < n]

    def sample(self, n: int, g: torch.Generator) -> Batch:
        docs = torch.empty(n, self.seq_len + 1, dtype=torch.long)
        recall = torch.zeros(n, self.seq_len, dtype=torch.bool)
        w = self.window
        for i in range(n):
            doc, starts = self.document(g)
            docs[i] = torch.tensor(doc)
            for prev, cur in zip(starts, starts[1:]):
                prev_end = prev + self.title_len + 1  # the previous occurrence's last title letter
                for k in range(1, self.title_len + 1):
                    t = cur + k - 1  # input position that predicts the k-th title letter at cur + k
                    if t < self.seq_len and prev_end < (t // w - 1) * w:
                        recall[i, t] = True
        targets = docs[:, 1:]
        filler = targets <= 26  # space or lowercase letter
        return {"inputs": docs[:, :-1], "targets": targets, "recall_mask": recall, "filler_mask": filler}

    # ----- loss and metrics -----------------------------------------------------------------------------------------
    def loss_from_nll(self, nll: Tensor, batch: Batch) -> Tensor:
        """Mean next-character NLL over every position (the same number ``loss`` gives on the logits)."""
        return _masked_mean(nll, None)

    def metric_sums_from_nll(self, nll: Tensor, batch: Batch) -> dict[str, tuple[float, float]]:
        bits = nll / math.log(2)
        return {"cross_entropy": _masked_sum_count(nll, None), "bpc": _masked_sum_count(bits, None),
                "recall_bpc": _masked_sum_count(bits, batch["recall_mask"]),
                "filler_bpc": _masked_sum_count(bits, batch["filler_mask"])}

    def metric_sums(self, outputs: Tensor, batch: Batch) -> dict[str, tuple[float, float]]:
        return self.metric_sums_from_nll(self._pointwise("cross_entropy", outputs, batch["targets"]), batch)

    def baseline(self) -> dict[str, float]:
        """A character unigram (add-one, from 64 training documents) scored on the test split, and the memoryless
        guess on recalled title letters (``recall_bpc = log2 26``)."""
        train = self.train_batch(0, 64)["targets"].flatten()
        counts = torch.bincount(train, minlength=len(ALPHABET)).double() + 1.0
        logp = (counts / counts.sum()).log()
        test = self.build("test").tensors
        nll = -logp[test["targets"]]
        ce = float(nll.mean())
        filler = float(nll[test["filler_mask"]].mean()) / math.log(2)
        return {"cross_entropy": ce, "bpc": ce / math.log(2), "filler_bpc": filler, "recall_bpc": math.log2(26)}

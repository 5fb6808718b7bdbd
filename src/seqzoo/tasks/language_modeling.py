"""Language modeling (``lm``): next-token prediction over a text corpus read from disk, word or character level.

Datasets are looked up under ``data_dir``, else ``$SEQZOO_DATA``, else ``./data``, ``../shared/data`` and
``../shared/data`` next to the repository; each place may be the folder holding the dataset folder or the dataset
folder itself:

* ``ptb``: ``penn-treebank/ptb.{train,valid,test}.txt[.gz]`` (Mikolov's preprocessed Penn Treebank). Word level
  (default): whitespace tokens plus ``<eos>`` at the end of every line. Character level: Mikolov's char version,
  the characters of each line with ``_`` between words, plus ``<eos>`` per line.
* ``tiny-shakespeare``: ``tiny-shakespeare/input.txt[.gz]``, character level by default (every character,
  newlines included). It has no official split; this task fixes one by position in the character stream:
  the first 90% is train, the next 5% valid, the last 5% test (the common 90/10 convention with its 10% halved).
* ``text``: any ``train.txt``, ``valid.txt``, ``test.txt`` (each optionally ``.gz``) in ``data_dir``; word level
  (default, ``<eos>`` per line) or raw characters.

The vocabulary comes from the training split, sorted by decreasing frequency (ties by the token), and always holds
``<unk>``; valid/test tokens outside it map to ``<unk>``. ``max_vocab`` keeps only the most frequent tokens.

Training batches are the standard contiguous-stream ("batchify") scheme: the training stream is cut into
``batch_size`` equal parallel streams and step s reads segment k of them, ``(epoch, k) = divmod(s, segments)``;
inputs ``(B, bptt)``, targets shifted by one. ``carry_state`` (0-dim bool) and ``segment_index`` in the batch tell a
trainer that row i continues row i of the previous step's batch unless ``segment_index == 0`` (truncated
backpropagation through time with a carried, detached state). With ``train_context > 0`` every segment also starts
with that many earlier tokens that are read but not scored (``loss_mask``), the TCN recipe for models trained
without a carried state; such batches have ``carry_state = False``.

Evaluation sets are windows of ``eval_context + bptt`` tokens of the split's stream (one stream, not batchified)
whose ``loss_mask`` scores each target token exactly once, with up to ``eval_context`` tokens of context before
it; this is exact for convolutional models whose receptive field fits in the context and a truncated-history
approximation for recurrent ones. ``stream_batches`` gives the other evaluation: the split as parallel contiguous
streams in ``bptt`` segments, each target scored once, for models that carry their state from segment to segment
(the trainer uses it for such models; see ``seqzoo.training.evaluation``).

Metrics: ``cross_entropy`` (nats per token, primary) and, at character level, ``bpc`` (bits per character); both
average exactly over batches. Perplexity ``exp(cross_entropy)`` is not a mean, so it is derived from the averaged
cross-entropy by ``derived_metrics``. The baseline is a unigram model of the training split (add-one smoothed)
scored on the test split.
"""

from __future__ import annotations

import functools
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from seqzoo.errors import ConfigError
from seqzoo.tasks.base import Batch, Task, TaskSpec, TensorDataset, _masked_mean, _masked_sum_count, check_int
from seqzoo.tasks.data_files import data_error, dataset_folder, find_file, read_text
from seqzoo.tasks.registry import register_task

UNK, EOS = "<unk>", "<eos>"
LEVELS = ("word", "char")
DATASETS: dict[str, dict[str, Any]] = {
    "ptb": {"folder": "penn-treebank", "files": {s: f"ptb.{s}.txt" for s in ("train", "valid", "test")},
            "level": "word"},
    "tiny-shakespeare": {"folder": "tiny-shakespeare", "files": {"all": "input.txt"}, "level": "char",
                         "split": (0.90, 0.95)},
    "text": {"folder": None, "files": {s: f"{s}.txt" for s in ("train", "valid", "test")}, "level": "word"},
}


# ----- tokens and vocabulary (files are found and read by seqzoo.tasks.data_files) ------------------------------------

def tokenize(text: str, level: str, dataset: str) -> list[str]:
    """Tokens of a text: words + ``<eos>`` per line; PTB characters (``_`` between words) + ``<eos>`` per line;
    or every raw character."""
    if level == "word":
        out: list[str] = []
        for line in text.splitlines():
            out.extend(line.split())
            out.append(EOS)
        return out
    if dataset == "ptb":
        out = []
        for line in text.splitlines():
            out.extend("_".join(line.split()))
            out.append(EOS)
        return out
    return list(text)


def build_vocab(tokens: list[str], max_vocab: int | None, specials: tuple[str, ...]) -> list[str]:
    """Tokens by decreasing training frequency (ties by the token), ``<unk>`` always included."""
    counts = Counter(tokens)
    order = sorted(counts, key=lambda t: (-counts[t], t))
    if max_vocab is not None:
        order = [t for t in order if t != UNK][:max_vocab - 1]
        order.append(UNK)
    for s in specials:
        if s not in order:
            order.append(s)
    return order


@functools.lru_cache(maxsize=8)
def load_corpus(files: tuple[tuple[str, str, int], ...], dataset: str, level: str, max_vocab: int | None
                ) -> tuple[tuple[str, ...], dict[str, Tensor]]:
    """``(vocab, {split: ids})`` of a corpus from ``(split, path, mtime)`` entries; cached per argument set."""
    paths = {split: path for split, path, _ in files}
    if "all" in paths:
        text = read_text(Path(paths["all"]))
        lo, hi = DATASETS[dataset]["split"]
        n = len(text)
        parts = {"train": text[:int(lo * n)], "valid": text[int(lo * n):int(hi * n)], "test": text[int(hi * n):]}
        tokens = {s: tokenize(t, level, dataset) for s, t in parts.items()}
    else:
        tokens = {s: tokenize(read_text(Path(p)), level, dataset) for s, p in paths.items()}
    for split, toks in tokens.items():
        if len(toks) < 2:
            raise data_error(paths.get(split, paths.get("all")), f"the {split} split has {len(toks)} tokens; a "
                             "language model needs at least 2")
    specials = (UNK, EOS) if EOS in tokens["train"] else (UNK,)
    vocab = build_vocab(tokens["train"], max_vocab, specials)
    stoi = {t: i for i, t in enumerate(vocab)}
    unk = stoi[UNK]
    ids = {s: torch.tensor([stoi.get(t, unk) for t in toks], dtype=torch.long) for s, toks in tokens.items()}
    return tuple(vocab), ids


# ----- the task ----------------------------------------------------------------------------------------------------

@register_task
class LanguageModelingTask(Task):
    """Language modeling on a text corpus (PTB, tiny-shakespeare or any train/valid/test text files)."""

    name = "lm"
    paper = "Dauphin et al. 2017 (GCNN); DuSell & Chiang 2022 (RNS-RNN)"
    version = 1
    fresh_train_data = False
    non_data_params = ("data_dir",)

    def __init__(self, dataset: str = "ptb", level: str | None = None, data_dir: str | None = None, bptt: int = 35,
                 train_context: int = 0, eval_context: int | None = None, max_vocab: int | None = None) -> None:
        if dataset not in DATASETS:
            raise ConfigError(f"lm: dataset must be one of {tuple(DATASETS)}, got {dataset!r}")
        info = DATASETS[dataset]
        level = info["level"] if level is None else level
        if level not in LEVELS:
            raise ConfigError(f"lm: level must be one of {LEVELS}, got {level!r}")
        check_int("lm", "bptt", bptt, 1)
        check_int("lm", "train_context", train_context, 0)
        eval_context = bptt if eval_context is None else eval_context
        check_int("lm", "eval_context", eval_context, 0)
        if max_vocab is not None:
            check_int("lm", "max_vocab", max_vocab, 2)
        super().__init__(dataset=dataset, level=level, data_dir=data_dir, bptt=bptt, train_context=train_context,
                         eval_context=eval_context, max_vocab=max_vocab)
        self.dataset_name, self.level, self.bptt = dataset, level, bptt
        self.train_context, self.eval_context = train_context, eval_context
        names = list(info["files"].values())
        folder = dataset_folder(data_dir, info["folder"], names, f"lm dataset {dataset!r}")
        files = tuple((split, str(find_file(folder, name))) for split, name in info["files"].items())
        stamped = tuple((split, path, os.stat(path).st_mtime_ns) for split, path in files)
        vocab, self.ids = load_corpus(stamped, dataset, level, max_vocab)
        self.vocab = list(vocab)
        self.stoi = {t: i for i, t in enumerate(self.vocab)}
        self.files = dict(files)
        self._streams: dict[int, Tensor] = {}
        self._stream_batches: dict[tuple[str, int], list[Batch]] = {}
        metrics = ("cross_entropy", "bpc") if level == "char" else ("cross_entropy",)
        self.spec = TaskSpec(input_kind="tokens", vocab_size=len(self.vocab), output_kind="per_step",
                             d_output=len(self.vocab), loss="cross_entropy", metrics=metrics,
                             primary_metric="cross_entropy", seq_len=train_context + bptt,
                             extra={"dataset": dataset, "level": level, "bptt": bptt, "train_context": train_context,
                                    "eval_context": eval_context, "derived_metrics": ["perplexity"],
                                    "tokens": {s: int(v.numel()) for s, v in self.ids.items()}})

    # ----- text <-> ids ---------------------------------------------------------------------------------------------
    def encode(self, text: str) -> Tensor:
        """Token ids of ``text`` (word level: whitespace tokens, a newline ends a line with ``<eos>``)."""
        if self.level == "word" or self.dataset_name == "ptb":
            tokens = tokenize(text, self.level, self.dataset_name)
            if not text.endswith("\n") and tokens and tokens[-1] == EOS:
                tokens.pop()  # an unfinished last line has no end-of-sentence yet
        else:
            tokens = list(text)
        unk = self.stoi[UNK]
        return torch.tensor([self.stoi.get(t, unk) for t in tokens], dtype=torch.long)

    def decode(self, ids: Tensor | list[int]) -> str:
        """Text of token ids (``<eos>`` becomes a newline; PTB characters turn ``_`` back into spaces)."""
        toks = [self.vocab[int(i)] for i in (ids.tolist() if isinstance(ids, Tensor) else ids)]
        if self.level == "word":
            lines, words = [], []
            for t in toks:
                if t == EOS:
                    lines.append(" ".join(words) + "\n")
                    words = []
                else:
                    words.append(t)
            return "".join(lines) + " ".join(words)
        text = "".join("\n" if t == EOS else t for t in toks)
        return text.replace("_", " ") if self.dataset_name == "ptb" else text

    # ----- training stream ------------------------------------------------------------------------------------------
    def streams(self, batch_size: int) -> Tensor:
        """The training stream cut into ``batch_size`` contiguous parallel streams ``(B, N // B)``."""
        check_int("lm", "batch_size", batch_size, 1)
        if batch_size not in self._streams:
            ids = self.ids["train"]
            per = ids.numel() // batch_size
            self._streams[batch_size] = ids[:per * batch_size].view(batch_size, per)
        return self._streams[batch_size]

    def segments_per_epoch(self, batch_size: int) -> int:
        per = self.streams(batch_size).shape[1]
        n = (per - 1 - self.train_context) // self.bptt
        if n < 1:
            raise ValueError(f"lm: batch_size={batch_size} leaves {per} tokens per stream, too few for one segment "
                             f"of bptt={self.bptt} (+ train_context={self.train_context}); lower batch_size or bptt")
        return n

    def train_batch(self, step: int, batch_size: int, seed: int = 0) -> Batch:
        """Segment ``k`` of the parallel streams, ``(epoch, k) = divmod(step, segments_per_epoch)``; the order is
        fixed (``seed`` does not change it), so state carried from step s-1 to s is the right context."""
        check_int("lm", "step", step, 0)
        data = self.streams(batch_size)
        epoch, k = divmod(step, self.segments_per_epoch(batch_size))
        ctx, start = self.train_context, k * self.bptt
        batch: Batch = {"inputs": data[:, start:start + ctx + self.bptt],
                        "targets": data[:, start + 1:start + ctx + self.bptt + 1]}
        if ctx:
            scored = torch.ones(batch_size, ctx + self.bptt, dtype=torch.bool)
            if k > 0:
                scored[:, :ctx] = False  # scored in the previous segment
            batch["loss_mask"] = scored
        batch["carry_state"] = torch.tensor(ctx == 0)
        batch["segment_index"] = torch.tensor(k)
        batch["epoch"] = torch.tensor(epoch)
        return batch

    # ----- evaluation windows ---------------------------------------------------------------------------------------
    def windows(self, ids: Tensor) -> Batch:
        """Windows of ``eval_context + bptt`` tokens scoring every target of ``ids`` exactly once."""
        n_targets = ids.numel() - 1
        width = min(self.eval_context + self.bptt, n_targets)
        t0 = torch.arange(0, n_targets, self.bptt)
        t1 = (t0 + self.bptt).clamp(max=n_targets)
        start = (t0 - self.eval_context).clamp(min=0).clamp(max=n_targets - width)
        idx = start.unsqueeze(1) + torch.arange(width).unsqueeze(0)
        return {"inputs": ids[idx], "targets": ids[idx + 1],
                "loss_mask": (idx >= t0.unsqueeze(1)) & (idx < t1.unsqueeze(1))}

    def dataset(self, split: str) -> TensorDataset:
        return TensorDataset(self.windows(self.ids[split]))

    def stream_batches(self, split: str, n_streams: int) -> list[Batch]:
        """The split as ``n_streams`` parallel contiguous streams cut into segments of ``bptt`` (carried evaluation).

        Row b of every segment continues row b of the previous one (``segment_index`` 0 starts them). Stream 0 scores
        the first ``eval_context + per`` targets; stream b >= 1 first reads the ``eval_context`` tokens before its
        part unscored (``loss_mask``), then scores its ``per`` targets, so every target is scored exactly once, with
        all the history of its stream and never fewer than ``eval_context`` tokens of context (except the first
        tokens of the split, which have all there is). Cached per ``(split, n_streams)``.
        """
        check_int("lm", "n_streams", n_streams, 1)
        key = (split, n_streams)
        if key in self._stream_batches:
            return self._stream_batches[key]
        if split not in self.ids:
            raise ValueError(f"lm: split must be one of {tuple(self.ids)}, got {split!r}")
        ids = self.ids[split]
        n_targets = ids.numel() - 1
        warm = min(self.eval_context, n_targets)
        rest = n_targets - warm
        streams = max(1, min(n_streams, rest))
        per = -(-rest // streams)  # ceil
        row = torch.arange(streams).unsqueeze(1)
        col = torch.arange(warm + per).unsqueeze(0)
        pos = row * per + col  # target position read at (row, col)
        real = pos < n_targets
        scored = real & ((row == 0) | (col >= warm))
        pos = pos.clamp(max=n_targets - 1)
        inputs, targets = ids[pos], ids[pos + 1]
        out = []
        for k, c0 in enumerate(range(0, warm + per, self.bptt)):
            cols = slice(c0, c0 + self.bptt)
            out.append({"inputs": inputs[:, cols], "targets": targets[:, cols], "loss_mask": scored[:, cols],
                        "carry_state": torch.tensor(True), "segment_index": torch.tensor(k)})
        self._stream_batches[key] = out
        return out

    # ----- metrics and baseline -------------------------------------------------------------------------------------
    def loss_from_nll(self, nll: Tensor, batch: Batch) -> Tensor:
        """The training loss from per-token NLLs ``(B, L)`` (a model that scores targets itself, see
        ``seqzoo.training.evaluation``): the same masked mean ``loss`` takes of the cross-entropy."""
        return _masked_mean(nll, batch.get("loss_mask"))

    def metric_sums_from_nll(self, nll: Tensor, batch: Batch) -> dict[str, tuple[float, float]]:
        """``metric_sums`` from per-token NLLs: ``cross_entropy`` is the NLL, ``bpc`` the NLL in bits."""
        mask = batch.get("loss_mask")
        out = {"cross_entropy": _masked_sum_count(nll, mask)}
        if "bpc" in self.spec.metrics:
            out["bpc"] = _masked_sum_count(nll / math.log(2), mask)
        return out

    def custom_metric(self, name: str, outputs: Tensor, batch: Batch) -> Tensor | tuple[float, float]:
        if name == "bpc":
            return self._pointwise("cross_entropy", outputs, batch["targets"]) / math.log(2)
        return super().custom_metric(name, outputs, batch)

    def derived_metrics(self, values: dict[str, float]) -> dict[str, float]:
        """Metrics that are functions of exact averages: ``perplexity = exp(cross_entropy)``."""
        ce = values.get("cross_entropy")
        if ce is None or not math.isfinite(ce):
            return {}
        return {"perplexity": math.exp(ce) if ce < 700 else math.inf}

    def baseline(self, split: str = "test") -> dict[str, float]:
        """A unigram model of the training split (add-one smoothing) scored on ``split``'s targets."""
        counts = torch.bincount(self.ids["train"], minlength=len(self.vocab)).double() + 1.0
        logp = (counts / counts.sum()).log()
        ce = float(-logp[self.ids[split][1:]].mean())
        out = {"cross_entropy": ce}
        if self.level == "char":
            out["bpc"] = ce / math.log(2)
        return {**out, **self.derived_metrics(out)}

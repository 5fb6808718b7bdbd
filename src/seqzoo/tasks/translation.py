"""Translation (``translation``): parallel text from any folder of ``{split}.{src}`` / ``{split}.{tgt}`` files.

Files are plain or ``.gz``, one sentence per line, UTF-8; line i of the source file is translated by line i of the
target file. The default folder is Multi30k's raw text (``multi30k/raw``: train / val / test_2016_flickr, De->En);
``folder`` and ``data_dir`` point the task at any other corpus. The valid split is the first of ``valid``, ``val``,
``dev`` that exists (or ``valid_name``); the test split the first of ``test``, ``test_2016_flickr`` (or
``test_name``). An empty line, a different number of lines on the two sides or bytes that are not UTF-8 are a
``DataError`` naming the file (and the line).

Subwords: one sentencepiece model (unigram by default, ``spm_vocab`` 8000 pieces) shared by both sides, trained on the
raw training split of both languages and cached under ``$SEQZOO_CACHE/spm`` (default ``~/.cache/seqzoo``) keyed by
the SHA-256 of the two training files and the options, so it is trained once, never inside the package and never
per run. Ids ``PAD, UNK, BOS, EOS = 0, 1, 2, 3`` (``seqzoo.models.seq2seq.base``). A run folder gets a copy
(``spm.model``, ``run_files``), so ``seqzoo translate`` works without the data, and a task rebuilt for a stored
run (``seqzoo eval``, the card's decoding) reads that copy (``spm_model``) instead of the cache.

Batches: ``inputs`` (source ids + EOS), ``mask``, ``prev`` (BOS + target ids), ``targets`` (target ids + EOS),
``loss_mask``. Training batches are length buckets: each epoch sorts the training pairs by length (random
tie-break), cuts them into batches of ``batch_size`` sentences, or, with ``max_tokens``, of as many sentences as
keep ``sentences x longest side`` within ``max_tokens``, and shuffles the batch order (a pure function of seed and
step). Training pairs with a side longer than ``max_len`` subwords are left out (valid and test never).

Metrics: token ``cross_entropy`` (primary; ``perplexity`` derived) on every evaluation, and on the splits in
``bleu_splits`` (default the test split) BLEU and chrF from sacrebleu on the detokenized output (sentencepiece
decode) against the raw reference lines, plus ``len_ratio`` (hypothesis / reference length, sacrebleu's), with the
task's decoding settings (``beam``, ``alpha``, ``beta``, ``max_len_ratio``, ``max_len_extra``;
``seqzoo.models.seq2seq.decoding``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from seqzoo.errors import ConfigError
from seqzoo.files import atomic_write_bytes, sha256_file
from seqzoo.tasks.base import (
    Batch,
    Task,
    TaskSpec,
    TensorDataset,
    _masked_mean,
    _masked_sum_count,
    check_int,
    generator,
)
from seqzoo.tasks.data_files import data_error, dataset_folder, find_file, read_text
from seqzoo.tasks.registry import register_task

PAD, UNK, BOS, EOS = 0, 1, 2, 3  # the same ids as seqzoo.models.seq2seq.base (checked by a test)
VALID_NAMES = ("valid", "val", "dev")
TEST_NAMES = ("test", "test_2016_flickr")
MODEL_TYPES = ("unigram", "bpe")
SPM_FILE = "spm.model"
DEFAULT_FOLDER, DEFAULT_PAIR = "multi30k/raw", ("de", "en")  # folder=None, src=None, tgt=None mean these
EXTRA = "pip install 'seqzoo[translate]'"


def _need(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"the translation task needs {module} ({EXTRA})") from e


def read_lines(path: Path) -> list[str]:
    """The lines of a (gzipped) UTF-8 text file; an empty line is a ``DataError`` naming the file and line."""
    text = read_text(path, "one sentence per line, UTF-8, optionally gzip-compressed")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    out = []
    for i, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if not line.strip():
            raise data_error(path, "empty line (expected one sentence per line)", i)
        out.append(line)
    return out


def read_parallel(src: Path, tgt: Path) -> tuple[list[str], list[str]]:
    a, b = read_lines(src), read_lines(tgt)
    if len(a) != len(b):
        raise data_error(src, f"{len(a)} lines, but {tgt} has {len(b)}; line i of one side must translate line i "
                              "of the other")
    return a, b


class Wordpieces:
    """A sentencepiece model: ``encode(lines) -> ids``, ``decode(ids) -> text`` (detokenized)."""

    def __init__(self, model_bytes: bytes) -> None:
        spm = _need("sentencepiece")
        self.model_bytes = model_bytes
        self.sp = spm.SentencePieceProcessor(model_proto=model_bytes)
        ids = (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id())
        if ids != (PAD, UNK, BOS, EOS):
            raise ConfigError(f"sentencepiece model has special ids (pad, unk, bos, eos) = {ids}, expected "
                              f"{(PAD, UNK, BOS, EOS)}")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Wordpieces:
        from seqzoo.tasks.data_files import read_bytes

        return cls(read_bytes(Path(path), "a sentencepiece model file"))

    def __len__(self) -> int:
        return int(self.sp.get_piece_size())

    def encode(self, lines: list[str]) -> list[list[int]]:
        return self.sp.encode(lines, out_type=int)

    def decode(self, ids: list[list[int]]) -> list[str]:
        return self.sp.decode(ids)


def train_wordpieces(files: list[Path], lines: list[str], vocab_size: int, model_type: str, n_train: int | None
                     ) -> bytes:
    """The shared sentencepiece model of the training split, trained once per (file hashes, options) and cached."""
    from seqzoo.ops.native_kernels import cache_dir

    options = {"vocab_size": vocab_size, "model_type": model_type, "n_train": n_train, "version": 1}
    key = hashlib.sha256(json.dumps([[sha256_file(f) for f in files], options], sort_keys=True).encode()).hexdigest()
    path = cache_dir() / "spm" / f"{key[:24]}.model"
    if path.is_file():
        return path.read_bytes()
    spm = _need("sentencepiece")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="seqzoo-spm-", dir=path.parent) as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
        try:
            spm.SentencePieceTrainer.train(
                input=str(corpus), model_prefix=str(Path(tmp) / "m"), vocab_size=vocab_size, model_type=model_type,
                pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS, character_coverage=1.0, hard_vocab_limit=False,
                num_threads=1, minloglevel=2)
        except RuntimeError as e:  # e.g. fewer pieces than the corpus has characters
            raise ConfigError(f"translation: sentencepiece cannot train spm_vocab={vocab_size} on {files[0]}: "
                              f"{str(e).splitlines()[0][-160:]}") from None
        data = (Path(tmp) / "m.model").read_bytes()
    atomic_write_bytes(path, data)
    return data


def collate(src: list[list[int]], tgt: list[list[int]]) -> Batch:
    """Padded batch: ``inputs`` = src + EOS, ``prev`` = BOS + tgt, ``targets`` = tgt + EOS, masks."""
    B = len(src)
    S = max(len(s) for s in src) + 1
    T = max(len(t) for t in tgt) + 1
    inputs = torch.full((B, S), PAD, dtype=torch.long)
    prev = torch.full((B, T), PAD, dtype=torch.long)
    targets = torch.full((B, T), PAD, dtype=torch.long)
    for i, (s, t) in enumerate(zip(src, tgt)):
        inputs[i, :len(s) + 1] = torch.tensor(s + [EOS], dtype=torch.long)
        prev[i, :len(t) + 1] = torch.tensor([BOS] + t, dtype=torch.long)
        targets[i, :len(t) + 1] = torch.tensor(t + [EOS], dtype=torch.long)
    lengths = torch.tensor([len(t) + 1 for t in tgt])
    return {"inputs": inputs, "mask": inputs != PAD, "prev": prev, "targets": targets,
            "loss_mask": torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)}


@register_task
class TranslationTask(Task):
    """Translation of parallel text files (Multi30k De->En by default) with a shared sentencepiece vocabulary."""

    name = "translation"
    paper = "Wu et al. 2016 (GNMT); Gehring et al. 2017 (ConvS2S); Multi30k: Elliott et al. 2016"
    version = 1
    fresh_train_data = False
    non_data_params = ("data_dir", "max_tokens", "beam", "alpha", "beta", "max_len_ratio", "max_len_extra",
                       "bleu_splits")
    run_file_args = {"spm_model": SPM_FILE}

    def __init__(self, folder: str | None = None, src: str | None = None, tgt: str | None = None,
                 data_dir: str | None = None,
                 spm_vocab: int = 8000, model_type: str = "unigram", valid_name: str | None = None,
                 test_name: str | None = None, n_train: int | None = None, max_len: int = 100,
                 max_tokens: int | None = None, beam: int = 5, alpha: float = 0.2, beta: float = 0.2,
                 max_len_ratio: float = 1.5, max_len_extra: int = 10, bleu_splits: str = "test",
                 spm_model: str | None = None) -> None:
        from seqzoo.models.seq2seq.decoding import DecodeConfig

        folder = DEFAULT_FOLDER if folder is None else folder
        src, tgt = DEFAULT_PAIR[0] if src is None else src, DEFAULT_PAIR[1] if tgt is None else tgt
        if model_type not in MODEL_TYPES:
            raise ConfigError(f"translation: model_type must be one of {MODEL_TYPES}, got {model_type!r}")
        check_int("translation", "spm_vocab", spm_vocab, 8)
        check_int("translation", "max_len", max_len, 2)
        if n_train is not None:
            check_int("translation", "n_train", n_train, 1)
        if max_tokens is not None:
            check_int("translation", "max_tokens", max_tokens, 2)
        splits = [s.strip() for s in bleu_splits.split(",") if s.strip()] if isinstance(bleu_splits, str) else None
        if splits is None or any(s not in ("valid", "test", "none") for s in splits):
            raise ConfigError(f"translation: bleu_splits must be a comma-separated list of valid, test (or none), "
                              f"got {bleu_splits!r}")
        if not (isinstance(src, str) and isinstance(tgt, str) and src and tgt and src != tgt):
            raise ConfigError(f"translation: src and tgt must be two different language suffixes, got {src!r}, "
                              f"{tgt!r}")
        try:
            self.decoding = DecodeConfig(beam=beam, alpha=alpha, beta=beta, max_len_ratio=max_len_ratio,
                                         max_len_extra=max_len_extra)
        except ConfigError as e:
            raise ConfigError(f"translation: {e}") from None
        super().__init__(folder=folder, src=src, tgt=tgt, data_dir=data_dir, spm_vocab=spm_vocab,
                         model_type=model_type, valid_name=valid_name, test_name=test_name, n_train=n_train,
                         max_len=max_len, max_tokens=max_tokens, beam=beam, alpha=alpha, beta=beta,
                         max_len_ratio=max_len_ratio, max_len_extra=max_len_extra, bleu_splits=bleu_splits,
                         **({} if spm_model is None else {"spm_model": spm_model}))
        self.src_lang, self.tgt_lang, self.max_len, self.max_tokens = src, tgt, max_len, max_tokens
        self.bleu_splits = tuple(s for s in splits if s != "none")
        root = dataset_folder(data_dir, folder, [f"train.{src}", f"train.{tgt}"], f"translation ({folder})")
        names = {"train": "train", "valid": self._pick(root, valid_name, VALID_NAMES, "valid"),
                 "test": self._pick(root, test_name, TEST_NAMES, "test")}
        self.files = {s: (find_file(root, f"{n}.{src}"), find_file(root, f"{n}.{tgt}")) for s, n in names.items()}
        self.text = {s: read_parallel(*paths) for s, paths in self.files.items()}
        if n_train is not None:
            self.text["train"] = tuple(side[:n_train] for side in self.text["train"])  # type: ignore[assignment]
        train_src, train_tgt = self.text["train"]
        if spm_model is not None:  # a given model (a stored run's own copy): used as is, never retrained
            self.wordpieces = Wordpieces.load(spm_model)
        else:
            self.wordpieces = Wordpieces(train_wordpieces(list(self.files["train"]), train_src + train_tgt,
                                                          spm_vocab, model_type, n_train))
        self.ids = {s: (self.wordpieces.encode(a), self.wordpieces.encode(b)) for s, (a, b) in self.text.items()}
        src_ids, tgt_ids = self.ids["train"]
        self.train_index = [i for i in range(len(src_ids))
                            if len(src_ids[i]) + 1 <= max_len and len(tgt_ids[i]) + 1 <= max_len]
        if not self.train_index:
            raise data_error(self.files["train"][0], f"no training pair has both sides within max_len={max_len} "
                                                     "subwords")
        self._plans: dict[tuple[int, int, int], list[list[int]]] = {}
        self._lengths: dict[tuple[int, int, int], int] = {}
        V = len(self.wordpieces)
        self.spec = TaskSpec(input_kind="tokens", output_kind="seq2seq", d_output=V, loss="cross_entropy",
                             metrics=("cross_entropy",), primary_metric="cross_entropy", vocab_size=V,
                             seq_len=max_len,
                             extra={"src": src, "tgt": tgt, "splits": names, "derived_metrics": ["perplexity"],
                                    "decode_metrics": ["bleu", "chrf", "len_ratio"],
                                    "bleu_splits": list(self.bleu_splits),
                                    "pairs": {s: len(a) for s, (a, _) in self.text.items()},
                                    "train_pairs_used": len(self.train_index)})

    def _pick(self, root: Path, given: str | None, candidates: tuple[str, ...], split: str) -> str:
        """The first split name whose source and target files both exist in ``root``."""
        for name in ([given] if given else list(candidates)):
            if all(find_file(root, f"{name}.{lang}") is not None for lang in (self.src_lang, self.tgt_lang)):
                return name
        wanted = " or ".join(f"{c}.{self.src_lang}/{c}.{self.tgt_lang}" for c in ([given] if given else candidates))
        raise data_error(root, f"no {split} split: expected {wanted} (each optionally .gz)")

    # ----- data -----------------------------------------------------------------------------------------------------
    def run_files(self) -> dict[str, bytes]:
        """Files a run folder keeps (the trainer writes them): the sentencepiece model."""
        return {SPM_FILE: self.wordpieces.model_bytes}

    def dataset(self, split: str) -> TensorDataset:
        src, tgt = self.ids[split]
        return TensorDataset(collate(src, tgt))

    def _plan(self, epoch: int, batch_size: int, seed: int) -> list[list[int]]:
        """The batches of one epoch: length buckets in a shuffled order."""
        key = (epoch, batch_size, seed)
        if key not in self._plans:
            if len(self._plans) > 4:
                self._plans.clear()
            src, tgt = self.ids["train"]
            g = generator(self.name, self.version, "plan", seed, epoch)
            noise = torch.rand(len(self.train_index), generator=g).tolist()
            lengths = {i: max(len(src[i]), len(tgt[i])) + 1 for i in self.train_index}
            order = [self.train_index[j] for j in sorted(range(len(self.train_index)),
                                                         key=lambda j: lengths[self.train_index[j]] + noise[j])]
            batches: list[list[int]] = []
            if self.max_tokens is None:
                batches = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
            else:
                cur: list[int] = []
                for i in order:
                    if cur and (len(cur) + 1) * max(lengths[i], lengths[cur[-1]]) > self.max_tokens:
                        batches.append(cur)
                        cur = []
                    cur.append(i)
                batches.append(cur)
            perm = torch.randperm(len(batches), generator=g).tolist()
            self._plans[key] = [batches[p] for p in perm]
        return self._plans[key]

    def _plan_length(self, epoch: int, batch_size: int, seed: int) -> int:
        """Batches in one epoch (fixed without a token cap; remembered per epoch with one)."""
        if self.max_tokens is None:
            return -(-len(self.train_index) // batch_size)
        key = (epoch, batch_size, seed)
        if key not in self._lengths:
            self._lengths[key] = len(self._plan(epoch, batch_size, seed))
        return self._lengths[key]

    def train_batch(self, step: int, batch_size: int, seed: int = 0) -> Batch:
        check_int("translation", "batch_size", batch_size, 1)
        epoch, k = 0, step
        while k >= self._plan_length(epoch, batch_size, seed):
            k -= self._plan_length(epoch, batch_size, seed)
            epoch += 1
        idx = self._plan(epoch, batch_size, seed)[k]
        src, tgt = self.ids["train"]
        return collate([src[i] for i in idx], [tgt[i] for i in idx])

    # ----- loss and metrics -----------------------------------------------------------------------------------------
    def loss_from_nll(self, nll: Tensor, batch: Batch) -> Tensor:
        """Mean NLL over the real target tokens (gradients normalized by target tokens, not sentences)."""
        return _masked_mean(nll, batch.get("loss_mask"))

    def metric_sums_from_nll(self, nll: Tensor, batch: Batch) -> dict[str, tuple[float, float]]:
        return {"cross_entropy": _masked_sum_count(nll, batch.get("loss_mask"))}

    def derived_metrics(self, values: dict[str, float]) -> dict[str, float]:
        ce = values.get("cross_entropy")
        if ce is None or not math.isfinite(ce):
            return {}
        return {"perplexity": math.exp(ce) if ce < 700 else math.inf}

    def decode_metrics(self, model: nn.Module, split: str, config: Any = None) -> dict[str, float]:
        """BLEU, chrF and the length ratio of ``model``'s translations of ``split`` ({} for a split not in
        ``bleu_splits`` unless a decoding ``config`` is given)."""
        if config is None and split not in self.bleu_splits:
            return {}
        hyps = self.translate(model, self.ids[split][0], config or self.decoding)
        return corpus_scores(hyps, self.text[split][1])

    def translate(self, model: nn.Module, sources: list[list[int]], config: Any, **kw: Any) -> list[str]:
        """Detokenized translations of token-id sources (without EOS; it is added here)."""
        from torch.nn.utils import parametrize

        from seqzoo.models.seq2seq.decoding import translate_sorted

        with parametrize.cached():
            out = translate_sorted(model, [s + [EOS] for s in sources], config, **kw)
        return self.wordpieces.decode(out)

    def baseline(self) -> dict[str, float]:
        """A unigram model of the training targets (add-one smoothed) scored on the test targets (EOS included)."""
        V = len(self.wordpieces)
        counts = torch.ones(V, dtype=torch.float64)
        for t in self.ids["train"][1]:
            counts += torch.bincount(torch.tensor(t + [EOS], dtype=torch.long), minlength=V).double()
        logp = (counts / counts.sum()).log()
        test = torch.tensor([i for t in self.ids["test"][1] for i in t + [EOS]], dtype=torch.long)
        out = {"cross_entropy": float(-logp[test].mean())}
        return {**out, **self.derived_metrics(out)}


def corpus_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """sacrebleu corpus BLEU and chrF of detokenized hypotheses against raw references, and the length ratio."""
    sacrebleu = _need("sacrebleu")
    bleu = sacrebleu.corpus_bleu(hypotheses, [references])
    chrf = sacrebleu.corpus_chrf(hypotheses, [references])
    return {"bleu": float(bleu.score), "chrf": float(chrf.score),
            "len_ratio": float(bleu.sys_len / bleu.ref_len) if bleu.ref_len else math.nan}

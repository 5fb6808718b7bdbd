"""bAbI question answering (Weston et al. 2015): stories of sentences, a question, a one-word answer (spec §2.3-2.4).

Reads any folder in the layout of ``tasks_1-20_v1-2/en`` (or ``en-10k``, or the user's own stories in that format):
``qa{N}_<name>_{train,test}.txt``, each optionally gzip'd, found under ``data_dir`` / ``$SEQZOO_DATA`` (in the
sub-folder ``folder``, default ``babi/en``, or the root itself). ``tasks`` is one task number 1-20, a comma-separated
list (``"2,3"``) or ``"all"`` (joint training on every task found).

Parsing (spec §2.4): each line is ``<id> <text>``; ids restart at 1 for every story and otherwise count up by one.
A question line is ``<id> <question>\\t<answer>\\t<supporting fact ids>``. Words are lower-cased with ``.``/``?``
removed; an answer is one token even when it is a comma-joined list (tasks 8 and 19). The story of a question is
every statement before it in its story (questions are not memories), of which the last ``memory_size`` are kept.

Malformed files are ``DataError``s naming the file and line: a line without an integer id, ids out of order, a
question without an answer, supporting-fact ids that are not earlier statements of the story, and (in a test file)
an answer with a word that never occurs in that task's training file (no model could have learned it).

Batches (``fresh_train_data = False``; 10% of each task's training questions are the ``valid`` split, drawn with
``split_seed``, as the paper held out 10%):

* ``inputs`` ``(B, Jq)`` int64: the question's word ids, right-padded with the nil word 0;
* ``story`` ``(B, M, J)`` int64: the memories, **most recent first** (slot 0 = the last statement before the
  question, the temporal-encoding index of the paper), each a right-padded word-id row; empty slots are all 0.
  ``M`` and ``J`` are cut to the longest story / sentence of the split (training batches: of the batch), which
  changes no output of a model that ignores empty slots;
* ``targets`` ``(B,)``: the answer's id in the shared word vocabulary (the model scores every word, as the paper);
* ``supports`` ``(B, 3)``: the memory slots of the supporting facts (-1: none, or outside the memory);
* ``task_id`` ``(B,)``: the bAbI task number.

The vocabulary is every word and answer of the loaded train and test files (sorted; id 0 = nil), as the official
code builds it. Metrics: ``error`` (%), ``error_t{N}`` per task and ``cross_entropy``; with several tasks
``error`` is the mean of the per-task errors (the paper's "mean error"; with equal questions per task it equals
the pooled error). The trivial baseline answers every question of a task with that task's most frequent training
answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from seqzoo.errors import ConfigError
from seqzoo.tasks.base import Batch, Task, TaskSpec, TensorDataset, check_int, generator
from seqzoo.tasks.data_files import data_error, read_text, search_dirs
from seqzoo.tasks.registry import register_task

NIL = "<nil>"
N_TASKS = 20
MAX_SUPPORTS = 3
DEFAULT_FOLDER = "babi/en"  # under the data root; the root itself is searched too
_FILE = re.compile(r"^qa(\d+)_.*_(train|test)\.txt(\.gz)?$")
_PUNCT = re.compile(r"[.?]")

# Parsed folders of the last few settings: a grid builds the same task once per run (parsing 40 files ~1 s).
_CACHE: dict[tuple, Any] = {}
_CACHE_ENTRIES = 2


@dataclass
class Question:
    """One question with its story context (statements as word lists, oldest first) and its answer."""

    story: list[list[str]]
    question: list[str]
    answer: str
    supports: list[int]  # indices into ``story`` (0 = oldest kept statement)
    task: int
    line: int  # line number of the question in its file


def words(text: str) -> list[str]:
    """Lower-cased words of a statement or question with ``.`` and ``?`` removed."""
    return _PUNCT.sub(" ", text.lower()).split()


def parse_stories(text: str, path: str | Path, task: int) -> list[Question]:
    """Every question of a bAbI file; malformed lines raise a ``DataError`` naming ``path`` and the line."""
    out: list[Question] = []
    story: list[list[str]] = []
    line_of_id: dict[int, int] = {}  # story line id -> index in ``story`` (statements only)
    prev = 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        head, _, rest = line.partition(" ")
        if not head.isdigit() or not rest.strip():
            raise data_error(path, f"expected '<id> <text>' with an integer id, got {line[:60]!r}", lineno)
        ident = int(head)
        if ident == 1:
            story, line_of_id = [], {}
        elif ident != prev + 1:
            raise data_error(path, f"line id {ident} out of order: expected 1 (a new story) or {prev + 1}", lineno)
        prev = ident
        if "\t" not in rest:
            line_of_id[ident] = len(story)
            story.append(words(rest))
            continue
        parts = rest.split("\t")
        answer = parts[1].strip().lower() if len(parts) > 1 else ""
        if not answer:
            raise data_error(path, "a question without an answer (expected '<question>\\t<answer>\\t<fact ids>')",
                             lineno)
        supports = []
        for tok in (parts[2].split() if len(parts) > 2 else []):
            if not tok.isdigit() or int(tok) not in line_of_id:
                raise data_error(path, f"supporting fact {tok!r} is not the id of an earlier statement of the story",
                                 lineno)
            supports.append(line_of_id[int(tok)])
        out.append(Question(list(story), words(parts[0]), answer, supports, task, lineno))
    if not out:
        raise data_error(path, "no question found (expected lines '<id> <question>\\t<answer>\\t<fact ids>')")
    return out


def find_task_files(data_dir: str | None, folder: str) -> tuple[Path, dict[int, dict[str, Path]]]:
    """The first folder holding ``qa{N}_*_{train,test}.txt[.gz]`` files and ``{task: {split: path}}``."""
    candidates, origin = search_dirs(data_dir, folder)
    for cand in candidates:
        if not cand.is_dir():
            continue
        found: dict[int, dict[str, Path]] = {}
        for p in sorted(cand.iterdir()):
            m = _FILE.match(p.name)
            if m and p.is_file():
                found.setdefault(int(m.group(1)), {}).setdefault(m.group(2), p)
        if found:
            return cand, found
    from seqzoo.tasks.data_files import MissingDataError

    raise MissingDataError(f"babi: no qa{{N}}_*_{{train,test}}.txt[.gz] files in "
                           f"{', '.join(str(c) for c in candidates)} (searched {origin}); pass data_dir=... (the "
                           "folder holding the tasks_1-20_v1-2/en files) or set SEQZOO_DATA (the CLI's --data-dir)")


def parse_task_ids(tasks: int | str) -> list[int] | None:
    """``[N]``, ``[N, M, ...]`` from ``"N,M"``, or None for ``"all"``; a bad value is a ConfigError naming ``tasks``."""
    if isinstance(tasks, int) and not isinstance(tasks, bool):
        ids = [tasks]
    elif isinstance(tasks, str) and tasks.strip().lower() == "all":
        return None
    elif isinstance(tasks, str) and re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", tasks):
        ids = [int(t) for t in tasks.split(",")]
    else:
        raise ConfigError(f"babi: tasks must be a task number 1-{N_TASKS}, a comma-separated list such as '2,3' or "
                          f"'all', got {tasks!r}")
    bad = [t for t in ids if not 1 <= t <= N_TASKS]
    if bad or len(set(ids)) != len(ids):
        raise ConfigError(f"babi: tasks must be distinct task numbers 1-{N_TASKS}, got {tasks!r}")
    return sorted(ids)


def _encode(questions: list[Question], vocab: dict[str, int], memory_size: int) -> dict[str, Tensor]:
    """Padded tensors of ``questions`` (memories most recent first, cut to the longest story and sentence)."""
    n = len(questions)
    mems = [q.story[-memory_size:][::-1] for q in questions]
    m_len = max(1, max(len(m) for m in mems))
    j_len = max(1, max((len(s) for m in mems for s in m), default=1))
    q_len = max(len(q.question) for q in questions)
    story = np.zeros((n, m_len, j_len), dtype=np.int64)
    query = np.zeros((n, q_len), dtype=np.int64)
    supports = np.full((n, MAX_SUPPORTS), -1, dtype=np.int64)
    for i, (q, mem) in enumerate(zip(questions, mems)):
        for slot, sent in enumerate(mem):
            story[i, slot, :len(sent)] = [vocab[w] for w in sent]
        query[i, :len(q.question)] = [vocab[w] for w in q.question]
        kept = len(q.story) - len(mem)  # statements older than the memory window
        slots = [len(q.story) - 1 - s for s in q.supports if s >= kept][:MAX_SUPPORTS]
        supports[i, :len(slots)] = slots
    return {"inputs": torch.from_numpy(query), "story": torch.from_numpy(story),
            "targets": torch.tensor([vocab[q.answer] for q in questions]), "supports": torch.from_numpy(supports),
            "task_id": torch.tensor([q.task for q in questions], dtype=torch.int64)}


def trim(batch: Batch) -> Batch:
    """The batch with story slots, sentence and question columns that are empty in every row cut off."""
    story, query = batch["story"], batch["inputs"]
    used = story.ne(0)
    m = int(used.any(2).any(0).nonzero().max()) + 1 if bool(used.any()) else 1
    j = int(used.any(1).any(0).nonzero().max()) + 1 if bool(used.any()) else 1
    q = int(query.ne(0).any(0).nonzero().max()) + 1 if bool(query.ne(0).any()) else 1
    return {**batch, "story": story[:, :m, :j], "inputs": query[:, :q]}


@register_task
class BabiTask(Task):
    """bAbI QA (1k or 10k, tasks 1-20 or joint): answer a question about a story with one word; error in %."""

    name = "babi"
    paper = "Weston et al. 2015 (bAbI); Sukhbaatar et al. 2015 (MemN2N)"
    version = 1
    fresh_train_data = False
    non_data_params = ()

    def __init__(self, tasks: int | str = "all", memory_size: int = 50, valid_fraction: float = 0.1,
                 split_seed: int = 0, folder: str | None = None, data_dir: str | None = None) -> None:
        ids = parse_task_ids(tasks)
        check_int("babi", "memory_size", memory_size, 1)
        check_int("babi", "split_seed", split_seed, 0)
        if isinstance(valid_fraction, bool) or not isinstance(valid_fraction, (int, float)) \
                or not 0.0 < valid_fraction < 1.0:
            raise ConfigError(f"babi: valid_fraction must be a number in (0, 1), got {valid_fraction!r}")
        folder = DEFAULT_FOLDER if folder is None else folder
        super().__init__(tasks=tasks, memory_size=memory_size, valid_fraction=float(valid_fraction),
                         split_seed=split_seed, folder=folder, data_dir=data_dir)
        self.memory_size = memory_size
        self.root, files = find_task_files(data_dir, folder)
        self.task_ids = sorted(files) if ids is None else ids
        for t in self.task_ids:
            if set(files.get(t, {})) != {"train", "test"}:
                have = sorted(files.get(t, {}))
                raise ConfigError(f"babi: tasks={tasks!r}: task {t} needs qa{t}_*_train.txt and qa{t}_*_test.txt "
                                  f"in {self.root}, found {have or 'neither'}")
        key = (str(self.root), tuple(self.task_ids), memory_size, float(valid_fraction), split_seed)
        if key not in _CACHE:
            if len(_CACHE) >= _CACHE_ENTRIES:
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[key] = self._load({t: files[t] for t in self.task_ids}, float(valid_fraction), split_seed)
        self.vocab, self._splits = _CACHE[key]
        metrics = ("error", "cross_entropy", *(f"error_t{t}" for t in self.task_ids))
        self.spec = TaskSpec(input_kind="tokens", vocab_size=len(self.vocab), output_kind="qa",
                             d_output=len(self.vocab), loss="cross_entropy", metrics=metrics, primary_metric="error",
                             extra={"memory_size": memory_size, "tasks": list(self.task_ids), "nil_id": 0,
                                    "n_words": len(self.vocab)})

    # ----- data -------------------------------------------------------------------------------
    def _load(self, files: dict[int, dict[str, Path]], valid_fraction: float, seed: int
              ) -> tuple[list[str], dict[str, TensorDataset]]:
        parsed: dict[str, list[Question]] = {"train": [], "valid": [], "test": []}
        for t, paths in files.items():
            train = parse_stories(read_text(paths["train"]), paths["train"], t)
            test = parse_stories(read_text(paths["test"]), paths["test"], t)
            seen = {w for q in train for s in q.story for w in s} | {w for q in train for w in q.question}
            seen |= {w for q in train for w in q.answer.split(",")}
            _check_answers(test, seen, paths["test"])
            perm = torch.randperm(len(train), generator=generator("babi-valid", t, seed)).tolist()
            n_valid = max(1, round(valid_fraction * len(train)))
            held = set(perm[:n_valid])
            parsed["valid"] += [q for i, q in enumerate(train) if i in held]
            parsed["train"] += [q for i, q in enumerate(train) if i not in held]
            parsed["test"] += test
        vocab_words = {w for qs in parsed.values() for q in qs for s in (*q.story, q.question) for w in s}
        vocab_words |= {q.answer for qs in parsed.values() for q in qs}
        vocab = [NIL, *sorted(vocab_words)]
        ids = {w: i for i, w in enumerate(vocab)}
        return vocab, {split: TensorDataset(_encode(qs, ids, self.memory_size)) for split, qs in parsed.items()}

    def dataset(self, split: str) -> TensorDataset:
        return self._splits[split]

    def train_batch(self, step: int, batch_size: int, seed: int = 0) -> Batch:
        """An epoch-wise shuffle of the training questions, cut to the batch's longest story and sentence."""
        return trim(super().train_batch(step, batch_size, seed))

    # ----- metrics ------------------------------------------------------------------------------
    def custom_metric(self, name: str, outputs: Tensor, batch: Batch) -> Tensor | tuple[float, float]:
        wrong = outputs.argmax(-1).ne(batch["targets"]).double() * 100.0
        if name == "error":
            return wrong
        if name.startswith("error_t"):
            rows = batch["task_id"] == int(name[len("error_t"):])
            return float(wrong[rows].sum()), float(rows.sum())
        return super().custom_metric(name, outputs, batch)

    def derived_metrics(self, values: dict[str, float]) -> dict[str, float]:
        """``error`` as the mean of the per-task errors when several tasks run (the paper's mean error)."""
        per_task = [values[f"error_t{t}"] for t in self.task_ids if f"error_t{t}" in values]
        return {"error": sum(per_task) / len(per_task)} if len(per_task) > 1 else {}

    def baseline(self) -> dict[str, float]:
        """Error (%) of answering each task's questions with its most frequent training answer, on the test split."""
        train, test = self.build("train"), self.build("test")
        out: dict[str, float] = {}
        for t in self.task_ids:
            answers = train.tensors["targets"][train.tensors["task_id"] == t]
            majority = int(torch.bincount(answers).argmax())
            rows = test.tensors["task_id"] == t
            out[f"error_t{t}"] = float(test.tensors["targets"][rows].ne(majority).double().mean() * 100.0)
        out["error"] = sum(out.values()) / len(self.task_ids)
        return out

    def word(self, ident: int) -> str:
        """The word of vocabulary id ``ident``."""
        return self.vocab[ident]


def _check_answers(questions: list[Question], seen: set[str], path: Path) -> None:
    """Every word of every answer must occur in the task's training file (else no model can learn it)."""
    for q in questions:
        unseen = [w for w in q.answer.split(",") if w not in seen]
        if unseen:
            raise data_error(path, f"answer word {unseen[0]!r} never occurs in the task's training file", q.line)

"""Polyphonic music: next-frame prediction on 88-key piano rolls (Boulanger-Lewandowski et al. 2012;
Chung et al. 2014; spec §5).

Each time step is an 88-dim binary vector (keys A0..C8, MIDI 21..108; 1 = key sounding). The model
reads frames ``≤ t`` and outputs 88 logits for frame ``t + 1`` (independent Bernoulli per key). The
metric ``nll`` is the negative log-likelihood per frame in nats, summed over the 88 keys and averaged
over all frames of the split (total / number of frames, not a mean of per-piece means). By default
every frame is scored: the input before the first frame is an all-zero frame
(``score_first_frame=True``, the convention behind the 11.06 marginal baseline on JSB test);
``score_first_frame=False`` scores frames 2..T only (inputs ``x[:-1]``, targets ``x[1:]``).

Data sets (``dataset=``): ``jsb`` (JSB Chorales), ``nottingham``, ``musedata``, ``piano_midi``, read from
``polyphonic-music/`` (or the directory itself) under, in order of precedence, the ``data_dir``
argument, the ``SEQZOO_DATA`` environment variable, or — when neither is given — ``./data``,
``../shared/data`` (from the working directory) and ``../shared/data`` next to the repository. Two file
layouts are read:

* ``<name>.notes.json.gz`` (``jsb_chorales``, ``nottingham``, ``musedata``, ``piano_midi``): gzip'd JSON
  ``{"train": [...], "valid": [...], "test": [...]}``; a piece is a list of frames, a frame a list of
  MIDI note numbers (standard library only);
* ``<Name>.mat`` (``JSB_Chorales``, ``Nottingham``, ``MuseData``, ``Piano_midi``): MATLAB cell arrays
  ``traindata``/``validdata``/``testdata`` of ``T × 88`` 0/1 matrices (needs scipy, imported lazily).

``format="auto"`` takes the JSON file when present, else the ``.mat`` file.

Batches: whole pieces, right-padded to the longest piece of the batch, with ``mask`` (B, L) True on
real frames (the model skips padded steps; the loss and metrics count real frames only). Training
batches are an epoch-wise seeded permutation of the training pieces (fixed-data task). With
``max_len`` the *training* pieces are cut into consecutive segments of at most ``max_len`` frames
(truncated BPTT without carried state; each segment's first input is the real previous frame);
evaluation always runs on whole pieces.

Metrics: ``nll`` (primary) and ``frame_accuracy`` = TP / (TP + FP + FN) over all frames with keys
predicted on where p > 0.5 (Bay et al. 2009, as reported by Boulanger-Lewandowski et al.).
Baseline: independent Bernoulli keys with the training marginals (Laplace-smoothed), scored on
the test split (11.06 nats/frame on JSB).
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from seqzoo.errors import ConfigError, DataError
from seqzoo.tasks.base import SPLITS, Batch, Task, TaskSpec, TensorDataset
from seqzoo.tasks.data_files import MissingDataError, data_error, read_mat_cells, read_text, search_dirs
from seqzoo.tasks.registry import register_task

N_KEYS = 88
LOWEST_MIDI = 21  # A0
SUBDIR = "polyphonic-music"
# canonical name -> (notes.json.gz file, .mat file)
DATASETS: dict[str, tuple[str, str]] = {
    "jsb": ("jsb_chorales.notes.json.gz", "JSB_Chorales.mat"),
    "nottingham": ("nottingham.notes.json.gz", "Nottingham.mat"),
    "musedata": ("musedata.notes.json.gz", "MuseData.mat"),
    "piano_midi": ("piano_midi.notes.json.gz", "Piano_midi.mat"),
}
ALIASES = {"jsb_chorales": "jsb", "jsb-chorales": "jsb", "jsbchorales": "jsb", "muse": "musedata",
           "piano": "piano_midi", "piano-midi": "piano_midi", "piano-midi.de": "piano_midi", "pianomidi": "piano_midi"}
FORMATS = ("auto", "notes", "mat")
_MAT_KEYS = {"train": "traindata", "valid": "validdata", "test": "testdata"}

Rolls = dict[str, list[Tensor]]  # split -> pieces, each a (T, 88) bool tensor


# ----- locating files ---------------------------------------------------------------------------
def canonical_dataset(name: str) -> str:
    key = str(name).strip().lower().replace(" ", "_")
    key = ALIASES.get(key, key)
    if key not in DATASETS:
        raise ConfigError(f"music: unknown dataset {name!r}; expected one of {sorted(DATASETS)} "
                         f"(aliases: {sorted(ALIASES)})")
    return key


def candidate_dirs(data_dir: str | os.PathLike | None = None) -> tuple[list[Path], str]:
    """Directories to search (``root/polyphonic-music`` and ``root`` per data root), and where they came from."""
    return search_dirs(data_dir, SUBDIR)


def available_datasets(data_dir: str | os.PathLike | None = None) -> dict[str, list[Path]]:
    """``{dataset: [files found]}`` over the search directories."""
    dirs, _ = candidate_dirs(data_dir)
    found: dict[str, list[Path]] = {}
    for name, files in DATASETS.items():
        for d in dirs:
            for f in files:
                if (d / f).is_file():
                    found.setdefault(name, []).append(d / f)
    return found


def find_music_file(dataset: str, data_dir: str | os.PathLike | None = None, fmt: str = "auto") -> Path:
    """The file to read for ``dataset``; a clear error lists where it looked and what exists."""
    name = canonical_dataset(dataset)
    if fmt not in FORMATS:
        raise ConfigError(f"music: format must be one of {FORMATS}, got {fmt!r}")
    notes, mat = DATASETS[name]
    wanted = {"auto": [notes, mat], "notes": [notes], "mat": [mat]}[fmt]
    dirs, origin = candidate_dirs(data_dir)
    for d in dirs:
        for f in wanted:
            if (d / f).is_file():
                return d / f
    have = available_datasets(data_dir)
    listing = ", ".join(f"{k} ({', '.join(p.name for p in v)})" for k, v in sorted(have.items())) or "none"
    raise MissingDataError(
        f"music: no file for dataset {name!r} (looked for {' or '.join(wanted)}) in "
        f"{', '.join(str(d) for d in dirs)} — searched from {origin}. Data sets found there: {listing}. "
        f"Pass data_dir=... (or --data-dir / SEQZOO_DATA) pointing at the folder that holds {SUBDIR}/.")


# ----- reading files ----------------------------------------------------------------------------
def _roll_from_notes(piece: Any, path: Path, split: str, index: int) -> Tensor:
    where = f"{path}: split {split!r}, piece {index}"
    if not isinstance(piece, list):
        raise DataError(f"{where}: expected a list of frames, got {type(piece).__name__}")
    steps: list[int] = []
    keys: list[int] = []
    top = LOWEST_MIDI + N_KEYS - 1
    for t, frame in enumerate(piece):
        if not isinstance(frame, list):
            raise DataError(f"{where}, frame {t}: expected a list of MIDI note numbers, got {frame!r}")
        for note in frame:
            if isinstance(note, bool) or not isinstance(note, (int, float)) or (
                    isinstance(note, float) and not note.is_integer()):
                raise DataError(f"{where}, frame {t}: MIDI note numbers must be integers, got {note!r}")
            if not LOWEST_MIDI <= note <= top:
                raise DataError(f"{where}, frame {t}: MIDI note {note} is outside the piano range {LOWEST_MIDI}..{top}")
            steps.append(t)
            keys.append(int(note) - LOWEST_MIDI)
    roll = np.zeros((len(piece), N_KEYS), dtype=bool)
    roll[steps, keys] = True
    return torch.from_numpy(roll)


def read_notes_file(path: str | os.PathLike) -> Rolls:
    """Read a ``.notes.json.gz`` file into boolean piano rolls per split."""
    path = Path(path)
    text = read_text(path, "gzip'd JSON text")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise data_error(path, f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from e
    if not isinstance(data, dict) or any(s not in data for s in SPLITS):
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise data_error(path, f"expected an object with keys {list(SPLITS)}, got {got}")
    out: Rolls = {}
    for split in SPLITS:
        pieces = data[split]
        if not isinstance(pieces, list):
            raise data_error(path, f"split {split!r} must be a list of pieces, got {type(pieces).__name__}")
        out[split] = [_roll_from_notes(p, path, split, i) for i, p in enumerate(pieces)]
    return out


def read_mat_file(path: str | os.PathLike) -> Rolls:
    """Read a ``.mat`` file (cell arrays ``traindata``/``validdata``/``testdata`` of T × 88 0/1 matrices).

    scipy reads it in a child process (``read_mat_cells``): a corrupt file can crash scipy's reader.
    """
    path = Path(path)
    try:
        variables, cells = read_mat_cells(path, list(_MAT_KEYS.values()))
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"reading {path} needs scipy (pip install scipy, or seqzoo[data]); the "
                          f".notes.json.gz layout needs only the standard library") from e
    out: Rolls = {}
    for split, key in _MAT_KEYS.items():
        if key not in variables:
            raise DataError(f"{path}: missing variable {key!r} (split {split!r}); the file has {variables}")
        matrices = cells[key]
        if isinstance(matrices, str):
            raise DataError(f"{path}: {key!r} must be a cell array of T × {N_KEYS} matrices, "
                            f"got an array of dtype {matrices}")
        rolls = []
        for i, m in enumerate(matrices):
            if m.ndim != 2 or m.shape[1] != N_KEYS:
                raise DataError(f"{path}: {key}[{i}] must be a T × {N_KEYS} matrix, got shape {m.shape}")
            if not bool(((m == 0) | (m == 1)).all()):
                raise DataError(f"{path}: {key}[{i}] must hold only 0 and 1 (a binary piano roll)")
            rolls.append(torch.from_numpy(np.ascontiguousarray(m != 0)))  # loadmat gives Fortran order
        out[split] = rolls
    return out


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, mtime_ns: int, size: int) -> Rolls:
    return read_mat_file(path) if path.endswith(".mat") else read_notes_file(path)


def load_piano_rolls(path: str | os.PathLike) -> Rolls:
    """Piano rolls of a file in either layout (cached per file version)."""
    p = Path(path)
    if not p.is_file():
        raise MissingDataError(f"music: {p} does not exist or is not a file")
    st = p.stat()
    return _read_cached(str(p), st.st_mtime_ns, st.st_size)


# ----- dataset ----------------------------------------------------------------------------------
class PianoRollDataset(TensorDataset):
    """Pieces (or training segments) as next-frame examples, padded per batch to the longest member.

    ``batch(index)`` gives ``inputs`` (B, L, 88) float, ``targets`` (B, L, 88) float and ``mask`` (B, L) bool;
    ``batches(n)`` runs through all examples sorted by length (least padding; metrics are sums).
    """

    def __init__(self, pieces: list[Tensor], *, score_first_frame: bool = True, max_len: int | None = None) -> None:
        seqs, starts, lengths = [], [], []
        offset = 0
        zero = np.zeros((1, N_KEYS), dtype=bool)
        for roll in pieces:
            x = roll.bool().numpy()
            # step t reads seq[t] and predicts seq[t + 1]; a leading zero frame makes the first frame a target
            seq = np.concatenate([zero, x]) if score_first_frame else x
            n = seq.shape[0] - 1
            if n <= 0:
                continue
            step = max_len or n
            for s in range(0, n, step):
                starts.append(offset + s)
                lengths.append(min(step, n - s))
            seqs.append(seq)
            offset += seq.shape[0]
        if not seqs:
            raise ValueError("music: no piece has a frame to predict")
        # (total, 88) bool, pieces back to back (numpy concatenates many ragged pieces much faster than torch.cat)
        self.frames = torch.from_numpy(np.concatenate(seqs))
        self.starts = torch.tensor(starts, dtype=torch.long)
        self.lengths = torch.tensor(lengths, dtype=torch.long)
        self.size = len(starts)
        self._order = torch.argsort(self.lengths, descending=True, stable=True)

    @property
    def n_frames(self) -> int:
        return int(self.lengths.sum())

    @property
    def tensors(self) -> Batch:  # type: ignore[override]
        """All examples as one padded batch (for inspection; batches are built on demand)."""
        return self.batch(torch.arange(self.size))

    def batch(self, index: Tensor | slice) -> Batch:
        idx = torch.arange(self.size)[index] if isinstance(index, slice) else torch.as_tensor(index).reshape(-1)
        starts, lengths = self.starts[idx], self.lengths[idx]
        width = int(lengths.max()) if len(idx) else 0
        steps = torch.arange(width)
        mask = steps.unsqueeze(0) < lengths.unsqueeze(1)
        pos = (starts.unsqueeze(1) + steps.unsqueeze(0)).clamp(max=self.frames.shape[0] - 2)
        keep = mask.unsqueeze(-1)  # padded steps are all-zero frames
        inputs = self.frames[pos] & keep
        targets = self.frames[pos + 1] & keep
        return {"inputs": inputs.float(), "targets": targets.float(), "mask": mask}

    def batches(self, batch_size: int) -> Iterator[Batch]:
        for start in range(0, self.size, batch_size):
            yield self.batch(self._order[start:start + batch_size])


@register_task
class MusicTask(Task):
    """Next-frame prediction on 88-key piano rolls (JSB Chorales, Nottingham, MuseData, Piano-midi.de)."""

    name = "music"
    paper = "Boulanger-Lewandowski et al. 2012; Chung et al. 2014"
    version = 1
    fresh_train_data = False
    non_data_params = ("data_dir",)

    def __init__(self, dataset: str = "jsb", data_dir: str | None = None, format: str = "auto",
                 max_len: int | None = None, score_first_frame: bool = True) -> None:
        name = canonical_dataset(dataset)
        if format not in FORMATS:
            raise ConfigError(f"music: format must be one of {FORMATS}, got {format!r}")
        if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1):
            raise ConfigError(f"music: max_len must be None or an integer >= 1, got {max_len!r}")
        if not isinstance(score_first_frame, bool):
            raise ConfigError(f"music: score_first_frame must be True or False, got {score_first_frame!r}")
        super().__init__(dataset=name, data_dir=data_dir, format=format, max_len=max_len,
                         score_first_frame=score_first_frame)
        self.dataset_name, self.data_dir, self.format = name, data_dir, format
        self.max_len, self.score_first_frame = max_len, score_first_frame
        self.spec = TaskSpec(input_kind="features", d_input=N_KEYS, output_kind="per_step", d_output=N_KEYS,
                             loss="bce", metrics=("nll", "frame_accuracy"), primary_metric="nll",
                             extra={"dataset": name, "keys": "MIDI 21..108", "max_len": max_len,
                                    "score_first_frame": score_first_frame})

    # ----- data -------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return find_music_file(self.dataset_name, self.data_dir, self.format)

    def pieces(self, split: str) -> list[Tensor]:
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
        return load_piano_rolls(self.path)[split]

    def dataset(self, split: str) -> PianoRollDataset:
        crop = self.max_len if split == "train" else None
        return PianoRollDataset(self.pieces(split), score_first_frame=self.score_first_frame, max_len=crop)

    # ----- loss and metrics -------------------------------------------------------------------
    def loss_mask(self, batch: Batch, outputs: Tensor) -> Tensor | None:
        return batch.get("mask")

    def custom_metric(self, name: str, outputs: Tensor, batch: Batch) -> Tensor | tuple[float, float]:
        if name == "nll":
            return self._pointwise("bce", outputs, batch["targets"])
        if name == "frame_accuracy":
            pred = outputs > 0  # logit > 0  <=>  p > 0.5
            true = batch["targets"] > 0.5
            mask = batch.get("mask")
            if mask is not None:
                pred, true = pred & mask.unsqueeze(-1), true & mask.unsqueeze(-1)
            tp = float((pred & true).sum())
            return tp, tp + float((pred ^ true).sum())
        return super().custom_metric(name, outputs, batch)

    def marginals(self) -> Tensor:
        """Per-key probability of a key sounding in the training frames, Laplace-smoothed: (n + 1)/(N + 2)."""
        train = torch.cat(self.pieces("train")).double()
        return (train.sum(0) + 1.0) / (train.shape[0] + 2.0)

    def baseline(self) -> dict[str, float]:
        """Independent Bernoulli keys with the training marginals, on the test split."""
        p = self.marginals()
        logits = torch.log(p) - torch.log1p(-p)
        sums = {k: [0.0, 0.0] for k in self.spec.metrics}
        for batch in self.build("test").batches(256):
            targets = batch["targets"].double()
            out = logits.expand(*targets.shape)
            for k, (s, c) in self.metric_sums(out, {**batch, "targets": targets}).items():
                sums[k][0] += s
                sums[k][1] += c
        return {k: (s / c if c else math.nan) for k, (s, c) in sums.items()}

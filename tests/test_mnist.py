"""Task ``mnist-test``: the IDX reader, the fixed 7k/1k/2k split, layouts, pooling and the pMNIST permutation."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from seqzoo.tasks import create_task
from seqzoo.tasks.mnist import read_idx

REPO_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _shared_data() -> Path | None:
    for cand in (os.environ.get("SEQZOO_DATA"), REPO_DATA):
        if cand and (Path(cand) / "mnist-test" / "t10k-images-idx3-ubyte.gz").is_file():
            return Path(cand)
    return None


DATA = _shared_data()
needs_data = pytest.mark.skipif(DATA is None, reason="mnist-test/t10k-*-ubyte.gz is not present: set SEQZOO_DATA to "
                                                     "the shared data folder")


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_read_idx_roundtrip_and_errors(tmp_path: Path) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), arr)
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(ValueError, match="not an IDX file of unsigned bytes"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"abc")
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short")


def test_missing_data_names_the_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        create_task("mnist-test", data_dir=str(tmp_path))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="pool must divide 28"):
        create_task("mnist-test", pool=3)
    with pytest.raises(ValueError, match="layout must be one of"):
        create_task("mnist-test", layout="columns")


@needs_data
def test_split_layouts_and_baseline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQZOO_DATA", str(DATA))
    task = create_task("mnist-test")
    sizes = {s: len(task.build(s).tensors["targets"]) for s in ("train", "valid", "test")}
    assert sizes == {"train": 7000, "valid": 1000, "test": 2000}
    idx = task.split_indices()
    assert len(torch.cat(list(idx.values())).unique()) == 10_000  # disjoint and complete
    test = task.build("test").tensors
    assert test["inputs"].shape == (2000, 784, 1)
    assert 0.0 <= float(test["inputs"].min()) < float(test["inputs"].max()) <= 1.0
    counts = torch.bincount(test["targets"], minlength=10)
    assert int(counts.min()) >= 170  # stratified: every class close to its 9-11 % share
    rows = create_task("mnist-test", layout="rows").build("test").tensors["inputs"]
    torch.testing.assert_close(rows.reshape(2000, 784, 1), test["inputs"])
    pooled = create_task("mnist-test", pool=2).build("test").tensors["inputs"]
    assert pooled.shape == (2000, 196, 1)
    torch.testing.assert_close(pooled[0, 0, 0], test["inputs"][0, [0, 1, 28, 29], 0].mean())
    perm_task = create_task("mnist-test", permute=True)
    perm = perm_task.permutation()
    torch.testing.assert_close(perm_task.build("test").tensors["inputs"], test["inputs"][:, perm])
    assert not torch.equal(perm, torch.arange(784))
    base = task.baseline()
    assert 0.09 < base["accuracy"] < 0.13 and base["cross_entropy"] == pytest.approx(np.log(10), abs=0.01)


@needs_data
def test_standardize_uses_the_training_splits_statistics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQZOO_DATA", str(DATA))
    plain, std = create_task("mnist-test", pool=2), create_task("mnist-test", pool=2, standardize=True)
    train = std.build("train").tensors["inputs"].double()
    assert abs(float(train.mean())) < 1e-5 and abs(float(train.std()) - 1.0) < 1e-4
    raw = plain.build("train").tensors["inputs"].double()
    a, b = plain.build("test").tensors["inputs"].double(), std.build("test").tensors["inputs"].double()
    torch.testing.assert_close(b, (a - raw.mean()) / raw.std(), atol=1e-5, rtol=0)  # test split: train statistics
    assert "standardize" not in plain.params and std.params["standardize"] is True  # older runs keep their identity
    with pytest.raises(ValueError, match="standardize.*must be true or false"):
        create_task("mnist-test", standardize="yes")

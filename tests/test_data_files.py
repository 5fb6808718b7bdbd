"""Bad data files: every task's reader raises ``DataError`` naming the file (and the line), never a raw exception.

The files are crafted in ``tmp_path``: missing, truncated gzip, corrupt gzip, not gzip at all, bytes that are not
UTF-8, and malformed lines or records for each format (plain text, IDX, notes JSON, CSV series, tar of WAVs).
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from seqzoo.errors import DataError
from seqzoo.tasks import create_task
from seqzoo.tasks.data_files import MissingDataError, read_bytes, read_text
from seqzoo.tasks.forecasting import read_series_file
from seqzoo.tasks.long_classification import read_recordings
from seqzoo.tasks.mnist import read_idx
from seqzoo.tasks.music import read_notes_file

PAYLOAD = ("the quick brown fox jumps over the lazy dog\n" * 400).encode()


def truncated_gz(data: bytes) -> bytes:
    """A gzip stream cut in the middle (gzip raises EOFError on it)."""
    z = gzip.compress(data)
    return z[: len(z) // 2]


def corrupt_gz(data: bytes) -> bytes:
    """A gzip stream with garbage in its deflate body (zlib.error or a CRC failure)."""
    z = bytearray(gzip.compress(data))
    for i in range(20, min(len(z) - 8, 60)):
        z[i] ^= 0xA5
    return bytes(z)


BAD_GZ = {"truncated": (truncated_gz, "truncated"), "corrupt": (corrupt_gz, "corrupt gzip|truncated"),
          "not-gzip": (lambda data: b"plain bytes, not gzip" * 4, "corrupt gzip")}


def _raises_naming(fn: Callable[[], object], path: Path, pattern: str, line: int | None = None) -> DataError:
    with pytest.raises(DataError, match=pattern) as info:
        fn()
    msg = str(info.value)
    assert str(path) in msg, msg
    if line is not None:
        assert f"line {line}" in msg, msg
    assert "\n" not in msg  # one line
    return info.value


# ----- the helper itself -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(BAD_GZ))
def test_bad_gzip_streams_are_data_errors_naming_the_file(tmp_path: Path, kind: str) -> None:
    make, pattern = BAD_GZ[kind]
    p = tmp_path / "x.txt.gz"
    p.write_bytes(make(PAYLOAD))
    _raises_naming(lambda: read_bytes(p), p, pattern)
    _raises_naming(lambda: read_text(p), p, pattern)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    p = tmp_path / "absent.txt"
    err = _raises_naming(lambda: read_text(p), p, "does not exist")
    assert isinstance(err, MissingDataError) and isinstance(err, FileNotFoundError)
    _raises_naming(lambda: read_bytes(tmp_path), tmp_path, "is a directory")


def test_non_utf8_nul_and_empty_text_name_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "t.txt"
    p.write_bytes(b"ok\nfine\nbad \xff byte\n")
    _raises_naming(lambda: read_text(p), p, "not valid UTF-8", line=3)
    p.write_bytes(b"ok\n\x00\n")
    _raises_naming(lambda: read_text(p), p, "NUL byte", line=2)
    p.write_bytes(b" \n\n")
    _raises_naming(lambda: read_text(p), p, "empty")
    gz = tmp_path / "t.txt.gz"
    gz.write_bytes(gzip.compress(b"a\nb\n\xc3\x28\n"))
    _raises_naming(lambda: read_text(gz), gz, "not valid UTF-8", line=3)


# ----- each task's reader ----------------------------------------------------------------------------------------

def _write_lm(folder: Path, test_bytes: bytes, test_name: str = "test.txt") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text("a b c\nb c d\n" * 20)
    (folder / "valid.txt").write_text("a b\nc d\n")
    (folder / test_name).write_bytes(test_bytes)


@pytest.mark.parametrize("kind", sorted(BAD_GZ))
def test_language_modeling_bad_gzip(tmp_path: Path, kind: str) -> None:
    make, pattern = BAD_GZ[kind]
    _write_lm(tmp_path, make(PAYLOAD), "test.txt.gz")
    _raises_naming(lambda: create_task("lm", dataset="text", data_dir=str(tmp_path)), tmp_path / "test.txt.gz",
                   pattern)


def test_language_modeling_non_utf8_and_missing(tmp_path: Path) -> None:
    _write_lm(tmp_path, b"fine\nalso fine\n\xfe\xfe\n")
    _raises_naming(lambda: create_task("lm", dataset="text", data_dir=str(tmp_path)), tmp_path / "test.txt",
                   "not valid UTF-8", line=3)
    with pytest.raises(MissingDataError, match="train.txt"):
        create_task("lm", dataset="text", data_dir=str(tmp_path / "nowhere"))


def _idx(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


@pytest.mark.parametrize("kind", sorted(BAD_GZ))
def test_mnist_idx_bad_gzip(tmp_path: Path, kind: str) -> None:
    make, pattern = BAD_GZ[kind]
    p = tmp_path / "t10k-labels-idx1-ubyte.gz"
    p.write_bytes(make(_idx(np.arange(5000) % 10)))
    _raises_naming(lambda: read_idx(p), p, pattern)


def test_mnist_idx_malformed(tmp_path: Path) -> None:
    p = tmp_path / "idx"
    p.write_bytes(bytes([0, 0, 8, 3, 0, 0]))  # three sizes announced, two bytes of them present
    _raises_naming(lambda: read_idx(p), p, "header .* cut short")
    p.write_bytes(_idx(np.zeros((4, 3)))[:-2])
    _raises_naming(lambda: read_idx(p), p, "truncated")
    _raises_naming(lambda: read_idx(tmp_path / "none.gz"), tmp_path / "none.gz", "does not exist")


@pytest.mark.parametrize("kind", sorted(BAD_GZ))
def test_music_notes_bad_gzip(tmp_path: Path, kind: str) -> None:
    make, pattern = BAD_GZ[kind]
    p = tmp_path / "jsb_chorales.notes.json.gz"
    p.write_bytes(make(json.dumps({"train": [[[60, 64]] * 200], "valid": [], "test": []}).encode()))
    _raises_naming(lambda: read_notes_file(p), p, pattern)


def test_music_notes_non_utf8_and_malformed(tmp_path: Path) -> None:
    p = tmp_path / "jsb_chorales.notes.json.gz"
    p.write_bytes(gzip.compress(b'{"train": [],\n "valid": [],\n "test": ["\xff"]}'))
    _raises_naming(lambda: read_notes_file(p), p, "not valid UTF-8", line=3)
    p.write_bytes(gzip.compress(b'{"train": [],\n "valid": [],\n "test": [[[60, ]]]}'))
    _raises_naming(lambda: read_notes_file(p), p, "invalid JSON at line 3")
    p.write_bytes(gzip.compress(json.dumps({"train": [[[60], [200]]], "valid": [], "test": []}).encode()))
    _raises_naming(lambda: read_notes_file(p), p, "piece 0, frame 1: MIDI note 200")


def test_music_task_with_a_corrupt_file_names_it(tmp_path: Path) -> None:
    folder = tmp_path / "polyphonic-music"
    folder.mkdir()
    p = folder / "jsb_chorales.notes.json.gz"
    p.write_bytes(truncated_gz(PAYLOAD))
    task = create_task("music", dataset="jsb", data_dir=str(tmp_path), format="notes")
    _raises_naming(lambda: task.build("test"), p, "truncated")
    with pytest.raises(MissingDataError, match="nottingham"):
        create_task("music", dataset="nottingham", data_dir=str(tmp_path)).build("test")


def test_forecast_series_file_errors(tmp_path: Path) -> None:
    p = tmp_path / "s.csv"
    p.write_bytes(b"t,value\n1,2.0\n2,\xff\n")
    _raises_naming(lambda: read_series_file(p, "value"), p, "not valid UTF-8", line=3)
    p.write_text("t,value\n1,2.0\n\n2,oops\n")
    _raises_naming(lambda: read_series_file(p, "value"), p, "'oops' is not a number", line=4)
    p.write_text("1,2\n3,4,5\n")
    _raises_naming(lambda: read_series_file(p, 0), p, "expected 2 columns", line=2)
    p.write_text("t,value\n1\n")
    _raises_naming(lambda: read_series_file(p, "value"), p, "expected 2 columns \\(as in the header\\)", line=2)
    p.write_text("value\n1.0\nnan\n")
    _raises_naming(lambda: read_series_file(p), p, "'nan' is not a finite number", line=3)
    gz = tmp_path / "s.csv.gz"
    gz.write_bytes(truncated_gz(b"1.0\n" * 5000))
    _raises_naming(lambda: read_series_file(gz), gz, "truncated")
    gz.write_bytes(gzip.compress(b"1.0\n2.5\n"))
    assert read_series_file(gz).tolist() == [1.0, 2.5]
    with pytest.raises(MissingDataError, match="does not exist"):
        read_series_file(tmp_path / "none.csv")


def _wav(samples: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("kind", sorted(BAD_GZ))
def test_spoken_digits_bad_gzip(tmp_path: Path, kind: str) -> None:
    make, pattern = BAD_GZ[kind]
    p = tmp_path / "recordings.tar.gz"
    p.write_bytes(make(_tar({f"recordings/{d}_spk_{i}.wav": _wav(np.arange(400) * (d + 1))
                             for d in range(3) for i in range(3)})))
    _raises_naming(lambda: read_recordings(str(p), (kind, 0)), p, pattern)


def test_spoken_digits_not_a_tar_and_bad_member(tmp_path: Path) -> None:
    p = tmp_path / "recordings.tar"
    p.write_bytes(b"\x01" * 1000)
    _raises_naming(lambda: read_recordings(str(p), (1, 0)), p, "not a readable tar archive")
    p.write_bytes(_tar({"recordings/3_spk_1.wav": b"RIFF....garbage"}))
    _raises_naming(lambda: read_recordings(str(p), (2, 0)), p, "3_spk_1.wav: not a readable WAV")


# ----- mutated files: a DataError or a result, never another exception --------------------------------------------

def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """Cut, overwrite a few bytes of, or insert random bytes into ``data``."""
    b = bytearray(data)
    kind = int(rng.integers(3))
    if kind == 0:
        return bytes(b[: int(rng.integers(len(b)))])
    if kind == 1:
        for i in rng.integers(0, len(b), size=int(rng.integers(1, 9))):
            b[int(i)] = int(rng.integers(256))
        return bytes(b)
    i = int(rng.integers(len(b) + 1))
    return bytes(b[:i]) + rng.integers(0, 256, size=int(rng.integers(1, 21))).astype(np.uint8).tobytes() + bytes(b[i:])


_NOTES = json.dumps({"train": [[[60, 61], [], [70]]], "valid": [[[62]]], "test": [[[64, 65]]]}).encode()
_CSV = b"t,value\n1,2.0\n2,3.5\n3,4\n"
_IDX = _idx(np.arange(30))
MUTATED = {  # reader, file name, valid content
    "idx": (read_idx, "a", _IDX), "idx-gz": (read_idx, "a.gz", gzip.compress(_IDX)),
    "notes-gz": (read_notes_file, "n.notes.json.gz", gzip.compress(_NOTES)),
    "csv": (lambda p: read_series_file(p, "value"), "s.csv", _CSV),
    "csv-gz": (lambda p: read_series_file(p, "value"), "s.csv.gz", gzip.compress(_CSV)),
    "text-gz": (read_text, "t.txt.gz", gzip.compress(b"hello\nworld\n")),
}


@pytest.mark.parametrize("case", sorted(MUTATED))
def test_mutated_files_give_data_errors_or_results(tmp_path: Path, case: str) -> None:
    read, fname, content = MUTATED[case]
    rng = np.random.default_rng(sorted(MUTATED).index(case))
    p = tmp_path / fname
    for _ in range(150):
        p.write_bytes(_mutate(content, rng))
        try:
            read(p)
        except DataError as e:
            assert str(p) in str(e)


@pytest.mark.parametrize("piece", ["[[100000000000000000000000000000]]", "[[60, [61]]]", "[[NaN]]", "[[Infinity]]",
                                   "[[true]]", '[["60"]]', "[60]", "null"])
def test_malformed_notes_are_data_errors(tmp_path: Path, piece: str) -> None:
    p = tmp_path / "x.notes.json.gz"
    p.write_bytes(gzip.compress(b'{"train": [' + piece.encode() + b'], "valid": [], "test": []}'))
    _raises_naming(lambda: read_notes_file(p), p, "piece 0")


def test_mutated_json_text_gives_data_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    p = tmp_path / "x.notes.json.gz"
    for _ in range(150):
        p.write_bytes(gzip.compress(_mutate(_NOTES, rng)))
        try:
            read_notes_file(p)
        except DataError as e:
            assert str(p) in str(e)


def test_a_crashing_mat_reader_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """scipy's .mat reader segfaults on some corrupt files (seen with scipy 1.17 on mutated files): it runs in a
    child process, and a crash there is a DataError naming the file, not a dead interpreter."""
    pytest.importorskip("scipy", reason="the .mat layout needs scipy")
    import seqzoo.tasks.data_files as data_files
    from seqzoo.tasks.music import read_mat_file

    p = tmp_path / "JSB_Chorales.mat"
    p.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    monkeypatch.setattr(data_files, "_MAT_CHILD", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    _raises_naming(lambda: read_mat_file(p), p, "not a readable MATLAB .mat file .*signal 11")
    monkeypatch.undo()
    _raises_naming(lambda: read_mat_file(p), p, "not a readable MATLAB .mat file")
    _raises_naming(lambda: read_mat_file(tmp_path / "none.mat"), tmp_path / "none.mat", "does not exist")

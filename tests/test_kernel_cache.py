"""The C kernel cache (``ops/native_kernels.py``) survives bad entries: a truncated, foreign or mismatching cached
library is rebuilt with one warning line naming the file, never loaded blindly (a truncated library mapped by
``dlopen`` crashes with SIGBUS) and never reported as a model error.

Each case runs in a fresh interpreter with ``SEQZOO_CACHE`` pointing at a copy of a pristine cache, damages the
entry first, then runs an LN-LSTM forward+backward and compares it with the torch-op path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from seqzoo.ops import native_kernels

_RUN = textwrap.dedent("""
    import torch, seqzoo
    from seqzoo.ops import native_kernels

    def run(native):
        native_kernels.set_enabled(native)
        torch.manual_seed(0)
        m = seqzoo.LSTM(6, 8, batch_first=True, norm="layer")
        x = torch.randn(4, 9, 6, requires_grad=True)
        y, _ = m(x)
        y.pow(2).sum().backward()
        return [y.detach(), x.grad] + [p.grad for p in m.parameters()]

    lib = native_kernels.load("norm_lstm_step")
    assert lib is not None, "no C kernels after the cache was repaired"
    fast, ref = run(True), run(False)
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    print("RESULT-OK")
""")


def _run(cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEQZOO_CACHE": str(cache), "SEQZOO_NATIVE": "1"}
    return subprocess.run([sys.executable, "-c", _RUN], capture_output=True, text=True, timeout=900, env=env)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A cache folder holding one freshly built, intact entry."""
    if native_kernels._compiler() is None:
        pytest.skip("no C++ compiler: the C kernels cannot be built here")
    cache = tmp_path_factory.mktemp("pristine-cache")
    proc = _run(cache)
    assert proc.returncode == 0 and "RESULT-OK" in proc.stdout, proc.stderr[-3000:]
    assert "bad" not in proc.stderr, proc.stderr  # a clean build warns about nothing
    return cache


def _entry(cache: Path) -> tuple[Path, Path]:
    libs = list((cache / "kernels").glob("norm_lstm_step-*.so"))
    assert len(libs) == 1, libs
    return libs[0], libs[0].with_suffix(".json")


def _copy(pristine: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    cache = tmp_path / "cache"
    shutil.copytree(pristine, cache)
    return (cache, *_entry(cache))


def _assert_repaired(proc: subprocess.CompletedProcess, lib: Path, sidecar: Path) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode} (SIGBUS is -7):\n{proc.stderr[-3000:]}"
    assert "RESULT-OK" in proc.stdout, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if "kernel cache entry" in line]
    assert len(warnings) == 1 and str(lib) in warnings[0], proc.stderr
    assert "model" not in proc.stderr and "task" not in proc.stderr
    record = json.loads(sidecar.read_text())  # the rebuilt entry is intact again
    assert record["size"] == lib.stat().st_size
    assert native_kernels._check_entry(lib, sidecar) is None


def test_sidecar_records_size_and_hash(pristine):
    lib, sidecar = _entry(pristine)
    record = json.loads(sidecar.read_text())
    assert (record["size"], record["sha256"]) == native_kernels._digest(lib)
    assert record["abi"] == native_kernels._ABI_VERSION
    assert not [p for p in (pristine / "kernels").iterdir() if p.name.startswith(".")]  # no temporary files left


def test_truncated_library_is_rebuilt_not_sigbus(pristine, tmp_path):
    cache, lib, sidecar = _copy(pristine, tmp_path)
    with open(lib, "r+b") as f:
        f.truncate(lib.stat().st_size // 3)
    _assert_repaired(_run(cache), lib, sidecar)


def test_random_bytes_are_rebuilt(pristine, tmp_path):
    cache, lib, sidecar = _copy(pristine, tmp_path)
    size = lib.stat().st_size
    lib.write_bytes(os.urandom(size))  # same size: only the hash tells
    _assert_repaired(_run(cache), lib, sidecar)


def _foreign_so(tmp_path: Path) -> Path:
    src = tmp_path / "foreign.c"
    src.write_text("int seqzoo_abi_version(void) { return 7; }\nint unrelated(int x) { return x + 1; }\n")
    out = tmp_path / "foreign.so"
    cc = shutil.which("cc") or shutil.which("gcc") or native_kernels._compiler()
    subprocess.run([cc, "-shared", "-fPIC", str(src), "-o", str(out)], check=True, capture_output=True)
    return out


def test_foreign_library_is_rebuilt(pristine, tmp_path):
    cache, lib, sidecar = _copy(pristine, tmp_path)
    shutil.copyfile(_foreign_so(tmp_path), lib)
    _assert_repaired(_run(cache), lib, sidecar)


def test_foreign_library_with_matching_record_fails_the_symbol_check(pristine, tmp_path):
    """A valid foreign library whose record matches it passes the hash check; it lacks the entry points, so it is
    rejected after ``dlopen`` and rebuilt (never an error blaming the model)."""
    cache, lib, sidecar = _copy(pristine, tmp_path)
    shutil.copyfile(_foreign_so(tmp_path), lib)
    size, sha = native_kernels._digest(lib)
    sidecar.write_text(json.dumps({"size": size, "sha256": sha, "abi": native_kernels._ABI_VERSION}))
    proc = _run(cache)
    _assert_repaired(proc, lib, sidecar)
    assert "lacks the symbol" in proc.stderr


def test_missing_record_is_rebuilt(pristine, tmp_path):
    cache, lib, sidecar = _copy(pristine, tmp_path)
    sidecar.unlink()
    _assert_repaired(_run(cache), lib, sidecar)


def test_unrepairable_entry_falls_back_to_torch_ops(tmp_path, monkeypatch, caplog):
    """When the rebuild fails too (here: no compiler output), the loader returns None: the torch-op loop runs."""
    if native_kernels._compiler() is None:
        pytest.skip("no C++ compiler on this machine")
    monkeypatch.setenv("SEQZOO_CACHE", str(tmp_path))
    monkeypatch.setenv("SEQZOO_NATIVE", "1")
    monkeypatch.setattr(native_kernels, "_libs", {})
    monkeypatch.setattr(native_kernels, "_enabled_override", None)
    monkeypatch.setattr(native_kernels, "_FLAGS", ("-this-flag-does-not-exist",))  # every compile fails
    _, lib, _ = native_kernels._target("norm_lstm_step")
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"\x7fELF truncated")
    with caplog.at_level("WARNING", logger=native_kernels.__name__):
        assert native_kernels.load("norm_lstm_step") is None
    assert any(str(lib) in r.getMessage() for r in caplog.records)

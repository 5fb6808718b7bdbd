"""Build, cache and load the small C++ step kernels in ``ops/csrc`` (plain C ABI, called through ctypes).

The kernels fuse the pointwise work of one recurrent step (see ``csrc/norm_lstm_step.cpp``); the Python loops in
``ops`` call them between their GEMMs when they are available and fall back to torch ops otherwise, so a machine
without a C++ compiler loses speed, never function. The source has no torch headers, so a cold build takes about
a second (``g++ -O3 -march=native -fno-math-errno -fno-trapping-math -fopenmp``, IEEE semantics: no fast-math
flags); the shared library is cached under ``$SEQZOO_CACHE`` (default
``~/.cache/seqzoo``) in a file named by a hash of the source, the flags, the compiler and the CPU, written
atomically (an fsync'd temporary file renamed into place), so concurrent processes and interrupted builds are safe.
Next to it a small JSON record holds its size and SHA-256, checked before every ``dlopen`` (a truncated library
would crash the process with SIGBUS); after loading, the ABI version and entry points are checked. A bad entry is
rebuilt with a one-line warning naming the file, or the torch-op path runs if that fails.

With ``-fopenmp`` the library needs ``libgomp.so.1``, which torch (CPU wheels) has already loaded by that name, so
the kernels share torch's OpenMP thread pool and thread count rather than starting a second runtime.

``SEQZOO_NATIVE=0`` turns the kernels off (read at call time; ``set_enabled`` does the same in-process).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

_SRC_DIR = Path(__file__).parent / "csrc"
# IEEE semantics: no fast-math (it lets the compiler assume no NaN/Inf, which turned NaN inputs into finite outputs,
# and links crtfastmath.o, which sets flush-to-zero/denormals-are-zero for the whole process when the library loads).
# Only flags that change no result: no errno from libm calls (so sqrt inlines) and no FP traps assumed. Reductions
# vectorize through OpenMP SIMD reductions in the source instead of -fassociative-math.
_FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fopenmp", "-fPIC", "-shared",
          "-std=c++17")
_ABI_VERSION = 7
_ABI_VERSIONS = {"xnor_gemm": 1}  # libraries with their own ABI version (others: _ABI_VERSION)
_lock = threading.Lock()
_libs: dict[str, ctypes.CDLL | None] = {}
_enabled_override: bool | None = None


def set_enabled(flag: bool | None) -> None:
    """Force the kernels on/off in this process (``None``: back to ``SEQZOO_NATIVE``)."""
    global _enabled_override
    _enabled_override = flag


def enabled() -> bool:
    if _enabled_override is not None:
        return _enabled_override
    return os.environ.get("SEQZOO_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    root = os.environ.get("SEQZOO_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "seqzoo"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def _cpu_signature() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


# The entry points each library must export (besides ``seqzoo_abi_version``); a cached library without them is
# treated like a corrupt cache entry.
_ENTRY_POINTS: dict[str, tuple[str, ...]] = {
    "norm_lstm_step": tuple(f"{fn}_{dt}" for fn in ("norm_lstm_forward_step", "norm_lstm_forward_chunk",
                                                     "norm_lstm_backward_step", "norm_lstm_backward_chunk",
                                                     "input_atn_forward", "input_atn_backward")
                            for dt in ("f32", "f64")),
    "xnor_gemm": ("xnor_features", "xnor_pack_f32", "xnor_gemm", "xnor_gemm_scalar"),
}


def _target(name: str) -> tuple[str, Path, Path] | None:
    """``(compiler, library path, sidecar path)`` of the cache entry for this source, flags, compiler and CPU."""
    src = _SRC_DIR / f"{name}.cpp"
    cxx = _compiler()
    if cxx is None:
        log.info("seqzoo native kernel %s: no C++ compiler found; using the torch-op loop", name)
        return None
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    key = hashlib.sha256("\0".join([src.read_text(), " ".join(_FLAGS), version, _cpu_signature()]).encode())
    stem = f"{name}-{key.hexdigest()[:16]}"
    out_dir = cache_dir() / "kernels"
    return cxx, out_dir / f"{stem}.so", out_dir / f"{stem}.json"


def _digest(path: Path) -> tuple[int, str]:
    """``(size, SHA-256 hex)`` of a file, read through one descriptor."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _check_entry(lib_path: Path, sidecar: Path) -> str | None:
    """Why the cache entry cannot be loaded (missing sidecar, size or hash mismatch), or None when it is intact.

    The check runs before ``dlopen``: mapping a truncated library crashes the process with SIGBUS.
    """
    try:
        meta = json.loads(sidecar.read_text())
        want_size, want_sha = int(meta["size"]), str(meta["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"its record {sidecar.name} is missing or unreadable ({type(err).__name__})"
    try:
        size, sha = _digest(lib_path)
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    if size != want_size:
        return f"size {size} bytes, recorded {want_size} (truncated or replaced)"
    if sha != want_sha:
        return "its SHA-256 does not match the recorded one (corrupt or replaced)"
    return None


def _write_atomic(path: Path, data: bytes | None = None, src: Path | None = None) -> None:
    """Put ``data`` (or the file ``src``) at ``path``: fsync'd temporary file, atomic rename, fsync of the folder."""
    if src is None:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix + ".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data or b"")
            f.flush()
            os.fsync(f.fileno())
        src = Path(tmp)
    else:
        with open(src, "rb+") as f:
            os.fsync(f.fileno())
    os.replace(src, path)
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _compile(name: str, cxx: str, lib_path: Path, sidecar: Path) -> bool:
    """Compile ``csrc/<name>.cpp`` into the cache: library first (fsync + rename), then its size/hash record."""
    src = _SRC_DIR / f"{name}.cpp"
    try:
        lib_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".so.tmp", dir=lib_path.parent)
        os.close(fd)
        proc = subprocess.run([cxx, *_FLAGS, str(src), "-o", tmp], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            log.warning("seqzoo native kernel %s failed to compile (%s); using the torch-op loop:\n%s", name, cxx,
                        proc.stderr[-2000:])
            os.unlink(tmp)
            return False
        size, sha = _digest(Path(tmp))
        _write_atomic(lib_path, src=Path(tmp))
        record = {"size": size, "sha256": sha, "abi": _ABI_VERSIONS.get(name, _ABI_VERSION), "flags": list(_FLAGS)}
        _write_atomic(sidecar, (json.dumps(record, indent=1) + "\n").encode())
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("seqzoo native kernel %s: build into %s failed (%s); using the torch-op loop", name,
                    lib_path.parent, err)
        return False
    return True


def _build(name: str, rebuild_reason: str | None = None) -> Path | None:
    """The verified cache entry for ``name``, compiled when absent; a bad entry is rebuilt with a one-line warning.

    ``rebuild_reason`` forces a rebuild (the entry passed the checks but did not load; the reason is logged).
    """
    found = _target(name)
    if found is None:
        return None
    cxx, lib_path, sidecar = found
    reason = rebuild_reason
    if reason is None and (lib_path.exists() or sidecar.exists()):
        reason = _check_entry(lib_path, sidecar)
        if reason is None:
            return lib_path
    if reason is not None:
        log.warning("seqzoo native kernel cache entry %s is bad: %s; rebuilding it", lib_path, reason)
    if not _compile(name, cxx, lib_path, sidecar):
        return None
    reason = _check_entry(lib_path, sidecar)  # another process may have replaced it meanwhile
    if reason is not None:
        log.warning("seqzoo native kernel cache entry %s is bad after a rebuild: %s; using the torch-op loop",
                    lib_path, reason)
        return None
    return lib_path


def _open(name: str, path: Path) -> tuple[ctypes.CDLL | None, str | None]:
    """``dlopen`` a verified library and check its ABI version and entry points: ``(lib, None)`` or ``(None, why)``."""
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as err:
        return None, f"dlopen failed ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    missing = [sym for sym in ("seqzoo_abi_version", *_ENTRY_POINTS.get(name, ())) if not hasattr(lib, sym)]
    why = None
    if missing:
        why = f"it lacks the symbol{'s' if len(missing) > 1 else ''} {', '.join(missing[:3])}" + \
            (" ..." if len(missing) > 3 else "")
    else:
        lib.seqzoo_abi_version.restype = ctypes.c_int
        abi, want = lib.seqzoo_abi_version(), _ABI_VERSIONS.get(name, _ABI_VERSION)
        if abi != want:
            why = f"its ABI version is {abi}, expected {want}"
    if why is None:
        return lib, None
    _dlclose(lib)  # a rebuilt file at the same path must not resolve to this handle
    return None, why


def _dlclose(lib: ctypes.CDLL) -> None:
    import _ctypes

    close = getattr(_ctypes, "dlclose", None)
    if close is not None:
        try:
            close(lib._handle)
        except OSError:
            pass


def load(name: str) -> ctypes.CDLL | None:
    """The compiled library ``csrc/<name>.cpp`` (built on first use), or None when disabled or unbuildable.

    Cache entries are checked before ``dlopen`` (size and SHA-256 against the record written next to them) and
    after it (ABI version, entry points); a bad entry is rebuilt once with a one-line warning naming the file,
    and if that fails the caller's torch-op path runs.
    """
    if not enabled():
        return None
    with _lock:
        if name not in _libs:
            lib = None
            path = _build(name)
            if path is not None:
                lib, why = _open(name, path)
                if why is not None:
                    path = _build(name, rebuild_reason=why)
                    if path is not None:
                        lib, why = _open(name, path)
                        if why is not None:
                            log.warning("seqzoo native kernel cache entry %s is bad after a rebuild: %s; using the "
                                        "torch-op loop", path, why)
            _libs[name] = lib
        return _libs[name]

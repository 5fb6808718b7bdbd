"""Build, cache and load the small C++ step kernels in ``ops/csrc`` (plain C ABI, called through ctypes).

The kernels fuse the pointwise work of one recurrent step (see ``csrc/norm_lstm_step.cpp``); the Python loops in
``ops`` call them between their GEMMs when they are available and fall back to torch ops otherwise, so a machine
without a C++ compiler loses speed, never function. The source has no torch headers, so a cold build takes about
a second (``g++ -O3 -march=native -fno-math-errno -fno-trapping-math -fopenmp``, IEEE semantics: no
``-ffast-math``); the shared library is cached under ``$SEQZOO_CACHE`` (default
``~/.cache/seqzoo``) in a file named by a hash of the source, the flags, the compiler and the CPU, written
atomically (a temporary file renamed into place), so concurrent processes and interrupted builds are safe.

With ``-fopenmp`` the library needs ``libgomp.so.1``, which torch (CPU wheels) has already loaded by that name, so
the kernels share torch's OpenMP thread pool and thread count rather than starting a second runtime.

``SEQZOO_NATIVE=0`` turns the kernels off (read at call time; ``set_enabled`` does the same in-process).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

_SRC_DIR = Path(__file__).parent / "csrc"
# IEEE semantics: no -ffast-math (it lets the compiler assume no NaN/Inf, which turned NaN inputs into finite outputs,
# and links crtfastmath.o, which sets flush-to-zero/denormals-are-zero for the whole process when the library loads).
# Only flags that change no result: no errno from libm calls (so sqrt inlines) and no FP traps assumed. Reductions
# vectorize through OpenMP SIMD reductions in the source instead of -fassociative-math.
_FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fopenmp", "-fPIC", "-shared",
          "-std=c++17")
_ABI_VERSION = 7
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


def _build(name: str) -> Path | None:
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
    out_dir = cache_dir() / "kernels"
    target = out_dir / f"{name}-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".so", dir=out_dir)
        os.close(fd)
        proc = subprocess.run([cxx, *_FLAGS, str(src), "-o", tmp], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            log.warning("seqzoo native kernel %s failed to compile (%s); using the torch-op loop:\n%s", name, cxx,
                        proc.stderr[-2000:])
            os.unlink(tmp)
            return None
        os.replace(tmp, target)
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("seqzoo native kernel %s: build failed (%s); using the torch-op loop", name, err)
        return None
    return target


def load(name: str) -> ctypes.CDLL | None:
    """The compiled library ``csrc/<name>.cpp`` (built on first use), or None when disabled or unbuildable."""
    if not enabled():
        return None
    with _lock:
        if name not in _libs:
            path = _build(name)
            lib = None
            if path is not None:
                try:
                    lib = ctypes.CDLL(str(path))
                    if lib.seqzoo_abi_version() != _ABI_VERSION:
                        lib = None
                except OSError as err:
                    log.warning("seqzoo native kernel %s: could not load %s (%s)", name, path, err)
                    lib = None
            _libs[name] = lib
        return _libs[name]

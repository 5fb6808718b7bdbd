"""Run directories: naming, ``config.json`` / ``env.json`` / ``metrics.jsonl`` / ``result.json``, and
reading a finished run back (``load_run``, ``evaluate_run``) without unpickling anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seqzoo.errors import RunError, RunNotFoundError
from seqzoo.training.checkpoint import atomic_write_json, load_checkpoint_weights
from seqzoo.training.index import INDEX_FILE, STATUSES  # noqa: F401  (STATUSES re-exported)

CONFIG_FILE = "config.json"
ENV_FILE = "env.json"
METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"


@dataclass
class RunResult:
    """What a run produced; ``result.json`` holds it with paths as strings."""

    run_dir: Path
    run_id: str
    model: str
    task: str
    seed: int
    status: str  # finished | stopped_nan | early_stopped | time_budget
    steps: int  # steps actually taken
    best_step: int
    valid: dict[str, float]  # metrics of the best evaluation on eval_split
    test: dict[str, float]  # metrics of the best weights on test_split ({} if None)
    wall_time: float
    history: list[dict] = field(default_factory=list)  # evaluation rows [{"step", "split", metric...}]
    primary_metric: str = ""
    message: str = ""  # why the run stopped, when it was not the step budget

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["run_dir"] = str(self.run_dir)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["run_dir"] = Path(kw["run_dir"])
        return cls(**kw)

    @property
    def ok(self) -> bool:
        return self.status != "stopped_nan"


# ----- naming --------------------------------------------------------------------------------------------
def jsonable(obj: Any) -> Any:
    """A JSON round-trip of ``obj`` (tuples become lists, paths strings) so hashes and files agree."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def run_hash(resolved: dict[str, Any]) -> str:
    """Eight hex digits of SHA-256 over the resolved (model, model_args, task, task_args, train)."""
    text = json.dumps(resolved, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def default_run_name(task: str, model: str, seed: int, hash8: str) -> str:
    return f"{task}-{model}-s{seed}-{hash8}"


# ----- the output folder ---------------------------------------------------------------------------------
def check_out_dir(out: str | os.PathLike, *, index: bool = True) -> None:
    """Refuse, before any work, an output folder that cannot hold runs: a file, not writable, or holding an
    ``index.sqlite`` that is not a readable run index. Creates nothing."""
    out = Path(out)
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise RunError(f"output folder {out}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunError(f"output folder {out}: {probe} is not writable")
    path = out / INDEX_FILE
    if index and path.exists():
        from seqzoo.training.index import RunIndex

        RunIndex.check_readable(path)


def is_run_dir(d: str | os.PathLike) -> bool:
    """Whether ``d`` holds a seqzoo run (a ``config.json`` with the run keys)."""
    try:
        read_config(d)
    except (OSError, ValueError):
        return False
    return True


def remove_run_dir(d: str | os.PathLike, out: str | os.PathLike) -> None:
    """Delete run folder ``d`` for ``overwrite``: only a seqzoo run directly inside ``out``, never anything else."""
    d, out = Path(d), Path(out)
    if d.is_symlink() or d.resolve().parent != out.resolve():
        raise RunError(f"refusing to delete {d}: overwrite removes only a run folder directly inside {out}")
    if not is_run_dir(d):
        raise RunError(f"refusing to delete {d}: it is not a seqzoo run folder (no valid config.json)")
    import shutil

    shutil.rmtree(d)


# ----- files ---------------------------------------------------------------------------------------------
def read_json(path: Path) -> Any:
    if not path.exists():
        raise RunNotFoundError(f"{path} not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e
    except (UnicodeDecodeError, OSError) as e:
        raise RunError(f"{path}: cannot be read ({e})") from e


def read_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The resolved configuration of a run (``config.json``)."""
    d = Path(run_dir)
    if not d.is_dir():
        raise RunNotFoundError(f"run directory {d} does not exist")
    cfg = read_json(d / CONFIG_FILE)
    if not isinstance(cfg, dict):
        raise RunError(f"{d / CONFIG_FILE} is not a JSON object: not a seqzoo run directory")
    for key, kind in (("model", str), ("model_args", dict), ("task", str), ("task_args", dict), ("train", dict)):
        if not isinstance(cfg.get(key), kind):
            raise RunError(f"{d / CONFIG_FILE} lacks the key {key!r} (a {kind.__name__}): not a seqzoo run directory")
    return cfg


def read_result(run_dir: str | os.PathLike) -> RunResult | None:
    """The ``RunResult`` of a finished (or budget-stopped) run, or None while it has not finished."""
    path = Path(run_dir) / RESULT_FILE
    if not path.exists():
        return None
    return RunResult.from_dict(read_json(path))


def write_result(result: RunResult) -> None:
    atomic_write_json(result.run_dir / RESULT_FILE, result.to_dict())


def index_row(result: RunResult, tags: dict[str, Any]) -> dict[str, Any]:
    """The run-index row of a finished run (its ``config.json`` read from ``result.run_dir``).

    The one rule for every way a run reaches an index: the trainer, a grid worker, a run shipped back by Ray.
    """
    return {
        "run_id": result.run_id, "run_dir": str(Path(result.run_dir).resolve()), "model": result.model,
        "task": result.task, "seed": result.seed, "status": result.status, "steps": result.steps,
        "best_step": result.best_step, "primary_metric": result.primary_metric or None,
        "primary_value": result.valid.get(result.primary_metric), "valid": dict(result.valid),
        "test": dict(result.test), "config": read_config(result.run_dir), "tags": dict(tags),
        "wall_time": result.wall_time,
    }


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl`` (a torn last line, left by a kill, is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class MetricsLog:
    """Append-only ``metrics.jsonl``; ``sync`` makes it durable and returns its size for the checkpoint."""

    def __init__(self, path: Path, *, keep_bytes: int | None) -> None:
        """Open ``path``; ``keep_bytes`` truncates rows written after the checkpoint (None keeps all)."""
        self.path = path
        if keep_bytes is not None and path.exists() and path.stat().st_size > keep_bytes:
            with open(path, "r+b") as f:
                f.truncate(keep_bytes)
                f.flush()
                os.fsync(f.fileno())
        self._f = open(path, "a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        self._f.write(json.dumps(row, default=_json_float) + "\n")
        self._f.flush()

    def sync(self) -> int:
        self._f.flush()
        os.fsync(self._f.fileno())
        return self._f.tell()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def _json_float(v: Any) -> Any:
    if torch.is_tensor(v):
        return v.item()
    return str(v)


def git_commit() -> str | None:
    """The commit of the seqzoo checkout, read from ``.git`` without running git (None if not a checkout)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        git = parent / ".git"
        if git.is_dir():
            try:
                head = (git / "HEAD").read_text().strip()
                if not head.startswith("ref:"):
                    return head
                ref = head.split(None, 1)[1]
                ref_file = git / ref
                if ref_file.exists():
                    return ref_file.read_text().strip()
                packed = git / "packed-refs"
                if packed.exists():
                    for line in packed.read_text().splitlines():
                        if line.endswith(" " + ref):
                            return line.split()[0]
            except OSError:
                return None
            return None
    return None


def environment(device: torch.device, seed: int, world_size: int) -> dict[str, Any]:
    """Versions, platform and hardware that produced a run."""
    import numpy

    from seqzoo._version import __version__

    env = {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seqzoo": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "world_size": world_size,
        "seed": seed,
        "git_commit": git_commit(),
    }
    return env


# ----- reading a run back --------------------------------------------------------------------------------
def load_run(path: str | os.PathLike, *, device: str = "cpu") -> nn.Module:
    """The model of a run with its best weights (else the last checkpoint's), in eval mode. No unpickling.

    The best weights are checked against the size and SHA-256 recorded in ``model.json``; a run whose
    ``model.json`` exists but whose weights are missing or damaged is an error, never a silent fallback.
    """
    from seqzoo.models import create_model, load_model
    from seqzoo.models.serialization import SPEC_FILE, load_state_checked

    d = Path(path)
    if not d.is_dir():
        raise RunNotFoundError(f"run directory {d} does not exist")
    if (d / SPEC_FILE).exists():
        return load_model(d, device=device).eval()
    ckpt = load_checkpoint_weights(d)
    if ckpt is None:
        raise RunNotFoundError(f"{d} holds no weights: neither model.safetensors + model.json nor a checkpoint/")
    cfg = read_config(d)
    model = create_model(cfg["model"], **cfg["model_args"])
    load_state_checked(model, ckpt[1], d / "checkpoint")
    return model.to(device).eval()


PATH_ARGS = ("path",)  # task arguments that name a data file
DIR_ARGS = ("data_dir",)  # task arguments that name a data folder


def _data_roots(data_dir: str | os.PathLike | None) -> list[Path]:
    roots = [Path(data_dir)] if data_dir is not None else []
    if os.environ.get("SEQZOO_DATA"):
        roots.append(Path(os.environ["SEQZOO_DATA"]))
    return [r.expanduser().resolve() for r in roots]


def trusted_task_args(cfg: dict[str, Any], data_dir: str | os.PathLike | None, source: Path) -> dict[str, Any]:
    """A stored run's task arguments with its data locations re-based on the data roots the user gives.

    A ``config.json`` may come from elsewhere (or be edited), so the folders and files it names are not trusted:
    a stored ``data_dir`` is replaced by the user's (``data_dir`` argument, else ``SEQZOO_DATA``, else the
    task's own lookup), and a stored file ``path`` must lie inside one of those roots (a relative one is taken
    inside them).
    """
    from seqzoo.registry_utils import signature_params
    from seqzoo.tasks import TASKS

    args = dict(cfg["task_args"])
    accepted = signature_params(TASKS.get(cfg["task"]).__init__)
    if data_dir is not None and not any(k in accepted for k in (*DIR_ARGS, *PATH_ARGS)):
        raise RunError(f"task {cfg['task']!r} reads no data from disk; it takes no data_dir")
    for key in DIR_ARGS:
        if key in args:
            args.pop(key)
    if data_dir is not None and "data_dir" in accepted:
        args["data_dir"] = str(data_dir)
    roots = _data_roots(data_dir)
    for key in PATH_ARGS:
        value = args.get(key)
        if value is None:
            continue
        p = Path(str(value)).expanduser()
        candidates = [p] if p.is_absolute() else [r / p for r in roots]
        for c in candidates:
            c = c.resolve()
            if any(c == r or r in c.parents for r in roots) and c.exists():
                args[key] = str(c)
                break
        else:
            where = ", ".join(str(r) for r in roots) or "none given"
            raise RunError(f"{source / CONFIG_FILE} names the data file {value!r} ({key}), which is not inside the "
                           f"data folders you gave ({where}); pass --data-dir (data_dir=) with the folder that "
                           f"holds it to allow reading it")
    return args


def run_data_files(path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> list[str]:
    """The data files and folders evaluating the run at ``path`` will read (for telling the user)."""
    cfg = read_config(path)
    args = trusted_task_args(cfg, data_dir, Path(path))
    return [str(args[k]) for k in (*PATH_ARGS, *DIR_ARGS) if args.get(k) is not None]


def task_from_config(cfg: dict[str, Any], data_dir: str | os.PathLike | None, source: Path):
    """The task a run's ``config.json`` describes, its data paths checked (``trusted_task_args``).

    ``source`` is the run folder (for error messages and run-relative files such as a translation run's
    sentencepiece model); ``data_dir`` overrides where data sets are looked up.
    """
    from seqzoo.tasks import TASKS, create_task

    args = trusted_task_args(cfg, data_dir, source)
    for key, name in TASKS.get(cfg["task"]).run_file_args.items():  # the run's own copies (Task.run_file_args)
        args.pop(key, None)  # a path stored in config.json is not trusted; only the run folder's copy is read
        if (Path(source) / name).is_file():
            args[key] = str(Path(source) / name)
    return create_task(cfg["task"], **args)


def evaluate_run(path: str | os.PathLike, split: str = "test", data_dir: str | os.PathLike | None = None, *,
                 batch_size: int | None = None, device: str = "cpu") -> dict[str, float]:
    """Metrics of a run's model on ``split`` of its task, rebuilt from ``config.json``.

    Evaluated the way the trainer does (``evaluation.evaluate_split``: carried state for stateful models on tasks
    with streams, independent examples otherwise).
    """
    from seqzoo.training.evaluation import evaluate_split

    cfg = read_config(path)
    task = task_from_config(cfg, data_dir, Path(path))
    model = load_run(path, device=device)
    bs = batch_size or int(cfg["train"].get("eval_batch_size", 256))
    metrics, _ = evaluate_split(model, task, split, batch_size=bs, device=torch.device(device),
                                bf16=bool(cfg["train"].get("bf16", False)))
    return metrics

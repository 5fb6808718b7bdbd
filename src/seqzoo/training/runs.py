"""Run directories: naming, ``config.json`` / ``env.json`` / ``metrics.jsonl`` / ``result.json``, and
reading a finished run back (``load_run``, ``evaluate_run``) without unpickling anything.
"""

from __future__ import annotations

import hashlib
import inspect
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

from seqzoo.training.checkpoint import atomic_write_json, load_checkpoint_weights

CONFIG_FILE = "config.json"
ENV_FILE = "env.json"
METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"
INDEX_FILE = "index.sqlite"
STATUSES = ("finished", "stopped_nan", "early_stopped", "time_budget")


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


# ----- files ---------------------------------------------------------------------------------------------
def read_json(path: Path) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e


def read_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The resolved configuration of a run (``config.json``)."""
    d = Path(run_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"run directory {d} does not exist")
    cfg = read_json(d / CONFIG_FILE)
    for key in ("model", "model_args", "task", "task_args", "train"):
        if key not in cfg:
            raise ValueError(f"{d / CONFIG_FILE} lacks the key {key!r}: not a seqzoo run directory")
    return cfg


def read_result(run_dir: str | os.PathLike) -> RunResult | None:
    """The ``RunResult`` of a finished (or budget-stopped) run, or None while it has not finished."""
    path = Path(run_dir) / RESULT_FILE
    if not path.exists():
        return None
    return RunResult.from_dict(read_json(path))


def write_result(result: RunResult) -> None:
    atomic_write_json(result.run_dir / RESULT_FILE, result.to_dict())


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

    import seqzoo

    env = {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seqzoo": getattr(seqzoo, "__version__", None),
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
    """The model of a run with its best weights (else the last checkpoint's), in eval mode. No unpickling."""
    from seqzoo.models import create_model, load_model

    d = Path(path)
    if not d.is_dir():
        raise FileNotFoundError(f"run directory {d} does not exist")
    if (d / "model.json").exists() and (d / "model.safetensors").exists():
        return load_model(d, device=device).eval()
    ckpt = load_checkpoint_weights(d)
    if ckpt is None:
        raise FileNotFoundError(f"{d} holds no weights: neither model.safetensors + model.json nor a checkpoint/")
    cfg = read_config(d)
    model = create_model(cfg["model"], **cfg["model_args"])
    model.load_state_dict(ckpt[1], strict=True)
    return model.to(device).eval()


def _task_from_config(cfg: dict[str, Any], data_dir: str | os.PathLike | None):
    from seqzoo.tasks import TASKS, create_task

    task_args = dict(cfg["task_args"])
    if data_dir is not None:
        accepted = inspect.signature(TASKS.get(cfg["task"]).__init__).parameters
        if "data_dir" not in accepted:
            raise ValueError(f"task {cfg['task']!r} reads no data from disk; it takes no data_dir")
        task_args["data_dir"] = str(data_dir)
    return create_task(cfg["task"], **task_args)


def evaluate_run(path: str | os.PathLike, split: str = "test", data_dir: str | os.PathLike | None = None, *,
                 batch_size: int | None = None, device: str = "cpu") -> dict[str, float]:
    """Metrics of a run's model on ``split`` of its task, rebuilt from ``config.json``.

    Evaluated the way the trainer does (``evaluation.evaluate_split``: carried state for stateful models on tasks
    with streams, independent examples otherwise).
    """
    from seqzoo.training.evaluation import evaluate_split

    cfg = read_config(path)
    task = _task_from_config(cfg, data_dir)
    model = load_run(path, device=device)
    bs = batch_size or int(cfg["train"].get("eval_batch_size", 256))
    metrics, _ = evaluate_split(model, task, split, batch_size=bs, device=torch.device(device),
                                bf16=bool(cfg["train"].get("bf16", False)))
    return metrics

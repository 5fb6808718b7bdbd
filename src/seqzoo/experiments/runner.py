"""``reproduce``: run a card's grid × seeds, fill the run index, judge the claims, write a summary.

Each (entry, seed) is one ``seqzoo.training.train`` call tagged ``{"experiment", "scale", "entry",
"job"}``; ``job`` is a hash of everything that defines the run, so with ``resume=True`` a run that
already finished with the same definition is taken from the index instead of being trained again,
and a changed card never mixes stale rows into its results. Grids run in this process
(``workers=1``), in a spawn-based process pool, or on a Ray cluster (``executor="ray"``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from seqzoo.errors import ConfigError
from seqzoo.experiments.card import (
    PLUMBING_SCALE,
    Claim,
    ClaimResult,
    Entry,
    EntryResult,
    ExperimentCard,
    Results,
    Stat,
    format_duration,
)
from seqzoo.experiments.registry import get_experiment

EXECUTORS = ("local", "ray")


# ----------------------------------------------------------------------------------------------
# jobs
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One training run of a grid: an entry at one seed with the scale's train config."""

    experiment: str
    scale: str
    entry: Entry
    seed: int
    train: dict[str, Any]

    @property
    def key(self) -> str:
        """Hash of the run's definition (model, task, their args, the train config with the seed)."""
        blob = json.dumps([self.entry.model, self.entry.model_args, self.entry.task, self.entry.task_args,
                           self.train], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def tags(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "scale": self.scale, "entry": self.entry.id, "job": self.key}

    def to_payload(self, out: str, overwrite: bool = False) -> dict[str, Any]:
        """A plain dict (picklable and JSON-able) that a worker process or Ray task can run.

        ``overwrite`` trains the run again from scratch even if its directory holds a finished run;
        otherwise an interrupted run continues from its last checkpoint.
        """
        return {"model": self.entry.model, "task": self.entry.task, "model_args": dict(self.entry.model_args),
                "task_args": dict(self.entry.task_args), "config": dict(self.train), "out": out,
                "tags": self.tags, "overwrite": overwrite}


def plan(card: ExperimentCard, scale: str, seeds: Sequence[int] | None = None) -> list[Job]:
    """All jobs of ``card`` at ``scale``: entries × seeds, each with its merged TrainConfig fields."""
    sc = card.scale(scale)
    jobs = []
    for entry in card.entries(scale):
        for seed in (sc.seeds if seeds is None else seeds):
            train = {**sc.train, **entry.train, "seed": int(seed)}
            jobs.append(Job(card.name, scale, entry, int(seed), train))
    return jobs


def run_payload(payload: dict[str, Any], threads: int | None = None) -> dict[str, Any]:
    """Train one job (in whatever process this runs) into ``payload["out"]``, index it, return its summary row."""
    res = _train_payload(payload, threads)
    _ensure_indexed(res, payload)
    return _summary(res, payload)


def _train_payload(payload: dict[str, Any], threads: int | None, *, index: bool = True) -> Any:
    import torch

    from seqzoo.training import train

    if threads:
        torch.set_num_threads(threads)
    overwrite = bool(payload.get("overwrite", False))
    return train(payload["model"], payload["task"], model_args=payload["model_args"],
                 task_args=payload["task_args"], config=payload["config"], out=payload["out"], resume=not overwrite,
                 overwrite=overwrite, tags=payload["tags"], index=index)


def _summary(res: Any, payload: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": res.run_id, "run_dir": str(res.run_dir), "seed": res.seed, "status": res.status,
            "steps": res.steps, "valid": dict(res.valid), "test": dict(res.test), "wall_time": res.wall_time,
            "tags": payload["tags"]}


def _ensure_indexed(res: Any, payload: dict[str, Any]) -> None:
    """Give the run's index row this job's tags.

    ``train(resume=True)`` hands back a run that had already finished in the same directory (e.g. one
    trained by ``seqzoo train`` with the same configuration) without indexing it again.
    """
    from seqzoo.training import RunIndex
    from seqzoo.training.runs import index_row

    index = RunIndex(Path(payload["out"]) / "index.sqlite")
    rows = index.query(run_ids=[res.run_id])
    if rows and rows[-1].get("tags", {}).get("job") == payload["tags"]["job"]:
        return
    index.add(index_row(res, payload["tags"]))


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


# ----------------------------------------------------------------------------------------------
# executors
# ----------------------------------------------------------------------------------------------
OnDone = Callable[[dict, "dict | None", "str | None"], None]


def _error_text(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}"


def _run_local(payloads: list[dict], workers: int, on_done: OnDone) -> None:
    """Run payloads here (``workers == 1``) or in a spawn process pool; a failing run does not stop the grid."""
    if workers <= 1:
        for p in payloads:
            try:
                row = run_payload(p)
            except Exception as exc:  # recorded and reported; the other runs go on
                on_done(p, None, _error_text(exc))
            else:
                on_done(p, row, None)
        return
    import multiprocessing as mp

    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(run_payload, p, threads): p for p in payloads}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    exc = fut.exception()
                    on_done(futures[fut], None if exc else fut.result(), _error_text(exc) if exc else None)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


def _require_ray():
    """The ``ray`` module, or a one-line ConfigError saying how to get it (checked before any work starts)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("executor 'ray' needs Ray: pip install 'seqzoo[ray]' (or use --executor local)") from None
    return ray


SHARED_MARK = ".seqzoo-shared-"  # + a token: the file by which Ray workers recognise the driver's shared folder


def run_payload_remote(payload: dict[str, Any], shared_dir: str | None = None, token: str = "") -> dict[str, Any]:
    """A Ray task: train one job where this node may write, and hand back the run's packed files.

    Where a Ray task writes (the one rule): without ``shared_dir`` into a fresh temporary folder of the worker's
    own disk, deleted after the run's files (bytes with their sizes and SHA-256) are packed into the answer; with
    ``shared_dir`` (a folder every node mounts at the same path) into that folder, continuing an interrupted run
    from its checkpoint as a local run does, and only the files' records travel back. Either way the driver alone
    places the run into its ``--out`` (``run_transfer.receive_run``) and indexes it.
    """
    import tempfile

    from seqzoo.training.run_transfer import pack_run

    if shared_dir is None:
        with tempfile.TemporaryDirectory(prefix="seqzoo-ray-") as tmp:
            res = _train_payload({**payload, "out": tmp, "overwrite": False}, 1, index=False)
            return {"summary": _summary(res, payload), "pack": pack_run(res.run_dir), "wrote": str(res.run_dir)}
    if not (Path(shared_dir) / f"{SHARED_MARK}{token}").exists():
        import socket

        raise ConfigError(f"shared folder {shared_dir}: node {socket.gethostname()} does not see the driver's folder "
                          f"there; give a folder every node mounts at the same path, or no shared folder (runs are "
                          f"then shipped back)")
    res = _train_payload({**payload, "out": shared_dir}, 1, index=False)
    return {"summary": _summary(res, payload), "pack": pack_run(res.run_dir, data=False), "wrote": str(res.run_dir)}


def _arrive(answer: dict[str, Any], payload: dict[str, Any], shared_dir: str | None) -> None:
    """Place a Ray task's run into the driver's ``--out``, checked, and index it as a local run is indexed."""
    from seqzoo.training import RunIndex
    from seqzoo.training.run_transfer import receive_run
    from seqzoo.training.runs import index_row

    pack = answer["pack"]
    source = None if shared_dir is None else Path(shared_dir) / str(pack["run_id"])
    res = receive_run(pack, payload["out"], source=source)
    RunIndex(Path(payload["out"]) / "index.sqlite").add(index_row(res, payload["tags"]))


def _ray_error(exc: BaseException) -> str:
    """The user's error inside a failed Ray task (Ray wraps it), as one line."""
    cause = getattr(exc, "cause", None)
    return _error_text(cause if isinstance(cause, BaseException) else exc)


def _run_ray(payloads: list[dict], workers: int, on_done: OnDone, shared_dir: str | Path | None = None) -> None:
    """Run payloads as Ray tasks (one CPU each; the cluster decides the parallelism, ``workers`` is unused).

    Connects to the cluster ``RAY_ADDRESS`` names (else the one running on this machine, else starts one here).
    Finished runs reach the driver's ``--out`` as ``run_payload_remote`` says; a failed task or a run that
    arrives damaged is reported and the grid goes on.
    """
    ray = _require_ray()
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(log_to_driver=False)
        except ConnectionError as exc:
            where = os.environ.get("RAY_ADDRESS") or "on this machine"
            raise ConfigError(f"cannot reach the Ray cluster ({where}): {_error_text(exc)}; start it with `ray start "
                              f"--head` (and `ray start --address` on the workers) or set RAY_ADDRESS") from None
    mark = None
    shared = None if shared_dir is None else str(Path(shared_dir).resolve())
    try:
        token = os.urandom(8).hex()
        if shared is not None:
            Path(shared).mkdir(parents=True, exist_ok=True)
            mark = Path(shared) / f"{SHARED_MARK}{token}"
            mark.write_text("seqzoo: Ray workers check that they see this folder\n")
        remote = ray.remote(num_cpus=1)(run_payload_remote)
        refs = {remote.remote(p, shared, token): p for p in payloads}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                payload = refs[ref]
                try:
                    answer = ray.get(ref)
                except Exception as exc:
                    on_done(payload, None, _ray_error(exc))
                    continue
                try:
                    _arrive(answer, payload, shared)
                except Exception as exc:
                    on_done(payload, None, _error_text(exc))
                else:
                    on_done(payload, answer["summary"], None)
    finally:
        if mark is not None:
            mark.unlink(missing_ok=True)
        if started:
            ray.shutdown()


# ----------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------
def collect(card: ExperimentCard, scale: str, index_path: str | Path, jobs: Sequence[Job] | None = None) -> Results:
    """Aggregate the index rows of ``jobs`` (default: the card's current plan) into ``Results``.

    Only rows whose ``job`` tag matches a current job count (rows of an older card definition are
    ignored); when a job ran twice the newest row wins.
    """
    from seqzoo.training import RunIndex

    jobs = list(jobs) if jobs is not None else plan(card, scale)
    wanted = {j.key: j for j in jobs}
    rows = RunIndex(index_path).query(tags={"experiment": card.name, "scale": scale}) if Path(index_path).exists() \
        else []
    latest: dict[str, dict] = {}
    for row in rows:
        key = (row.get("tags") or {}).get("job")
        if key in wanted and (key not in latest or str(row.get("created", "")) >= str(latest[key].get("created", ""))):
            latest[key] = row
    return aggregate(card, [(wanted[k], r) for k, r in latest.items()])


def _derived(card: ExperimentCard, job: Job, row: dict) -> dict[str, float]:
    """``card.derive`` of one run's directory ({} when the card has none or the directory is gone)."""
    run_dir = Path(row.get("run_dir") or "")
    if card.derive is None or not row.get("run_dir") or not run_dir.is_dir():
        return {}
    return {k: float(v) for k, v in card.derive(job.entry, run_dir).items()}


def aggregate(card: ExperimentCard, done: Sequence[tuple[Job, dict]]) -> Results:
    """Mean ± std across seeds of every valid/test metric (and ``card.derive`` numbers), per grid entry."""
    by_entry: dict[str, list[tuple[Job, dict]]] = {}
    order: list[Entry] = []
    for job, row in sorted(done, key=lambda jr: jr[0].seed):
        if job.entry.id not in by_entry:
            by_entry[job.entry.id] = []
            order.append(job.entry)
        by_entry[job.entry.id].append((job, row))
    out = []
    for entry in order:
        pairs = [(j, {**r, "derived": _derived(card, j, r)}) for j, r in by_entry[entry.id]]
        metrics: dict[str, dict[str, Stat]] = {}
        for split in ("valid", "test", "derived"):
            names = sorted({m for _, r in pairs for m in (r.get(split) or {})})
            for m in names:
                vals = [float(r[split][m]) for _, r in pairs if m in (r.get(split) or {})]
                metrics.setdefault(split, {})[m] = Stat.of(vals)
        out.append(EntryResult(entry, metrics, [r["run_id"] for _, r in pairs], [j.seed for j, _ in pairs]))
    return Results(out, card.metric, card.split)


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------
@dataclass
class Report:
    """What ``reproduce`` returns: the aggregated results, each claim's verdict and the files written."""

    card: ExperimentCard
    scale: str
    results: Results
    claims: list[tuple[Claim, ClaimResult]]
    out_dir: Path
    runs_total: int = 0
    runs_trained: int = 0
    runs_skipped: int = 0
    failures: list[str] = field(default_factory=list)
    wall_time: float = 0.0
    files: dict[str, Path] = field(default_factory=dict)
    # the card's observations: judged like claims, printed and written in their own table, never counted
    observations: list[tuple[Claim, ClaimResult]] = field(default_factory=list)

    @property
    def verdicts(self) -> dict[str, str]:
        """The verdict of every claim (observations are not verdicts: see ``observations``)."""
        return {c.name: r.verdict for c, r in self.claims}

    def format_claims(self) -> str:
        lines = []
        if self.scale == PLUMBING_SCALE:
            lines.append(f"scale {self.scale!r} checks the plumbing (a few steps per run): the verdicts below are "
                         "not results")
        for kind, judged in (("", self.claims), (f"{OBSERVATION}, ", self.observations)):
            for claim, res in judged:
                lines.append(f"[{kind}{res.shown_verdict(self.scale)}] {claim.name}: {claim.text}")
                if res.numbers:
                    lines.append("    numbers: " + json.dumps(res.numbers, default=str))
                if res.detail:
                    lines.append("    " + res.detail)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        sc = self.card.scale(self.scale)
        return {
            "experiment": self.card.name, "title": self.card.title, "paper": self.card.paper,
            "description": self.card.description, "scale": self.scale, "scale_note": sc.note,
            "plumbing_only": self.scale == PLUMBING_SCALE, "expected_seconds": sc.expected_seconds,
            "seeds": list(sc.seeds), "train": sc.train, "metric": self.card.metric, "split": self.card.split,
            "claims": [{"name": c.name, "text": c.text, **r.to_dict()} for c, r in self.claims],
            "observations": [{"name": c.name, "text": c.text, **r.to_dict()} for c, r in self.observations],
            "results": self.results.to_dict(),
            "runs": {"total": self.runs_total, "trained": self.runs_trained, "skipped": self.runs_skipped,
                     "failed": self.failures},
            "wall_time": self.wall_time, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "plots": {k: str(v) for k, v in self.files.items() if k.startswith("plot:")},
        }

    def to_markdown(self, image_dir: Path | None = None, heading: str = "#") -> str:
        """Markdown summary; plot links are relative to ``image_dir`` (default: the summary's folder)."""
        sc = self.card.scale(self.scale)
        base = image_dir or self.out_dir
        lines = [f"{heading} {self.card.title} (`{self.card.name}`, scale `{self.scale}`)", "",
                 f"Paper: {self.card.paper}", "", self.card.description, "",
                 f"Scale: {sc.note} Seeds: {list(sc.seeds)}. Runs: {len(self.results)} entries, "
                 f"{self.runs_total} runs"
                 + (f", wall time {self.wall_time:.0f} s" if self.wall_time else "") + ".", "",
                 f"{heading}# Claims", "", CLAIMS_HEAD, "|---|---|---|"]
        lines += [_row(c, r, self.scale) for c, r in self.claims]
        lines += [""] + [f"- `{c.name}`: {r.detail}" for c, r in self.claims if r.detail] + [""]
        if self.observations:
            lines += [f"{heading}# Observations", "", "Judged like claims but not counted in held / not held (e.g. a "
                      "check the paper does not make, kept for its numbers).", "", OBSERVATIONS_HEAD, "|---|---|---|"]
            lines += [_row(c, r, self.scale) for c, r in self.observations]
            lines += [""] + [f"- `{c.name}`: {r.detail}" for c, r in self.observations if r.detail] + [""]
        for key, path in self.files.items():
            if key.startswith("plot:"):
                rel = os.path.relpath(path, base)
                lines += [f"![{key[5:]}]({rel})", ""]
        for table in self.card.tables:
            lines += [f"{heading}# {table.name}", ""] + ([table.caption, ""] if table.caption else []) \
                + [table.text(self.results), ""]
        lines += [f"{heading}# Results ({self.card.split} {self.card.metric}, mean ± std over seeds)", "",
                  f"| entry | model | model args | task args | n | {self.card.metric} |",
                  "|---|---|---|---|---|---|"]
        for er in self.results.entries:
            st = er.metrics.get(self.card.split, {}).get(self.card.metric)
            lines.append(f"| {er.entry.id} | {er.entry.model} | {_args(er.entry.model_args)} | "
                         f"{_args(er.entry.task_args)} | {st.n if st else 0} | {st if st else '—'} |")
        return "\n".join(lines) + "\n"


# The table heads of a summary page; ``seqzoo report --pages`` (scoreboard.py) reads the tables by them.
CLAIMS_HEAD = "| claim | verdict | numbers |"
OBSERVATIONS_HEAD = "| observation | outcome | numbers |"
OBSERVATION = "observation"  # the tag of an observation's outcome where claims and observations are listed together


def _row(claim: Claim, res: ClaimResult, scale: str) -> str:
    """One table row: ``| **name**: text | VERDICT | k=v, ... |`` (pipes in the numbers become slashes)."""
    nums = ", ".join(f"{k}={v}" for k, v in res.numbers.items()).replace("|", "/")
    return f"| **{claim.name}**: {claim.text} | {res.shown_verdict(scale)} | {nums} |"


def _args(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


def write_outputs(report: Report, out_dir: Path) -> None:
    """summary.json, summary.md and the card's plots into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for p in report.card.plots:
        if not report.results.entries:
            break
        path = out_dir / f"{p.name}.png"
        p.draw(report.results, path)
        report.files[f"plot:{p.name}"] = path
    summary = out_dir / "summary.json"
    summary.write_text(json.dumps(_finite(report.to_dict()), indent=2, default=str, allow_nan=False) + "\n")
    md = out_dir / "summary.md"
    md.write_text(report.to_markdown())
    report.files["summary.json"], report.files["summary.md"] = summary, md


def _finite(o: Any) -> Any:
    """The same structure with NaN/inf replaced by None, so summary.json is strict JSON."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def reproduce(name: str, scale: str = "small", out: str | Path = "runs", workers: int | None = None,
              executor: str = "local", resume: bool = True, progress: bool = True,
              echo: Callable[[str], None] | None = print, shared_dir: str | Path | None = None) -> Report:
    """Run experiment ``name`` at ``scale``: train the missing runs, judge the claims, write the summary.

    Runs go to ``out`` (index ``out/index.sqlite``); the summary, Markdown and plots to
    ``out/<name>/<scale>/``. ``workers`` defaults to the scale's own setting. With ``resume`` a job
    already in the index is not trained again. ``echo`` receives the printed lines (None = silent).
    ``shared_dir`` (executor ``ray`` only): a folder every Ray node mounts at the same path, where the tasks
    write their runs instead of shipping them back (``run_payload_remote``).
    """
    card = get_experiment(name)
    card.scale(scale)
    if executor not in EXECUTORS:
        raise ConfigError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    workers = card.scale(scale).workers if workers is None else int(workers)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if shared_dir is not None and executor != "ray":
        raise ConfigError(f"a shared folder (--shared-dir {shared_dir}) is for executor 'ray'; executor "
                          f"{executor!r} writes into --out directly")
    if executor == "ray":
        _require_ray()
    try:
        import seqzoo.training  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"reproduce needs seqzoo.training and its dependencies ({exc})") from exc
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / "index.sqlite"
    jobs = plan(card, scale)
    t0 = time.perf_counter()
    done_keys: set[str] = set()
    if resume:
        done_keys = {k for k in (_row_job(r) for r in _index_rows(index_path, card.name, scale)) if k}
    todo = [j for j in jobs if j.key not in done_keys]
    say = echo or (lambda s: None)
    say(f"{card.name} / {scale}: {len(jobs)} runs ({len(jobs) - len(todo)} already in {index_path}), "
        f"{len(todo)} to train with {workers} worker(s) [{executor}]; expected wall time of the whole scale: "
        f"{card.scale(scale).expected}")
    failures: list[str] = []
    if todo:
        bar = _progress_bar(len(todo), f"{card.name}/{scale}", progress)

        def on_done(payload: dict, row: dict | None, error: str | None) -> None:
            tag = f"{payload['tags']['entry']} s{payload['config']['seed']}"
            if error is not None:
                failures.append(f"{tag}: {error}")
                bar.write(f"run failed: {tag}: {error}")
            bar.set_postfix_str(f"last: {tag}", refresh=False)
            bar.update(1)

        payloads = [j.to_payload(str(out), overwrite=not resume) for j in todo]
        try:
            if executor == "ray":
                _run_ray(payloads, workers, on_done, shared_dir)
            else:
                _run_local(payloads, workers, on_done)
        finally:
            bar.close()
    results = collect(card, scale, index_path, jobs)
    missing = len(jobs) - sum(len(e.run_ids) for e in results.entries)
    if missing and not failures:
        failures.append(f"{missing} run(s) have no row in {index_path}")
    report = Report(card, scale, results, card.evaluate(results), out / card.name / scale, runs_total=len(jobs),
                    runs_trained=len(todo), runs_skipped=len(jobs) - len(todo), failures=failures,
                    wall_time=time.perf_counter() - t0, observations=card.observe(results))
    write_outputs(report, report.out_dir)
    say(report.format_claims())
    for table in card.tables:
        say(f"{table.name}:\n{table.text(results)}")
    if failures:
        say(f"{len(failures)} run(s) failed; the claims above use the runs that finished:")
        for f in failures[:20]:
            say("    " + f)
    say(f"summary: {report.files['summary.md']} ({report.wall_time:.1f} s)")
    return report


def _index_rows(index_path: Path, experiment: str, scale: str) -> list[dict]:
    if not index_path.exists():
        return []
    from seqzoo.training import RunIndex

    return RunIndex(index_path).query(tags={"experiment": experiment, "scale": scale})


def _row_job(row: dict) -> str | None:
    return (row.get("tags") or {}).get("job")


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def write(self, s: str) -> None:
        print(s, file=sys.stderr)

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


class _LogProgress(_NullBar):
    """Progress for logs (stderr is not a terminal): a plain line every ``interval`` seconds and at the end.

    ``<desc>: 3/18 runs done, elapsed 2 min, ETA 8 min (last: <entry> s0)``; no carriage returns.
    """

    def __init__(self, total: int, desc: str, interval: float = 60.0, stream: Any = None) -> None:
        self.total, self.desc, self.done, self.last = total, desc, 0, ""
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._tick, args=(interval,), daemon=True)
        self._thread.start()

    def line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        eta = format_duration(elapsed / self.done * (self.total - self.done)) if self.done else "unknown"
        last = f" (last: {self.last})" if self.last else ""
        return (f"{self.desc}: {self.done}/{self.total} runs done, elapsed {format_duration(elapsed)}, "
                f"ETA {eta}{last}")

    def _emit(self) -> None:
        with self._lock:
            print(self.line(), file=self.stream, flush=True)

    def _tick(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._emit()

    def update(self, n: int = 1) -> None:
        self.done += n

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:
        self.last = s.removeprefix("last: ")

    def write(self, s: str) -> None:
        with self._lock:
            print(s, file=self.stream, flush=True)

    def close(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._emit()


LOG_INTERVAL = 60.0  # seconds between the plain progress lines written off a terminal


def _progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar on a terminal, a periodic plain log line off one (pipes, nohup, CI), nothing when disabled."""
    interval = LOG_INTERVAL
    if not enabled:
        return _NullBar()
    if not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return _LogProgress(total, desc, interval)
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the train extra
        return _LogProgress(total, desc, interval)
    return tqdm(total=total, desc=desc, unit="run", file=sys.stderr, dynamic_ncols=True)

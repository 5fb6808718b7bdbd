"""Compare finished runs: group by configuration (ignoring the seed), mean ± std of a metric, curves.

Runs are found from run directories, glob patterns or output folders (searched for ``config.json``),
or from the SQLite run index. A group is one (model, model_args, task, task_args, train config
without the seed) combination, so seeds of one configuration are pooled and nothing else is.
"""

from __future__ import annotations

import glob
import json
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqzoo.errors import ConfigError, RunError, RunNotFoundError
from seqzoo.experiments.card import Stat

# TrainConfig fields that do not change what a run computes (kept out of the grouping key)
_COSMETIC = ("seed", "progress", "tensorboard", "log_every", "checkpoint_every", "eval_batch_size")


@dataclass
class RunRecord:
    """One run as compare needs it: its resolved config, final metrics and where its curves are."""

    run_dir: Path | None
    run_id: str
    model: str
    task: str
    model_args: dict[str, Any]
    task_args: dict[str, Any]
    train: dict[str, Any]
    status: str
    valid: dict[str, float]
    test: dict[str, float]

    @property
    def seed(self) -> int:
        return int(self.train.get("seed", 0))

    def group_key(self) -> str:
        train = {k: v for k, v in self.train.items() if k not in _COSMETIC}
        return json.dumps([self.model, self.model_args, self.task, self.task_args, train], sort_keys=True, default=str)

    def metric(self, name: str, split: str) -> float | None:
        src = self.test if split == "test" else self.valid
        v = src.get(name)
        return None if v is None else float(v)

    def curve(self, metric: str, split: str = "valid") -> tuple[list[int], list[float]]:
        """(steps, values) of ``metric`` on ``split`` from ``metrics.jsonl`` (empty when absent)."""
        if self.run_dir is None:
            return [], []
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return [], []
        points: dict[int, float] = {}
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a kill mid-write
                if row.get("split") == split and metric in row and "step" in row:
                    points[int(row["step"])] = float(row[metric])
        steps = sorted(points)
        return steps, [points[s] for s in steps]


@dataclass
class Group:
    """Runs of one configuration and the statistic of the compared metric across their seeds."""

    label: str
    runs: list[RunRecord]
    stat: Stat | None
    config: dict[str, Any] = field(default_factory=dict)


def _record_from_dir(d: Path) -> RunRecord:
    try:
        cfg = json.loads((d / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunError(f"{d / 'config.json'}: cannot read the run config ({exc})") from None
    res_path = d / "result.json"
    res: dict[str, Any] = {}
    if res_path.exists():
        try:
            res = json.loads(res_path.read_text())
        except json.JSONDecodeError as exc:
            raise RunError(f"{res_path}: malformed JSON ({exc})") from None
    return RunRecord(run_dir=d, run_id=str(res.get("run_id", d.name)), model=cfg.get("model", "?"),
                     task=cfg.get("task", "?"), model_args=cfg.get("model_args", {}) or {},
                     task_args=cfg.get("task_args", {}) or {}, train=cfg.get("train", {}) or {},
                     status=str(res.get("status", "unfinished")), valid=res.get("valid", {}) or {},
                     test=res.get("test", {}) or {})


def _record_from_row(row: dict[str, Any]) -> RunRecord:
    cfg = row.get("config") or {}
    run_dir = Path(row["run_dir"]) if row.get("run_dir") else None
    return RunRecord(run_dir=run_dir, run_id=str(row.get("run_id")), model=row.get("model") or cfg.get("model", "?"),
                     task=row.get("task") or cfg.get("task", "?"), model_args=cfg.get("model_args", {}) or {},
                     task_args=cfg.get("task_args", {}) or {}, train=cfg.get("train", {}) or {},
                     status=str(row.get("status", "?")), valid=row.get("valid") or {}, test=row.get("test") or {})


def find_run_dirs(specs: Sequence[str]) -> list[Path]:
    """Run directories named by ``specs``: a run directory, a glob pattern, or a folder holding runs."""
    found: dict[Path, None] = {}
    for spec in specs:
        paths = [Path(p) for p in sorted(glob.glob(spec))] if glob.has_magic(spec) else [Path(spec)]
        if not paths or not any(p.exists() for p in paths):
            raise RunNotFoundError(f"no run directory matches {spec!r}")
        for p in paths:
            if (p / "config.json").is_file():
                found[p.resolve()] = None
            elif p.is_dir():
                for cfg in sorted(p.rglob("config.json")):
                    if "checkpoint" not in cfg.parent.parts[-1:]:
                        found[cfg.parent.resolve()] = None
    return list(found)


def load_runs(specs: Sequence[str] = (), index: str | Path | None = None, finished_only: bool = True
              ) -> list[RunRecord]:
    """Run records from directories/patterns, or from an index (filtered to ``specs`` when given).

    With an index, a spec matches a row by run id or when the row's run directory lies inside it.
    """
    if index is not None:
        from seqzoo.training import RunIndex

        if not Path(index).exists():
            raise RunNotFoundError(f"run index {index} does not exist")
        rows = RunIndex(index).query()
        records = [_record_from_row(r) for r in rows]
        if specs:
            dirs = [Path(p).resolve() for s in specs for p in (glob.glob(s) if glob.has_magic(s) else [s])]
            ids = set(specs)

            def keep(r: RunRecord) -> bool:
                if r.run_id in ids:
                    return True
                rd = r.run_dir.resolve() if r.run_dir is not None else None
                return rd is not None and any(rd == d or d in rd.parents for d in dirs)

            records = [r for r in records if keep(r)]
    else:
        if not specs:
            raise ConfigError("give run directories, glob patterns or an output folder (or --index)")
        records = [_record_from_dir(d) for d in find_run_dirs(specs)]
    if finished_only:
        records = [r for r in records if r.status != "unfinished"]
    if not records:
        raise RunNotFoundError(f"no finished runs found in {list(specs) or index}")
    return records


def available_metrics(records: Sequence[RunRecord], split: str) -> list[str]:
    return sorted({m for r in records for m in (r.test if split == "test" else r.valid)})


def group_runs(records: Sequence[RunRecord], metric: str, split: str = "test", *, require: bool = True
               ) -> list[Group]:
    """Groups of runs that differ only in the seed, each with mean ± std of ``metric`` on ``split``.

    A metric no run has on ``split`` is an error unless ``require=False`` (then every ``stat`` is None: a
    train-only metric such as ``loss`` can still be plotted from the curves).
    """
    if split not in ("valid", "test"):
        raise ConfigError(f"split must be 'valid' or 'test', got {split!r}")
    if require and metric not in available_metrics(records, split):
        from seqzoo.registry_utils import unknown_message

        raise ConfigError(unknown_message(f"{split} metric", metric, available_metrics(records, split) or ["(none)"]))
    buckets: dict[str, list[RunRecord]] = {}
    for r in records:
        buckets.setdefault(r.group_key(), []).append(r)
    labels = _labels([runs[0] for runs in buckets.values()])
    groups = []
    for runs, label in zip(buckets.values(), labels):
        vals = [v for v in (r.metric(metric, split) for r in runs) if v is not None]
        first = runs[0]
        groups.append(Group(label, sorted(runs, key=lambda r: r.seed), Stat.of(vals) if vals else None,
                            {"model": first.model, "model_args": first.model_args, "task": first.task,
                             "task_args": first.task_args}))
    return sorted(groups, key=lambda g: g.label)


def _labels(reps: Sequence[RunRecord]) -> list[str]:
    """Short labels: model and task, plus only the arguments that differ between groups."""
    flat = []
    for r in reps:
        train = {k: v for k, v in r.train.items() if k not in _COSMETIC}
        d = {**{f"model.{k}": v for k, v in r.model_args.items()}, **{f"task.{k}": v for k, v in r.task_args.items()},
             **{f"train.{k}": v for k, v in train.items()}}
        flat.append(d)
    keys = sorted({k for d in flat for k in d})
    varying = [k for k in keys if len({json.dumps(d.get(k), sort_keys=True, default=str) for d in flat}) > 1]
    out = []
    for r, d in zip(reps, flat):
        extra = " ".join(f"{k.split('.', 1)[1]}={d[k]}" for k in varying if k in d)
        out.append(f"{r.model} on {r.task}" + (f" [{extra}]" if extra else ""))
    return out


TABLE_WIDTH = 120  # the table's lines stay within this many characters; long group labels wrap


def format_table(groups: Sequence[Group], metric: str, split: str = "test", width: int = TABLE_WIDTH) -> str:
    """A plain-text table: group, n, mean ± std (sample std over seeds), min, max, seeds.

    Lines fit in ``width`` characters: a group label longer than its column wraps onto continuation lines
    (indented), and a long seed list is abbreviated to its first and last seeds.
    """
    header = ["group", "n", f"{split} {metric} mean ± std", "min", "max", "seeds"]
    private = any(r.train.get("privacy") for g in groups for r in g.runs)
    if private:  # DP-SGD runs: the (eps, delta) they spent, next to the metric
        header.insert(3, "eps (delta)")
    rows = []
    for g in groups:
        if g.stat is None:
            rows.append([g.label, "0", "—", *([privacy_text(g.runs)] if private else []), "", "", ""])
            continue
        seeds = [r.seed for r in g.runs]
        seed_text = (",".join(map(str, seeds)) if len(seeds) <= 6
                     else f"{seeds[0]},{seeds[1]},…,{seeds[-1]} ({len(seeds)})")
        rows.append([g.label, str(g.stat.n), f"{g.stat.mean:.4g} ± {g.stat.std:.2g}",
                     *([privacy_text(g.runs)] if private else []), f"{min(g.stat.values):.4g}",
                     f"{max(g.stat.values):.4g}", seed_text])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    rest = sum(widths[1:]) + 2 * (len(widths) - 1)
    widths[0] = max(len(header[0]), min(widths[0], width - rest))
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    for r in rows:
        label = textwrap.wrap(r[0], widths[0], subsequent_indent="  ", break_on_hyphens=False) or [""]
        lines.append(fmt.format(label[0], *r[1:]))
        lines += label[1:]
    return "\n".join(line.rstrip() for line in lines)


def privacy_text(runs: Sequence[RunRecord]) -> str:
    """``eps (delta)`` a group of DP-SGD runs spent (the test metric ``dp_epsilon``, else the planned ε of the
    config; ``*`` marks runs without a DP guarantee, e.g. the SIDP replication); ``—`` for non-private runs."""
    p = next((r.train.get("privacy") for r in runs if r.train.get("privacy")), None)
    if not p:
        return "—"
    spent = [r.test["dp_epsilon"] for r in runs if "dp_epsilon" in r.test]
    eps = max(spent) if spent else p.get("epsilon")
    mark = "" if p.get("guarantee", True) else "*"
    return f"{eps:.3g}{mark} ({p.get('delta', float('nan')):g})" if eps is not None else "?"


def _task_of(group: Group) -> str:
    return str(group.config.get("task", "?"))


def curves_figure(groups: Sequence[Group], metric: str, split: str = "valid", band: str = "minmax"):
    """The learning-curve figure: one subplot per task (each with its own y scale), the legend below them.

    Each group is a mean line over its runs (aligned on the steps they share) with a min–max (or ±1 std) band;
    curves with few points carry markers, so a group evaluated once still shows as a dot. Returns
    ``(figure, split)``, where split falls back to ``"train"`` when no run has ``metric`` on ``split``.
    """
    curves = {id(g): [r.curve(metric, split) for r in g.runs] for g in groups}
    if not any(s for runs in curves.values() for s, _ in runs) and split != "train":
        split = "train"
        curves = {id(g): [r.curve(metric, split) for r in g.runs] for g in groups}
    if not any(s for runs in curves.values() for s, _ in runs):
        raise ConfigError(f"no {metric!r} rows in the runs' metrics.jsonl to plot")
    from seqzoo.experiments.plots import mean_curve, pyplot

    plt = pyplot()
    tasks = sorted({_task_of(g) for g in groups if any(s for s, _ in curves[id(g)])})
    ncols = min(3, len(tasks))
    nrows = -(-len(tasks) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[len(tasks):]:
        fig.delaxes(ax)
    by_task = dict(zip(tasks, axes.flat))
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    handles, labels = [], []
    for i, g in enumerate(groups):
        curve = mean_curve(curves[id(g)], band)
        if curve is None:
            continue
        common, mean, lo, hi, n = curve
        ax = by_task[_task_of(g)]
        color = colors[i % len(colors)]
        (line,) = ax.plot(common, mean, color=color, marker="o" if len(common) <= 20 else None, markersize=3)
        if lo is not None:
            ax.fill_between(common, lo, hi, alpha=0.2, color=color)
        handles.append(line)
        labels.append("\n".join(textwrap.wrap(f"{g.label} (n={n})", 60, subsequent_indent="  ")))
    for task, ax in by_task.items():
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel(f"{split} {metric}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=1 if len(labels) < 4 else 2,
               fontsize=7, frameon=False)
    return fig, split


def plot_groups(groups: Sequence[Group], metric: str, path: str | Path, split: str = "valid",
                band: str = "minmax") -> Path:
    """Write :func:`curves_figure` to ``path`` (``.png`` is added when it has no suffix); returns the file written."""
    from seqzoo.experiments.plots import pyplot

    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    fig, _ = curves_figure(groups, metric, split, band)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # "tight" keeps the legend below the axes in the file
    pyplot().close(fig)
    return path

"""Experiment cards: the grid a paper ran, its budget at three scales, and its claims as predicates.

A card is pure data plus small functions, so importing every card costs nothing: no torch training,
no plotting happens at import. ``seqzoo.experiments.runner.reproduce`` turns a card into runs, and
``Results`` (mean ± std across seeds per grid entry) is what every claim predicate reads.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqzoo.errors import ConfigError
from seqzoo.registry_utils import unknown_message

SCALES = ("tiny", "small", "medium", "paper")
# The one quiet training setting of every card run: no per-run progress bar (``reproduce`` shows one for the
# grid) and no TensorBoard files. ``Scale`` puts it under its own ``train`` fields, so a card never repeats it.
QUIET = {"progress": False, "tensorboard": False}
# At this scale the runs are a few steps long: their verdicts check the plumbing, they are not results.
PLUMBING_SCALE = "tiny"
PLUMBING_VERDICT = "tiny: not a result"


def format_duration(seconds: float) -> str:
    """``42 s``, ``9 min``, ``1 h 25 min``: a wall time as a person reads it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _fmt_label(value: Any) -> str:
    return str(value).replace("/", "_").replace(" ", "")


@dataclass(frozen=True)
class Entry:
    """One cell of a grid: a model preset with arguments on a task with arguments.

    ``labels`` are the coordinates of the cell that claims and plots look up (``{"arch": "rnn_tanh",
    "H": 4, "X": 5}``); ``train`` overrides the scale's TrainConfig fields for this cell only.
    """

    model: str
    task: str
    model_args: dict[str, Any] = field(default_factory=dict)
    task_args: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """A readable, stable identifier (``rnn_tanh-H4-X5``) used as the ``entry`` tag of its runs."""
        if self.labels:
            return "-".join(f"{k}{_fmt_label(v)}" if k != "arch" else _fmt_label(v) for k, v in self.labels.items())
        blob = json.dumps([self.model, self.model_args, self.task, self.task_args, self.train], sort_keys=True,
                          default=str)
        return f"{self.task}-{self.model}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "model": self.model, "model_args": dict(self.model_args), "task": self.task,
                "task_args": dict(self.task_args), "labels": dict(self.labels), "train": dict(self.train)}

    def __hash__(self) -> int:  # dict fields are unhashable; the id is unique within a grid
        return hash(self.id)


@dataclass
class Scale:
    """The budget of one scale: TrainConfig fields, seeds, and the grid (None = the card's full grid).

    ``grid`` may be a list of entries or a zero-argument function that builds them (large grids are
    built only when asked for). ``workers`` is the default process count for ``reproduce``.
    ``expected_seconds`` is the measured wall time of the whole scale on 2 cores (None: never run);
    ``reproduce`` prints it before it starts. ``QUIET`` is put under ``train``.
    """

    train: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    grid: Sequence[Entry] | Callable[[], Sequence[Entry]] | None = None
    workers: int = 1
    note: str = ""
    expected_seconds: float | None = None

    def __post_init__(self) -> None:
        self.train = {**QUIET, **self.train}

    @property
    def expected(self) -> str:
        """The expected wall time as text (``"about 9 min on 2 cores"``; ``"not measured"`` when unknown)."""
        if self.expected_seconds is None:
            return "not measured"
        return f"about {format_duration(self.expected_seconds)} on 2 cores"


@dataclass
class ClaimResult:
    """The verdict of one claim: ``held`` is None when the results cannot decide it (``detail`` says why)."""

    held: bool | None
    numbers: dict[str, Any] = field(default_factory=dict)
    detail: str = ""

    @property
    def verdict(self) -> str:
        return "UNDECIDED" if self.held is None else ("HELD" if self.held else "NOT HELD")

    def shown_verdict(self, scale: str) -> str:
        """The verdict as printed: at the plumbing scale it is not a result (``tiny: not a result (HELD)``)."""
        return f"{PLUMBING_VERDICT} ({self.verdict})" if scale == PLUMBING_SCALE else self.verdict

    def to_dict(self) -> dict[str, Any]:
        return {"held": self.held, "verdict": self.verdict, "numbers": self.numbers, "detail": self.detail}


@dataclass
class Claim:
    """A sentence from the paper and a predicate ``check(results) -> ClaimResult`` that tests it."""

    name: str
    text: str
    check: Callable[[Results], ClaimResult]

    def evaluate(self, results: Results) -> ClaimResult:
        """Run the predicate; a predicate that fails on incomplete results yields an undecided verdict."""
        try:
            out = self.check(results)
        except MissingResult as exc:
            return ClaimResult(None, {}, f"cannot evaluate: {exc}")
        if not isinstance(out, ClaimResult):
            raise TypeError(f"claim {self.name!r}: check must return a ClaimResult, got {type(out).__name__}")
        return out


# Why a claim did not hold, one of four kinds (issue 20): the budget was too small, the claim as the card
# words it is not what the paper says, our implementation differs from the paper's (found; fixed or not), or it does
# not replicate.
# ``open`` marks a NOT HELD whose cause is not yet determined: the evidence says what is known so far.
CAUSE_KINDS = ("budget", "claim wording", "implementation", "does not replicate", "open")


@dataclass(frozen=True)
class Cause:
    """The cause of a NOT HELD verdict at ``scales``, with the evidence (a sentence and the page section)."""

    kind: str
    evidence: str
    scales: tuple[str, ...] = ("small",)

    def __post_init__(self) -> None:
        if self.kind not in CAUSE_KINDS:
            raise ValueError(f"cause kind must be one of {CAUSE_KINDS}, got {self.kind!r}")
        if not self.evidence.strip():
            raise ValueError("a cause needs its evidence")


@dataclass
class Plot:
    """A figure of a card: ``draw(results, path)`` writes a PNG (matplotlib is imported inside ``draw``)."""

    name: str
    draw: Callable[[Results, Path], None]
    caption: str = ""


@dataclass
class Table:
    """A Markdown table of a card computed from its results (``render(results) -> markdown lines``), e.g. per-task
    numbers beside the paper's column; ``reproduce`` prints it after the claims and the summary page shows it."""

    name: str
    render: Callable[[Results], str]
    caption: str = ""

    def text(self, results: Results) -> str:
        """The rendered table, or one line saying why the results cannot fill it."""
        try:
            return self.render(results)
        except MissingResult as exc:
            return f"(table {self.name!r} cannot be filled: {exc})"


@dataclass
class ExperimentCard:
    """Everything needed to re-run a paper's comparison and judge its claims."""

    name: str
    title: str
    paper: str
    description: str
    grid: Sequence[Entry] | Callable[[], Sequence[Entry]]
    scales: dict[str, Scale]
    claims: list[Claim]
    metric: str
    split: str = "test"
    plots: list[Plot] = field(default_factory=list)
    # Numbers read from a finished run's directory (its learning curve in metrics.jsonl, its saved model ...):
    # ``derive(entry, run_dir) -> {name: value}``, aggregated over seeds like metrics, under split ``"derived"``.
    derive: Callable[[Entry, Path], dict[str, float]] | None = None
    # Why a claim was NOT HELD in a committed result (``docs/results/<card>-<scale>.md``), by claim name;
    # ``seqzoo report --pages`` puts it in the scoreboard's cause column.
    causes: dict[str, Cause] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    # Checks kept for their numbers but not counted as claims (issue 20: a check the paper does not make, kept
    # beside the re-worded claim). Judged and printed like claims, in their own table; never in held / not held,
    # so they have no cause.
    observations: list[Claim] = field(default_factory=list)

    def __post_init__(self) -> None:
        unknown = [s for s in self.scales if s not in SCALES]
        if unknown:
            raise ValueError(f"card {self.name!r}: scales must be among {SCALES}, got {unknown}")
        names = [c.name for c in self.claims]
        every = names + [o.name for o in self.observations]
        if len(set(every)) != len(every):
            raise ValueError(f"card {self.name!r}: claim and observation names must be unique, got {every}")
        stray = sorted(set(self.causes) - set(names))
        if stray:
            raise ValueError(f"card {self.name!r}: causes name unknown claims {stray}; claims are {names} "
                             "(an observation is not counted, so it has no cause)")

    def scale(self, name: str) -> Scale:
        if name not in self.scales:
            raise ConfigError(unknown_message(f"scale of experiment {self.name!r}", name, self.scales))
        return self.scales[name]

    def entries(self, scale: str | None = None) -> list[Entry]:
        """The grid of ``scale`` (the card's full grid when the scale does not restrict it)."""
        grid = self.grid if scale is None or self.scale(scale).grid is None else self.scale(scale).grid
        entries = list(grid() if callable(grid) else grid)
        ids = [e.id for e in entries]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"card {self.name!r}: duplicate entry ids {dup[:5]}")
        return entries

    def evaluate(self, results: Results) -> list[tuple[Claim, ClaimResult]]:
        """The verdict of every claim (the counted ones; ``observe`` judges the observations)."""
        return [(claim, claim.evaluate(results)) for claim in self.claims]

    def observe(self, results: Results) -> list[tuple[Claim, ClaimResult]]:
        """The outcome of every observation, judged like a claim but not counted."""
        return [(obs, obs.evaluate(results)) for obs in self.observations]

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "paper": self.paper, "description": self.description,
                "metric": self.metric, "scales": list(self.scales), "claims": [c.name for c in self.claims],
                "observations": [o.name for o in self.observations]}

    def describe(self) -> dict[str, Any]:
        """What ``seqzoo list experiments`` shows: claims (short names), models, tasks, and per scale the number
        of runs and the expected wall time. Builds the tiny and small grids (no training, no data read); the
        paper scale's run count is left out (its grids can be large and are defined, not run)."""
        grid = self.entries("small" if "small" in self.scales else None)
        return {"name": self.name, "title": self.title, "claims": [c.name for c in self.claims],
                "observations": [o.name for o in self.observations],
                "models": sorted({e.model for e in grid}), "tasks": sorted({e.task for e in grid}),
                "scales": {name: {"runs": None if name == "paper" else len(self.entries(name)) * len(sc.seeds),
                                  "seeds": len(sc.seeds), "expected_seconds": sc.expected_seconds,
                                  "expected": sc.expected}
                           for name, sc in self.scales.items()}}


# ----------------------------------------------------------------------------------------------
# aggregated results
# ----------------------------------------------------------------------------------------------
class MissingResult(LookupError):
    """A claim asked for a grid cell or metric that has no result (the claim becomes undecided)."""


@dataclass
class Stat:
    """Mean ± sample standard deviation (ddof=1; 0 for a single value) over seeds."""

    mean: float
    std: float
    n: int
    values: list[float]

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat:
        vals = [float(v) for v in values]
        if not vals:
            raise ValueError("Stat.of needs at least one value")
        finite = [v for v in vals if math.isfinite(v)]
        if len(finite) != len(vals):
            return cls(float("nan"), float("nan"), len(vals), vals)
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return cls(statistics.fmean(vals), std, len(vals), vals)

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {self.std:.2g}" if self.n > 1 else f"{self.mean:.4g}"

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n, "values": self.values}


@dataclass
class EntryResult:
    """The aggregated metrics of one grid entry: ``metrics[split][metric] -> Stat``."""

    entry: Entry
    metrics: dict[str, dict[str, Stat]]
    run_ids: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**self.entry.to_dict(), "seeds": self.seeds, "run_ids": self.run_ids,
                "metrics": {s: {m: st.to_dict() for m, st in ms.items()} for s, ms in self.metrics.items()}}


class Results:
    """Per-entry results of a card; claims look cells up by their labels (``results.mean(arch="gru", X=3)``)."""

    def __init__(self, entries: Sequence[EntryResult], metric: str, split: str = "test") -> None:
        self.entries = list(entries)
        self.metric = metric
        self.split = split

    def __len__(self) -> int:
        return len(self.entries)

    def find(self, **labels: Any) -> EntryResult | None:
        """The entry whose labels include all of ``labels`` (None when absent; error when ambiguous)."""
        hits = [e for e in self.entries if all(e.entry.labels.get(k) == v for k, v in labels.items())]
        if len(hits) > 1:
            raise ValueError(f"labels {labels} match {len(hits)} entries; give more labels")
        return hits[0] if hits else None

    def stat(self, metric: str | None = None, split: str | None = None, **labels: Any) -> Stat:
        """The Stat of a cell; raises MissingResult (-> undecided claim) when the cell or metric is absent."""
        metric, split = metric or self.metric, split or self.split
        hit = self.find(**labels)
        if hit is None:
            raise MissingResult(f"no result for {labels}")
        try:
            return hit.metrics[split][metric]
        except KeyError:
            raise MissingResult(f"no {split} {metric!r} for {labels}") from None

    def mean(self, metric: str | None = None, split: str | None = None, **labels: Any) -> float:
        return self.stat(metric, split, **labels).mean

    def get(self, metric: str | None = None, split: str | None = None, **labels: Any) -> Stat | None:
        """The Stat of a cell, or None when the cell or its metric is absent (for plots, which skip gaps)."""
        hit = self.find(**labels)
        return None if hit is None else hit.metrics.get(split or self.split, {}).get(metric or self.metric)

    def has(self, **labels: Any) -> bool:
        return self.find(**labels) is not None

    def label_values(self, key: str, **labels: Any) -> list[Any]:
        """Sorted distinct values of label ``key`` among entries matching ``labels``."""
        vals = {e.entry.labels[key] for e in self.entries
                if key in e.entry.labels and all(e.entry.labels.get(k) == v for k, v in labels.items())}
        return sorted(vals)

    @classmethod
    def from_records(cls, records: Sequence[dict[str, Any]], metric: str, split: str = "test",
                     model: str = "model", task: str = "task") -> Results:
        """Build results from plain rows ``{label: value, ..., metric: value or [values per seed]}``.

        Meant for tests and for claims over published numbers: every key other than ``metric`` is a label.
        """
        out = []
        for rec in records:
            if metric not in rec:
                raise ValueError(f"record {rec} has no {metric!r}")
            labels = {k: v for k, v in rec.items() if k != metric}
            vals = rec[metric] if isinstance(rec[metric], (list, tuple)) else [rec[metric]]
            entry = Entry(model=str(labels.get("arch", model)), task=task, labels=labels)
            out.append(EntryResult(entry, {split: {metric: Stat.of(vals)}}, seeds=list(range(len(vals)))))
        return cls(out, metric, split)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "split": self.split, "entries": [e.to_dict() for e in self.entries]}

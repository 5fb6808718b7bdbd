"""Figures for cards, comparisons and reports (matplotlib with the Agg backend, imported on call).

A card's figure is a row of panels (``panels``) filled by the panel helpers and written by ``save``:

* ``bars``: one bar per cell (mean ± std) with a dot per seed, plus reference lines (``Ref``: a baseline,
  chance, a paper's number, a threshold);
* ``grouped_bars``: the same for several series side by side per group (models × tasks);
* ``curves``: lines over steps / sizes / learning rates, with a ±std band when the points are ``Stat``s;
* ``heatmap`` (a whole figure): a grid of cells coloured by their mean.

``cells`` collects the ``(name, Stat | None)`` pairs of one panel from the results (gaps stay gaps).
Nothing here is imported by ``import seqzoo``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqzoo.errors import ConfigError
from seqzoo.experiments.card import Results, Stat

PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#999999")


@dataclass(frozen=True)
class Ref:
    """A horizontal reference line of a panel (``style``: a matplotlib line style)."""

    value: float
    label: str = ""
    style: str = "--"
    color: str = "black"


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed, safe in workers)."""
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - matplotlib is in the train extra
        raise ImportError("plots need matplotlib: pip install 'seqzoo[train]'") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def panels(n: int = 1, *, width: float = 3.6, height: float = 3.3, rows: int = 1,
           ratios: Sequence[float] | None = None) -> tuple[Any, list[Any]]:
    """A figure with ``rows`` x ``n`` panels: ``(fig, axes)`` with ``axes`` a flat list (row by row)."""
    plt = pyplot()
    kw = {"gridspec_kw": {"width_ratios": list(ratios)}} if ratios else {}
    fig, axes = plt.subplots(rows, max(1, n), figsize=(width * max(1, n), height * rows), squeeze=False, **kw)
    return fig, [ax for row in axes for ax in row]


def save(fig: Any, path: str | Path) -> Path:
    """Lay out, write ``fig`` as a PNG at ``path`` (folders created) and close it."""
    fig.tight_layout()
    return _save(fig, pyplot(), path)


def cells(results: Results, key: str, values: Sequence[Any], *, metric: str | None = None, split: str | None = None,
          names: Mapping[Any, str] | None = None, **labels: Any) -> list[tuple[str, Stat | None]]:
    """``(name, Stat or None)`` for each value of label ``key`` (with the other ``labels`` fixed)."""
    return [((names or {}).get(v, str(v)), results.get(metric, split, **labels, **{key: v})) for v in values]


def _finish(ax: Any, refs: Sequence[Ref], *, title: str = "", ylabel: str = "", xlabel: str = "",
            ylim: tuple[float | None, float | None] | None = None, log_y: bool = False, log_x: bool = False,
            legend: bool = True, legend_loc: str = "best") -> None:
    for r in refs:
        ax.axhline(r.value, color=r.color, ls=r.style, lw=0.8, label=r.label or None)
    if log_y:
        ax.set_yscale("log")
    if log_x:
        ax.set_xscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(title, fontsize=9)
    if ylabel:
        ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3, axis="both" if log_x or xlabel else "y")
    if legend and ax.get_legend_handles_labels()[0]:  # an empty panel gets no legend
        ax.legend(fontsize=7, loc=legend_loc)


def bars(ax: Any, items: Sequence[tuple[str, Stat | None]], *, colors: Sequence[str] | Mapping[str, str] | None = None,
         refs: Sequence[Ref] = (), annotate: bool = False, **finish: Any) -> None:
    """One bar per ``(name, Stat)`` (mean ± std, a dot per seed; None leaves a gap) and reference lines."""
    for i, (name, st) in enumerate(items):
        if st is None:
            continue
        color = colors.get(name, PALETTE[i % len(PALETTE)]) if isinstance(colors, Mapping) else \
            (colors or PALETTE)[i % len(colors or PALETTE)]
        seed_bar(ax, i, st, color)
        if annotate and math.isfinite(st.mean):
            ax.annotate(f"{st.mean:.3g}", (i, st.mean), ha="center", va="bottom", fontsize=7, xytext=(0, 2),
                        textcoords="offset points")
    ax.set_xticks(range(len(items)), [n for n, _ in items], fontsize=8)
    _finish(ax, refs, **finish)


def grouped_bars(ax: Any, groups: Sequence[str], series: Mapping[str, Sequence[Stat | float | None]], *,
                 colors: Mapping[str, str] | None = None, refs: Sequence[Ref] = (), **finish: Any) -> None:
    """Bars of several ``series`` side by side in each group (``series[name][i]`` belongs to ``groups[i]``;
    a plain number is one value, None or NaN leaves a gap)."""
    width = 0.8 / max(1, len(series))
    for k, (name, stats) in enumerate(series.items()):
        color = (colors or {}).get(name, PALETTE[k % len(PALETTE)])
        first = True
        for j, st in enumerate(stats):
            if st is not None and not isinstance(st, Stat):
                st = None if math.isnan(st) else Stat.of([st])
            if st is None:
                continue
            x = j + (k - (len(series) - 1) / 2) * width
            ax.bar(x, st.mean, width, yerr=st.std if st.n > 1 else None, color=color, capsize=2, alpha=0.85,
                   label=name if first else None)
            ax.plot([x] * len(st.values), st.values, "k.", ms=3)
            first = False
    ax.set_xticks(range(len(groups)), list(groups), fontsize=8)
    _finish(ax, refs, **finish)


def curves(ax: Any, series: Mapping[str, tuple[Sequence[float], Sequence[float | Stat | None]]], *,
           colors: Mapping[str, str] | None = None, refs: Sequence[Ref] = (), marker: str = "o",
           **finish: Any) -> None:
    """One line per series ``name -> (xs, ys)``; ``Stat`` points get a ±std band, None points are skipped."""
    for k, (name, (xs, ys)) in enumerate(series.items()):
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
        if not pts:
            continue
        color = (colors or {}).get(name, PALETTE[k % len(PALETTE)])
        mean = [y.mean if isinstance(y, Stat) else float(y) for _, y in pts]
        ax.plot([x for x, _ in pts], mean, marker=marker or None, ms=4, color=color, label=name)
        stats = [y for _, y in pts if isinstance(y, Stat)]
        if len(stats) == len(pts) and any(s.n > 1 for s in stats):
            ax.fill_between([x for x, _ in pts], [s.mean - s.std for s in stats], [s.mean + s.std for s in stats],
                            color=color, alpha=0.2)
    _finish(ax, refs, **finish)


def heatmap(results: Results, path: str | Path, *, rows: Sequence[dict[str, Any]], row_label: Callable[[dict], str],
            col_key: str, metric: str | None = None, split: str | None = None, vmin: float = 0.0,
            vmax: float | None = None, title: str = "", colorbar_label: str = "", annotate: bool = True) -> Path:
    """A grid of cells: one row per label set in ``rows``, one column per value of ``col_key``.

    Cells without a result are left blank (grey), so a partial grid still renders.
    """
    plt = pyplot()
    import numpy as np

    metric = metric or results.metric
    cols = sorted({e.entry.labels[col_key] for e in results.entries if col_key in e.entry.labels})
    grid = np.full((len(rows), len(cols)), np.nan)
    for i, row in enumerate(rows):
        for j, c in enumerate(cols):
            hit = results.find(**row, **{col_key: c})
            if hit is not None:
                stat = hit.metrics.get(split or results.split, {}).get(metric)
                if stat is not None:
                    grid[i, j] = stat.mean
    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(cols) + 2.5), max(2.0, 0.45 * len(rows) + 1.4)))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), [str(c) for c in cols])
    ax.set_yticks(range(len(rows)), [row_label(r) for r in rows])
    ax.set_xlabel(col_key)
    if title:
        ax.set_title(title)
    if annotate and len(cols) <= 24:
        top = vmax if vmax is not None else np.nanmax(grid) if np.isfinite(grid).any() else 1.0
        for i in range(len(rows)):
            for j in range(len(cols)):
                v = grid[i, j]
                if math.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if v > 0.6 * top else "white")
    fig.colorbar(im, ax=ax, label=colorbar_label or metric)
    fig.tight_layout()
    return _save(fig, plt, path)


def mean_curve(runs: Sequence[tuple[Sequence[int], Sequence[float]]], band: str = "minmax"
               ) -> tuple[list[int], Any, Any, Any, int] | None:
    """Runs' ``(steps, values)`` aligned on the steps they share: ``(steps, mean, lo, hi, n_runs)`` with a min–max
    (or ±std) band (``lo``/``hi`` None for one run); None when no run has a point. Runs evaluated at different steps
    fall back to the first run."""
    if band not in ("minmax", "std"):
        raise ConfigError(f"band must be 'minmax' or 'std', got {band!r}")
    import numpy as np

    runs = [r for r in runs if r[0]]
    if not runs:
        return None
    common = sorted(set(runs[0][0]).intersection(*[set(s) for s, _ in runs[1:]]))
    if not common:
        common, runs = list(runs[0][0]), runs[:1]
    mat = np.array([[dict(zip(s, v))[c] for c in common] for s, v in runs], dtype=float)
    mean = mat.mean(0)
    if len(runs) == 1:
        return common, mean, None, None, 1
    if band == "minmax":
        return common, mean, mat.min(0), mat.max(0), len(runs)
    sd = mat.std(0, ddof=1)
    return common, mean, mean - sd, mean + sd, len(runs)


def seed_bar(ax, x: float, stat: Any, color: str, *, width: float = 0.8) -> None:
    """One bar at ``x`` for a ``Stat`` (mean, ± std when there are several seeds) with a dot per seed."""
    ax.bar(x, stat.mean, width, yerr=stat.std if stat.n > 1 else None, color=color, capsize=3, alpha=0.85)
    ax.plot([x] * len(stat.values), stat.values, "k.", ms=5)


def _save(fig, plt, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

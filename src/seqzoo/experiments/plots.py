"""Figures for cards, comparisons and reports (matplotlib with the Agg backend, imported on call).

Every function writes one PNG and returns its path; nothing here is imported by ``import seqzoo``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from seqzoo.experiments.card import Results


def _pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed, safe in workers)."""
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - matplotlib is in the train extra
        raise ImportError("plots need matplotlib: pip install 'seqzoo[train]'") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def heatmap(results: Results, path: str | Path, *, rows: Sequence[dict[str, Any]], row_label: Callable[[dict], str],
            col_key: str, metric: str | None = None, split: str | None = None, vmin: float = 0.0,
            vmax: float | None = None, title: str = "", colorbar_label: str = "", annotate: bool = True) -> Path:
    """A grid of cells: one row per label set in ``rows``, one column per value of ``col_key``.

    Cells without a result are left blank (grey), so a partial grid still renders.
    """
    plt = _pyplot()
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


def learning_curves(curves: dict[str, list[tuple[list[int], list[float]]]], path: str | Path, *, metric: str,
                    band: str = "minmax", title: str = "", log_y: bool = False) -> Path:
    """Mean curve per group with a min–max (or ±std) band across its runs.

    ``curves[label]`` is a list of ``(steps, values)`` per run; runs are aligned on the steps they share.
    """
    if band not in ("minmax", "std"):
        raise ValueError(f"band must be 'minmax' or 'std', got {band!r}")
    plt = _pyplot()
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, runs in curves.items():
        runs = [r for r in runs if r[0]]
        if not runs:
            continue
        common = sorted(set(runs[0][0]).intersection(*[set(s) for s, _ in runs[1:]]))
        if not common:  # runs evaluated at different steps: fall back to the first run's steps
            common = list(runs[0][0])
            runs = runs[:1]
        mat = np.array([[dict(zip(s, v))[c] for c in common] for s, v in runs], dtype=float)
        mean = mat.mean(0)
        line, = ax.plot(common, mean, label=f"{label} (n={len(runs)})")
        if len(runs) > 1:
            if band == "minmax":
                lo, hi = mat.min(0), mat.max(0)
            else:
                sd = mat.std(0, ddof=1)
                lo, hi = mean - sd, mean + sd
            ax.fill_between(common, lo, hi, alpha=0.2, color=line.get_color())
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    if log_y:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, plt, path)


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

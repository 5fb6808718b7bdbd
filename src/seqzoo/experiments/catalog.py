"""What the CLI shows about the registered cards: ``seqzoo list experiments`` and ``seqzoo reproduce --help``.

Each card's ``describe()`` gives the data (claims, models, tasks, runs and expected wall time per scale); this
module only lays it out as text that fits the terminal.
"""

from __future__ import annotations

import shutil
import textwrap
from typing import Any

from seqzoo.experiments.registry import get_experiment, list_experiments


def describe_all(pattern: str | None = None) -> list[dict[str, Any]]:
    """``card.describe()`` of every registered card matching the glob ``pattern``."""
    return [get_experiment(name).describe() for name in list_experiments(pattern)]


def _scale_text(name: str, info: dict[str, Any]) -> str:
    if name == "paper" and info["expected_seconds"] is None:
        return "paper: defined, not run"
    runs = f" {info['runs']} runs" if info["runs"] is not None else ""
    return f"{name}:{runs}, {info['expected'].removeprefix('about ')}"


def format_experiments(pattern: str | None = None, width: int | None = None) -> str:
    """One block per card: name and title, scales with runs and expected time, claims (and observations), models
    and tasks."""
    width = width or shutil.get_terminal_size((100, 20)).columns
    blocks = []
    for d in describe_all(pattern):
        rows = [("scales", "; ".join(_scale_text(n, i) for n, i in d["scales"].items())),
                ("claims", ", ".join(d["claims"]))]
        if d["observations"]:  # judged and printed like claims, not counted
            rows.append(("observations", ", ".join(d["observations"])))
        rows += [("models", ", ".join(d["models"])), ("tasks", ", ".join(d["tasks"]))]
        lines = textwrap.wrap(f"{d['name']} — {d['title']}", width=max(40, width), subsequent_indent="    ")
        for key, text in rows:
            lines += textwrap.wrap(text, width=max(40, width), initial_indent=f"  {key}: ",
                                   subsequent_indent=" " * (len(key) + 4))
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def expected_times(pattern: str | None = None) -> str:
    """``<card>  tiny <time>, small <time>`` per card: the expected wall times on 2 cores (for ``--help``)."""
    rows = []
    for name in list_experiments(pattern):
        card = get_experiment(name)
        times = ", ".join(f"{s} {sc.expected.removeprefix('about ').removesuffix(' on 2 cores')}"
                          for s, sc in card.scales.items() if sc.expected_seconds is not None)
        rows.append(f"  {name:<14} {times or 'not measured'}")
    return "expected wall time of a whole scale on 2 cores (measured; paper scales are defined, not run):\n" \
        + "\n".join(rows)

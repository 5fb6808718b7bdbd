"""``render_report``: every card that has results in a run index, as one Markdown page with PNG plots.

Results are read back from the index (``collect``), so the page reflects what was actually run at each
scale; claims are re-judged from those rows, never copied from an older summary.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from seqzoo.errors import RunNotFoundError
from seqzoo.experiments.registry import get_experiment, list_experiments


def render_report(out: str | Path = "runs", output: str | Path | None = None,
                  echo: Callable[[str], None] | None = None) -> Path:
    """Write ``output`` (Markdown; default ``<out>/results.md``, inside the run folder) and its plots into
    ``<output without suffix>/``; return the page path."""
    from seqzoo.experiments.runner import OBSERVATION, Report, collect, write_outputs

    out = Path(out)
    output = out / "results.md" if output is None else Path(output)
    index_path = out / "index.sqlite"
    if not index_path.exists():
        raise RunNotFoundError(f"no run index at {index_path}; run `seqzoo reproduce NAME --out {out}` first")
    image_dir = output.with_suffix("")
    sections: list[str] = []
    verdict_rows: list[str] = []
    for name in list_experiments():
        card = get_experiment(name)
        for scale in card.scales:
            results = collect(card, scale, index_path)
            if not results.entries:
                continue
            runs = sum(len(e.run_ids) for e in results.entries)
            report = Report(card, scale, results, card.evaluate(results), image_dir / f"{name}-{scale}",
                            runs_total=runs, wall_time=_summary_wall_time(out / name / scale / "summary.json"),
                            observations=card.observe(results))
            write_outputs(report, report.out_dir)
            sections.append(report.to_markdown(image_dir=output.parent, heading="##"))
            for claim, res in report.claims:
                verdict_rows.append(f"| {name} | {scale} | {claim.name} | {res.shown_verdict(scale)} |")
            for obs, res in report.observations:  # listed, marked, not counted
                verdict_rows.append(f"| {name} | {scale} | {obs.name} ({OBSERVATION}) | {res.shown_verdict(scale)} |")
            if echo:
                echo(f"{name} / {scale}: {len(results.entries)} entries, {runs} runs")
    if not sections:
        raise RunNotFoundError(f"the index {index_path} holds no runs of any experiment card "
                                f"({', '.join(list_experiments())})")
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    head = ["# seqzoo results", "", f"Generated {stamp} from `{index_path}` by `seqzoo report`.", "",
            "| experiment | scale | claim | verdict |", "|---|---|---|---|", *verdict_rows, ""]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(head) + "\n" + "\n".join(sections))
    return output


def _summary_wall_time(path: Path) -> float:
    try:
        return float(json.loads(path.read_text()).get("wall_time") or 0.0)
    except (OSError, ValueError, AttributeError):
        return 0.0

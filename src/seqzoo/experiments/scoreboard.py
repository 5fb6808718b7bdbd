"""The scoreboard: every card × scale with its verdict counts, wall time, page link and the cause of each
NOT HELD claim, generated from the committed result pages (``docs/results/<card>-<scale>.md``).

The README's paper table links here instead of repeating numbers by hand. The verdicts are read from the
claims table the runner wrote into each page (the first one: a page may keep an earlier run below it); the
causes come from the cards (``ExperimentCard.causes``), so a NOT HELD without a recorded cause shows as such.
A card's observations (judged like claims, not counted) come from the observations table of the same run and are
listed in their own section, outside every count.
The output has no time stamp, so a test can check that the committed page is current.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from seqzoo.errors import DataError, RunNotFoundError
from seqzoo.experiments.card import CAUSE_KINDS, SCALES, format_duration
from seqzoo.experiments.registry import get_experiment, list_experiments
from seqzoo.experiments.runner import CLAIMS_HEAD, OBSERVATIONS_HEAD
from seqzoo.files import atomic_write_bytes

VERDICTS = ("HELD", "NOT HELD", "UNDECIDED")
_CLAIM_ROW = re.compile(r"^\| \*\*(?P<name>[A-Za-z0-9_.\-]+)\*\*: .* \| (?P<verdict>HELD|NOT HELD|UNDECIDED) \|")
_WALL = re.compile(r"wall time (?P<s>\d+(?:\.\d+)?) s\b")
_SEEDS = re.compile(r"Seeds: \[(?P<seeds>[0-9, ]*)\]")
MIN_SEEDS = 3  # the project's rule: at least 3 seeds before a verdict; fewer is flagged as provisional


@dataclass
class PageResult:
    """The verdicts of one committed result page."""

    card: str
    scale: str
    path: Path
    verdicts: dict[str, str] = field(default_factory=dict)
    wall_time: float | None = None
    seeds: int | None = None  # seeds of the run the verdicts come from (the runner's "Seeds: [...]" line)
    observations: dict[str, str] = field(default_factory=dict)  # name -> outcome; never counted

    def count(self, verdict: str) -> int:
        return sum(v == verdict for v in self.verdicts.values())


def _rows(path: Path, lines: list[str], head: int, what: str) -> dict[str, str]:
    """``{name: verdict}`` of the table whose head line is ``lines[head]`` (rows until the first non-table line)."""
    out = {}
    for lineno, line in enumerate(lines[head + 2:], head + 3):
        if not line.startswith("|"):
            break
        m = _CLAIM_ROW.match(line)
        if m is None:
            raise DataError(f"{path}:{lineno}: {what} row without '| **name**: text | VERDICT |'")
        out[m["name"]] = m["verdict"]
    return out


def parse_page(path: Path, card: str, scale: str) -> PageResult:
    """Read the first claims table, the observations table of the same run, and the first runner wall time."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out = PageResult(card, scale, path)
    heads = [i for i, line in enumerate(lines) if line.strip() == CLAIMS_HEAD]
    if not heads:
        raise DataError(f"{path}: no claims table (a line '{CLAIMS_HEAD}') — is it a result page?")
    out.verdicts = _rows(path, lines, heads[0], "a claims-table")
    run_end = heads[1] if len(heads) > 1 else len(lines)  # an earlier run kept below has its own tables
    obs = next((i for i in range(heads[0], run_end) if lines[i].strip() == OBSERVATIONS_HEAD), None)
    if obs is not None:
        out.observations = _rows(path, lines, obs, "an observations-table")
    wall = _WALL.search("\n".join(lines))
    out.wall_time = float(wall["s"]) if wall else None
    # the runner writes its "Seeds: [...]" line above its claims table: the last one before the first table
    seeds = [m for line in lines[:heads[0]] for m in _SEEDS.finditer(line)]
    out.seeds = len([v for v in seeds[-1]["seeds"].split(",") if v.strip()]) if seeds else None
    return out


def pages(results_dir: Path) -> Iterator[PageResult]:
    """Every ``<card>-<scale>.md`` page of a registered card in ``results_dir``, in card then scale order."""
    for name in list_experiments():
        for scale in SCALES:
            path = results_dir / f"{name}-{scale}.md"
            if path.is_file():
                yield parse_page(path, name, scale)


def render_scoreboard(results_dir: str | Path) -> str:
    """The scoreboard page as Markdown (links relative to ``results_dir``)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise RunNotFoundError(f"no result folder at {results_dir}")
    found = {(p.card, p.scale): p for p in pages(results_dir)}
    rows, causes, observations = [], [], []
    totals = dict.fromkeys(VERDICTS, 0)
    missing = 0
    few_seeds: list[str] = []  # "card scale" of pages whose verdicts rest on fewer than MIN_SEEDS seeds
    few_verdicts = 0
    kinds = dict.fromkeys(CAUSE_KINDS, 0)
    for name in list_experiments():
        card = get_experiment(name)
        claim_names = [c.name for c in card.claims]
        texts = {o.name: o.text for o in card.observations}
        for scale in card.scales:
            page = found.get((name, scale))
            if page is None:
                if scale in ("small", "medium"):
                    rows.append(f"| `{name}` | {scale} | not run | | | | | | {card.scale(scale).expected} |")
                continue
            stale = sorted(set(page.verdicts) - set(claim_names))
            if stale:
                raise DataError(f"{page.path}: claims {stale} are not claims of card {name!r} ({claim_names}); "
                                f"re-run `seqzoo reproduce {name} --scale {scale}` and commit its page")
            stale = sorted(set(page.observations) - set(texts))
            if stale:
                raise DataError(f"{page.path}: observations {stale} are not observations of card {name!r} "
                                f"({sorted(texts)}); re-run `seqzoo reproduce {name} --scale {scale}` and commit its "
                                "page")
            for v in VERDICTS:
                totals[v] += page.count(v)
            for obs, outcome in page.observations.items():
                observations.append(f"| `{name}` | {scale} | `{obs}` | {outcome} | {texts[obs].replace('|', '/')} |")
            wall = format_duration(page.wall_time) if page.wall_time else "—"
            seeds = "—" if page.seeds is None else str(page.seeds)
            if page.seeds is not None and page.seeds < MIN_SEEDS:
                seeds += " (provisional)"
                few_seeds.append(f"`{name}` {scale}")
                few_verdicts += page.count("HELD") + page.count("NOT HELD")
            rows.append(f"| `{name}` | {scale} | {page.count('HELD')} | {page.count('NOT HELD')} | "
                        f"{page.count('UNDECIDED')} | {seeds} | [{page.path.name}]({page.path.name}) | {wall} | "
                        f"{card.scale(scale).expected} |")
            for claim, verdict in page.verdicts.items():
                if verdict != "NOT HELD":
                    continue
                cause = card.causes.get(claim)
                if cause is None or scale not in cause.scales:
                    missing += 1
                    causes.append(f"| `{name}` | {scale} | `{claim}` | **no cause recorded** | |")
                else:
                    kinds[cause.kind] += 1
                    causes.append(f"| `{name}` | {scale} | `{claim}` | {cause.kind} | "
                                  f"{cause.evidence.replace('|', '/')} |")
    head = ["# seqzoo scoreboard", "",
            "Generated by `seqzoo report --pages docs/results` from the committed result pages; do not edit by "
            "hand. Each page holds the run's command, budget, plots and numbers. `tiny` runs check plumbing and "
            "are not listed; a card × scale without a page is `not run`.", "",
            f"Claims over all pages: {totals['HELD']} held, {totals['NOT HELD']} not held, "
            f"{totals['UNDECIDED']} undecided. Causes of the NOT HELD: "
            + ", ".join(f"{n} {k}" for k, n in kinds.items()) + f"; {missing} without a recorded cause. "
            f"Observations (judged, not counted): {len(observations)}.", "",
            f"Seeds: a verdict needs at least {MIN_SEEDS}. {few_verdicts} of the held / not held verdicts above come "
            f"from runs with fewer ({', '.join(few_seeds) or 'none'}): they are provisional until those scales are "
            "re-run with 3 seeds.", "",
            "*recorded* is the wall time the runner wrote into the page (often on a loaded machine); *expected* "
            "is the card's stated wall time on 2 cores (`seqzoo reproduce --help`; the page says whether it was "
            "measured on idle cores).", "",
            "| card | scale | held | not held | undecided | seeds | page | recorded | expected |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows, "", "## Causes of the NOT HELD claims", "",
            "One of four: *budget* (a longer run or a still-falling curve moves it toward held), *claim wording* "
            "(the paper's own table disagrees with the claim as the card words it), *implementation* (a "
            "difference found and fixed), *does not replicate* (all of these ruled out). The evidence is in "
            "the card's page. *open*: not yet determined; the evidence says what is known so far.", "",
            "| card | scale | claim | cause | evidence |", "|---|---|---|---|---|", *causes, "", "## Observations", "",
            "Checks a card keeps for their numbers but does not count as claims (e.g. a claim the paper does not "
            "make, replaced by a re-worded one; issue 20). Their outcome is not in any count above.", "",
            "| card | scale | observation | outcome | what it checks |", "|---|---|---|---|---|", *observations]
    return "\n".join(head) + "\n"


def write_scoreboard(results_dir: str | Path, output: str | Path | None = None) -> Path:
    """Write the scoreboard (default ``<results_dir>/README.md``) atomically; return its path."""
    output = Path(results_dir) / "README.md" if output is None else Path(output)
    atomic_write_bytes(output, render_scoreboard(results_dir).encode("utf-8"))
    return output

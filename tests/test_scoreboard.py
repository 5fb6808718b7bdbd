"""The scoreboard (``seqzoo report --pages``): parsing result pages, causes, and the committed page being current."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqzoo.errors import DataError
from seqzoo.experiments.card import Cause, Claim, ClaimResult, ExperimentCard, Scale
from seqzoo.experiments.registry import get_experiment
from seqzoo.experiments.scoreboard import parse_page, render_scoreboard, write_scoreboard

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


def _page(rows: list[str], wall: str = "Runs: 3 entries, 9 runs, wall time 125 s.") -> str:
    return "\n".join(["# a card", "", wall, "", "## Claims", "", "| claim | verdict | numbers |", "|---|---|---|",
                      *rows, "", "- detail", ""])


def test_parse_page_reads_first_claims_table_and_wall_time(tmp_path: Path) -> None:
    text = _page(["| **a_b**: A text. | HELD | x=1 |", "| **c**: C | with | pipes. | NOT HELD | y=2 |"])
    older = _page(["| **a_b**: A text. | NOT HELD | x=0 |"], wall="wall time 9 s")
    path = tmp_path / "x-small.md"
    path.write_text(text + "\n## Earlier run\n\n" + older)
    page = parse_page(path, "x", "small")
    assert page.verdicts == {"a_b": "HELD", "c": "NOT HELD"}
    assert page.wall_time == 125.0
    assert (page.count("HELD"), page.count("NOT HELD"), page.count("UNDECIDED")) == (1, 1, 0)


def test_parse_page_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "x-small.md"
    bad.write_text(_page(["| **a**: A | HELD | x=1 |", "| a row someone edited | maybe | |"]))
    with pytest.raises(DataError, match=r"x-small\.md:10: a claims-table row"):
        parse_page(bad, "x", "small")
    none = tmp_path / "y-small.md"
    none.write_text("# no table here\n")
    with pytest.raises(DataError, match="no claims table"):
        parse_page(none, "y", "small")


def test_scoreboard_counts_causes_and_flags_missing_ones(tmp_path: Path) -> None:
    card = get_experiment("s5")
    names = [c.name for c in card.claims]
    assert "lstm_stays_on_adding_plateau" in card.causes
    rows = [f"| **{n}**: t | {'NOT HELD' if n == 'lstm_stays_on_adding_plateau' else 'HELD'} | |" for n in names]
    (tmp_path / "s5-small.md").write_text(_page(rows))
    # A NOT HELD claim of a card with no recorded cause for it.
    mem = get_experiment("memorization")
    mrows = [f"| **{c.name}**: t | NOT HELD | |" for c in mem.claims]
    (tmp_path / "memorization-small.md").write_text(_page(mrows))
    text = render_scoreboard(tmp_path)
    assert "| `s5` | small | 3 | 1 | 0 | [s5-small.md](s5-small.md) | 2 min |" in text
    assert "| `s5` | small | `lstm_stays_on_adding_plateau` | claim wording |" in text
    assert f"{len(mem.claims)} without a recorded cause" in text
    assert "| `memorization` | small | `" in text and "**no cause recorded**" in text
    assert "| `atn` | small | not run |" in text  # a card without a page is listed as not run


def test_scoreboard_refuses_a_stale_page(tmp_path: Path) -> None:
    (tmp_path / "s5-small.md").write_text(_page(["| **renamed_claim**: t | HELD | |"]))
    with pytest.raises(DataError, match=r"renamed_claim.*not claims of card 's5'"):
        render_scoreboard(tmp_path)


def test_cause_and_card_validation() -> None:
    with pytest.raises(ValueError, match="cause kind"):
        Cause("bad luck", "evidence")
    with pytest.raises(ValueError, match="needs its evidence"):
        Cause("budget", "  ")
    claim = Claim("c", "text", lambda r: ClaimResult(True))
    with pytest.raises(ValueError, match="causes name unknown claims"):
        ExperimentCard("x", "t", "p", "d", [], {"small": Scale()}, [claim], "m",
                       causes={"other": Cause("budget", "e")})


def test_committed_scoreboard_is_current(tmp_path: Path) -> None:
    """docs/results/README.md is what `seqzoo report --pages docs/results` writes from the committed pages."""
    out = write_scoreboard(RESULTS, tmp_path / "README.md")
    assert (RESULTS / "README.md").read_text() == out.read_text(), (
        "docs/results/README.md is stale: run `seqzoo report --pages docs/results`")


def test_cli_report_pages_writes_the_scoreboard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from seqzoo.cli.main import main

    (tmp_path / "s5-small.md").write_text(_page([f"| **{c.name}**: t | HELD | |" for c in get_experiment("s5").claims]))
    assert main(["report", "--pages", str(tmp_path)]) == 0
    assert f"scoreboard: {tmp_path / 'README.md'}" in capsys.readouterr().out
    assert "| `s5` | small | 4 | 0 | 0 |" in (tmp_path / "README.md").read_text()
    assert main(["report", "--pages", str(tmp_path / "absent")]) == 2
    assert "no result folder" in capsys.readouterr().err

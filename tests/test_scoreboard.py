"""The scoreboard (``seqzoo report --pages``): parsing result pages, causes, and the committed page being current."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqzoo.errors import DataError
from seqzoo.experiments.card import Cause, Claim, ClaimResult, ExperimentCard, Results, Scale
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


def test_seeds_come_from_the_run_above_the_first_claims_table(tmp_path: Path) -> None:
    """The seed count is the runner's "Seeds: [...]" line of the run the verdicts come from; fewer than 3 seeds
    make the scale's verdicts provisional on the scoreboard."""
    card = get_experiment("s5")
    rows = [f"| **{c.name}**: t | HELD | |" for c in card.claims]
    older = _page(rows, wall="Seeds: [0, 1, 2, 3]. Runs: 1 entries, wall time 9 s.")
    (tmp_path / "s5-small.md").write_text(_page(rows, wall="Seeds: [0, 1]. Runs: 3 entries, 9 runs, wall time 125 s.")
                                          + "\n## Earlier run\n\n" + older)
    (tmp_path / "s5-medium.md").write_text(_page(rows, wall="Seeds: [0, 1, 2]. Runs: 3 entries, wall time 60 s."))
    assert parse_page(tmp_path / "s5-small.md", "s5", "small").seeds == 2
    text = render_scoreboard(tmp_path)
    assert f"| `s5` | small | {len(rows)} | 0 | 0 | 2 (provisional) | [s5-small.md]" in text
    assert f"| `s5` | medium | {len(rows)} | 0 | 0 | 3 | [s5-medium.md]" in text
    assert f"{len(rows)} of the held / not held verdicts above come from runs with fewer (`s5` small)" in text


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
    kind = card.causes["s5_beats_transformer_on_listops"].kind
    assert "small" in card.causes["s5_beats_transformer_on_listops"].scales
    rows = [f"| **{n}**: t | {'NOT HELD' if n == 's5_beats_transformer_on_listops' else 'HELD'} | |" for n in names]
    (tmp_path / "s5-small.md").write_text(_page(rows))
    # A NOT HELD claim of a card with no recorded cause for it.
    mem = get_experiment("memorization")
    mrows = [f"| **{c.name}**: t | NOT HELD | |" for c in mem.claims]
    (tmp_path / "memorization-small.md").write_text(_page(mrows))
    text = render_scoreboard(tmp_path)
    assert f"| `s5` | small | {len(names) - 1} | 1 | 0 | — | [s5-small.md](s5-small.md) | 2 min |" in text
    assert f"| `s5` | small | `s5_beats_transformer_on_listops` | {kind} |" in text
    assert f"{len(mem.claims)} without a recorded cause" in text
    assert "| `memorization` | small | `" in text and "**no cause recorded**" in text
    assert "| `atn` | small | not run |" in text  # a card without a page is listed as not run


def test_scoreboard_lists_observations_apart_from_the_counts(tmp_path: Path) -> None:
    """An observation's NOT HELD is listed in its own section and is in no count; it needs no cause."""
    card = get_experiment("s5")
    assert "lstm_stays_on_adding_plateau" in [o.name for o in card.observations]
    rows = [f"| **{c.name}**: t | HELD | |" for c in card.claims]
    obs = ["", "| observation | outcome | numbers |", "|---|---|---|",
           *(f"| **{o.name}**: t | {'NOT HELD' if o.name == 'lstm_stays_on_adding_plateau' else 'HELD'} | |"
             for o in card.observations)]
    (tmp_path / "s5-small.md").write_text(_page(rows) + "\n".join(obs) + "\n")
    text = render_scoreboard(tmp_path)
    assert f"| `s5` | small | {len(card.claims)} | 0 | 0 |" in text
    assert f"Claims over all pages: {len(card.claims)} held, 0 not held, 0 undecided." in text
    assert "0 without a recorded cause" in text
    assert f"Observations (judged, not counted): {len(card.observations)}." in text
    listed = text.split("## Observations")[1]
    assert "| `s5` | small | `lstm_stays_on_adding_plateau` | NOT HELD | The parameter-matched LSTM" in listed
    assert "lstm_stays_on_adding_plateau" not in text.split("## Observations")[0]
    (tmp_path / "s5-small.md").write_text(_page(rows) + "\n".join(obs).replace("lstm_stays", "renamed") + "\n")
    with pytest.raises(DataError, match=r"renamed_on_adding_plateau.*not observations of card 's5'"):
        render_scoreboard(tmp_path)
    # the old claim still in the claims table (a page from before the re-wording) is stale
    (tmp_path / "s5-small.md").write_text(_page([*rows, "| **lstm_stays_on_adding_plateau**: t | NOT HELD | |"]))
    with pytest.raises(DataError, match="not claims of card 's5'"):
        render_scoreboard(tmp_path)


def test_scoreboard_refuses_a_stale_page(tmp_path: Path) -> None:
    (tmp_path / "s5-small.md").write_text(_page(["| **renamed_claim**: t | HELD | |"]))
    with pytest.raises(DataError, match=r"renamed_claim.*not claims of card 's5'"):
        render_scoreboard(tmp_path)


def _card_with_observation() -> ExperimentCard:
    """A card with one counted claim and one observation, both judged from the cell ``arch=a``."""
    return ExperimentCard("x", "t", "p", "d", [], {"small": Scale()}, metric="m",
                          claims=[Claim("c", "counted", lambda r: ClaimResult(r.mean(arch="a") < 1, {"a": 0.5}))],
                          observations=[Claim("o", "kept for its numbers",
                                              lambda r: ClaimResult(r.mean(arch="a") > 1, {"a": 0.5}, "why"))])


def test_observations_are_printed_written_and_read_back_but_not_counted() -> None:
    """The runner writes an observation in its own table; the scoreboard reads it back apart from the claims."""
    from seqzoo.experiments.runner import Report

    card = _card_with_observation()
    res = Results.from_records([{"arch": "a", "m": 0.5}], "m")
    report = Report(card, "small", res, card.evaluate(res), out_dir=None, observations=card.observe(res))
    assert report.verdicts == {"c": "HELD"}  # the observation is not a verdict
    text = report.format_claims()
    assert "[HELD] c: counted" in text and "[observation, NOT HELD] o: kept for its numbers" in text
    assert report.to_dict()["observations"][0] == {"name": "o", "text": "kept for its numbers", "held": False,
                                                   "verdict": "NOT HELD", "numbers": {"a": 0.5}, "detail": "why"}
    page = report.to_markdown()
    assert "| **o**: kept for its numbers | NOT HELD | a=0.5 |" in page.split("## Observations")[1]
    assert "**o**" not in page.split("## Observations")[0]


def test_parse_page_reads_observations_of_the_first_run_only(tmp_path: Path) -> None:
    obs = ["", "## Observations", "", "| observation | outcome | numbers |", "|---|---|---|",
           "| **spikes**: t | NOT HELD | r=76 |", ""]
    older = _page(["| **a**: t | NOT HELD | |"]) + "\n".join(["", *obs]).replace("spikes", "older_obs")
    path = tmp_path / "x-small.md"
    path.write_text(_page(["| **a**: t | HELD | |"]) + "\n".join(obs) + "\n## Earlier run\n\n" + older)
    page = parse_page(path, "x", "small")
    assert page.verdicts == {"a": "HELD"} and page.observations == {"spikes": "NOT HELD"}
    assert (page.count("HELD"), page.count("NOT HELD")) == (1, 0)
    path.write_text(_page(["| **a**: t | HELD | |"]) + "\n".join(obs[:5] + ["| spikes edited | no | |"]))
    with pytest.raises(DataError, match=r"x-small\.md:17: an observations-table row"):
        parse_page(path, "x", "small")


def test_cause_and_card_validation() -> None:
    with pytest.raises(ValueError, match="cause kind"):
        Cause("bad luck", "evidence")
    with pytest.raises(ValueError, match="needs its evidence"):
        Cause("budget", "  ")
    claim = Claim("c", "text", lambda r: ClaimResult(True))
    with pytest.raises(ValueError, match="causes name unknown claims"):
        ExperimentCard("x", "t", "p", "d", [], {"small": Scale()}, [claim], "m",
                       causes={"other": Cause("budget", "e")})
    with pytest.raises(ValueError, match="an observation is not counted, so it has no cause"):
        ExperimentCard("x", "t", "p", "d", [], {"small": Scale()}, [claim], "m",
                       observations=[Claim("o", "t", claim.check)], causes={"o": Cause("claim wording", "e")})
    with pytest.raises(ValueError, match="claim and observation names must be unique"):
        ExperimentCard("x", "t", "p", "d", [], {"small": Scale()}, [claim], "m", observations=[claim])


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
    assert f"| `s5` | small | {len(get_experiment('s5').claims)} | 0 | 0 |" in (tmp_path / "README.md").read_text()
    assert main(["report", "--pages", str(tmp_path / "absent")]) == 2
    assert "no result folder" in capsys.readouterr().err

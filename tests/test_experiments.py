"""Experiment cards, claim predicates, the runner and the report."""

from __future__ import annotations

import json

import pytest

from seqzoo.experiments import (
    Claim,
    ClaimResult,
    Entry,
    ExperimentCard,
    Results,
    Scale,
    Stat,
    get_experiment,
    list_experiments,
)
from seqzoo.experiments.cards import memorization as mem
from seqzoo.experiments.runner import Job, aggregate, plan
from seqzoo.registry_utils import UnknownNameError


# ----------------------------------------------------------------------------------------------
# synthetic results
# ----------------------------------------------------------------------------------------------
def _tanh_rows(horizons: dict[int, int], xs=range(2, 14), low=0.01, high=0.16, seeds: int = 1) -> list[dict]:
    """A fabricated tanh grid where H recalls up to X = horizons[H] and fails beyond."""
    rows = []
    for H, hz in horizons.items():
        for X in xs:
            v = low if X <= hz else high
            rows.append({"arch": "rnn_tanh", "H": H, "L": 1, "X": X, "mae": [v + 0.001 * s for s in range(seeds)]})
    return rows


def _gated_rows(horizon: int, arches=("lstm", "gru"), xs=range(2, 14), high=0.2) -> list[dict]:
    return [{"arch": a, "H": 4, "L": 1, "X": X, "mae": 0.01 if X <= horizon else high} for a in arches for X in xs]


def _claims(results: Results) -> dict[str, ClaimResult]:
    return {c.name: r for c, r in get_experiment("memorization").evaluate(results)}


def test_jump_claim_held_when_the_jump_exists():
    res = Results.from_records(_tanh_rows({2: 2, 4: 4, 8: 8}, seeds=3), metric="mae")
    out = _claims(res)["jump_4_to_5"]
    assert out.held is True
    assert out.numbers["mae_X4"] == pytest.approx(0.011, abs=1e-4)
    assert out.numbers["mae_X5"] == pytest.approx(0.161, abs=1e-4)
    assert out.numbers["seeds"] == 3 and out.numbers["std_X4"] > 0
    assert out.verdict == "HELD"


@pytest.mark.parametrize("horizon4", [3, 6])
def test_jump_claim_not_held_without_the_jump(horizon4):
    res = Results.from_records(_tanh_rows({4: horizon4}), metric="mae")
    out = _claims(res)["jump_4_to_5"]
    assert out.held is False and out.verdict == "NOT HELD"


def test_jump_claim_not_held_when_x5_is_only_slightly_worse():
    rows = [{"arch": "rnn_tanh", "H": 4, "L": 1, "X": 4, "mae": 0.02},
            {"arch": "rnn_tanh", "H": 4, "L": 1, "X": 5, "mae": 0.08}]  # between LOW and HIGH: no sharp jump
    assert _claims(Results.from_records(rows, metric="mae"))["jump_4_to_5"].held is False


def test_claims_undecided_on_missing_cells():
    res = Results.from_records(_gated_rows(5), metric="mae")  # no tanh rows at all
    out = _claims(res)
    assert out["jump_4_to_5"].held is None and "no result" in out["jump_4_to_5"].detail
    assert out["horizon_equals_units"].held is None
    assert out["gated_also_limited"].held is True


def test_horizon_claim_held_within_tolerance_and_reports_horizons():
    res = Results.from_records(_tanh_rows({2: 3, 4: 4, 8: 7}), metric="mae")
    out = _claims(res)["horizon_equals_units"]
    assert out.held is True
    assert (out.numbers["horizon_H2"], out.numbers["horizon_H4"], out.numbers["horizon_H8"]) == (3, 4, 7)


def test_horizon_claim_not_held_when_far_from_h():
    res = Results.from_records(_tanh_rows({2: 2, 4: 4, 8: 5}), metric="mae")
    out = _claims(res)["horizon_equals_units"]
    assert out.held is False and out.numbers["horizon_H8"] == 5


def test_horizon_censored_by_a_short_grid():
    # H=8 recalls everything up to X=9, the end of this grid: undecided (tolerance allows up to 9)
    res = Results.from_records(_tanh_rows({2: 2, 4: 4, 8: 20}, xs=range(2, 10)), metric="mae")
    assert _claims(res)["horizon_equals_units"].held is None
    # ... but recalling X=13 > 8+1 is a clear failure of the claim
    res = Results.from_records(_tanh_rows({2: 2, 4: 4, 8: 20}), metric="mae")
    out = _claims(res)["horizon_equals_units"]
    assert out.held is False and out.numbers["horizon_H8"] == ">=13"


def test_horizon_helper_counts_from_the_start_of_the_grid():
    res = Results.from_records(_tanh_rows({4: 1}), metric="mae")  # X=2 already fails
    hz = mem.horizon(res, "rnn_tanh", 4)
    assert hz["horizon"] == 1 and hz["censored"] is False
    rows = _tanh_rows({4: 4})
    rows[-1]["mae"] = 0.01  # a noisy low cell far past the border
    hz = mem.horizon(Results.from_records(rows, metric="mae"), "rnn_tanh", 4)
    assert hz["horizon"] == 4 and hz["last_low"] == 13
    gap = [r for r in _tanh_rows({4: 4}) if r["X"] != 7]
    assert mem.horizon(Results.from_records(gap, metric="mae"), "rnn_tanh", 4)["horizon"] is None


def test_gated_claim():
    res = Results.from_records(_gated_rows(6), metric="mae")
    out = _claims(res)["gated_also_limited"]
    assert out.held is True and out.numbers["lstm_horizon_H4"] == 6
    res = Results.from_records(_gated_rows(99), metric="mae")  # never fails within the grid
    out = _claims(res)["gated_also_limited"]
    assert out.held is False and out.numbers["gru_horizon_H4"] == ">=13"


# ----------------------------------------------------------------------------------------------
# cards and registry
# ----------------------------------------------------------------------------------------------
def test_registry_lists_and_suggests():
    assert "memorization" in list_experiments()
    assert list_experiments("memo*") == ["memorization"]
    with pytest.raises(UnknownNameError, match="did you mean 'memorization'"):
        get_experiment("memorisation")


def test_memorization_grids():
    card = get_experiment("memorization")
    small = card.entries("small")
    assert len(small) == 60
    assert {(e.labels["arch"], e.labels["H"]) for e in small} == {("rnn_tanh", 2), ("rnn_tanh", 4), ("rnn_tanh", 8),
                                                                  ("lstm", 4), ("gru", 4)}
    e = next(e for e in small if e.labels == {"arch": "rnn_tanh", "H": 4, "L": 1, "X": 5})
    assert e.task_args == {"distance": 4} and e.model_args["encoder"] == "none" and e.model_args["d_model"] == 4
    assert e.id == "rnn_tanh-H4-L1-X5"
    paper = card.entries("paper")
    assert {e.labels["L"] for e in paper} == {1, 2, 3, 4, 5}
    assert max(e.labels["H"] for e in paper) == 20 and max(e.labels["X"] for e in paper) == 20
    assert card.scale("small").workers == 2
    with pytest.raises(ValueError, match="did you mean 'small'"):
        card.scale("smal")


def test_plan_merges_scale_entry_and_seed():
    card = ExperimentCard(
        name="toy", title="t", paper="p", description="d", metric="mse",
        grid=[Entry("lstm", "adding", {"d_model": 8}, {"seq_len": 10}, {"m": "a"}),
              Entry("gru", "adding", {"d_model": 8}, {"seq_len": 10}, {"m": "b"}, train={"lr": 0.01})],
        scales={"tiny": Scale(train={"steps": 5, "lr": 0.1}, seeds=(0, 1))},
        claims=[])
    jobs = plan(card, "tiny")
    assert len(jobs) == 4
    assert [j.train["seed"] for j in jobs] == [0, 1, 0, 1]
    assert jobs[2].train["lr"] == 0.01 and jobs[0].train["lr"] == 0.1
    assert len({j.key for j in jobs}) == 4
    assert jobs[0].tags == {"experiment": "toy", "scale": "tiny", "entry": "ma", "job": jobs[0].key}
    rows = [(j, {"run_id": f"r{i}", "test": {"mse": float(i)}, "valid": {"mse": 1.0}}) for i, j in enumerate(jobs)]
    res = aggregate(card, rows)
    assert res.stat(m="a").mean == pytest.approx(0.5) and res.stat(m="a").n == 2
    assert res.stat(m="b", split="valid").std == 0.0


def test_card_validation():
    with pytest.raises(ValueError, match="scales must be among"):
        ExperimentCard("x", "t", "p", "d", grid=[], scales={"huge": Scale(train={})}, claims=[], metric="mse")
    c = Claim("c", "text", lambda r: "yes")
    with pytest.raises(TypeError, match="ClaimResult"):
        c.evaluate(Results([], "mse"))


def test_stat():
    s = Stat.of([1.0, 2.0, 3.0])
    assert (s.mean, s.std, s.n) == (2.0, 1.0, 3)
    assert Stat.of([0.5]).std == 0.0
    assert str(Stat.of([1.0, 3.0])).startswith("2 ± 1.4")


def test_job_key_depends_on_definition_only():
    e = Entry("lstm", "adding", {"d_model": 8}, {"seq_len": 10}, {"m": "a"})
    a = Job("x", "tiny", e, 0, {"steps": 5, "seed": 0})
    b = Job("x", "small", e, 0, {"seed": 0, "steps": 5})
    c = Job("x", "tiny", e, 1, {"steps": 5, "seed": 1})
    assert a.key == b.key != c.key


def test_heatmap_plot(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    rows = _tanh_rows({2: 2, 4: 4}) + _gated_rows(6)
    res = Results.from_records(rows, metric="mae")
    path = tmp_path / "heat.png"
    mem._draw_heatmap(res, path)
    assert path.stat().st_size > 1000


# ----------------------------------------------------------------------------------------------
# end to end (real training)
# ----------------------------------------------------------------------------------------------
def test_reproduce_tiny_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    from seqzoo.experiments.report import render_report
    from seqzoo.experiments.runner import reproduce

    lines: list[str] = []
    report = reproduce("memorization", scale="tiny", out=tmp_path / "runs", progress=False, echo=lines.append)
    text = "\n".join(lines)
    assert report.runs_total == 3 and report.runs_trained == 3 and not report.failures
    for name in ("jump_4_to_5", "horizon_equals_units", "gated_also_limited"):
        assert name in text
    assert report.verdicts["horizon_equals_units"] == "UNDECIDED"  # tiny grid has only H=4
    assert report.verdicts["jump_4_to_5"] in ("HELD", "NOT HELD")
    assert "mae_X4" in text and "numbers:" in text
    summary = json.loads((tmp_path / "runs/memorization/tiny/summary.json").read_text())
    assert summary["runs"]["total"] == 3 and len(summary["results"]["entries"]) == 3
    assert {c["verdict"] for c in summary["claims"]} <= {"HELD", "NOT HELD", "UNDECIDED"}
    assert (tmp_path / "runs/memorization/tiny/heatmap.png").stat().st_size > 1000
    assert "## Claims" in (tmp_path / "runs/memorization/tiny/summary.md").read_text()

    # resume: nothing is trained again, same numbers
    again = reproduce("memorization", scale="tiny", out=tmp_path / "runs", progress=False, echo=None)
    assert again.runs_trained == 0 and again.runs_skipped == 3
    assert again.results.mean(arch="rnn_tanh", H=4, X=4) == report.results.mean(arch="rnn_tanh", H=4, X=4)
    # no resume: everything is trained again from scratch, deterministically
    fresh = reproduce("memorization", scale="tiny", out=tmp_path / "runs", progress=False, echo=None, resume=False)
    assert fresh.runs_trained == 3 and len(fresh.results) == 3
    assert fresh.results.mean(arch="lstm", H=4, X=4) == report.results.mean(arch="lstm", H=4, X=4)

    page = render_report(tmp_path / "runs", tmp_path / "docs/results.md")
    md = page.read_text()
    assert "memorization" in md and "| memorization | tiny | jump_4_to_5 |" in md
    assert (tmp_path / "docs/results/memorization-tiny/heatmap.png").exists()
    assert "](results/memorization-tiny/heatmap.png)" in md


def test_report_without_index_is_a_clear_error(tmp_path):
    from seqzoo.experiments.report import render_report

    with pytest.raises(FileNotFoundError, match="no run index"):
        render_report(tmp_path / "nothing", tmp_path / "r.md")


def _without_ray(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name == "ray":
            raise ImportError("no ray here")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_ray_executor_missing_is_clear_and_comes_before_any_work(tmp_path, monkeypatch, capsys):
    from seqzoo.errors import ConfigError
    from seqzoo.experiments import runner

    _without_ray(monkeypatch)
    with pytest.raises(ConfigError, match="pip install 'seqzoo\\[ray\\]'"):
        runner._run_ray([{"x": 1}], 1, lambda row: None)
    started: list[str] = []
    monkeypatch.setattr(runner, "_progress_bar", lambda *a: started.append("bar"))
    monkeypatch.setattr(runner, "plan", lambda *a, **k: started.append("plan") or [])
    lines: list[str] = []
    with pytest.raises(ConfigError, match="executor 'ray' needs Ray"):
        runner.reproduce("memorization", scale="tiny", out=tmp_path / "runs", executor="ray", echo=lines.append)
    assert started == [] and lines == [] and not (tmp_path / "runs").exists()


def test_failing_run_is_reported_and_the_grid_goes_on(tmp_path, monkeypatch):
    from seqzoo.experiments.registry import EXPERIMENTS, register_experiment
    from seqzoo.experiments.runner import reproduce

    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))

    def check(results: Results) -> ClaimResult:
        return ClaimResult(results.mean(m="ok") < 10.0, {"mse": results.mean(m="ok")}, "finite loss")

    card = ExperimentCard(
        name="_toy_failing", title="toy", paper="-", description="-", metric="mse",
        grid=[Entry("gru", "adding", {"d_model": 4}, {"seq_len": 6}, {"m": "ok"}),
              Entry("gru", "adding", {"d_model": 0}, {"seq_len": 6}, {"m": "bad"})],
        scales={"tiny": Scale(train={"steps": 3, "eval_every": 3, "progress": False, "tensorboard": False})},
        claims=[Claim("finite", "the good run has a finite loss", check)])
    monkeypatch.setitem(EXPERIMENTS._entries, "_toy_failing", card)  # the key is removed again after the test
    register_experiment(card, overwrite=True)
    lines: list[str] = []
    report = reproduce("_toy_failing", scale="tiny", out=tmp_path / "runs", progress=False, echo=lines.append)
    assert len(report.failures) == 1 and "mbad s0" in report.failures[0] and "d_model" in report.failures[0]
    assert report.verdicts == {"finite": "HELD"}
    assert "1 run(s) failed" in "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# the card kit: claim helpers, baselines, plot helpers, the quiet default, the test helpers
# ----------------------------------------------------------------------------------------------
def _kit_results(**cells: float | list[float]) -> Results:
    """``arch@task=value`` cells, e.g. ``_kit_results(**{"a@x": 1.0})``."""
    rows = []
    for key, v in cells.items():
        arch, task = key.split("@")
        rows.append({"arch": arch, "task": task, "mse": v})
    return Results.from_records(rows, "mse")


def test_compare_on_every_task_with_the_best_of_several_and_slack():
    from seqzoo.experiments.claims import compare

    res = _kit_results(**{"a@x": 1.0, "b@x": 2.0, "c@x": 1.5, "a@y": [2.0, 2.2], "b@y": 2.0, "c@y": 3.0})
    out = compare(res, "a", "b", "<=", over="task")
    assert out.held is False  # y: 2.1 > 2.0
    assert "task=x: a 1 vs b 2" in out.detail and "task=y: a 2.1 ± 0.14 vs b 2" in out.detail
    assert out.detail.endswith("(held if a <= b on every task)")
    assert out.numbers == {"x/a": 1.0, "x/b": 2.0, "y/a": 2.1, "y/b": 2.0}
    assert compare(res, "a", "b", "<=", over="task", slack=0.1).held is True
    assert compare(res, "a", "b", "<=", over="task", factor=1.1).held is True  # 2.1 <= 2.2
    assert compare(res, "a", "b", "<=", over="task", factor=1.02).held is False  # 2.1 > 2.04
    # against the best of several: x compares with c (1.5), y with b (2.0)
    out = compare(res, "a", ("b", "c"), "<", over="task", numbers={"kept": 1})
    assert out.held is False and out.numbers == {"kept": 1} and "the best of b/c" in out.detail
    assert compare(res, "a", ("b", "c"), "<", where={"task": "x"}).held is True
    assert compare(res, "c", ("a", "b"), ">=", over="task").held is False  # x: 1.5 < max(1, 2)


def test_claim_helpers_missing_cells_make_the_claim_undecided():
    from seqzoo.experiments.claims import beats_baseline, compare, threshold

    res = _kit_results(**{"a@x": 1.0, "b@x": 2.0})
    for check in (lambda r: compare(r, "a", "z", over="task"), lambda r: threshold(r, "z", "<", 1.0),
                  lambda r: beats_baseline(r, "a", 1.0, over="task", values=("x", "y"))):
        out = Claim("c", "t", check).evaluate(res)
        assert out.held is None and out.detail.startswith("cannot evaluate")
    with pytest.raises(ValueError, match="op must be one of"):
        compare(res, "a", "b", "=<")


def test_threshold_within_and_beats_baseline():
    from seqzoo.experiments.claims import beats_baseline, threshold, within

    res = _kit_results(**{"a@x": [1.0, 1.2], "b@x": 2.0, "a@y": 0.5, "b@y": float("nan")})
    assert threshold(res, {"arch": "a", "task": "x"}, "<=", 1.1).held is True
    out = threshold(res, [{"arch": "a", "task": "y"}, {"arch": "b", "task": "y"}], "<", 9.0)
    assert out.held is False and "(held if each mean < 9)" in out.detail  # NaN fails every comparison
    out = within(res, {"a": 1.05, "b": 2.2}, 0.1, where={"task": "x"}, what="paper")
    assert out.held is False and "b 2 vs paper 2.2 (-0.200)" in out.detail
    assert within(res, {"a": 1.05}, 0.1, where={"task": "x"}).held is True
    assert within(res, {"a": 1.1}, 0.15, where={"task": "x"}, every_seed=True).held is True
    assert within(res, {"a": 1.2}, 0.15, where={"task": "x"}, every_seed=True).held is False  # seed 1.0 is 0.2 off
    base = {"x": 2.5, "y": 1.0}
    out = beats_baseline(res, "a", base.get, fraction=0.9, over="task", what="memoryless")
    assert out.held is True and out.numbers == {"x/a": 1.1, "x/memoryless": 2.5, "y/a": 0.5, "y/memoryless": 1.0}
    assert "(held if each mean <= 0.9 x the memoryless on every task)" in out.detail
    assert beats_baseline(res, "a", 1.0, op=">=", where={"task": "x"}).held is True


def test_combine_verdicts():
    from seqzoo.experiments.claims import all_held, combine

    assert combine([True, True]) is True and combine([True, None]) is None and combine([None, False]) is False
    assert combine([]) is None
    out = all_held([(True, "a ok"), (False, "b fails")], {"n": 1}, "both")
    assert (out.held, out.numbers, out.detail) == (False, {"n": 1}, "a ok; b fails (held if both)")


def test_task_baseline_is_cached_and_reads_one_metric():
    from seqzoo.experiments.baselines import _baseline, task_baseline

    _baseline.cache_clear()
    assert task_baseline("adding", "mse", {"seq_len": 10}) == pytest.approx(1 / 6, abs=1e-3)
    assert "mse" in task_baseline("adding", task_args={"seq_len": 10})
    assert _baseline.cache_info().hits >= 1


def test_quiet_is_the_default_of_every_scale():
    from seqzoo.experiments.card import QUIET

    assert Scale(train={"steps": 3}).train == {**QUIET, "steps": 3}
    assert Scale(train={"progress": True}).train["progress"] is True  # a scale may still ask for a bar
    for name in list_experiments():
        for sc in get_experiment(name).scales.values():
            assert sc.train["progress"] is False and sc.train["tensorboard"] is False, name


def test_plot_helpers_write_a_figure(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    from seqzoo.experiments.plots import Ref, bars, cells, curves, grouped_bars, panels, save

    res = _kit_results(**{"a@x": [1.0, 1.2], "b@x": 2.0, "a@y": 0.5})
    fig, axes = panels(3)
    items = cells(res, "arch", ("a", "b"), task="y", names={"a": "A"})
    assert [n for n, _ in items] == ["A", "b"] and items[1][1] is None  # a gap stays a gap
    bars(axes[0], items, refs=[Ref(1.0, "baseline")], title="y", annotate=True)
    grouped_bars(axes[1], ("x", "y"), {a: [res.get(arch=a, task=t) for t in ("x", "y")] for a in ("a", "b")},
                 refs=[Ref(0.5, style=":")], log_y=True)
    curves(axes[2], {"a": ([1, 2], [res.get(arch="a", task="x"), 0.7]), "none": ([1], [None])}, log_x=True)
    assert len(axes[0].patches) == 1 and axes[0].get_legend() is not None
    assert axes[2].get_legend().get_texts()[0].get_text() == "a"  # the empty series is not drawn
    path = save(fig, tmp_path / "sub" / "kit.png")
    assert path.stat().st_size > 1000


def test_shared_card_test_helpers(tmp_path, monkeypatch):
    from seqzoo.experiments import testing

    rows = [{"norm": "bln", "B": 25, "accuracy": [0.91, 0.92]}, {"norm": "ln", "B": 25, "accuracy": 0.90}]
    assert testing.judge("bln", "bln_ge_ln_b25", rows).held is True
    testing.assert_verdicts("bln", testing.results("bln", rows), {"bln_ge_ln_b25": True, "bln_trains_b1": None})
    with pytest.raises(AssertionError, match="unexpected verdicts"):
        testing.assert_verdicts("bln", testing.results("bln", rows), {"bln_ge_ln_b25": False})
    with pytest.raises(KeyError, match="has no claim"):
        testing.claim("bln", "nope")
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    report = testing.run_tiny("memorization", tmp_path / "runs")
    assert report.runs_trained == 3


# ----------------------------------------------------------------------------------------------
# what a user sees: tiny verdicts, expected times, progress in logs, the report's place
# ----------------------------------------------------------------------------------------------
def _fake_report(scale: str):
    from seqzoo.experiments.runner import Report

    card = get_experiment("memorization")
    res = Results.from_records(_tanh_rows({4: 4}), metric="mae")
    return Report(card, scale, res, card.evaluate(res), out_dir=None)


def test_tiny_verdicts_are_shown_as_plumbing_checks():
    tiny, small = _fake_report("tiny"), _fake_report("small")
    text = tiny.format_claims()
    assert "[tiny: not a result (HELD)] jump_4_to_5" in text and "[HELD]" not in text
    assert "not results" in text.splitlines()[0]
    assert "| tiny: not a result (HELD) |" in tiny.to_markdown()
    assert "[HELD] jump_4_to_5" in small.format_claims() and "| HELD |" in small.to_markdown()
    assert tiny.to_dict()["plumbing_only"] is True and small.to_dict()["plumbing_only"] is False
    assert tiny.verdicts["jump_4_to_5"] == "HELD"  # the raw verdict stays in summary.json and the API


def test_every_card_states_expected_times_and_describes_itself():
    from seqzoo.experiments.card import format_duration

    assert [format_duration(s) for s in (42, 586, 1511, 5400)] == ["42 s", "10 min", "25 min", "1 h 30 min"]
    for name in list_experiments():
        card = get_experiment(name)
        for scale in ("tiny", "small"):
            assert card.scale(scale).expected_seconds, (name, scale)
            assert card.scale(scale).expected.endswith("on 2 cores")
        d = card.describe()
        assert d["claims"] == [c.name for c in card.claims] and d["models"] and d["tasks"]
        assert d["scales"]["tiny"]["runs"] == len(card.entries("tiny")) * len(card.scale("tiny").seeds)
    assert Scale().expected == "not measured"


def test_list_experiments_and_reproduce_help_show_the_times(capsys):
    from seqzoo.cli.main import main

    assert main(["list", "experiments", "atn"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("atn — ") and "claims: atn_le_ln, normalized_beat_baseline" in out
    assert "tiny: 9 runs, 25 s on 2 cores; small: 18 runs, 10 min on 2 cores" in out
    assert "models: lstm, lstm_atn, lstm_ln" in out and "tasks: adding, copy, denoise" in out
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "expected wall time of a whole scale on 2 cores" in out and "atn            tiny 25 s, small 10 min" in out


def test_reproduce_prints_the_expected_time_first(tmp_path, monkeypatch):
    from seqzoo.experiments import runner

    monkeypatch.setattr(runner, "plan", lambda *a, **k: [])
    lines: list[str] = []
    runner.reproduce("atn", scale="tiny", out=tmp_path, progress=False, echo=lines.append)
    assert "expected wall time of the whole scale: about 25 s on 2 cores" in lines[0]
    assert lines[1].startswith("scale 'tiny' checks the plumbing")


def test_progress_off_a_terminal_is_plain_log_lines(monkeypatch):
    import io
    import time

    from seqzoo.experiments import runner

    class Pipe(io.StringIO):
        def isatty(self) -> bool:
            return False

    pipe = Pipe()
    monkeypatch.setattr("sys.stderr", pipe)
    monkeypatch.setattr(runner, "LOG_INTERVAL", 0.05)
    bar = runner._progress_bar(4, "atn/small", True)
    assert isinstance(bar, runner._LogProgress)
    bar.set_postfix_str("last: lstm-taskadding s0")
    bar.update(1)
    deadline = time.time() + 5
    while "1/4" not in pipe.getvalue() and time.time() < deadline:
        time.sleep(0.02)
    bar.update(1)
    bar.close()
    text = pipe.getvalue()
    assert "\r" not in text
    assert "atn/small: 1/4 runs done, elapsed " in text and "(last: lstm-taskadding s0)" in text
    last = text.strip().splitlines()[-1]
    assert last.startswith("atn/small: 2/4 runs done") and "ETA " in last and "unknown" not in last
    assert isinstance(runner._progress_bar(4, "x", False), runner._NullBar)


def test_report_defaults_to_the_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    monkeypatch.chdir(tmp_path)
    from seqzoo.cli.main import main
    from seqzoo.experiments.runner import reproduce

    reproduce("memorization", scale="tiny", out=tmp_path / "runs", progress=False, echo=None)
    assert main(["report", "--out", str(tmp_path / "runs")]) == 0
    page = tmp_path / "runs" / "results.md"
    assert page.exists() and not (tmp_path / "docs").exists()
    assert "| memorization | tiny | jump_4_to_5 | tiny: not a result (" in page.read_text()


def test_cross_grid_labels_order_and_per_task_arguments():
    from seqzoo.experiments.grids import cross

    grid = cross({"plain": "lstm", "wide": ("lstm", {"d_model": 16}), "win": lambda t: ("lstm_atn", {"k": len(t)})},
                 {"adding": ("adding", {"seq_len": 10}), "copy": "copy"},
                 train=lambda m, t: {"steps": 5} if t == "copy" else {}, labels={"T": 10})
    assert [(e.labels["arch"], e.labels["task"]) for e in grid][:4] == [("plain", "adding"), ("wide", "adding"),
                                                                        ("win", "adding"), ("plain", "copy")]
    assert list(grid[0].labels) == ["arch", "task", "T"] and grid[0].id == "plain-taskadding-T10"
    assert grid[2].model == "lstm_atn" and grid[2].model_args == {"k": 6} and grid[5].model_args == {"k": 4}
    assert grid[3].task_args == {} and grid[3].train == {"steps": 5} and grid[0].train == {}
    assert grid[1].task_args == {"seq_len": 10} and grid[1].task_args is not grid[0].task_args
    by_model = cross(["gru", "lstm"], ["adding", "copy"], task_label="data", tasks_outer=False)
    assert [(e.model, e.task, e.labels) for e in by_model][:2] == [("gru", "adding", {"arch": "gru", "data": "adding"}),
                                                                   ("gru", "copy", {"arch": "gru", "data": "copy"})]


def test_means_reports_spread_per_cell():
    from seqzoo.experiments.claims import means

    res = _kit_results(**{"a@x": [1.0, 1.2], "b@x": 2.0})
    assert means(res, ("a", "b", "zzz"), where={"task": "x"}) == {"a": 1.1, "b": 2.0}
    assert means(res, ("a", "b"), where={"task": "x"}, spread="std") == {"a": 1.1, "a_std": 0.1414, "b": 2.0}
    assert means(res, ("a",), where={"task": "x"}, spread="seeds", digits=1) == {"a": 1.1, "a_seeds": [1.0, 1.2]}

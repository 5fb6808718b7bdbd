"""Card ``rns-rnn``: claim predicates on fabricated results, the grid, and a tiny reproduce."""

from __future__ import annotations

import pytest

from seqzoo.experiments import testing
from seqzoo.experiments.card import Entry, EntryResult, Results, Stat
from seqzoo.experiments.cards import rns_rnn
from seqzoo.experiments.registry import get_experiment

METRIC = "ce_minus_bound"


def _results(gaps: dict[str, dict[str, float | list[float]]]) -> Results:
    rows = [{"arch": m, "task": t, METRIC: v} for t, per in gaps.items() for m, v in per.items()]
    return Results.from_records(rows, METRIC)


def _uniform(rns: float, others: float) -> dict[str, dict[str, float]]:
    return {t: {m: (rns if m == "rns_rnn" else others) for m in rns_rnn.MODELS} for t in rns_rnn.TASKS}


def test_registered_and_grid_shape() -> None:
    card = get_experiment("rns-rnn")
    small = card.entries("small")
    assert len(small) == len(rns_rnn.TASKS) * len(rns_rnn.MODELS)
    ns = [e for e in small if e.labels["arch"] in ("ns_rnn", "rns_rnn")]
    for e in ns:
        q = e.model_args["layer_kwargs"]["n_states"]
        assert q == (3 if e.task in ("cfl-padded-reversal", "cfl-hardest") else 2)
    assert all(e.task_args["max_length"] == 24 for e in small)
    assert card.scale("small").seeds == (0, 1)


def test_near_bound_held_and_not_held() -> None:
    claim = testing.claim("rns-rnn", "rns_near_bound")
    assert claim.evaluate(_results(_uniform(0.05, 0.3))).held is True
    gaps = _uniform(0.05, 0.3)
    gaps["cfl-dyck"]["rns_rnn"] = [0.08, 0.14]  # mean 0.11 > 0.1
    out = claim.evaluate(_results(gaps))
    assert out.held is False and out.numbers["cfl-dyck"] == pytest.approx(0.11)


def test_lowest_counts_wins() -> None:
    claim = testing.claim("rns-rnn", "rns_lowest")
    assert claim.evaluate(_results(_uniform(0.05, 0.3))).held is True
    gaps = _uniform(0.05, 0.3)
    gaps["cfl-hardest"]["ns_rnn"] = 0.01  # one loss: 4 of 5 still holds
    out = claim.evaluate(_results(gaps))
    assert out.held is True and out.numbers["wins"] == 4
    gaps["cfl-dyck"]["lstm"] = 0.0  # two losses
    out = claim.evaluate(_results(gaps))
    assert out.held is False and out.numbers["wins"] == 3


def _selection(cells: dict[tuple[str, str], tuple[list[float], list[float]]]) -> Results:
    """Results with per-seed validation and test gaps: ``{(arch, task): (valid per seed, test per seed)}``."""
    out = []
    for (arch, task), (valid, test) in cells.items():
        metrics = {"valid": {METRIC: Stat.of(valid)}, "test": {METRIC: Stat.of(test)}}
        entry = Entry(arch, task, labels={"arch": arch, "task": task})
        out.append(EntryResult(entry, metrics, seeds=list(range(len(test)))))
    return Results(out, METRIC)


def _all_tasks(rns: tuple[list[float], list[float]], other: tuple[list[float], list[float]]) -> dict:
    return {(m, t): rns if m == "rns_rnn" else other for t in rns_rnn.TASKS for m in ("rns_rnn", *rns_rnn.STACKS)}


def test_lowest_among_stacks_uses_the_run_selected_by_validation() -> None:
    """The paper picks each model's best run by validation CE, and claims RNS-RNN below every earlier stack on all
    five tasks; the LSTM is not among the stacks."""
    claim = testing.claim("rns-rnn", "rns_lowest_among_stacks")
    assert [o.name for o in get_experiment("rns-rnn").observations] == ["rns_lowest_among_stacks_valid",
                                                                         "rns_lowest"]
    cells = _all_tasks(([0.2, 0.1], [0.25, 0.12]), ([0.3, 0.3], [0.3, 0.3]))
    out = claim.evaluate(_selection(cells))
    assert out.held is True and out.numbers["cfl-dyck"]["rns_rnn"] == 0.12
    assert out.numbers["cfl-dyck/seed"]["rns_rnn"] == 1
    # NS-RNN's better test run (0.1 < RNS-RNN's 0.12) is not the one validation picks (0.2): still held
    cells[("ns_rnn", "cfl-hardest")] = ([0.4, 0.35], [0.1, 0.2])
    out = claim.evaluate(_selection(cells))
    assert out.held is True and out.numbers["cfl-hardest"]["ns_rnn"] == 0.2
    cells[("ns_rnn", "cfl-hardest")] = ([0.35, 0.4], [0.1, 0.2])  # now validation picks the 0.1 run
    assert claim.evaluate(_selection(cells)).held is False
    # a lower LSTM does not matter; a missing task or a missing validation split makes it undecided
    cells = _all_tasks(([0.2, 0.1], [0.25, 0.12]), ([0.3, 0.3], [0.3, 0.3]))
    assert claim.evaluate(_selection({**cells, ("lstm", "cfl-dyck"): ([0.0, 0.0], [0.0, 0.0])})).held is True
    del cells[("stratification", "cfl-dyck")]
    assert claim.evaluate(_selection(cells)).held is None
    assert claim.evaluate(_results(_uniform(0.05, 0.3))).held is None  # test numbers only: nothing to select by


def test_validation_observation_compares_the_selected_runs_on_validation() -> None:
    """The observation judges the same selected runs on the validation split: RNS-RNN lower there, higher on test."""
    obs = {o.name: o for o in get_experiment("rns-rnn").observations}["rns_lowest_among_stacks_valid"]
    cells = _all_tasks(([0.2, 0.1], [0.5, 0.4]), ([0.3, 0.3], [0.3, 0.3]))
    assert obs.evaluate(_selection(cells)).held is True
    assert testing.claim("rns-rnn", "rns_lowest_among_stacks").evaluate(_selection(cells)).held is False


def test_one_failing_task_decides_although_others_have_no_runs() -> None:
    """The medium scale has marked reversal only: a fail there is NOT HELD, a pass there leaves the claim undecided."""
    lowest = testing.claim("rns-rnn", "rns_lowest_among_stacks")
    near = testing.claim("rns-rnn", "rns_near_bound")
    task = "cfl-marked-reversal"
    worse = {(m, task): (([0.1], [0.5]) if m == "rns_rnn" else ([0.1], [0.3])) for m in ("rns_rnn", *rns_rnn.STACKS)}
    out = lowest.evaluate(_selection(worse))
    assert out.held is False and "cfl-dyck: not every stack model has runs" in out.detail
    better = {k: (([0.1], [0.2]) if k[0] == "rns_rnn" else v) for k, v in worse.items()}
    assert lowest.evaluate(_selection(better)).held is None
    assert near.evaluate(_selection(worse)).held is False  # 0.5 > 0.1 on marked reversal, Dyck not run
    out = near.evaluate(_selection({("rns_rnn", task): ([0.0], [0.05])}))
    assert out.held is None and "cfl-dyck: no RNS-RNN runs" in out.detail


def test_medium_scale_is_the_papers_lengths_on_marked_reversal() -> None:
    card = get_experiment("rns-rnn")
    medium, sc = card.entries("medium"), card.scale("medium")
    assert {e.task for e in medium} == {"cfl-marked-reversal"} and {e.labels["arch"] for e in medium} == set(
        rns_rnn.MODELS)
    assert all((e.task_args["min_length"], e.task_args["max_length"], e.task_args["test_min_length"],
                e.task_args["test_max_length"]) == (40, 80, 40, 100) for e in medium)
    assert len(sc.seeds) >= 3 and sc.train["steps"] == rns_rnn.MEDIUM_STEPS and sc.expected_seconds <= 3600
    from seqzoo.experiments.runner import plan
    from seqzoo.training.run_config import resolve_run

    jobs = plan(card, "medium")
    assert len(jobs) == len(rns_rnn.MODELS) * len(sc.seeds)
    for job in jobs:  # every job's merged settings resolve (model, task and TrainConfig), without training
        p = job.to_payload("unused")
        resolve_run(p["model"], p["task"], model_args=p["model_args"], task_args=p["task_args"], config=p["config"],
                    check=False)


def test_missing_results_are_undecided() -> None:
    assert testing.claim("rns-rnn", "rns_near_bound").evaluate(_results({"cfl-dyck": {"lstm": 0.2}})).held is None
    partial = {t: {"rns_rnn": 0.0, "lstm": 0.1} for t in rns_rnn.TASKS[:2]}
    assert testing.claim("rns-rnn", "rns_lowest").evaluate(_results(partial)).held is None


def test_tiny_reproduce(tmp_path) -> None:
    from seqzoo.experiments.runner import reproduce

    report = reproduce("rns-rnn", scale="tiny", out=tmp_path, workers=1, progress=False, echo=None)
    assert not report.failures and report.runs_total == 10
    verdicts = {c.name: r for c, r in report.claims}
    assert verdicts["rns_near_bound"].held is not None  # both tasks trained: the claim is decided
    # the tiny grid has 2 of the 5 tasks: undecided unless one of its two tasks already fails the claim
    assert verdicts["rns_lowest_among_stacks"].held is not True
    assert "cfl-hardest: not every stack model has runs" in verdicts["rns_lowest_among_stacks"].detail
    assert [r.held for _, r in report.observations][1] is None

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
    assert [o.name for o in get_experiment("rns-rnn").observations] == ["rns_lowest"]
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
    assert verdicts["rns_lowest_among_stacks"].held is None  # the tiny grid has 2 of the 5 tasks
    assert [r.held for _, r in report.observations] == [None]

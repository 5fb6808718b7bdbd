"""Card ``arma``: claim predicates on fabricated results, the coefficient metrics, and a tiny reproduce."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from seqzoo.experiments.card import Entry, EntryResult, Results, Stat
from seqzoo.experiments.cards import arma
from seqzoo.experiments.registry import get_experiment
from seqzoo.layers.cells.arma import ARMACell

ARIMA = np.array([0.12, 0.28, -0.41, -0.19])


def _entry(labels: dict[str, Any], metrics: dict[str, list[float]]) -> EntryResult:
    e = Entry(model=labels["arch"], task="t", labels=labels)
    return EntryResult(e, {"test": {m: Stat.of(v) for m, v in metrics.items()}})


def _results(cell: np.ndarray, arma21: float, real_arma: float) -> Results:
    rec = {c: [float(v), float(v) + 0.01] for c, v in zip(arma.COEFS, cell)}
    rows = [_entry({"exp": "recovery", "arch": "arma"}, {**rec, "rmse": [2.0, 2.0]})]
    for a, v in (("arma", arma21), ("lstm", 2.08), ("gru", 2.06)):
        rows.append(_entry({"exp": "arma21", "arch": a}, {"rmse": [v], "mae": [1.6]}))
    for s in arma.SERIES:
        for a, v in (("arma", real_arma), ("lstm", 30.0), ("gru", 32.0)):
            rows.append(_entry({"exp": "real", "series": s, "arch": a}, {"rmse": [v], "mae": [v * 0.8]}))
    return Results(rows, "rmse")


@pytest.fixture
def fake_refs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arma, "statsmodels_reference", lambda task_args: ARIMA)
    monkeypatch.setattr(arma, "real_baselines", lambda s: {"naive": {"rmse": 31.0, "mae": 25.0, "mse": 961.0}})
    monkeypatch.setattr(arma, "oracle_rmse", lambda task_args: 2.0)


def test_claims_hold_on_good_fabricated_results(fake_refs: None) -> None:
    card = get_experiment("arma")
    verdicts = {c.name: r.held for c, r in card.evaluate(_results(ARIMA + 0.02, 2.03, 31.0))}
    assert verdicts == dict.fromkeys([c.name for c in card.claims], True)


def test_claims_fail_on_bad_fabricated_results(fake_refs: None) -> None:
    card = get_experiment("arma")
    verdicts = {c.name: r.held for c, r in card.evaluate(_results(ARIMA + 0.045, 2.15, 34.0))}
    # 0.045 + 0.01 on the second seed exceeds 0.05: every seed must be within tolerance
    assert verdicts == dict.fromkeys([c.name for c in card.claims], False)


def test_near_oracle_claim_and_the_old_bar_as_observation(fake_refs: None) -> None:
    """The claim measures the cell against the floor of its own test period; "<= 2.1" is only observed."""
    card = get_experiment("arma")
    assert [o.name for o in card.observations] == ["arma21_rmse_le_2.1"] and "arma21_rmse_le_2.1" not in card.causes
    out = {c.name: r for c, r in card.evaluate(_results(ARIMA, 2.095, 31.0))}["arma21_near_oracle"]
    assert out.held is True and out.numbers["arma_minus_oracle"] == 0.095 and out.numbers["bar"] == 2.1
    assert {c.name: r.held for c, r in card.evaluate(_results(ARIMA, 2.101, 31.0))}["arma21_near_oracle"] is False
    assert [r.held for _, r in card.observe(_results(ARIMA, 2.101, 31.0))] == [False]


def test_oracle_of_the_small_grid_test_period() -> None:
    """The floor the card's ARMA(2,1) test period gives: 2.090, 0.09 above the population floor sigma = 2."""
    entry = next(e for e in get_experiment("arma").entries("small") if e.labels == {"exp": "arma21", "arch": "arma"})
    assert arma.oracle_rmse(dict(entry.task_args)) == pytest.approx(2.0903, abs=1e-4)


def test_missing_results_are_undecided(fake_refs: None) -> None:
    card = get_experiment("arma")
    verdicts = {c.name: r.held for c, r in card.evaluate(Results([], "rmse"))}
    assert set(verdicts.values()) == {None}


def test_cell_reports_classical_coefficients() -> None:
    cell = ARMACell(1, 1, p=2, q=2, bias=False)
    coef = cell.coefficients()
    got = cell.report_metrics()
    assert list(got) == list(arma.CELL_COEFS)
    assert got["coef_ma2"] == pytest.approx(float(coef["ma"][1].flatten()[0]))
    assert got["coef_ar1"] == pytest.approx(float(coef["ar"][0].flatten()[0]))


def test_tiny_reproduce_records_coefficients(tmp_path: Path) -> None:
    from seqzoo.experiments.runner import reproduce

    pytest.importorskip("statsmodels", reason="the real series and the ARIMA reference need statsmodels")
    report = reproduce("arma", "tiny", out=tmp_path, workers=1, progress=False, echo=None)
    rec = report.results.find(exp="recovery")
    assert rec is not None and set(arma.COEFS) | set(arma.CELL_COEFS) <= set(rec.metrics["test"])
    verdict = next(r for c, r in report.claims if c.name == "recovery_within_0.05_of_arima")
    assert "cell_only_ar1" in verdict.numbers and "model_ar1" in verdict.numbers
    assert (report.out_dir / "summary.md").is_file()

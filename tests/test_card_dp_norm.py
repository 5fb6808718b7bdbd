"""Card ``dp-norm``: the grid, claim predicates on fabricated results, and a tiny reproduce."""

from __future__ import annotations

import pytest

from seqzoo.experiments import testing
from seqzoo.experiments.card import Entry, EntryResult, Results, Stat
from seqzoo.experiments.cards import dp_norm
from seqzoo.experiments.registry import get_experiment

pytest.importorskip("opacus", reason="the privacy extra (opacus) is not installed")


def _results(acc: dict[tuple[str, float], list[float]], eps: dict[float, float] | None = None) -> Results:
    eps = eps or {1.0: 8.51, 1.5: 4.26}
    out = []
    for (norm, sigma), vals in acc.items():
        test = {"accuracy": Stat.of(vals)}
        if sigma > 0:
            test.update(dp_epsilon=Stat.of([eps[sigma]] * len(vals)), dp_steps=Stat.of([673.0] * len(vals)))
        out.append(EntryResult(Entry("mlp", "digits", labels={"arch": norm, "sigma": sigma}), {"test": test},
                               seeds=list(range(len(vals)))))
    return Results(out, "accuracy", "test")


def _paper_like() -> dict[tuple[str, float], list[float]]:
    acc = {("none", 0.0): [0.97, 0.96]}
    for sigma, drop in ((1.0, 0.0), (1.5, 0.05)):
        acc[("none", sigma)] = [0.80 - drop, 0.82 - drop]
        for norm in ("layer", "group", "batch_public", "batch_mixed"):
            acc[(norm, sigma)] = [0.88 - drop, 0.90 - drop]
    return acc


def test_grid_is_the_spec_setting() -> None:
    card = get_experiment("dp-norm")
    small = card.entries("small")
    assert len(small) == 1 + len(dp_norm.NORMS) * len(dp_norm.SIGMAS) == 11
    by = {(e.labels["arch"], e.labels["sigma"]): e for e in small}
    assert "privacy" not in by[("none", 0.0)].train
    p = by[("batch_public", 1.5)].train["privacy"]
    assert p == {"sigma": 1.5, "clip": 1.0, "delta": 1e-5, "public_split": "valid"}
    assert by[("batch_mixed", 1.0)].train["privacy"]["replication"] is True
    assert all(e.train["steps"] == 673 and e.task_args == {"layout": "rows", "n_valid": 60, "n_test": 300}
               for e in small)
    assert card.scale("small").train["batch_size"] == 64 and len(card.scale("small").seeds) == 3


def test_norm_claim_held_and_not_held() -> None:
    out = testing.claim("dp-norm", "normalized_beat_no_norm").evaluate(_results(_paper_like()))
    assert out.held is True and out.numbers["sigma1.5_layer"] == 0.84 and out.numbers["non_private"] == 0.965
    acc = _paper_like()
    acc[("group", 1.5)] = [0.70, 0.72]  # GroupNorm below no norm at sigma 1.5
    out = testing.claim("dp-norm", "normalized_beat_no_norm").evaluate(_results(acc))
    assert out.held is False and out.numbers["sigma1.5_group"] == 0.71
    del acc[("group", 1.5)]
    assert testing.claim("dp-norm", "normalized_beat_no_norm").evaluate(_results(acc)).held is None


def test_accountant_claim_checks_the_table_and_the_runs() -> None:
    out = testing.claim("dp-norm", "accountant_matches_table").evaluate(_results(_paper_like()))
    assert out.held is True and out.numbers["sigma1_opacus_integer_orders"] == pytest.approx(8.6346, abs=1e-4)
    out = testing.claim("dp-norm", "accountant_matches_table").evaluate(_results(_paper_like(), {1.0: 9.0, 1.5: 4.2}))
    assert out.held is False  # a run that recorded more than the table's eps


def test_tiny_reproduce(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    report = testing.run_tiny("dp-norm", tmp_path / "runs")
    speed = next(r for c, r in report.observations if c.name == "dp_step_speed")  # not a claim of the paper
    assert speed.numbers["ms_seqzoo"] > 0 and speed.numbers["ms_opacus"] > 0
    assert "dp_step_speed" not in [c.name for c, _ in report.claims] and "dp_step_speed" not in get_experiment(
        "dp-norm").causes

"""Card ``bln``: claim predicates on fabricated results, the grid, and a tiny reproduce."""

from __future__ import annotations

import math

from seqzoo.experiments import testing
from seqzoo.experiments.card import Entry, EntryResult, Results, Stat
from seqzoo.experiments.cards import bln
from seqzoo.experiments.registry import get_experiment

METRIC = "accuracy"


def _results(acc: dict[tuple[str, int], float | list[float]]) -> Results:
    return Results.from_records([{"norm": n, "B": b, METRIC: v} for (n, b), v in acc.items()], METRIC)


def _paper_like() -> dict[tuple[str, int], float | list[float]]:
    """BN collapses at B=1, BLN ~ LN at B=1, BLN slightly ahead of LN at B=25."""
    acc: dict[tuple[str, int], float | list[float]] = {(n, b): 0.9 for n in bln.NORMS for b in bln.BATCH_SIZES}
    acc[("bn", 1)] = [0.1, 0.11]
    acc[("ln", 1)] = [0.85, 0.87]
    acc[("bln", 1)] = [0.84, 0.88]
    acc[("ln", 25)], acc[("bln", 25)] = [0.90, 0.91], [0.91, 0.92]
    return acc


def test_registered_and_grid_shape() -> None:
    card = get_experiment("bln")
    small = card.entries("small")
    assert len(small) == len(bln.NORMS) * len(bln.BATCH_SIZES) == 9
    by = {(e.labels["norm"], e.labels["B"]): e for e in small}
    assert by[("bln", 1)].model == "lstm2_bln" and by[("bn", 4)].model == "lstm2_bn"
    assert {e.task_args["layout"] for e in small} == {"rows"}
    # 10 epochs of the 1,197 training digits at every batch size, evaluated once per epoch
    assert {b: by[("ln", b)].train["steps"] for b in bln.BATCH_SIZES} == {1: 11970, 4: 2990, 25: 470}
    assert all(e.train["batch_size"] == e.labels["B"] for e in small)
    assert by[("ln", 25)].train["eval_every"] == 47
    assert len(card.scale("small").seeds) >= 2
    assert card.scale("small").train["clip_norm"] is None and card.scale("small").train["lr"] == 3e-3


def test_claims_held_on_paper_like_results() -> None:
    res = _results(_paper_like())
    for name in ("bn_collapses_b1", "bln_trains_b1", "bln_close_to_ln_b1", "bln_ge_ln_b25"):
        assert testing.claim("bln", name).evaluate(res).held is True, name


def test_claims_not_held() -> None:
    acc = _paper_like()
    acc[("bn", 1)] = [0.5, 0.6]  # BN trains at B=1
    acc[("bln", 1)] = [0.12, 0.1]  # BLN collapses
    acc[("bln", 25)] = [0.88, 0.89]  # 2 points below LN
    res = _results(acc)
    out = testing.claim("bln", "bn_collapses_b1").evaluate(res)
    assert out.held is False and out.numbers["bn_B1"] == 0.55
    assert testing.claim("bln", "bln_trains_b1").evaluate(res).held is False
    assert testing.claim("bln", "bln_close_to_ln_b1").evaluate(res).held is False
    out = testing.claim("bln", "bln_ge_ln_b25").evaluate(res)
    assert out.held is False and out.numbers["gap"] == -0.02


def test_tie_tolerance_and_closeness_bounds() -> None:
    acc = _paper_like()
    acc[("bln", 25)] = [0.901, 0.905]  # 0.2 points below LN's 0.905: within the half-point tie
    acc[("bln", 1)] = [0.80, 0.82]  # 5 points below LN's 0.86: still close
    res = _results(acc)
    assert testing.claim("bln", "bln_ge_ln_b25").evaluate(res).held is True
    assert testing.claim("bln", "bln_close_to_ln_b1").evaluate(res).held is True


def test_nan_counts_as_collapse_and_as_not_training() -> None:
    acc = _paper_like()
    acc[("bn", 1)] = [math.nan, 0.1]
    acc[("bln", 1)] = [0.85, math.nan]
    res = _results(acc)
    assert testing.claim("bln", "bn_collapses_b1").evaluate(res).held is True
    assert testing.claim("bln", "bln_trains_b1").evaluate(res).held is False


def test_trained_cell_without_test_result_reads_as_nan() -> None:
    res = _results(_paper_like())
    hit = res.find(norm="bln", B=1)
    res.entries[res.entries.index(hit)] = EntryResult(Entry("lstm2_bln", "digits", labels=hit.entry.labels),
                                                      {"valid": {METRIC: Stat.of([0.5])}})
    assert testing.claim("bln", "bln_trains_b1").evaluate(res).held is False


def test_missing_results_are_undecided() -> None:
    res = _results({("ln", 25): 0.9, ("bln", 25): 0.9})
    assert testing.claim("bln", "bn_collapses_b1").evaluate(res).held is None
    assert testing.claim("bln", "bln_trains_b1").evaluate(res).held is None
    assert testing.claim("bln", "bln_close_to_ln_b1").evaluate(res).held is None
    assert testing.claim("bln", "bln_ge_ln_b25").evaluate(res).held is True


def test_tiny_reproduce(tmp_path) -> None:
    from seqzoo.experiments.runner import reproduce

    report = reproduce("bln", scale="tiny", out=tmp_path, workers=1, progress=False, echo=None)
    assert not report.failures and report.runs_total == 9
    assert all(r.held is not None for _, r in report.claims)  # every cell trained: all claims decided
    assert (report.out_dir / "accuracy.png").exists()

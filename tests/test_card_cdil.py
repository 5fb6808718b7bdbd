"""Card ``cdil``: matched parameter counts, claim predicates on fabricated results, a tiny reproduce."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from seqzoo.experiments.card import Results
from seqzoo.experiments.cards import cdil
from seqzoo.experiments.registry import get_experiment
from seqzoo.layers import build_layer
from seqzoo.models import create_model

REPO_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _fsdd() -> Path | None:
    for cand in (os.environ.get("SEQZOO_DATA"), REPO_DATA):
        if cand and (Path(cand) / "free-spoken-digit" / "recordings.tar.gz").is_file():
            return Path(cand)
    return None


FSDD = _fsdd()


@pytest.mark.parametrize(("task", "seq_len"), [("xor", 16), ("xor", 64), ("xor", 2048), ("series", 20),
                                               ("series", 1000), ("series", 8000)])
def test_param_counts_match_the_built_models_and_are_comparable(task: str, seq_len: int) -> None:
    d_in, n_classes = (2, 2) if task == "xor" else (1, 10)
    configs = cdil.model_configs(task, seq_len)
    assert set(configs) == set(cdil.ARCHS)
    for arch, (preset, args, count) in configs.items():
        model = create_model(preset, d_input=d_in, d_output=n_classes, **args)
        assert sum(p.numel() for p in model.parameters()) == count, arch
    counts = [c for _, _, c in configs.values()]
    assert max(counts) / min(counts) < 1.25, f"parameter counts not comparable: {counts}"


def test_depths_cover_the_sequence() -> None:
    assert cdil.cdil_levels(64, "xor") == 5  # log2(L) - 1, span 2**6 - 1 = L - 1 (the paper's synthetic setting)
    assert cdil.cdil_levels(1000, "series") == 10
    assert cdil.tcn_levels(64) == 5 and 1 + 4 * (2 ** 5 - 1) >= 64 > 1 + 4 * (2 ** 4 - 1)
    assert cdil.tcn_levels(1000) == 8
    with pytest.raises(ValueError, match="arch must be one of"):
        cdil.param_count("gru", 8, 1, 1, 2)
    with pytest.raises(ValueError, match="seq_len must be >= 4"):
        cdil.cdil_levels(2, "xor")


def test_small_grid_is_the_four_models_on_both_tasks() -> None:
    card = get_experiment("cdil")
    small = card.entries("small")
    assert sorted((e.labels["task"], e.labels["arch"]) for e in small) == sorted(
        (t, a) for t in ("xor", "digits") for a in cdil.ARCHS)
    assert len(card.scale("small").seeds) >= 3
    xor = [e for e in small if e.labels["task"] == "xor"]
    assert {e.labels["L"] for e in xor} == {64} and {e.train["steps"] for e in xor} == {cdil.SMALL_XOR_STEPS}
    assert {e.task_args["downsample"] for e in small if e.labels["task"] == "digits"} == {4}
    paper_tasks = {e.labels["task"] for e in card.entries("paper")}
    assert {"xor", "digits", "ACSF1", "PigCVP"} <= paper_tasks


def _rows(xor: dict[str, list[float]], digits: dict[str, list[float]]) -> Results:
    rows = [{"arch": a, "task": "xor", "L": 64, "accuracy": v} for a, v in xor.items()]
    rows += [{"arch": a, "task": "digits", "L": 1000, "accuracy": v} for a, v in digits.items()]
    return Results.from_records(rows, "accuracy")


def test_claims_on_fabricated_results() -> None:
    card = get_experiment("cdil")
    good = _rows({"cdil": [0.97, 0.99], "dil": [0.95, 0.5], "tcn": [0.5, 0.51], "lstm": [0.5, 0.5]},
                 {"cdil": [0.8, 0.82], "dil": [0.7, 0.75], "tcn": [0.6, 0.62], "lstm": [0.3, 0.2]})
    verdicts = {c.name: r.held for c, r in card.evaluate(good)}
    assert verdicts == {"cdil_solves_xor": True, "cdil_beats_tcn_lstm_on_real_series": True}
    assert {o.name: r.held for o, r in card.observe(good)} == {"cdil_best_on_real_series": True}

    # one seed on the plateau pulls the mean under 96%; DIL above CDIL on digits decides only the observation
    bad = _rows({"cdil": [0.99, 0.5], "dil": [0.5, 0.5], "tcn": [0.5, 0.5], "lstm": [0.5, 0.5]},
                {"cdil": [0.8, 0.8], "dil": [0.85, 0.83], "tcn": [0.6, 0.6], "lstm": [0.3, 0.3]})
    out = {c.name: r for c, r in card.evaluate(bad)}
    assert out["cdil_solves_xor"].held is False and out["cdil_solves_xor"].numbers["cdil"] == 0.745
    real = out["cdil_beats_tcn_lstm_on_real_series"]
    assert real.held is True and real.numbers["dil"] == 0.84  # DIL is reported, not compared
    assert "(held if cdil >= the best of tcn/lstm)" in real.detail
    obs = {o.name: r for o, r in card.observe(bad)}["cdil_best_on_real_series"]
    assert obs.held is False
    assert "cdil 0.8 ± 0 vs dil 0.84 ± 0.014" in obs.detail
    assert "(held if cdil >= the best of dil/tcn/lstm)" in obs.detail

    # the TCN above CDIL fails the claim
    tcn_ahead = _rows({"cdil": [0.97]}, {"cdil": [0.6, 0.62], "dil": [0.5], "tcn": [0.65, 0.66], "lstm": [0.3]})
    assert {c.name: r.held for c, r in card.evaluate(tcn_ahead)}["cdil_beats_tcn_lstm_on_real_series"] is False

    # a missing cell makes a claim undecided, not false
    partial = _rows({"cdil": [0.97]}, {"cdil": [0.8], "dil": [0.7]})
    out = {c.name: r for c, r in card.evaluate(Results(partial.entries[:1], "accuracy"))}
    assert out["cdil_solves_xor"].held is True
    assert out["cdil_beats_tcn_lstm_on_real_series"].held is None


def test_plot_draws_a_partial_grid(tmp_path: Path) -> None:
    card = get_experiment("cdil")
    res = _rows({"cdil": [0.97, 0.99], "tcn": [0.5, 0.51]}, {"cdil": [0.8], "lstm": [0.3]})
    card.plots[0].draw(res, tmp_path / "accuracy.png")
    assert (tmp_path / "accuracy.png").stat().st_size > 1000


@pytest.mark.skipif(FSDD is None, reason="free-spoken-digit/recordings.tar.gz is not present: set SEQZOO_DATA to "
                                         "the shared data folder")
def test_tiny_reproduce(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from seqzoo.experiments.runner import reproduce

    monkeypatch.setenv("SEQZOO_DATA", str(FSDD))
    report = reproduce("cdil", scale="tiny", out=tmp_path / "runs", progress=False, echo=None)
    assert not report.failures and report.runs_total == 8
    assert set(report.verdicts) == {"cdil_solves_xor", "cdil_beats_tcn_lstm_on_real_series"}
    assert all(v in ("HELD", "NOT HELD") for v in report.verdicts.values())
    assert (tmp_path / "runs" / "cdil" / "tiny" / "accuracy.png").is_file()


@pytest.mark.parametrize(("levels", "length"), [(3, 40), (cdil.cdil_levels(1000, "series"), 1000)])
def test_circular_and_zero_padding_differ_within_half_the_span_of_an_end(levels: int, length: int) -> None:
    """Same weights, circular vs zero padding: outputs agree exactly where no tap of any level crosses an end
    (farther than (span - 1) / 2 from both ends) and differ everywhere else. At the card's real-series depth
    (10 levels, dilations up to 512, L = 1,000) that is every position, so the two baselines differ on the whole
    recording, not only at its (quiet) ends."""
    torch.manual_seed(0)
    circ = build_layer("cdil", 8, 8, levels=levels, padding="circular").double()
    zero = build_layer("cdil", 8, 8, levels=levels, padding="zeros").double()
    zero.load_state_dict(circ.state_dict())
    x = torch.randn(2, length, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        ha, hb = circ(x)[0], zero(x)[0]
    half = (circ.receptive_field() - 1) // 2
    differs = (ha - hb).abs().amax(dim=(0, 2)) > 1e-12
    inner = [p for p in range(length) if half <= p < length - half]
    assert not differs[inner].any()
    assert differs[[p for p in range(length) if p not in inner]].all()
    assert (not inner) == (levels == 10)

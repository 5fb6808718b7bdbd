"""Card ``brt``: grid shape, claim predicates on fabricated results, the step-time measurement, a tiny reproduce."""

from __future__ import annotations

from seqzoo.experiments import testing
from seqzoo.experiments.card import Entry, EntryResult, Results, Stat
from seqzoo.experiments.cards import brt
from seqzoo.experiments.registry import get_experiment


def _results(recall: dict[str, list[float]], filler: dict[str, list[float]], lm: dict[str, list[float]],
             timing: dict[str, list[float]] | None = None, deeper: dict[str, list[float]] | None = None) -> Results:
    out = []
    for arch in brt.ARCHS:
        if arch in recall:
            metrics = {"test": {"recall_bpc": Stat.of(recall[arch]), "filler_bpc": Stat.of(filler[arch])}}
            derived = {"time_vs_slide": Stat.of(timing[arch])} if timing and arch in timing else {}
            if deeper and arch in deeper:
                derived["time_vs_deeper_slide"] = Stat.of(deeper[arch])
            if derived:
                metrics["derived"] = derived
            out.append(EntryResult(Entry(brt.PRESETS[arch], "title-recall", labels={"arch": arch, "task": "recall"}),
                                   metrics, seeds=[0, 1, 2]))
        if arch in lm:
            out.append(EntryResult(Entry(brt.PRESETS[arch], "lm", labels={"arch": arch, "task": "lm"}),
                                   {"test": {"bpc": Stat.of(lm[arch])}}, seeds=[0, 1, 2]))
    return Results(out, "recall_bpc", "test")


GOOD = _results({"slide": [4.7, 4.8, 4.75], "brt": [2.0, 2.5, 3.0], "brt_lstm": [3.0, 3.2, 3.4]},
                {"slide": [1.00, 1.01, 1.02], "brt": [1.02, 1.03, 1.0], "brt_lstm": [1.0, 1.0, 1.0]},
                {"slide": [2.6, 2.6, 2.6], "brt": [2.5, 2.5, 2.5], "brt_lstm": [2.55, 2.56, 2.6]},
                {"brt": [1.1, 1.2, 1.15], "brt_lstm": [1.2, 1.2, 1.2]}, {"brt": [0.95, 1.0, 0.9]})


def test_grid_shape() -> None:
    small = get_experiment("brt").entries("small")
    assert sorted((e.labels["task"], e.labels["arch"]) for e in small) == sorted(
        (t, a) for t in ("recall", "lm") for a in brt.ARCHS)
    for e in small:
        lk = e.model_args["layer_kwargs"]
        assert lk["recurrent_layers"] == ([] if e.labels["arch"] == "slide" else [lk["depth"] // 2])
        assert e.model == brt.PRESETS[e.labels["arch"]]
        if e.labels["task"] == "recall":  # the task's window is the model's block size
            assert e.task_args["window"] == lk["window"]


def test_card_models_use_the_papers_gate_initialisation() -> None:
    """Regression (issue 20): the card's BRT starts with the paper's (meliad's) fixed gate, keeping about half of
    the state per block, and no remember offset of its own (``remember_bias`` is not set by the card)."""
    import torch

    from seqzoo.models import create_model

    for e in get_experiment("brt").entries("small"):
        assert "remember_bias" not in e.model_args["layer_kwargs"]
        if e.labels == {"arch": "brt", "task": "recall"}:
            torch.manual_seed(0)
            model = create_model(e.model, **e.model_args, vocab_size=30, d_input=None, d_output=30)
            gates = [m for m in model.modules() if type(m).__name__ == "FixedGate"]
            assert len(gates) == 1 and abs(float(gates[0].keep_fraction().detach().mean()) - 0.5) < 0.03


def test_claims_hold_on_good_results() -> None:
    testing.assert_verdicts("brt", GOOD, {"recall_beyond_window": True, "filler_similar": True,
                                          "step_time_as_extra_layer": True, "lstm_gate_not_better": True})
    assert testing.claim("brt", "step_time").evaluate(GOOD).held is True


def test_claims_fail_on_bad_results() -> None:
    bad = _results({"slide": [4.7, 4.7, 4.7], "brt": [4.0, 4.0, 3.9], "brt_lstm": [3.0, 3.0, 3.0]},
                   {"slide": [1.0, 1.0, 1.0], "brt": [1.1, 1.1, 1.1], "brt_lstm": [1.0, 1.0, 1.0]},
                   {"slide": [2.6, 2.6, 2.6], "brt": [2.5, 2.5, 2.5], "brt_lstm": [2.4, 2.4, 2.4]},
                   {"brt": [1.4, 1.35, 1.32]}, {"brt": [1.15, 1.12, 1.2]})
    testing.assert_verdicts("brt", bad, {"recall_beyond_window": False, "filler_similar": False,
                                         "step_time_as_extra_layer": False, "lstm_gate_not_better": False})
    assert testing.claim("brt", "step_time").evaluate(bad).held is False
    # exactly one bit below Slide holds
    edge = _results({"slide": [4.7], "brt": [3.7], "brt_lstm": [4.0]}, {"slide": [1.0], "brt": [1.049],
                                                                         "brt_lstm": [1.0]}, {})
    assert testing.claim("brt", "recall_beyond_window").evaluate(edge).held is True
    assert testing.claim("brt", "filler_similar").evaluate(edge).held is True
    assert testing.claim("brt", "lstm_gate_not_better").evaluate(edge).held is None  # no LM results: undecided


def test_step_time_claim_is_undecided_without_the_deeper_slide() -> None:
    """A run folder timed before issue 20 has only ``time_vs_slide``: the re-worded claim (against Slide with one
    more layer, the paper's Slide:13) is undecided there, while the first wording is still judged."""
    old = _results({"slide": [4.7], "brt": [4.7], "brt_lstm": [4.7]}, {"slide": [1.0], "brt": [1.0],
                                                                      "brt_lstm": [1.0]}, {}, {"brt": [1.51]})
    assert testing.claim("brt", "step_time_as_extra_layer").evaluate(old).held is None
    card = get_experiment("brt")
    assert [o.name for o in card.observations] == ["step_time"] and "step_time" not in card.causes
    assert testing.claim("brt", "step_time").evaluate(old).held is False


def test_step_time_ratios_are_positive() -> None:
    entry = next(e for e in get_experiment("brt").entries("tiny") if e.labels == {"arch": "brt", "task": "recall"})
    ratios = brt.step_time_ratios(entry, batch_size=2, seq_len=16, rounds=1)
    assert set(ratios) == {"time_vs_slide", "time_vs_deeper_slide"}
    assert all(0.0 < r < 100.0 for r in ratios.values())


def test_tiny_reproduce(tmp_path) -> None:
    report = testing.run_tiny("brt", tmp_path, workers=1)
    derived = report.results.find(arch="brt", task="recall").metrics["derived"]
    assert derived["time_vs_slide"].mean > 0 and derived["time_vs_deeper_slide"].mean > 0
    assert any(p.name == brt.TIMING_FILE for p in tmp_path.rglob("*"))

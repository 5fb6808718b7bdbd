"""Card ``qnn``: grid shape, claim predicates on fabricated results (each can fail), tiny reproduce."""

from __future__ import annotations

import pytest

from seqzoo.experiments import testing
from seqzoo.experiments.card import Entry, EntryResult, Results, Stat
from seqzoo.experiments.cards import qnn
from seqzoo.experiments.registry import get_experiment


def _results(acc: dict[str, list[float]], ppl: dict[str, list[float]]) -> Results:
    out = [EntryResult(Entry("mlp_q", "digits", labels={"arch": a, "part": "digits"}),
                       {"test": {"accuracy": Stat.of(v)}}, seeds=list(range(len(v)))) for a, v in acc.items()]
    out += [EntryResult(Entry("lstm_q", "lm", labels={"arch": p, "part": "lm"}),
                        {"test": {"perplexity": Stat.of(v)}}, seeds=list(range(len(v)))) for p, v in ppl.items()]
    return Results(out, "perplexity", "test")


GOOD_ACC = {"mlp_fp": [0.97, 0.96, 0.97], "mlp_w1a1": [0.95, 0.94, 0.95]}
GOOD_PPL = {"fp": [90.0, 91.0, 89.0], "w4a4": [95.0, 96.0, 94.0], "w2a2": [120.0, 118.0, 121.0],
            "w1a1": [200.0, 190.0, 210.0]}


def test_small_grid_and_models() -> None:
    card = get_experiment("qnn")
    small = card.entries("small")
    assert sorted(e.labels["arch"] for e in small) == sorted(qnn.DIGIT_ARCHS + qnn.PRECISIONS + (qnn.SCALED,))
    lm = {e.labels["arch"]: e for e in small if e.task == "lm"}
    assert lm["fp"].model_args["quant"] is None
    assert lm["w4a4"].model_args["quant"] == "w4a4"
    assert {e.model_args["d_model"] for e in lm.values()} == {qnn.SMALL["lm_width"]}  # only quant differs
    assert lm["w1a1"].model_args["layer_kwargs"] == {"quant_kwargs": {"weight_scale": False}}
    assert "layer_kwargs" not in lm[qnn.SCALED].model_args and lm[qnn.SCALED].model_args["quant"] == "w1a1"
    assert card.scale("small").seeds == (0, 1, 2)


def _recurrent_weight(entry: Entry):
    """The W_hh the card's LSTM of ``entry`` multiplies with in its forward pass (shadow weights kept)."""
    import torch

    from seqzoo.models import create_model

    torch.manual_seed(0)
    model = create_model(entry.model, **entry.model_args, vocab_size=20, d_input=None, d_output=20)
    cell = model.layers[0].cell
    return cell.weight_hh.detach(), cell.quant.weight(cell.weight_hh).detach()


def test_card_w1a1_lstm_uses_the_papers_plain_sign_weights() -> None:
    """Regression (issue 20): the card's W1/A1 LSTM multiplies with sign(w) in {-1, +1}, as the paper (spec §8.1),
    not with alpha_row * sign(w); the diagnostic entry keeps the per-row scale alpha = mean|w_row|."""
    import torch

    lm = {e.labels["arch"]: e for e in get_experiment("qnn").entries("small") if e.task == "lm"}
    shadow, used = _recurrent_weight(lm["w1a1"])
    assert torch.equal(used, torch.where(shadow >= 0, 1.0, -1.0))
    shadow, used = _recurrent_weight(lm[qnn.SCALED])
    alpha = shadow.abs().mean(1, keepdim=True)
    assert torch.allclose(used, alpha * torch.where(shadow >= 0, 1.0, -1.0))
    assert float(alpha.max()) < 0.5  # so the two entries differ: the scale is far from 1 at initialisation


def test_claims_hold_on_paper_like_results() -> None:
    res = _results(GOOD_ACC, GOOD_PPL)
    testing.assert_verdicts("qnn", res, {"binary_mlp_within_5_points": True, "w4a4_within_10_percent": True,
                                         "w1a1_clearly_worse": True})
    out = testing.judge("qnn", "w1a1_clearly_worse", res)
    assert out.numbers["w2a2_over_fp"] == pytest.approx(119.667 / 90.0, abs=1e-3)


def test_claims_fail_when_the_numbers_do_not_support_them() -> None:
    res = _results({"mlp_fp": [0.97], "mlp_w1a1": [0.90]},
                   {"fp": [90.0], "w4a4": [100.0], "w2a2": [105.0], "w1a1": [110.0]})
    testing.assert_verdicts("qnn", res, {"binary_mlp_within_5_points": False, "w4a4_within_10_percent": False,
                                         "w1a1_clearly_worse": False})
    missing = _results({"mlp_fp": [0.97]}, {"fp": [90.0]})
    testing.assert_verdicts("qnn", missing, {"binary_mlp_within_5_points": None, "w4a4_within_10_percent": None})


def test_kernel_claim_measures_at_the_tiny_size_without_model_arguments() -> None:
    res = _results(GOOD_ACC, GOOD_PPL)
    assert qnn.kernel_size(res) == qnn.KERNEL_N_TINY
    out = testing.judge("qnn", "packed_kernel_2x", res)
    if out.held is not None:  # None: no C kernel on this machine
        assert out.numbers["n"] == qnn.KERNEL_N_TINY and out.numbers["speedup_min"] > 0


def test_tiny_reproduce(tmp_path) -> None:
    from seqzoo.tasks import create_task

    try:
        create_task("lm", dataset="ptb", max_vocab=50)
    except FileNotFoundError:
        pytest.skip("the tiny scale reads the Penn Treebank files (ptb.*.txt under SEQZOO_DATA or ../shared/data), "
                    "which are not on this machine")
    report = testing.run_tiny("qnn", tmp_path, workers=1)
    assert report.runs_total == 6
    verdicts = {c.name: r for c, r in report.claims}
    assert verdicts["w4a4_within_10_percent"].numbers["fp_test_ppl"] > 1

"""Card ``translation``: grid shape and the claim predicates on fabricated derived numbers."""

from __future__ import annotations

from seqzoo.experiments.card import Entry, EntryResult, Results, Stat
from seqzoo.experiments.cards import translation as card
from seqzoo.experiments.registry import get_experiment


def _results(per_arch: dict[str, dict[str, float | list[float]]], decode: int = 1000) -> Results:
    out = []
    for arch, metrics in per_arch.items():
        stats = {k: Stat.of(v if isinstance(v, list) else [v]) for k, v in metrics.items()}
        out.append(EntryResult(Entry(model=arch, task="translation", labels={"arch": arch, "decode": decode}),
                               {"derived": stats}))
    return Results(out, card.CARD.metric, "derived")


GOOD = {
    "gnmt_small": {"train_loss": [3.1, 3.2, 3.0], "train_seconds": 300.0, "greedy_bleu": 10.0, "beam5_a0_bleu": 10.5,
                   "beam5_lpcp_bleu": 11.0, "beam5_a0_len_ratio": 0.85, "beam5_lpcp_len_ratio": 0.97,
                   "greedy_seconds": 20.0, "beam5_lpcp_seconds": 60.0, "int8_speedup": [2.3, 2.1, 2.4],
                   "int8_bleu_loss": 0.2, "int8_bleu": 9.8},
    "gnmt_plain8": {"train_loss": [4.0, 4.1, 4.2]},
    "convs2s_small": {"train_loss": 3.0, "train_seconds": 100.0, "greedy_bleu": 11.0, "beam5_a0_bleu": 11.5,
                      "beam5_lpcp_bleu": 12.0, "beam5_a0_len_ratio": 0.9, "beam5_lpcp_len_ratio": 1.02,
                      "greedy_seconds": 5.0, "beam5_lpcp_seconds": 15.0},
}


def test_grid_has_three_models_below_medium_and_two_at_medium() -> None:
    c = get_experiment("translation")
    assert set(c.scales) == {"tiny", "small", "medium"}
    for scale in c.scales:
        entries = c.entries(scale)
        # the medium grid leaves out the 8+8 ablation (its claim is decided at small scale)
        archs = [a for a in card.ARCHS if scale != "medium" or a != "gnmt_plain8"]
        assert [e.labels["arch"] for e in entries] == archs
        assert len({(e.train["steps"], e.task_args["spm_vocab"]) for e in entries}) == 1  # equal budgets
    plain = next(e for e in c.entries("small") if e.labels["arch"] == "gnmt_plain8")
    assert plain.model_args["residual"] is False and plain.model_args["n_encoder_layers"] == 8


def test_claims_hold_on_good_numbers_and_fail_on_bad_ones() -> None:
    res = _results(GOOD)
    verdicts = {c.name: c.evaluate(res).held for c in card.CARD.claims}
    assert verdicts == {"residual_helps_depth": True, "beam_lpcp_beats_greedy": True, "convs2s_faster": True,
                        "int8_decoding": True, "medium_anchors": False}
    bad = {a: dict(m) for a, m in GOOD.items()}
    bad["gnmt_plain8"]["train_loss"] = 2.0
    bad["gnmt_small"]["beam5_lpcp_len_ratio"] = 0.8  # further from 1 than alpha = 0's 0.85
    bad["convs2s_small"]["train_seconds"] = 400.0
    bad["gnmt_small"]["int8_bleu_loss"] = 0.8
    res = _results(bad)
    assert not any(c.evaluate(res).held for c in card.CARD.claims)
    # the anchors are the medium scale's claim: undecided when fewer than the whole test set was decoded
    small = next(c for c in card.CARD.claims if c.name == "medium_anchors").evaluate(_results(GOOD, decode=60))
    assert small.held is None and "medium scale" in small.detail
    no_ablation = _results({a: m for a, m in GOOD.items() if a != "gnmt_plain8"})
    residual = next(c for c in card.CARD.claims if c.name == "residual_helps_depth").evaluate(no_ablation)
    assert residual.held is None and "small scale" in residual.detail
    anchors = {a: dict(m) for a, m in GOOD.items()}
    anchors["gnmt_small"]["beam5_lpcp_bleu"], anchors["convs2s_small"]["beam5_lpcp_bleu"] = 28.5, 34.0
    assert next(c for c in card.CARD.claims if c.name == "medium_anchors").evaluate(_results(anchors)).held


def test_missing_cells_leave_claims_undecided() -> None:
    res = _results({"gnmt_small": GOOD["gnmt_small"]})
    assert next(c for c in card.CARD.claims if c.name == "residual_helps_depth").evaluate(res).held is None

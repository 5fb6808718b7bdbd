"""Card ``rns-rnn-lm``: parameter matching, the grid, claim predicates on fabricated results, a tiny reproduce."""

from __future__ import annotations

import pytest

from seqzoo.experiments import testing
from seqzoo.experiments.card import EntryResult, Results, Stat
from seqzoo.experiments.cards import rns_rnn_lm
from seqzoo.experiments.registry import get_experiment

CARD = get_experiment("rns-rnn-lm")
UNIGRAM = 196.5


def _results(ppl: dict[str, float | list[float]], scale: str = "small") -> Results:
    """Results on the card's real entries of ``scale`` (so parameter counts are computed) with fabricated ppl."""
    out = []
    for e in CARD.entries(scale):
        arch = e.labels["arch"]
        if arch in ppl:
            vals = ppl[arch] if isinstance(ppl[arch], list) else [ppl[arch]]
            stats = {"test": {"perplexity": Stat.of(vals)}, "valid": {"perplexity": Stat.of([v + 5 for v in vals])}}
            out.append(EntryResult(e, stats, seeds=list(range(len(vals)))))
    return Results(out, CARD.metric, CARD.split)


@pytest.fixture
def unigram(monkeypatch):
    monkeypatch.setattr(rns_rnn_lm, "unigram_perplexity", lambda task_args, split="test": UNIGRAM)


def test_registered_and_grid_shape() -> None:
    small = CARD.entries("small")
    assert [e.labels["arch"] for e in small] == ["rns", "lstm"]
    rns, lstm = small
    assert rns.model == "rns_rnn_limited" and lstm.model == "lstm"
    assert rns.model_args["layer_kwargs"] == {"n_states": 1, "n_symbols": 3, "window": 10}
    assert rns.task_args == lstm.task_args == {"dataset": "ptb", "bptt": 35, "max_vocab": 2000}
    assert CARD.scale("small").seeds == (0, 1, 2)
    assert CARD.scale("small").train["batch_size"] == 32 and CARD.metric == "perplexity"
    assert {e.labels["arch"] for e in CARD.entries("tiny")} == {"rns", "lstm"}


def test_lstm_is_parameter_matched() -> None:
    for scale in ("small", None):
        rns, lstm = CARD.entries(scale)
        vocab = rns_rnn_lm._vocab_of(rns)
        n_rns = rns_rnn_lm.count_params(rns.model, rns.model_args, vocab)
        n = {h: rns_rnn_lm.count_params("lstm", {"d_model": h}, vocab) for h in range(2, 300)}
        best = min(n, key=lambda h: abs(n[h] - n_rns))
        assert lstm.model_args["d_model"] == best
        assert abs(n[best] - n_rns) / n_rns < 0.01
    assert CARD.entries("small")[1].model_args["d_model"] == 129  # 652,160 vs the RNS-RNN's 650,341


def test_parameter_count_matches_built_model() -> None:
    from seqzoo.models import create_model

    rns = CARD.entries("tiny")[0]
    m = create_model(rns.model, **rns.model_args, vocab_size=50, d_input=None, d_output=50)
    assert rns_rnn_lm.count_params(rns.model, rns.model_args, 50) == sum(p.numel() for p in m.parameters())


def test_rns_lower_held_and_not_held(unigram) -> None:
    claim = testing.claim("rns-rnn-lm", "rns_lower_perplexity")
    out = claim.evaluate(_results({"rns": [120.0, 122.0], "lstm": [125.0, 127.0]}))
    assert out.held is True
    assert out.numbers["difference"] == pytest.approx(-5.0)
    assert out.numbers["unigram_test_ppl"] == UNIGRAM
    assert out.numbers["rns_params"] == 650341 and out.numbers["lstm_params"] == 652160
    assert out.numbers["rns_test_ppl_seeds"] == [120.0, 122.0]
    assert "larger than" in out.detail
    out = claim.evaluate(_results({"rns": [126.0, 130.0], "lstm": [125.0, 127.0]}))
    assert out.held is False and out.numbers["difference"] == pytest.approx(2.0)
    assert "not larger" in out.detail


def test_beat_unigram_held_and_not_held(unigram) -> None:
    claim = testing.claim("rns-rnn-lm", "both_beat_unigram")
    assert claim.evaluate(_results({"rns": 120.0, "lstm": 125.0})).held is True
    out = claim.evaluate(_results({"rns": 120.0, "lstm": 200.0}))
    assert out.held is False and out.numbers["lstm_test_ppl"] == 200.0


def test_missing_results_are_undecided(monkeypatch) -> None:
    assert testing.claim("rns-rnn-lm", "rns_lower_perplexity").evaluate(_results({"rns": 120.0})).held is None
    assert testing.claim("rns-rnn-lm", "both_beat_unigram").evaluate(_results({"lstm": 120.0})).held is None

    def no_corpus(task_args, split="test"):
        raise FileNotFoundError("no PTB here")

    monkeypatch.setattr(rns_rnn_lm, "unigram_perplexity", no_corpus)
    both = _results({"rns": 120.0, "lstm": 125.0})
    assert testing.claim("rns-rnn-lm", "both_beat_unigram").evaluate(both).held is None  # no baseline: undecided
    out = testing.claim("rns-rnn-lm", "rns_lower_perplexity").evaluate(both)
    assert out.held is True and out.numbers["unigram_test_ppl"] is None
    # plain records (no task arguments): no baseline, no parameter counts, the main claim still decided
    plain = Results.from_records([{"arch": "rns", "perplexity": 1.0}, {"arch": "lstm", "perplexity": 2.0}],
                                 "perplexity")
    out = testing.claim("rns-rnn-lm", "rns_lower_perplexity").evaluate(plain)
    assert out.held is True and "rns_params" not in out.numbers


def test_plot_from_fabricated_results(unigram, tmp_path) -> None:
    path = tmp_path / "perplexity.png"
    CARD.plots[0].draw(_results({"rns": [120.0, 122.0], "lstm": [125.0, 127.0]}), path)
    assert path.is_file() and path.stat().st_size > 0


def _ptb_available() -> bool:
    from seqzoo.tasks import create_task

    try:
        create_task("lm", dataset="ptb", max_vocab=50)
    except FileNotFoundError:
        return False
    return True


def test_tiny_reproduce(tmp_path) -> None:
    if not _ptb_available():
        pytest.skip("the tiny scale reads the Penn Treebank files (penn-treebank/ptb.*.txt under SEQZOO_DATA or "
                    "../shared/data), which are not on this machine")
    from seqzoo.experiments.runner import reproduce

    report = reproduce("rns-rnn-lm", scale="tiny", out=tmp_path, workers=1, progress=False, echo=None)
    assert not report.failures and report.runs_total == 2
    verdicts = {c.name: r for c, r in report.claims}
    assert verdicts["rns_lower_perplexity"].held is not None
    assert verdicts["both_beat_unigram"].held is not None
    assert verdicts["rns_lower_perplexity"].numbers["unigram_test_ppl"] > 1
    assert (report.out_dir / "perplexity.png").is_file()

"""Card ``gcnn``: grid and parameter matching, claim predicates on fabricated results, the stepped LSTM scorer,
and a tiny reproduce (tiny-shakespeare, skipped when the shared data is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from seqzoo.experiments import testing
from seqzoo.experiments.card import Entry, EntryResult, Results, Stat
from seqzoo.experiments.cards import gcnn
from seqzoo.experiments.latency import (
    batched_throughput,
    lstm_cell_like,
    stepped_nll,
    stepped_outputs,
    stream_responsiveness,
)
from seqzoo.experiments.registry import get_experiment
from seqzoo.models import create_model

REPO_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _shared_data() -> Path | None:
    for cand in (os.environ.get("SEQZOO_DATA"), REPO_DATA):
        if cand and (Path(cand) / "tiny-shakespeare").is_dir() and (Path(cand) / "penn-treebank").is_dir():
            return Path(cand)
    return None


DATA = _shared_data()
needs_data = pytest.mark.skipif(DATA is None, reason="penn-treebank/ and tiny-shakespeare/ are not present: set "
                                                     "SEQZOO_DATA to the shared data folder")


def _results(ppl: dict[tuple[str, str], float], data: str = "ptb", budget_s: float = 240.0) -> Results:
    """Validation perplexities per ``(arch, budget)`` as the runner would aggregate them."""
    out = []
    for (arch, budget), value in ppl.items():
        train = {"time_budget": budget_s} if budget == "time" else {"steps": 600}
        entry = Entry("gcnn" if arch != "lstm" else "lstm_native", "lm",
                      labels={"arch": arch, "budget": budget, "data": data}, train=train)
        out.append(EntryResult(entry, {"valid": {"perplexity": Stat.of([value])}}, seeds=[0]))
    return Results(out, "perplexity", "valid")


def test_registered_and_small_grid() -> None:
    card = get_experiment("gcnn")
    small = card.entries("small")
    assert len(small) == 7  # the equal-time pair, then the four activations and the LSTM at equal steps
    assert [(e.labels["arch"], e.labels["budget"]) for e in small[:2]] == [("glu", "time"), ("lstm", "time")]
    assert {e.labels["arch"] for e in small[2:6]} == set(gcnn.ACTIVATIONS)
    assert (small[6].model, small[6].labels["budget"]) == ("lstm_native", "steps")
    assert small[6].model_args == small[1].model_args  # the equal-time LSTM, trained for the activations' steps
    assert all(e.task_args["dataset"] == "ptb" and e.model_args.get("head") == "adaptive" for e in small)
    assert all(e.train["time_budget"] == gcnn.SMALL_SECONDS for e in small[:2])
    assert len({e.train["steps"] for e in small[2:]}) == 1  # equal steps for the ablation
    assert len(card.scale("small").seeds) >= 3


def test_medium_scale_budget() -> None:
    """Medium: the small scale's models, several PTB epochs per activation, a longer equal-time budget, 3 seeds,
    an expected time within an hour on 2 cores."""
    card = get_experiment("gcnn")
    small, medium = card.entries("small"), card.entries("medium")
    assert [e.model_args for e in medium] == [e.model_args for e in small]
    sc = card.scale("medium")
    assert len(sc.seeds) >= 3 and sc.workers == 2 and sc.expected_seconds <= 3600
    steps = {e.train["steps"] for e in medium if e.labels["budget"] == "steps"}
    assert steps == {gcnn.MEDIUM_STEPS} and gcnn.MEDIUM_STEPS * 32 * 35 >= 2 * 929_589  # >= 2 epochs of PTB train
    assert all(e.train["time_budget"] > gcnn.SMALL_SECONDS for e in medium if e.labels["budget"] == "time")
    assert all(e.train["steps"] % e.train["eval_every"] == 0 for e in medium if e.labels["budget"] == "steps")


def test_lstm_matches_gcnn_parameter_count() -> None:
    small = get_experiment("gcnn").entries("small")
    n_gcnn = gcnn.count_params("gcnn", small[0].model_args, gcnn.VOCAB["ptb"])
    n_lstm = gcnn.count_params("lstm_native", small[1].model_args, gcnn.VOCAB["ptb"])
    assert abs(n_lstm - n_gcnn) / n_gcnn < 0.01
    h = small[1].model_args["d_model"]  # the closest width: one unit more or less is no closer
    for other in (h - 1, h + 1):
        n = gcnn.count_params("lstm_native", {"d_model": other, "head": "adaptive"}, gcnn.VOCAB["ptb"])
        assert abs(n - n_gcnn) >= abs(n_lstm - n_gcnn)


def test_activation_order() -> None:
    claim = testing.claim("gcnn", "activation_order")
    good = {("glu", "steps"): 150.0, ("relu", "steps"): 150.0, ("gtu", "steps"): 160.0, ("tanh", "steps"): 170.0}
    out = claim.evaluate(_results(good))
    assert out.held is True and out.numbers["ppl_glu"] == 150.0
    bad = {**good, ("glu", "steps"): 155.0}  # GLU worse than ReLU
    assert claim.evaluate(_results(bad)).held is False
    ties = {**good, ("gtu", "steps"): 150.0}  # ReLU < GTU is strict
    assert claim.evaluate(_results(ties)).held is False
    assert claim.evaluate(_results({("glu", "steps"): 1.0})).held is None  # missing activations: undecided


def test_equal_time() -> None:
    claim = testing.claim("gcnn", "gcnn_matches_lstm_at_equal_time")
    out = claim.evaluate(_results({("glu", "time"): 109.0, ("lstm", "time"): 100.0}))
    assert out.held is True and out.numbers["ratio"] == pytest.approx(1.09) and out.numbers["time_budget_s"] == 240
    out = claim.evaluate(_results({("glu", "time"): 111.0, ("lstm", "time"): 100.0}))
    assert out.held is False
    assert claim.evaluate(_results({("glu", "time"): 100.0})).held is None


def test_equal_steps() -> None:
    """The claim since issue 20 (round 6): GCNN-GLU vs the equal-parameter LSTM after the same steps."""
    claim = testing.claim("gcnn", "gcnn_matches_lstm_at_equal_steps")
    out = claim.evaluate(_results({("glu", "steps"): 109.0, ("lstm", "steps"): 100.0}))
    assert out.held is True and out.numbers["ratio"] == pytest.approx(1.09) and out.numbers["steps"] == 600
    assert claim.evaluate(_results({("glu", "steps"): 111.0, ("lstm", "steps"): 100.0})).held is False
    assert claim.evaluate(_results({("glu", "steps"): 100.0, ("lstm", "time"): 1.0})).held is None
    # the equal-time wording is an observation now, not counted
    assert "gcnn_matches_lstm_at_equal_time" in [o.name for o in get_experiment("gcnn").observations]


def _lstm_and_tokens(head: str, vocab: int = 40) -> tuple[torch.nn.Module, torch.Tensor]:
    """A small ``lstm_native`` LM (linear or adaptive head) in eval mode and a (2, 9) batch of its tokens."""
    torch.manual_seed(0)
    extra = {"head": "adaptive", "cutoffs": [10, 20]} if head == "adaptive" else {}
    lstm = create_model("lstm_native", vocab_size=vocab, d_input=None, d_output=vocab, d_model=32, **extra).eval()
    return lstm, torch.randint(0, vocab, (2, 9))


@pytest.mark.parametrize("head", ["linear", "adaptive"])
@pytest.mark.parametrize("head_per_step", [False, True])
def test_stepped_scorer_equals_fused_lstm(head: str, head_per_step: bool) -> None:
    lstm, tokens = _lstm_and_tokens(head)
    with torch.no_grad():
        want = lstm(tokens)[0]
        got = stepped_outputs(lstm, lstm_cell_like(lstm), tokens, head_per_step)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("head", ["linear", "adaptive"])
def test_token_by_token_nll_equals_the_fused_target_path(head: str) -> None:
    lstm, tokens = _lstm_and_tokens(head)
    with torch.no_grad():
        want = lstm(tokens[:, :-1], targets=tokens[:, 1:])[0]
        got = stepped_nll(lstm, lstm_cell_like(lstm), tokens)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _tiny_pair(vocab: int = 30) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    extra = {"head": "adaptive", "cutoffs": [10, 20]}
    g = create_model("gcnn", vocab_size=vocab, d_input=None, d_output=vocab, **gcnn.gcnn_args(16, 2, "glu", vocab),
                     **extra)
    lstm = create_model("lstm_native", vocab_size=vocab, d_input=None, d_output=vocab, d_model=16, **extra)
    return g, lstm


def test_stream_responsiveness_reports_tokens_per_second_and_restores_threads() -> None:
    g, lstm = _tiny_pair()
    before = torch.get_num_threads()
    r = stream_responsiveness(g, lstm, tokens=50, repeats=1, warmup=0, threads=1)
    assert torch.get_num_threads() == before and r["settings"]["threads"] == 1
    for name in ("gcnn", "lstm_token_by_token", "lstm_fused"):
        assert r[name]["tokens_per_s"] == pytest.approx(50 / r[name]["seconds"])
    assert r["ratio"] == pytest.approx(r["gcnn"]["tokens_per_s"] / r["lstm_token_by_token"]["tokens_per_s"])
    with pytest.raises(ValueError, match="tokens must be an integer >= 2"):
        stream_responsiveness(g, lstm, tokens=1)
    other = create_model("lstm_native", vocab_size=31, d_input=None, d_output=31, d_model=16)
    with pytest.raises(ValueError, match="one vocabulary"):
        stream_responsiveness(g, other)


def test_batched_throughput_scores_every_token_of_the_batch() -> None:
    """The paper's CPU measure: both models score the same batch x length tokens through their target paths."""
    g, lstm = _tiny_pair()
    before = torch.get_num_threads()
    r = batched_throughput(g, lstm, batch_size=3, length=20, repeats=1, warmup=0, threads=1)
    assert torch.get_num_threads() == before and r["settings"]["threads"] == 1
    for name in ("gcnn", "lstm_fused"):
        assert r[name]["tokens_per_s"] == pytest.approx(60 / r[name]["seconds"])
    assert r["ratio"] == pytest.approx(r["gcnn"]["tokens_per_s"] / r["lstm_fused"]["tokens_per_s"])
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        batched_throughput(g, lstm, batch_size=0)


def test_latency_claim_is_judged_the_papers_way(monkeypatch) -> None:
    """The verdict follows the responsiveness ratio (stream, batch 1, output layer on every token), not our first
    measurement, which is reported beside it."""
    def fake(paper: float, ours: float):
        def measure(results, data):
            stream = {"settings": {"threads": 2}, "ratio": paper, "ratio_fused": 1.0,
                      **{k: {"tokens_per_s": 1000.0} for k in ("gcnn", "lstm_token_by_token", "lstm_fused")}}
            first = {"settings": {"gcnn_params": 1, "lstm_params": 1}, "ratio_stepped": ours,
                     "ratio_head_per_step": ours, "ratio_fused": ours,
                     **{k: {"seconds": 0.01} for k in ("gcnn", "lstm_stepped", "lstm_stepped_head_per_step",
                                                       "lstm_fused")}}
            batched = {"settings": {"threads": 1}, "ratio": 0.5,
                       **{k: {"tokens_per_s": 1000.0} for k in ("gcnn", "lstm_fused")}}
            return {"paper": stream, "paper_all_threads": {**stream, "ratio": ours}, "ours": first,
                    "throughput": batched}
        return measure

    claim = testing.claim("gcnn", "scoring_latency")
    assert "scoring_latency" in [o.name for o in get_experiment("gcnn").observations]
    results = _results({("glu", "time"): 1.0, ("lstm", "time"): 1.0})
    monkeypatch.setattr(gcnn, "measure_latency", fake(paper=6.0, ours=1.2))
    out = claim.evaluate(results)
    assert out.held is True and out.numbers["responsiveness_ratio"] == 6.0 and out.numbers["ours_ratio_stepped"] == 1.2
    assert out.numbers["throughput_ratio"] == 0.5  # the paper's CPU column, reported, not judged (issue 20)
    monkeypatch.setattr(gcnn, "measure_latency", fake(paper=4.9, ours=9.0))
    results = _results({("glu", "time"): 1.0, ("lstm", "time"): 1.0})  # a new judgement measures anew
    assert claim.evaluate(results).held is False


def test_throughput_claim_is_the_papers_cpu_column(monkeypatch) -> None:
    """The claim (issue 20): CPU throughput at parity (>= 0.7x the fused LSTM), the paper's only CPU measure; the
    measurement is shared with the responsiveness observation (one timing per judgement)."""
    calls = []

    def measure(ratio: float):
        def fn(results, data):
            calls.append(data)
            tput = {"settings": {"batch_size": 64, "length": 100, "threads": 1}, "ratio": ratio,
                    "gcnn": {"tokens_per_s": 700.0 * ratio}, "lstm_fused": {"tokens_per_s": 700.0}}
            return {"throughput": tput}
        return fn

    claim = testing.claim("gcnn", "cpu_throughput_parity")
    results = _results({("glu", "time"): 1.0, ("lstm", "time"): 1.0})
    monkeypatch.setattr(gcnn, "measure_latency", measure(0.72))
    assert claim.evaluate(results).held is True and claim.evaluate(results).numbers["ratio"] == 0.72
    assert len(calls) == 1
    monkeypatch.setattr(gcnn, "measure_latency", measure(0.5))
    assert claim.evaluate(_results({("glu", "time"): 1.0, ("lstm", "time"): 1.0})).held is False
    # the equal-steps perplexities ride along: the paper's pairs have equal perplexity, ours equal parameters
    both = _results({("glu", "time"): 1.0, ("lstm", "time"): 1.0, ("glu", "steps"): 180.0, ("lstm", "steps"): 177.0})
    numbers = claim.evaluate(both).numbers
    assert numbers["ppl_gcnn_steps"] == 180.0 and numbers["ppl_lstm_steps"] == 177.0


@needs_data
def test_vocab_sizes_match_the_data(monkeypatch) -> None:
    from seqzoo.tasks import create_task

    monkeypatch.setenv("SEQZOO_DATA", str(DATA))
    for ds, n in gcnn.VOCAB.items():
        assert create_task("lm", dataset=ds).spec.vocab_size == n


@needs_data
def test_tiny_reproduce(tmp_path, monkeypatch) -> None:
    from seqzoo.experiments.runner import reproduce

    monkeypatch.setenv("SEQZOO_DATA", str(DATA))
    report = reproduce("gcnn", scale="tiny", out=tmp_path, workers=1, progress=False, echo=None)
    assert not report.failures and report.runs_total == 7
    verdicts = {c.name: r for c, r in report.claims}
    assert all(r.held is not None for r in verdicts.values())  # every claim is decided on the tiny grid
    assert verdicts["cpu_throughput_parity"].numbers["ratio"] > 0
    lat = dict((c.name, r) for c, r in report.observations)["scoring_latency"].numbers
    assert lat["tok_s_gcnn"] > 0 and lat["responsiveness_ratio_all_threads"] > 0 and lat["ours_ratio_fused"] > 0
    assert lat["throughput_ratio"] > 0


def test_gcnn_runs_use_the_papers_optimizer() -> None:
    """Issue 20 (round 5): every GCNN run trains with the paper's Nesterov momentum 0.99, lr 1, clip 0.1 (with the
    scale's Adam the activation order came out reversed); the LSTM keeps the scale's Adam."""
    card = get_experiment("gcnn")
    for scale in ("tiny", "small", "medium"):
        base = card.scale(scale).train
        for e in card.entries(scale):
            train = {**base, **e.train}
            if e.model == "gcnn":
                assert {k: train[k] for k in ("optimizer", "lr", "momentum", "clip_norm")} == {
                    "optimizer": "nag", "lr": 1.0, "momentum": 0.99, "clip_norm": 0.1}, (scale, e.labels)
            else:
                assert train["optimizer"] == "adam" and "momentum" not in e.train, (scale, e.labels)

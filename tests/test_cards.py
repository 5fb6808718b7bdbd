"""Every registered experiment card is well formed at every scale: its grid names registered models and tasks
with valid arguments, and its claims are unique (cheap: nothing is trained here)."""

from __future__ import annotations

import pytest

from seqzoo.experiments import card as card_module
from seqzoo.experiments.registry import get_experiment, list_experiments
from seqzoo.models import model_info
from seqzoo.registry_utils import check_kwargs
from seqzoo.tasks import TASKS
from seqzoo.tasks.registry import task_info


@pytest.mark.parametrize("name", list_experiments())
def test_card_grid_names_valid_models_and_tasks(name: str) -> None:
    card = get_experiment(name)
    assert set(card.scales) <= set(card_module.SCALES)
    assert {"tiny", "small"} <= set(card.scales), "every card needs a tiny (tests) and a small (laptop) scale"
    for scale in card.scales:
        entries = card.entries(scale)
        assert entries, f"{name}/{scale}: empty grid"
        for e in entries:
            check_kwargs(f"model {e.model!r}", e.model_args, model_info(e.model)["arguments"])
            assert e.task in TASKS
            check_kwargs(f"task {e.task!r}", e.task_args, task_info(e.task)["defaults"])


def _finished(results: card_module.Results, stopped: tuple[tuple[str, str], ...] = ()) -> card_module.Results:
    """recurrent-bn's derived ``finished`` (1: trained to the last step) for every entry; 0 for ``stopped``."""
    for e in results.entries:
        done = 0.0 if (e.entry.labels["arch"], e.entry.labels["budget"]) in stopped else 1.0
        e.metrics["derived"] = {"finished": card_module.Stat.of([done])}
    return results


def test_recurrent_bn_claims_on_fabricated_results() -> None:
    card = get_experiment("recurrent-bn")
    table = [("lstm", "early", 200, 0.5), ("lstm", "full", 800, 0.77), ("lstm_bn", "early", 200, 0.6),
             ("lstm_bn", "full", 800, 0.78), ("lstm_bn_eps", "early", 200, 0.4), ("lstm_bn_eps", "full", 800, 0.7)]
    rows = [{"data": "digits", "arch": a, "budget": b, "steps": s, "accuracy": v} for a, b, s, v in table]
    results = _finished(card_module.Results.from_records(rows, "accuracy"))
    verdicts = {c.name: r.held for c, r in card.evaluate(results)}
    assert verdicts == {"bn_converges_faster": True, "bn_at_least_as_accurate": True, "bn_eps_remedy": True}
    # the first wording of bn_eps_remedy (faster and as accurate as the LSTM) is an observation, not counted
    assert {o.name: r.held for o, r in card.observe(results)} == {"bn_eps_remedy_accuracy": False}
    # the re-worded remedy: a run stopped by a non-finite gradient, or no learning, fails it; no derived: undecided
    stopped = _finished(card_module.Results.from_records(rows, "accuracy"), (("lstm_bn_eps", "early"),))
    remedy = {c.name: r for c, r in card.evaluate(stopped)}["bn_eps_remedy"]
    assert remedy.held is False and remedy.numbers["digits_finished"] == "1/2"
    chance = _finished(card_module.Results.from_records(
        [{**r, "accuracy": 0.15} if r["arch"] == "lstm_bn_eps" else r for r in rows], "accuracy"))
    assert {c.name: r.held for c, r in card.evaluate(chance)}["bn_eps_remedy"] is False
    plain = card_module.Results.from_records(rows, "accuracy")
    assert {c.name: r.held for c, r in card.evaluate(plain)}["bn_eps_remedy"] is None
    # a second dataset where BN-LSTM is slower early: "faster" must hold on every dataset
    mnist = [{**r, "data": "mnist14"} for r in rows]
    mnist[2]["accuracy"] = 0.3
    results = _finished(card_module.Results.from_records(rows + mnist, "accuracy"))
    out = {c.name: r for c, r in card.evaluate(results)}
    assert out["bn_converges_faster"].held is False and out["bn_at_least_as_accurate"].held is True
    assert out["bn_converges_faster"].numbers["mnist14_lstm_bn_early"] == 0.3
    assert "data=mnist14: lstm_bn 0.3 vs lstm 0.5" in out["bn_converges_faster"].detail
    # the small grid runs the eps = 1e-3 remedy on digits only: it is judged where it ran
    no_eps = [r for r in mnist if r["arch"] != "lstm_bn_eps"]
    judged = {c.name: r for c, r in card.evaluate(_finished(card_module.Results.from_records(rows + no_eps,
                                                                                               "accuracy")))}
    assert judged["bn_eps_remedy"].held is True and "data=mnist14" not in judged["bn_eps_remedy"].detail
    # the medium grid has no eps = 1e-3 runs: undecided there
    medium = _finished(card_module.Results.from_records(no_eps, "accuracy"))
    assert {c.name: r.held for c, r in card.evaluate(medium)}["bn_eps_remedy"] is None
    assert {c.name: r.held for c, r in card.evaluate(card_module.Results([], "accuracy"))} == dict.fromkeys(verdicts)


def test_atn_claims_on_fabricated_results() -> None:
    card = get_experiment("atn")
    rows = []
    for task, metric, T in (("adding", "mse", 50), ("copy", "cross_entropy", 50), ("denoise", "cross_entropy", 50)):
        for arch, v in (("lstm", 0.2), ("lstm_ln", 0.05), ("lstm_atn", 0.04)):
            rows.append({"arch": arch, "task": task, "T": T, metric: v})
    entries = []
    for metric in ("mse", "cross_entropy"):
        entries += card_module.Results.from_records([r for r in rows if metric in r], metric).entries
    verdicts = {c.name: r.held for c, r in card.evaluate(card_module.Results(entries, "mse"))}
    assert verdicts == {"atn_le_ln": True, "normalized_beat_baseline": True}


def test_observations_are_described_and_listed_apart_from_claims() -> None:
    """`seqzoo list experiments` names a card's observations on their own line, never among its claims."""
    from seqzoo.experiments.catalog import format_experiments

    d = get_experiment("s5").describe()
    obs = ["s5_beats_lstm_on_listops", "lstm_stays_on_adding_plateau"]
    assert d["observations"] == obs and not set(obs) & set(d["claims"])
    block = format_experiments("s5", width=200)
    claims = next(line for line in block.splitlines() if line.startswith("  claims:"))
    assert f"  observations: {', '.join(obs)}" in block and "lstm_stays" not in claims and "beats_lstm" not in claims
    assert "observations:" not in format_experiments("memorization", width=200)  # a card without any

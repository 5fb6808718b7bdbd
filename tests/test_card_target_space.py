"""Card ``target-space``: run numbers from metrics rows, claim predicates on fabricated results, grid, tiny run."""

from __future__ import annotations

import pytest

from seqzoo.experiments import testing
from seqzoo.experiments.card import Entry, EntryResult, Results, Stat
from seqzoo.experiments.cards import target_space as card
from seqzoo.experiments.registry import get_experiment


def _results(cells: dict[tuple[str, str], dict[str, list[float]]]) -> Results:
    """Cells (arch, task) with test ``accuracy`` and derived numbers, one value per seed."""
    out = []
    for (arch, task), nums in cells.items():
        metrics: dict[str, dict[str, Stat]] = {}
        for key, vals in nums.items():
            metrics.setdefault("test" if key == "accuracy" else "derived", {})[key] = Stat.of(vals)
        entry = Entry(model=arch, task=task, labels={"arch": arch, "task": task})
        out.append(EntryResult(entry, metrics, seeds=list(range(len(next(iter(nums.values())))))))
    return Results(out, "accuracy", "test")


def _spirals(ts_first: list[float], ws_first: list[float]) -> dict[tuple[str, str], dict[str, list[float]]]:
    never = card.SMALL_SPIRAL_STEPS + card.EVAL_EVERY
    return {(a, "two_spirals"): {"first_full": f, "reached": [float(v < never) for v in f], "accuracy": [0.9] * len(f),
                                 "sec_per_step": [0.004 if a == "ts_mlp" else 0.002] * len(f)}
            for a, f in (("ts_mlp", ts_first), ("ws_mlp", ws_first))}


def _recall(ts: float, ws: float, lstm: float = 0.6) -> dict[tuple[str, str], dict[str, list[float]]]:
    return {(a, "recall20"): {"accuracy": [v, v, v], "sec_per_step": [0.01, 0.01, 0.01]}
            for a, v in (("ts_rnn", ts), ("ws_rnn", ws), ("lstm", lstm))}


def test_run_numbers_first_full_accuracy_and_cost() -> None:
    rows = [{"step": 25, "split": "valid", "accuracy": 0.9}, {"step": 50, "split": "valid", "accuracy": 1.0},
            {"step": 75, "split": "valid", "accuracy": 0.99}, {"step": 50, "split": "train", "loss": 0.1, "time": 2.0},
            {"step": 100, "split": "train", "loss": 0.1, "time": 5.0}, {"step": 100, "split": "test", "accuracy": 1.0}]
    out = card.run_numbers(rows, steps=100, eval_every=25)
    assert out == {"first_full": 50.0, "reached": 1.0, "sec_per_step": 0.05}
    never = card.run_numbers([rows[0], rows[-1]], steps=100, eval_every=25)  # a test row is not a training eval
    assert never["first_full"] == 125.0 and never["reached"] == 0.0 and "sec_per_step" not in never


def test_spiral_claims_hold_and_fail() -> None:
    never = card.SMALL_SPIRAL_STEPS + card.EVAL_EVERY
    good = _results(_spirals([300, 500, 900, never, 400], [2000, never, never, never, 3000]))
    testing.assert_verdicts("target-space", good, {"ts_spirals_fewer_iterations": True, "ts_spirals_more_seeds": True})
    out = testing.claim("target-space", "ts_spirals_fewer_iterations").evaluate(good)
    assert out.numbers["ts_mlp_median_first_full"] == 500 and out.numbers["step_cost_ratio"] == 2.0
    # same number of seeds reached and a slower median: both fail
    bad = _results(_spirals([3000, 3500, never, never, 3900], [300, 400, 500, never, never]))
    testing.assert_verdicts("target-space", bad, {"ts_spirals_fewer_iterations": False,
                                                  "ts_spirals_more_seeds": False})


@pytest.mark.parametrize(("ts", "ws", "held"), [(0.99, 0.52, True), (0.7, 0.52, False), (0.99, 0.65, False)])
def test_recall_observation_first_wording(ts: float, ws: float, held: bool) -> None:
    """The first wording (weight space stays near chance) is judged as an observation, with its old numbers."""
    out = testing.claim("target-space", "ts_rnn_recall_delay20").evaluate(_results(_recall(ts, ws)))
    assert out.held is held and out.numbers["ts_rnn"] == ts and "recall20" in out.detail


@pytest.mark.parametrize(("ts", "ws", "lstm", "held"), [
    (1.0, 0.62, 0.60, True),  # the small run: weight space above 0.6 no longer decides it
    (1.0, 1.0, 0.60, False),  # weight space as good: target space not faster
    (0.7, 0.52, 0.50, False),  # target space not well above chance
    (0.9, 0.52, 0.95, False),  # below the LSTM
    (0.9, 0.52, 0.90, True),  # at the LSTM's level
])
def test_recall_claim_is_the_papers(ts: float, ws: float, lstm: float, held: bool) -> None:
    out = testing.claim("target-space", "ts_rnn_recall_faster").evaluate(_results(_recall(ts, ws, lstm)))
    assert out.held is held and out.numbers["lstm"] == lstm and "recall20" in out.detail


def test_first_wording_is_an_observation() -> None:
    c = get_experiment("target-space")
    assert [x.name for x in c.claims] == ["ts_spirals_fewer_iterations", "ts_spirals_more_seeds",
                                          "ts_rnn_recall_faster"]
    assert [x.name for x in c.observations] == ["ts_rnn_recall_delay20"] and not c.causes
    cells = _recall(1.0, 0.62)
    del cells[("lstm", "recall20")]  # the claim compares with the LSTM: undecided without it
    assert testing.claim("target-space", "ts_rnn_recall_faster").evaluate(_results(cells)).held is None


def test_small_grid_is_the_spec_setting() -> None:
    entries = get_experiment("target-space").entries("small")
    spirals = [e for e in entries if e.task == "two_spirals"]
    assert {e.model for e in spirals} == {"ts_mlp", "ws_mlp"}
    assert all(e.train["batch_size"] == 194 and e.train["lr"] == 0.01 and e.train["steps"] == 4000 for e in spirals)
    bits = [e for e in entries if e.task == "bit_delay"]
    assert {(e.labels["arch"], e.labels["task"]) for e in bits} == {(a, t) for a in card.RNN_ARCHS
                                                                   for t in ("recall20", "xor20")}
    for e in bits:  # delay + 3 hidden units (+ 5 for XOR); the realisation covers the whole sequence
        assert e.model_args["d_model"] == 20 + (5 if e.task_args["op"] == "xor" else 3)
        assert e.train["lr"] == card.RNN_LR
        if e.model == "ts_rnn":
            assert e.model_args["realisation_len"] == 70
    assert len(get_experiment("target-space").scale("small").seeds) >= 5


def test_tiny_scale_runs_end_to_end(tmp_path) -> None:
    report = testing.run_tiny("target-space", tmp_path)
    assert {e.entry.labels["arch"] for e in report.results.entries} == {*card.SPIRAL_ARCHS, *card.RNN_ARCHS}
    assert all("first_full" in e.metrics["derived"] for e in report.results.entries)

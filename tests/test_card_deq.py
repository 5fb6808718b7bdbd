"""Card ``deq``: grid shape, claim predicates on fabricated results, and the derive helpers on tiny models."""

from __future__ import annotations

import torch

from seqzoo.experiments.card import Entry, EntryResult, Results, Stat
from seqzoo.experiments.cards import deq as card
from seqzoo.experiments.registry import get_experiment
from seqzoo.models import create_model


def _results(test: dict[str, dict[str, list[float]]], derived: dict[str, dict[str, list[float]]]) -> Results:
    out = []
    for arch, task in (("mlp_deq", "digits"), ("deq", "lm"), ("tied", "lm")):
        metrics = {"test": {k: Stat.of(v) for k, v in test.get(arch, {}).items()},
                   "derived": {k: Stat.of(v) for k, v in derived.get(arch, {}).items()}}
        out.append(EntryResult(Entry(model=arch, task=task, labels={"arch": arch, "task": task}), metrics))
    return Results(out, "cross_entropy", "test")


GOOD_DERIVED = {
    "mlp_deq": {"grad_fd_rel_err": [1e-8, 2e-8, 3e-9], "grad_check_converged": [1, 1, 1],
                "final_rel_residual": [0.001, 0.002, 0.001], "final_rel_residual_max": [0.002] * 3,
                "fwd_iterations_first": [6] * 3, "fwd_iterations_last": [9] * 3, "bwd_iterations_last": [8] * 3},
    "deq": {"grad_fd_rel_err": [1e-7] * 3, "grad_check_converged": [1] * 3, "final_rel_residual": [0.01] * 3,
            "final_rel_residual_max": [0.02] * 3, "fwd_iterations_first": [8] * 3, "fwd_iterations_last": [14] * 3,
            "bwd_iterations_last": [10] * 3, "saved_mb": [3.6] * 3, "step_ms": [300] * 3,
            "step_vs_anchor": [2.0] * 3},
    "tied": {"saved_mb": [26.8] * 3, "step_ms": [200] * 3, "step_vs_anchor": [1.0] * 3},
}
GOOD_TEST = {"mlp_deq": {"accuracy": [0.96, 0.97, 0.95]}, "deq": {"cross_entropy": [1.9, 1.95, 1.92]},
             "tied": {"cross_entropy": [1.88, 1.9, 1.91]}}


def _verdicts(res: Results) -> dict[str, bool | None]:
    """Claims and observations (digits-accuracy is an observation: the paper has no digits experiment)."""
    card_ = get_experiment("deq")
    assert [o.name for o in card_.observations] == ["digits-accuracy"]
    return {c.name: r.held for c, r in card_.evaluate(res) + card_.observe(res)}


def test_grid_and_scales() -> None:
    c = get_experiment("deq")
    small = c.entries("small")
    assert sorted(e.labels["arch"] for e in small) == ["deq", "mlp_deq", "tied"]
    deq = next(e for e in small if e.labels["arch"] == "deq")
    tied = next(e for e in small if e.labels["arch"] == "tied")
    assert deq.task_args == tied.task_args and deq.train == tied.train  # equal steps, same data
    assert tied.model_args["layer_kwargs"]["depth"] == card.DEPTH
    assert deq.model_args["layer_kwargs"]["mem_len"] == deq.task_args["bptt"]  # the memory is carried
    assert len(c.scale("small").seeds) >= 3


def test_claims_hold_on_good_results() -> None:
    assert _verdicts(_results(GOOD_TEST, GOOD_DERIVED)) == {
        "implicit-gradient": True, "constant-memory": True, "equal-loss": True, "solver-converges": True,
        "digits-accuracy": True}


def test_claims_fail_on_bad_results() -> None:
    bad = {k: {m: list(v) for m, v in d.items()} for k, d in GOOD_DERIVED.items()}
    bad["deq"]["grad_fd_rel_err"] = [1e-7, 3e-3, 1e-7]  # one seed off is enough
    bad["deq"]["saved_mb"] = [10.0] * 3
    bad["mlp_deq"]["final_rel_residual"] = [0.001, 0.2, 0.001]
    test = {**GOOD_TEST, "deq": {"cross_entropy": [2.1] * 3}, "mlp_deq": {"accuracy": [0.9] * 3}}
    assert _verdicts(_results(test, bad)) == {
        "implicit-gradient": False, "constant-memory": False, "equal-loss": False, "solver-converges": False,
        "digits-accuracy": False}


def test_claims_are_undecided_without_derived_numbers() -> None:
    v = _verdicts(_results(GOOD_TEST, {}))
    assert v["implicit-gradient"] is None and v["constant-memory"] is None and v["solver-converges"] is None


def test_gradient_check_and_solver_numbers_on_a_tiny_model() -> None:
    torch.manual_seed(0)
    model = create_model("mlp_deq", d_model=8, seq_len=4, d_input=4, d_output=3)
    batch = {"inputs": torch.rand(5, 4, 4), "targets": torch.randint(0, 3, (5,))}
    out = card.gradient_check(model, batch)
    assert out["grad_check_converged"] == 1.0 and out["grad_fd_rel_err"] < 1e-5
    rows = [{"split": "train", "deq.fwd_rel_residual": 0.01, "deq.fwd_iterations": 5.0},
            {"split": "valid", "accuracy": 0.5},
            {"split": "train", "deq.fwd_rel_residual": 0.02, "deq.fwd_rel_residual_max": 0.04,
             "deq.fwd_iterations": 7.0, "deq.bwd_iterations": 4.0}]
    nums = card.solver_numbers(rows)
    assert nums["final_rel_residual"] == 0.02 and nums["fwd_iterations_first"] == 5.0
    assert nums["fwd_iterations_last"] == 7.0 and nums["final_rel_residual_max"] == 0.04
    assert card.solver_numbers([{"split": "train", "loss": 1.0}]) == {}

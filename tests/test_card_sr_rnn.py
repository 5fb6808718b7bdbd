"""Card ``sr-rnn``: claim predicates on fabricated results, the grid, the DFA hook on a known network, tiny run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import seqzoo
from seqzoo.experiments import testing
from seqzoo.experiments.card import Entry, EntryResult, Results, Stat
from seqzoo.experiments.cards import sr_rnn
from seqzoo.experiments.registry import get_experiment
from seqzoo.models import save_model
from seqzoo.tasks import create_task

CARD = get_experiment("sr-rnn")


def _tomita(arch: str, states: list[int], agreement: list[float]) -> EntryResult:
    """An SR-GRU cell of the Tomita experiment with per-seed derived DFA numbers."""
    n = len(states)
    derived = {"states": Stat.of(states), "agreement_valid": Stat.of(agreement), "reachable": Stat.of(states),
               "equivalent": Stat.of([1.0] * n)}
    metrics = {"derived": derived, "valid": {"balanced_accuracy": Stat.of([1.0] * n)},
               "test": {"balanced_accuracy": Stat.of([1.0] * n)}}
    entry = Entry("sr_gru", "tomita", labels={"exp": "tomita4", "arch": arch})
    return EntryResult(entry, metrics, [f"r{i}" for i in range(n)], list(range(n)))


def _bp(arch: str, values: list[float]) -> EntryResult:
    entry = Entry(arch, "balanced_parens", labels={"exp": "bp", "arch": arch})
    return EntryResult(entry, {"test": {"balanced_accuracy": Stat.of(values)}}, seeds=list(range(len(values))))


def _results(*entries: EntryResult) -> Results:
    return Results(list(entries), "balanced_accuracy", "test")


def test_registered_and_grid_shape() -> None:
    assert CARD.derive is sr_rnn.derive and CARD.metric == "balanced_accuracy" and CARD.split == "test"
    small = CARD.entries("small")
    assert [(e.labels["exp"], e.labels["arch"]) for e in small] == [
        ("tomita4", "gru"), ("tomita4", "sr_gru_soft"), ("tomita4", "sr_gru_sampled"), ("bp", "lstm"),
        ("bp", "sr_lstm_p")]
    by_arch = {e.labels["arch"]: e for e in small}
    assert by_arch["sr_gru_soft"].model_args["layer_kwargs"] == {"n_centroids": 10, "temperature": 1.0,
                                                                  "transition": "soft"}
    assert by_arch["sr_gru_sampled"].model_args["layer_kwargs"]["transition"] == "sample"
    assert by_arch["sr_gru_soft"].train["lr"] == 1e-3 and by_arch["sr_gru_sampled"].train["lr"] == 1e-2
    assert all(e.task_args["grammar"] == 4 for e in small if e.task == "tomita")
    assert by_arch["sr_lstm_p"].model_args == {"d_model": 10, "layer_kwargs": {"n_centroids": 5, "temperature": 1.0}}
    assert by_arch["sr_lstm_p"].train == by_arch["lstm"].train and by_arch["lstm"].train["optimizer"] == "rmsprop"
    assert CARD.scale("small").seeds == (0, 1, 2, 3, 4)
    assert len(CARD.entries("tiny")) == len(small) == len(CARD.entries("paper"))


@pytest.mark.parametrize("arch", ["sr_gru_soft", "sr_gru_sampled"])
def test_dfa_claim_held_not_held_undecided(arch: str) -> None:
    name = "tomita4_dfa_soft" if arch == "sr_gru_soft" else "tomita4_dfa_sampled"
    claim = testing.claim("sr-rnn", name)
    out = claim.evaluate(_results(_tomita(arch, [4, 4, 4], [1.0, 0.995, 0.99])))
    assert out.held is True and out.numbers["states"] == [4, 4, 4]
    out = claim.evaluate(_results(_tomita(arch, [4, 5, 4], [1.0, 1.0, 1.0])))  # one seed has 5 states
    assert out.held is False and "2/3 seeds" in out.detail
    out = claim.evaluate(_results(_tomita(arch, [4, 4], [1.0, 0.5])))  # unfaithful on one seed
    assert out.held is False and out.numbers["agreement_valid"] == [1.0, 0.5]
    other = "sr_gru_sampled" if arch == "sr_gru_soft" else "sr_gru_soft"
    assert claim.evaluate(_results(_tomita(other, [4], [1.0]))).held is None  # its own cell is missing


def test_bp_claim() -> None:
    claim = testing.claim("sr-rnn", "bp_sr_lstm_p_ge_lstm")
    assert claim.evaluate(_results(_bp("lstm", [0.9, 0.92]), _bp("sr_lstm_p", [0.91, 0.91]))).held is True
    out = claim.evaluate(_results(_bp("lstm", [0.95, 0.97]), _bp("sr_lstm_p", [0.9, 0.96])))
    assert out.held is False and out.numbers["sr_lstm_p"] == pytest.approx(0.93) and out.numbers["lstm"] == 0.96
    assert claim.evaluate(_results(_bp("lstm", [0.9]))).held is None


def _tomita1_network(task) -> torch.nn.Module:
    """A hand-set 2-unit SR-GRU that recognizes Tomita 1 (``1*``) exactly (as in tests/test_sr_rnn.py)."""
    model = seqzoo.create_model("sr_gru", d_model=2, layer_kwargs={"n_centroids": 2, "temperature": 0.01,
                                                                  "transition": "sample"},
                                **task.spec.model_kwargs())
    cell = model.layers[0].cell
    ids = {s: i for i, s in enumerate(task.vocab)}
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.weight[ids["<s>"]] = torch.tensor([1.0, 0.0])
        model.embed.weight[ids["0"]] = torch.tensor([0.0, 5.0])
        cell.weight_ih[4:6] = torch.eye(2)
        cell.weight_hh[4:6] = torch.eye(2)
        cell.bias_ih[0:2] = 30.0
        cell.bias_ih[2:4] = -30.0
        cell.regularizer.centroids.copy_(torch.eye(2))
        model.head.weight.copy_(torch.tensor([[-1.0, 1.0], [1.0, -1.0]]))
    return model.eval()


def test_derive_reads_the_dfa_off_a_saved_network(tmp_path: Path) -> None:
    task_args: dict[str, Any] = {"grammar": 1, "n_train": 50, "n_valid": 40, "n_test": 40}
    save_model(_tomita1_network(create_task("tomita", **task_args)), tmp_path / "run")
    entry = Entry("sr_gru", "tomita", task_args=task_args, labels={"exp": "tomita4", "arch": "sr_gru_sampled"})
    got = sr_rnn.derive(entry, tmp_path / "run")
    assert got["states"] == 2 and got["equivalent"] == 1.0 and got["consistency"] == 1.0
    assert got["agreement_valid"] == 1.0 and got["agreement_test"] == 1.0 and got["dfa_accuracy_valid"] == 1.0
    assert got["argmax_accuracy_valid"] == 1.0 and got["alpha_peak_valid"] > 0.99
    assert (tmp_path / "run" / "extracted_dfa.json").exists()
    assert sr_rnn.derive(Entry("gru", "tomita", labels={"arch": "gru"}), tmp_path / "run") == {}


def test_tiny_reproduce(tmp_path: Path) -> None:
    from seqzoo.experiments.runner import reproduce

    report = reproduce("sr-rnn", scale="tiny", out=tmp_path, workers=1, progress=False, echo=None)
    assert not report.failures and report.runs_total == 5
    verdicts = {c.name: r for c, r in report.claims}
    assert all(verdicts[c.name].held is not None for c in CARD.claims)  # every claim is decided from the runs
    for arch in sr_rnn.SR_TOMITA:
        derived = report.results.find(exp="tomita4", arch=arch).metrics["derived"]
        assert {"states", "reachable", "agreement_valid", "agreement_test", "equivalent"} <= set(derived)
    assert "derived" not in report.results.find(exp="bp", arch="sr_lstm_p").metrics
    assert report.files["plot:dfa"].exists() and report.files["plot:accuracy"].exists()

"""Card ``s5``: parameter counts, grid shape, claim predicates on fabricated results, a tiny reproduce."""

from __future__ import annotations

import pytest

from seqzoo.experiments import testing
from seqzoo.experiments.card import Entry, EntryResult, Results, Stat
from seqzoo.experiments.cards import s5
from seqzoo.experiments.registry import get_experiment
from seqzoo.models import create_model

ADDING_BASE = 1.0 / 6.0


def _results(adding: dict[str, float | list[float]], listops: dict[str, float | list[float]]) -> Results:
    """Fabricated results: adding cells carry ``mse``, ListOps cells ``accuracy`` (values per seed)."""
    out = []
    for task, per, metric in (("adding", adding, "mse"), ("listops", listops, "accuracy")):
        for arch, v in per.items():
            vals = v if isinstance(v, list) else [v]
            entry = Entry(model=arch, task=task, labels={"arch": arch, "task": task})
            out.append(EntryResult(entry, {"test": {metric: Stat.of(vals)}}, seeds=list(range(len(vals)))))
    return Results(out, "accuracy", "test")


@pytest.mark.parametrize("task", s5.TASKS)
def test_param_counts_are_matched(task: str) -> None:
    d = {"adding": {"d_input": 2, "d_output": 1}, "listops": {"vocab_size": 16, "d_input": None, "d_output": 10}}[task]
    counts = {}
    for arch, (preset, args) in s5.model_configs(task).items():
        model = create_model(preset, **d, **args)
        counts[arch] = sum(p.numel() for p in model.parameters())
    expected = {"adding": {"s5": 13121, "lstm": 13281, "transformer": 14593},
                "listops": {"s5": 17930, "lstm": 16994, "transformer": 15130}}[task]
    assert counts == expected  # the numbers the card's docstring and description state
    assert max(counts.values()) / min(counts.values()) < 1.2


def test_grid_shape() -> None:
    card = get_experiment("s5")
    small = card.entries("small")
    assert sorted((e.labels["task"], e.labels["arch"]) for e in small) == sorted(
        (t, a) for t in s5.TASKS for a in s5.ARCHS)
    for e in small:
        assert ("ssm_lr" in e.train) == (e.labels["arch"] == "s5")
        if e.labels["task"] == "adding":
            assert e.task_args == {"seq_len": 200} and e.train["steps"] == s5.SMALL_ADDING_STEPS
        else:
            assert e.task_args == {} and e.train["steps"] == s5.SMALL_LISTOPS_STEPS
    s5_lo = next(e for e in small if e.labels == {"arch": "s5", "task": "listops"})
    assert s5_lo.model == "s5_bidir" and s5_lo.model_args["decoder"] == "mean"
    s5_add = next(e for e in small if e.labels == {"arch": "s5", "task": "adding"})
    assert s5_add.model == "s5" and s5_add.model_args["decoder"] == "last"
    paper = card.entries("paper")
    assert any(e.task_args.get("max_length") == 2000 for e in paper)
    with pytest.raises(ValueError, match="task must be one of"):
        s5.model_configs("copy")


def test_adding_claims() -> None:
    leaves, stays = testing.claim("s5", "s5_leaves_adding_plateau"), testing.claim("s5", "lstm_stays_on_adding_plateau")
    good = _results({"s5": 0.01, "lstm": 0.17, "transformer": 0.16}, {})
    out = leaves.evaluate(good)
    assert out.held is True and out.numbers["baseline"] == pytest.approx(ADDING_BASE, abs=1e-4)
    assert out.numbers["threshold"] == pytest.approx(0.5 * ADDING_BASE, abs=1e-4)
    assert stays.evaluate(good).held is True
    # one S5 seed still on the plateau pulls the mean over 0.5 x baseline; the LSTM learned
    bad = _results({"s5": [0.01, 0.17], "lstm": 0.05}, {})
    out = leaves.evaluate(bad)
    assert out.held is False and out.numbers["s5_seeds"] == [0.01, 0.17]
    assert stays.evaluate(bad).held is False
    # just under / at the threshold
    assert leaves.evaluate(_results({"s5": 0.083, "lstm": 0.0834}, {})).held is True
    assert stays.evaluate(_results({"s5": 0.083, "lstm": 0.0834}, {})).held is True


def test_listops_claims() -> None:
    majority, beats = testing.claim("s5", "s5_beats_listops_majority"), testing.claim("s5", "s5_beats_lstm_on_listops")
    base = s5.baseline(_results({}, {"s5": 0.5}), "listops")
    assert base == pytest.approx(0.123, abs=0.002)  # spec §6.6 mini setting, measured: 12.3%
    good = _results({}, {"s5": base + 0.15, "lstm": base + 0.05, "transformer": base})
    out = majority.evaluate(good)
    assert out.held is True and out.numbers["majority"] == pytest.approx(base, abs=1e-4)
    assert beats.evaluate(good).held is True
    bad = _results({}, {"s5": base + 0.09, "lstm": base + 0.2})
    assert majority.evaluate(bad).held is False
    assert beats.evaluate(bad).held is False


def test_transformer_claim_and_lstm_plateau_observation() -> None:
    """The paper's comparison (LRA Table 1) is with the Transformer; "the LSTM stays on the plateau" is observed."""
    card = get_experiment("s5")
    assert [o.name for o in card.observations] == ["s5_beats_lstm_on_listops", "lstm_stays_on_adding_plateau"]
    assert not {"lstm_stays_on_adding_plateau", "s5_beats_lstm_on_listops"} & {c.name for c in card.claims}
    claim = testing.claim("s5", "s5_beats_transformer_on_listops")
    out = claim.evaluate(_results({}, {"s5": 0.62, "lstm": 0.3, "transformer": 0.36}))
    assert out.held is True and out.numbers["s5_minus_transformer"] == pytest.approx(0.26)
    out = claim.evaluate(_results({}, {"s5": 0.289, "lstm": 0.198, "transformer": 0.294}))  # the small run
    assert out.held is False and out.numbers["s5_minus_transformer"] == pytest.approx(-0.005)
    assert claim.evaluate(_results({}, {"s5": 0.3, "lstm": 0.2})).held is None


def test_missing_results_are_undecided() -> None:
    only_adding = _results({"s5": 0.01}, {})
    verdicts = {c.name: r.held for c, r in get_experiment("s5").evaluate(only_adding)}
    assert verdicts == {"s5_leaves_adding_plateau": True, "s5_beats_transformer_on_listops": None,
                        "s5_beats_listops_majority": None}
    assert [r.held for _, r in get_experiment("s5").observe(only_adding)] == [None, None]


def test_tiny_reproduce(tmp_path) -> None:
    from seqzoo.experiments.runner import reproduce

    report = reproduce("s5", scale="tiny", out=tmp_path, workers=1, progress=False, echo=None)
    assert not report.failures and report.runs_total == 6
    assert all(r.held is not None for _, r in report.claims)  # every cell trained: every claim is decided
    assert (report.out_dir / "bars.png").is_file()
    # the observation is judged too, written to its own table of the summary, and listed apart by `seqzoo report`
    assert [(o.name, r.held is not None) for o, r in report.observations] == [
        ("s5_beats_lstm_on_listops", True), ("lstm_stays_on_adding_plateau", True)]
    summary = (report.out_dir / "summary.md").read_text()
    assert "| **lstm_stays_on_adding_plateau**:" in summary.split("## Observations")[1]
    from seqzoo.experiments.report import render_report

    page = render_report(tmp_path, tmp_path / "results.md").read_text()
    assert "| s5 | tiny | lstm_stays_on_adding_plateau (observation) | tiny: not a result (" in page


def test_medium_scale_budget() -> None:
    """Medium: 3 seeds of small's models and recipe; ListOps (all three models) twice as long, adding as small for
    the two models its claim and observation read; an expected time within 30 min on 2 cores."""
    card = get_experiment("s5")
    sc = card.scale("medium")
    assert len(sc.seeds) >= 3 and sc.workers == 2 and sc.expected_seconds <= 1800
    small = {(e.labels["task"], e.labels["arch"]): e for e in card.entries("small")}
    medium = {(e.labels["task"], e.labels["arch"]): e for e in card.entries("medium")}
    assert set(medium) == set(small) - {("adding", "transformer")}
    for key, e in medium.items():
        assert (e.model, e.model_args, e.task_args) == (small[key].model, small[key].model_args, small[key].task_args)
        if key[0] == "adding":
            assert e.train == small[key].train
        else:
            assert e.train["steps"] == s5.MEDIUM_LISTOPS_STEPS == 2 * s5.SMALL_LISTOPS_STEPS
            assert e.train["steps"] % e.train["eval_every"] == 0
            rest = {k: v for k, v in e.train.items() if k not in ("steps", "warmup_steps", "eval_every")}
            assert rest == {k: v for k, v in small[key].train.items()
                            if k not in ("steps", "warmup_steps", "eval_every")}
    # every claim and the observation read cells the medium grid has; the adding numbers omit the transformer
    seeds = [0.3, 0.31, 0.29]
    fake = _results({"s5": [0.01] * 3, "lstm": [0.17] * 3}, {"s5": seeds, "lstm": seeds, "transformer": seeds})
    assert all(r.held is not None for _, r in card.evaluate(fake))
    assert all(r.held is not None for _, r in card.observe(fake))
    out = testing.claim("s5", "s5_leaves_adding_plateau").evaluate(fake)
    assert "transformer" not in out.numbers and out.numbers["s5_seeds"] == [0.01] * 3

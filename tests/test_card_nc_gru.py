"""Card ``nc-gru``: run numbers from metrics rows, claim predicates on fabricated results, grid, tiny reproduce."""

from __future__ import annotations

import math

import pytest

from seqzoo.experiments import testing
from seqzoo.experiments.card import Entry, EntryResult, Results, Stat
from seqzoo.experiments.cards import nc_gru
from seqzoo.experiments.registry import get_experiment

MODELS = ("gru", "lstm", "nc_gru")


def _results(cells: dict[tuple[str, str], dict[str, list[float]]]) -> Results:
    """Results whose cell (arch, task) has test ``cross_entropy`` and derived numbers, one value per seed."""
    out = []
    for (arch, task), nums in cells.items():
        metrics: dict[str, dict[str, Stat]] = {}
        for key, vals in nums.items():
            split = "test" if key == "cross_entropy" else "derived"
            metrics.setdefault(split, {})[key] = Stat.of(vals)
        entry = Entry(model=arch, task=task, labels={"arch": arch, "task": task})
        out.append(EntryResult(entry, metrics, seeds=list(range(len(next(iter(nums.values())))))))
    return Results(out, "cross_entropy", "test")


def _cell(ce: float, leave: float, ratio: float, left: float = 1.0,
          orth: float | None = None) -> dict[str, list[float]]:
    out = {"cross_entropy": [ce, ce], "leave_step": [leave, leave], "left": [left, left],
           "spike_ratio": [ratio, ratio], "grad_norm_max": [ratio, ratio], "grad_norm_median": [1.0, 1.0]}
    if orth is not None:  # an orthogonal model's ‖UᵀU − I‖_F over training
        out.update(orth_error_max=[orth, orth], orth_error_median=[orth / 10, orth / 10])
    return out


def _good() -> dict[tuple[str, str], dict[str, list[float]]]:
    """NC-GRU leaves first, ends lowest and has no spikes on both tasks."""
    cells = {}
    for t in nc_gru.TASKS:
        cells[("gru", t)] = _cell(0.2, 800.0, 30.0)
        cells[("lstm", t)] = _cell(0.25, 1600.0, 5.0, left=0.0)
        cells[("nc_gru", t)] = _cell(0.05, 300.0, 4.0, orth=5e-4)
    return cells


def test_run_numbers_leave_step_curve_and_spikes() -> None:
    rows = [{"step": s, "split": "train", "loss": 1.0, "grad_norm": g, "grad_norm_max": g}
            for s, g in enumerate([1.0, 2.0, 1.0, 30.0, 1.5], start=1)]
    rows += [{"step": 2, "split": "valid", "cross_entropy": 0.95}, {"step": 4, "split": "valid", "cross_entropy": 0.85},
             {"step": 5, "split": "test", "cross_entropy": 0.1}]
    out = nc_gru.run_numbers(rows, baseline=1.0, steps=5, eval_every=2)
    assert out["leave_step"] == 4 and out["left"] == 1.0  # 0.85 < 0.9 × 1.0; the test row is not a curve point
    assert out["ratio@2"] == pytest.approx(0.95) and "ratio@5" not in out
    assert out["grad_norm_median"] == 1.5 and out["grad_norm_max"] == 30.0 and out["spike_ratio"] == 20.0
    assert out["grad_norm_max_step"] == 4 and out["spike_ratio_late"] == 20.0  # second half: steps 3-5
    never = nc_gru.run_numbers(rows[:6], baseline=1.0, steps=5, eval_every=2)
    assert never["leave_step"] == 7 and never["left"] == 0.0  # censored at steps + eval_every
    assert "spike_ratio" not in nc_gru.run_numbers(rows[5:], baseline=1.0, steps=5, eval_every=2)


def test_run_numbers_uses_window_max_for_spikes() -> None:
    rows = [{"step": 10, "split": "train", "grad_norm": 1.0, "grad_norm_max": 12.0},
            {"step": 20, "split": "train", "grad_norm": 1.0, "grad_norm_max": 1.1}]
    out = nc_gru.run_numbers(rows, baseline=1.0, steps=20, eval_every=10)
    assert out["grad_norm_max"] == 12.0 and out["spike_ratio"] == 12.0 and math.isclose(out["grad_norm_median"], 1.0)


def test_registered_and_grid_shape() -> None:
    card = get_experiment("nc-gru")
    assert card.derive is nc_gru.derive
    small = card.entries("small")
    assert len(small) == len(nc_gru.TASKS) * len(nc_gru.SMALL_MODELS)
    assert {(e.labels["arch"], e.task) for e in small} == {(m, t) for m in MODELS for t in nc_gru.TASKS}
    assert all(e.model_args == {"d_model": 64} for e in small)
    assert card.scale("small").seeds == (0, 1) and card.scale("small").train["log_every"] == 1
    assert card.scale("small").train["clip_norm"] is not None  # the pre-clip norm is only computed when clipping
    assert len(card.entries("paper")) == len(nc_gru.TASKS) * len(nc_gru.MODELS)


def test_claims_held() -> None:
    res = _results(_good())
    for name in ("leaves_baseline_no_later", "ends_lower", "no_grad_spikes", "u_c_orthogonal"):
        assert testing.claim("nc-gru", name).evaluate(res).held is True, name


def test_spikes_are_an_observation_not_a_claim() -> None:
    """The spike bound is the spec's expectation, not the paper's: judged and reported, never counted."""
    card = get_experiment("nc-gru")
    assert [c.name for c in card.claims] == ["leaves_baseline_no_later", "ends_lower"]
    assert [o.name for o in card.observations] == ["u_c_orthogonal", "no_grad_spikes"]
    assert "no_grad_spikes" not in card.causes and "u_c_orthogonal" not in card.causes
    cells = _good()
    cells[("nc_gru", "copy")] = {**_cell(0.05, 300.0, 4.0, orth=5e-4), "spike_ratio": [4.0, 12.0]}
    assert [r.held for _, r in card.observe(_results(cells))] == [True, False]
    assert [r.held for _, r in card.evaluate(_results(cells))] == [True, True]


def test_leave_not_held_when_later_or_never() -> None:
    cells = _good()
    cells[("nc_gru", "copy")] = _cell(0.05, 900.0, 4.0)  # later than GRU's 800
    out = testing.claim("nc-gru", "leaves_baseline_no_later").evaluate(_results(cells))
    assert out.held is False and out.numbers["copy"]["nc_gru"] == [900.0, 900.0]
    cells = _good()
    cells[("nc_gru", "denoise")] = {**_cell(0.05, 300.0, 4.0), "left": [1.0, 0.0]}  # one seed never left
    assert testing.claim("nc-gru", "leaves_baseline_no_later").evaluate(_results(cells)).held is False


def test_lower_and_spikes_not_held() -> None:
    cells = _good()
    cells[("nc_gru", "denoise")] = _cell(0.2, 300.0, 4.0)  # ties GRU: not lower
    assert testing.claim("nc-gru", "ends_lower").evaluate(_results(cells)).held is False
    cells = _good()
    cells[("nc_gru", "copy")] = {**_cell(0.05, 300.0, 4.0), "spike_ratio": [4.0, 12.0]}
    out = testing.claim("nc-gru", "no_grad_spikes").evaluate(_results(cells))
    assert out.held is False and out.numbers["nc_gru_worst_ratio"] == 12.0


def test_orthogonality_observation() -> None:
    """Held only when every NC-GRU run stays within ORTH_TOL; runs without the logged metric cannot decide it."""
    check = testing.claim("nc-gru", "u_c_orthogonal")
    cells = _good()
    cells[("nc_gru", "denoise")] = {**_cell(0.05, 300.0, 4.0), "orth_error_max": [5e-4, 2e-3],
                                    "orth_error_median": [1e-5, 1e-5]}  # one seed drifted past 1e-3
    out = check.evaluate(_results(cells))
    assert out.held is False and out.numbers["denoise"]["nc_gru"]["fro_max"] == [5e-4, 2e-3]
    cells = _good()
    cells[("nc_gru", "copy")] = _cell(0.05, 300.0, 4.0)  # e.g. a small-scale run from before the metric existed
    assert check.evaluate(_results(cells)).held is None
    cells = _good()
    cells[("nc_gru_r", "copy")] = _cell(0.05, 300.0, 4.0, orth=3e-3)  # the (U_c, U_r) variant counts when run
    assert check.evaluate(_results(cells)).held is False


def test_run_numbers_orthogonality_from_train_rows() -> None:
    """The worst orthogonal matrix of each row (any ``<path>.orth_error``), then max and median over the rows."""
    key = "layers.0.cell.orth_{}.orth_error"
    rows = [{"step": s, "split": "train", "grad_norm": 1.0, key.format("c"): c, key.format("r"): r,
             key.format("c") + "_maxabs": c / 10} for s, c, r in ((1, 1e-6, 2e-6), (2, 4e-4, 1e-5), (3, 3e-5, 1e-6))]
    out = nc_gru.run_numbers(rows, baseline=1.0, steps=3, eval_every=3)
    assert out["orth_error_max"] == 4e-4 and out["orth_error_median"] == 3e-5 and out["orth_maxabs_max"] == 4e-5
    plain = [{k: v for k, v in r.items() if "orth" not in k} for r in rows]
    assert not any(k.startswith("orth") for k in nc_gru.run_numbers(plain, baseline=1.0, steps=3, eval_every=3))


def test_medium_grid_decides_the_claims() -> None:
    """GRU and NC-GRU on both tasks (each claim needs both), longer than small, 3 seeds, the small lengths."""
    card = get_experiment("nc-gru")
    small, medium = card.entries("small"), card.entries("medium")
    assert {(e.labels["arch"], e.task) for e in medium} == {(m, t) for m in ("gru", "nc_gru") for t in nc_gru.TASKS}
    assert {e.task: e.train["steps"] for e in medium} == nc_gru.MEDIUM_STEPS
    assert all(steps > card.scale("small").train["steps"] for steps in nc_gru.MEDIUM_STEPS.values())
    lengths = {e.task: e.task_args for e in small}
    assert all(e.task_args == lengths[e.task] and e.model_args == {"d_model": 64} for e in medium)
    scale = card.scale("medium")
    assert len(scale.seeds) >= 3 and scale.expected_seconds is not None and scale.expected_seconds <= 60 * 60
    assert all(e.train == {} for e in small)  # small's job keys stay those of its recorded runs


def test_medium_without_lstm_decides_and_draws(tmp_path) -> None:
    """The medium grid has no LSTM: every claim and observation is still decided, and the plot skips the gap."""
    card = get_experiment("nc-gru")
    cells = {k: v for k, v in _good().items() if k[0] in nc_gru.MEDIUM_MODELS}
    res = _results(cells)
    assert [r.held for _, r in card.evaluate(res)] == [True, True]
    assert [r.held for _, r in card.observe(res)] == [True, True]
    for t in nc_gru.TASKS:  # the curves read ratio@<step> from the derived numbers
        for m in nc_gru.MEDIUM_MODELS:
            res.find(arch=m, task=t).metrics["derived"].update({"ratio@100": Stat.of([1.0, 1.0]),
                                                               "ratio@200": Stat.of([0.8, 0.9])})
    nc_gru._draw(res, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_missing_results_are_undecided() -> None:
    cells = {k: v for k, v in _good().items() if k[1] == "denoise"}  # no copy runs
    for name in ("leaves_baseline_no_later", "ends_lower", "no_grad_spikes"):
        assert testing.claim("nc-gru", name).evaluate(_results(cells)).held is None, name
    cells = _good()
    del cells[("gru", "copy")]
    assert testing.claim("nc-gru", "ends_lower").evaluate(_results(cells)).held is None


def test_tiny_reproduce(tmp_path) -> None:
    from seqzoo.experiments.runner import reproduce

    report = reproduce("nc-gru", scale="tiny", out=tmp_path, workers=1, progress=False, echo=None)
    assert not report.failures and report.runs_total == 6
    verdicts = {c.name: r for c, r in report.claims}
    assert all(r.held is not None for r in verdicts.values()), {k: r.detail for k, r in verdicts.items()}
    derived = report.results.find(arch="nc_gru", task="denoise").metrics["derived"]
    assert {"leave_step", "left", "spike_ratio", "grad_norm_max", "ratio@2", "ratio@4"} <= set(derived)
    assert {"orth_error_max", "orth_error_median", "orth_maxabs_max"} <= set(derived)
    assert derived["orth_error_max"].mean < nc_gru.ORTH_TOL  # logged after every step of the run
    assert "orth_error_max" not in report.results.find(arch="gru", task="denoise").metrics["derived"]
    assert (report.out_dir / "curves.png").exists()


def test_trainer_logs_pre_clip_grad_norm(tmp_path) -> None:
    """Train rows carry the mean / max pre-clip gradient norm of their window when clipping is on."""
    from seqzoo.training import train
    from seqzoo.training.runs import read_metrics

    cfg = {"steps": 4, "batch_size": 4, "eval_every": 4, "log_every": 2, "clip_norm": 1e-3, "progress": False,
           "tensorboard": False, "eval_batch_size": 8}
    args = {"model_args": {"d_model": 4}, "task_args": {"seq_len": 3, "n_valid": 8, "n_test": 8}}
    res = train("nc_gru", "denoise", config=cfg, out=tmp_path, index=False, **args)
    rows = [r for r in read_metrics(res.run_dir) if r["split"] == "train"]
    assert [r["step"] for r in rows] == [2, 4]
    for r in rows:
        assert math.isfinite(r["grad_norm"]) and r["grad_norm_max"] >= r["grad_norm"] > 1e-3  # pre-clip, not clipped
    res = train("nc_gru", "denoise", config={**cfg, "clip_norm": None}, out=tmp_path, index=False, **args)
    assert all("grad_norm" not in r for r in read_metrics(res.run_dir) if r["split"] == "train")


def test_aggregate_skips_derive_without_run_dir() -> None:
    from seqzoo.experiments.runner import aggregate, plan

    card = get_experiment("nc-gru")
    job = plan(card, "tiny")[0]
    row = {"run_id": "r0", "run_dir": "/nonexistent/run", "valid": {}, "test": {"cross_entropy": 0.5}}
    res = aggregate(card, [(job, row)])
    assert "derived" not in res.entries[0].metrics and res.entries[0].metrics["test"]["cross_entropy"].mean == 0.5

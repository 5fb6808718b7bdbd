"""``seqzoo compare`` with many groups: one panel per task, legend below, markers, tables within 120 characters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seqzoo.cli.main import main
from seqzoo.experiments.compare import curves_figure, format_table, group_runs, load_runs

pytest.importorskip("matplotlib")


@pytest.fixture(autouse=True)
def _mpl(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))


def fake_run(root: Path, name: str, *, model: str, task: str, seed: int, model_args: dict, steps: list[int],
             value: float, metric: str = "mse") -> Path:
    """A finished run directory as the trainer writes it (config, result, metrics.jsonl with train and valid)."""
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"model": model, "task": task, "model_args": model_args,
                                               "task_args": {}, "train": {"seed": seed, "steps": steps[-1]}}))
    (d / "result.json").write_text(json.dumps({"run_id": name, "status": "finished", "valid": {metric: value},
                                               "test": {metric: value + 0.01 * seed}}))
    rows = [{"step": s, "split": "train", "loss": value * 2 / s} for s in steps]
    rows += [{"step": s, "split": "valid", metric: value / s} for s in steps]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def many_groups(root: Path) -> Path:
    long_args = {"d_model": 64, "layer_kwargs": {"window": 25, "affine": True, "eps": 1e-5, "momentum": 0.1}}
    for i in range(7):
        for seed in (0, 1):
            fake_run(root, f"adding-m{i}-s{seed}", model=f"lstm_variant_with_a_long_name_{i}", task="adding",
                     seed=seed, model_args={**long_args, "n_layers": i}, steps=[10, 20, 30], value=1.0 + i)
    fake_run(root, "copy-once", model="gru", task="copy", seed=0, model_args={"d_model": 8}, steps=[50], value=0.3)
    return root


def test_table_lines_fit_120_characters(tmp_path):
    groups = group_runs(load_runs([str(many_groups(tmp_path))]), "mse", "test")
    table = format_table(groups, "mse", "test")
    assert len(groups) == 8
    assert max(len(line) for line in table.splitlines()) <= 120
    # long labels wrap onto continuation lines instead of being cut: every word of every label is there
    assert {w for g in groups for w in g.label.split()} <= set(table.split())
    assert any(line.startswith("  ") for line in table.splitlines())


def test_figure_has_one_panel_per_task_and_the_legend_below(tmp_path):
    groups = group_runs(load_runs([str(many_groups(tmp_path))]), "mse", "test")
    fig, split = curves_figure(groups, "mse", "valid")
    axes = fig.get_axes()
    assert split == "valid" and sorted(ax.get_title() for ax in axes) == ["adding", "copy"]
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in axes)
    fig.canvas.draw()
    legend_top = fig.legends[0].get_window_extent().y1
    assert legend_top <= min(ax.get_window_extent().y0 for ax in axes)  # below every panel, not over them
    assert len(fig.legends[0].get_texts()) == 8
    # each panel has its own y scale
    lims = {ax.get_title(): ax.get_ylim() for ax in axes}
    assert lims["copy"][1] < lims["adding"][1]
    # a group with a single evaluation point is drawn with a marker (a line of one point is invisible)
    (single,) = next(ax for ax in axes if ax.get_title() == "copy").get_lines()
    assert len(single.get_xdata()) == 1 and single.get_marker() not in (None, "None", "")


def test_cli_plot_path_and_train_loss_curves(capsys, tmp_path):
    runs = many_groups(tmp_path / "runs")
    rc = main(["compare", str(runs), "--metric", "mse", "--plot", str(tmp_path / "curves")])
    out = capsys.readouterr().out
    assert rc == 0 and f"plot: {tmp_path / 'curves.png'}" in out and (tmp_path / "curves.png").stat().st_size > 1000
    rc = main(["compare", str(runs), "--metric", "loss", "--curve-split", "train", "--plot", str(tmp_path / "l.png")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert (tmp_path / "l.png").exists() and "no test loss" in out
    rc = main(["compare", str(runs), "--metric", "loss"])  # without a plot a train-only metric is still an error
    assert rc == 2 and "unknown test metric 'loss'" in capsys.readouterr().err

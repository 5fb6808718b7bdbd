"""The ``seqzoo`` command line, called in-process through ``main(argv)`` (and once as a console script)."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from seqzoo.cli.config import ConfigError, parse_assignments, parse_value, route
from seqzoo.cli.main import main


@pytest.fixture(autouse=True)
def _mpl(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    monkeypatch.delenv("SEQZOO_DEBUG", raising=False)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# ----------------------------------------------------------------------------------------------
# list
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("what,name,word", [("models", "lstm", "LSTM"), ("tasks", "adding", "Adding"),
                                            ("experiments", "memorization", "Memory-distance")])
def test_list(capsys, what, name, word):
    rc, out, _ = run(capsys, "list", what)
    assert rc == 0
    line = next(ln for ln in out.splitlines() if ln.startswith(name + " "))
    assert word in line


def test_list_pattern(capsys):
    rc, out, _ = run(capsys, "list", "models", "gru*")
    assert rc == 0 and "gru" in out and "lstm " not in out


# ----------------------------------------------------------------------------------------------
# key=value routing
# ----------------------------------------------------------------------------------------------
def test_parse_value():
    assert parse_value("50") == 50 and parse_value("1e-3") == 1e-3 and parse_value("true") is True
    assert parse_value("null") is None and parse_value("[1, 2]") == [1, 2] and parse_value("None") is None
    assert parse_value("cosine") == "cosine" and parse_value('"7"') == "7"


def test_route_and_ambiguity():
    keys = {"model": ["d_model", "dropout"], "task": ["seq_len", "dropout"], "train": ["lr", "steps"]}
    routed = route(parse_assignments(["seq_len=50", "d_model=64", "lr=1e-3", "task.dropout=0.1"]), keys)
    assert routed == {"model": {"d_model": 64}, "task": {"seq_len": 50, "dropout": 0.1}, "train": {"lr": 1e-3}}
    with pytest.raises(ConfigError, match="ambiguous.*model.dropout=0.2 or task.dropout=0.2"):
        route(parse_assignments(["dropout=0.2"]), keys)
    with pytest.raises(ConfigError, match="did you mean 'seq_len' \\(task\\)"):
        route(parse_assignments(["seqlen=5"]), keys)
    with pytest.raises(ConfigError, match="did you mean 'model.d_model'"):
        route(parse_assignments(["model.dmodel=5"]), keys)
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_assignments(["seq_len"])
    with pytest.raises(ConfigError, match="did you mean 'train.lr'"):
        parse_assignments(["trian.lr=1"])


def test_print_config(capsys):
    rc, out, _ = run(capsys, "train", "--model", "lstm", "--task", "adding", "seq_len=50", "d_model=64", "lr=1e-3",
                     "steps=500", "schedule=cosine", "--seeds", "0", "1", "--print-config")
    assert rc == 0
    cfg = json.loads(out)
    assert cfg["task_args"]["seq_len"] == 50 and cfg["task_args"]["n_valid"] == 1000  # task defaults shown too
    assert cfg["model_args"]["d_model"] == 64 and cfg["model_args"]["d_input"] == 2  # filled in by the task
    assert cfg["model_args"]["decoder"] == "last"
    assert cfg["train"]["lr"] == 1e-3 and cfg["train"]["steps"] == 500 and cfg["train"]["schedule"] == "cosine"
    assert cfg["seeds"] == [0, 1]


@pytest.mark.parametrize("argv,needle", [
    (["seqlen=10"], "did you mean 'seq_len' (task)?"),
    (["d_modle=8"], "did you mean 'd_model' (model)?"),
    (["learning_rate=0.1"], "unknown key 'learning_rate'"),
    (["steps=-3"], "steps"),
    (["optimizer=adamm"], "adam"),
    (["d_model=0"], "d_model"),
    (["seq_len=1"], "seq_len"),
])
def test_bad_key_or_value_exits_2_before_work(capsys, tmp_path, argv, needle):
    rc, out, err = run(capsys, "train", "--model", "lstm", "--task", "adding", *argv, "--out", str(tmp_path / "r"))
    assert rc == 2
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_unknown_names_exit_2(capsys):
    rc, _, err = run(capsys, "train", "--model", "lstmm", "--task", "adding", "--print-config")
    assert rc == 2 and "did you mean 'lstm'" in err
    rc, _, err = run(capsys, "train", "--model", "lstm", "--task", "addng", "--print-config")
    assert rc == 2 and "did you mean 'adding'" in err
    rc, _, err = run(capsys, "reproduce", "memorisation", "--scale", "tiny")
    assert rc == 2 and "did you mean 'memorization'" in err


# ----------------------------------------------------------------------------------------------
# train -> eval -> compare
# ----------------------------------------------------------------------------------------------
def test_train_eval_compare(capsys, tmp_path):
    out_dir = tmp_path / "runs"
    rc, out, err = run(capsys, "train", "--model", "lstm", "--task", "adding", "seq_len=10", "steps=20", "d_model=8",
                       "eval_every=10", "tensorboard=false", "progress=false", "--seeds", "0", "1",
                       "--out", str(out_dir))
    assert rc == 0, err
    assert "seed 0:" in out and "seed 1:" in out and "mean ± std" in out
    run_dirs = sorted(p.parent for p in out_dir.glob("*/config.json"))
    assert len(run_dirs) == 2

    rc, out, _ = run(capsys, "eval", str(run_dirs[0]), "--split", "test", "--json")
    assert rc == 0 and "mse" in json.loads(out)

    plot = tmp_path / "curves.png"
    rc, out, err = run(capsys, "compare", str(out_dir), "--metric", "mse", "--plot", str(plot))
    assert rc == 0, err
    row = next(ln for ln in out.splitlines() if ln.startswith("lstm on adding"))
    assert " 2 " in row and "±" in row
    assert plot.stat().st_size > 1000

    # a glob of run directories and the index give the same table
    rc, out_glob, _ = run(capsys, "compare", str(out_dir / "adding-*"), "--metric", "mse")
    rc2, out_idx, _ = run(capsys, "compare", "--index", str(out_dir / "index.sqlite"), "--metric", "mse")
    assert rc == rc2 == 0 and out_glob == out_idx

    rc, _, err = run(capsys, "compare", str(out_dir), "--metric", "msee")
    assert rc == 2 and "did you mean 'mse'" in err
    rc, _, err = run(capsys, "eval", str(tmp_path / "nope"))
    assert rc == 2 and "not a run directory" in err


def test_compare_groups_by_config(capsys, tmp_path):
    out_dir = tmp_path / "runs"
    for d_model in (4, 8):
        rc = main(["train", "--model", "gru", "--task", "adding", "seq_len=6", "steps=5", f"d_model={d_model}",
                   "eval_every=5", "tensorboard=false", "progress=false", "--out", str(out_dir)])
        assert rc == 0
    capsys.readouterr()
    rc, out, _ = run(capsys, "compare", str(out_dir), "--metric", "mse", "--split", "valid")
    assert rc == 0
    assert "gru on adding [d_model=4]" in out and "gru on adding [d_model=8]" in out


# ----------------------------------------------------------------------------------------------
# bench / reproduce / report
# ----------------------------------------------------------------------------------------------
def test_bench_forwards_argv(capsys, monkeypatch):
    seen = {}
    fake = types.ModuleType("seqzoo.experiments.bench")
    fake.main = lambda argv: seen.setdefault("argv", argv) and 0
    monkeypatch.setitem(sys.modules, "seqzoo.experiments.bench", fake)
    import seqzoo.experiments

    monkeypatch.setattr(seqzoo.experiments, "bench", fake, raising=False)
    assert main(["bench", "--models", "lstm", "--help"]) == 0
    assert seen["argv"] == ["--models", "lstm", "--help"]


def test_reproduce_and_report_tiny(capsys, tmp_path):
    out_dir = tmp_path / "runs"
    rc, out, err = run(capsys, "reproduce", "memorization", "--scale", "tiny", "--out", str(out_dir), "--no-progress")
    assert rc == 0, err
    verdict_lines = [ln for ln in out.splitlines() if ln.startswith("[")]
    assert len(verdict_lines) == 3
    assert all(ln.split("]")[0][1:].startswith("tiny: not a result (") for ln in verdict_lines)
    assert "numbers:" in out and "mae_X4" in out
    assert (out_dir / "memorization/tiny/summary.json").exists()
    page = tmp_path / "results.md"
    rc, out, err = run(capsys, "report", "--out", str(out_dir), "--output", str(page))
    assert rc == 0, err
    assert "jump_4_to_5" in page.read_text()


def test_console_script(tmp_path):
    exe = Path(sys.executable).with_name("seqzoo")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "seqzoo.cli.main"]
    proc = subprocess.run([*cmd, "list", "experiments"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "memorization" in proc.stdout
    proc = subprocess.run([*cmd, "train", "--model", "lstm", "--task", "adding", "seqlen=3", "--print-config"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "did you mean 'seq_len' (task)?" in proc.stderr
    assert "Traceback" not in proc.stderr

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


# ----------------------------------------------------------------------------------------------
# issue 15: overrides anywhere, eval of several runs, errors, list, help, start-up
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["--model", "lstm", "--task", "adding", "seq_len=50", "--seeds", "0", "1", "--out", "runs/", "steps=5"],
    ["--model", "lstm", "--task", "adding", "seq_len=50", "--seeds", "0", "1", "steps=5"],
    ["steps=5", "--model", "lstm", "seq_len=50", "--task", "adding", "--seeds", "0", "1"],
    ["--seeds", "0", "1", "seq_len=50", "steps=5", "--model=lstm", "--task", "adding"],
])
def test_overrides_anywhere_on_the_line(capsys, argv):
    rc, out, err = run(capsys, "train", *argv, "--print-config")
    assert rc == 0, err
    cfg = json.loads(out)
    assert cfg["overrides"]["task"] == {"seq_len": 50} and cfg["overrides"]["train"] == {"steps": 5}
    assert cfg["seeds"] == [0, 1]


def test_an_option_value_with_equals_is_not_an_override(capsys, tmp_path):
    from seqzoo.cli.main import build_parser, split_overrides

    rest, overrides = split_overrides(build_parser(), ["--name", "a=b", "--out", "x=y", "steps=3", "--resume"])
    assert rest == ["--name", "a=b", "--out", "x=y", "--resume"] and overrides == ["steps=3"]


def test_eval_several_runs_prints_a_table_and_json(capsys, tmp_path):
    out_dir = tmp_path / "runs"
    rc = main(["train", "--model", "gru", "--task", "adding", "seq_len=6", "steps=3", "d_model=4", "eval_every=3",
               "tensorboard=false", "progress=false", "--seeds", "0", "1", "--out", str(out_dir)])
    assert rc == 0
    capsys.readouterr()
    runs = sorted(str(p.parent) for p in out_dir.glob("*/config.json"))
    rc, out, err = run(capsys, "eval", *runs, "--split", "valid")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["run", "valid", "mse"] and len(lines) == 4
    rc, out, _ = run(capsys, "eval", *runs, "--json")
    assert rc == 0 and sorted(json.loads(out)) == runs and "mse" in json.loads(out)[runs[0]]
    rc, _, err = run(capsys, "eval", runs[0], str(tmp_path / "nope"))
    assert rc == 2 and "nope is not a run directory" in err


def _fail_with(monkeypatch, exc: BaseException) -> None:
    import seqzoo.cli.main as cli

    def boom(args):
        raise exc

    monkeypatch.setattr(cli, "cmd_list", boom)
    monkeypatch.setattr(cli, "build_parser", _parser_with(boom))


def _parser_with(func):
    from seqzoo.cli.main import build_parser as real

    def build():
        p = real()
        p._subparsers._group_actions[0].choices["list"].set_defaults(func=func)
        return p

    return build


def _reraised_import_error() -> ImportError:
    """What seqzoo.experiments.plots raises when matplotlib is missing: an ImportError from the real one."""
    try:
        try:
            raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")
        except ModuleNotFoundError as exc:
            raise ImportError("plots need matplotlib") from exc
    except ImportError as exc:
        return exc


@pytest.mark.parametrize("exc,expected", [
    (ConfigError("bad key 'x'"), "bad key 'x'"),
    (FileNotFoundError(2, "No such file or directory", "data/x.csv"), "data/x.csv: No such file or directory"),
    (PermissionError(13, "Permission denied", "/ro/runs"), "/ro/runs: Permission denied"),
    (ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib"), "pip install 'seqzoo[train]'"),
    (_reraised_import_error(), "pip install 'seqzoo[train]'"),
])
def test_user_errors_are_one_line(capsys, monkeypatch, exc, expected):
    _fail_with(monkeypatch, exc)
    rc, _, err = run(capsys, "list", "models")
    assert rc == 2 and err.strip() == err.strip().splitlines()[0] and expected in err


@pytest.mark.parametrize("exc", [RuntimeError("shape mismatch"), TypeError("unsupported operand"),
                                 ValueError("a bug that is not a seqzoo.errors user error"),
                                 ImportError("cannot import name 'x'"),
                                 ModuleNotFoundError("No module named 'seqzoo.nope'", name="seqzoo.nope"),
                                 OSError("no file attached")])
def test_bugs_keep_their_traceback(capsys, monkeypatch, exc):
    _fail_with(monkeypatch, exc)
    with pytest.raises(type(exc)):
        main(["list", "models"])


def test_list_json_and_width(capsys, monkeypatch):
    for what, name in (("models", "lstm"), ("tasks", "adding"), ("experiments", "memorization")):
        rc, out, _ = run(capsys, "list", what, "--json")
        assert rc == 0 and name in {r["name"] for r in json.loads(out)}
    monkeypatch.setenv("COLUMNS", "70")
    for what in ("models", "tasks", "experiments"):
        rc, out, _ = run(capsys, "list", what)
        assert rc == 0 and max(len(ln) for ln in out.splitlines()) <= 70


def test_list_models_shows_parameter_counts(capsys):
    rc, out, _ = run(capsys, "list", "models", "lstm", "--json")
    (rec,) = json.loads(out)
    from seqzoo.models import create_model

    assert rec["params"] == sum(p.numel() for p in create_model("lstm").parameters())
    rc, out, _ = run(capsys, "list", "models", "lstm")
    assert out.splitlines()[0].split()[:2] == ["model", "params"]


def test_list_tasks_builds_no_task_and_names_its_paper(capsys, monkeypatch):
    import functools

    from seqzoo.tasks import TASKS

    for name in TASKS.names():
        cls = TASKS.get(name)

        @functools.wraps(cls.__init__)  # task_info still reads the signature
        def refuse(self, *a, **k):
            raise AssertionError(f"list tasks built {type(self).__name__}")

        monkeypatch.setattr(cls, "__init__", refuse)
    rc, out, err = run(capsys, "list", "tasks")
    assert rc == 0, err
    row = next(ln for ln in out.splitlines() if ln.startswith("memorization "))
    assert "Illium et al. 2022" in row
    assert out.splitlines()[0].split()[:2] == ["task", "paper"]


def test_help_shows_defaults_and_points_at_list(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "(default: runs)" in out and "seqzoo list models" in out and "seqzoo list tasks" in out


def test_only_rank_0_prints_the_train_summary(capsys, monkeypatch):
    import seqzoo.training

    fake = types.SimpleNamespace(status="finished", steps=1, best_step=1, valid={"mse": 1.0}, test={"mse": 1.0},
                                 wall_time=0.1, run_dir="r")
    monkeypatch.setattr(seqzoo.training, "train", lambda *a, **k: fake)
    argv = ["train", "--model", "lstm", "--task", "adding", "seq_len=5", "steps=1"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    rc, out, _ = run(capsys, *argv)
    assert rc == 0 and out == ""
    monkeypatch.setenv("RANK", "0")
    rc, out, _ = run(capsys, *argv)
    assert rc == 0 and "seed 0: finished" in out and "mean ± std" in out


def test_closed_pipe_is_quiet(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "seqzoo.cli.main", "list", "experiments"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the command writes (like `| head -1` on a long listing)
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_startup_does_not_import_torch_or_cards():
    code = ("import sys\nfrom seqzoo.cli.main import main\n"
            "for argv in (['--help'], ['--version']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "import seqzoo\nassert seqzoo.__version__\n"
            "print(sorted(m for m in ('torch', 'seqzoo.experiments', 'seqzoo.layers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    code = "import sys, seqzoo.layers; print('seqzoo.experiments' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr


def test_norm_on_a_recurrent_preset_is_the_cells_normalization(capsys):
    """`seqzoo.LSTM(norm="atn")` and `seqzoo train --model lstm norm=atn` mean the same thing."""
    import torch

    from seqzoo.models import create_model

    rc, out, err = run(capsys, "train", "--model", "lstm", "--task", "adding", "norm=atn", "--print-config")
    assert rc == 0, err
    assert json.loads(out)["model_args"]["norm"] == "atn"
    torch.manual_seed(0)
    a = create_model("lstm", d_input=2, d_model=8, norm="atn")
    torch.manual_seed(0)
    b = create_model("lstm", d_input=2, d_model=8, layer_kwargs={"norm": "atn"})
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    rc, _, err = run(capsys, "train", "--model", "lstm_native", "--task", "adding", "norm=layer", "--print-config")
    assert rc == 2 and "has no cell normalization" in err and "post_norm" in err


def test_train_with_a_module_says_so_in_one_line(tmp_path):
    """`seqzoo.train(nn_module, ...)` used to print the whole module's repr in its TypeError."""
    import torch

    import seqzoo

    model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(20)])
    with pytest.raises(TypeError) as info:
        seqzoo.train(model, "adding", out=tmp_path)
    msg = str(info.value)
    assert "\n" not in msg and "Sequential" in msg and "register_model" in msg and len(msg) < 200

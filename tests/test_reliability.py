"""Bad inputs, tampered and damaged run folders (issue #7): a clear error or a correct result, never a traceback
for the user's mistake, never a file touched outside the run folder."""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seqzoo
from seqzoo.cli.main import main
from seqzoo.errors import ConfigError, IntegrityError, RunError, SeqzooError
from seqzoo.training import RunIndex, evaluate_run, load_run

QUIET = {"progress": False, "tensorboard": False}
SMALL = {"steps": 4, "eval_every": 2, "batch_size": 4, "eval_batch_size": 16, **QUIET}
TASK = {"seq_len": 10, "n_valid": 8, "n_test": 8}
MODEL = {"d_model": 8}


def _train(out, **kw):
    return seqzoo.train("lstm", "adding", model_args=MODEL, task_args=TASK,
                        config={**SMALL, **kw.pop("config", {})}, out=out, **kw)


def _tree(root: Path) -> dict[str, tuple[int, float]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "runs"
    return _train(out)


def _copy_run(finished, tmp_path) -> Path:
    d = tmp_path / "runs" / finished.run_dir.name
    shutil.copytree(finished.run_dir, d)
    return d


def _cli(capsys, *argv) -> tuple[int, str]:
    rc = main(list(argv))
    err = capsys.readouterr().err
    return rc, err


# ----- run names and overwrite ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["..", ".", "../x", "a/b", "/tmp/abs", "", "a\\b"])
def test_run_name_is_one_folder_inside_out(tmp_path, name):
    proj = tmp_path / "proj"
    (proj / "runs").mkdir(parents=True)
    (proj / "config.json").write_text(json.dumps({"model": "x", "model_args": {}, "task": "y", "task_args": {},
                                                  "train": {}}))
    (proj / "precious.txt").write_text("data")
    before = _tree(tmp_path)
    with pytest.raises(ConfigError, match="run name"):
        _train(proj / "runs", run_name=name, overwrite=True)
    assert _tree(tmp_path) == before


def test_overwrite_removes_only_a_seqzoo_run(tmp_path):
    out = tmp_path / "runs"
    (out / "mine").mkdir(parents=True)
    (out / "mine" / "notes.txt").write_text("not a run")
    (out / "mine" / "config.json").write_text("{}")
    with pytest.raises(RunError, match="not a seqzoo run folder"):
        _train(out, run_name="mine", overwrite=True)
    assert (out / "mine" / "notes.txt").read_text() == "not a run"
    res = _train(out, run_name="ok")
    again = _train(out, run_name="ok", overwrite=True)  # a real run is replaced
    assert again.run_dir == res.run_dir and again.status == "finished"


def test_cli_name_outside_out_is_refused(tmp_path, capsys):
    rc, err = _cli(capsys, "train", "--model", "lstm", "--task", "adding", "seq_len=10", "steps=2",
                   "--out", str(tmp_path / "runs"), "--name", "../../escaped")
    assert rc == 2 and "run name" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("escaped*"))


# ----- failed starts leave nothing ----------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["seq_len=25.5"], ["seq_len=abc"], ["d_model=64.5"], ["d_model=[1,2]"],
                                  ["d_model=true"], ["model.d_output=3"]])
def test_failed_start_leaves_no_folder_and_print_config_agrees(tmp_path, capsys, argv):
    out = tmp_path / "runs"
    rc, err = _cli(capsys, "train", "--model", "lstm", "--task", "adding", *argv, "steps=2", "--out", str(out))
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()
    rc2, err2 = _cli(capsys, "train", "--model", "lstm", "--task", "adding", *argv, "steps=2", "--print-config")
    assert rc2 == 2 and err2 == err


def test_corrupt_data_fails_before_the_folder(tmp_path, capsys):
    bad = tmp_path / "series.csv"
    bad.write_bytes(b"\xff\xfe\x00garbage\n")
    out = tmp_path / "runs"
    rc, err = _cli(capsys, "train", "--model", "lstm", "--task", "forecast", "series=file", f"path={bad}",
                   "steps=2", "--out", str(out))
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert not out.exists()
    rc2, _ = _cli(capsys, "train", "--model", "lstm", "--task", "forecast", "series=file", f"path={bad}",
                  "--print-config")
    assert rc2 == 2


# ----- the output folder and the index ---------------------------------------------------------------------------
def test_out_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "out"
    f.write_text("x")
    rc, err = _cli(capsys, "train", "--model", "lstm", "--task", "adding", "steps=2", "--out", str(f))
    assert rc == 2 and "is a file" in err and f.read_text() == "x"


def test_out_on_a_read_only_file_system(tmp_path, capsys):
    rc, err = _cli(capsys, "train", "--model", "lstm", "--task", "adding", "seq_len=10", "steps=2",
                   "--out", "/proc/seqzoo-runs")
    assert rc == 2 and "/proc/seqzoo-runs" in err and len(err.strip().splitlines()) == 1


def test_garbage_index_fails_before_training(tmp_path, capsys):
    out = tmp_path / "runs"
    out.mkdir()
    (out / "index.sqlite").write_bytes(os.urandom(4096))
    rc, err = _cli(capsys, "train", "--model", "lstm", "--task", "adding", "seq_len=10", "steps=2",
                   "--out", str(out))
    assert rc == 2 and "index.sqlite" in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["index.sqlite"]  # no run folder was started
    with pytest.raises(RunError, match="not a usable seqzoo run index"):
        RunIndex(out / "index.sqlite").query()


def test_index_refuses_unknown_status(tmp_path):
    idx = RunIndex(tmp_path / "index.sqlite")
    with pytest.raises(ValueError, match="status must be one of"):
        idx.add({"run_id": "a", "run_dir": "x", "model": "m", "task": "t", "seed": 0, "status": "bogus"})
    assert len(idx) == 0
    con = sqlite3.connect(tmp_path / "other.sqlite")
    con.execute("CREATE TABLE runs (x INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(RunError, match="not a seqzoo run index"):
        RunIndex.check_readable(tmp_path / "other.sqlite")


# ----- best weights ---------------------------------------------------------------------------------------------
def test_flipped_bits_in_best_weights_are_refused(finished, tmp_path, capsys):
    d = _copy_run(finished, tmp_path)
    w = d / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-5] ^= 0x10
    data[-40] ^= 0x01
    w.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="model.safetensors"):
        load_run(d)
    rc, err = _cli(capsys, "eval", str(d))
    assert rc == 2 and "model.safetensors" in err and len(err.strip().splitlines()) == 1


def test_weights_of_another_dtype_are_refused(finished, tmp_path):
    from safetensors.torch import load_file, save_file

    d = _copy_run(finished, tmp_path)
    state = load_file(str(d / "model.safetensors"))
    save_file({k: (v * 1000).to(torch.int32) for k, v in state.items()}, str(d / "model.safetensors"))
    spec = json.loads((d / "model.json").read_text())
    spec.pop("weights")  # as if written before checksums: the dtype check alone must catch it
    (d / "model.json").write_text(json.dumps(spec))
    with pytest.raises(RunError, match="torch.int32"):
        load_run(d)


def test_truncated_or_random_weights_name_the_file(finished, tmp_path):
    d = _copy_run(finished, tmp_path)
    spec = json.loads((d / "model.json").read_text())
    spec.pop("weights")
    (d / "model.json").write_text(json.dumps(spec))
    for data in (b"", os.urandom(100), (d / "model.safetensors").read_bytes()[:50]):
        (d / "model.safetensors").write_bytes(data)
        with pytest.raises(IntegrityError, match="model.safetensors"):
            load_run(d)


def test_resume_without_best_weights_is_an_error(tmp_path):
    res = _train(tmp_path / "runs", config={"steps": 6, "eval_every": 2, "checkpoint_every": 2})
    # make the run look interrupted after its last checkpoint, then lose the best weights
    (res.run_dir / "result.json").unlink()
    (res.run_dir / "model.safetensors").unlink()
    with pytest.raises(IntegrityError, match="best weights"):
        _train(tmp_path / "runs", config={"steps": 6, "eval_every": 2, "checkpoint_every": 2}, resume=True,
               run_name=res.run_dir.name)


def test_resume_cleans_stale_temporary_files(tmp_path):
    res = _train(tmp_path / "runs", config={"steps": 4, "eval_every": 2, "checkpoint_every": 2})
    (res.run_dir / "result.json").unlink()
    stale = [res.run_dir / ".model.safetensors.tmp12345", res.run_dir / "checkpoint" / ".manifest.json.tmp999"]
    for p in stale:
        p.write_bytes(b"torn")
    _train(tmp_path / "runs", config={"steps": 4, "eval_every": 2, "checkpoint_every": 2}, resume=True,
           run_name=res.run_dir.name)
    assert not any(p.exists() for p in stale)


def test_nan_weights_are_never_the_best(tmp_path):
    from seqzoo.training import Trainer

    class Poison(Trainer):
        def optimizer_step(self, optimizer, model):
            out = super().optimizer_step(optimizer, model)
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
            return out

    res = Poison("lstm", "adding", model_args=MODEL, task_args=TASK, config={**SMALL, "clip_norm": None},
                 out=tmp_path).run()
    assert res.status == "stopped_nan" or not (res.run_dir / "model.safetensors").exists() or \
        all(torch.isfinite(p).all() for p in load_run(res.run_dir).parameters())


# ----- tampered config ------------------------------------------------------------------------------------------
def test_tampered_config_cannot_read_arbitrary_files(finished, tmp_path, capsys):
    d = _copy_run(finished, tmp_path)
    secret = tmp_path / "secret.csv"
    secret.write_text("1\n2\n3\n")
    cfg = json.loads((d / "config.json").read_text())
    cfg["task"], cfg["task_args"] = "forecast", {"series": "file", "path": str(secret)}
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RunError, match="not inside the data folders"):
        evaluate_run(d)
    rc, err = _cli(capsys, "eval", str(d))
    assert rc == 2 and "secret.csv" in err
    rc, err = _cli(capsys, "eval", str(d), "--data-dir", str(tmp_path))  # allowed when the user names the folder
    assert f"reads {secret}" in err


def test_state_dict_mismatch_keeps_the_detail(finished, tmp_path):
    from safetensors.torch import load_file, save_file

    d = _copy_run(finished, tmp_path)
    state = load_file(str(d / "model.safetensors"))
    state.pop(sorted(state)[0])
    save_file(state, str(d / "model.safetensors"))
    spec = json.loads((d / "model.json").read_text())
    spec.pop("weights")
    (d / "model.json").write_text(json.dumps(spec))
    with pytest.raises(RunError, match="missing"):
        load_run(d)


def test_train_with_a_module_says_so_in_one_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        seqzoo.train(torch.nn.LSTM(2, 4), "adding", out=tmp_path)
    assert "\n" not in str(info.value) and "register_model" in str(info.value)


def test_empty_batch_like_torch():
    for norm in (None, "layer", "atn"):
        m = seqzoo.LSTM(4, 8, batch_first=True, norm=norm)
        y, (h, c) = m(torch.randn(0, 5, 4))
        assert y.shape == (0, 5, 8) and h.shape == (1, 0, 8) and c.shape == (1, 0, 8)


# ----- property test: random bad configs and corrupted run folders -------------------------------------------------
# Finite floats stay small: an integral float such as 2.6e16 is a valid `steps` (or `n_valid`, `batch_size`), and
# the run it asks for does not end (seen on 2026-12-07: a 2.6e16-step run hung the suite). Non-finite ones stay.
_FLOATS = st.one_of(st.floats(-100, 100), st.sampled_from([math.nan, math.inf, -math.inf]))
_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), _FLOATS,
                    st.text(max_size=6), st.lists(st.integers(-2, 2), max_size=3))
_MODEL_KEYS = st.sampled_from(["d_model", "n_layers", "dropout", "decoder", "norm", "bogus", "d_output"])
_TASK_KEYS = st.sampled_from(["seq_len", "n_valid", "n_test", "bogus"])
_TRAIN_KEYS = st.sampled_from(["steps", "lr", "batch_size", "optimizer", "clip_norm", "bogus", "eval_every"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model_args=st.dictionaries(_MODEL_KEYS, _VALUES, max_size=2),
       task_args=st.dictionaries(_TASK_KEYS, _VALUES, max_size=2),
       train=st.dictionaries(_TRAIN_KEYS, _VALUES, max_size=2),
       name=st.one_of(st.none(), st.sampled_from(["..", "a/b", "/abs", "ok", "."])))
def test_random_bad_configs_clear_error_or_result(tmp_path_factory, model_args, task_args, train, name):
    root = tmp_path_factory.mktemp("prop")
    out = root / "runs"
    targs = {**TASK, **task_args}
    config = {**SMALL, "steps": 2, **train}
    before = _tree(root)
    try:
        res = seqzoo.train("lstm", "adding", model_args={**MODEL, **model_args}, task_args=targs, config=config,
                           out=out, run_name=name)
    except SeqzooError as err:
        assert "\n" not in str(err).strip() or "Valid" in str(err)
        assert _tree(root) == before, "a refused run touched files"
        return
    assert res.run_dir.parent == out and res.status in ("finished", "stopped_nan", "early_stopped")
    assert all(str(p).startswith(str(out)) for p in root.rglob("*") if p.is_file())


_DAMAGE = st.sampled_from(["flip_weights", "truncate_weights", "drop_weights", "garbage_config", "config_list",
                           "config_missing_key", "garbage_model_json", "drop_model_json", "bad_manifest",
                           "flip_checkpoint", "drop_result"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=st.lists(_DAMAGE, min_size=1, max_size=3, unique=True), seed=st.integers(0, 2 ** 16))
def test_damaged_run_folders_clear_error_or_result(finished, tmp_path_factory, damage, seed):
    import random

    rnd = random.Random(seed)
    root = tmp_path_factory.mktemp("damaged")
    d = root / "runs" / finished.run_dir.name
    shutil.copytree(finished.run_dir, d)
    for kind in damage:
        if kind in ("flip_weights", "truncate_weights") and not (d / "model.safetensors").exists():
            continue
        if kind == "garbage_model_json" and not (d / "model.json").exists():
            continue
        if kind == "flip_weights":
            data = bytearray((d / "model.safetensors").read_bytes())
            data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
            (d / "model.safetensors").write_bytes(bytes(data))
        elif kind == "truncate_weights":
            data = (d / "model.safetensors").read_bytes()
            (d / "model.safetensors").write_bytes(data[: rnd.randrange(len(data))])
        elif kind == "drop_weights":
            (d / "model.safetensors").unlink()
        elif kind == "garbage_config":
            (d / "config.json").write_bytes(os.urandom(50))
        elif kind == "config_list":
            (d / "config.json").write_text("[1, 2]")
        elif kind == "config_missing_key":
            cfg = json.loads(finished.run_dir.joinpath("config.json").read_text())
            cfg.pop("model_args")
            (d / "config.json").write_text(json.dumps(cfg))
        elif kind == "garbage_model_json":
            (d / "model.json").write_text("{not json")
        elif kind == "drop_model_json":
            (d / "model.json").unlink()
        elif kind == "bad_manifest":
            (d / "checkpoint" / "manifest.json").write_text('{"format": "other"}')
        elif kind == "flip_checkpoint":
            files = sorted((d / "checkpoint").glob("model-*.safetensors"))
            if files:
                data = bytearray(files[0].read_bytes())
                data[len(data) // 2] ^= 0xFF
                files[0].write_bytes(bytes(data))
        elif kind == "drop_result":
            (d / "result.json").unlink()
    before = _tree(root)
    for fn in (lambda: load_run(d), lambda: evaluate_run(d)):
        try:
            out = fn()
        except SeqzooError as err:
            assert str(err).strip()
            continue
        if isinstance(out, dict):
            assert "mse" in out and out["mse"] == out["mse"]
        else:
            assert all(torch.isfinite(p).all() for p in out.parameters())
    assert _tree(root) == before, "reading a run must not change it"


@pytest.mark.parametrize("task", ["music", "lm", "mnist-test", "spoken-digits"])
def test_missing_data_fails_print_config_like_train(tmp_path, capsys, task):
    nodata = tmp_path / "nodata"
    rc, err = _cli(capsys, "train", "--model", "lstm", "--task", task, "--data-dir", str(nodata), "--print-config")
    assert rc == 2 and str(nodata) in err and len(err.strip().splitlines()) == 1
    rc2, err2 = _cli(capsys, "train", "--model", "lstm", "--task", task, "--data-dir", str(nodata),
                     "--out", str(tmp_path / "runs"))
    assert rc2 == 2 and err2 == err and not (tmp_path / "runs").exists()


def test_cli_data_dir_does_not_leak_into_the_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SEQZOO_DATA", raising=False)
    _cli(capsys, "train", "--model", "lstm", "--task", "lm", "--data-dir", str(tmp_path), "--print-config")
    assert "SEQZOO_DATA" not in os.environ

"""The training loop: config validation, schedules, run directory, stopping rules and clear errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from seqzoo.training import (
    RunExistsError,
    RunIndex,
    TrainConfig,
    Trainer,
    evaluate_run,
    load_run,
    read_manifest,
    read_metrics,
    train,
)
from seqzoo.training.checkpoint import flatten_optimizer_state, load_checkpoint, unflatten_optimizer_state
from seqzoo.training.config import ConfigError
from seqzoo.training.schedule import LRSchedule, build_optimizer

TASK_ARGS = {"seq_len": 12, "n_valid": 64, "n_test": 64}
MODEL_ARGS = {"d_model": 8}


def small(**kw) -> dict:
    cfg = {"steps": 12, "batch_size": 8, "eval_every": 6, "log_every": 3, "eval_batch_size": 64, "lr": 3e-3,
           "tensorboard": False, "progress": False}
    cfg.update(kw)
    return cfg


# ----- config ------------------------------------------------------------------------------------------
def test_config_unknown_key_names_closest():
    with pytest.raises(ConfigError, match="warmup_steps"):
        TrainConfig.from_dict({"warmup_step": 10})
    with pytest.raises(ConfigError, match="eval_every"):
        TrainConfig.from_dict({"eval_evry": 10})


@pytest.mark.parametrize("key, value, expected", [
    ("steps", "100", "must be an integer"),
    ("steps", 2.5, "must be an integer"),
    ("steps", 0, ">= 1"),
    ("steps", True, "must be an integer"),
    ("lr", "fast", "must be a number"),
    ("lr", 0.0, "> 0"),
    ("optimizer", "adamx", "one of adam, adamw, sgd, nag, rmsprop"),
    ("schedule", "cosin", "did you mean 'cosine'"),
    ("bf16", 1, "true or false"),
    ("clip_norm", "none", "a number or null"),
    ("min_lr_ratio", 2.0, r"\[0, 1\]"),
])
def test_config_bad_values_say_what_is_expected(key, value, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        TrainConfig.from_dict({key: value})
    assert repr(key) in str(info.value)


def test_config_normalises_and_round_trips():
    cfg = TrainConfig.from_dict({"lr": 1, "steps": 10.0, "clip_norm": None})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.steps == 10 and isinstance(cfg.steps, int)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.checkpoint_interval == cfg.eval_every


# ----- schedules and optimizers ------------------------------------------------------------------------
def test_warmup_then_cosine_and_step_schedules():
    cos = LRSchedule(TrainConfig(steps=110, lr=1.0, schedule="cosine", warmup_steps=10, min_lr_ratio=0.1))
    assert cos.lr(5) == pytest.approx(0.5)
    assert cos.lr(10) == pytest.approx(1.0)
    assert cos.lr(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert cos.lr(110) == pytest.approx(0.1)
    step = LRSchedule(TrainConfig(steps=100, lr=1.0, schedule="step", step_size=10, gamma=0.5))
    assert [step.lr(s) for s in (1, 10, 11, 20, 21)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert LRSchedule(TrainConfig(lr=0.3)).lr(77) == 0.3


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "nag", "rmsprop"])
def test_optimizer_state_round_trips_without_pickle(name):
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(model.parameters(), TrainConfig(optimizer=name, momentum=0.9, weight_decay=0.01))
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(4, 3)).pow(2).sum().backward()
        opt.step()
    tensors, meta = flatten_optimizer_state(opt.state_dict())
    meta = json.loads(json.dumps(meta))  # what the checkpoint file holds
    restored = unflatten_optimizer_state(tensors, meta)
    original = opt.state_dict()
    assert restored["state"].keys() == original["state"].keys()
    for idx, st in original["state"].items():
        for k, v in st.items():
            assert torch.equal(restored["state"][idx][k], v) if torch.is_tensor(v) else restored["state"][idx][k] == v
    opt2 = build_optimizer(model.parameters(), TrainConfig(optimizer=name, momentum=0.9, weight_decay=0.01))
    opt2.load_state_dict(restored)


def test_nag_is_nesterov_momentum():
    """``nag`` (the GCNN paper's optimizer) takes Nesterov steps: v <- mu v + g, w <- w - lr (g + mu v); plain ``sgd``
    with the same momentum does not (w <- w - lr v), and ``nag`` without momentum is a config error."""
    lr, mu = 0.1, 0.9
    steps = {}
    for name in ("nag", "sgd"):
        w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        opt = build_optimizer([w], TrainConfig(optimizer=name, lr=lr, momentum=mu))
        for _ in range(2):  # loss = sum(w^2 / 2): the gradient is w
            opt.zero_grad()
            (w.pow(2) / 2).sum().backward()
            opt.step()
        steps[name] = w.detach()
    w0 = torch.tensor([1.0, -2.0])
    v1 = w0
    w1 = w0 - lr * (w0 + mu * v1)
    v2 = mu * v1 + w1
    torch.testing.assert_close(steps["nag"], w1 - lr * (w1 + mu * v2))
    w1_sgd = w0 - lr * v1
    torch.testing.assert_close(steps["sgd"], w1_sgd - lr * (mu * v1 + w1_sgd))
    with pytest.raises(ConfigError, match="momentum.*nag"):
        TrainConfig(optimizer="nag", momentum=0.0)


# ----- a full small run --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    res = train("lstm", "adding", model_args=MODEL_ARGS, task_args=TASK_ARGS,
                config=small(tensorboard=True, schedule="cosine", warmup_steps=2), out=out, tags={"case": "fixture"})
    return out, res


def test_run_directory_layout(run):
    out, res = run
    d = res.run_dir
    assert d.parent == out and d.name == res.run_id and d.name.startswith("adding-lstm-s0-")
    for name in ("config.json", "env.json", "metrics.jsonl", "model.safetensors", "model.json", "result.json"):
        assert (d / name).is_file(), name
    assert list((d / "tb").glob("events.out.tfevents.*"))
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["model"] == "lstm" and cfg["task"] == "adding" and cfg["task_args"]["seq_len"] == 12
    assert cfg["model_args"]["d_input"] == 2 and cfg["model_args"]["decoder"] == "last"  # filled from the task
    assert TrainConfig.from_dict(cfg["train"]).steps == 12
    env = json.loads((d / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["seed"] == 0
    assert read_manifest(d)["step"] == 12
    assert json.loads((d / "result.json").read_text())["status"] == "finished"


def test_result_metrics_and_history(run):
    _, res = run
    assert res.status == "finished" and res.steps == 12 and res.primary_metric == "mse"
    assert [h["step"] for h in res.history] == [6, 12]
    best = min(res.history, key=lambda h: h["mse"])
    assert res.best_step == best["step"] and res.valid["mse"] == best["mse"]
    rows = read_metrics(res.run_dir)
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [3, 6, 9, 12]
    assert all(math.isfinite(r["loss"]) for r in train_rows)
    schedule = LRSchedule(TrainConfig.from_dict(small(schedule="cosine", warmup_steps=2)))
    assert [r["lr"] for r in train_rows] == [schedule.lr(r["step"]) for r in train_rows]
    assert train_rows[0]["lr"] > train_rows[-1]["lr"]
    assert [r["step"] for r in rows if r["split"] == "test"] == [12]


def test_load_run_and_evaluate_run_agree_with_the_result(run):
    _, res = run
    model = load_run(res.run_dir)
    assert not model.training
    assert evaluate_run(res.run_dir, "test") == pytest.approx(res.test, rel=1e-9)
    assert evaluate_run(res.run_dir, "valid") == pytest.approx(res.valid, rel=1e-9)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_run(res.run_dir / "nope")


def test_finished_run_is_indexed_once(run):
    out, res = run
    rows = RunIndex(out / "index.sqlite").query(task="adding", tags={"case": "fixture"})
    assert len(rows) == 1
    row = rows[0]
    assert row["run_id"] == res.run_id and row["status"] == "finished" and row["primary_metric"] == "mse"
    assert row["valid"] == res.valid and row["test"] == res.test and row["config"]["train"]["steps"] == 12


def test_existing_run_needs_resume_or_overwrite(run):
    out, res = run
    kw = dict(model_args=MODEL_ARGS, task_args=TASK_ARGS, out=out, tags={"case": "fixture"})
    cfg = small(tensorboard=True, schedule="cosine", warmup_steps=2)
    with pytest.raises(RunExistsError, match="resume=True"):
        train("lstm", "adding", config=cfg, **kw)
    again = train("lstm", "adding", config={**cfg, "progress": True}, resume=True, **kw)  # presentation may differ
    assert again.to_dict() == res.to_dict()
    with pytest.raises(ValueError, match="train.lr"):
        train("lstm", "adding", config={**cfg, "lr": 1e-2}, resume=True, run_name=res.run_id, **kw)


def test_same_seed_same_weights_different_seed_differs(tmp_path):
    def weights(seed: int, name: str) -> dict:
        train("gru", "adding", model_args=MODEL_ARGS, task_args=TASK_ARGS, config=small(steps=4, seed=seed),
              out=tmp_path, run_name=name, index=False)
        return load_run(tmp_path / name).state_dict()

    a, b, c = weights(1, "a"), weights(1, "b"), weights(2, "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("optimizer", ["sgd", "nag", "rmsprop", "adamw"])
def test_other_optimizers_and_step_schedule_train(tmp_path, optimizer):
    res = train("lstm", "adding", model_args=MODEL_ARGS, task_args=TASK_ARGS, out=tmp_path, index=False,
                config=small(steps=4, eval_every=4, optimizer=optimizer, momentum=0.9, schedule="step", step_size=2,
                             clip_norm=None, test_split=None))
    assert res.status == "finished" and res.test == {} and math.isfinite(res.valid["mse"])


def test_bf16_autocast_run(tmp_path):
    res = train("lstm_native", "adding", model_args=MODEL_ARGS, task_args=TASK_ARGS, out=tmp_path, index=False,
                config=small(steps=3, eval_every=3, bf16=True))
    assert res.status == "finished" and math.isfinite(res.valid["mse"]) and math.isfinite(res.test["mse"])


# ----- stopping rules ----------------------------------------------------------------------------------
class NaNAtStep(Trainer):
    """Makes the loss NaN from training step ``bad`` (1-based) on."""

    bad = 8

    def compute_loss(self, model, batch):
        self.calls = getattr(self, "calls", 0) + 1
        loss = super().compute_loss(model, batch)
        return loss * float("nan") if self.calls >= self.bad else loss


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    trainer = NaNAtStep("lstm", "adding", model_args=MODEL_ARGS, task_args=TASK_ARGS, out=tmp_path,
                        config=small(steps=20, eval_every=5, checkpoint_every=5))
    res = trainer.run()
    assert res.status == "stopped_nan" and res.steps == 7
    assert "step 8" in res.message and "checkpoint (step 5)" in res.message
    ckpt = load_checkpoint(res.run_dir)
    assert ckpt.step == 5 and all(torch.isfinite(v).all() for v in ckpt.model.values())
    assert res.best_step == 5 and math.isfinite(res.test["mse"])
    assert all(torch.isfinite(v).all() for v in load_run(res.run_dir).state_dict().values())
    assert RunIndex(tmp_path / "index.sqlite").query()[0]["status"] == "stopped_nan"
    assert json.loads((res.run_dir / "result.json").read_text())["message"] == res.message


class NoUpdate(Trainer):
    """Never changes the weights, so the validation metric never improves."""

    def optimizer_step(self, optimizer, model):
        return None


def test_early_stopping(tmp_path):
    res = NoUpdate("lstm", "adding", model_args=MODEL_ARGS, task_args=TASK_ARGS, out=tmp_path, index=False,
                   config=small(steps=40, eval_every=2, early_stopping=2)).run()
    assert res.status == "early_stopped" and res.steps == 6 and res.best_step == 2
    assert [h["step"] for h in res.history] == [2, 4, 6]
    assert "mse" in res.message


def test_time_budget_stops_cleanly(tmp_path):
    res = train("lstm", "adding", model_args=MODEL_ARGS, task_args=TASK_ARGS, out=tmp_path, index=False,
                config=small(steps=10_000, time_budget=1e-6))
    assert res.status == "time_budget" and res.steps < 10_000 and "time budget" in res.message
    assert read_manifest(res.run_dir)["step"] == res.steps and res.valid


# ----- clear errors ------------------------------------------------------------------------------------
def test_output_size_that_does_not_fit_the_task(tmp_path):
    with pytest.raises(ValueError, match="needs d_output=1"):
        train("lstm", "adding", model_args={**MODEL_ARGS, "d_output": 3}, task_args=TASK_ARGS, out=tmp_path,
              config=small(), index=False)
    with pytest.raises(ValueError, match="decoder='last'"):
        train("lstm", "adding", model_args={**MODEL_ARGS, "decoder": "step"}, task_args=TASK_ARGS, out=tmp_path,
              config=small(), index=False)
    assert not list(Path(tmp_path).glob("*/result.json"))


def test_unknown_names_and_arguments(tmp_path):
    with pytest.raises(KeyError, match="lstm"):
        train("lstmm", "adding", out=tmp_path, config=small())
    with pytest.raises(TypeError, match="d_model"):
        train("lstm", "adding", model_args={"d_modle": 8}, out=tmp_path, config=small())
    with pytest.raises(ConfigError, match="steps"):
        train("lstm", "adding", out=tmp_path, config={"step": 3})
    with pytest.raises(TypeError, match="TrainConfig"):
        train("lstm", "adding", out=tmp_path, config=[("steps", 3)])


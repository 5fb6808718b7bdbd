"""Trainer hook points (training/hooks.py): extra losses, gradient transforms, after-step parameter transforms,
per-step metrics from hooks and modules, and parameter groups that modules ask for (S5's ssm_lr)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import seqzoo
from seqzoo.errors import ConfigError
from seqzoo.training import Trainer, load_checkpoint, load_run, read_metrics
from seqzoo.training.hooks import TrainHook, module_metrics, optimizer_param_groups

CONFIG = {"steps": 6, "eval_every": 3, "log_every": 2, "batch_size": 4, "eval_batch_size": 16, "progress": False,
          "tensorboard": False, "optimizer": "sgd", "lr": 0.1, "clip_norm": None}
TASK = {"seq_len": 10, "n_valid": 8, "n_test": 8}


def _run(tmp_path, hooks=(), name="r", **kw):
    return Trainer("lstm", "adding", model_args={"d_model": 8}, task_args=TASK, config={**CONFIG, **kw},
                   out=tmp_path, run_name=name, hooks=hooks).run()


def _train_losses(run_dir):
    return [r["loss"] for r in read_metrics(run_dir) if r["split"] == "train"]


class Penalty(TrainHook):
    def __init__(self, weight: float) -> None:
        self.weight = weight

    def extra_loss(self, trainer, model, batch):
        return self.weight * sum((p ** 2).sum() for p in model.parameters())


class ZeroGrads(TrainHook):
    def transform_gradients(self, trainer, model):
        for p in model.parameters():
            p.grad.zero_()


class Clamp(TrainHook):
    def after_step(self, trainer, model):
        for p in model.parameters():
            p.clamp_(-0.05, 0.05)


class Count(TrainHook):
    def __init__(self) -> None:
        self.calls = 0

    def metrics(self, trainer, model):
        self.calls += 1
        return {"hook_calls": float(self.calls)}


def test_extra_loss_enters_the_logged_loss_and_the_gradient(tmp_path):
    plain = _run(tmp_path, name="plain")
    pen = _run(tmp_path, hooks=[Penalty(0.5)], name="pen")
    assert all(b > a for a, b in zip(_train_losses(plain.run_dir), _train_losses(pen.run_dir)))
    w_plain = load_run(plain.run_dir).state_dict()
    w_pen = load_run(pen.run_dir).state_dict()
    assert any(not torch.equal(w_plain[k], w_pen[k]) for k in w_plain)


def test_transform_gradients_runs_before_the_optimizer(tmp_path):
    tr = Trainer("lstm", "adding", model_args={"d_model": 8}, task_args=TASK, config=CONFIG, out=tmp_path,
                 hooks=[ZeroGrads()])
    torch.manual_seed(0)
    tr.run()
    first = tr.model.state_dict()
    from seqzoo.training.run_config import resolve_run

    init = resolve_run("lstm", "adding", model_args={"d_model": 8}, task_args=TASK, config=CONFIG).model
    for k, v in init.state_dict().items():
        assert torch.equal(v, first[k]), f"{k} moved although every gradient was zeroed"


def test_after_step_transforms_parameters(tmp_path):
    res = _run(tmp_path, hooks=[Clamp()], lr=5.0)
    assert all(p.abs().max() <= 0.05 for p in load_run(res.run_dir).parameters())


def test_hook_and_module_metrics_reach_the_train_rows(tmp_path):
    class Solver(nn.Module):
        def module_metrics(self):
            return {"iterations": 7.0}

    tr = Trainer("lstm", "adding", model_args={"d_model": 8}, task_args=TASK, config=CONFIG, out=tmp_path,
                 hooks=[Count()])

    orig_build = tr._build

    def build():
        orig_build()
        tr.model.solver = Solver()

    tr._build = build
    res = tr.run()
    rows = [r for r in read_metrics(res.run_dir) if r["split"] == "train"]
    assert [r["hook_calls"] for r in rows] == [1.5, 3.5, 5.5]  # mean over each row's two steps
    assert all(r["solver.iterations"] == 7.0 for r in rows)
    assert module_metrics(tr.model) == {"solver.iterations": 7.0}


def test_hooks_must_be_train_hooks(tmp_path):
    with pytest.raises(ConfigError, match="TrainHook"):
        Trainer("lstm", "adding", out=tmp_path, hooks=[lambda *a: None])


def test_s5_param_settings_give_the_official_groups():
    from seqzoo.layers.s5 import s5_param_groups
    from seqzoo.training import TrainConfig

    model = seqzoo.create_model("s5", d_input=2, d_output=1, d_model=8, n_layers=2)
    cfg = TrainConfig(lr=1e-3, ssm_lr=4e-4, weight_decay=0.05)
    ours = optimizer_param_groups(model, cfg)
    ref = s5_param_groups(model, lr=1e-3, ssm_lr=4e-4, weight_decay=0.05)
    assert [g["name"] for g in ours] == [g["name"] for g in ref]
    for a, b in zip(ours, ref):
        assert [id(p) for p in a["params"]] == [id(p) for p in b["params"]]
        assert a["lr"] == pytest.approx(b["lr"]) and a["weight_decay"] == b["weight_decay"]
        assert a["lr_scale"] == pytest.approx(b["lr_scale"])
    assert optimizer_param_groups(model, TrainConfig()) == [p for p in model.parameters()]


def test_resume_with_hooks_is_bit_identical(tmp_path):
    class StopAtThree(Trainer):  # stops the way a time budget does, after step 3
        def train_step(self):
            if self.done == 3:
                self.status = "time_budget"
                return False
            return super().train_step()

    hooks = [Penalty(0.01), Clamp()]
    whole = _run(tmp_path, hooks=hooks, name="whole", checkpoint_every=2)
    part = StopAtThree("lstm", "adding", model_args={"d_model": 8}, task_args=TASK,
                       config={**CONFIG, "checkpoint_every": 2}, out=tmp_path, run_name="part", hooks=hooks).run()
    assert part.status == "time_budget" and part.steps == 3
    done = Trainer("lstm", "adding", model_args={"d_model": 8}, task_args=TASK,
                   config={**CONFIG, "checkpoint_every": 2}, out=tmp_path, run_name="part", resume=True,
                   hooks=hooks).run()
    assert done.steps == whole.steps == 6
    a, b = load_checkpoint(whole.run_dir), load_checkpoint(done.run_dir)  # the final weights
    assert a.step == b.step == 6
    assert all(torch.equal(a.model[k], b.model[k]) for k in a.model)

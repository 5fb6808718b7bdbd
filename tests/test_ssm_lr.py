"""``TrainConfig.ssm_lr``: S5's parameter groups through the trainer (spec §5.5) — the SSM parameters train at
``ssm_lr`` without weight decay, the ratio survives the schedule, and ``ssm_lr=None`` leaves run names as they
were before the field existed."""

from __future__ import annotations

import json

import pytest
import torch

from seqzoo.models import create_model
from seqzoo.training.config import PRESENTATION_FIELDS, UNHASHED_WHEN_NONE, TrainConfig
from seqzoo.training.runs import run_hash
from seqzoo.training.schedule import LRSchedule, build_optimizer, optimizer_params

MODEL_ARGS = {"d_input": 2, "d_output": 1, "d_model": 8, "n_layers": 1, "layer_kwargs": {"state_size": 4, "blocks": 1}}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("s5", **MODEL_ARGS)


def test_without_ssm_lr_one_group() -> None:
    model = _model()
    opt = build_optimizer(optimizer_params(model, TrainConfig(lr=1e-3)), TrainConfig(lr=1e-3))
    assert len(opt.param_groups) == 1
    assert sum(p.numel() for p in opt.param_groups[0]["params"]) == sum(p.numel() for p in model.parameters())


def test_groups_follow_the_schedule() -> None:
    cfg = TrainConfig(optimizer="adamw", lr=4e-3, ssm_lr=1e-3, weight_decay=0.05, schedule="cosine", steps=100,
                      warmup_steps=10)
    model = _model()
    opt = build_optimizer(optimizer_params(model, cfg), cfg)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"ssm", "regular"}
    assert groups["ssm"]["weight_decay"] == 0.0 and groups["regular"]["weight_decay"] == 0.05
    ssm_ids = {id(p) for p in groups["ssm"]["params"]}
    names = {n.rsplit(".", 1)[-1] for n, p in model.named_parameters() if id(p) in ssm_ids}
    assert names == {"Lambda_re", "Lambda_im", "B", "log_step"}
    sched = LRSchedule(cfg)
    for step in (0, 5, 10, 50, 99):
        sched.apply(opt, step)
        assert groups["regular"]["lr"] == pytest.approx(sched.lr(step))
        assert groups["ssm"]["lr"] == pytest.approx(sched.lr(step) / 4)


def test_trains_and_run_name_unchanged_when_off(tmp_path) -> None:
    from seqzoo.training.trainer import train

    quiet = {"steps": 3, "batch_size": 4, "eval_every": 3, "progress": False, "tensorboard": False,
             "test_split": None, "eval_batch_size": 64}
    task_args = {"seq_len": 10, "n_valid": 16, "n_test": 16}
    off = train("s5", "adding", model_args=MODEL_ARGS, task_args=task_args, config=quiet, out=tmp_path,
                index=False)
    on = train("s5", "adding", model_args=MODEL_ARGS, task_args=task_args, config={**quiet, "ssm_lr": 1e-4},
               out=tmp_path, index=False)
    assert off.run_dir != on.run_dir  # a set ssm_lr is part of the run's identity
    assert (on.run_dir / "config.json").read_text().count('"ssm_lr": 0.0001') == 1
    # None is left out of the hash: the run name is the one the config without the field gets
    resolved = json.loads((off.run_dir / "config.json").read_text())
    assert resolved["train"].pop("ssm_lr") is None
    hashed = {k: resolved[k] for k in ("model", "model_args", "task", "task_args", "train")}
    hashed["train"] = {k: v for k, v in hashed["train"].items()  # other late fields left unset: out of the hash too
                       if k not in PRESENTATION_FIELDS and not (k in UNHASHED_WHEN_NONE and v is None)}
    assert off.run_dir.name.endswith(run_hash(hashed))

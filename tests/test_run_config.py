"""One rule from (model, task, overrides) to a run's config: the CLI, the trainer and the cards agree (issue #8)."""

from __future__ import annotations

import json

import pytest

import seqzoo  # noqa: F401  (registers every built-in)
from seqzoo.cli.config import parse_assignments, resolve_config
from seqzoo.cli.main import main
from seqzoo.errors import ConfigError, MissingDataError
from seqzoo.models import MODELS, list_models
from seqzoo.tasks import create_task
from seqzoo.training import Trainer
from seqzoo.training.distributed import setup_distributed, teardown_distributed
from seqzoo.training.run_config import resolve_run

# Candidate tasks, tried in order: the first a model can run on is its "compatible" task.
CANDIDATES = [
    ("adding", {"seq_len": 12, "n_valid": 8, "n_test": 8}),
    ("copy", {"n_valid": 8, "n_test": 8}),
    ("digits", {"layout": "rows", "n_valid": 20, "n_test": 20}),
    ("digits", {"layout": "image", "n_valid": 20, "n_test": 20}),
    ("xor", {}),
    ("arma_sim", {}),
    ("tomita", {}),
    ("listops", {}),
    ("two_spirals", {}),
    ("translation", {"n_train": 300, "spm_vocab": 300}),  # seq2seq models (Multi30k; skipped when absent)
    ("babi", {"tasks": 1}),  # question answering over stories (MemN2N); reads ../shared/data/babi
]


def _compatible(model: str) -> tuple[str, dict] | None:
    for task, args in CANDIDATES:
        try:
            resolve_run(model, task, task_args=args, config={"batch_size": 2})
        except ConfigError:
            continue
        except MissingDataError as e:
            pytest.skip(f"{task}: data absent: {e}")
        return task, args
    return None


def _trainer_config(model: str, task: str, task_args: dict, train: dict, tmp_path) -> dict:
    """The config.json the trainer would write (its own resolution, run up to just before the folder)."""
    tr = Trainer(model, task, task_args=task_args, config=train, out=tmp_path / "runs")
    tr.ctx = setup_distributed("cpu")
    try:
        tr._build()
    finally:
        teardown_distributed(tr.ctx)
    assert not (tmp_path / "runs").exists(), "resolution must not create the output folder"
    return tr.resolved


@pytest.mark.parametrize("model", list_models())
def test_print_config_is_what_the_trainer_builds(model, tmp_path, capsys):
    found = _compatible(model)
    if found is None and getattr(MODELS.get(model).builder, "model_kind", "sequence") == "qa":
        try:
            create_task("babi", tasks=1)
        except MissingDataError as e:
            pytest.skip(f"the QA model's task has no data here: {e}")
    assert found is not None, f"no candidate task runs model {model!r}; add one to CANDIDATES"
    task, task_args = found
    argv = ["train", "--model", model, "--task", task, "batch_size=4",
            *[f"task.{k}={json.dumps(v)}" for k, v in task_args.items()], "--seeds", "3", "--print-config"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    built = _trainer_config(model, task, task_args, {"batch_size": 4, "seed": 3}, tmp_path)
    assert printed["seeds"] == [3]
    for key in ("model", "model_args", "task", "task_args"):
        assert printed[key] == built[key], key
    assert {**printed["train"], "seed": 3} == built["train"]


def test_cli_accepts_every_pair_the_cards_use():
    from seqzoo.experiments import get_experiment, list_experiments
    from seqzoo.experiments.runner import plan

    pairs = {}
    for name in list_experiments():
        for job in plan(get_experiment(name), "tiny"):
            e = job.entry
            key = json.dumps([e.model, e.task, e.model_args, e.task_args], sort_keys=True, default=str)
            pairs[key] = (e.model, e.task, e.model_args, e.task_args, job.train)
    assert len(pairs) > 20
    for model, task, model_args, task_args, train in pairs.values():
        items = [f"model.{k}={json.dumps(v)}" for k, v in model_args.items()]
        items += [f"task.{k}={json.dumps(v)}" for k, v in task_args.items()]
        items += [f"train.{k}={json.dumps(v)}" for k, v in train.items() if k != "seed"]
        cfg = resolve_config(model, task, parse_assignments(items), seeds=[int(train.get("seed", 0))])
        direct = resolve_run(model, task, model_args=model_args, task_args=task_args, config=train).config
        assert cfg.for_seed(int(train.get("seed", 0))).to_dict() == direct.to_dict(), (model, task)


def test_incompatible_pair_says_why_before_any_folder(tmp_path, capsys):
    with pytest.raises(ConfigError, match="cannot run on the inputs of task 'adding'"):
        seqzoo.train("mlp", "adding", out=tmp_path / "runs", config={"steps": 1})
    assert not (tmp_path / "runs").exists()
    rc = main(["train", "--model", "mlp", "--task", "adding", "--print-config"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot run on the inputs" in err and len(err.strip().splitlines()) == 1


def test_trainer_takes_a_resolved_config(tmp_path):
    rc = resolve_run("lstm", "adding", model_args={"d_model": 8}, task_args={"seq_len": 10, "n_valid": 8,
                                                                           "n_test": 8},
                     config={"steps": 2, "eval_every": 2, "progress": False, "tensorboard": False}).config
    res = seqzoo.train(rc, out=tmp_path)
    assert res.run_dir.name == rc.run_name()
    stored = json.loads((res.run_dir / "config.json").read_text())
    stored.pop("seqzoo_version")
    assert stored == rc.to_dict()
    again = seqzoo.train("lstm", "adding", model_args={"d_model": 8}, task_args={"seq_len": 10, "n_valid": 8,
                                                                               "n_test": 8},
                         config={"steps": 2, "eval_every": 2, "progress": False, "tensorboard": False},
                         out=tmp_path, resume=True)
    assert again.run_dir == res.run_dir  # the same rule names the same folder


def test_wrong_types_are_named():
    for kwargs, needle in (({"model_args": {"d_model": "64"}}, "'d_model' must be an integer"),
                           ({"model_args": {"d_model": [1, 2]}}, "'d_model' must be an integer"),
                           ({"model_args": {"d_model": True}}, "'d_model' must be an integer"),
                           ({"model_args": {"d_model": 64.5}}, "'d_model' must be an integer"),
                           ({"task_args": {"seq_len": "abc"}}, "'seq_len' must be an integer"),
                           ({"task_args": {"seq_len": 25.5}}, "'seq_len' must be an integer")):
        with pytest.raises(ConfigError, match=needle):
            resolve_run("lstm", "adding", **kwargs)

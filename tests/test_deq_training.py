"""DEQ models in the trainer: solver statistics in metrics.jsonl (module_metrics), the Jacobian penalty through
the extra_loss hook, carried segment memory, and the DEQ-Transformer's saved memory against its tied twin."""

from __future__ import annotations

import json

import torch

from seqzoo.experiments.bench import saved_bytes
from seqzoo.models import create_model
from seqzoo.training import train
from seqzoo.training.evaluation import carries_state
from seqzoo.training.jacobian import JacobianRegularization

QUIET = {"progress": False, "tensorboard": False}


def test_solver_stats_and_jacobian_penalty_reach_the_train_rows(tmp_path) -> None:
    res = train("mlp_deq", "digits", task_args={"layout": "rows"},
                model_args={"d_model": 16, "deq_kwargs": {"jac_reg": 0.5, "max_iter": 20}},
                config={**QUIET, "steps": 4, "batch_size": 8, "eval_every": 4, "log_every": 2, "test_split": None},
                out=tmp_path, hooks=[JacobianRegularization()])
    assert res.status == "finished"
    rows = [json.loads(line) for line in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert train_rows
    for r in train_rows:
        assert 1 <= r["deq.fwd_iterations"] <= 20 and 0 <= r["deq.fwd_rel_residual"] < 1
        assert r["deq.bwd_iterations"] >= 1 and r["jacobian_loss"] > 0


def test_transformer_memory_is_carried_only_with_mem_len() -> None:
    kw = {"vocab_size": 11, "d_input": None, "d_output": 11, "d_model": 16,
          "layer_kwargs": {"n_heads": 2, "d_ff": 32}}
    for name, extra in (("deq_transformer", {}), ("tied_transformer", {"depth": 2})):
        unbounded = create_model(name, **{**kw, "layer_kwargs": {**kw["layer_kwargs"], **extra}})
        bounded = create_model(name, **{**kw, "layer_kwargs": {**kw["layer_kwargs"], **extra, "mem_len": 5}})
        assert not carries_state(unbounded) and carries_state(bounded)
        x = torch.randint(0, 11, (2, 4))
        with torch.no_grad():
            _, state = bounded(x)
            _, state = bounded(x, state)
        mem_z, mem_u, valid = state[0]
        assert valid.shape == (2, 5) and mem_u.shape == (2, 5, 48)
        assert mem_z.shape == ((2, 5, 16) if name == "deq_transformer" else (2, 2, 5, 16))


def test_deq_transformer_saves_far_less_than_its_twin() -> None:
    torch.manual_seed(0)
    kw = {"d_input": 16, "d_model": 16, "encoder": "none", "d_output": 1}
    deq = create_model("deq_transformer", **kw, layer_kwargs={"n_heads": 2, "d_ff": 32}).layers[0]
    tied = create_model("tied_transformer", **kw, layer_kwargs={"n_heads": 2, "d_ff": 32, "depth": 8}).layers[0]
    x = torch.randn(4, 24, 16, requires_grad=True)
    sizes = {}
    for name, layer in (("deq", deq), ("tied", tied)):
        def run(layer=layer) -> None:
            y, _ = layer(x)
            y.sum().backward()
        sizes[name] = saved_bytes(run, list(layer.parameters()) + [x])
    assert sizes["deq"] * 5 < sizes["tied"], sizes

"""Truncated BPTT with a carried state: the trainer, the checkpoint and the carried evaluation.

* The state fed into step s is the state after one pass over segments 0..s-1 of the parallel streams (weights held
  fixed), and it is reset where the batch's ``segment_index`` is 0.
* A run interrupted after a checkpoint and resumed ends bit-identical to an uninterrupted one (the carried state is
  in the checkpoint; without it the resumed run differs).
* The carried evaluation scores every target once and equals one pass over each stream.
* Two gloo ranks carrying their shards equal one process on the global batch.
"""

from __future__ import annotations

import json
import os
import shutil
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from seqzoo.models import create_model
from seqzoo.tasks import create_task
from seqzoo.training import Trainer, load_checkpoint, read_metrics
from seqzoo.training.checkpoint import flatten_tensors, save_checkpoint, unflatten_tensors
from seqzoo.training.evaluation import carries_state, evaluate_split, evaluate_stream

BPTT, BATCH = 5, 4


def _corpus(folder) -> str:
    """A small word corpus (train/valid/test.txt); valid/test repeat train's words so few map to <unk>."""
    g = torch.Generator().manual_seed(0)
    for split, n_lines in (("train", 40), ("valid", 8), ("test", 8)):
        lines = []
        for _ in range(n_lines):
            n = int(torch.randint(3, 9, (1,), generator=g))
            lines.append(" ".join(f"w{int(j)}" for j in torch.randint(0, 23, (n,), generator=g)))
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return str(folder)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    return _corpus(tmp_path_factory.mktemp("corpus"))


def _task_args(data_dir: str, **kw) -> dict:
    return {"dataset": "text", "data_dir": data_dir, "bptt": BPTT, **kw}


def _config(**kw) -> dict:
    return {"steps": 12, "batch_size": BATCH, "eval_every": 6, "eval_batch_size": 3, "log_every": 2, "lr": 3e-2,
            "clip_norm": 1.0, "progress": False, "tensorboard": False, "device": "cpu", "seed": 1, **kw}


class _Frozen(Trainer):
    """Records the state fed into every step; the optimizer never steps, so the weights stay the initial ones."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.inputs: list = []

    def model_outputs(self, model, batch):
        self.inputs.append((int(batch["segment_index"]), None if self.carry.state is None else
                            tuple(tuple(t.clone() for t in layer) for layer in self.carry.state)))
        return super().model_outputs(model, batch)

    def optimizer_step(self, optimizer, model):
        return None


def test_carried_state_is_one_pass_over_the_segments_and_resets_at_segment_zero(data_dir, tmp_path):
    task = create_task("lm", **_task_args(data_dir))
    per_epoch = task.segments_per_epoch(BATCH)
    steps = per_epoch + 3  # crosses an epoch boundary
    tr = _Frozen("lstm", "lm", model_args={"d_model": 8}, task_args=_task_args(data_dir),
                 config=_config(steps=steps, eval_every=steps), out=tmp_path, index=False)
    tr.run()
    model = tr.model.eval()
    streams = task.streams(BATCH)
    assert [k for k, _ in tr.inputs] == [s % per_epoch for s in range(steps)]
    for step, (k, state) in enumerate(tr.inputs):
        if k == 0:
            assert state is None, f"step {step} starts a new epoch: the state must be reset"
            continue
        with torch.no_grad():
            _, ref = model(streams[:, :k * BPTT])
        for got_layer, ref_layer in zip(state, ref):
            for got, want in zip(got_layer, ref_layer):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_no_carry_without_the_flag_or_for_models_without_a_fixed_state(data_dir, tmp_path):
    tr = _Frozen("lstm", "lm", model_args={"d_model": 8}, task_args=_task_args(data_dir, train_context=3),
                 config=_config(steps=4), out=tmp_path, index=False)
    tr.run()
    assert all(s is None for _, s in tr.inputs)  # train_context > 0: batches say carry_state = False
    assert not carries_state(create_model("transformer", vocab_size=10, d_input=None, d_output=10, d_model=8))
    assert not carries_state(create_model("rns_rnn", vocab_size=10, d_input=None, d_output=10))  # full DP grows
    assert carries_state(create_model("rns_rnn_limited", vocab_size=10, d_input=None, d_output=10))
    assert carries_state(create_model("lstm", vocab_size=10, d_input=None, d_output=10))


class _Killed(RuntimeError):
    pass


class _Crash(Trainer):
    def __init__(self, *a, crash_at: int, **kw) -> None:
        super().__init__(*a, **kw)
        self.crash_at, self.calls = crash_at, 0

    def optimizer_step(self, optimizer, model):
        self.calls += 1
        if self.calls == self.crash_at:
            raise _Killed("simulated kill")
        return super().optimizer_step(optimizer, model)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_a_carried_state_is_bit_identical(data_dir, tmp_path):
    args = dict(model_args={"d_model": 8}, task_args=_task_args(data_dir), out=tmp_path)
    cfg = _config(steps=14, eval_every=7, checkpoint_every=4)
    ref = Trainer("lstm", "lm", config=cfg, run_name="ref", **args).run()
    assert ref.status == "finished"
    with pytest.raises(_Killed):
        _Crash("lstm", "lm", config=cfg, run_name="victim", crash_at=11, **args).run()
    ck = load_checkpoint(tmp_path / "victim")
    assert ck.step == 8 and ck.carried_state is not None
    assert (tmp_path / "victim" / "checkpoint" / "carry-000000008.safetensors").exists()
    h, c = ck.carried_state[0]
    assert h.shape == c.shape == (BATCH, 8)
    shutil.copytree(tmp_path / "victim", tmp_path / "no_carry")  # a control that forgets the carried state
    ck.carried_state = None
    save_checkpoint(tmp_path / "no_carry", ck)

    resumed = Trainer("lstm", "lm", config=cfg, run_name="victim", resume=True, **args).run()
    assert (resumed.status, resumed.steps) == ("finished", 14)
    best_v, best_r = (load_file(tmp_path / name / "model.safetensors") for name in ("victim", "ref"))
    assert _same(best_v, best_r)
    cv, cr = load_checkpoint(tmp_path / "victim"), load_checkpoint(tmp_path / "ref")
    assert _same(cv.model, cr.model)
    for got, want in zip(cv.carried_state[0], cr.carried_state[0]):
        assert torch.equal(got, want)
    rows = [{k: v for k, v in r.items() if k != "time"} for r in read_metrics(tmp_path / "victim")]
    assert rows == [{k: v for k, v in r.items() if k != "time"} for r in read_metrics(tmp_path / "ref")]
    assert resumed.valid == ref.valid and resumed.test == ref.test

    forgot = Trainer("lstm", "lm", config=cfg, run_name="no_carry", resume=True, **args).run()
    assert not _same(load_checkpoint(tmp_path / "no_carry").model, cr.model), \
        "the control should differ: the test must be able to see a lost carried state"
    assert forgot.steps == 14


def test_nested_state_round_trips_without_pickle():
    tree = ((torch.randn(2, 3), torch.arange(4)), {"mem": [torch.ones(1, 2, dtype=torch.float64), None]}, ())
    tensors, structure = flatten_tensors(tree)
    json.dumps(structure)  # plain JSON
    back = unflatten_tensors(tensors, structure)
    assert isinstance(back[0], tuple) and isinstance(back[1]["mem"], list) and back[1]["mem"][1] is None
    assert torch.equal(back[0][0], tree[0][0]) and torch.equal(back[1]["mem"][0], tree[1]["mem"][0])
    assert back[2] == ()
    with pytest.raises(TypeError, match="without pickle"):
        flatten_tensors((torch.zeros(1), "text"))


def test_carried_evaluation_scores_every_target_once_and_equals_one_pass(tmp_path):
    # distinct words in one line: each position's target is identifiable
    words = " ".join(f"t{i}" for i in range(97))
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_text(words + "\n")
    task = create_task("lm", dataset="text", data_dir=str(tmp_path), bptt=BPTT, eval_context=4)
    ids = task.ids["valid"]
    batches = task.stream_batches("valid", 5)
    scored = torch.cat([b["targets"][b["loss_mask"]] for b in batches])
    assert sorted(scored.tolist()) == sorted(ids[1:].tolist())  # every target exactly once
    assert [int(b["segment_index"]) for b in batches] == list(range(len(batches)))
    # each row is one contiguous piece of the stream across its segments (only the last row is padded at its end)
    rows = torch.cat([b["inputs"] for b in batches], 1)
    nxt = torch.cat([b["targets"] for b in batches], 1)
    assert torch.equal(rows[:-1, 1:], nxt[:-1, :-1])
    assert bool(batches[0]["loss_mask"][0].all()) and not bool(batches[0]["loss_mask"][1:, :4].any())  # warm-up

    torch.manual_seed(0)
    model = create_model("lstm", vocab_size=len(task.vocab), d_input=None, d_output=len(task.vocab), d_model=6)
    got = evaluate_stream(model, task, batches, device=torch.device("cpu"))
    mask = torch.cat([b["loss_mask"] for b in batches], 1)
    with torch.no_grad():
        logits, _ = model(rows)
    ce = torch.nn.functional.cross_entropy(logits[mask], nxt[mask])
    assert got["cross_entropy"] == pytest.approx(float(ce), rel=1e-5)
    metrics, mode = evaluate_split(model, task, "valid", batch_size=5, device=torch.device("cpu"))
    assert mode == "carried" and metrics["cross_entropy"] == pytest.approx(got["cross_entropy"], rel=1e-12)
    conv = create_model("transformer", vocab_size=len(task.vocab), d_input=None, d_output=len(task.vocab), d_model=8)
    assert evaluate_split(conv, task, "valid", batch_size=5, device=torch.device("cpu"))[1] == "independent"


# ----- data parallel --------------------------------------------------------------------------------------------------
WORLD = 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, out: str, data_dir: str) -> None:
    os.environ.update({"WORLD_SIZE": str(WORLD), "RANK": str(rank), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "GLOO_SOCKET_IFNAME": "lo"})
    torch.set_num_threads(1)
    tr = Trainer("lstm", "lm", model_args={"d_model": 8}, task_args=_task_args(data_dir), config=_config(steps=8),
                 out=out, run_name="ddp")
    res = tr.run()
    save_file({k: v.contiguous() for k, v in tr.model.state_dict().items()}, f"{out}/rank{rank}.safetensors")
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(res.to_dict(), f)


def test_ddp_carry_equals_one_process_on_the_global_batch(data_dir, tmp_path):
    mp.spawn(_rank_main, args=(_free_port(), str(tmp_path), data_dir), nprocs=WORLD, join=True)
    single = Trainer("lstm", "lm", model_args={"d_model": 8}, task_args=_task_args(data_dir), config=_config(steps=8),
                     out=tmp_path, run_name="single", index=False)
    res = single.run()
    w0, w1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert _same(w0, w1)
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(w0[k], v, rtol=0, atol=1e-5)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    assert r0["valid"]["cross_entropy"] == pytest.approx(res.valid["cross_entropy"], abs=1e-5)
    # the checkpoint holds the gathered global-batch state (rank order = row order), equal to the single process's
    cd, cs = load_checkpoint(tmp_path / "ddp"), load_checkpoint(tmp_path / "single")
    for got, want in zip(cd.carried_state[0], cs.carried_state[0]):
        assert got.shape == want.shape == (BATCH, 8)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)

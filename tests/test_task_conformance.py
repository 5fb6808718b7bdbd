"""Task conformance suite: every registered task goes through the same checks.

The cases come from ``seqzoo.tasks.list_tasks()`` at collection time, so a newly registered task is checked without
touching this file. Each task is built with its entry in ``SMALL`` (quick parameters where the defaults are big; a
task without an entry runs with its defaults) and, when it takes ``data_dir``, the shared data folder
(``$SEQZOO_DATA`` or ``../shared/data`` next to the repository). A data-backed task whose files are absent
(``MissingDataError``) or whose optional package is not installed (``ImportError``) is skipped with that message as
the reason.

Checks: fixed evaluation sets are identical across calls and across processes for the same (version, params,
split, seed); training batches are a pure function of (step, batch size, seed); batches have the kinds, dtypes,
shapes and masks the spec declares; targets lie in the declared classes; the description is plain JSON; the
baseline is finite and holds the primary metric; the loss of random outputs of the declared shape is finite and
backpropagates; metrics cover the spec's list; bad parameter values raise a ``ConfigError`` naming the parameter;
data-backed tasks without data say which files they looked for, and where.

Run as a script (``python tests/test_task_conformance.py NAME...``) it prints the evaluation-set digests as JSON:
the cross-process check runs that in a subprocess and compares.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from seqzoo.errors import ConfigError
from seqzoo.tasks import Task, create_task, list_tasks, task_info
from seqzoo.tasks.data_files import MissingDataError

REPO_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CFL = ("cfl-dyck", "cfl-hardest", "cfl-marked-reversal", "cfl-padded-reversal", "cfl-unmarked-reversal")
SMALL: dict[str, dict[str, Any]] = {
    "adding": {"seq_len": 12, "n_valid": 16, "n_test": 16},
    "copy": {"seq_len": 6, "n_copy": 3, "n_valid": 16, "n_test": 16},
    "denoise": {"seq_len": 8, "n_valid": 16, "n_test": 16},
    "memorization": {"seq_len": 12, "distance": 3, "n_valid": 16, "n_test": 16},
    "parenthesis": {"seq_len": 12, "n_valid": 16, "n_test": 16},
    "arma_sim": {"n": 200, "window": 10},
    "forecast": {"window": 12},
    **{name: {"min_length": 8, "max_length": 14, "test_min_length": 8, "test_max_length": 16, "n_valid": 16,
              "n_test_per_length": 2} for name in CFL},
    "tomita": {"exhaustive_len": 4, "max_train_len": 8, "n_train": 40, "min_eval_len": 9, "max_eval_len": 10,
               "min_test_len": 11, "max_test_len": 12, "n_valid": 16, "n_test": 16},
    "balanced_parens": {"max_train_depth": 2, "min_eval_depth": 3, "max_eval_depth": 4, "max_len": 30, "n_train": 40,
                        "n_valid": 16, "n_test": 16},
    "palindrome": {"max_train_len": 6, "min_eval_len": 7, "max_eval_len": 9, "n_train": 40, "n_valid": 16,
                   "n_test": 16},
    "listops": {"max_depth": 3, "max_args": 3, "min_length": 4, "max_length": 20, "n_train": 40, "n_valid": 16,
                "n_test": 16},
    "xor": {"seq_len": 16, "n_train": 40, "n_valid": 16, "n_test": 16},
    "dissimilar": {"seq_len": 16, "n_train": 40, "n_valid": 16, "n_test": 16},
    "digits": {"layout": "rows", "n_valid": 50, "n_test": 50},
    "mnist-test": {"layout": "rows", "pool": 4},
    "lm": {"dataset": "ptb", "bptt": 8},
    "spoken-digits": {"downsample": 8, "max_len": 800},
    "music": {"dataset": "jsb", "max_len": 16},
    "ucr": {"dataset": "ItalyPowerDemand"},
    "translation": {"n_train": 300, "spm_vocab": 300},
    "title-recall": {"seq_len": 48, "title_len": 3, "period": 12, "jitter": 2, "window": 4, "n_valid": 8, "n_test": 8},
    "babi": {"tasks": 1},
    "bit_delay": {"delay": 3, "n_scored": 5, "n_train": 40, "n_valid": 16, "n_test": 16},
}
# Wrong values of the right type, beyond the generic ones (every int parameter at -1, every string parameter at an
# unknown choice): (overrides, the parameter the message must name).
BAD: dict[str, list[tuple[dict[str, Any], str]]] = {
    "adding": [({"seq_len": 2}, "seq_len"), ({"n_test": 0}, "n_test")],
    "copy": [({"n_copy": 0}, "n_copy"), ({"n_symbols": 0}, "n_symbols")],
    "denoise": [({"seq_len": 0}, "seq_len")],
    "memorization": [({"distance": 0}, "distance"), ({"distance": 12}, "distance")],
    "parenthesis": [({"max_count": 0}, "max_count")],
    "arma_sim": [({"sigma": -1.0}, "sigma"), ({"valid_fraction": 1.5}, "valid_fraction"), ({"ar": (1.2,)}, "ar"),
                 ({"warmup": 10}, "warmup")],
    "forecast": [({"test_fraction": 0.0}, "test_fraction"), ({"season": 0}, "season"), ({"warmup": 12}, "warmup")],
    **{name: [({"min_length": 14, "max_length": 8}, "min_length"), ({"n_valid": 0}, "n_valid")] for name in CFL},
    "tomita": [({"grammar": 8}, "grammar"), ({"min_eval_len": 11, "max_eval_len": 10}, "max_eval_len")],
    "balanced_parens": [({"n_letters": 27}, "n_letters"), ({"max_len": 4}, "max_len")],
    "palindrome": [({"n_symbols": 1}, "n_symbols"), ({"max_train_len": 1, "min_train_len": 1}, "max_train_len")],
    "listops": [({"min_length": 10, "max_length": 11}, "min_length"), ({"max_args": 1}, "max_args")],
    "xor": [({"seq_len": 1}, "seq_len"), ({"n_valid": 0}, "n_valid")],
    "dissimilar": [({"seq_len": 3}, "seq_len")],
    "digits": [({"n_valid": 900, "n_test": 900}, "n_valid")],
    "mnist-test": [({"pool": 3}, "pool"), ({"n_valid": 0}, "n_valid")],
    "lm": [({"level": "byte"}, "level"), ({"bptt": 0}, "bptt"), ({"max_vocab": 1}, "max_vocab")],
    "spoken-digits": [({"downsample": 0}, "downsample"), ({"max_len": 0}, "max_len")],
    "music": [({"max_len": 0}, "max_len")],
    "ucr": [({"valid_fraction": 1.0}, "valid_fraction")],
    "title-recall": [({"jitter": 20, "period": 20}, "jitter"), ({"window": 0}, "window")],
    "babi": [({"tasks": 21}, "tasks"), ({"tasks": "2,x"}, "tasks"), ({"valid_fraction": 1.0}, "valid_fraction")],
    "bit_delay": [({"delay": 0}, "delay"), ({"n_scored": 0}, "n_scored")],
}
EVAL_KEYS = (("valid", 0), ("test", 0), ("test", 1))
NAMES = list_tasks()


def shared_data() -> Path | None:
    for cand in (os.environ.get("SEQZOO_DATA"), REPO_DATA):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None


def takes_data_dir(name: str) -> bool:
    return "data_dir" in task_info(name)["defaults"]


def small_params(name: str) -> dict[str, Any]:
    kw = dict(SMALL.get(name, {}))
    data = shared_data()
    if data is not None and takes_data_dir(name):
        kw.setdefault("data_dir", str(data))
    return kw


class Unavailable(Exception):
    """The task's data files or optional package are absent (the reason to skip)."""


def build_task(name: str, **overrides: Any) -> Task:
    """A new instance with its evaluation sets built; absent data or packages raise ``Unavailable``."""
    try:
        task = create_task(name, **{**small_params(name), **overrides})
        for split, seed in EVAL_KEYS:
            task.build(split, seed)
    except MissingDataError as e:
        raise Unavailable(f"{name}: data absent: {e}") from e
    except ImportError as e:
        raise Unavailable(f"{name}: optional package absent: {e}") from e
    return task


_TASKS: dict[str, Task | str] = {}


def task_for(name: str) -> Task:
    """The shared instance of a task (built once per session), or a skip saying why it cannot be built."""
    if name not in _TASKS:
        try:
            _TASKS[name] = build_task(name)
        except Unavailable as e:
            _TASKS[name] = str(e)
    got = _TASKS[name]
    if isinstance(got, str):
        pytest.skip(got)
    return got


def digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a dict of tensors: keys, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        v = tensors[key].detach().contiguous().cpu()
        h.update(f"{key}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()


def eval_digests(task: Task) -> dict[str, str]:
    return {f"{split}/{seed}": digest(task.build(split, seed).tensors) for split, seed in EVAL_KEYS}


def describe_for_digest(name: str) -> dict[str, Any]:
    """What the cross-process check compares: version, params and evaluation-set digests (or why not built)."""
    try:
        task = build_task(name)
    except Unavailable as e:
        return {"unavailable": str(e)}
    return {"version": task.version, "params": json.loads(json.dumps(task.params, default=str)),
            "digests": eval_digests(task)}


def equal_batches(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def first_rows(task: Task, split: str, n: int = 8) -> dict[str, torch.Tensor]:
    return task.build(split).batch(slice(0, n))


def output_shape(task: Task, batch: dict[str, torch.Tensor]) -> tuple[int, ...]:
    x = batch["inputs"]
    if task.spec.output_kind in ("per_sequence", "qa"):  # qa: one answer per question
        return (x.shape[0], task.spec.d_output)
    if task.spec.output_kind == "seq2seq":  # one output per target position (decoder input ``prev``)
        return (*batch["targets"].shape, task.spec.d_output)
    return (x.shape[0], x.shape[1], task.spec.d_output)


def random_outputs(task: Task, batch: dict[str, torch.Tensor], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(output_shape(task, batch), generator=g)


# ----- evaluation sets and training batches ----------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_eval_sets_identical_across_calls(name: str) -> None:
    task = task_for(name)
    first = eval_digests(task)
    assert eval_digests(task) == first
    other = build_task(name)
    assert other.version == task.version and other.params == task.params
    assert eval_digests(other) == first, f"{name}: a second instance with the same params built different data"


@pytest.fixture(scope="module")
def other_process() -> dict[str, Any]:
    """Digests of every task computed by a fresh interpreter running this file as a script."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    out = subprocess.run([sys.executable, __file__, *NAMES], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", NAMES)
def test_eval_sets_identical_across_processes(name: str, other_process: dict[str, Any]) -> None:
    task = task_for(name)
    theirs = other_process[name]
    assert "unavailable" not in theirs, theirs
    assert theirs["version"] == task.version
    assert theirs["params"] == json.loads(json.dumps(task.params, default=str))
    assert theirs["digests"] == eval_digests(task), f"{name}: another process built different evaluation sets"


@pytest.mark.parametrize("name", NAMES)
def test_train_batches_are_a_function_of_step_batch_size_and_seed(name: str) -> None:
    task, other = task_for(name), build_task(name)
    for step, size, seed in ((0, 4, 0), (3, 4, 1), (2, 6, 0)):
        a, b = task.train_batch(step, size, seed), other.train_batch(step, size, seed)
        assert equal_batches(a, b), f"{name}: train_batch({step}, {size}, {seed}) differs between instances"
        assert equal_batches(a, task.train_batch(step, size, seed)), f"{name}: train_batch is not repeatable"
        assert a["inputs"].shape[0] == size
    assert not equal_batches(task.train_batch(3, 4, 1), task.train_batch(4, 4, 1)), f"{name}: steps repeat"


# ----- what the spec declares ------------------------------------------------------------------------------------

def check_batch(task: Task, batch: dict[str, torch.Tensor], where: str, *, train: bool) -> None:
    spec = task.spec
    x, y = batch["inputs"], batch["targets"]
    B = x.shape[0]
    if spec.input_kind == "tokens":
        assert x.dtype == torch.int64 and x.dim() == 2, f"{where}: token inputs must be (B, L) int64, got {x.dtype} " \
                                                        f"{tuple(x.shape)}"
        assert spec.vocab_size is not None and int(x.min()) >= 0 and int(x.max()) < spec.vocab_size, \
            f"{where}: token ids outside [0, vocab_size={spec.vocab_size})"
    else:
        assert x.dtype == torch.float32 and x.dim() == 3, f"{where}: feature inputs must be (B, L, d) float32, got " \
                                                          f"{x.dtype} {tuple(x.shape)}"
        assert x.shape[2] == spec.d_input, f"{where}: {x.shape[2]} features, spec says d_input={spec.d_input}"
        assert bool(torch.isfinite(x).all()), f"{where}: non-finite inputs"
    L = x.shape[1]
    if train and spec.seq_len is not None:
        assert L <= spec.seq_len, f"{where}: training length {L} > spec.seq_len={spec.seq_len}"
        if "mask" not in batch:
            assert L == spec.seq_len, f"{where}: unpadded training length {L} != spec.seq_len={spec.seq_len}"
    if "mask" in batch:
        m = batch["mask"]
        assert m.dtype == torch.bool and tuple(m.shape) == (B, L), f"{where}: mask must be (B, L) bool"
        assert bool(m[:, 0].all()), f"{where}: a sequence without any real position"
        assert bool((m[:, 1:] <= m[:, :-1]).all()), f"{where}: mask is not right padding"
    if spec.output_kind == "seq2seq":  # targets and loss_mask align with the decoder input, not the source
        p = batch["prev"]
        assert p.dtype == torch.int64 and p.shape[0] == B and y.shape == p.shape, f"{where}: prev/targets shapes"
        L = p.shape[1]
    if "loss_mask" in batch:
        lm = batch["loss_mask"]
        assert lm.dtype == torch.bool and tuple(lm.shape) == (B, L), f"{where}: loss_mask must be (B, L) bool"
        assert bool(lm.any()), f"{where}: nothing is scored"
    for key, v in batch.items():
        assert v.dim() == 0 or v.shape[0] == B, f"{where}: {key!r} has {v.shape[0]} rows, inputs have {B}"
    # targets
    out_shape = output_shape(task, batch)
    if spec.output_kind in ("per_sequence", "qa"):
        assert y.shape[0] == B
    else:
        assert tuple(y.shape[:2]) == (B, L), f"{where}: per-step targets {tuple(y.shape)} do not align with inputs"
    own_loss = type(task).loss is not Task.loss
    if y.dtype == torch.int64:
        assert int(y.min()) >= 0 and int(y.max()) < spec.d_output, \
            f"{where}: class targets outside [0, d_output={spec.d_output})"
    if own_loss:
        return
    if spec.loss == "cross_entropy":
        assert y.dtype == torch.int64 and tuple(y.shape) == out_shape[:-1], \
            f"{where}: cross-entropy targets must be int64 of shape {out_shape[:-1]}, got {y.dtype} {tuple(y.shape)}"
    else:
        assert y.dtype == torch.float32 and tuple(y.shape) == out_shape, \
            f"{where}: {spec.loss} targets must be float32 of shape {out_shape}, got {y.dtype} {tuple(y.shape)}"
        if spec.loss == "bce":
            assert bool(((y == 0) | (y == 1)).all()), f"{where}: bce targets must be 0 or 1"


@pytest.mark.parametrize("name", NAMES)
def test_batches_have_the_declared_shapes_dtypes_and_masks(name: str) -> None:
    task = task_for(name)
    spec = task.spec
    assert spec.decoder == ("last" if spec.output_kind == "per_sequence" else "step")
    assert spec.primary_metric in spec.metrics
    for split in ("valid", "test"):
        check_batch(task, first_rows(task, split), f"{name} {split}", train=False)
    check_batch(task, task.train_batch(1, 5, 0), f"{name} train", train=True)


@pytest.mark.parametrize("name", NAMES)
def test_description_is_plain_json(name: str) -> None:
    """``describe()`` goes into a run's config.json: it must survive JSON unchanged (no tensors, tuples as lists)."""
    task = task_for(name)
    desc = task.describe()
    back = json.loads(json.dumps(desc))
    assert back["name"] == name and back["version"] == task.version
    assert back["spec"]["primary_metric"] == task.spec.primary_metric and back["spec"]["decoder"] == task.spec.decoder


@pytest.mark.parametrize("name", NAMES)
def test_baseline_is_finite_and_has_the_primary_metric(name: str) -> None:
    task = task_for(name)
    base = task.baseline()
    assert task.spec.primary_metric in base, f"{name}: baseline {sorted(base)} lacks {task.spec.primary_metric!r}"
    bad = {k: v for k, v in base.items() if not (isinstance(v, float) and math.isfinite(v))}
    assert not bad, f"{name}: baseline values not finite floats: {bad}"


@pytest.mark.parametrize("name", NAMES)
def test_loss_of_random_outputs_is_finite_and_backpropagates(name: str) -> None:
    task = task_for(name)
    for where, batch in (("valid", first_rows(task, "valid")), ("train", task.train_batch(0, 4, 0))):
        outputs = random_outputs(task, batch).requires_grad_(True)
        loss = task.loss(outputs, batch)
        assert loss.dim() == 0 and bool(torch.isfinite(loss)), f"{name} {where}: loss {loss}"
        loss.backward()
        assert outputs.grad is not None and bool(torch.isfinite(outputs.grad).all())
        assert float(outputs.grad.abs().sum()) > 0, f"{name} {where}: the loss does not depend on the outputs"


@pytest.mark.parametrize("name", NAMES)
def test_metrics_cover_the_spec_and_are_finite(name: str) -> None:
    task = task_for(name)
    batch = first_rows(task, "valid")
    sums = task.metric_sums(random_outputs(task, batch), batch)
    assert set(task.spec.metrics) <= set(sums), f"{name}: metric_sums gives {sorted(sums)}, spec {task.spec.metrics}"
    for metric, (total, count) in sums.items():
        assert math.isfinite(total) and count > 0, f"{name}: {metric} = ({total}, {count})"
    means = {k: s / c for k, (s, c) in sums.items()}
    assert all(math.isfinite(v) for v in task.derived_metrics(means).values())


# ----- bad parameters and absent data -----------------------------------------------------------------------------

def bad_cases(name: str) -> list[tuple[dict[str, Any], str]]:
    """Every int parameter at -1, every string parameter at an unknown choice, plus the task's ``BAD`` entries."""
    cases = []
    for key, default in task_info(name)["defaults"].items():
        if isinstance(default, bool) or key == "data_dir":
            continue
        if isinstance(default, int):
            cases.append(({key: -1}, key))
        elif isinstance(default, str):
            cases.append(({key: "no-such-choice"}, key))
    return cases + BAD.get(name, [])


BAD_CASES = [pytest.param(name, overrides, key, id=f"{name}-{'-'.join(f'{k}={v}' for k, v in overrides.items())}")
             for name in NAMES for overrides, key in bad_cases(name)]


@pytest.mark.parametrize(("name", "overrides", "key"), BAD_CASES)
def test_bad_parameter_values_raise_config_errors_naming_them(name: str, overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        create_task(name, **{**small_params(name), **overrides})
    msg = str(info.value)
    assert re.search(rf"\b{re.escape(key)}\b", msg), f"{name} {overrides}: message does not name {key!r}: {msg}"
    assert "\n" not in msg


@pytest.mark.parametrize("name", [n for n in NAMES if takes_data_dir(n)])
def test_absent_data_names_the_files_and_where_it_looked(name: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``SEQZOO_DATA`` at an empty folder, a data-backed task raises ``MissingDataError`` (the suite's skip
    reason) naming what it looked for and where, before any other error."""
    monkeypatch.setenv("SEQZOO_DATA", str(tmp_path))
    kw = {k: v for k, v in SMALL.get(name, {}).items() if k != "data_dir"}
    with pytest.raises(MissingDataError) as info:
        create_task(name, **kw).build("valid")
    msg = str(info.value)
    assert str(tmp_path) in msg and "SEQZOO_DATA" in msg, msg


if __name__ == "__main__":  # the other process of test_eval_sets_identical_across_processes
    torch.set_num_threads(1)
    print(json.dumps({name: describe_for_digest(name) for name in sys.argv[1:]}))

"""Tasks: data shapes, determinism, structure of each generator, baselines, metrics and bad parameters."""

from __future__ import annotations

import math

import pytest
import torch

from seqzoo.tasks import Task, create_task, list_tasks

SMALL = {  # quick configurations of every generated task
    "adding": {"seq_len": 20, "n_valid": 64, "n_test": 64},
    "copy": {"seq_len": 12, "n_valid": 64, "n_test": 64},
    "denoise": {"seq_len": 15, "n_valid": 64, "n_test": 64},
    "memorization": {"seq_len": 16, "distance": 3, "n_valid": 64, "n_test": 64},
}


def onehot_logits(targets: torch.Tensor, n_classes: int, scale: float = 1e4) -> torch.Tensor:
    """Logits that put (numerically) all probability on ``targets``."""
    return torch.nn.functional.one_hot(targets, n_classes).double() * scale


def all_batches_metrics(task: Task, outputs: torch.Tensor, batch: dict, batch_size: int) -> dict[str, float]:
    """Average ``metric_sums`` over chunks of a batch (checks that sums/counts combine exactly)."""
    totals: dict[str, list[float]] = {}
    for start in range(0, outputs.shape[0], batch_size):
        part = {k: v[start:start + batch_size] for k, v in batch.items()}
        for name, (s, c) in task.metric_sums(outputs[start:start + batch_size], part).items():
            acc = totals.setdefault(name, [0.0, 0.0])
            acc[0] += s
            acc[1] += c
    return {k: s / c for k, (s, c) in totals.items()}


# ----- registry, shapes and dtypes -----------------------------------------------------------------

def test_all_tasks_registered() -> None:
    assert {"adding", "copy", "denoise", "memorization", "digits"} <= set(list_tasks())


def test_unknown_parameter_names_closest() -> None:
    with pytest.raises(TypeError, match="distance"):
        create_task("memorization", distanse=3)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_shapes_and_dtypes_match_spec(name: str) -> None:
    task = create_task(name, **SMALL[name])
    spec = task.spec
    data = task.build("valid", seed=0)
    assert len(data) == 64
    x, y = data.tensors["inputs"], data.tensors["targets"]
    assert x.dtype == torch.float32 and x.dim() == 3
    assert x.shape[1] == spec.seq_len and x.shape[2] == spec.d_input
    if spec.loss == "cross_entropy":
        assert y.dtype == torch.int64
        assert int(y.min()) >= 0 and int(y.max()) < spec.d_output
    else:
        assert y.dtype == torch.float32
    if spec.output_kind == "per_sequence":
        assert spec.decoder == "last" and y.shape[0] == 64 and y.shape[-1] == spec.d_output
    else:
        assert spec.decoder == "step" and y.shape[:2] == x.shape[:2]
    batch = task.train_batch(step=0, batch_size=8)
    assert {k: v.shape[1:] for k, v in batch.items()} == {k: v.shape[1:] for k, v in data.tensors.items()}
    assert batch["inputs"].shape[0] == 8


# ----- determinism ---------------------------------------------------------------------------------

def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_eval_sets_fixed_by_split_and_seed(name: str) -> None:
    a, b = create_task(name, **SMALL[name]), create_task(name, **SMALL[name])
    assert _equal(a.build("test", 3).tensors, b.build("test", 3).tensors)
    assert a.build("test", 3) is a.build("test", 3)  # cached
    assert not _equal(a.build("test", 3).tensors, a.build("test", 4).tensors)
    assert not _equal(a.build("valid", 3).tensors, a.build("test", 3).tensors)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_train_batches_pure_function_of_seed_and_step(name: str) -> None:
    a, b = create_task(name, **SMALL[name]), create_task(name, **SMALL[name])
    assert _equal(a.train_batch(5, 16, seed=1), b.train_batch(5, 16, seed=1))
    assert not _equal(a.train_batch(5, 16, seed=1), a.train_batch(6, 16, seed=1))
    assert not _equal(a.train_batch(5, 16, seed=1), a.train_batch(5, 16, seed=2))


def test_data_does_not_depend_on_non_data_params() -> None:
    mse = create_task("memorization", seq_len=16, distance=3, loss="mse", n_test=32)
    mae = create_task("memorization", seq_len=16, distance=3, loss="mae", n_test=32)
    assert _equal(mse.build("test").tensors, mae.build("test").tensors)
    assert _equal(mse.train_batch(2, 8), mae.train_batch(2, 8))
    other_size = create_task("memorization", seq_len=16, distance=3, n_test=32, n_valid=50)
    assert _equal(mse.build("test").tensors, other_size.build("test").tensors)
    # ... but a parameter that shapes the data does change it.
    far = create_task("memorization", seq_len=16, distance=4, n_test=32)
    assert not torch.equal(mse.build("test").tensors["inputs"], far.build("test").tensors["inputs"])


PINNED: dict = {
    "copy": [[7, 8, 3, 6, 7, 3, 5, 8, 7, 3], [4, 1, 7, 7, 3, 2, 2, 7, 2, 2]],
    "denoise": [[1, 6, 9, 1, 9, 4, 4, 7, 5, 9], [6, 5, 9, 5, 2, 5, 1, 8, 6, 8]],
    "memorization": 30.46134,
    "adding": 9.28555,
}


def test_eval_sets_pinned() -> None:
    """Regression pin: the evaluation data of a task version must never change silently.

    If a generator is changed on purpose, bump the task's ``version`` and update these numbers.
    """
    copy = create_task("copy", seq_len=5, n_test=8).build("test", 0).tensors["targets"]
    denoise = create_task("denoise", seq_len=5, n_test=8).build("test", 0).tensors["targets"]
    memo = create_task("memorization", seq_len=8, distance=2, n_test=8).build("test", 0).tensors["inputs"]
    adding = create_task("adding", seq_len=10, n_test=8).build("test", 0).tensors["targets"]
    assert copy[:2, -10:].tolist() == PINNED["copy"]
    assert denoise[:2, -10:].tolist() == PINNED["denoise"]
    assert memo.sum().item() == pytest.approx(PINNED["memorization"], abs=1e-4)
    assert adding.sum().item() == pytest.approx(PINNED["adding"], abs=1e-4)




# ----- structure of each generator ---------------------------------------------------------------

def test_copy_structure() -> None:
    T, K = 12, 10
    task = create_task("copy", seq_len=T)
    b = task.build("test").batch(slice(0, 64))
    tokens = b["inputs"].argmax(-1)
    assert torch.equal(b["inputs"].sum(-1), torch.ones(64, T + 2 * K))  # proper one-hot everywhere
    symbols = tokens[:, :K]
    assert int(symbols.min()) >= 1 and int(symbols.max()) <= 8
    assert (tokens[:, K:T + K] == 0).all() and (tokens[:, T + K] == 9).all() and (tokens[:, T + K + 1:] == 0).all()
    assert (b["targets"][:, :T + K] == 0).all()
    assert torch.equal(b["targets"][:, T + K:], symbols)
    assert task.spec.d_input == 10 and task.spec.d_output == 9 and task.spec.seq_len == T + 2 * K


def test_denoise_marker_is_all_zero_and_symbols_in_position_order() -> None:
    T = 15
    task = create_task("denoise", seq_len=T)
    b = task.build("test").batch(slice(0, 64))
    x, y = b["inputs"], b["targets"]
    assert x.shape == (64, T + 20, 10)
    active = x.sum(-1)
    assert (x[:, T + 9] == 0).all()  # marker: index 10 of a depth-10 one-hot
    assert (active[:, : T + 9] == 1).all() and (active[:, T + 10:] == 1).all()
    tokens = x.argmax(-1)
    assert (tokens[:, T + 10:] == 0).all()
    assert (y[:, : T + 10] == 0).all()
    for i in range(64):
        data = tokens[i, : T + 9]
        seen = data[data != 0]
        assert len(seen) == 10  # distinct positions by default
        assert torch.equal(seen, y[i, -10:])
    assert int(y[:, -10:].min()) >= 1 and int(y[:, -10:].max()) <= 9


def test_denoise_reference_draw_with_replacement() -> None:
    """``distinct_positions=False``: positions may repeat; the later symbol overwrites, the target keeps all ten."""
    task = create_task("denoise", seq_len=1, distinct_positions=False)  # 10 positions drawn among 10 slots
    b = task.build("test").batch(slice(0, 200))
    tokens = b["inputs"].argmax(-1)[:, :10]
    counts = (tokens != 0).sum(1)
    assert int(counts.max()) <= 10 and int(counts.min()) < 10  # collisions are (almost surely) present
    assert (b["targets"][:, -10:] != 0).all()
    for i in range(200):  # what is visible is a subsequence of the target, in order
        seen = tokens[i][tokens[i] != 0].tolist()
        it = iter(b["targets"][i, -10:].tolist())
        assert all(any(s == t for t in it) for s in seen)


def test_memorization_targets_are_shifted_inputs_without_leakage() -> None:
    X, L = 3, 16
    task = create_task("memorization", seq_len=L, distance=X)
    b = task.build("test").batch(slice(0, 64))
    x, y, m = b["inputs"], b["targets"], b["loss_mask"]
    assert torch.equal(y[:, X:], x[:, :-X])
    assert (m[:, :X] == 0).all() and m[:, X:].all()
    assert not (y[:, X:] == x[:, X:]).any()  # the target is never the input of the same step
    assert float(x.min()) >= 0.0 and float(x.max()) < 1.0
    assert float(x.mean()) == pytest.approx(0.5, abs=0.02)
    # Masked steps do not count: garbage there leaves the loss unchanged.
    out = y.clone()
    out[:, :X] = 100.0
    assert task.loss(out, b).item() == 0.0


# ----- baselines ----------------------------------------------------------------------------------

def test_baseline_formulas() -> None:
    assert create_task("copy").baseline()["cross_entropy"] == pytest.approx(0.1733, abs=1e-4)
    assert create_task("copy", seq_len=50).baseline()["cross_entropy"] == pytest.approx(10 * math.log(8) / 70)
    assert create_task("copy").baseline()["recall_accuracy"] == 1 / 8
    assert create_task("denoise").baseline()["cross_entropy"] == pytest.approx(0.0999, abs=1e-4)
    assert create_task("denoise", seq_len=90).baseline()["cross_entropy"] == pytest.approx(0.1998, abs=1e-4)
    assert create_task("denoise", seq_len=50).baseline()["cross_entropy"] == pytest.approx(0.314, abs=1e-3)
    assert create_task("denoise").baseline()["recall_accuracy"] == 1 / 9
    assert create_task("memorization").baseline() == {"mae": 0.25, "mse": pytest.approx(1 / 12)}
    assert create_task("adding").baseline()["mse"] == pytest.approx(0.167, abs=1e-3)


def _memoryless_logits(targets: torch.Tensor, n_recall: int, n_classes: int) -> torch.Tensor:
    """Blank (class 0) for sure before the recall steps; uniform over the symbols 1.. at the recall steps."""
    logits = torch.zeros(*targets.shape, n_classes, dtype=torch.float64)
    logits[:, :-n_recall, 0] = 1e4
    logits[:, -n_recall:, 0] = -1e4
    return logits


@pytest.mark.parametrize("name,params", [("copy", {"seq_len": 30}), ("denoise", {"seq_len": 40})])
def test_memoryless_predictor_matches_baseline_symbols(name: str, params: dict) -> None:
    task = create_task(name, **params)
    b = task.build("test", seed=0).batch(slice(None))
    n_recall = task.spec.extra["n_recall"]
    logits = _memoryless_logits(b["targets"], n_recall, task.spec.d_output)
    base = task.baseline()
    assert task.loss(logits, b).item() == pytest.approx(base["cross_entropy"], rel=1e-6)
    metrics = all_batches_metrics(task, logits, b, batch_size=300)
    assert metrics["cross_entropy"] == pytest.approx(base["cross_entropy"], rel=1e-6)
    # argmax of a uniform guess is always symbol 1: right about 1/n_symbols of the time
    assert metrics["recall_accuracy"] == pytest.approx(base["recall_accuracy"], abs=0.015)


def test_memoryless_predictor_matches_baseline_adding() -> None:
    task = create_task("adding", seq_len=20, n_test=4000)
    b = task.build("test").batch(slice(None))
    assert task.loss(torch.ones(4000, 1), b).item() == pytest.approx(task.baseline()["mse"], abs=0.012)


@pytest.mark.parametrize("loss", ["mse", "mae"])
def test_memoryless_predictor_matches_baseline_memorization(loss: str) -> None:
    task = create_task("memorization", seq_len=64, distance=5, loss=loss)
    b = task.build("test").batch(slice(None))
    half = torch.full_like(b["targets"], 0.5)
    base = task.baseline()
    assert task.loss(half, b).item() == pytest.approx(base[loss], abs=0.005)
    metrics = all_batches_metrics(task, half, b, batch_size=128)
    assert metrics["mae"] == pytest.approx(0.25, abs=0.005)
    assert metrics["mse"] == pytest.approx(1 / 12, abs=0.003)


# ----- perfect predictors -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["copy", "denoise"])
def test_perfect_predictor_symbols(name: str) -> None:
    task = create_task(name, **SMALL[name])
    b = task.build("valid").batch(slice(None))
    logits = onehot_logits(b["targets"], task.spec.d_output)
    assert task.loss(logits, b).item() == pytest.approx(0.0, abs=1e-6)
    metrics = all_batches_metrics(task, logits, b, batch_size=10)
    assert metrics["recall_accuracy"] == 1.0 and metrics["cross_entropy"] == pytest.approx(0.0, abs=1e-6)


def test_perfect_predictor_regression() -> None:
    for name in ("adding", "memorization"):
        task = create_task(name, **SMALL[name])
        b = task.build("valid").batch(slice(None))
        assert task.loss(b["targets"].clone(), b).item() == 0.0
        assert all(s == 0.0 for s, _ in task.metric_sums(b["targets"].clone(), b).values())


# ----- digits ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits() -> Task:
    return create_task("digits")


def test_digits_split_sizes_disjoint_and_stratified(digits: Task) -> None:
    parts = digits.split_indices()
    assert {k: len(v) for k, v in parts.items()} == {"train": 1197, "valid": 300, "test": 300}
    union = torch.cat(list(parts.values()))
    assert len(union.unique()) == 1797 and int(union.min()) == 0 and int(union.max()) == 1796
    for split in ("valid", "test"):
        counts = torch.bincount(digits.build(split).tensors["targets"], minlength=10)
        assert int(counts.min()) >= 28 and int(counts.max()) <= 32  # ~30 per class
    assert [len(digits.build(s)) for s in ("train", "valid", "test")] == [1197, 300, 300]


def test_digits_split_fixed_and_independent_of_run_seed(digits: Task) -> None:
    other = create_task("digits")
    assert _equal(digits.build("test", 0).tensors, other.build("test", 7).tensors)
    a, b = digits.train_batch(3, 32, seed=0), digits.train_batch(3, 32, seed=1)
    assert a["inputs"].shape == (32, 64, 1) and not _equal(a, b)
    assert _equal(a, other.train_batch(3, 32, seed=0))


def test_digits_split_pinned(digits: Task) -> None:
    """Regression pin of the fixed split (bump the task version if it is ever changed on purpose)."""
    parts = digits.split_indices()
    assert parts["test"][:8].tolist() == [14, 20, 23, 27, 33, 35, 44, 62]
    assert parts["valid"][:8].tolist() == [0, 10, 16, 22, 28, 31, 32, 43]


def test_digits_layouts(digits: Task) -> None:
    rows = create_task("digits", layout="rows")
    px, rw = digits.build("test").tensors, rows.build("test").tensors
    assert px["inputs"].shape == (300, 64, 1) and rw["inputs"].shape == (300, 8, 8)
    assert torch.equal(px["inputs"].reshape(300, 8, 8), rw["inputs"])
    assert torch.equal(px["targets"], rw["targets"]) and px["targets"].dtype == torch.int64
    assert float(px["inputs"].min()) == 0.0 and float(px["inputs"].max()) == 1.0
    assert rows.spec.seq_len == 8 and rows.spec.d_input == 8 and digits.spec.seq_len == 64
    assert digits.spec.decoder == "last" and digits.spec.higher_is_better and digits.spec.primary_metric == "accuracy"


def test_digits_baseline_and_perfect_predictor(digits: Task) -> None:
    train = digits.build("train").tensors["targets"]
    test = digits.build("test").batch(slice(None))
    prior = torch.bincount(train, minlength=10).double() / len(train)
    logits = prior.log().expand(300, 10)
    metrics = all_batches_metrics(digits, logits, test, batch_size=64)
    base = digits.baseline()
    assert metrics["cross_entropy"] == pytest.approx(base["cross_entropy"], rel=1e-9)
    assert metrics["accuracy"] == pytest.approx(base["accuracy"])
    assert 0.08 < base["accuracy"] < 0.13 and base["cross_entropy"] == pytest.approx(math.log(10), abs=0.01)
    perfect = onehot_logits(test["targets"], 10, scale=100.0)
    assert digits.loss(perfect, test).item() == pytest.approx(0.0, abs=1e-6)
    assert all_batches_metrics(digits, perfect, test, batch_size=64)["accuracy"] == 1.0


# ----- bad parameters ----------------------------------------------------------------------------

@pytest.mark.parametrize("name,params,match", [
    ("copy", {"seq_len": -1}, "seq_len"),
    ("copy", {"seq_len": 10.5}, "seq_len"),
    ("copy", {"n_copy": 0}, "n_copy"),
    ("copy", {"n_symbols": 0}, "n_symbols"),
    ("denoise", {"seq_len": -5}, "seq_len"),
    ("denoise", {"seq_len": 0}, "seq_len"),
    ("denoise", {"distinct_positions": "yes"}, "distinct_positions"),
    ("denoise", {"n_valid": 0}, "n_valid"),
    ("memorization", {"seq_len": -3}, "seq_len"),
    ("memorization", {"distance": 0}, "distance"),
    ("memorization", {"seq_len": 10, "distance": 10}, "distance must be < seq_len"),
    ("memorization", {"loss": "cross_entropy"}, "loss must be one of"),
    ("memorization", {"distance": True}, "distance"),
    ("digits", {"layout": "columns"}, "layout"),
    ("digits", {"n_valid": 900, "n_test": 900}, "n_valid \\+ n_test"),
])
def test_bad_params_raise_clear_errors(name: str, params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_task(name, **params)


def test_bad_split_raises() -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        create_task("copy", **SMALL["copy"]).build("validation")


def test_class_prior_baseline_is_inf_not_nan_when_a_test_class_never_trains() -> None:
    """One shared rule for digits, mnist-test and the fixed classification sets (mnist's copy had lost the guard)."""
    from seqzoo.tasks.base import class_prior_baseline

    train, test = torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 3])
    base = class_prior_baseline(train, test, n_classes=4)
    assert base["accuracy"] == pytest.approx(1 / 3) and base["cross_entropy"] == math.inf
    seen = class_prior_baseline(train, torch.tensor([0, 1]), n_classes=4)
    assert seen["cross_entropy"] == pytest.approx(-(math.log(0.5) + math.log(0.25)) / 2)
    assert class_prior_baseline(torch.tensor([], dtype=torch.long), test, 4)["cross_entropy"] == math.inf  # not NaN

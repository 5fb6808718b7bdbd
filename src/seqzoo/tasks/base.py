"""Task protocol: a spec, deterministic data, loss, metrics and a trivial baseline.

Batches are dicts of batch-first tensors: ``inputs`` (tokens ``(B, L)`` int64 or features
``(B, L, d)``), ``targets``, optional ``mask`` (B, L) bool (True = real input position) and
optional ``loss_mask`` (which output positions count). Evaluation sets are a pure function of
``(task name, version, params, split, seed)``; training batches a pure function of
``(seed, step)``, so a resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from seqzoo.errors import ConfigError

Batch = dict[str, Tensor]

INPUT_KINDS = ("features", "tokens")
OUTPUT_KINDS = ("per_step", "per_sequence", "masked_steps", "seq2seq", "qa")
LOSSES = ("mse", "mae", "cross_entropy", "bce")
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class TaskSpec:
    """What a model must consume and produce for a task."""

    input_kind: str
    output_kind: str
    d_output: int
    loss: str
    metrics: tuple[str, ...]
    primary_metric: str
    higher_is_better: bool = False
    d_input: int | None = None
    vocab_size: int | None = None
    seq_len: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {self.input_kind!r}")
        if self.output_kind not in OUTPUT_KINDS:
            raise ValueError(f"output_kind must be one of {OUTPUT_KINDS}, got {self.output_kind!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.primary_metric not in self.metrics:
            raise ValueError(f"primary_metric {self.primary_metric!r} is not among metrics {self.metrics}")

    @property
    def decoder(self) -> str:
        """The ``SequenceModel`` decoder this task needs."""
        return "last" if self.output_kind == "per_sequence" else "step"

    def model_kwargs(self) -> dict[str, Any]:
        """Arguments that size a ``SequenceModel`` for this task."""
        kw: dict[str, Any] = {"d_output": self.d_output, "decoder": self.decoder}
        if self.input_kind == "tokens":
            kw["vocab_size"] = self.vocab_size
            kw["d_input"] = None
        else:
            kw["d_input"] = self.d_input
            kw["vocab_size"] = None
        if self.output_kind == "qa" and "memory_size" in self.extra:  # a QA model sizes its memory from the task
            kw["memory_size"] = self.extra["memory_size"]
        return kw

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["decoder"] = self.decoder
        return d


def check_int(task: str, name: str, value: Any, minimum: int) -> None:
    """Raise a ConfigError naming the task and parameter unless ``value`` is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{task}: {name} must be an integer >= {minimum}, got {value!r}")


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed that depends on every part (stable across processes and Python versions)."""
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def generator(*parts: Any) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(derive_seed(*parts))
    return g


class TensorDataset:
    """A fixed set of examples: a dict of tensors sharing their first dimension."""

    def __init__(self, tensors: Batch) -> None:
        sizes = {k: v.shape[0] for k, v in tensors.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"all tensors must share the first dimension, got {sizes}")
        self.tensors = tensors
        self.size = next(iter(sizes.values()))

    def __len__(self) -> int:
        return self.size

    def batch(self, index: Tensor | slice) -> Batch:
        return {k: v[index] for k, v in self.tensors.items()}

    def batches(self, batch_size: int) -> Iterator[Batch]:
        for start in range(0, self.size, batch_size):
            yield self.batch(slice(start, start + batch_size))


class Task:
    """Base task. Subclasses set ``name``, ``version``, build ``spec`` and implement ``sample``.

    Synthetic tasks implement ``sample(n, g)`` (draw n examples with generator g); fixed-data tasks
    override ``dataset(split)`` and set ``fresh_train_data = False``.
    """

    name: str = "task"
    version: int = 1
    paper: str = ""  # the paper(s) the task comes from (``seqzoo list tasks`` shows it; static, no build)
    fresh_train_data: bool = True
    eval_sizes: dict[str, int] = {"valid": 1000, "test": 1000}
    # Parameters that do not change what the data is (split sizes, loss choice); left out of the data seed so that,
    # e.g., switching the loss from MSE to MAE keeps the same evaluation sets.
    non_data_params: tuple[str, ...] = ("n_valid", "n_test")
    # Constructor arguments that name a file the task keeps in each run folder (``run_files``): a task rebuilt for
    # a stored run (``training.runs.task_from_config``) reads the run's own copy, so evaluating a run never
    # depends on a cache or a re-derivation that could differ (translation: the sentencepiece model).
    run_file_args: dict[str, str] = {}

    def __init__(self, **params: Any) -> None:
        self.params = params
        self._cache: dict[tuple[str, int], TensorDataset] = {}

    spec: TaskSpec

    # ----- data -------------------------------------------------------------------------------
    def data_params(self) -> dict[str, Any]:
        """The parameters that determine the generated data (``params`` minus ``non_data_params``)."""
        return {k: v for k, v in self.params.items() if k not in self.non_data_params}

    def sample(self, n: int, g: torch.Generator) -> Batch:  # pragma: no cover
        raise NotImplementedError

    def dataset(self, split: str) -> TensorDataset:  # pragma: no cover
        """Fixed data of a split (fixed-data tasks only)."""
        raise NotImplementedError

    def build(self, split: str, seed: int = 0) -> TensorDataset:
        """The evaluation (or fixed training) set of ``split``; identical for equal (version, params, split, seed)."""
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
        key = (split, seed)
        if key not in self._cache:
            if self.fresh_train_data:
                n = self.eval_sizes.get(split, self.eval_sizes["valid"])
                g = generator(self.name, self.version, self.data_params(), split, seed)
                self._cache[key] = TensorDataset(self.sample(n, g))
            else:
                self._cache[key] = self.dataset(split)
        return self._cache[key]

    def train_batch(self, step: int, batch_size: int, seed: int = 0) -> Batch:
        """The training batch of ``step``: fresh samples, or an epoch-wise shuffle of the fixed train set."""
        if self.fresh_train_data:
            g = generator(self.name, self.version, self.data_params(), "train", seed, step)
            return self.sample(batch_size, g)
        data = self.build("train")
        per_epoch = max(1, len(data) // batch_size)
        epoch, k = divmod(step, per_epoch)
        perm = torch.randperm(len(data), generator=generator(self.name, self.version, "perm", seed, epoch))
        return data.batch(perm[k * batch_size:(k + 1) * batch_size])

    # ----- loss and metrics -------------------------------------------------------------------
    def loss_mask(self, batch: Batch, outputs: Tensor) -> Tensor | None:
        return batch.get("loss_mask")

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        """Mean loss over counted positions (``loss_mask``) of the batch."""
        values = self._pointwise(self.spec.loss, outputs, batch["targets"])
        return _masked_mean(values, self.loss_mask(batch, outputs))

    def metric_sums(self, outputs: Tensor, batch: Batch) -> dict[str, tuple[float, float]]:
        """``{metric: (sum, count)}`` so metrics average exactly over any number of batches."""
        out: dict[str, tuple[float, float]] = {}
        mask = self.loss_mask(batch, outputs)
        targets = batch["targets"]
        for name in self.spec.metrics:
            if name in ("mse", "mae", "cross_entropy", "bce"):
                v = self._pointwise(name, outputs, targets)
            elif name == "accuracy":
                v = (outputs.argmax(-1) == targets).to(outputs.dtype)
            else:
                v = self.custom_metric(name, outputs, batch)
                if isinstance(v, tuple):
                    out[name] = v
                    continue
            out[name] = _masked_sum_count(v, mask)
        return out

    def custom_metric(self, name: str, outputs: Tensor, batch: Batch) -> Tensor | tuple[float, float]:
        raise KeyError(f"task {self.name!r} does not define metric {name!r}")

    @staticmethod
    def _pointwise(kind: str, outputs: Tensor, targets: Tensor) -> Tensor:
        """Per-position losses with the reduction over feature/class axes already taken."""
        if kind == "cross_entropy":
            return torch.nn.functional.cross_entropy(outputs.flatten(0, -2), targets.flatten(), reduction="none"
                                                     ).view(targets.shape)
        if kind == "bce":
            return torch.nn.functional.binary_cross_entropy_with_logits(
                outputs, targets.to(outputs.dtype), reduction="none").sum(-1)
        if outputs.shape != targets.shape:
            raise ValueError(f"outputs {tuple(outputs.shape)} and targets {tuple(targets.shape)} differ in shape")
        diff = outputs - targets
        v = diff.pow(2) if kind == "mse" else diff.abs()
        return v.mean(-1)

    def derived_metrics(self, values: dict[str, float]) -> dict[str, float]:
        """Metrics computed from the exactly averaged ones (e.g. perplexity = exp(mean cross-entropy))."""
        return {}

    def baseline(self) -> dict[str, float]:
        """Metrics of the best predictor that uses no memory of the informative input (or a lower bound)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "params": self.params, "spec": self.spec.to_dict()}


def _masked_sum_count(values: Tensor, mask: Tensor | None) -> tuple[float, float]:
    values = values.detach().double()
    if mask is None:
        return float(values.sum()), float(values.numel())
    m = mask.to(values.dtype)
    return float((values * m).sum()), float(m.sum())


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return values.mean()
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1.0)


def class_prior_baseline(train: Tensor, test: Tensor, n_classes: int) -> dict[str, float]:
    """The training labels' majority class (``accuracy``) and class prior (``cross_entropy``), scored on ``test``.

    A test class that never occurs in training has prior 0, so the cross-entropy is ``inf`` (not NaN, not an error).
    """
    counts = torch.bincount(train, minlength=n_classes).double()
    prior = counts / counts.sum()
    p = prior[test]
    return {"accuracy": float((test == int(counts.argmax())).double().mean()),
            "cross_entropy": float(-p.log().mean()) if bool((p > 0).all()) else math.inf}


def uniform_log(n: int) -> float:
    return math.log(n)

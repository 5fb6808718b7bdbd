"""Sequential digits: scikit-learn's bundled 8×8 handwritten digits read as sequences.

An offline stand-in for sequential MNIST (spec, data availability note): 1,797 images of 8×8
pixels with values 0..16, scaled to [0, 1]. ``layout="pixels"`` reads one pixel per step (64 steps
× 1 feature, row-major); ``layout="rows"`` reads one image row per step (8 steps × 8 features).
The class (0..9) is predicted from the last step.

The split is fixed: a seeded permutation that does not depend on the run seed, stratified by
class, gives ``n_test`` test and ``n_valid`` validation images (300 each by default) and the rest
(1,197) for training. The baseline predicts the training set's majority class (accuracy) and its
class prior (cross-entropy), both measured on the test split.

scikit-learn is imported only when the data is first needed (``pip install seqzoo[train]``).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from seqzoo.errors import ConfigError
from seqzoo.tasks.base import Task, TaskSpec, TensorDataset, check_int, class_prior_baseline, derive_seed
from seqzoo.tasks.registry import register_task

LAYOUTS = ("pixels", "rows")
N_IMAGES = 1797
N_CLASSES = 10


@functools.lru_cache(maxsize=1)
def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """All digits as ``(images (1797, 8, 8) float32 in [0, 1], labels (1797,) int64)``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the 'digits' task needs scikit-learn, which ships the data: "
                          "pip install 'seqzoo[train]' (or pip install scikit-learn)") from e
    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32) / 16.0
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    if images.shape != (N_IMAGES, 8, 8) or labels.shape != (N_IMAGES,):
        raise ValueError(f"sklearn digits: expected images (1797, 8, 8) and labels (1797,), "
                         f"got {tuple(images.shape)} and {tuple(labels.shape)}")
    return images, labels


def stratified_split(labels: torch.Tensor, n_valid: int, n_test: int, rng: np.random.RandomState
                     ) -> dict[str, torch.Tensor]:
    """Indices of train/valid/test with each class spread evenly over the three parts.

    Each example gets the key ``rank_within_class / class_size`` in a random order; sorting by that
    key interleaves the classes in proportion, so any prefix is close to stratified. The first
    ``n_test`` go to test, the next ``n_valid`` to valid, the rest to train.
    """
    perm = torch.as_tensor(rng.permutation(len(labels)), dtype=torch.long)
    lab = labels[perm]
    key = torch.empty(len(labels), dtype=torch.float64)
    for c in lab.unique():
        where = (lab == c).nonzero().squeeze(1)
        key[where] = torch.arange(len(where), dtype=torch.float64) / len(where)
    order = perm[torch.sort(key, stable=True).indices]
    return {"test": order[:n_test].sort().values,
            "valid": order[n_test:n_test + n_valid].sort().values,
            "train": order[n_test + n_valid:].sort().values}


@register_task
class DigitsTask(Task):
    """Classify scikit-learn's 8×8 digits read pixel by pixel (or row by row)."""

    name = "digits"
    version = 1
    fresh_train_data = False

    def __init__(self, layout: str = "pixels", n_valid: int = 300, n_test: int = 300) -> None:
        if layout not in LAYOUTS:
            raise ConfigError(f"digits: layout must be one of {LAYOUTS}, got {layout!r}")
        check_int("digits", "n_valid", n_valid, 1)
        check_int("digits", "n_test", n_test, 1)
        if n_valid + n_test > N_IMAGES - N_CLASSES:
            raise ConfigError(f"digits: n_valid + n_test must leave training images (at most "
                             f"{N_IMAGES - N_CLASSES} of {N_IMAGES}), got {n_valid} + {n_test}")
        super().__init__(layout=layout, n_valid=n_valid, n_test=n_test)
        self.layout, self.n_valid, self.n_test = layout, n_valid, n_test
        steps, d_input = (64, 1) if layout == "pixels" else (8, 8)
        self.spec = TaskSpec(input_kind="features", d_input=d_input, output_kind="per_sequence",
                             d_output=N_CLASSES, loss="cross_entropy", metrics=("accuracy", "cross_entropy"),
                             primary_metric="accuracy", higher_is_better=True, seq_len=steps,
                             extra={"layout": layout})

    def split_indices(self) -> dict[str, torch.Tensor]:
        """The fixed split: depends on the task version and split sizes, never on the run seed."""
        _, labels = load_digits_tensors()
        # numpy's legacy RandomState stream is frozen across numpy versions, so the split never moves.
        seed = derive_seed(self.name, self.version, "split", self.n_valid, self.n_test) % (1 << 32)
        return stratified_split(labels, self.n_valid, self.n_test, np.random.RandomState(seed))

    def dataset(self, split: str) -> TensorDataset:
        images, labels = load_digits_tensors()
        idx = self.split_indices()[split]
        x = images[idx]
        x = x.reshape(len(idx), 64, 1) if self.layout == "pixels" else x.reshape(len(idx), 8, 8)
        return TensorDataset({"inputs": x.contiguous(), "targets": labels[idx]})

    def baseline(self) -> dict[str, float]:
        return class_prior_baseline(self.build("train").tensors["targets"], self.build("test").tensors["targets"],
                                    N_CLASSES)

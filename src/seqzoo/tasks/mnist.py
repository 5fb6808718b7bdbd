"""Sequential MNIST on the MNIST-test subset: the 10,000 MNIST test images split 8,000 / 2,000.

Only MNIST's test file is available offline (``../shared/data/mnist-test``: the 60,000-image training file
is not in the snapshot), so this is the "MNIST-test subset", not the standard benchmark: a fixed stratified
split of those 10,000 images gives ``n_test`` (2,000) held-out test images, ``n_valid`` (1,000) validation
images taken from the other 8,000, and the rest (7,000) for training. Results on it must be labelled as such.

Layouts (Cooijmans et al. / Le et al.): ``pixels`` reads one pixel per step (784 steps × 1, row-major),
``rows`` one image row per step (28 steps × 28). ``pool`` > 1 averages ``pool × pool`` blocks first (``pool=2``:
14×14 images, 196 pixel steps) — a cheaper variant for small budgets, reported as such. ``permute=True`` applies
one fixed random permutation to the pixel order (pMNIST; independent of the run seed). Pixels are scaled to
[0, 1]; ``standardize=True`` then subtracts the training split's pixel mean and divides by its standard deviation
(one scalar each, after pooling): a plain LSTM's input weights start at U(±1/sqrt(H)), so [0, 1] pixels barely
move its gates at first, while a BatchNorm-ed input term is unchanged by the affine map. The baseline is the
training split's majority class (accuracy) and class prior (cross-entropy).

The IDX files are read from ``data_dir``, else ``$SEQZOO_DATA``, else ``./data`` / ``../shared/data``, in a folder
``mnist-test`` or the root itself; nothing is downloaded.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch

from seqzoo.errors import ConfigError
from seqzoo.tasks.base import Task, TaskSpec, TensorDataset, check_int, class_prior_baseline, derive_seed
from seqzoo.tasks.data_files import data_error, dataset_folder, find_file, read_bytes
from seqzoo.tasks.digits import stratified_split
from seqzoo.tasks.registry import register_task

IMAGES, LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
N_IMAGES, SIDE, N_CLASSES = 10_000, 28, 10
LAYOUTS = ("pixels", "rows")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as a uint8 array: big-endian magic ``0x0000 08 <ndim>``, then the sizes."""
    raw = read_bytes(path, "an IDX file of unsigned bytes, optionally gzip-compressed")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise data_error(path, f"not an IDX file of unsigned bytes (magic {raw[:4].hex() or 'missing'}, expected "
                         "0000 08 0N)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise data_error(path, f"the header of {ndim} sizes is cut short ({len(raw)} bytes); the file is truncated")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + math.prod(dims):
        raise data_error(path, f"header says {dims} ({math.prod(dims)} bytes of data) but the file holds "
                         f"{len(raw) - header} bytes after the header; the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


@functools.lru_cache(maxsize=2)
def load_mnist_test(folder: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images (10000, 28, 28) float32 in [0, 1], labels (10000,) int64)`` from the IDX files in ``folder``."""
    root = Path(folder)
    images = read_idx(find_file(root, IMAGES))
    labels = read_idx(find_file(root, LABELS))
    if images.shape != (N_IMAGES, SIDE, SIDE) or labels.shape != (N_IMAGES,):
        raise data_error(root, f"expected MNIST test images (10000, 28, 28) and labels (10000,), got "
                         f"{images.shape} and {labels.shape}")
    if int(labels.max()) >= N_CLASSES:
        raise data_error(root, f"labels must lie in 0..9, found {int(labels.max())}")
    return torch.from_numpy(images.astype(np.float32) / 255.0), torch.from_numpy(labels.astype(np.int64))


@register_task
class MNISTTestTask(Task):
    """Classify the MNIST-test subset read pixel by pixel (or row by row); see the module docstring."""

    name = "mnist-test"
    version = 1
    fresh_train_data = False

    def __init__(self, layout: str = "pixels", pool: int = 1, permute: bool = False, n_valid: int = 1000,
                 n_test: int = 2000, standardize: bool = False, data_dir: str | None = None) -> None:
        if layout not in LAYOUTS:
            raise ConfigError(f"mnist-test: layout must be one of {LAYOUTS}, got {layout!r}")
        check_int("mnist-test", "pool", pool, 1)
        if SIDE % pool:
            raise ConfigError(f"mnist-test: pool must divide 28 (1, 2, 4, 7, 14, 28), got {pool}")
        if not isinstance(permute, bool):
            raise ConfigError(f"mnist-test: permute must be true or false, got {permute!r}")
        if not isinstance(standardize, bool):
            raise ConfigError(f"mnist-test: standardize must be true or false, got {standardize!r}")
        check_int("mnist-test", "n_valid", n_valid, 1)
        check_int("mnist-test", "n_test", n_test, 1)
        if n_valid + n_test > N_IMAGES - 100 * N_CLASSES:
            raise ConfigError(f"mnist-test: n_valid + n_test must leave at least 1,000 training images, got "
                             f"{n_valid} + {n_test} of {N_IMAGES}")
        extra = {"standardize": True} if standardize else {}  # absent when off: older runs keep their identity
        super().__init__(layout=layout, pool=pool, permute=permute, n_valid=n_valid, n_test=n_test, **extra)
        self.folder = dataset_folder(data_dir, "mnist-test", [IMAGES, LABELS], "mnist-test")
        self.layout, self.pool, self.permute, self.standardize = layout, pool, permute, standardize
        self.n_valid, self.n_test = n_valid, n_test
        self.side = SIDE // pool
        steps, d_input = (self.side ** 2, 1) if layout == "pixels" else (self.side, self.side)
        self.spec = TaskSpec(input_kind="features", d_input=d_input, output_kind="per_sequence",
                             d_output=N_CLASSES, loss="cross_entropy", metrics=("accuracy", "cross_entropy"),
                             primary_metric="accuracy", higher_is_better=True, seq_len=steps,
                             extra={"layout": layout, "pool": pool, "permute": permute, **extra,
                                    "data": "MNIST-test subset (not the standard MNIST benchmark)"})

    def split_indices(self) -> dict[str, torch.Tensor]:
        """The fixed stratified split: depends on the task version and split sizes, never on the run seed."""
        _, labels = load_mnist_test(str(self.folder))
        seed = derive_seed(self.name, self.version, "split", self.n_valid, self.n_test) % (1 << 32)
        return stratified_split(labels, self.n_valid, self.n_test, np.random.RandomState(seed))

    def permutation(self) -> torch.Tensor | None:
        """The fixed pixel order of pMNIST (None without ``permute``)."""
        if not self.permute:
            return None
        seed = derive_seed(self.name, self.version, "permutation", self.side) % (1 << 32)
        return torch.as_tensor(np.random.RandomState(seed).permutation(self.side ** 2), dtype=torch.long)

    def _images(self, idx: torch.Tensor) -> torch.Tensor:
        """The images ``idx`` in [0, 1], pooled."""
        x = load_mnist_test(str(self.folder))[0][idx]
        if self.pool > 1:
            x = torch.nn.functional.avg_pool2d(x.unsqueeze(1), self.pool).squeeze(1)
        return x

    def dataset(self, split: str) -> TensorDataset:
        _, labels = load_mnist_test(str(self.folder))
        idx = self.split_indices()[split]
        x = self._images(idx)
        if self.standardize:  # the training split's statistics, for every split
            train = self._images(self.split_indices()["train"]).double()
            x = (x - float(train.mean())) / float(train.std())
        n = len(idx)
        if self.layout == "pixels":
            x = x.reshape(n, self.side ** 2)
            perm = self.permutation()
            x = (x[:, perm] if perm is not None else x).unsqueeze(-1)
        return TensorDataset({"inputs": x.contiguous(), "targets": labels[idx]})

    def baseline(self) -> dict[str, float]:
        return class_prior_baseline(self.build("train").tensors["targets"], self.build("test").tensors["targets"],
                                    N_CLASSES)

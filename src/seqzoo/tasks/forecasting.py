"""One-step-ahead forecasting of a single (multivariate) series, and real series as tasks (ARMA spec §6).

``ForecastTask`` turns one series ``y (n, k)`` into a task. The last ``test_fraction`` of the points is
the test period, the last ``valid_fraction`` of the rest the validation period, the remainder the
training period (the paper's 70/30 split with 30 % of the training part for validation).

* Training examples are windows of ``window`` consecutive points inside the training period: inputs
  ``y[s : s+w]``, targets ``y[s+1 : s+w+1]`` (the next value at every step), the state starts at zero in
  every window, and the first ``warmup`` steps of a window do not count (``loss_mask``).
* Validation and test are each ONE sequence: the whole history from the first point, with only the
  predictions of that period counted, so the model forecasts every point of the period one step ahead
  with all the past in its state (no truncation of the MA recursion).

Metrics are in the units of the series even when the model sees a standardized copy (``normalize``:
mean and std of the training period): ``mse``, ``mae`` and ``rmse``. ``mse``/``mae`` average over all
counted points of any number of batches; ``rmse`` is the square root of each sequence's mean squared
error averaged over sequences, which is exactly the RMSE of the period on the validation and test splits
(one sequence each) and an approximation on the training windows.

``baselines()`` measures on the test period the naive forecast (last value), the seasonal-naive forecast
(value one season earlier, when the series has a season) and the training mean; ``baseline()`` is the
naive one.

``forecast`` (registered) reads real series that ship inside pip packages, imported only when needed:
``sunspots`` (yearly, 309 points, season 11), ``co2`` (weekly Mauna Loa, 2,284 points with 59 gaps filled
by linear interpolation, season 52) and ``nile`` (yearly flow, 100 points) from statsmodels
(``pip install statsmodels``), ``airline`` (monthly passengers 1949–60, 144 points, season 12) from aeon
(``pip install aeon``); or ``series="file"`` with ``path`` to a CSV/text file of numbers (one column, or
pick ``column`` by header name or index).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from seqzoo.errors import ConfigError
from seqzoo.tasks.base import Batch, Task, TaskSpec, TensorDataset, check_int
from seqzoo.tasks.data_files import MissingDataError, data_error, read_text
from seqzoo.tasks.registry import register_task


def _check_fraction(task: str, name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ConfigError(f"{task}: {name} must be a number in (0, 1), got {value!r}")


class ForecastTask(Task):
    """Base: subclasses implement ``load_series() -> (n, k) float64 array`` and may set ``season``."""

    fresh_train_data = False
    non_data_params: tuple[str, ...] = ()
    season: int | None = None

    def _setup(self, window: int, stride: int, warmup: int, valid_fraction: float, test_fraction: float,
               normalize: bool) -> None:
        who = self.name
        check_int(who, "window", window, 1)
        check_int(who, "stride", stride, 1)
        check_int(who, "warmup", warmup, 0)
        if warmup >= window:
            raise ConfigError(f"{who}: warmup ({warmup}) must be < window ({window}) so every window counts a step")
        _check_fraction(who, "valid_fraction", valid_fraction)
        _check_fraction(who, "test_fraction", test_fraction)
        self.window, self.stride, self.warmup = window, stride, warmup
        self.valid_fraction, self.test_fraction, self.normalize = valid_fraction, test_fraction, normalize
        self._series: np.ndarray | None = None

    def load_series(self) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    # ----- the series and its periods ---------------------------------------------------------
    def series(self) -> np.ndarray:
        """The raw series ``(n, k)`` float64 (loaded once)."""
        if self._series is None:
            y = np.asarray(self.load_series(), dtype=np.float64)
            if y.ndim == 1:
                y = y[:, None]
            k = self.spec.d_input
            if y.ndim == 2 and y.shape[1] != k:
                raise ValueError(f"{self.name}: expected a series with {k} feature(s), got shape {y.shape}")
            if y.ndim != 2 or not np.isfinite(y).all():
                raise ValueError(f"{self.name}: the series must be a finite (n,) or (n, k) array, got shape {y.shape}"
                                 f"{'' if np.isfinite(y).all() else ' with non-finite values'}")
            self._series = y
        return self._series

    def boundaries(self) -> tuple[int, int, int]:
        """``(valid_start, test_start, n)``: target indices of the periods (train = targets 1..valid_start-1)."""
        n = self.series().shape[0]
        test_start = n - max(1, round(n * self.test_fraction))
        valid_start = test_start - max(1, round(test_start * self.valid_fraction))
        if valid_start - 1 < self.window:
            raise ConfigError(f"{self.name}: the training period has {valid_start} points, too few for windows of "
                             f"{self.window} (+1 target); use a smaller window or a longer series")
        return valid_start, test_start, n

    def scaling(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, scale)`` per feature of the training period (``(0, 1)`` without ``normalize``)."""
        y = self.series()
        k = y.shape[1]
        if not self.normalize:
            return np.zeros(k), np.ones(k)
        train = y[: self.boundaries()[0]]
        std = train.std(0)
        return train.mean(0), np.where(std > 0, std, 1.0)

    def _scaled(self) -> Tensor:
        mean, scale = self.scaling()
        return torch.as_tensor((self.series() - mean) / scale, dtype=torch.float32)

    def _spec(self, k: int, extra: dict[str, Any]) -> TaskSpec:
        """The spec of a k-feature series (built without loading the data; ``boundaries()`` gives the periods)."""
        return TaskSpec(input_kind="features", d_input=k, output_kind="masked_steps", d_output=k, loss="mse",
                        metrics=("mse", "mae", "rmse"), primary_metric="mse", seq_len=self.window,
                        extra={"season": self.season, "normalize": self.normalize, "window": self.window,
                               "warmup": self.warmup, "units": "metrics in the units of the series", **extra})

    # ----- data -------------------------------------------------------------------------------
    def dataset(self, split: str) -> TensorDataset:
        y = self._scaled()
        valid_start, test_start, n = self.boundaries()
        if split == "train":
            w = self.window
            starts = torch.arange(0, valid_start - w, self.stride)
            idx = starts[:, None] + torch.arange(w)[None, :]
            mask = torch.zeros(len(starts), w, dtype=torch.bool)
            mask[:, self.warmup:] = True
            return TensorDataset({"inputs": y[idx], "targets": y[idx + 1], "loss_mask": mask})
        end, first = (test_start, valid_start) if split == "valid" else (n, test_start)
        mask = torch.zeros(1, end - 1, dtype=torch.bool)
        mask[0, first - 1:] = True
        return TensorDataset({"inputs": y[None, : end - 1], "targets": y[None, 1:end], "loss_mask": mask})

    # ----- metrics ----------------------------------------------------------------------------
    def metric_sums(self, outputs: Tensor, batch: Batch) -> dict[str, tuple[float, float]]:
        targets = batch["targets"]
        if outputs.shape != targets.shape:
            raise ValueError(f"{self.name}: outputs {tuple(outputs.shape)} and targets {tuple(targets.shape)} "
                             "differ in shape")
        _, scale = self.scaling()
        diff = (outputs.detach().double() - targets.double()) * torch.as_tensor(scale, dtype=torch.float64)
        se, ae = diff.pow(2).mean(-1), diff.abs().mean(-1)
        mask = batch.get("loss_mask")
        m = torch.ones_like(se) if mask is None else mask.double()
        per_seq = m.sum(1)
        has = per_seq > 0
        rmse = ((se * m).sum(1)[has] / per_seq[has]).sqrt()
        return {"mse": (float((se * m).sum()), float(m.sum())), "mae": (float((ae * m).sum()), float(m.sum())),
                "rmse": (float(rmse.sum()), float(has.sum()))}

    @staticmethod
    def _errors(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
        d = pred - true
        mse = float((d ** 2).mean())
        return {"mse": mse, "mae": float(np.abs(d).mean()), "rmse": math.sqrt(mse)}

    def baselines(self, split: str = "test") -> dict[str, dict[str, float]]:
        """Naive, seasonal-naive (if the series has a season) and training-mean forecasts on a period."""
        if split not in ("valid", "test"):
            raise ConfigError(f"{self.name}: baselines are measured on 'valid' or 'test', got {split!r}")
        y = self.series()
        valid_start, test_start, n = self.boundaries()
        lo, hi = (valid_start, test_start) if split == "valid" else (test_start, n)
        true = y[lo:hi]
        out = {"naive": self._errors(y[lo - 1:hi - 1], true),
               "mean": self._errors(np.broadcast_to(y[:valid_start].mean(0), true.shape), true)}
        m = self.season
        if m and lo - m >= 0:
            out["seasonal_naive"] = self._errors(y[lo - m:hi - m], true)
        return out

    def baseline(self) -> dict[str, float]:
        return self.baselines("test")["naive"]


# ----- real series from pip packages ---------------------------------------------------------------

def _statsmodels_series(name: str) -> np.ndarray:
    try:
        from statsmodels import datasets
    except ImportError as e:
        raise ImportError(f"forecast series {name!r} ships with statsmodels, which is not installed: "
                          "pip install statsmodels") from e
    if name == "sunspots":
        return datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(dtype=np.float64)
    if name == "nile":
        return datasets.nile.load_pandas().data["volume"].to_numpy(dtype=np.float64)
    values = datasets.co2.load_pandas().data["co2"].to_numpy(dtype=np.float64, copy=True)
    gaps = ~np.isfinite(values)
    if gaps.any():  # linear interpolation over the gaps (none at the ends in this series)
        idx = np.arange(len(values))
        values[gaps] = np.interp(idx[gaps], idx[~gaps], values[~gaps])
    return values


def _aeon_airline() -> np.ndarray:
    try:
        from aeon.datasets import load_airline
    except ImportError as e:
        raise ImportError("forecast series 'airline' ships with aeon, which is not installed: pip install aeon") from e
    return np.asarray(load_airline(), dtype=np.float64).reshape(-1)


def read_series_file(path: str | os.PathLike, column: str | int | None = None) -> np.ndarray:
    """Numbers from a CSV / whitespace text file (optionally gzipped): an optional header line, then one row per
    time step; a malformed row is a ``DataError`` naming the file and line."""
    p = Path(path)
    if not p.is_absolute() and not p.exists() and os.environ.get("SEQZOO_DATA"):
        p = Path(os.environ["SEQZOO_DATA"]) / p
    if not p.is_file():
        raise MissingDataError(f"forecast: series file {str(p)!r} does not exist")
    rows: list[list[str]] = []
    line_of: list[int] = []
    header: list[str] | None = None
    for lineno, line in enumerate(read_text(p, "a CSV or whitespace-separated text file of numbers").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cells = [c.strip() for c in (line.split(",") if "," in line else line.split())]
        if header is None and not rows:
            try:
                [float(c) for c in cells]
            except ValueError:
                header = cells
                continue
        width = len(header) if header is not None else len(rows[0]) if rows else len(cells)
        if len(cells) != width:
            raise data_error(p, f"expected {width} columns{' (as in the header)' if header else ''}, got {len(cells)}",
                             lineno)
        rows.append(cells)
        line_of.append(lineno)
    if not rows:
        raise data_error(p, "holds no data rows")
    if column is None:
        if len(rows[0]) != 1:
            raise data_error(p, f"has {len(rows[0])} columns; pick one with column= (name or index)")
        col = 0
    elif isinstance(column, int):
        if not 0 <= column < len(rows[0]):
            raise data_error(p, f"column index {column} out of range for {len(rows[0])} columns")
        col = column
    else:
        if header is None or column not in header:
            raise data_error(p, f"column {column!r} not in the header ({header})")
        col = header.index(column)
    values = []
    for i, cells in enumerate(rows):
        try:
            value = float(cells[col])
        except ValueError:
            raise data_error(p, f"{cells[col]!r} is not a number (data row {i + 1})", line_of[i]) from None
        if not math.isfinite(value):
            raise data_error(p, f"{cells[col]!r} is not a finite number (data row {i + 1})", line_of[i])
        values.append(value)
    return np.asarray(values, dtype=np.float64)


SERIES = {"sunspots": 11, "co2": 52, "nile": None, "airline": 12, "file": None}
TRANSFORMS = ("none", "log")


@register_task
class RealSeriesTask(ForecastTask):
    """One-step-ahead forecasting of a real series (sunspots, co2, nile, airline or a file)."""

    name = "forecast"
    paper = "Schiele et al. 2022 (ARMA cell)"
    version = 1

    def __init__(self, series: str = "sunspots", path: str | None = None, column: str | int | None = None,
                 season: int | None = None, transform: str = "none", window: int = 24, stride: int = 1,
                 warmup: int = 2, valid_fraction: float = 0.3, test_fraction: float = 0.3,
                 normalize: bool = True) -> None:
        if series not in SERIES:
            raise ConfigError(f"forecast: series must be one of {sorted(SERIES)}, got {series!r}")
        if (series == "file") != (path is not None):
            raise ConfigError("forecast: give path= exactly when series='file'"
                             f" (got series={series!r}, path={path!r})")
        if transform not in TRANSFORMS:
            raise ConfigError(f"forecast: transform must be one of {TRANSFORMS}, got {transform!r}")
        if season is not None:
            check_int("forecast", "season", season, 1)
        super().__init__(series=series, path=path, column=column, season=season, transform=transform, window=window,
                         stride=stride, warmup=warmup, valid_fraction=valid_fraction, test_fraction=test_fraction,
                         normalize=normalize)
        self.series_name, self.path, self.column, self.transform = series, path, column, transform
        self.season = season if season is not None else SERIES[series]
        self._setup(window, stride, warmup, valid_fraction, test_fraction, normalize)
        self.spec = self._spec(1, {"series": series, "transform": transform})

    def load_series(self) -> np.ndarray:
        if self.series_name == "file":
            y = read_series_file(self.path, self.column)  # type: ignore[arg-type]
        elif self.series_name == "airline":
            y = _aeon_airline()
        else:
            y = _statsmodels_series(self.series_name)
        if self.transform == "log":
            if (y <= 0).any():
                raise ConfigError(f"forecast: transform='log' needs a positive series; {self.series_name} has values "
                                 f"<= 0 (min {y.min()})")
            y = np.log(y)
        return y

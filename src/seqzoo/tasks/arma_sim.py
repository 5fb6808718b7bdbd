"""Simulated series of the ARMA-cell paper as forecasting tasks (Schiele et al. 2022; spec §6.2).

Processes (``ε_t`` i.i.d. N(0, σ²); σ = 2 for ``arma``, 1 otherwise unless ``sigma`` is given):

* ``arma``: ``y_t = c + Σ β_i y_{t-i} + ε_t + Σ γ_j ε_{t-j}`` (default ARMA(2,1): β = (0.1, 0.3),
  γ = (−0.4,), σ = 2, c = 0; the AR part must be stationary);
* ``tar``: ``y_t = 0.9 y_{t-1} + ε_t`` if ``|y_{t-1}| ≤ 1``, else ``−0.3 y_{t-1} + ε_t``. The paper's
  simulator tests ``|y_t|`` (still 0 when tested), so its "TAR" series is an AR(1) with 0.9; here the
  threshold is applied to ``y_{t-1}`` as intended;
* ``sgn``: ``y_t = sign(y_{t-1}) + ε_t``;
* ``nar``: ``y_t = 0.7 |y_{t-1}| / (|y_{t-1}| + 2) + ε_t``;
* ``hetero_ma``: ``y_t = ε_t − 0.4 ε_{t-1} + 0.3 ε_{t-2} + 0.5 ε_{t-1} ε_{t-2}``;
* ``sq`` and ``exp`` (two series ``(x, y)``): ``x_t = 0.6 x_{t-1} + e_t`` and ``y_t = x_t² + ε_t`` or
  ``y_t = exp(x_t) + ε_t``, with ``e_t`` N(0, 1).

Every series is simulated with ``burn_in`` extra leading points that are dropped, from a seed fixed by
(task version, parameters, ``series_seed``) through numpy's frozen legacy ``RandomState`` stream.

Besides the naive baselines of ``ForecastTask``, ``baselines()`` reports ``oracle``: the true
conditional mean given the past (and the true past innovations), whose MSE is the noise floor (σ² in
expectation; RMSE ≈ 2.0 for the default ARMA).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from seqzoo.errors import ConfigError
from seqzoo.tasks.base import check_int, derive_seed
from seqzoo.tasks.forecasting import ForecastTask
from seqzoo.tasks.registry import register_task

PROCESSES = ("arma", "tar", "sgn", "nar", "hetero_ma", "sq", "exp")
N_SERIES = {"sq": 2, "exp": 2}


def check_stationary(ar: Sequence[float]) -> None:
    """Raise unless ``1 − Σ β_i z^i`` has all roots outside the unit circle."""
    if not len(ar):
        return
    companion = np.zeros((len(ar), len(ar)))
    companion[0] = ar
    companion[1:, :-1] = np.eye(len(ar) - 1)
    radius = float(np.abs(np.linalg.eigvals(companion)).max())
    if radius >= 1.0:
        raise ConfigError(f"arma: ar={list(ar)} is not stationary (largest root of the AR polynomial has modulus "
                         f"{radius:.3f} >= 1 in 1/z); choose coefficients with all roots inside the unit circle")


def simulate_arma(ar: Sequence[float], ma: Sequence[float], n: int, *, sigma: float = 1.0, intercept: float = 0.0,
                  rng: np.random.RandomState, burn_in: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """``(y, ε)`` of length n of ``y_t = c + Σ β_i y_{t-i} + ε_t + Σ γ_j ε_{t-j}`` after ``burn_in`` points."""
    check_stationary(ar)
    total = n + burn_in
    eps = sigma * rng.standard_normal(total)
    y = np.zeros(total)
    p, q = len(ar), len(ma)
    for t in range(total):
        v = intercept + eps[t]
        for i in range(1, p + 1):
            if t - i >= 0:
                v += ar[i - 1] * y[t - i]
        for j in range(1, q + 1):
            if t - j >= 0:
                v += ma[j - 1] * eps[t - j]
        y[t] = v
    return y[burn_in:], eps[burn_in:]


def simulate(process: str, n: int, rng: np.random.RandomState, *, sigma: float | None = None,
             ar: Sequence[float] = (0.1, 0.3), ma: Sequence[float] = (-0.4,), intercept: float = 0.0,
             burn_in: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """``(series (n, k), oracle one-step predictions (n, k))`` of a process; oracle[t] = E[y_t | past]."""
    if process not in PROCESSES:
        raise ConfigError(f"unknown process {process!r}; valid: {', '.join(PROCESSES)}")
    s = sigma if sigma is not None else (2.0 if process == "arma" else 1.0)
    if process == "arma":
        y, eps = simulate_arma(ar, ma, n, sigma=s, intercept=intercept, rng=rng, burn_in=burn_in)
        return y[:, None], (y - eps)[:, None]
    total = n + burn_in
    eps = s * rng.standard_normal(total)
    if process in N_SERIES:
        e = rng.standard_normal(total)
        x, y = np.zeros(total), np.zeros(total)
        mean = np.zeros((total, 2))
        for t in range(total):
            prev = x[t - 1] if t > 0 else 0.0
            x[t] = 0.6 * prev + e[t]
            y[t] = (x[t] ** 2 if process == "sq" else math.exp(x[t])) + eps[t]
            m = 0.6 * prev
            mean[t] = (m, m * m + 1.0) if process == "sq" else (m, math.exp(m + 0.5))
        return np.stack([x, y], 1)[burn_in:], mean[burn_in:]
    y, mean = np.zeros(total), np.zeros(total)
    for t in range(total):
        prev = y[t - 1] if t > 0 else 0.0
        if process == "tar":
            m = 0.9 * prev if abs(prev) <= 1.0 else -0.3 * prev
        elif process == "sgn":
            m = float(np.sign(prev))
        elif process == "nar":
            m = 0.7 * abs(prev) / (abs(prev) + 2.0)
        else:  # hetero_ma
            e1 = eps[t - 1] if t >= 1 else 0.0
            e2 = eps[t - 2] if t >= 2 else 0.0
            m = -0.4 * e1 + 0.3 * e2 + 0.5 * e1 * e2
        y[t] = m + eps[t]
        mean[t] = m
    return y[burn_in:, None], mean[burn_in:, None]


@register_task
class ARMASimTask(ForecastTask):
    """One-step-ahead forecasting of a simulated ARMA / TAR / SGN / NAR / heteroskedastic-MA / SQ / EXP series."""

    name = "arma_sim"
    paper = "Schiele et al. 2022 (ARMA cell)"
    version = 1

    def __init__(self, process: str = "arma", n: int = 1000, ar: Sequence[float] = (0.1, 0.3),
                 ma: Sequence[float] = (-0.4,), sigma: float | None = None, intercept: float = 0.0,
                 series_seed: int = 0, burn_in: int = 50, window: int = 20, stride: int = 1, warmup: int = 2,
                 valid_fraction: float = 0.3, test_fraction: float = 0.3, normalize: bool = False) -> None:
        if process not in PROCESSES:
            raise ConfigError(f"arma_sim: process must be one of {PROCESSES}, got {process!r}")
        check_int("arma_sim", "n", n, 10)
        check_int("arma_sim", "series_seed", series_seed, 0)
        check_int("arma_sim", "burn_in", burn_in, 0)
        ar_list, ma_list = self._coefficients("ar", ar), self._coefficients("ma", ma)
        if sigma is not None and not (isinstance(sigma, (int, float)) and sigma > 0 and math.isfinite(sigma)):
            raise ConfigError(f"arma_sim: sigma must be a positive number or None, got {sigma!r}")
        if process == "arma":
            check_stationary(ar_list)
        super().__init__(process=process, n=n, ar=ar_list, ma=ma_list, sigma=sigma, intercept=float(intercept),
                         series_seed=series_seed, burn_in=burn_in, window=window, stride=stride, warmup=warmup,
                         valid_fraction=valid_fraction, test_fraction=test_fraction, normalize=normalize)
        self.process = process
        self._setup(window, stride, warmup, valid_fraction, test_fraction, normalize)
        self._oracle: np.ndarray | None = None
        self.spec = self._spec(N_SERIES.get(process, 1), {"process": process})

    @staticmethod
    def _coefficients(name: str, values: Sequence[float]) -> list[float]:
        try:
            out = [float(v) for v in values]
        except (TypeError, ValueError):
            raise ConfigError(f"arma_sim: {name} must be a list of numbers, got {values!r}") from None
        if not all(math.isfinite(v) for v in out):
            raise ConfigError(f"arma_sim: {name} must hold finite numbers, got {values!r}")
        return out

    def _simulate(self) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        # the series depends only on the process parameters, not on how it is cut into windows and periods
        keys = ("process", "n", "ar", "ma", "sigma", "intercept", "series_seed", "burn_in")
        seed = derive_seed(self.name, self.version, {k: p[k] for k in keys}) % (1 << 32)
        return simulate(self.process, p["n"], np.random.RandomState(seed), sigma=p["sigma"], ar=p["ar"], ma=p["ma"],
                        intercept=p["intercept"], burn_in=p["burn_in"])

    def load_series(self) -> np.ndarray:
        y, self._oracle = self._simulate()
        return y

    def oracle(self) -> np.ndarray:
        """``E[y_t | past]`` for every t (the true one-step predictor), shape (n, k)."""
        if self._oracle is None:
            self.series()
        return self._oracle  # type: ignore[return-value]

    def baselines(self, split: str = "test") -> dict[str, dict[str, float]]:
        out = super().baselines(split)
        valid_start, test_start, n = self.boundaries()
        lo, hi = (valid_start, test_start) if split == "valid" else (test_start, n)
        out["oracle"] = self._errors(self.oracle()[lo:hi], self.series()[lo:hi])
        return out

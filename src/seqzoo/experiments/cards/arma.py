"""Card ``arma``: the ARMA cell (Schiele, Berninger & Rügamer 2022; spec §6).

Three experiments (spec §6.2 and §6.4):

* ``recovery``: a linear ARMA(2,2) cell trained with Adam on a simulated ARMA(2,2) series
  (β = (0.1, 0.3), γ = (−0.4, −0.2), σ = 2, n = 25,000); the fitted coefficients of the model's
  predictor must lie within 0.05 of statsmodels' ARIMA(2,0,2) estimates on the same training period.
  The reference fit is computed by the claim itself from the task's series (statsmodels missing -> the
  claim is undecided, never faked).
* ``arma21``: simulated ARMA(2,1) (β = (0.1, 0.3), γ = (−0.4,), σ = 2, n = 1,000, the paper's 70/30 split):
  the linear ARMA(2,1) cell should come close to the noise floor (spec §6.4: "close to 2.0 (≲2.1)", i.e. within
  ``NEAR_FLOOR`` = 0.1 of it) and not be worse than a small LSTM / GRU. The floor that the 300 test points give is
  the RMSE of the true conditional mean on them (``arma_sim``'s ``oracle`` baseline: 2.090 here, not 2.0), so the
  claim measures the cell against that oracle; the first wording, RMSE ≤ 2.1 against the population floor, is
  kept as the observation ``arma21_rmse_le_2.1`` (issue 20: its bar lay 0.01 above this test period's floor).
  The paper's own tables were not retrieved (spec §6.3).
* ``real``: sunspots and Nile flow (statsmodels; the airline series needs aeon and is left out): ARMA cell
  vs LSTM and GRU, RMSE and MAE in the units of the series, against the naive / seasonal-naive forecasts.
  The linear ARMA cell is trained at every order p = q in 1..4 and each seed keeps the order with the lowest
  validation RMSE (the official script's protocol, spec §6.2). Until 2026-12-07 the card fixed p = q = 2 and
  trained 400 steps: the claim was NOT HELD on sunspots (ARMA(2,2) 21.21, at statsmodels' ARIMA(2,0,2) 21.27,
  vs LSTM 18.78); seeds now pick p = q = 4, 4, 3 there (20.63) and the claim holds narrowly (1.098 x the LSTM;
  docs/results/arma-small.md). The real series train 2,000 steps with a validation checkpoint every
  ``REAL_EVAL_EVERY`` steps: the RNNs overfit them within 100-200 steps. The paper's claim is qualitative
  ("competitive with popular alternatives");
  here competitive means a test RMSE within 10 % of the better recurrent network (the card's margin).

The models see the raw series through the preset's linear head (``SequenceModel`` always has one), so the
forecast is ``z = w ŷ + b`` with ``ŷ`` the cell's output. The cell's own coefficients (``coef_ar1`` ...) are
the classical ones only when ``w = 1``; the model folds its head into them (``model_coef_ar1`` ...: input
kernels ``w B̆_i``, intercept ``b (1 - Σ Γ̆_j) + w c``; exact, tested), and those — the coefficients of the
predictor that is actually evaluated — are what the recovery claim judges. The cell-only numbers and the
head weight are reported next to them.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from seqzoo.experiments.card import (
    Claim,
    ClaimResult,
    Entry,
    ExperimentCard,
    MissingResult,
    Plot,
    Results,
    Scale,
    Stat,
)
from seqzoo.experiments.claims import all_held, compare, threshold
from seqzoo.experiments.registry import register_experiment

RECOVERY_AR, RECOVERY_MA = (0.1, 0.3), (-0.4, -0.2)
COEFS = ("model_coef_ar1", "model_coef_ar2", "model_coef_ma1", "model_coef_ma2")  # the head folded in
CELL_COEFS = ("coef_ar1", "coef_ar2", "coef_ma1", "coef_ma2")  # the cell alone (= COEFS when the head is 1)
SERIES = ("sunspots", "nile")
RNNS = ("lstm", "gru")
TOL = 0.05
NEAR_FLOOR = 0.1  # spec §6.4: test RMSE "close to 2.0 (≲2.1)" with noise floor σ = 2: within 0.1 of the floor
ORDERS = (1, 2, 3, 4)  # spec §6.2: the paper selects p = q in 1..4 on validation
SELECT_SPLIT = "valid"  # the split that chooses the ARMA cell's order on the real series
REAL_EVAL_EVERY = 100  # steps between validation checkpoints on the real series (best-validation checkpoint)


def _recovery_task_args(n: int) -> dict[str, Any]:
    return {"process": "arma", "n": n, "ar": list(RECOVERY_AR), "ma": list(RECOVERY_MA), "sigma": 2.0,
            "window": 50, "warmup": 10, "stride": 5, "valid_fraction": 0.1, "test_fraction": 0.1}


def _entries(n_rec: int, rec_steps: int, sim_steps: int, real_steps: int, rnn_width: int) -> list[Entry]:
    lin = {"activation": "identity", "bias": False}
    out = [Entry(model="arma", task="arma_sim", model_args={"layer_kwargs": {"p": 2, "q": 2, **lin}},
                 task_args=_recovery_task_args(n_rec), labels={"exp": "recovery", "arch": "arma"},
                 train={"steps": rec_steps, "batch_size": 200, "eval_every": max(1, rec_steps // 2)})]
    sim = {"process": "arma", "n": 1000, "window": 20, "warmup": 2}
    out.append(Entry(model="arma", task="arma_sim", model_args={"layer_kwargs": {"p": 2, "q": 1, **lin}},
                     task_args=sim, labels={"exp": "arma21", "arch": "arma"},
                     train={"steps": sim_steps, "eval_every": max(1, sim_steps // 4)}))
    for arch in RNNS:
        out.append(Entry(model=arch, task="arma_sim", model_args={"d_model": rnn_width, "n_layers": 1},
                         task_args=sim, labels={"exp": "arma21", "arch": arch},
                         train={"steps": sim_steps, "eval_every": max(1, sim_steps // 4)}))
    # validation every 100 steps at most: the RNNs overfit the short series within 100-200 steps (the paper
    # stops early on validation loss), so a coarser grid of checkpoints judges them past their best
    real_train = {"steps": real_steps, "eval_every": max(1, min(REAL_EVAL_EVERY, real_steps // 4))}
    for series in SERIES:
        task_args = {"series": series, "window": 24}
        for order in ORDERS:  # one entry per order; the claim picks the order on validation
            out.append(Entry(model="arma", task="forecast",
                             model_args={"layer_kwargs": {"p": order, "q": order, "activation": "identity"}},
                             task_args=task_args, labels={"exp": "real", "series": series, "arch": "arma",
                                                          "order": order}, train=real_train))
        for arch in RNNS:
            out.append(Entry(model=arch, task="forecast", model_args={"d_model": rnn_width, "n_layers": 1},
                             task_args=task_args, labels={"exp": "real", "series": series, "arch": arch},
                             train=real_train))
    return out


# ----- claims ------------------------------------------------------------------------------------------
def statsmodels_reference(task_args: dict[str, Any]) -> np.ndarray:
    """statsmodels' ARIMA(2,0,2) (no trend) estimates ``[β1, β2, γ1, γ2]`` on the task's training period."""
    from statsmodels.tsa.arima.model import ARIMA

    from seqzoo.tasks import create_task

    task = create_task("arma_sim", **task_args)
    y = task.series()[: task.boundaries()[0], 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' convergence chatter
        fit = ARIMA(y, order=(2, 0, 2), trend="n").fit(method="innovations_mle")
    return np.asarray(fit.params[:4], dtype=float)


def _check_recovery(results: Results) -> ClaimResult:
    hit = results.find(exp="recovery")
    if hit is None:
        return ClaimResult(None, {}, "no recovery run")
    est = {c: results.stat(c, exp="recovery") for c in COEFS}
    try:
        ref = statsmodels_reference(dict(hit.entry.task_args))
    except ImportError:
        return ClaimResult(None, {c: round(s.mean, 4) for c, s in est.items()},
                           "statsmodels is not installed (pip install statsmodels): no reference estimates")
    n_seeds = min(s.n for s in est.values())
    worst = max(abs(v - r) for c, r in zip(COEFS, ref) for v in est[c].values)
    short = {c: c.rsplit("_", 1)[-1] for c in COEFS}
    numbers = {**{f"model_{short[c]}": round(est[c].mean, 4) for c in COEFS},
               **{f"arima_{short[c]}": round(float(r), 4) for c, r in zip(COEFS, ref)},
               "max_abs_diff_any_seed": round(worst, 4), "seeds": n_seeds,
               "true": list(RECOVERY_AR + RECOVERY_MA)}
    for c in CELL_COEFS:  # the cell alone, before the head is folded in (reported, not judged)
        if hit.metrics.get(results.split, {}).get(c) is not None:
            numbers[f"cell_only_{c[5:]}"] = round(results.stat(c, exp="recovery").mean, 4)
    model = ", ".join(f"{short[c]}={est[c]}" for c in COEFS)
    arima = ", ".join(f"{short[c]}={r:.4f}" for c, r in zip(COEFS, ref))
    return ClaimResult(worst < TOL, numbers, f"model (head folded in) {model}; ARIMA {arima}; largest |model - "
                                             f"ARIMA| over coefficients and {n_seeds} seeds {worst:.4f} (held if < "
                                             f"{TOL})")


def _check_rmse_floor(results: Results) -> ClaimResult:
    s = results.stat("rmse", exp="arma21", arch="arma")
    return threshold(results, {"exp": "arma21", "arch": "arma"}, "<=", 2.1, metric="rmse",
                     numbers={"arma_rmse": round(s.mean, 4), "std": round(s.std, 4)})


def oracle_rmse(task_args: dict[str, Any]) -> float:
    """Test RMSE of the true conditional mean (``arma_sim``'s oracle) on the task's test period: the floor there."""
    from seqzoo.tasks import create_task

    return float(create_task("arma_sim", **task_args).baselines("test")["oracle"]["rmse"])


def _check_near_oracle(results: Results) -> ClaimResult:
    hit = results.find(exp="arma21", arch="arma")
    if hit is None:
        return ClaimResult(None, {}, "no ARMA(2,1) run of the ARMA cell")
    oracle = oracle_rmse(dict(hit.entry.task_args))
    s = results.stat("rmse", exp="arma21", arch="arma")
    numbers = {"arma_rmse": round(s.mean, 4), "std": round(s.std, 4), "oracle_rmse": round(oracle, 4),
               "arma_minus_oracle": round(s.mean - oracle, 4), "bar": round(oracle + NEAR_FLOOR, 4)}
    return threshold(results, {"exp": "arma21", "arch": "arma"}, "<=", oracle + NEAR_FLOOR, metric="rmse",
                     numbers=numbers)


def _check_not_worse(results: Results) -> ClaimResult:
    n = {a: round(results.mean("rmse", exp="arma21", arch=a), 4) for a in ("arma", *RNNS)}
    return compare(results, "arma", RNNS, "<=", where={"exp": "arma21"}, metric="rmse", factor=1.01, numbers=n)


def real_baselines(series: str) -> dict[str, dict[str, float]]:
    """Naive / seasonal-naive / mean test errors of a real series (the card's task arguments)."""
    from seqzoo.tasks import create_task

    return create_task("forecast", series=series, window=24).baselines("test")


def chosen_orders(results: Results, series: str) -> tuple[list[int], Stat]:
    """The ARMA cell on a real series with its order chosen on validation, one choice per seed.

    Each seed takes the order p = q with its lowest validation RMSE (the official script picks p = q in 1..4 by
    validation loss in every repetition, spec §6.2); returns the chosen orders (in seed order) and the test RMSE
    of the chosen runs.
    """
    orders = results.label_values("order", exp="real", series=series, arch="arma")
    if not orders:
        raise MissingResult(f"no ARMA cell run on {series}")
    per_order = {}
    for o in orders:
        hit = results.find(exp="real", series=series, arch="arma", order=o)
        valid, test = results.stat("rmse", SELECT_SPLIT, **hit.entry.labels), results.stat("rmse", "test",
                                                                                           **hit.entry.labels)
        per_order[o] = {seed: (v, t) for seed, v, t in zip(hit.seeds, valid.values, test.values)}
    seeds = sorted(set.intersection(*(set(d) for d in per_order.values())))
    if not seeds:
        raise MissingResult(f"no seed of the ARMA cell on {series} has a run at every order")
    picks = [min(orders, key=lambda o: per_order[o][seed][0]) for seed in seeds]
    return picks, Stat.of(per_order[o][seed][1] for o, seed in zip(picks, seeds))


def _real_numbers(results: Results) -> dict[str, Any]:
    numbers: dict[str, Any] = {}
    for series in SERIES:
        picks, chosen = chosen_orders(results, series)
        r = {"arma": chosen.mean, **{a: results.mean("rmse", exp="real", series=series, arch=a) for a in RNNS}}
        by_order = {o: {s: round(results.mean("rmse", s, exp="real", series=series, arch="arma", order=o), 3)
                        for s in (SELECT_SPLIT, "test")}
                    for o in results.label_values("order", exp="real", series=series, arch="arma")}
        try:
            bl = {k: round(v["rmse"], 3) for k, v in real_baselines(series).items() if k != "mean"}
        except ImportError:
            bl = {}
        numbers[series] = {"orders": picks, "rmse": {a: round(v, 3) for a, v in r.items()},
                           "arma_vs_best_rnn": round(r["arma"] / min(r[a] for a in RNNS), 4),
                           "baseline_rmse": bl, "best": min(r, key=lambda a: r[a]), "arma_by_order": by_order}
    return numbers


def _check_real(results: Results) -> ClaimResult:
    parts = []
    for series in SERIES:
        picks, arma_rmse = chosen_orders(results, series)
        rnn = {a: results.stat("rmse", exp="real", series=series, arch=a) for a in RNNS}
        best = min(rnn, key=lambda a: rnn[a].mean)
        others = ", ".join(f"{a} {st}" for a, st in rnn.items())
        parts.append((arma_rmse.mean <= 1.1 * rnn[best].mean,
                      f"series={series}: arma (p = q chosen on validation per seed: {picks}) {arma_rmse} vs {others}"))
    return all_held(parts, _real_numbers(results), "arma <= 1.1 x the best of lstm/gru on every series")


# ----- plot --------------------------------------------------------------------------------------------
def _draw(results: Results, path: Path) -> None:
    from seqzoo.experiments.plots import Ref, bars, cells, grouped_bars, panels, save

    fig, axes = panels(3, width=3.7)
    names = dict(zip(COEFS, ["β1", "β2", "γ1", "γ2"]))
    bars(axes[0], [(names[c], results.get(c, exp="recovery")) for c in COEFS], title="ARMA(2,2) recovery")
    axes[0].plot(range(len(COEFS)), RECOVERY_AR + RECOVERY_MA, "x", color="k", label="true")
    axes[0].legend(fontsize=7)
    bars(axes[1], cells(results, "arch", ("arma", *RNNS), metric="rmse", exp="arma21"),
         refs=[Ref(2.0, "noise floor")], ylim=(1.8, None), title="ARMA(2,1) sim", ylabel="test RMSE")

    def relative(series: str, arch: str) -> float:
        try:
            rmse = chosen_orders(results, series)[1].mean if arch == "arma" else \
                results.mean("rmse", exp="real", series=series, arch=arch)
            return rmse / real_baselines(series)["naive"]["rmse"]
        except Exception:  # missing run or statsmodels: leave a gap
            return float("nan")

    grouped_bars(axes[2], SERIES, {a: [relative(s, a) for s in SERIES] for a in ("arma", *RNNS)},
                 refs=[Ref(1.0)], title="real series (RMSE / naive)")
    save(fig, path)


_TRAIN = {"batch_size": 50, "optimizer": "adam", "lr": 1e-2, "clip_norm": 1.0}

CARD = register_experiment(ExperimentCard(
    name="arma",
    title="ARMA cell: parameter recovery, simulated ARMA(2,1), and real series vs LSTM/GRU",
    paper="Schiele, Berninger & Rügamer, ARMA Cell: A Modular and Effective Approach for Neural Autoregressive "
          "Modeling (arXiv 2208.14919, 2022)",
    description="Linear ARMA cell coefficients vs statsmodels ARIMA on a simulated ARMA(2,2); ARMA(2,1) test RMSE vs "
                "the noise floor and small LSTM/GRU; sunspots and Nile: ARMA cell vs LSTM/GRU vs naive forecasts.",
    grid=lambda: _entries(25_000, 12_500, 2000, 2000, 5),
    metric="rmse",
    split="test",
    scales={
        "tiny": Scale(train={**_TRAIN, "batch_size": 16}, grid=lambda: _entries(2000, 4, 4, 4, 2),
                      note="plumbing only: 4 steps per run", expected_seconds=20),
        "small": Scale(train=_TRAIN, seeds=(0, 1, 2), workers=2, expected_seconds=240,
                       grid=lambda: _entries(25_000, 1000, 600, 2000, 5),
                       note="recovery n=25,000, 1,000 Adam steps of batch 200 "
                            "(about 50 epochs of the 4,040 training windows); "
                            "ARMA(2,1) 600 steps; real series 2,000 steps, ARMA cell p = q in 1-4 (chosen on "
                            "validation); LSTM/GRU width 5; 3 seeds"),
        "paper": Scale(train=_TRAIN, seeds=(0, 1, 2), grid=None, workers=2,
                       note="recovery about 100 epochs of batch 200 (12,500 steps, window 50); 2,000 steps "
                            "elsewhere (defined, not run)"),
    },
    claims=[
        Claim("recovery_within_0.05_of_arima", "A linear ARMA(2,2) cell recovers coefficients within 0.05 of "
              "statsmodels' ARIMA(2,0,2) estimates on the same series (the paper's unit test).", _check_recovery),
        Claim("arma21_near_oracle", f"On simulated ARMA(2,1) (sigma 2) the ARMA cell's test RMSE is within "
              f"{NEAR_FLOOR:g} of the floor of the same test period, the true conditional mean's RMSE (spec §6.4: "
              "'close to 2.0 (<~2.1)' for noise floor 2.0; the paper's tables were not retrieved).",
              _check_near_oracle),
        Claim("arma21_not_worse_than_rnn", "On simulated ARMA(2,1) the ARMA cell is not worse than a small "
              "LSTM/GRU.", _check_not_worse),
        Claim("real_competitive_with_rnn", "On real series (sunspots, Nile) the ARMA cell, its order p = q in 1-4 "
              "chosen on validation per seed as in the paper, is competitive with LSTM/GRU (test RMSE within 10% of "
              "the better one; the paper states no margin).", _check_real),
    ],
    observations=[
        Claim("arma21_rmse_le_2.1", "On simulated ARMA(2,1) (sigma 2) the ARMA cell's test RMSE is <= 2.1 (the "
              "first wording: against the population floor 2.0, not this test period's floor).", _check_rmse_floor),
    ],
    plots=[Plot("overview", _draw, "Recovered coefficients per seed; ARMA(2,1) test RMSE; real-series RMSE relative "
                                   "to the naive forecast.")],
))

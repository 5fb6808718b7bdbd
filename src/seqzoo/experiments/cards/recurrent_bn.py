"""Card ``recurrent-bn``: LSTM vs recurrent-BatchNorm LSTM on pixel-by-pixel digits (spec §3.2–3.3).

Cooijmans et al., "Recurrent Batch Normalization" (arXiv 1603.09025). The paper's sequential-MNIST
claim is that BN-LSTM converges faster and ends at least as accurate. Two offline datasets:

* ``digits``: scikit-learn's 8×8 digits read one pixel per step (64 steps; the spec's §3.3 stand-in).
* ``mnist14``: the MNIST-test subset (``../shared/data/mnist-test``: only MNIST's 10,000 test images are
  available offline, split 7,000 train / 1,000 valid / 2,000 test by the ``mnist-test`` task — reported as
  "MNIST-test subset", not the standard benchmark), 2×2-average-pooled to 14×14 and read one pixel per step
  (196 steps) at small scale to fit the budget; the ``paper`` grid reads the full 784-pixel sequence.

H = 64 (paper: 100), batch 64, RMSprop lr 1e-3, gradient clipping 1.0. BN uses per-time-step statistics,
γ = 0.1, the gate bias as the shift of the recurrent term (the ``lstm_bn`` preset). As in the official code
(github.com/cooijmanstim/recurrent-batch-normalization, ``sequential_mnist.py`` and
``experiments/sequentialmnist_bnlstm.sh``): the forget-gate bias starts at 1 for every arch, and the BN-LSTM
(ε = 1e-5) gets Gaussian noise of std 0.1 on h_0 in training (``--noise 0.1``; without it the backward through
the blank first pixels overflows, docs/results/recurrent-bn-small.md). ``lstm_bn_eps`` is the spec's other remedy
(ε = 1e-3, no noise). MNIST pixels are standardized with the training split's mean and std (``standardize``), so
the plain LSTM's input term is not tiny; the BN-LSTM's normalized input term is unchanged by that map. The
BN-LSTMs are evaluated with the paper's population statistics: before every evaluation they are re-estimated on
the weights being evaluated as the average of the batch statistics of 20 training batches (``refit_batches``, as
the official ``sequential_mnist_evaluate.py`` does over the whole training set); the EMA kept in training lagged
the fast-moving weights.

"Converges faster" is measured as test accuracy after an early budget (a quarter of the steps): the
training batches are a pure function of (seed, step) and the learning rate is constant, so the early
run is exactly the first quarter of the full run, evaluated on its own best validation checkpoint. Each
claim must hold on every dataset in the grid; the numbers are reported per dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqzoo.experiments.card import (
    Cause,
    Claim,
    ClaimResult,
    Entry,
    ExperimentCard,
    MissingResult,
    Plot,
    Results,
    Scale,
)
from seqzoo.experiments.claims import combine, compare
from seqzoo.experiments.registry import register_experiment

# arch label -> (preset, layer kwargs). The official code's forget-gate bias 1 for all; the BN-LSTM with the paper's
# ε = 1e-5 and its h_0 noise (std 0.1); "lstm_bn_eps" is the spec's other remedy for zero-variance time steps
# (§3.4: "add noise to h_0 or use a larger ε"): ε = 1e-3 and no noise.
# Both BN-LSTMs are evaluated with the paper's population statistics: re-estimated before every evaluation on the
# weights being evaluated, as the average of the batch statistics of REFIT_BATCHES training batches (the EMA of
# training lagged the weights: 0.10-0.34 vs 0.60-0.63 test accuracy at 400 MNIST steps; recurrent-bn-small.md).
FORGET_BIAS, H0_NOISE, REFIT_BATCHES = 1.0, 0.1, 20
ARCHS = {"lstm": ("lstm", {"forget_bias": FORGET_BIAS}),
         "lstm_bn": ("lstm_bn", {"forget_bias": FORGET_BIAS, "h0_noise": H0_NOISE,
                                 "norm_kwargs": {"refit_batches": REFIT_BATCHES}}),
         "lstm_bn_eps": ("lstm_bn", {"forget_bias": FORGET_BIAS,
                                     "norm_kwargs": {"eps": 1e-3, "refit_batches": REFIT_BATCHES}})}
MODELS = tuple(ARCHS)
# data label -> (task, task args)
DATASETS: dict[str, tuple[str, dict[str, Any]]] = {
    "digits": ("digits", {"layout": "pixels"}),
    "mnist14": ("mnist-test", {"layout": "pixels", "pool": 2, "standardize": True}),
    "mnist": ("mnist-test", {"layout": "pixels", "standardize": True}),
}


def _entries(hidden: int, steps: int, data: str = "digits", archs: tuple[str, ...] = MODELS) -> list[Entry]:
    task, task_args = DATASETS[data]
    early = steps // 4
    out = []
    for arch in archs:
        preset, layer_kwargs = ARCHS[arch]
        for budget, n in (("early", early), ("full", steps)):
            out.append(Entry(model=preset, task=task,
                             model_args={"d_model": hidden, "encoder": "none", "layer_kwargs": dict(layer_kwargs)},
                             task_args=dict(task_args),
                             labels={"data": data, "arch": arch, "budget": budget, "steps": n},
                             train={"steps": n, "eval_every": max(1, n // 4)}))
    return out


def _datasets(results: Results) -> list[str]:
    return [d for d in DATASETS if results.has(data=d, arch="lstm", budget="full")]


def _numbers(results: Results) -> dict[str, float]:
    return {f"{d}_{m}_{b}": round(results.mean(data=d, arch=m, budget=b), 4)
            for d in _datasets(results) for m in MODELS for b in ("early", "full")
            if results.has(data=d, arch=m, budget=b)}


def _better(results: Results, arch: str, budget: str) -> ClaimResult:
    """``arch`` vs the LSTM on every dataset that ran it: higher after the early budget, at least as high (half a
    point of slack) after the full one."""
    op, slack = (">", 0.0) if budget == "early" else (">=", -0.005)
    data = [d for d in _datasets(results) if results.has(data=d, arch=arch, budget="full")] or _datasets(results)
    return compare(results, arch, "lstm", op, over="data", values=data, where={"budget": budget},
                   slack=slack, numbers=_numbers)


CHANCE = 0.1  # ten classes


def derive(entry: Entry, run_dir: Path) -> dict[str, float]:
    """``finished``: 1 for a run that trained to its last step, 0 for one stopped by a non-finite gradient."""
    from seqzoo.training.runs import read_result

    result = read_result(run_dir)
    return {"finished": float(result is not None and result.status == "finished")}


def _check_remedy(results: Results) -> ClaimResult:
    """The spec's remedy (§3.4) as the spec states it: every ε = 1e-3 run (no h₀ noise) trains to its last step
    without a non-finite gradient and learns (full-budget test accuracy at least twice chance), on every dataset
    that ran it."""
    data = [d for d in _datasets(results) if results.has(data=d, arch="lstm_bn_eps", budget="full")]
    if not data:
        raise MissingResult("no lstm_bn_eps runs at this scale")
    verdicts, parts, numbers = [], [], {}
    for d in data:
        finished = [v for b in ("early", "full")
                    for v in results.stat("finished", "derived", data=d, arch="lstm_bn_eps", budget=b).values]
        acc = results.stat(data=d, arch="lstm_bn_eps", budget="full")
        verdicts.append(all(v == 1.0 for v in finished) and acc.mean >= 2 * CHANCE)
        numbers[f"{d}_finished"] = f"{int(sum(finished))}/{len(finished)}"
        numbers[f"{d}_lstm_bn_eps_full"] = round(acc.mean, 4)
        parts.append(f"data={d}: {int(sum(finished))} of {len(finished)} runs finished, full-budget accuracy "
                     f"{acc}")
    return ClaimResult(combine(verdicts), numbers,
                       "; ".join(parts) + f" (held if every run finished and accuracy >= {2 * CHANCE:g} on every data)")


def _check_remedy_accuracy(results: Results) -> ClaimResult:
    early, final = _better(results, "lstm_bn_eps", "early"), _better(results, "lstm_bn_eps", "full")
    return ClaimResult(combine([early.held, final.held]), _numbers(results),
                       f"with eps=1e-3, early: {early.detail}; final: {final.detail}")


def _check_faster(results: Results) -> ClaimResult:
    return _better(results, "lstm_bn", "early")


def _check_final(results: Results) -> ClaimResult:
    return _better(results, "lstm_bn", "full")


def _draw(results: Results, path: Path) -> None:
    from seqzoo.experiments.plots import curves, panels, save

    datasets = _datasets(results) or ["digits"]
    titles = {"digits": "pixel-by-pixel digits (8x8)", "mnist14": "MNIST-test subset, 14x14 pixels",
              "mnist": "MNIST-test subset, 28x28 pixels"}
    fig, axes = panels(len(datasets), width=4.5, height=3.2)
    for ax, d in zip(axes, datasets):
        series = {m: ([results.find(data=d, arch=m, budget=b).entry.labels["steps"] for b in ("early", "full")],
                      [results.get(data=d, arch=m, budget=b) for b in ("early", "full")])
                  for m in MODELS if results.has(data=d, arch=m, budget="full")}
        curves(ax, series, colors=dict(zip(MODELS, ("#999999", "#4c72b0", "#dd8452"))), title=titles[d],
               xlabel="training steps", ylabel="test accuracy")
    save(fig, path)


MNIST_SMALL_STEPS, MNIST_MEDIUM_STEPS = 400, 3000
# the ε = 1e-3 remedy is judged on digits; the MNIST budget goes to the paper's setup
MNIST_ARCHS = ("lstm", "lstm_bn")
_SMALL = {"batch_size": 64, "optimizer": "rmsprop", "lr": 1e-3, "clip_norm": 1.0}


def _epochs(steps: int) -> str:
    return f"{steps * 64 / 7000:.1f}"


CARD = register_experiment(ExperimentCard(
    name="recurrent-bn",
    title="Recurrent Batch Normalization: LSTM vs BN-LSTM on pixel-by-pixel digits and the MNIST-test subset",
    paper="Cooijmans, Ballas, Laurent, Gülçehre & Courville, Recurrent Batch Normalization (ICLR 2017)",
    description="LSTM and BN-LSTM (per-step statistics, gamma 0.1, eps 1e-5, h0 noise 0.1 in training; forget-gate "
                "bias 1 for both, as in the official code; population statistics re-estimated before each "
                "evaluation as the average over 20 training batches, the paper's rule) read pixel by pixel: "
                "scikit-learn's 8x8 digits (64 steps) and the MNIST-test subset (MNIST's 10,000 test images split "
                "7k/1k/2k, standardized; 14x14-pooled, 196 steps, at small and medium scale); test accuracy after an "
                "early budget (a quarter of the steps) and after the full budget.",
    grid=lambda: _entries(100, 20000, "digits") + _entries(100, 20000, "mnist"),
    metric="accuracy",
    split="test",
    derive=derive,
    scales={
        "tiny": Scale(train={**_SMALL, "batch_size": 16}, grid=lambda: _entries(8, 8),
                      note="plumbing only: digits, H=8, 2 and 8 steps", expected_seconds=40),
        "small": Scale(train=_SMALL, seeds=(0, 1, 2), workers=2, expected_seconds=720,
                       grid=lambda: (_entries(64, 800, "digits")
                                     + _entries(64, MNIST_SMALL_STEPS, "mnist14", MNIST_ARCHS)),
                       note="H=64, batch 64, RMSprop 1e-3, clip 1. Digits (LSTM, BN-LSTM, BN-LSTM eps 1e-3): 200 "
                            "(early) and 800 (full) steps (about 11 and 43 epochs of the 1,197 training digits). "
                            "MNIST-test subset pooled to 14x14 (196 pixel steps; LSTM and BN-LSTM): "
                            f"{MNIST_SMALL_STEPS // 4} and {MNIST_SMALL_STEPS} steps (about "
                            f"{_epochs(MNIST_SMALL_STEPS)} epochs of its 7,000 training images). 3 seeds. "
                            "Expected time: 650 s measured before the population re-estimates, plus about 70 s "
                            "estimated for them (20 forward passes before each of the 72 BN-LSTM evaluations)."),
        "medium": Scale(train=_SMALL, seeds=(0, 1, 2), workers=2, expected_seconds=2360,
                        grid=lambda: _entries(64, MNIST_MEDIUM_STEPS, "mnist14", MNIST_ARCHS),
                        note="The small scale's settings on the MNIST-test subset pooled to 14x14 only (digits are "
                             f"decided at small scale), LSTM and BN-LSTM: {MNIST_MEDIUM_STEPS // 4} (early) and "
                             f"{MNIST_MEDIUM_STEPS} (full) steps (about {_epochs(MNIST_MEDIUM_STEPS)} epochs). 3 "
                             "seeds. Expected time estimated from CPU time per step (BN-LSTM about 0.3 s, LSTM about "
                             "0.05 s at 196 steps, batch 64) plus about 55 s of population re-estimates (about 4 s CPU "
                             "for 20 training batches before each of the 27 BN-LSTM evaluations); measured 39 min 22 s "
                             "(2026-12-07, light load)."),
        "paper": Scale(train=_SMALL, seeds=(0, 1, 2), grid=None, workers=2,
                       note="H=100 as in the paper's sequential MNIST; 20,000 steps on digits and on the full "
                            "784-pixel MNIST-test subset (defined, not run)"),
    },
    causes={
        "bn_converges_faster": Cause("implementation",
            "With eps 1e-5 and h0 = 0 the backward through the blank first pixels (zero batch variance) grows x31.6 "
            "per site and step and overflows; the official setup adds N(0, 0.1^2) noise to h0 (now h0_noise=0.1, "
            "test_h0_noise_gives_the_first_steps_batch_variance_and_a_finite_gradient; the overflow stays as "
            "test_bn_lstm_without_h0_noise_overflows_in_backward_on_blank_first_steps). Also fixed: the dead cell "
            "biases under BN random-walked and the population means lagged them (test_bn_sites_cancel_the_cells_"
            "biases_so_the_h_site_carries_the_gate_bias), and the official forget-gate bias 1 (forget_bias). See "
            "'Cause of the NOT HELD claims'."),
        "bn_at_least_as_accurate": Cause("implementation",
            "The BN-LSTM was evaluated with the EMA of training (momentum 0.1) as its population statistics, which "
            "lagged the fast-moving weights; the paper averages the batch statistics over the training set on the "
            "weights being evaluated. Measured on the small run's MNIST 14x14 BN-LSTMs at step 400 (test accuracy, "
            "seeds 0/1/2): EMA 0.34/0.27/0.10, batch statistics of the eval batch 0.64/0.60/0.60, population "
            "re-estimated from 20 training batches 0.63/0.60/0.60 (LSTM 0.52). Fixed: refit_batches=20 re-estimates "
            "before every evaluation (test_the_trainer_evaluates_with_the_average_of_training_batch_statistics_on_"
            "the_evaluated_weights). Re-run after the fix: held at medium (0.850 vs 0.802) and at small (MNIST 14x14 "
            "0.610 vs 0.516)."),
        "bn_eps_remedy": Cause("implementation",
            "The same EMA population statistics as bn_at_least_as_accurate: on the small run's selected digits "
            "checkpoints the eps = 1e-3 BN-LSTM scores 0.59 early / 0.71 final with the EMA and 0.69 / 0.89 with "
            "statistics re-estimated from 20 training batches (LSTM 0.52 / 0.73), so the first wording would hold "
            "(measured on the same weights, not re-run; fixed by refit_batches=20). Also re-worded: the paper makes "
            "no claim about eps = 1e-3 (it uses 1e-5 and calls eps a regularization hyperparameter); the larger eps "
            "is the spec's remedy for the exploding backward at zero-variance steps (spec 3.4), so the claim now "
            "says that (every eps = 1e-3 run trains to its last step and learns: all 6 small digits runs finished, "
            "by hand), and the first wording is the observation bn_eps_remedy_accuracy."),
    },
    claims=[
        Claim("bn_converges_faster", "BN-LSTM is more accurate than the LSTM after the early budget.", _check_faster),
        Claim("bn_at_least_as_accurate", "BN-LSTM ends at least as accurate as the LSTM.", _check_final),
        Claim("bn_eps_remedy", "The spec's other remedy for zero-variance steps (eps = 1e-3 instead of h0 noise) "
              "avoids the exploding backward: every BN-LSTM run with it trains to its last step (no non-finite "
              "gradient) and learns (test accuracy at least twice chance).", _check_remedy),
    ],
    observations=[
        Claim("bn_eps_remedy_accuracy", "With eps = 1e-3 (no h0 noise) the BN-LSTM is more accurate than the LSTM "
              "early and at least as accurate at the end (the card's first wording of bn_eps_remedy; not a claim "
              "of the paper, which uses eps = 1e-5 and calls eps only a regularization hyperparameter).",
              _check_remedy_accuracy),
    ],
    plots=[Plot("accuracy", _draw, "Test accuracy after the early and the full budget (mean over seeds), per "
                                   "dataset.")],
))

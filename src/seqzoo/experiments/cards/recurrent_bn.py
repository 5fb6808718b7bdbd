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
the plain LSTM's input term is not tiny; the BN-LSTM's normalized input term is unchanged by that map.

"Converges faster" is measured as test accuracy after an early budget (a quarter of the steps): the
training batches are a pure function of (seed, step) and the learning rate is constant, so the early
run is exactly the first quarter of the full run, evaluated on its own best validation checkpoint. Each
claim must hold on every dataset in the grid; the numbers are reported per dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqzoo.experiments.card import Cause, Claim, ClaimResult, Entry, ExperimentCard, Plot, Results, Scale
from seqzoo.experiments.claims import combine, compare
from seqzoo.experiments.registry import register_experiment

# arch label -> (preset, layer kwargs). The official code's forget-gate bias 1 for all; the BN-LSTM with the paper's
# ε = 1e-5 and its h_0 noise (std 0.1); "lstm_bn_eps" is the spec's other remedy for zero-variance time steps
# (§3.4: "add noise to h_0 or use a larger ε"): ε = 1e-3 and no noise.
FORGET_BIAS, H0_NOISE = 1.0, 0.1
ARCHS = {"lstm": ("lstm", {"forget_bias": FORGET_BIAS}),
         "lstm_bn": ("lstm_bn", {"forget_bias": FORGET_BIAS, "h0_noise": H0_NOISE}),
         "lstm_bn_eps": ("lstm_bn", {"forget_bias": FORGET_BIAS, "norm_kwargs": {"eps": 1e-3}})}
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


def _check_remedy(results: Results) -> ClaimResult:
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
                "bias 1 for both, as in the official code) read pixel by pixel: scikit-learn's 8x8 digits (64 steps) "
                "and the MNIST-test subset (MNIST's 10,000 test images split 7k/1k/2k, standardized; 14x14-pooled, "
                "196 steps, at small and medium scale); test accuracy after an early budget (a quarter of the steps) "
                "and after the full budget.",
    grid=lambda: _entries(100, 20000, "digits") + _entries(100, 20000, "mnist"),
    metric="accuracy",
    split="test",
    scales={
        "tiny": Scale(train={**_SMALL, "batch_size": 16}, grid=lambda: _entries(8, 8),
                      note="plumbing only: digits, H=8, 2 and 8 steps", expected_seconds=30),
        "small": Scale(train=_SMALL, seeds=(0, 1, 2), workers=2, expected_seconds=650,
                       grid=lambda: (_entries(64, 800, "digits")
                                     + _entries(64, MNIST_SMALL_STEPS, "mnist14", MNIST_ARCHS)),
                       note="H=64, batch 64, RMSprop 1e-3, clip 1. Digits (LSTM, BN-LSTM, BN-LSTM eps 1e-3): 200 "
                            "(early) and 800 (full) steps (about 11 and 43 epochs of the 1,197 training digits). "
                            "MNIST-test subset pooled to 14x14 (196 pixel steps; LSTM and BN-LSTM): "
                            f"{MNIST_SMALL_STEPS // 4} and {MNIST_SMALL_STEPS} steps (about "
                            f"{_epochs(MNIST_SMALL_STEPS)} epochs of its 7,000 training images). 3 seeds."),
        "medium": Scale(train=_SMALL, seeds=(0, 1, 2), workers=2, expected_seconds=2700,
                        grid=lambda: _entries(64, MNIST_MEDIUM_STEPS, "mnist14", MNIST_ARCHS),
                        note="The small scale's settings on the MNIST-test subset pooled to 14x14 only (digits are "
                             f"decided at small scale), LSTM and BN-LSTM: {MNIST_MEDIUM_STEPS // 4} (early) and "
                             f"{MNIST_MEDIUM_STEPS} (full) steps (about {_epochs(MNIST_MEDIUM_STEPS)} epochs). 3 "
                             "seeds. Expected time estimated from CPU time per step (BN-LSTM about 0.3 s, LSTM about "
                             "0.05 s at 196 steps, batch 64), not yet run."),
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
        "bn_at_least_as_accurate": Cause("open",
            "After the fixes (h0 noise, no dead biases under BN, forget bias 1) it holds on digits (0.83 vs 0.73) but "
            "not on MNIST 14x14 at 400 steps (0.39 vs 0.52); the BN-LSTM's best validation checkpoint is the early "
            "one on some seeds (population-statistics evaluation suspected, not measured); medium not run."),
        "bn_eps_remedy": Cause("open",
            "With forget bias 1 the eps 1e-3 BN-LSTM on digits is faster (0.59 vs 0.52) but ends 0.71 vs the LSTM's "
            "0.73 (slack 0.005); not investigated."),
    },
    claims=[
        Claim("bn_converges_faster", "BN-LSTM is more accurate than the LSTM after the early budget.", _check_faster),
        Claim("bn_at_least_as_accurate", "BN-LSTM ends at least as accurate as the LSTM.", _check_final),
        Claim("bn_eps_remedy", "With the spec's remedy for zero-variance steps (eps = 1e-3), BN-LSTM is more "
              "accurate early and at least as accurate at the end.", _check_remedy),
    ],
    plots=[Plot("accuracy", _draw, "Test accuracy after the early and the full budget (mean over seeds), per "
                                   "dataset.")],
))

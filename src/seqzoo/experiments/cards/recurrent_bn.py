"""Card ``recurrent-bn``: LSTM vs recurrent-BatchNorm LSTM on pixel-by-pixel digits (spec §3.2–3.3).

Cooijmans et al., "Recurrent Batch Normalization" (arXiv 1603.09025). The paper's sequential-MNIST
claim is that BN-LSTM converges faster and ends at least as accurate. Two offline datasets:

* ``digits``: scikit-learn's 8×8 digits read one pixel per step (64 steps; the spec's §3.3 stand-in).
* ``mnist14``: the MNIST-test subset (``../shared/data/mnist-test``: only MNIST's 10,000 test images are
  available offline, split 7,000 train / 1,000 valid / 2,000 test by the ``mnist-test`` task — reported as
  "MNIST-test subset", not the standard benchmark), 2×2-average-pooled to 14×14 and read one pixel per step
  (196 steps) at small scale to fit the budget; the ``paper`` grid reads the full 784-pixel sequence.

H = 64 (paper: 100), batch 64, RMSprop lr 1e-3, gradient clipping 1.0. BN uses per-time-step statistics,
γ = 0.1 and no shift on the input and recurrent terms (the ``lstm_bn`` preset).

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

# arch label -> (preset, extra layer kwargs). "lstm_bn_eps" is the spec's remedy for zero-variance time steps
# (§3.4: "add noise to h_0 or use a larger ε"): ε = 1e-3 instead of the paper's 1e-5.
ARCHS = {"lstm": ("lstm", {}), "lstm_bn": ("lstm_bn", {}),
         "lstm_bn_eps": ("lstm_bn", {"layer_kwargs": {"norm_kwargs": {"eps": 1e-3}}})}
MODELS = tuple(ARCHS)
# data label -> (task, task args)
DATASETS: dict[str, tuple[str, dict[str, Any]]] = {
    "digits": ("digits", {"layout": "pixels"}),
    "mnist14": ("mnist-test", {"layout": "pixels", "pool": 2}),
    "mnist": ("mnist-test", {"layout": "pixels"}),
}


def _entries(hidden: int, steps: int, data: str = "digits") -> list[Entry]:
    task, task_args = DATASETS[data]
    early = steps // 4
    out = []
    for arch, (preset, extra) in ARCHS.items():
        for budget, n in (("early", early), ("full", steps)):
            out.append(Entry(model=preset, task=task, model_args={"d_model": hidden, "encoder": "none", **extra},
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
    """``arch`` vs the LSTM on every dataset: higher after the early budget, at least as high (half a point of
    slack) after the full one."""
    op, slack = (">", 0.0) if budget == "early" else (">=", -0.005)
    return compare(results, arch, "lstm", op, over="data", values=_datasets(results), where={"budget": budget},
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


MNIST_SMALL_STEPS = 300
_SMALL = {"batch_size": 64, "optimizer": "rmsprop", "lr": 1e-3, "clip_norm": 1.0}

CARD = register_experiment(ExperimentCard(
    name="recurrent-bn",
    title="Recurrent Batch Normalization: LSTM vs BN-LSTM on pixel-by-pixel digits and the MNIST-test subset",
    paper="Cooijmans, Ballas, Laurent, Gülçehre & Courville, Recurrent Batch Normalization (ICLR 2017)",
    description="LSTM and BN-LSTM (per-step statistics, gamma 0.1) read pixel by pixel: scikit-learn's 8x8 digits "
                "(64 steps) and the MNIST-test subset (MNIST's 10,000 test images split 7k/1k/2k; 14x14-pooled, "
                "196 steps, at small scale); test accuracy after an early budget (a quarter of the steps) and after "
                "the full budget.",
    grid=lambda: _entries(100, 20000, "digits") + _entries(100, 20000, "mnist"),
    metric="accuracy",
    split="test",
    scales={
        "tiny": Scale(train={**_SMALL, "batch_size": 16}, grid=lambda: _entries(8, 8),
                      note="plumbing only: digits, H=8, 2 and 8 steps", expected_seconds=30),
        "small": Scale(train=_SMALL, seeds=(0, 1, 2), workers=2, expected_seconds=350,
                       grid=lambda: _entries(64, 800, "digits") + _entries(64, MNIST_SMALL_STEPS, "mnist14"),
                       note="H=64, batch 64, RMSprop 1e-3, clip 1. Digits: 200 (early) and 800 (full) steps (about "
                            "11 and 43 epochs of the 1,197 training digits). MNIST-test subset pooled to 14x14 (196 "
                            f"pixel steps): {MNIST_SMALL_STEPS // 4} and {MNIST_SMALL_STEPS} steps (about "
                            f"{MNIST_SMALL_STEPS * 64 / 7000:.1f} epochs of its 7,000 training images). 3 seeds."),
        "paper": Scale(train=_SMALL, seeds=(0, 1, 2), grid=None, workers=2,
                       note="H=100 as in the paper's sequential MNIST; 20,000 steps on digits and on the full "
                            "784-pixel MNIST-test subset (defined, not run)"),
    },
    causes={
        "bn_converges_faster": Cause("implementation",
            'With eps 1e-5 the backward through near-zero-variance sites grows x31.6 per step (state identical '
            'across the batch at steps 0-1); the official MNIST script adds noise to h0, which the card does not '
            "yet do. Held with eps 1e-3. See 'Cause of the NOT HELD claims'."),
        "bn_at_least_as_accurate": Cause("implementation",
            'Same cause as bn_converges_faster: the h0 noise of the official setup is missing (found, not yet '
            'added to the card); held with eps 1e-3.'),
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

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

from seqzoo.experiments.card import Claim, ClaimResult, Entry, ExperimentCard, Plot, Results, Scale
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


def _per_dataset(results: Results, judge: Any) -> ClaimResult:
    """``judge(data) -> (held, text)`` on every dataset present; held only if held on all."""
    datasets = _datasets(results)
    if not datasets:
        return ClaimResult(None, {}, "no results")
    verdicts = [judge(d) for d in datasets]
    return ClaimResult(all(h for h, _ in verdicts), _numbers(results),
                       "; ".join(f"{d}: {text}" for d, (_, text) in zip(datasets, verdicts)))


def _check_remedy(results: Results) -> ClaimResult:
    def judge(d: str) -> tuple[bool, str]:
        bn, plain = (results.stat(data=d, arch=a, budget="full") for a in ("lstm_bn_eps", "lstm"))
        e_bn, e_plain = (results.mean(data=d, arch=a, budget="early") for a in ("lstm_bn_eps", "lstm"))
        held = e_bn > e_plain and bn.mean >= plain.mean - 0.005
        return held, (f"with eps=1e-3 early {e_bn:.4f} vs LSTM {e_plain:.4f}, final {bn} vs LSTM {plain} "
                      f"({'held' if held else 'not held'})")
    out = _per_dataset(results, judge)
    out.detail += " (held if higher early and not lower at the end, on every dataset)"
    return out


def _check_faster(results: Results) -> ClaimResult:
    def judge(d: str) -> tuple[bool, str]:
        e_bn, e_plain = (results.mean(data=d, arch=a, budget="early") for a in ("lstm_bn", "lstm"))
        return e_bn > e_plain, f"early BN-LSTM {e_bn:.4f} vs LSTM {e_plain:.4f}"
    out = _per_dataset(results, judge)
    out.detail = "test accuracy after the early budget: " + out.detail + " (held if BN-LSTM is higher on every dataset)"
    return out


def _check_final(results: Results) -> ClaimResult:
    def judge(d: str) -> tuple[bool, str]:
        bn, plain = (results.stat(data=d, arch=a, budget="full") for a in ("lstm_bn", "lstm"))
        return bn.mean >= plain.mean - 0.005, f"final BN-LSTM {bn} vs LSTM {plain}"
    out = _per_dataset(results, judge)
    out.detail = ("final test accuracy: " + out.detail + " (held if BN-LSTM >= LSTM - 0.005 on every dataset; half "
                  "a point of slack)")
    return out


def _draw(results: Results, path: Path) -> None:
    from seqzoo.experiments.plots import _pyplot, _save

    plt = _pyplot()
    datasets = _datasets(results) or ["digits"]
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.2), squeeze=False)
    titles = {"digits": "pixel-by-pixel digits (8x8)", "mnist14": "MNIST-test subset, 14x14 pixels",
              "mnist": "MNIST-test subset, 28x28 pixels"}
    for ax, d in zip(axes[0], datasets):
        for m, color in zip(MODELS, ("#999999", "#4c72b0", "#dd8452")):
            if not results.has(data=d, arch=m, budget="full"):
                continue
            xs = [results.find(data=d, arch=m, budget=b).entry.labels["steps"] for b in ("early", "full")]
            ys = [results.mean(data=d, arch=m, budget=b) for b in ("early", "full")]
            ax.plot(xs, ys, "o-", color=color, label=m)
        ax.set_xlabel("training steps")
        ax.set_title(titles[d], fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("test accuracy")
    fig.tight_layout()
    _save(fig, plt, path)


_QUIET = {"progress": False, "tensorboard": False}
MNIST_SMALL_STEPS = 300
_SMALL = {"batch_size": 64, "optimizer": "rmsprop", "lr": 1e-3, "clip_norm": 1.0, **_QUIET}

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
                      note="plumbing only: digits, H=8, 2 and 8 steps"),
        "small": Scale(train=_SMALL, seeds=(0, 1, 2), workers=2,
                       grid=lambda: _entries(64, 800, "digits") + _entries(64, MNIST_SMALL_STEPS, "mnist14"),
                       note="H=64, batch 64, RMSprop 1e-3, clip 1. Digits: 200 (early) and 800 (full) steps (about "
                            "11 and 43 epochs of the 1,197 training digits). MNIST-test subset pooled to 14x14 (196 "
                            f"pixel steps): {MNIST_SMALL_STEPS // 4} and {MNIST_SMALL_STEPS} steps (about "
                            f"{MNIST_SMALL_STEPS * 64 / 7000:.1f} epochs of its 7,000 training images). 3 seeds."),
        "paper": Scale(train=_SMALL, seeds=(0, 1, 2), grid=None, workers=2,
                       note="H=100 as in the paper's sequential MNIST; 20,000 steps on digits and on the full "
                            "784-pixel MNIST-test subset (defined, not run)"),
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

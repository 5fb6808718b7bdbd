"""Card ``s5``: S5 vs LSTM vs transformer on adding T=200 and ListOps-mini (spec §5, §6, §7).

Smith, Warrington & Linderman, "Simplified State Space Layers for Sequence Modeling" (ICLR 2023,
arXiv 2208.04933). The paper's headline is LRA (ListOps 62.15%, avg 87.46) at GPU scale; what fits a shared
2-core CPU is the spec's two small tests (§5.8, §6.6, §7), with three models at roughly equal parameter counts:

* ``adding`` T=200 (two marked U(0, 1) values among 200; regress their sum at the last step). Predicting 1
  everywhere gives MSE 1/6 (``AddingTask.baseline()``), and every model sits on that plateau for a long time
  before it learns (§7: the spec's S5 4 x H32, P=32, J=4 left it after ~2.1k Adam steps at lr 2e-3, batch 32,
  and an LSTM-128 was still at 0.17 after 838 steps). **"Leaves the plateau"** is defined as test MSE
  < 0.5 x the baseline's (< 0.0833); "stays on it" is the complement. The paper has no adding experiment and
  makes no claim about LSTMs: "the LSTM stays on the plateau" (from the spec's calibration run) is kept as an
  observation, not a claim (issue 20).
* ``listops`` ListOps-mini (§6.6: depth <= 6, <= 5 arguments, 50 < length < 300, 20k / 2k / 2k; lengths 51-184):
  the value 0-9 of a nested MIN / MAX / MED / SM expression. The trivial baseline is the majority class of the
  training split scored on the test split (12.3% on the mini setting, computed by ``ListOpsTask.baseline()``
  from the entry's task arguments, not hard-coded). The paper's baseline comparison is its Table 1 (LRA): on
  ListOps S5 62.15% against the Transformer's 36.37%; ``s5_beats_transformer_on_listops`` checks that order on
  ListOps-mini.

Models (``SequenceModel``; parameter counts from the built models, a test checks them):

* ``s5``: 4 S5 layers, H=32, P=32 (J=4 HiPPO-N blocks), ZOH, conj-sym, pre-LayerNorm, half_glu1 (the spec's
  calibration model, §7; the official code uses BatchNorm). Causal and read at the last step on adding
  (13.1K params); bidirectional with mean pooling on ListOps (17.9K), as the official LRA runs. S5 entries
  use ``TrainConfig.ssm_lr`` (Lambda, B, log-step in their own group, no weight decay; spec §5.5).
* ``lstm``: one ``torch.nn.LSTM`` layer (``lstm_native``) read at the last real step, hidden size matched
  to S5's count (adding h=40, 13.3K; ListOps h=44, 17.0K).
* ``transformer``: seqzoo's causal pre-norm transformer (rotary positions), 2 blocks, width 24, 4 heads,
  d_ff 96, last step on adding (14.6K) and masked mean on ListOps (15.1K).

Training (the same recipe for the three models of one task; one seed at small scale, for the CPU budget):
adding: Adam lr 2e-3, batch 32, no clipping, fresh sequences every step (the spec's calibration recipe);
S5's ``ssm_lr`` equals ``lr`` there, so its optimizer is exactly that Adam. ListOps-mini: AdamW, lr 3e-3,
weight decay 0.04, S5's ``ssm_lr`` 1e-3 (the official ListOps ratio lr_factor 3 and wd 0.04), linear
warm-up then cosine decay, batch 32. Test metric at the best validation checkpoint.

How small differs from the paper: no LRA ListOps (lengths up to 2,000, 96k expressions, 8 layers of H=128 and
40 epochs on a GPU) but the mini generator; a few thousand steps instead of 40 epochs; LayerNorm instead of
BatchNorm; half_glu1 everywhere; the baselines are small, parameter-matched models rather than the LRA
Transformer (4 x 512). The ``paper`` scale defines the LRA ListOps runs with the official S5 settings (§5.6);
it is not run here.

``medium`` (issue 20: a one-seed verdict is not a verdict) runs 3 seeds of the same models and recipe: ListOps-mini
with all three models for twice small's steps (the open S5-vs-transformer claim and the LSTM comparison), and adding
at the small budget for S5 and the LSTM (the plateau claim and observation); ListOps-mini's lengths are already
the spec's full mini setting at small scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqzoo.experiments.baselines import task_baseline
from seqzoo.experiments.card import Cause, Claim, ClaimResult, Entry, ExperimentCard, Plot, Results, Scale
from seqzoo.experiments.claims import compare, means, threshold
from seqzoo.experiments.grids import cross
from seqzoo.experiments.registry import register_experiment

ARCHS = ("s5", "lstm", "transformer")
TASKS = ("adding", "listops")
METRIC = {"adding": "mse", "listops": "accuracy"}
PLATEAU_FRACTION = 0.5  # "left the plateau": test MSE < 0.5 x the trivial baseline's MSE (the definition)
MAJORITY_MARGIN = 0.10  # S5 must beat the ListOps majority class by >= 10 points (the claim)

S5_LAYERS, S5_WIDTH, S5_STATE, S5_BLOCKS = 4, 32, 32, 4  # the spec's calibrated S5 (§5.8, §7)
LSTM_HIDDEN = {"adding": 40, "listops": 44}  # closest to S5's parameter count on each task
TRANSFORMER = {"n_layers": 2, "d_model": 24, "n_heads": 4}


def model_configs(task: str, s5_width: int = S5_WIDTH, s5_layers: int = S5_LAYERS, s5_state: int = S5_STATE,
                  s5_blocks: int = S5_BLOCKS, lstm_hidden: int | None = None,
                  transformer: dict[str, int] | None = None) -> dict[str, tuple[str, dict[str, Any]]]:
    """``arch -> (preset, model_args)`` of the three models on ``task`` (``"adding"`` or ``"listops"``)."""
    if task not in TASKS:
        raise ValueError(f"s5 card: task must be one of {TASKS}, got {task!r}")
    tf = {**TRANSFORMER, **(transformer or {})}
    bidir = task == "listops"
    s5_kwargs: dict[str, Any] = {"state_size": s5_state, "blocks": s5_blocks}
    if bidir:
        s5_kwargs["bidirectional"] = True
    return {
        "s5": ("s5_bidir" if bidir else "s5", {"n_layers": s5_layers, "d_model": s5_width,
                                               "decoder": "mean" if bidir else "last", "layer_kwargs": s5_kwargs}),
        "lstm": ("lstm_native", {"d_model": lstm_hidden or LSTM_HIDDEN[task], "decoder": "last"}),
        "transformer": ("transformer", {"n_layers": tf["n_layers"], "d_model": tf["d_model"],
                                        "decoder": "mean" if bidir else "last",
                                        "layer_kwargs": {"n_heads": tf["n_heads"]}}),
    }


def entries(task: str, task_args: dict[str, Any], train: dict[str, Any], s5_train: dict[str, Any],
            **sizes: Any) -> list[Entry]:
    """The three models on one task; ``s5_train`` adds S5-only TrainConfig fields (``ssm_lr``)."""
    return cross(model_configs(task, **sizes), {task: (task, task_args)},
                 train=lambda arch, _: {**train, **(s5_train if arch == "s5" else {})})


# ----- baselines -------------------------------------------------------------------------------------------------

def baseline(results: Results, task: str) -> float:
    """The trivial baseline of ``task`` with the task arguments of the S5 entry (adding MSE, ListOps majority)."""
    hit = results.find(arch="s5", task=task)
    return task_baseline(task, METRIC[task], hit.entry.task_args if hit is not None else {})


def _numbers(results: Results, task: str) -> dict[str, Any]:
    return means(results, ARCHS, where={"task": task}, metric=METRIC[task], spread="seeds")


# ----- claims ----------------------------------------------------------------------------------------------------

def _adding(results: Results, arch: str, op: str) -> ClaimResult:
    """``arch``'s adding MSE ``op`` PLATEAU_FRACTION x the trivial baseline (``<``: left the plateau)."""
    base = baseline(results, "adding")
    nums = {**_numbers(results, "adding"), "baseline": round(base, 4), "threshold": round(PLATEAU_FRACTION * base, 4),
            **{f"{a}_vs_baseline": round(results.mean("mse", arch=a, task="adding") / base, 3)
               for a in ARCHS if results.has(arch=a, task="adding")}}
    return threshold(results, {"arch": arch, "task": "adding"}, op, nums["threshold"], metric="mse", numbers=nums)


def _check_majority(results: Results) -> ClaimResult:
    st = results.stat("accuracy", arch="s5", task="listops")
    base = baseline(results, "listops")
    nums = {**_numbers(results, "listops"), "majority": round(base, 4),
            "target": round(base + MAJORITY_MARGIN, 4), "s5_margin": round(st.mean - base, 4)}
    return threshold(results, {"arch": "s5", "task": "listops"}, ">=", base + MAJORITY_MARGIN - 1e-12,
                     metric="accuracy", numbers=nums)


def _beats_on_listops(other: str):
    """S5's ListOps accuracy > ``other``'s (``lstm`` or ``transformer``), with the gap in the numbers."""
    def check(results: Results) -> ClaimResult:
        diff = results.mean("accuracy", arch="s5", task="listops") - results.mean("accuracy", arch=other,
                                                                                  task="listops")
        nums = {**_numbers(results, "listops"), "majority": round(baseline(results, "listops"), 4),
                f"s5_minus_{other}": round(diff, 4)}
        return compare(results, "s5", other, ">", where={"task": "listops"}, metric="accuracy", numbers=nums)
    return check


# ----- plot ------------------------------------------------------------------------------------------------------

def _draw(results: Results, path: Path) -> None:
    from seqzoo.experiments.plots import Ref, bars, cells, panels, save

    tasks = [t for t in TASKS if any(results.has(arch=a, task=t) for a in ARCHS)]
    fig, axes = panels(len(tasks), width=3.8)
    for ax, task in zip(axes, tasks):
        base = baseline(results, task)
        if task == "adding":
            refs = [Ref(base, f"predict 1 ({base:.3f})"),
                    Ref(PLATEAU_FRACTION * base, f"{PLATEAU_FRACTION} x baseline", ":", "#c44e52")]
        else:
            refs = [Ref(base, f"majority ({base:.3f})"),
                    Ref(base + MAJORITY_MARGIN, "majority + 10 pts", ":", "#c44e52")]
        archs = [a for a in ARCHS if results.has(arch=a, task=task)]  # medium has no adding transformer
        bars(ax, cells(results, "arch", archs, metric=METRIC[task], task=task), refs=refs, log_y=task == "adding",
             ylim=None if task == "adding" else (0, 1), colors={"s5": "#dd8452", "lstm": "#999999",
                                                               "transformer": "#4c72b0"},
             title="adding T=200" if task == "adding" else "ListOps-mini", ylabel=f"{results.split} {METRIC[task]}")
    save(fig, path)


# ----- scales ----------------------------------------------------------------------------------------------------

SMALL_ADDING_STEPS = 4000
SMALL_LISTOPS_STEPS = 3000
MEDIUM_LISTOPS_STEPS = 6000  # ~9.6 epochs of the 20k training expressions (small: 4.8)
_ADDING = {"optimizer": "adam", "lr": 2e-3, "batch_size": 32, "clip_norm": None}
_LISTOPS = {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.04, "schedule": "cosine", "batch_size": 32,
            "clip_norm": None}
_TINY_LISTOPS = {"max_depth": 3, "max_args": 3, "min_length": 4, "max_length": 30, "n_train": 64, "n_valid": 32,
                 "n_test": 32}


def _tiny_grid() -> list[Entry]:
    sizes = {"s5_width": 8, "s5_layers": 1, "s5_state": 4, "s5_blocks": 2, "lstm_hidden": 8,
             "transformer": {"n_layers": 1, "d_model": 8, "n_heads": 2}}
    return (entries("adding", {"seq_len": 20, "n_valid": 32, "n_test": 32},
                    {**_ADDING, "steps": 4, "eval_every": 2, "batch_size": 8}, {"ssm_lr": 2e-3}, **sizes)
            + entries("listops", _TINY_LISTOPS, {**_LISTOPS, "steps": 4, "eval_every": 2, "batch_size": 8},
                      {"ssm_lr": 1e-3}, **sizes))


def _small_grid() -> list[Entry]:
    return (entries("adding", {"seq_len": 200}, {**_ADDING, "steps": SMALL_ADDING_STEPS, "eval_every": 250},
                    {"ssm_lr": 2e-3})
            + entries("listops", {}, {**_LISTOPS, "steps": SMALL_LISTOPS_STEPS, "warmup_steps": 300,
                                      "eval_every": 250}, {"ssm_lr": 1e-3}))


def _medium_grid() -> list[Entry]:
    # ListOps decides the open claim: all three models, twice the small budget. Adding at the small budget for S5 and
    # the LSTM only (its claim and observation; the transformer's adding run, 320 s a seed, is in neither).
    adding = entries("adding", {"seq_len": 200}, {**_ADDING, "steps": SMALL_ADDING_STEPS, "eval_every": 250},
                     {"ssm_lr": 2e-3})
    return ([e for e in adding if e.labels["arch"] != "transformer"]
            + entries("listops", {}, {**_LISTOPS, "steps": MEDIUM_LISTOPS_STEPS,
                                      "warmup_steps": MEDIUM_LISTOPS_STEPS // 10, "eval_every": 500},
                      {"ssm_lr": 1e-3}))


def _paper_grid() -> list[Entry]:
    lra = {"max_depth": 10, "max_args": 10, "min_length": 500, "max_length": 2000, "n_train": 96000}
    # official ListOps run (§5.6): 8 x H128, P=16, J=8, batch 50, 40 epochs, ssm_lr 1e-3, lr_factor 3, wd 0.04
    lra_train = {**_LISTOPS, "batch_size": 50, "steps": 40 * 96000 // 50, "warmup_steps": 96000 // 50,
                 "eval_every": 96000 // 50}
    sizes = {"s5_width": 128, "s5_layers": 8, "s5_state": 16, "s5_blocks": 8, "lstm_hidden": 256,
             "transformer": {"n_layers": 4, "d_model": 128, "n_heads": 4}}
    return (entries("adding", {"seq_len": 200}, {**_ADDING, "steps": 20000, "eval_every": 500}, {"ssm_lr": 2e-3})
            + entries("listops", lra, lra_train, {"ssm_lr": 1e-3}, **sizes))


CARD = register_experiment(ExperimentCard(
    name="s5",
    title="S5 vs LSTM vs transformer on adding T=200 and ListOps-mini",
    paper="Smith, Warrington & Linderman, Simplified State Space Layers for Sequence Modeling (ICLR 2023, "
          "arXiv 2208.04933)",
    description="Three models at roughly equal parameter counts (S5 4 x H32, P=32, J=4: 13.1K / 17.9K; LSTM "
                "h=40 / 44: 13.3K / 17.0K; causal transformer 2 x 24: 14.6K / 15.1K) on adding T=200 (test MSE; "
                "predicting 1 gives 1/6) and ListOps-mini (depth 6, 5 arguments, 50 < length < 300; test "
                "accuracy; majority class 12.3%). Test metric at the best validation checkpoint.",
    grid=_paper_grid,
    metric="accuracy",
    split="test",
    scales={
        "tiny": Scale(seeds=(0,), grid=_tiny_grid, expected_seconds=50,
                      note="plumbing only: adding T=20 and a depth-3 ListOps, 4 steps, width 8."),
        "small": Scale(seeds=(0,), grid=_small_grid, workers=1, expected_seconds=537,
                       note=f"adding T=200: {SMALL_ADDING_STEPS} Adam steps (lr 2e-3, batch 32, no clipping, fresh "
                            f"sequences each step). ListOps-mini (20k/2k/2k): {SMALL_LISTOPS_STEPS} AdamW steps "
                            "(lr 3e-3, wd 0.04, S5 ssm_lr 1e-3 without wd; 300 warm-up steps, cosine; batch 32, "
                            "about 4.8 epochs)."),
        "medium": Scale(seeds=(0, 1, 2), grid=_medium_grid, workers=2, expected_seconds=1730,
                        note=f"3 seeds. ListOps-mini with all three models: {MEDIUM_LISTOPS_STEPS} AdamW steps (twice "
                             f"small's; about 9.6 epochs; {MEDIUM_LISTOPS_STEPS // 10} warm-up steps, validated "
                             f"every 500), otherwise as small. Adding T=200 as small ({SMALL_ADDING_STEPS} steps) for "
                             "S5 and the LSTM only (the transformer's adding run is in no claim). Measured: 28 min 50 "
                             "s through a local 2-CPU Ray cluster (2026-12-07, light load); estimated 27 min from "
                             "1-thread CPU per step in a pilot under load (S5 27, LSTM 36, transformer 57 ms on "
                             "ListOps; 2.8 s per 2k-validation of the transformer) "
                             "and the small run's adding times, two 1-thread runs at a time (Ray, or 2 workers)."),
        "paper": Scale(seeds=(0, 1, 2), grid=None, workers=1,
                       note="adding T=200 for 20k steps; LRA ListOps (depth 10, 10 arguments, 500 < length < "
                            "2000, 96k training expressions) with the official S5 ListOps settings (8 x H128, "
                            "P=16, J=8, batch 50, 40 epochs) and width-matched baselines. Defined, not run."),
    },
    causes={
        "s5_beats_transformer_on_listops": Cause("budget",
            "One seed at small (S5 0.289 vs the transformer 0.294). At medium (3 seeds, twice the steps) it holds "
            "by the claim's rule, 0.3285 +- 0.018 vs 0.3258 +- 0.011, but the 0.27-point margin is inside the seed "
            "spread: a tie at this size, not the paper's 26 points (LRA's 4 x 512 Transformer at lengths "
            "500-2,000; ours a causal 2 x 24 at 51-184). See the medium page.", scales=("small",)),
    },
    claims=[
        Claim("s5_leaves_adding_plateau", f"S5 leaves the adding T=200 plateau within the small budget: test MSE "
              f"< {PLATEAU_FRACTION} x the trivial baseline's (predict 1: 1/6).", lambda r: _adding(r, "s5", "<")),
        Claim("s5_beats_transformer_on_listops", "S5 has a higher test accuracy than the transformer on "
              "ListOps-mini (the paper's Table 1, LRA ListOps: S5 62.15% vs Transformer 36.37%).",
              _beats_on_listops("transformer")),
        Claim("s5_beats_listops_majority", "S5 beats the majority class on ListOps-mini by at least "
              f"{MAJORITY_MARGIN * 100:.0f} points of test accuracy.", _check_majority),
    ],
    observations=[
        Claim("s5_beats_lstm_on_listops", "S5 has a higher test accuracy than the LSTM on ListOps-mini. Not a claim "
              "of the paper, whose ListOps table (LRA) has no LSTM; kept for its numbers (issue 20).",
              _beats_on_listops("lstm")),
        Claim("lstm_stays_on_adding_plateau", "The parameter-matched LSTM does not leave the adding T=200 plateau "
              f"within the same budget (test MSE >= {PLATEAU_FRACTION} x baseline). Not a claim of the paper, "
              "which has no adding experiment and no LSTM baseline; from the spec's calibration run (§7).",
              lambda r: _adding(r, "lstm", ">=")),
    ],
    plots=[Plot("bars", _draw, "Left: adding T=200 test MSE (log scale; dashed: predict-1 baseline, dotted: 0.5 x "
                               "baseline). Right: ListOps-mini test accuracy (dashed: majority class, dotted: "
                               "majority + 10 points). Dots: seeds.")],
))

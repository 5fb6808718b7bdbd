"""Card ``memn2n``: end-to-end memory networks on bAbI 1k, trained jointly on all 20 tasks (spec §2).

Sukhbaatar, Szlam, Weston & Fergus, "End-To-End Memory Networks" (NeurIPS 2015, arXiv 1503.08895). The paper's
bAbI 1k numbers are mean test errors over the 20 tasks: PE LS RN 13.9% (best of 10 runs per task) and 12.4% when
trained jointly on all tasks; 1 hop PE LS joint 25.8%; BoW 25.1% (spec §2.5).

What this card runs: **joint training** (one model answers all 20 tasks; the 10% validation split is carved from
each task's training file with a fixed seed), five models from the same code:

* ``pe``: the ``memn2n`` preset: 3 hops, position encoding, temporal encoding, linear start (the softmax returns
  when the validation loss stops falling: ``training.hooks.PlateauSwitchHook``), random noise 10%, adjacent
  tying;
* ``pe_1hop``: the same with one hop (the multi-hop claim);
* ``bow``: ``memn2n_bow``, the same as ``pe`` with bag-of-words sentences (only the encoding differs);
* ``pe_plain`` and ``bow_plain``: PE and BoW, 3 hops, with neither LS nor RN: the paper's "PE" (20.3%) and "BoW"
  (25.1%) columns, the pair the claim ``pe_beats_bow`` compares (issue 20: the claim first compared ``pe`` with
  ``bow``, both with LS and RN, a pair the paper's table does not have; that check is the observation
  ``pe_beats_bow_ls_rn``).

Selection, as the paper: of the seeds of one model, the run with the lowest **validation** error (mean over the
tasks) is the model's result ("best of"); the mean over seeds is reported beside it. The claims are judged on
the best-of runs.

How small differs from the paper: d = 20 instead of the joint setting's 50 (2.5x cheaper per step), Adam (lr
1e-2 halved every 2000 steps, batch 32, gradient norm clipped at 40) instead of SGD at lr 0.01 halved every 15
epochs (in two 4000-step trials under load, Adam at 1e-2 reached a mean validation error of 30% where 5e-3 reached
35%), and about 11 epochs instead of 60 (the budget of 15 minutes on 2 cores), 3 seeds instead of 10. The
``paper`` scale defines the joint setting of the Matlab code (d = 50, SGD lr 0.01 halved every 15 epochs, 60
epochs, 10 seeds); it is not run here.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from seqzoo.experiments.card import (
    Cause,
    Claim,
    ClaimResult,
    Entry,
    EntryResult,
    ExperimentCard,
    MissingResult,
    Results,
    Scale,
    Table,
)
from seqzoo.experiments.claims import all_held
from seqzoo.experiments.registry import register_experiment

_PLAIN = {"hops": 3, "linear_start": False, "random_noise": 0.0}  # the paper's PE and BoW columns: no LS, no RN
ARCHS = {"pe": ("memn2n", {"hops": 3}), "pe_1hop": ("memn2n", {"hops": 1}), "bow": ("memn2n_bow", {"hops": 3}),
         "pe_plain": ("memn2n", _PLAIN), "bow_plain": ("memn2n_bow", _PLAIN)}
TASKS = tuple(range(1, 21))
# Per-task bAbI 1k test error (%) of PE LS RN (spec §2.5: the Matlab code as given by the python port) ...
PAPER_PER_TASK = (0.1, 8.2, 41.8, 4.4, 13.7, 7.9, 20.3, 11.7, 13.6, 9.7, 0.7, 0.0, 0.3, 0.9, 0.0, 0.4, 51.0, 10.5,
                  81.4, 0.0)
# ... and of PE LS RN trained jointly on all 20 tasks (the setting this card runs).
PAPER_JOINT = (0.0, 13.1, 23.4, 5.9, 12.9, 3.7, 22.9, 9.1, 2.7, 7.2, 0.8, 0.1, 0.1, 4.2, 0.0, 1.2, 43.6, 10.5, 86.7,
               0.0)
TASK1_MAX = 1.0  # task 1 test error <= 1% (paper 0.1 / 0.0)
MEAN_MAX = 20.0  # mean test error over the 20 tasks <= 20% (paper 13.9 per task, 12.4 joint)
PASS_MAX = 5.0  # a task "passes" at <= 5% test error (spec §2.4)


# ----- best of seeds by validation error ----------------------------------------------------------------------------

def _entry(results: Results, arch: str) -> EntryResult:
    hit = results.find(arch=arch)
    if hit is None:
        raise MissingResult(f"no result for arch={arch}")
    return hit


def best_index(results: Results, arch: str) -> int:
    """The run (index into the per-seed values) with the lowest validation error (mean over the tasks)."""
    valid = _entry(results, arch).metrics.get("valid", {}).get("error")
    if valid is None:
        raise MissingResult(f"no valid 'error' for arch={arch}")
    finite = [(v, i) for i, v in enumerate(valid.values) if math.isfinite(v)]
    if not finite:
        raise MissingResult(f"arch={arch}: no run has a finite validation error")
    return min(finite)[1]


def best_of(results: Results, arch: str, metric: str = "error") -> float:
    """Test ``metric`` of the run with the lowest validation error (the paper's selection)."""
    st = _entry(results, arch).metrics.get("test", {}).get(metric)
    if st is None:
        raise MissingResult(f"no test {metric!r} for arch={arch}")
    return st.values[best_index(results, arch)]


def seed_mean(results: Results, arch: str, metric: str = "error") -> tuple[float, float, list[float]]:
    """Mean, sample std and per-seed values of a test metric."""
    st = _entry(results, arch).metrics.get("test", {}).get(metric)
    if st is None:
        raise MissingResult(f"no test {metric!r} for arch={arch}")
    return st.mean, st.std, st.values


def _numbers(results: Results, arch: str, metric: str) -> dict[str, Any]:
    mean, std, vals = seed_mean(results, arch, metric)
    return {f"{arch}_best": round(best_of(results, arch, metric), 2), f"{arch}_mean": round(mean, 2),
            f"{arch}_std": round(std, 2), f"{arch}_seeds": [round(v, 2) for v in vals]}


# ----- claims ----------------------------------------------------------------------------------------------------

def _check_task1(results: Results) -> ClaimResult:
    nums = {**_numbers(results, "pe", "error_t1"), "paper": PAPER_PER_TASK[0], "paper_joint": PAPER_JOINT[0]}
    best = nums["pe_best"]
    return all_held([(best <= TASK1_MAX, f"PE LS RN best-of task 1 test error {best:g}% (mean over seeds "
                                         f"{nums['pe_mean']:g}%)")], nums, f"the best-of error <= {TASK1_MAX:g}%")


def _check_mean(results: Results) -> ClaimResult:
    nums = {**_numbers(results, "pe", "error"), "paper": 13.9, "paper_joint": 12.4,
            "tasks_passed_best": sum(best_of(results, "pe", f"error_t{t}") <= PASS_MAX for t in TASKS
                                     if f"error_t{t}" in _entry(results, "pe").metrics.get("test", {}))}
    best = nums["pe_best"]
    return all_held([(best <= MEAN_MAX, f"PE LS RN best-of mean test error {best:g}% (mean over seeds "
                                        f"{nums['pe_mean']:g}%)")], nums, f"the best-of mean error <= {MEAN_MAX:g}%")


def _check_hops(results: Results) -> ClaimResult:
    parts, nums = [], {}
    for t in (2, 3):
        three, one = best_of(results, "pe", f"error_t{t}"), best_of(results, "pe_1hop", f"error_t{t}")
        m3, m1 = seed_mean(results, "pe", f"error_t{t}")[0], seed_mean(results, "pe_1hop", f"error_t{t}")[0]
        parts.append((three < one, f"task {t}: 3 hops {three:g}% vs 1 hop {one:g}% best-of (means over seeds "
                                   f"{m3:.1f}% vs {m1:.1f}%)"))
        nums.update({f"t{t}_3hops_best": round(three, 2), f"t{t}_1hop_best": round(one, 2),
                     f"t{t}_3hops_mean": round(m3, 2), f"t{t}_1hop_mean": round(m1, 2)})
    return all_held(parts, nums, "3 hops have the lower best-of test error on both tasks")


def _pe_vs_bow(results: Results, pe_arch: str, bow_arch: str, paper: dict[str, float]) -> ClaimResult:
    """PE ``pe_arch`` below BoW ``bow_arch`` in best-of mean test error (the paper's columns in ``paper``)."""
    pe, bow = best_of(results, pe_arch), best_of(results, bow_arch)
    nums = {**_numbers(results, pe_arch, "error"), **_numbers(results, bow_arch, "error"), **paper}
    return all_held([(pe < bow, f"mean test error {pe_arch} {pe:g}% vs {bow_arch} {bow:g}% best-of (means over "
                                f"seeds {nums[pe_arch + '_mean']:g}% vs {nums[bow_arch + '_mean']:g}%)")], nums,
                    f"{pe_arch} has the lower best-of mean error")


def _check_pe_bow(results: Results) -> ClaimResult:
    return _pe_vs_bow(results, "pe_plain", "bow_plain", {"paper_pe": 20.3, "paper_bow": 25.1})


def _check_pe_bow_ls_rn(results: Results) -> ClaimResult:
    return _pe_vs_bow(results, "pe", "bow", {"paper_pe_ls_rn": 13.9})


# ----- the per-task table ----------------------------------------------------------------------------------------

def per_task_table(results: Results) -> str:
    """Test error (%) per task: the paper's two PE LS RN columns beside this card's runs (best-of and mean)."""
    archs = [a for a in ARCHS if results.has(arch=a)]
    if not archs:
        raise MissingResult("no runs")
    head = "| task | paper PE LS RN (per task) | paper PE LS RN (joint) | " + " | ".join(
        f"{a} best-of | {a} mean ± std" for a in archs) + " |"
    lines = [head, "|" + "---|" * (3 + 2 * len(archs))]
    rows = [(f"{t}", f"error_t{t}", PAPER_PER_TASK[t - 1], PAPER_JOINT[t - 1]) for t in TASKS]
    rows.append(("**mean**", "error", round(statistics.fmean(PAPER_PER_TASK), 1),
                 round(statistics.fmean(PAPER_JOINT), 1)))
    for label, metric, paper, joint in rows:
        cells = []
        for a in archs:
            try:
                mean, std, _ = seed_mean(results, a, metric)
                cells += [f"{best_of(results, a, metric):.1f}", f"{mean:.1f} ± {std:.1f}"]
            except MissingResult:
                cells += ["—", "—"]
        lines.append(f"| {label} | {paper:g} | {joint:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----- scales ----------------------------------------------------------------------------------------------------

SMALL_STEPS = 6000
_TRAIN = {"optimizer": "adam", "lr": 1e-2, "schedule": "step", "step_size": 2000, "gamma": 0.5, "batch_size": 32,
          "clip_norm": 40.0, "eval_batch_size": 1000}


def entries(task_args: dict[str, Any], model_args: dict[str, Any], train: dict[str, Any]) -> list[Entry]:
    """The five models (PE LS RN 3 hops and 1 hop, BoW LS RN, PE and BoW without LS/RN) on the joint task."""
    return [Entry(model=preset, task="babi", model_args={**model_args, **args}, task_args=dict(task_args),
                  labels={"arch": arch}, train=dict(train)) for arch, (preset, args) in ARCHS.items()]


def _tiny_grid() -> list[Entry]:
    return entries({"tasks": "1,2,3"}, {"d_model": 8}, {**_TRAIN, "steps": 6, "eval_every": 3})


def _small_grid() -> list[Entry]:
    return entries({"tasks": "all"}, {"d_model": 20}, {**_TRAIN, "steps": SMALL_STEPS, "eval_every": 250})


def _paper_grid() -> list[Entry]:
    # config_babi_joint.m: d = 50, SGD lr 0.01 halved every 15 epochs, 60 epochs of 18k questions, batch 32,
    # clip 40; LS in the Matlab code is a fixed 30 epochs, here the paper's rule (validation loss stops falling)
    epoch = 18000 // 32
    return entries({"tasks": "all"}, {"d_model": 50},
                   {"optimizer": "sgd", "lr": 0.01, "schedule": "step", "step_size": 15 * epoch, "gamma": 0.5,
                    "batch_size": 32, "clip_norm": 40.0, "steps": 60 * epoch, "eval_every": epoch,
                    "eval_batch_size": 1000})


CARD = register_experiment(ExperimentCard(
    name="memn2n",
    title="End-to-end memory networks on bAbI 1k (joint training on the 20 tasks)",
    paper="Sukhbaatar, Szlam, Weston & Fergus, End-To-End Memory Networks (NeurIPS 2015, arXiv 1503.08895)",
    description="MemN2N PE LS RN (3 hops, adjacent tying), the same with 1 hop, and with bag-of-words sentences, "
                "and PE and BoW with neither LS nor RN (the paper's PE and BoW columns), trained jointly on the 20 "
                "bAbI 1k tasks (10% of each task's training questions held out for validation). Metric: test "
                "error (%), per task and the mean over the 20 tasks; each model's result is its seed with the "
                "lowest validation error (best-of, as the paper), the mean over seeds beside it. Paper: PE LS RN "
                "13.9% (per task) / 12.4% (joint), 1 hop 25.8%, PE 20.3%, BoW 25.1%.",
    grid=_paper_grid,
    metric="error",
    split="test",
    scales={
        "tiny": Scale(seeds=(0,), grid=_tiny_grid, expected_seconds=30,
                      note="plumbing only: tasks 1-3 jointly, d = 8, 6 steps."),
        # measured 2026-12-07 16:30 through the job queue (15 runs, other helpers' processes on the same 2 cores):
        # 327 s wall, 515 s user CPU; the 9-run grid before it took 185 s on idle cores
        "small": Scale(seeds=(0, 1, 2), grid=_small_grid, workers=2, expected_seconds=330,
                       note=f"joint training on all 20 tasks (18k training questions), d = 20, {SMALL_STEPS} Adam "
                            "steps (lr 1e-2 halved every 2000 steps, batch 32, clip 40; about 11 epochs), "
                            "validation every 250 steps, the "
                            "linear start ends at the first evaluation without a new lowest validation loss; 3 "
                            "seeds per model."),
        "paper": Scale(seeds=tuple(range(10)), grid=None, workers=2,
                       note="the Matlab code's joint setting: d = 50, SGD lr 0.01 halved every 15 epochs, 60 "
                            "epochs, 10 seeds. Defined, not run."),
    },
    causes={
        "mean_error_le_20pct": Cause("budget",
            "The best seed's validation error was still falling about 3 points per 1,000 steps at the end (52.5 "
            'at 1k to 24.1 at 6k steps, about 11 epochs); the small scale uses about a third of its 15-minute '
            'budget.'),
    },
    claims=[
        Claim("task1_error_le_1pct", f"Task 1 (single supporting fact): test error <= {TASK1_MAX:g}% (paper 0.1% "
              "per task, 0.0% joint).", _check_task1),
        Claim("mean_error_le_20pct", f"Mean test error over the 20 tasks <= {MEAN_MAX:g}% (paper 13.9% best of 10 "
              "per task, 12.4% joint).", _check_mean),
        Claim("three_hops_beat_one_on_tasks_2_3", "3 hops have a lower test error than 1 hop on tasks 2 and 3 (two "
              "and three supporting facts: multi-hop reasoning).", _check_hops),
        Claim("pe_beats_bow", "Position encoding has a lower mean test error than bag of words, both with 3 hops "
              "and neither with linear start nor random noise (the paper's PE and BoW columns: 20.3% vs 25.1%).",
              _check_pe_bow),
    ],
    observations=[
        Claim("pe_beats_bow_ls_rn", "PE LS RN has a lower mean test error than BoW with LS and RN (the claim's first "
              "check, issue 20; the paper has no BoW LS RN column).", _check_pe_bow_ls_rn),
    ],
    tables=[Table("Per-task test error (%)", per_task_table,
                  "Paper columns from spec §2.5 (PE LS RN: the Matlab code's per-task runs as given by the python "
                  "port, and its joint run). This card's columns: the best-of run (lowest validation error) and the "
                  "mean ± std over seeds, per model.")],
))

"""Card ``rns-rnn``: stack RNNs on the five CFL tasks (DuSell & Chiang 2022; spec §1.5-1.9).

Five models with the same 20-unit LSTM controller: the plain LSTM, the superposition stack (Joulin & Mikolov),
the stratification stack (Grefenstette et al.), the NS-RNN (normalized nondeterministic stack) and the RNS-RNN
(unnormalized), on marked / unmarked / padded reversal, Dyck and the hardest CFL. The metric is ``ce_minus_bound``:
test cross-entropy minus the information-theoretic lower bound of the same strings (nats per symbol), so "lowest
cross-entropy" and "closest to the bound" are the same ordering on one test set. NS variants use |Q|=2, |Γ|=3 on
marked/unmarked reversal and Dyck and |Q|=3, |Γ|=3 on padded reversal and the hardest CFL (spec §1.7).

The NS dynamic program costs O(n^3), so the small scale shortens the strings (the issue allows it): train and
validation lengths 12-24 instead of 40-80, test lengths 12-32 instead of 40-100, and a fixed step budget instead of
200 epochs with early stopping (see the small scale's note).

The medium scale trains at the paper's lengths (train/validation 40-80, test 40-100) on marked reversal only, the
task that decides both claims at small scale (see its note): every claim is judged task by task, so a task
without runs leaves its part undecided while a task with runs can fail the claim.

"Lowest cross-entropy" is claimed as the paper states it (abstract: lower cross-entropy than all previous stack
RNNs on the five tasks) with the paper's model selection: per model and task the run with the lowest validation
cross-entropy (the paper: best of 4 learning rates x 5 restarts; here: best of the scale's seeds), compared with
the superposition, stratification and NS-RNN stacks on every task (``rns_lowest_among_stacks``). The first wording,
lowest *mean* of all five models including the LSTM on >= 4 tasks, is kept as the observation ``rns_lowest``
(issue 20). The same comparison on the validation split (training lengths; the split the paper selects by and
plots its training curves on) is the observation ``rns_lowest_among_stacks_valid``.
"""

from __future__ import annotations

from pathlib import Path

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
from seqzoo.experiments.claims import all_held
from seqzoo.experiments.grids import cross
from seqzoo.experiments.registry import register_experiment

TASKS = ("cfl-marked-reversal", "cfl-unmarked-reversal", "cfl-padded-reversal", "cfl-dyck", "cfl-hardest")
MODELS = ("lstm", "superposition", "stratification", "ns_rnn", "rns_rnn")
_PRESET = {"lstm": "lstm", "superposition": "superposition_rnn", "stratification": "stratification_rnn",
           "ns_rnn": "ns_rnn", "rns_rnn": "rns_rnn"}
_BIG_PDA = ("cfl-padded-reversal", "cfl-hardest")  # |Q| = 3 there (spec §1.7)
NEAR_BOUND_TASKS = ("cfl-marked-reversal", "cfl-dyck")
NEAR_BOUND = 0.1  # nats per symbol, as the issue states the claim
MIN_WINS = 4  # the observation ``rns_lowest`` (the first wording)
STACKS = ("superposition", "stratification", "ns_rnn")  # the previous stack RNNs of the paper's abstract
SELECT_SPLIT = "valid"  # model selection split (the paper: best validation cross-entropy)
MEDIUM_TASKS = ("cfl-marked-reversal",)  # the medium scale's cut (its note says why)
MEDIUM_STEPS = 800


def _model_args(arch: str, task: str, hidden: int) -> dict:
    args: dict = {"d_model": hidden}
    if arch in ("ns_rnn", "rns_rnn"):
        args["layer_kwargs"] = {"n_states": 3 if task in _BIG_PDA else 2, "n_symbols": 3}
    return args


def _entries(hidden: int, lengths: tuple[int, int, int, int], n_valid: int, n_test: int,
             tasks: tuple[str, ...] = TASKS, models: tuple[str, ...] = MODELS) -> list[Entry]:
    lo, hi, tlo, thi = lengths
    task_args = {"min_length": lo, "max_length": hi, "test_min_length": tlo, "test_max_length": thi,
                 "n_valid": n_valid, "n_test_per_length": n_test}
    return cross({m: lambda t, m=m: (_PRESET[m], _model_args(m, t, hidden)) for m in models},
                 {t: (t, task_args) for t in tasks})


def _table(results: Results) -> dict[str, float]:
    return {f"{t}/{m}": round(results.mean(arch=m, task=t), 4) for t in TASKS for m in MODELS
            if results.has(arch=m, task=t)}


def _check_near_bound(results: Results) -> ClaimResult:
    parts, numbers = [], {}
    for t in NEAR_BOUND_TASKS:
        if not results.has(arch="rns_rnn", task=t):
            parts.append((None, f"{t}: no RNS-RNN runs at this scale"))
            continue
        st = results.stat(arch="rns_rnn", task=t)
        numbers[t] = round(st.mean, 4)
        parts.append((st.mean <= NEAR_BOUND, f"{t} {st}"))
    return all_held(parts, numbers, f"each mean <= {NEAR_BOUND:g}")


def _check_lowest(results: Results) -> ClaimResult:
    wins, decided, best = 0, 0, {}
    for t in TASKS:
        present = [m for m in MODELS if results.has(arch=m, task=t)]
        if "rns_rnn" not in present or len(present) < 2:
            continue
        decided += 1
        means = {m: results.mean(arch=m, task=t) for m in present}
        winner = min(means, key=means.get)
        best[t] = winner
        wins += winner == "rns_rnn"
    if decided < MIN_WINS:
        return ClaimResult(None, {"wins": wins, "tasks": decided}, f"only {decided} tasks have results")
    numbers = {"wins": wins, "tasks": decided, **{f"best/{t}": m for t, m in best.items()}, **_table(results)}
    return ClaimResult(wins >= MIN_WINS, numbers,
                       f"RNS-RNN has the lowest mean test CE (minus bound) on {wins} of {decided} tasks; best per "
                       f"task: {best} (held if >= {MIN_WINS})")


def selected(results: Results, arch: str, task: str, split: str | None = None) -> tuple[float, int]:
    """``(metric on split, seed)`` of the run of ``arch`` on ``task`` with the lowest validation metric (the paper's
    model selection; ``ce_minus_bound`` on both splits, so seeds with different validation strings compare fairly).
    ``split`` defaults to the results' split (test)."""
    split = split or results.split
    hit = results.find(arch=arch, task=task)
    if hit is None:
        raise MissingResult(f"no result for arch={arch}, task={task}")
    try:
        valid = hit.metrics[SELECT_SPLIT][results.metric].values
        test = hit.metrics[split][results.metric].values
    except KeyError:
        raise MissingResult(f"no {SELECT_SPLIT} and {split} {results.metric!r} for {arch} on {task}") from None
    if len(valid) != len(test) or len(test) != len(hit.seeds):
        raise MissingResult(f"{arch} on {task}: {len(valid)} validation vs {len(test)} test values per seed")
    best = min(range(len(valid)), key=valid.__getitem__)
    return test[best], hit.seeds[best]


def _lowest_among_stacks(results: Results, split: str | None = None) -> ClaimResult:
    """RNS-RNN's selected run below each previous stack's selected run on ``split``, task by task (a task without
    runs of all four models is an undecided part, so one failing task decides NOT HELD)."""
    parts, numbers = [], {}
    for t in TASKS:
        if not all(results.has(arch=m, task=t) for m in ("rns_rnn", *STACKS)):
            parts.append((None, f"{t}: not every stack model has runs at this scale"))
            continue
        picks = {m: selected(results, m, t, split) for m in ("rns_rnn", *STACKS)}
        rns = picks["rns_rnn"][0]
        numbers[t] = {m: round(v, 4) for m, (v, _) in picks.items()}
        numbers[f"{t}/seed"] = {m: seed for m, (_, seed) in picks.items()}
        others = ", ".join(f"{m} {v:.4g}" for m, (v, _) in picks.items() if m != "rns_rnn")
        parts.append((all(rns < v for m, (v, _) in picks.items() if m != "rns_rnn"),
                      f"{t}: rns_rnn {rns:.4g} vs {others}"))
    return all_held(parts, numbers, f"on every task the selected RNS-RNN run is below the selected run of each "
                                    f"previous stack RNN on {split or results.split} (run selected by validation CE "
                                    f"minus bound)")


def _check_lowest_among_stacks(results: Results) -> ClaimResult:
    return _lowest_among_stacks(results)


def _check_lowest_among_stacks_valid(results: Results) -> ClaimResult:
    return _lowest_among_stacks(results, SELECT_SPLIT)


def _draw(results: Results, path: Path) -> None:
    from seqzoo.experiments.plots import Ref, grouped_bars, panels, save

    fig, (ax,) = panels(1, width=7.5, height=3.4)
    grouped_bars(ax, [t.removeprefix("cfl-") for t in TASKS],
                 {m: [results.get(arch=m, task=t) for t in TASKS] for m in MODELS},
                 refs=[Ref(NEAR_BOUND, f"{NEAR_BOUND} nats")], ylabel="test CE − lower bound (nats)")
    save(fig, path)


_TRAIN = {"batch_size": 10, "optimizer": "adam", "clip_norm": 5.0, "eval_batch_size": 100}

CARD = register_experiment(ExperimentCard(
    name="rns-rnn",
    title="RNS-RNN: stack RNNs on five context-free languages",
    paper="DuSell & Chiang, Learning Hierarchical Structures with Differentiable Nondeterministic Stacks (ICLR 2022)",
    description="LSTM, superposition, stratification, NS-RNN and RNS-RNN (20-unit LSTM controller) on marked, "
                "unmarked and padded reversal, Dyck and the hardest CFL; test cross-entropy minus the "
                "information-theoretic lower bound.",
    grid=lambda: _entries(20, (40, 80, 40, 100), 1000, 100),
    metric="ce_minus_bound",
    split="test",
    scales={
        "tiny": Scale(train={**_TRAIN, "steps": 2, "eval_every": 2, "lr": 0.005},
                      grid=lambda: _entries(4, (6, 8, 6, 8), 4, 1, tasks=("cfl-marked-reversal", "cfl-dyck")),
                      note="plumbing only: two tasks, hidden 4, lengths 6-8, 2 steps", expected_seconds=20),
        "small": Scale(train={**_TRAIN, "steps": 1100, "eval_every": 100, "lr": 0.005}, seeds=(0, 1),
                       grid=lambda: _entries(20, (12, 24, 12, 32), 100, 10), workers=2, expected_seconds=635,
                       note="lengths reduced for the O(n^3) NS dynamic program: train/valid 12-24 (paper 40-80), "
                            "test 12-32 (paper 40-100), 100 validation strings, 10 test strings per valid length; "
                            "1,100 Adam steps of batch 10 (11,000 strings, paper: up to 200 epochs of 10,000), "
                            "lr 0.005 (one point of the paper's grid, no restarts), clip 5, best-validation "
                            "checkpoint; 2 seeds"),
        # 800 steps: from pilots of the card's models at n = 41, 61, 79 (CPU seconds per Adam step of batch 10 and per
        # evaluated string; docs/results/rns-rnn-small.md, "Medium scale") and the runner's FIFO order on 2 workers
        "medium": Scale(train={**_TRAIN, "steps": MEDIUM_STEPS, "eval_every": 100, "lr": 0.005}, seeds=(0, 1, 2),
                        grid=lambda: _entries(20, (40, 80, 40, 100), 200, 10, tasks=MEDIUM_TASKS), workers=2,
                        expected_seconds=3060,
                        note=f"the paper's lengths (train/validation 40-80, test 40-100) on marked reversal only: "
                             f"the task that decides both claims at small scale, cut from five because the O(n^3) "
                             f"stack DP costs ~1.1 CPU-s per step of batch 10 at these lengths (5 tasks x 5 models "
                             f"x 3 seeds would get ~125 steps in 60 min); all 5 models, 3 seeds, {MEDIUM_STEPS} Adam "
                             f"steps of batch 10 (8,000 strings, 0.8 of the paper's epoch), lr 0.005, clip 5, "
                             f"validation every 100 steps on 200 strings (paper 1,000), 10 test strings per valid "
                             f"length (paper 100), best-validation checkpoint; measured 50 min 57 s (2026-12-07, light "
                             f"load)"),
        "paper": Scale(train={**_TRAIN, "steps": 200000, "eval_every": 1000, "lr": 0.005,
                              "early_stopping": 10}, seeds=(0, 1, 2, 3, 4), grid=None, workers=2,
                       note="lengths 40-80 (test 40-100), 1000 validation strings, 100 test strings per length; "
                            "the paper's lr grid and restarts are not enumerated (defined, not run)"),
    },
    causes={
        "rns_near_bound": Cause("budget",
            'Every curve is still falling at 1,100-1,200 steps; continued to 3,000 steps RNS-RNN reaches 0.069 '
            'nats above the bound on validation (claim: 0.1). The stack DP agrees with the official code to '
            "float64 rounding. At medium (the paper's lengths, 800 steps, 3 seeds) every model, the LSTM included, "
            "is at 0.39-0.42 on test and every validation curve still falls at step 800. See 'Cause of the NOT "
            "HELD claims' and rns-rnn-medium.md.", scales=("small", "medium")),
        "rns_lowest_among_stacks": Cause("budget",
            "Not claim wording (the spec and the official iclr2022 scripts pin no per-task split; see 'rns_lowest_"
            "among_stacks against the paper's own results'), not implementation (the stack DP agrees with the "
            "official code; the official RNS-RNN at the card's 1,200 steps ends 0.28 above the bound, where ours "
            "does). Marked reversal decides it at small (lengths 12-32): both RNS-RNN test seeds (0.431, 0.455) "
            "above every seed of the other stacks, with every curve still falling at 1,100 steps; RNS-RNN alone, "
            "continued to 3,000 steps, fell from 0.189 to 0.069 on validation. At the paper's lengths (medium, 3 "
            "seeds) that ordering is gone: the selected RNS-RNN run is lowest on test (0.3874 vs 0.3898 / 0.4065 / "
            "0.3918), by less than the seed spread, NS-RNN lowest on validation, and all five models, the LSTM "
            "included, still on the plateau at 800 steps. Neither budget ranks the stacks; ranking them needs "
            "~3,000 steps at 40-80 (~3 h on 2 cores). See rns-rnn-medium.md."),
    },
    claims=[
        Claim("rns_near_bound", f"RNS-RNN is within {NEAR_BOUND} nats of the lower bound on marked reversal and "
              "Dyck.", _check_near_bound),
        Claim("rns_lowest_among_stacks", "With each model's run selected by validation cross-entropy (the paper's "
              "selection, there best of 4 learning rates x 5 restarts, here of the seeds), RNS-RNN has a lower "
              "test cross-entropy than the superposition, stratification and NS-RNN stacks on every one of the 5 "
              "tasks (the paper's abstract: lower cross-entropy than all previous stack RNNs on five CFL tasks).",
              _check_lowest_among_stacks),
    ],
    observations=[
        Claim("rns_lowest_among_stacks_valid", "As rns_lowest_among_stacks, on the validation split (training "
              "lengths, the split the paper selects runs by and draws its training curves on) instead of test.",
              _check_lowest_among_stacks_valid),
        Claim("rns_lowest", f"RNS-RNN has the lowest mean cross-entropy of all models (LSTM included) on at least "
              f"{MIN_WINS} of the 5 tasks (the issue's first wording: means of seeds, not the paper's selection).",
              _check_lowest),
    ],
    plots=[Plot("gap", _draw, "Test cross-entropy minus the lower bound per model and task (mean ± std over "
                "seeds; dashed: 0.1 nats).")],
))

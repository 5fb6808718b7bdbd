"""Card ``brt``: Block-Recurrent Transformer vs its sliding-window baseline (spec stacks-memory-... §3.4, §3.5).

Hutchins, Schlag, Wu, Dyer & Neyshabur, "Block-Recurrent Transformers" (NeurIPS 2022, arXiv 2203.07852). The paper
trains 12-24 layer models for 500k steps on PG19 / arXiv / GitHub; what fits a shared 2-core CPU is the spec's small
reproduction (§3.5): a synthetic long-range recall task and a character LM, three models from one code
(``seqzoo.layers.block_recurrent``) at equal width and depth:

* ``slide``: ``slide_xl``, the sliding-window Transformer-XL (blocks of W, each token sees its block and the
  previous one; no recurrence);
* ``brt``: ``brt``, Rec:fixed:skip (S state vectors in the middle layer, fixed gate, no FFN on the states);
* ``brt_lstm``: ``brt_lstm_gate``, the same with the LSTM gate (the paper's gate ablation).

Tasks:

* ``title-recall``: a random 8-capital-letter title repeated every ``period +- jitter`` characters of filler words
  in documents of ``seq_len`` characters, one document per sequence (the states run across the document's blocks
  inside one forward). ``recall_bpc``: bits per character on the repeated title letters whose previous occurrence
  is outside the predicting token's window (a memoryless model guesses: log2 26 = 4.70); ``filler_bpc`` on the
  filler characters. The period exceeds the depth x W receptive field of the sliding-window stack.
* ``lm`` tiny-shakespeare, character level, segments of ``bptt`` characters with the state (cache and recurrent
  states) carried from segment to segment (truncated BPTT; evaluation on carried streams).

Claims (issue 16): on title letters beyond the window, BRT is >= 1 bit/char below Slide; on filler characters the
two are within 5% of each other; the LSTM gate is not better than the fixed gate (char-LM test bpc; the paper's
ablation, where the LSTM gate lags); a BRT training step costs no more than a Slide step with one more layer
(``step_time_as_extra_layer``, issue 20). The paper's cost statement is that comparison: "the same cost in both
computation time and parameter count as a conventional transformer layer" (abstract), shown in Table 1 against
Slide:13, the 13-layer sliding-window model cost-matched to the 12-layer Rec:fixed:skip (relative step time 1.00
vs 0.99, TPU v4, d=1024, W=S=512, meliad's jit-compiled block loop). Held if BRT's fwd+bwd time is at most
``EXTRA_LAYER_LIMIT`` x that of Slide with depth + 1 (10% for the timing spread of a CPU). The issue's first
wording, BRT <= 1.3x a Slide step of the same depth, is kept as the observation ``step_time``. Both ratios are
measured back to back in one process on the entry's batch shape (``derive``: ``time_vs_slide`` and
``time_vs_deeper_slide``, median of 5 interleaved rounds, written once into each run folder; a run folder written
before the deeper Slide was timed has no ``time_vs_deeper_slide``, so the claim is undecided until its
``step_time.json`` is deleted and the card re-judged on idle cores).

The fixed gate is the paper's and meliad's (``transformer/nn_components.py`` at cc1aef5, the ``bias`` gate):
``c' = c g + z (1 - g)`` on the state projection ``z``, ``g = sigmoid(b_g)`` with ``b_g ~ N(0, 0.1)``, so a fresh gate
keeps about half of the state per block. The paper's "bias toward remembering" is the LSTM gate's -1 / +1 input /
forget offsets; the card adds no ``remember_bias``.

How small differs from the paper: d=64, 3 layers, W=32, S=32 instead of d=1024, 12 layers, W=512, S=512; no
Adafactor (Adam with cosine decay); a few hundred steps; title recall is the spec's synthetic task, not PG19.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from seqzoo.experiments.card import Cause, Claim, ClaimResult, Entry, ExperimentCard, Plot, Results, Scale
from seqzoo.experiments.claims import compare, means
from seqzoo.experiments.registry import register_experiment

ARCHS = ("slide", "brt", "brt_lstm")
PRESETS = {"slide": "slide_xl", "brt": "brt", "brt_lstm": "brt_lstm_gate"}
RECALL_MARGIN = 1.0  # bits/char BRT must gain over Slide on beyond-window title letters
FILLER_TOLERANCE = 0.05  # relative difference of filler bpc
STEP_TIME_LIMIT = 1.3  # observation (the first wording): BRT step time / Slide step time, same depth
EXTRA_LAYER_LIMIT = 1.10  # claim: BRT step time / step time of Slide with one more layer (paper: 0.99 / 1.00)
TIMING_FILE = "step_time.json"


def model_args(arch: str, d_model: int = 64, depth: int = 3, window: int = 32, n_states: int = 32,
               n_heads: int = 4) -> dict[str, Any]:
    """Model arguments of ``arch`` (the recurrent layer is the middle one)."""
    rec = [] if arch == "slide" else [depth // 2]
    return {"d_model": d_model, "layer_kwargs": {"depth": depth, "n_heads": n_heads, "window": window,
                                                 "n_states": n_states, "d_ff": 4 * d_model,
                                                 "recurrent_layers": rec}}


def entries(recall_args: dict[str, Any], recall_train: dict[str, Any], lm_args: dict[str, Any] | None,
            lm_train: dict[str, Any], **sizes: Any) -> list[Entry]:
    out = [Entry(PRESETS[a], "title-recall", model_args(a, **sizes), dict(recall_args), {"arch": a, "task": "recall"},
                 dict(recall_train)) for a in ARCHS]
    if lm_args is not None:
        out += [Entry(PRESETS[a], "lm", model_args(a, **sizes), dict(lm_args), {"arch": a, "task": "lm"},
                      dict(lm_train)) for a in ARCHS]
    return out


# ----- step time (derive) ----------------------------------------------------------------------------------------

def step_time_ratios(entry: Entry, batch_size: int, seq_len: int, rounds: int = 5) -> dict[str, float]:
    """Medians over ``rounds`` of (fwd+bwd time of ``entry``'s model) / (the same for its Slide twin of equal depth:
    ``time_vs_slide``; and for Slide with one more layer, the paper's cost-matched baseline:
    ``time_vs_deeper_slide``), the three models interleaved in this process on one random token batch of the
    entry's shape."""
    import torch

    from seqzoo.models import create_model

    vocab = 64
    kw = {"vocab_size": vocab, "d_input": None, "d_output": vocab}
    sizes = _sizes(entry)
    own = create_model(entry.model, **entry.model_args, **kw)
    slide = create_model("slide_xl", **model_args("slide", **sizes), **kw)
    deeper = create_model("slide_xl", **model_args("slide", **{**sizes, "depth": sizes["depth"] + 1}), **kw)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (batch_size, seq_len), generator=gen)

    def once(model) -> float:
        t0 = time.perf_counter()
        nll, _ = model(x, targets=x)
        nll.mean().backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    once(own), once(slide), once(deeper)
    same, more = [], []
    for _ in range(rounds):
        t_own, t_slide, t_deeper = once(own), once(slide), once(deeper)
        same.append(t_own / t_slide)
        more.append(t_own / t_deeper)
    return {"time_vs_slide": statistics.median(same), "time_vs_deeper_slide": statistics.median(more)}


def _sizes(entry: Entry) -> dict[str, Any]:
    lk = entry.model_args["layer_kwargs"]
    return {"d_model": entry.model_args["d_model"], "depth": lk["depth"], "window": lk["window"],
            "n_states": lk["n_states"], "n_heads": lk["n_heads"]}


def derive(entry: Entry, run_dir: Path) -> dict[str, float]:
    """``step_time_ratios`` of the recurrent entries on title-recall, measured once and kept in the run folder (a
    folder timed before ``time_vs_deeper_slide`` existed keeps only ``time_vs_slide``: delete its file to re-time)."""
    if entry.labels.get("task") != "recall" or entry.labels.get("arch") == "slide":
        return {}
    path = run_dir / TIMING_FILE
    if path.exists():
        return json.loads(path.read_text())
    config = json.loads((run_dir / "config.json").read_text())
    train = config.get("train", config)
    numbers = step_time_ratios(entry, int(train.get("batch_size", 8)), int(entry.task_args.get("seq_len", 512)))
    path.write_text(json.dumps(numbers))
    return numbers


# ----- claims ----------------------------------------------------------------------------------------------------

def _nums(results: Results, task: str, metric: str) -> dict[str, Any]:
    return means(results, ARCHS, where={"task": task}, metric=metric, spread="seeds")


def _recall(results: Results) -> ClaimResult:
    nums = {**_nums(results, "recall", "recall_bpc"), "chance": 4.7004,
            "filler": _nums(results, "recall", "filler_bpc")}
    return compare(results, "brt", "slide", "<=", where={"task": "recall"}, metric="recall_bpc",
                   slack=-RECALL_MARGIN, numbers=nums)


def _filler(results: Results) -> ClaimResult:
    a = results.stat("filler_bpc", arch="brt", task="recall")
    b = results.stat("filler_bpc", arch="slide", task="recall")
    rel = abs(a.mean - b.mean) / b.mean
    return ClaimResult(rel <= FILLER_TOLERANCE, {**_nums(results, "recall", "filler_bpc"),
                                                 "relative_difference": round(rel, 4)},
                       f"|brt {a} - slide {b}| / slide = {rel:.3f} (limit {FILLER_TOLERANCE})")


def _step_time(results: Results) -> ClaimResult:
    """The observation (the issue's first wording): BRT vs Slide of the same depth."""
    st = results.stat("time_vs_slide", "derived", arch="brt", task="recall")
    lstm = results.get("time_vs_slide", "derived", arch="brt_lstm", task="recall")
    nums = {"brt_time_vs_slide": round(st.mean, 3), "per_seed": [round(v, 3) for v in st.values],
            **({"brt_lstm_time_vs_slide": round(lstm.mean, 3)} if lstm is not None else {})}
    return ClaimResult(st.mean <= STEP_TIME_LIMIT, nums,
                       f"brt fwd+bwd time / slide's = {st} (limit {STEP_TIME_LIMIT}; one process, median of 5 "
                       "interleaved rounds per run)")


def _step_time_as_extra_layer(results: Results) -> ClaimResult:
    """The claim: BRT vs Slide with one more layer (the paper's Slide:13 vs the 12-layer Rec:fixed:skip)."""
    st = results.stat("time_vs_deeper_slide", "derived", arch="brt", task="recall")
    lstm = results.get("time_vs_deeper_slide", "derived", arch="brt_lstm", task="recall")
    nums = {"brt_time_vs_deeper_slide": round(st.mean, 3), "per_seed": [round(v, 3) for v in st.values],
            **({"brt_lstm_time_vs_deeper_slide": round(lstm.mean, 3)} if lstm is not None else {}),
            "paper_rec_fixed_skip_vs_slide13": 0.99}
    return ClaimResult(st.mean <= EXTRA_LAYER_LIMIT, nums,
                       f"brt fwd+bwd time / that of slide with one more layer = {st} (limit {EXTRA_LAYER_LIMIT}; the "
                       "paper: 0.99 / 1.00; one process, median of 5 interleaved rounds per run)")


def _lstm_gate(results: Results) -> ClaimResult:
    nums = {"lm_bpc": _nums(results, "lm", "bpc"), "recall_bpc": _nums(results, "recall", "recall_bpc")}
    return compare(results, "brt_lstm", "brt", ">=", where={"task": "lm"}, metric="bpc", numbers=nums)


# ----- plot ------------------------------------------------------------------------------------------------------

def _draw(results: Results, path: Path) -> None:
    from seqzoo.experiments.plots import Ref, bars, cells, panels, save

    panels_wanted = [("recall", "recall_bpc", "title letters beyond the window"),
                     ("recall", "filler_bpc", "filler characters"), ("lm", "bpc", "tiny-shakespeare chars")]
    panels_wanted = [p for p in panels_wanted if results.has(arch="brt", task=p[0])]
    fig, axes = panels(len(panels_wanted), width=3.4)
    colors = {"slide": "#999999", "brt": "#dd8452", "brt_lstm": "#4c72b0"}
    for ax, (task, metric, title) in zip(axes, panels_wanted):
        refs = [Ref(4.7004, "log2 26")] if metric == "recall_bpc" else []
        bars(ax, cells(results, "arch", ARCHS, metric=metric, task=task), refs=refs, colors=colors, title=title,
             ylabel=f"{results.split} bits/char")
    save(fig, path)


# ----- scales ----------------------------------------------------------------------------------------------------

SMALL_RECALL_STEPS = 200
SMALL_LM_STEPS = 100
_TRAIN = {"optimizer": "adam", "lr": 3e-3, "schedule": "cosine", "warmup_steps": 50, "batch_size": 8,
          "clip_norm": 1.0, "eval_batch_size": 32}
# 384 characters: the title at 0-10, ~150 and ~300; the gap (>= 130) exceeds the 3-layer Slide's reach (4W - 1 = 127)
_RECALL = {"seq_len": 384, "title_len": 8, "period": 140, "jitter": 10, "window": 32, "n_valid": 64, "n_test": 128}
_LM = {"dataset": "tiny-shakespeare", "level": "char", "bptt": 128}


def _tiny_grid() -> list[Entry]:
    sizes = {"d_model": 16, "depth": 2, "window": 4, "n_states": 4, "n_heads": 2}
    recall = {"seq_len": 48, "title_len": 3, "period": 16, "jitter": 2, "window": 4, "n_valid": 8, "n_test": 8}
    train = {**_TRAIN, "steps": 4, "eval_every": 4, "batch_size": 4, "eval_batch_size": 512}
    return entries(recall, train, {**_LM, "bptt": 32}, train, **sizes)


def _small_grid() -> list[Entry]:
    return entries(_RECALL, {**_TRAIN, "steps": SMALL_RECALL_STEPS, "eval_every": 100}, _LM,
                   {**_TRAIN, "steps": SMALL_LM_STEPS, "eval_every": SMALL_LM_STEPS})


def _paper_grid() -> list[Entry]:
    big = {"d_model": 1024, "depth": 12, "window": 512, "n_states": 512, "n_heads": 8}
    train = {**_TRAIN, "lr": 1e-3, "steps": 500_000, "warmup_steps": 1000, "eval_every": 10_000, "batch_size": 32}
    return entries({**_RECALL, "seq_len": 4096, "period": 8 * 512, "window": 512}, train,
                   {**_LM, "bptt": 4096}, train, **big)


CARD = register_experiment(ExperimentCard(
    name="brt",
    title="Block-Recurrent Transformer vs sliding window on title recall and a char LM",
    paper="Hutchins, Schlag, Wu, Dyer & Neyshabur, Block-Recurrent Transformers (NeurIPS 2022, arXiv 2203.07852)",
    description="Slide (sliding-window Transformer-XL), BRT Rec:fixed:skip and BRT with the LSTM gate, one code, "
                "d=64, 3 layers, W=32, S=32 states in the middle layer, on title-recall (384 characters, an "
                "8-letter title every ~150) and tiny-shakespeare characters (segments of 128, carried state). "
                "Test metrics at the best validation checkpoint.",
    grid=_paper_grid,
    metric="recall_bpc",
    split="test",
    derive=derive,
    scales={
        "tiny": Scale(seeds=(0,), grid=_tiny_grid, expected_seconds=20,
                      note="plumbing only: title-recall of 48 characters and tiny-shakespeare segments of 16, "
                           "width 16, 4 steps."),
        "small": Scale(seeds=(0, 1, 2), grid=_small_grid, workers=2, expected_seconds=232,
                       note=f"title-recall: {SMALL_RECALL_STEPS} Adam steps (lr 3e-3, 50 warm-up, cosine, batch 8 "
                            f"x 384 characters, fresh documents each step); tiny-shakespeare chars: {SMALL_LM_STEPS} "
                            "steps of batch 8 x 128 with the carried state."),
        "paper": Scale(seeds=(0,), grid=None, workers=1,
                       note="the paper's 12-layer d=1024, W=512, S=512 model for 500k steps, segments of 4096. "
                            "Defined, not run."),
    },
    causes={
        "recall_beyond_window": Cause("budget",
            "BRT 4.905 vs Slide 4.886 bits/char (chance 4.70) after 200 steps (re-run after the gate fix). The "
            "card's fixed gate init is the "
            "paper's (meliad's bias gate, b_g ~ N(0, 0.1), g about 0.5; the paper's remember offsets are the LSTM "
            "gate's), so it is not an implementation difference; an extra W_z/b_z after the state projection was, "
            "and is fixed. In a 3,000-step pilot outside the card (4-letter titles, W=8) recall appeared only after "
            "1,500-2,000 steps and only with remember_bias=2 (test 3.33 bits/char); with the paper's init it stayed "
            "at 4.70 for 3,000 steps. The paper trains 500k steps."),
    },
    claims=[
        Claim("recall_beyond_window", f"On title letters whose previous occurrence is outside the window, BRT "
              f"(fixed:skip) is at least {RECALL_MARGIN:g} bit/char below Slide (Slide stays near log2 26 = 4.7).",
              _recall),
        Claim("filler_similar", f"On filler characters BRT and Slide are within {FILLER_TOLERANCE:.0%} of each "
              "other (bits/char).", _filler),
        Claim("step_time_as_extra_layer", f"A BRT training step (fwd+bwd) costs at most {EXTRA_LAYER_LIMIT}x a "
              "step of Slide with one more layer: the recurrent layer costs about one conventional layer (the "
              "paper's Table 1: Rec:fixed:skip 0.99 vs Slide:13 1.00 relative step time, TPU v4, d=1024, 12 "
              "layers, W=S=512).", _step_time_as_extra_layer),
        Claim("lstm_gate_not_better", "The LSTM gate is not better than the fixed gate (char-LM test bits/char; "
              "the paper's ablation).", _lstm_gate),
    ],
    observations=[
        Claim("step_time", f"A BRT training step (fwd+bwd) costs at most {STEP_TIME_LIMIT}x a Slide step of the same "
              "depth (the issue's first wording of 'about one extra layer'; the paper compares with Slide:13, one "
              "layer more, not with a fixed ratio).", _step_time),
    ],
    plots=[Plot("bits", _draw, "Test bits/char: left, repeated title letters beyond the window (dashed: log2 26); "
                               "middle, filler characters; right, tiny-shakespeare characters. Dots: seeds.")],
))

"""Card ``rns-rnn-lm``: the memory-limited RNS-RNN as a word-level language model on Penn Treebank (spec §1.3, §1.8).

DuSell & Chiang (ICLR 2022) also train the memory-limited ("incremental") RNS-RNN on PTB against LSTMs of equal
parameter count and report that the stack model reaches a lower test perplexity (the differences are small; the
spec could not verify the exact numbers). Two models on the ``lm`` task, trained the same way:

* ``rns``: ``rns_rnn_limited`` — an LSTM controller reading ``[x_t ; r_{t-1}]`` plus a nondeterministic stack with
  unnormalized weights and a reading over (state, top) pairs ("+S+U"), only the last ``D`` start times kept, so
  its state has a fixed size and is carried from one BPTT segment to the next.
* ``lstm``: the ``lstm`` preset (the same seqzoo LSTM cell as the controller) whose width is chosen so that its
  total parameter count (embedding + LSTM + output layer) is the closest to the RNS-RNN's.

Both read PTB as 32 contiguous parallel streams in segments of 35 tokens with the detached state carried across
segments (truncated BPTT, reset where a stream restarts), and are evaluated the same way (carried streams, every
target scored once); the metric is test perplexity at the best-validation checkpoint. The claims also report the
validation perplexities, the parameter counts and the unigram baseline (add-one smoothed training counts).

How the small scale differs from the paper (see the scale notes): the vocabulary is capped at 2,000 words (the rest
map to ``<unk>``; perplexities are therefore not comparable to published 10k-vocabulary numbers), 128 units instead
of 256, one PDA configuration (|Q| = 1, |Γ| = 3) instead of the paper's search over (|Q|, |Γ|), a window D = 10
instead of the paper's D = 35 (measured on this machine, one thread: 0.16 s of CPU per training step with D = 10, about
0.45 s with D = 35, against 0.04 s for the LSTM), Adam for a fixed number of steps (about 1.45 epochs) instead of SGD
with a random lr search, lr decay on plateaus and early stopping over up to 100 epochs, default initialization instead
of uniform ±0.05, and 3 seeds instead of 10 random-search runs per model. With the window, a pop can only return to a
stack configuration of the last D steps (runs that would expose an older one are dropped); the controller's LSTM
state still carries across segments.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from seqzoo.experiments.baselines import task_baseline
from seqzoo.experiments.card import Claim, ClaimResult, Entry, ExperimentCard, MissingResult, Plot, Results, Scale
from seqzoo.experiments.claims import beats_baseline, compare
from seqzoo.experiments.param_match import closest_width, count_params
from seqzoo.experiments.registry import register_experiment

ARCHS = ("rns", "lstm")
PTB_VOCAB = 10000  # Mikolov's PTB vocabulary (with <unk> and <eos>)


def pda_args(n_states: int, n_symbols: int, window: int) -> dict[str, int]:
    return {"n_states": n_states, "n_symbols": n_symbols, "window": window}


@functools.lru_cache(maxsize=32)
def lstm_hidden_for(target: int, vocab: int) -> int:
    """The ``lstm`` width whose total parameter count is closest to ``target`` (ties: the smaller width)."""
    return closest_width(target, lambda h: count_params("lstm", {"d_model": h}, vocab))


def model_configs(hidden: int, pda: dict[str, int], vocab: int) -> dict[str, tuple[str, dict[str, Any]]]:
    """``arch -> (preset, model_args)``: the RNS-RNN of ``hidden`` units and the parameter-matched LSTM."""
    rns = {"d_model": hidden, "n_layers": 1, "layer_kwargs": dict(pda)}
    h = lstm_hidden_for(count_params("rns_rnn_limited", rns, vocab), vocab)
    return {"rns": ("rns_rnn_limited", rns), "lstm": ("lstm", {"d_model": h, "n_layers": 1})}


def entries(hidden: int, pda: dict[str, int], vocab: int | None, **task_args: Any) -> list[Entry]:
    """Both models on word-level PTB (``vocab``: the ``max_vocab`` cap, None = the full 10k vocabulary)."""
    targs: dict[str, Any] = {"dataset": "ptb", "bptt": 35, **task_args}
    if vocab is not None:
        targs["max_vocab"] = vocab
    return [Entry(preset, "lm", args, dict(targs), {"arch": arch})
            for arch, (preset, args) in model_configs(hidden, pda, vocab or PTB_VOCAB).items()]


def _vocab_of(entry: Entry) -> int:
    return int(entry.task_args.get("max_vocab") or PTB_VOCAB)


def unigram_perplexity(task_args: dict[str, Any], split: str = "test") -> float:
    """Test perplexity of the task's unigram baseline (reads the corpus; raises FileNotFoundError without it)."""
    return task_baseline("lm", "perplexity", task_args, split=split)


# ----- claims --------------------------------------------------------------------------------------------------

def _numbers(results: Results) -> dict[str, Any]:
    """Test and validation perplexity of both models, their parameter counts and the unigram baseline."""
    out: dict[str, Any] = {}
    for arch in ARCHS:
        st = results.stat(arch=arch)
        out[f"{arch}_test_ppl"] = round(st.mean, 2)
        if st.n > 1:
            out[f"{arch}_test_ppl_std"] = round(st.std, 2)
            out[f"{arch}_test_ppl_seeds"] = [round(v, 2) for v in st.values]
        hit = results.find(arch=arch)
        valid = hit.metrics.get("valid", {}).get("perplexity") if hit else None
        if valid is not None:
            out[f"{arch}_valid_ppl"] = round(valid.mean, 2)
    for arch in ARCHS:
        entry = results.find(arch=arch).entry
        if entry.model_args:  # fabricated results have no model arguments
            out[f"{arch}_params"] = count_params(entry.model, entry.model_args, _vocab_of(entry))
    return out


def _baseline(results: Results) -> float | None:
    """The unigram test perplexity on the corpus of the results' entries (None without task arguments or data)."""
    entry = next((e.entry for e in results.entries if e.entry.task_args), None)
    if entry is None:
        return None
    try:
        return round(unigram_perplexity(entry.task_args), 2)
    except FileNotFoundError:
        return None


def _check_rns_lower(results: Results) -> ClaimResult:
    rns, lstm = results.stat(arch="rns"), results.stat(arch="lstm")
    numbers = {**_numbers(results), "unigram_test_ppl": _baseline(results),
               "difference": round(rns.mean - lstm.mean, 2)}
    out = compare(results, "rns", "lstm", "<", numbers=numbers)
    if max(rns.n, lstm.n) > 1:  # is the gap larger than the seed-to-seed spread?
        spread = max(rns.std, lstm.std)
        out.detail += (f"; the difference is {'larger' if abs(rns.mean - lstm.mean) > spread else 'not larger'} "
                       f"than the larger seed std ({spread:.2f})")
    return out


def _check_beat_unigram(results: Results) -> ClaimResult:
    base = _baseline(results)
    if base is None:
        raise MissingResult("the unigram baseline needs the corpus (task arguments and data)")
    ppl = {f"{a}_test_ppl": round(results.mean(arch=a), 2) for a in ARCHS}
    return beats_baseline(results, ARCHS, base, op="<", what="unigram", numbers={"unigram_test_ppl": base, **ppl})


# ----- plot ----------------------------------------------------------------------------------------------------

def _draw(results: Results, path: Path) -> None:
    from seqzoo.experiments.plots import Ref, grouped_bars, panels, save

    fig, (ax,) = panels(1, width=4.6)
    base = _baseline(results)
    splits = ("valid", "test")
    grouped_bars(ax, splits, {name: [results.get("perplexity", split, arch=arch) for split in splits]
                              for arch, name in (("rns", "RNS-RNN"), ("lstm", "LSTM"))},
                 colors={"RNS-RNN": "#c44e52", "LSTM": "#999999"}, ylabel="perplexity", legend_loc="lower right",
                 refs=[Ref(base, f"unigram (test) {base:.0f}")] if base is not None else [])
    save(fig, path)


# ----- scales --------------------------------------------------------------------------------------------------

_TRAIN = {"batch_size": 32, "optimizer": "adam", "lr": 3e-3, "clip_norm": 1.0, "eval_batch_size": 32,
          "test_split": "test"}
SMALL_STEPS = 1200  # 1.45 epochs of the 829 segments of 32 x 35 tokens (2k-vocabulary PTB)
SMALL_PDA = pda_args(1, 3, 10)

CARD = register_experiment(ExperimentCard(
    name="rns-rnn-lm",
    title="RNS-RNN vs LSTM as word-level language models on Penn Treebank",
    paper="DuSell & Chiang, Learning Hierarchical Structures with Differentiable Nondeterministic Stacks (ICLR 2022)",
    description="The memory-limited RNS-RNN (LSTM controller + nondeterministic stack, window D, state carried "
                "across BPTT segments) against the LSTM of the closest total parameter count, both trained with "
                "truncated BPTT (batch 32 x 35 tokens, carried state) on word-level PTB; test perplexity at the "
                "best-validation checkpoint, with the unigram baseline.",
    grid=lambda: entries(256, pda_args(1, 3, 35), None),
    metric="perplexity",
    split="test",
    scales={
        "tiny": Scale(train={**_TRAIN, "batch_size": 4, "steps": 2, "eval_every": 2, "eval_batch_size": 2048},
                      grid=lambda: entries(8, pda_args(1, 2, 3), 50), workers=1,
                      note="plumbing only: PTB capped to 50 words, 8 units, |Q|=1, |Γ|=2, D=3, 2 steps of batch 4 "
                           "(needs the PTB files); evaluation as 2,048 carried streams", expected_seconds=45),
        "small": Scale(train={**_TRAIN, "steps": SMALL_STEPS, "eval_every": 300}, seeds=(0, 1, 2),
                       grid=lambda: entries(128, SMALL_PDA, 2000), workers=1, expected_seconds=665,
                       note=f"PTB word level capped to the 2,000 most frequent words (the rest are <unk>; paper: "
                            f"10k), 128 units (paper 256), RNS |Q|=1, |Γ|=3 (one point of the paper's (|Q|, |Γ|) "
                            f"search), window D=10 (paper: 35; CPU cost) vs the parameter-matched LSTM; batch 32 x 35 "
                            f"tokens with carried state, {SMALL_STEPS} Adam steps (lr 3e-3, clip 1; about 1.45 "
                            f"epochs; paper: SGD with a random lr search, lr / 1.5 on plateaus, early stopping, up "
                            f"to 100 epochs), validation every 300 steps, test at the best-validation checkpoint; "
                            f"3 seeds (paper: 10 random-search runs per model)."),
        "paper": Scale(train={**_TRAIN, "steps": 83000, "eval_every": 829, "early_stopping": 2}, seeds=(0, 1, 2),
                       grid=None, workers=2,
                       note="full 10k vocabulary, 256 units, RNS |Q|=1, |Γ|=3, D=35 vs the parameter-matched LSTM, "
                            "up to 100 epochs with early stopping after 2 evaluations without improvement; Adam, "
                            "not the paper's SGD random search with lr decay on plateaus (the trainer has no "
                            "plateau schedule). Defined, not run."),
    },
    claims=[
        Claim("rns_lower_perplexity", "The memory-limited RNS-RNN reaches a lower PTB test perplexity than an LSTM "
              "of (nearly) equal parameter count (means over seeds).", _check_rns_lower),
        Claim("both_beat_unigram", "Sanity check: both language models have a lower test perplexity than the "
              "unigram baseline.", _check_beat_unigram),
    ],
    plots=[Plot("perplexity", _draw, "Validation and test perplexity per model (bars: mean over seeds, dots: "
                "seeds; dashed: the unigram baseline's test perplexity).")],
))

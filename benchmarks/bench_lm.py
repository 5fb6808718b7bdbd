"""Language-model throughput: seqzoo's training step and evaluation against a plain PyTorch script, same process.

Usage (docs/benchmarks.md, "Language-model throughput")::

    python benchmarks/bench_lm.py lm --vocab 10k,33k --threads 2 --repeats 3
    python benchmarks/bench_lm.py overhead --threads 2 --repeats 3
    python benchmarks/bench_lm.py cutoffs --vocab 33k --threads 2

``lm``: one training step (fwd + bwd + Adam) on the ``lm`` task's batches (32 x 35 tokens, truncated BPTT with the
detached state carried, as the trainer does) through ``Trainer.compute_loss``, for each seqzoo model and head, and
the reference script: ``nn.Embedding -> nn.LSTM -> nn.AdaptiveLogSoftmaxWithLoss(cutoffs=[2000, 5000])`` used
through its ``(input, target)`` loss, or a full softmax (``nn.Linear`` + ``cross_entropy``). Rounds alternate
seqzoo and reference step by step; a round's ratio is the ratio of the two median step times; reported: the median
and min-max over rounds. Evaluation: seqzoo's
``evaluate_split`` on the valid split (tokens/s) against the reference model scoring the same split with its loss
path. ``10k`` is PTB (``SEQZOO_DATA`` or ``--data-dir``); ``33k`` is PTB with every word split into variants by
position (``word~k``, k = occurrence index mod 4), a Zipf-like vocabulary of 39,855 words on the same text (larger
than the issue's 33,278-word corpus).

``overhead``: the real ``Trainer`` loop on the adding task (``lstm``, H = 64), time per step from the interval
between successive steps, against a plain loop of the same model, batches and Adam.

``cutoffs``: the adaptive head's training step at several cutoff choices (the rule of ``default_cutoffs``).

Runs against any seqzoo checkout that has ``Trainer.compute_loss`` and ``evaluate_split`` (before/after rows).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seqzoo.models import create_model
from seqzoo.tasks import create_task
from seqzoo.tasks.language_modeling import find_file, read_text
from seqzoo.training.evaluation import carries_state, evaluate_split
from seqzoo.training.trainer import CarriedState, Trainer

BATCH, BPTT, WIDTH = 32, 35, 256
MODELS = ("lstm_native", "lstm", "lstm_ln", "gcnn", "transformer")
SIZE_ARGS = {"gcnn": {"d_model": WIDTH}, "transformer": {"d_model": WIDTH, "n_layers": 1}}


# ----- data --------------------------------------------------------------------------------------------------------

def ptb_dir(data_dir: str | None) -> Path:
    root = Path(data_dir or os.environ.get("SEQZOO_DATA") or "/work/shared/data")
    return root / "penn-treebank" if (root / "penn-treebank").is_dir() else root


def synthetic_33k(ptb: Path, out: Path) -> Path:
    """PTB with word w at its k-th occurrence (per split) renamed ``w~(k mod 4)``: 39,855 words, same text."""
    for split in ("train", "valid", "test"):
        seen: dict[str, int] = {}
        lines = []
        for line in read_text(find_file(ptb, f"ptb.{split}.txt")).splitlines():
            words = []
            for w in line.split():
                k = seen.get(w, 0)
                seen[w] = k + 1
                words.append(f"{w}~{k % 4}")
            lines.append(" ".join(words))
        (out / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return out


def lm_task(vocab: str, data_dir: str | None, tmp: Path):
    if vocab == "10k":
        return create_task("lm", dataset="ptb", data_dir=str(ptb_dir(data_dir)), bptt=BPTT)
    folder = tmp / "ptb33k"
    if not folder.is_dir():
        folder.mkdir()
        synthetic_33k(ptb_dir(data_dir), folder)
    return create_task("lm", dataset="text", data_dir=str(folder), bptt=BPTT)


# ----- the plain PyTorch reference ---------------------------------------------------------------------------------

class PlainLM(nn.Module):
    """``nn.Embedding -> nn.LSTM -> adaptive softmax (its (input, target) loss) or full softmax``."""

    def __init__(self, vocab: int, adaptive: bool) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, WIDTH)
        self.rnn = nn.LSTM(WIDTH, WIDTH, batch_first=True)
        self.adaptive = adaptive
        self.out: nn.Module = (nn.AdaptiveLogSoftmaxWithLoss(WIDTH, vocab, cutoffs=[2000, 5000]) if adaptive
                               else nn.Linear(WIDTH, vocab))

    def forward(self, x, y, state=None):
        h, state = self.rnn(self.embed(x), state)
        h = h.reshape(-1, WIDTH)
        if self.adaptive:
            return self.out(h, y.reshape(-1)).loss, state
        return F.cross_entropy(self.out(h), y.reshape(-1)), state


def plain_stepper(task, adaptive: bool):
    torch.manual_seed(0)
    model = PlainLM(len(task.vocab), adaptive)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    carry: dict[str, Any] = {"state": None, "step": 0}

    def step() -> None:
        batch = task.train_batch(carry["step"], BATCH)
        carry["step"] += 1
        state = None if int(batch["segment_index"]) == 0 else carry["state"]
        opt.zero_grad(set_to_none=True)
        loss, state = model(batch["inputs"], batch["targets"], state)
        loss.backward()
        opt.step()
        carry["state"] = tuple(s.detach() for s in state)

    def evaluate(n_streams: int) -> int:
        model.eval()
        tokens = 0
        with torch.no_grad():
            state = None
            for batch in task.stream_batches("valid", n_streams):
                loss, state = model(batch["inputs"], batch["targets"], state)
                tokens += batch["targets"].numel()
        model.train()
        return tokens

    return step, evaluate


# ----- seqzoo --------------------------------------------------------------------------------------------------------

def seqzoo_stepper(task, model_name: str, head: str, **extra: Any):
    """A step of the trainer's own path: ``Trainer.compute_loss`` + backward + Adam, state carried; the evaluation
    (``evaluate_split`` of valid, tokens) and the model."""
    torch.manual_seed(0)
    args = {**task.spec.model_kwargs(), "d_model": WIDTH, "n_layers": 1, **SIZE_ARGS.get(model_name, {}),
            "head": head, **extra}
    model = create_model(model_name, **args)
    tr = Trainer(model_name, "lm", config={"device": "cpu", "batch_size": BATCH})
    tr.task, tr.ctx = task, type("Ctx", (), {"device": torch.device("cpu")})()
    tr.carry = CarriedState(carries_state(model))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    counter = {"step": 0}

    def step() -> None:
        batch = task.train_batch(counter["step"], BATCH)
        counter["step"] += 1
        tr.carry.begin(batch)
        opt.zero_grad(set_to_none=True)
        loss = tr.compute_loss(model, batch)
        loss.backward()
        opt.step()
        tr.carry.commit()

    def evaluate(n_streams: int) -> int:
        evaluate_split(model, task, "valid", batch_size=n_streams, device=torch.device("cpu"))
        return task.ids["valid"].numel() - 1

    return step, evaluate, model


# ----- timing --------------------------------------------------------------------------------------------------------

def time_steps(step, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n


def alternate(step_a, step_b, n: int) -> tuple[float, float]:
    """Median seconds per step of ``step_a`` and ``step_b``, run alternately one step each (load spikes hit both)."""
    a, b = [], []
    for _ in range(n):
        a.append(time_steps(step_a, 1))
        b.append(time_steps(step_b, 1))
    return statistics.median(a), statistics.median(b)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def bench_lm(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for vocab in args.vocab.split(","):
            task = lm_task(vocab, args.data_dir, Path(tmp))
            print(f"\n## vocab {vocab}: {len(task.vocab)} words; batch {BATCH} x {BPTT}, width {WIDTH}, "
                  f"{torch.get_num_threads()} threads")
            refs = {head: plain_stepper(task, head == "adaptive") for head in ("adaptive", "linear")}
            for step, _ in refs.values():
                time_steps(step, args.warmup)
            print("| model | head | params | step ms | ref step ms | step / ref (median, min-max) | "
                  "tokens/s train | eval tok/s | eval / ref eval |")
            print("|---|---|---|---|---|---|---|---|---|")
            for model_name in args.models.split(","):
                for head in args.heads.split(","):
                    ref_step, ref_eval = refs[head]
                    step, evaluate, model = seqzoo_stepper(task, model_name, head)
                    n_params = sum(p.numel() for p in model.parameters())
                    time_steps(step, args.warmup)
                    ours, theirs, ratios = [], [], []
                    for _ in range(args.repeats):
                        a, b = alternate(step, ref_step, args.steps)
                        ours.append(a)
                        theirs.append(b)
                        ratios.append(a / b)
                    ev, ev_ratio = "", ""
                    if args.eval:
                        e_ours, e_ratio = [], []
                        for _ in range(args.eval_repeats):
                            t0 = time.perf_counter()
                            n = evaluate(args.eval_streams)
                            t1 = time.perf_counter()
                            ref_eval(args.eval_streams)
                            t2 = time.perf_counter()
                            e_ours.append(n / (t1 - t0))
                            e_ratio.append((t2 - t1) / (t1 - t0))
                        ev, ev_ratio = f"{statistics.median(e_ours):,.0f}", spread(e_ratio)
                    ms = statistics.median(ours) * 1e3
                    print(f"| {model_name} | {head} | {n_params / 1e6:.2f}M | {ms:.1f} | "
                          f"{statistics.median(theirs) * 1e3:.1f} | {spread(ratios)} | "
                          f"{BATCH * BPTT / statistics.median(ours):,.0f} | {ev} | {ev_ratio} |", flush=True)


def bench_cutoffs(args) -> None:
    from seqzoo.models.heads import default_cutoffs

    with tempfile.TemporaryDirectory() as tmp:
        for vocab in args.vocab.split(","):
            task = lm_task(vocab, args.data_dir, Path(tmp))
            v = len(task.vocab)
            ref_step, _ = plain_stepper(task, True)
            time_steps(ref_step, args.warmup)
            choices = {"default " + str(default_cutoffs(v)): default_cutoffs(v), "[2000, 5000]": [2000, 5000],
                       "[2000, 10000]": [2000, 10000], "[4000, 12000]": [4000, 12000],
                       "[v//10, v//3]": [v // 10, v // 3], "[v//5]": [v // 5]}
            print(f"\n## cutoffs at vocab {v} (lstm_native adaptive, step / reference adaptive step)")
            print("| cutoffs | step / ref (median, min-max) | valid ppl after 300 steps |")
            print("|---|---|---|")
            for name, cuts in choices.items():
                step, _, model = seqzoo_stepper(task, "lstm_native", "adaptive", cutoffs=cuts)
                time_steps(step, args.warmup)
                ratios = [a / b for a, b in (alternate(step, ref_step, args.steps) for _ in range(args.repeats))]
                ppl = ""
                if args.quality_steps:
                    time_steps(step, args.quality_steps)
                    m, _ = evaluate_split(model, task, "valid", batch_size=64, device=torch.device("cpu"))
                    ppl = f"{m['perplexity']:.1f}"
                print(f"| {name} | {spread(ratios)} | {ppl} |", flush=True)


def bench_overhead(args) -> None:
    """Trainer loop vs a plain loop: adding task, ``lstm`` H = 64, Adam, clip 1.0 (the trainer's default), batch 32.

    Interleaved so that load hits both alike: at every step of the real ``Trainer.run`` loop, one step of the plain
    loop runs first (its own model and optimizer), timed alone; the trainer's step is the interval between
    successive ``compute_loss`` calls minus that plain step. Ratio = median trainer step / median plain step.
    """
    task_args = {"seq_len": 100}
    n = args.overhead_steps
    cfg = {"device": "cpu", "steps": n, "batch_size": BATCH, "eval_every": n, "checkpoint_every": 10 * n,
           "progress": False, "tensorboard": False, "lr": 1e-3, "clip_norm": 1.0, "test_split": None}
    task = create_task("adding", **task_args)

    def plain_loop():
        torch.manual_seed(0)
        model = create_model("lstm", d_model=64, **task.spec.model_kwargs())
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        counter = {"step": 0}

        def step() -> None:
            batch = task.train_batch(counter["step"], BATCH)
            counter["step"] += 1
            opt.zero_grad(set_to_none=True)
            loss = task.loss(model(batch["inputs"])[0], batch)
            loss.backward()
            float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
            opt.step()

        return step

    class Timed(Trainer):
        def compute_loss(self, model, batch):
            t0 = time.perf_counter()
            self.plain_step()
            t1 = time.perf_counter()
            self.plain.append(t1 - t0)
            self.stamps.append(t1)
            return super().compute_loss(model, batch)

    ratios, ours, theirs = [], [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            tr = Timed("lstm", "adding", model_args={"d_model": 64}, task_args=task_args, config=cfg, out=tmp,
                       index=False)
            tr.stamps, tr.plain, tr.plain_step = [], [], plain_loop()
            tr.run()
        gaps = [b - a - p for a, b, p in zip(tr.stamps, tr.stamps[1:], tr.plain[1:])][5:]
        a, b = statistics.median(gaps), statistics.median(tr.plain[6:])
        ours.append(a)
        theirs.append(b)
        ratios.append(a / b)
    print(f"\n## trainer overhead: adding (seq_len 100), lstm H=64, batch {BATCH}, {torch.get_num_threads()} threads")
    print("| trainer step ms | plain step ms | trainer / plain (median, min-max) |")
    print("|---|---|---|")
    print(f"| {statistics.median(ours) * 1e3:.2f} | {statistics.median(theirs) * 1e3:.2f} | {spread(ratios)} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=("lm", "overhead", "cutoffs"))
    p.add_argument("--vocab", default="10k,33k", help="comma list of 10k, 33k")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--heads", default="adaptive,linear")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=15, help="timed steps per round (each side)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--eval", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--eval-repeats", type=int, default=3)
    p.add_argument("--eval-streams", type=int, default=256, help="the trainer's default eval_batch_size")
    p.add_argument("--overhead-steps", type=int, default=200)
    p.add_argument("--quality-steps", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    {"lm": bench_lm, "overhead": bench_overhead, "cutoffs": bench_cutoffs}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Translation throughput: GNMT-small vs ConvS2S-small training tokens/s, and decoding sentences/s (greedy and
beam 5, fp32 and int8 GNMT), all in one process, rounds alternating the cases.

Usage (docs/benchmarks.md, "Translation throughput")::

    python benchmarks/bench_translation.py --threads 1 --repeats 3 --sentences 32

Training: one step (fwd + bwd + Adam, ``targets=`` NLL path, clip 1.0) on the ``translation`` task's length-bucketed
batches of 64 Multi30k pairs (spm_vocab 8000, the presets' widths), counted in target tokens; a round runs
``--steps`` steps of each model alternately; the anchor is GNMT-small. Decoding: the first ``--sentences``
test_2016_flickr sources, one batch, with freshly initialized models (so every case decodes to the same maximum
length ``ceil(1.5 x source) + 10``: equal work per sentence); the anchor is fp32 GNMT-small greedy (seqzoo LSTM
cells); "fp32 nn.LSTM" is the same model with its LSTMs as ``torch.nn.LSTM`` (``to_native``), the float twin of the
int8 copy, so int8 / nn.LSTM is the speed-up of the int8 weights alone. Reported: the
median over rounds of each case's rate and of its ratio to the anchor measured in the same round, with the min-max.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

import seqzoo
from seqzoo.models.seq2seq.decoding import DecodeConfig
from seqzoo.models.seq2seq.gnmt import quantize_int8, to_native
from seqzoo.tasks import create_task


def train_rates(task, names: list[str], steps: int, repeats: int, batch: int) -> dict[str, list[float]]:
    models, opts = {}, {}
    for name in names:
        torch.manual_seed(0)
        models[name] = seqzoo.create_model(name, vocab_size=task.spec.vocab_size)
        opts[name] = torch.optim.Adam(models[name].parameters(), 1e-3)
    rates: dict[str, list[float]] = {n: [] for n in names}
    step = 0
    for _ in range(repeats):
        for name in names:
            m, opt = models[name], opts[name]
            tokens, t0 = 0, time.perf_counter()
            for k in range(steps):
                b = task.train_batch(step + k, batch)
                nll, _ = m(b["inputs"], mask=b["mask"], prev=b["prev"], targets=b["targets"])
                loss = task.loss_from_nll(nll, b)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
                opt.step()
                tokens += int(b["loss_mask"].sum())
            rates[name].append(tokens / (time.perf_counter() - t0))
        step += steps
    return rates


def decode_rates(task, n: int, repeats: int) -> dict[str, list[float]]:
    torch.manual_seed(0)
    gnmt = seqzoo.create_model("gnmt_small", vocab_size=task.spec.vocab_size).eval()
    conv = seqzoo.create_model("convs2s_small", vocab_size=task.spec.vocab_size).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gnmt8 = quantize_int8(gnmt)
    sources = task.ids["test"][0][:n]
    cases = {f"{name} {label}": (model, DecodeConfig(beam=beam))
             for name, model in (("gnmt_small fp32", gnmt), ("gnmt_small fp32 nn.LSTM", to_native(gnmt)),
                                 ("gnmt_small int8", gnmt8), ("convs2s_small fp32", conv))
             for label, beam in (("greedy", 1), ("beam5", 5))}
    rates: dict[str, list[float]] = {c: [] for c in cases}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(repeats):
            for case, (model, cfg) in cases.items():
                t0 = time.perf_counter()
                task.translate(model, sources, cfg, batch_size=n)
                rates[case].append(n / (time.perf_counter() - t0))
    return rates


def table(rates: dict[str, list[float]], anchor: str, unit: str) -> str:
    rows = [f"| case | {unit} (median, min-max) | / {anchor} (median, min-max) |", "|---|---|---|"]
    for case, vals in rates.items():
        ratios = [v / a for v, a in zip(vals, rates[anchor])]
        rows.append(f"| {case} | {statistics.median(vals):.1f} ({min(vals):.1f}-{max(vals):.1f}) | "
                    f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--sentences", type=int, default=32)
    ap.add_argument("--spm-vocab", type=int, default=8000)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    task = create_task("translation", spm_vocab=args.spm_vocab, data_dir=args.data_dir)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.repeats} rounds")
    print(table(train_rates(task, ["gnmt_small", "convs2s_small"], args.steps, args.repeats, args.batch),
                "gnmt_small", "train target tokens/s"))
    print()
    print(table(decode_rates(task, args.sentences, args.repeats), "gnmt_small fp32 greedy", "sentences/s"))


if __name__ == "__main__":
    main()

"""GCNN vs LSTM scoring throughput for chosen sizes: the ``gcnn`` card's CPU measure on any pair of models.

Usage (docs/benchmarks.md, "GCNN / LSTM throughput at equal perplexity")::

    python benchmarks/bench_gcnn_pairs.py --gcnn 8x128,7x128,6x128 --lstm 187 --rounds 5

Every pair (GCNN ``blocks x width``, kernel 4, GLU; LSTM ``lstm_native`` of the given width; both with the card's
adaptive softmax over a 10k vocabulary, fresh weights) is timed with ``latency.batched_throughput``: 64 sentences x
100 tokens scored at once, every next token through the output layer, 1 thread (the card's ``cpu_throughput_parity``
setting). Each round times every GCNN against the same LSTM back to back (interleaved medians inside a round);
reported per GCNN: the median ratio GCNN / LSTM tokens/s over rounds and its min-max, tokens/s, parameters and
FLOP per token (``torch.utils.flop_counter``: matrix products and convolutions; the fused LSTM's
recurrence, which it does not see, added by hand), so that a ratio can be read as
arithmetic (FLOP per token) times speed per FLOP.

Why: the paper's CPU throughput (Table 3) compares models of equal perplexity, the card's pair has equal
parameters; the card page uses this script to time the GCNN that matches the LSTM's perplexity (issue 20).
"""

from __future__ import annotations

import argparse
import statistics

import torch


def flop_per_token(model: torch.nn.Module, batch: int, length: int, vocab: int) -> float:
    """FLOP of scoring ``batch x length`` tokens (forward, output layer included) per token."""
    from seqzoo.experiments.op_count import count_flops, fused_lstm_flops_per_token

    g = torch.Generator().manual_seed(0)
    text = torch.randint(0, vocab, (batch, length + 1), generator=g)
    model = model.eval()
    with torch.no_grad():
        flops = count_flops(lambda: model(text[:, :-1], targets=text[:, 1:]))
    return flops / (batch * length) + fused_lstm_flops_per_token(model)


def main(argv: list[str] | None = None) -> None:
    from seqzoo.experiments.cards.gcnn import gcnn_args
    from seqzoo.experiments.latency import batched_throughput
    from seqzoo.experiments.param_match import token_model

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gcnn", default="8x128", help="comma-separated GCNN sizes, blocks x width (default 8x128)")
    p.add_argument("--lstm", type=int, default=187, help="LSTM width (default 187, the card's)")
    p.add_argument("--vocab", type=int, default=10000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--length", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5, help="rounds; each times every pair (median and min-max)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per model inside a round (median)")
    a = p.parse_args(argv)
    sizes = []
    for item in a.gcnn.split(","):
        try:
            blocks, width = (int(v) for v in item.lower().split("x"))
        except ValueError:
            p.error(f"--gcnn: {item!r} is not blocks x width (e.g. 8x128)")
        sizes.append((blocks, width))
    torch.manual_seed(0)
    lstm = token_model("lstm_native", {"d_model": a.lstm, "head": "adaptive"}, a.vocab)
    gcnns = {f"{b}x{w}": token_model("gcnn", {**gcnn_args(w, b, "glu", a.vocab), "head": "adaptive"}, a.vocab)
             for b, w in sizes}
    n_params = {name: sum(q.numel() for q in m.parameters()) for name, m in [("lstm", lstm), *gcnns.items()]}
    flops = {name: flop_per_token(m, a.batch, a.length, a.vocab) for name, m in [("lstm", lstm), *gcnns.items()]}
    ratios: dict[str, list[float]] = {n: [] for n in gcnns}
    tok: dict[str, list[float]] = {n: [] for n in ["lstm", *gcnns]}
    for _ in range(a.rounds):
        for name, g in gcnns.items():
            r = batched_throughput(g, lstm, batch_size=a.batch, length=a.length, repeats=a.repeats,
                                   threads=a.threads)
            ratios[name].append(r["ratio"])
            tok[name].append(r["gcnn"]["tokens_per_s"])
            tok["lstm"].append(r["lstm_fused"]["tokens_per_s"])
    print(f"{a.batch} x {a.length} tokens scored at once, {a.threads} thread(s), vocab {a.vocab} (adaptive head), "
          f"{a.rounds} rounds")
    print(f"LSTM-{a.lstm}: {n_params['lstm']:,} parameters, {flops['lstm'] / 1e6:.2f} MFLOP/token, "
          f"{statistics.median(tok['lstm']):,.0f} tokens/s (median; {min(tok['lstm']):,.0f}-{max(tok['lstm']):,.0f})")
    print("| GCNN | parameters | MFLOP/token | tokens/s | GCNN / LSTM tokens/s (median, min-max) | "
          "GFLOP/s GCNN / LSTM |")
    print("|---|---|---|---|---|---|")
    lstm_rate = statistics.median(tok["lstm"]) * flops["lstm"]
    for name in gcnns:
        rate = statistics.median(tok[name]) * flops[name]
        print(f"| {name} | {n_params[name]:,} | {flops[name] / 1e6:.2f} | {statistics.median(tok[name]):,.0f} | "
              f"{statistics.median(ratios[name]):.3f} ({min(ratios[name]):.3f}-{max(ratios[name]):.3f}) | "
              f"{rate / 1e9:.1f} / {lstm_rate / 1e9:.1f} |")


if __name__ == "__main__":
    main()

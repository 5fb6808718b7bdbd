"""Scoring latency and throughput: a gated convolutional LM vs an LSTM (the GCNN paper's Table 3: "responsiveness"
and throughput).

Scoring a sentence means computing the log-probability of every next token. The GCNN does it in one parallel
forward pass; an LSTM generating/scoring online steps through the tokens one at a time (``nn.LSTMCell`` in a Python
loop, which is what the paper's "responsiveness" measures; the softmax layer is applied once to all hidden states
after the loop, the cheapest way to score a given sentence); a fused ``nn.LSTM`` runs the same time loop inside one
C++ call. All three use the same embedding width, vocabulary and a full softmax; times are medians of ``repeats``
calls after ``warmup`` calls, measured in this process (only ratios are meaningful across machines).

Default sizes are the spec's calibration setting (§7): GCNN 8 blocks x 512 channels, k=4, embedding 256 (24.6M
parameters with the 10k softmax) vs LSTM-1024 (18.1M), vocabulary 10,000, sentence length 100.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from seqzoo.models.heads import head_nll


class _LSTMScorer(nn.Module):
    """Embedding -> LSTM -> full-softmax head; ``stepped`` runs an ``nn.LSTMCell`` loop, else fused ``nn.LSTM``."""

    def __init__(self, vocab_size: int, d_embed: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_embed)
        self.lstm = nn.LSTM(d_embed, hidden, batch_first=True)
        self.cell = nn.LSTMCell(d_embed, hidden)
        self.cell.load_state_dict({k[:-3]: v for k, v in self.lstm.state_dict().items()})  # same weights
        self.head = nn.Linear(hidden, vocab_size)

    def fused(self, tokens: Tensor) -> Tensor:
        return self.head(self.lstm(self.embed(tokens))[0])

    def stepped(self, tokens: Tensor, head_per_step: bool = False) -> Tensor:
        x = self.embed(tokens)
        h = c = x.new_zeros(tokens.shape[0], self.cell.hidden_size)
        outs = []
        for x_t in x.unbind(1):
            h, c = self.cell(x_t, (h, c))
            outs.append(self.head(h) if head_per_step else h)
        if head_per_step:  # the next-token distribution after every step, as an online scorer/generator needs
            return torch.stack(outs, 1)
        # only the recurrence is sequential: the softmax layer runs once over all steps (the LSTM's best case)
        return self.head(torch.stack(outs, 1))


def _score(logits: Tensor, tokens: Tensor) -> Tensor:
    """Log-probability of each sentence: sum over positions of log p(token_{t+1} | tokens_<=t)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1).sum(1)


def _time(fn: Callable[[], Any], repeats: int, warmup: int) -> float:
    return _time_all({"fn": fn}, repeats, warmup)["fn"]


def _time_all(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds of each function over ``repeats`` calls after ``warmup`` calls, timed in interleaved rounds
    (one call of each per round), so load that drifts during the measurement hits every variant alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _n_params(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def scoring_latency(*, vocab_size: int = 10000, length: int = 100, batch_size: int = 1, gcnn_blocks: int = 8,
                    gcnn_width: int = 512, kernel_size: int = 4, d_embed: int = 256, lstm_hidden: int = 1024,
                    activation: str = "glu", head_per_step: bool = False, repeats: int = 5, warmup: int = 1,
                    threads: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Median seconds (and tokens/s) to score ``batch_size`` sentences of ``length`` tokens with each model.

    Returns ``{"settings": ..., "gcnn" | "lstm_stepped" | "lstm_fused": {"seconds", "tokens_per_s", "params"},
    "ratio_stepped": t_lstm_stepped / t_gcnn, "ratio_fused": t_lstm_fused / t_gcnn}``; a ratio above 1 means the
    GCNN is faster. ``head_per_step=True`` applies the stepped LSTM's softmax layer inside the loop (online
    scoring) instead of once after it. ``threads`` sets torch's intra-op threads for the measurement (restored
    afterwards).
    """
    from seqzoo.models import create_model

    for name, value in (("vocab_size", vocab_size), ("length", length), ("batch_size", batch_size),
                        ("repeats", repeats)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (2 if name == "length" else 1):
            raise ValueError(f"scoring_latency: {name} must be an integer >= {2 if name == 'length' else 1}, "
                             f"got {value!r}")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        gcnn = create_model("gcnn", vocab_size=vocab_size, d_input=None, d_output=vocab_size, d_model=d_embed,
                            layer_kwargs={"blocks": [[[kernel_size, gcnn_width]]] * gcnn_blocks,
                                          "activation": activation}).eval()
        lstm = _LSTMScorer(vocab_size, d_embed, lstm_hidden).eval()
        tokens = torch.randint(0, vocab_size, (batch_size, length), generator=torch.Generator().manual_seed(seed))
        runs = {
            "gcnn": (lambda: _score(gcnn(tokens)[0], tokens), _n_params(gcnn)),
            "lstm_stepped": (lambda: _score(lstm.stepped(tokens, head_per_step), tokens),
                             _n_params(lstm.embed, lstm.cell, lstm.head)),
            "lstm_fused": (lambda: _score(lstm.fused(tokens), tokens), _n_params(lstm.embed, lstm.lstm, lstm.head)),
        }
        out: dict[str, Any] = {"settings": {"vocab_size": vocab_size, "length": length, "batch_size": batch_size,
                                            "gcnn": f"{gcnn_blocks} x [{kernel_size}, {gcnn_width}] {activation}",
                                            "d_embed": d_embed, "lstm_hidden": lstm_hidden,
                                            "head_per_step": head_per_step,
                                            "threads": torch.get_num_threads(), "repeats": repeats}}
        with torch.no_grad(), torch.nn.utils.parametrize.cached():
            for name, (fn, params) in runs.items():
                sec = _time(fn, repeats, warmup)
                out[name] = {"seconds": sec, "tokens_per_s": batch_size * length / sec, "params": params}
    finally:
        torch.set_num_threads(before)
    out["ratio_stepped"] = out["lstm_stepped"]["seconds"] / out["gcnn"]["seconds"]
    out["ratio_fused"] = out["lstm_fused"]["seconds"] / out["gcnn"]["seconds"]
    return out


def format_latency(result: dict[str, Any]) -> str:
    """A small table of one ``scoring_latency`` result."""
    s = result["settings"]
    lines = [f"scoring {s['batch_size']} x {s['length']} tokens, vocab {s['vocab_size']}, {s['threads']} thread(s)",
             f"{'model':<14}{'params':>12}{'ms':>10}{'tokens/s':>12}"]
    for name in ("gcnn", "lstm_stepped", "lstm_fused"):
        r = result[name]
        lines.append(f"{name:<14}{r['params']:>12,}{1000 * r['seconds']:>10.1f}{r['tokens_per_s']:>12,.0f}")
    lines.append(f"LSTM stepped / GCNN = {result['ratio_stepped']:.2f}x; fused nn.LSTM / GCNN = "
                 f"{result['ratio_fused']:.2f}x")
    return "\n".join(lines)


def lstm_cell_like(lstm: nn.Module) -> nn.LSTMCell:
    """An ``nn.LSTMCell`` holding the weights of the single one-layer ``nn.LSTM`` inside ``lstm``."""
    rnns = [m for m in lstm.modules() if isinstance(m, nn.LSTM)]
    if len(rnns) != 1 or rnns[0].num_layers != 1 or len(getattr(lstm, "layers", ())) != 1:
        raise ValueError("model_scoring_latency: lstm must be a SequenceModel with one lstm_native layer "
                         f"(one single-layer nn.LSTM inside), got {type(lstm).__name__} with {len(rnns)} nn.LSTM")
    rnn = rnns[0]
    cell = nn.LSTMCell(rnn.input_size, rnn.hidden_size).to(next(lstm.parameters()).dtype)
    cell.load_state_dict({k[:-3]: v for k, v in rnn.state_dict().items()})
    return cell


def stepped_outputs(lstm: nn.Module, cell: nn.LSTMCell, tokens: Tensor, head_per_step: bool) -> Tensor:
    """``lstm``'s outputs for ``tokens`` computed token by token with ``cell`` (equal to ``lstm(tokens)[0]``);
    the output layer runs once over all hidden states, or at every step when ``head_per_step``."""
    x = lstm.encode(tokens)
    h = c = x.new_zeros(tokens.shape[0], cell.hidden_size)
    outs = []
    for x_t in x.unbind(1):
        h, c = cell(x_t, (h, c))
        outs.append(lstm.head(h) if head_per_step else h)
    return torch.stack(outs, 1) if head_per_step else lstm.head(torch.stack(outs, 1))


def _check_pair(gcnn: nn.Module, lstm: nn.Module, caller: str, **sizes: int) -> tuple[nn.LSTMCell, int]:
    """The LSTM's cell (same weights) and the shared vocabulary size; raises naming what is wrong."""
    cell = lstm_cell_like(lstm)
    vocab = getattr(gcnn, "vocab_size", None)
    if vocab is None or vocab != getattr(lstm, "vocab_size", None):
        raise ValueError(f"{caller}: both models must read tokens of one vocabulary, got "
                         f"{vocab} and {getattr(lstm, 'vocab_size', None)}")
    for name, value in sizes.items():
        least = 2 if name in ("length", "tokens") else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{caller}: {name} must be an integer >= {least}, got {value!r}")
    return cell, vocab


def _measure(runs: dict[str, Callable[[], Any]], tokens: int, threads: int | None, repeats: int,
             warmup: int) -> tuple[dict[str, dict[str, float]], int]:
    """``{name: {"seconds", "tokens_per_s"}}`` of each run (``tokens`` scored per call; interleaved medians, no
    autograd, weight-norm weights computed once) and the thread count used; torch's threads are restored."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        used = torch.get_num_threads()
        with torch.no_grad(), torch.nn.utils.parametrize.cached():
            secs = _time_all(runs, repeats, warmup)
    finally:
        torch.set_num_threads(before)
    return {name: {"seconds": sec, "tokens_per_s": tokens / sec} for name, sec in secs.items()}, used


def model_scoring_latency(gcnn: nn.Module, lstm: nn.Module, *, length: int = 100, batch_size: int = 1,
                          repeats: int = 11, warmup: int = 2, threads: int | None = None,
                          seed: int = 0) -> dict[str, Any]:
    """Scoring latency of two built token models: a convolutional LM and a one-layer ``lstm_native`` LM.

    Both score the same ``batch_size x length`` random sentence with their own full output layer (linear or
    adaptive; ``_score`` takes log-probabilities either way). Measured: the GCNN's one forward pass; the LSTM
    stepped token by token with an ``nn.LSTMCell`` holding the same weights, its output layer applied once to
    all hidden states after the loop (``lstm_stepped``: both models apply the output layer to the same
    positions in one call) or at every step (``lstm_stepped_head_per_step``: online scoring); and the fused
    ``nn.LSTM`` forward (``lstm_fused``). Returns seconds and tokens/s per variant and the ratios
    ``ratio_stepped``, ``ratio_head_per_step``, ``ratio_fused`` (LSTM time / GCNN time; > 1 = GCNN faster).
    """
    cell, vocab = _check_pair(gcnn, lstm, "model_scoring_latency", length=length, batch_size=batch_size,
                              repeats=repeats)
    gcnn, lstm = gcnn.eval(), lstm.eval()
    tokens = torch.randint(0, vocab, (batch_size, length), generator=torch.Generator().manual_seed(seed))

    runs = {"gcnn": lambda: _score(gcnn(tokens)[0], tokens),
            "lstm_stepped": lambda: _score(stepped_outputs(lstm, cell, tokens, False), tokens),
            "lstm_stepped_head_per_step": lambda: _score(stepped_outputs(lstm, cell, tokens, True), tokens),
            "lstm_fused": lambda: _score(lstm(tokens)[0], tokens)}
    measured, used = _measure(runs, batch_size * length, threads, repeats, warmup)
    out: dict[str, Any] = {"settings": {"vocab_size": vocab, "length": length, "batch_size": batch_size,
                                        "threads": used, "repeats": repeats,
                                        "gcnn_params": _n_params(gcnn), "lstm_params": _n_params(lstm)}, **measured}
    g = out["gcnn"]["seconds"]
    out["ratio_stepped"] = out["lstm_stepped"]["seconds"] / g
    out["ratio_head_per_step"] = out["lstm_stepped_head_per_step"]["seconds"] / g
    out["ratio_fused"] = out["lstm_fused"]["seconds"] / g
    return out


def stepped_nll(lstm: nn.Module, cell: nn.LSTMCell, tokens: Tensor) -> Tensor:
    """``-log p(tokens[:, t+1] | tokens[:, :t+1])`` for every ``t``, one token at a time: each step runs the cell
    and then the output layer on that step's target (what an LSTM that consumes a stream token by token does).
    Equal to ``lstm(tokens[:, :-1], targets=tokens[:, 1:])[0]``."""
    x = lstm.encode(tokens[:, :-1])
    h = c = x.new_zeros(tokens.shape[0], cell.hidden_size)
    out = []
    for t, x_t in enumerate(x.unbind(1)):
        h, c = cell(x_t, (h, c))
        out.append(head_nll(lstm.head, h, tokens[:, t + 1]))
    return torch.stack(out, 1)


def stream_responsiveness(gcnn: nn.Module, lstm: nn.Module, *, tokens: int = 2000, repeats: int = 5,
                          warmup: int = 1, threads: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Responsiveness as the GCNN paper's Table 3 measures it: tokens/s scoring one contiguous stream at batch 1.

    Every token of a random ``tokens``-long stream is scored (its ``-log p``, output layer included, through
    the model's own target-scoring path). The GCNN scores all positions in one parallel pass (``gcnn``); the LSTM
    consumes the stream one token at a time, running its output layer at every step (``lstm_token_by_token``,
    ``stepped_nll``); the fused ``nn.LSTM`` over the whole stream at batch 1 is reported too (``lstm_fused``).
    Per-token cost is flat in the stream length beyond a few hundred tokens for all three, so a stream shorter
    than the paper's 15,000 tokens gives the same rates. ``threads=None`` uses the process's thread count (the
    whole machine, as the paper's GPU). Returns tokens/s per variant and ``ratio`` = GCNN tokens/s / LSTM
    token-by-token tokens/s (``ratio_fused`` against the fused LSTM); > 1 = GCNN more responsive.
    """
    cell, vocab = _check_pair(gcnn, lstm, "stream_responsiveness", tokens=tokens, repeats=repeats)
    gcnn, lstm = gcnn.eval(), lstm.eval()
    stream = torch.randint(0, vocab, (1, tokens + 1), generator=torch.Generator().manual_seed(seed))
    x, y = stream[:, :-1], stream[:, 1:]
    runs = {"gcnn": lambda: gcnn(x, targets=y)[0].sum(),
            "lstm_token_by_token": lambda: stepped_nll(lstm, cell, stream).sum(),
            "lstm_fused": lambda: lstm(x, targets=y)[0].sum()}
    measured, used = _measure(runs, tokens, threads, repeats, warmup)
    out: dict[str, Any] = {"settings": {"vocab_size": vocab, "tokens": tokens, "batch_size": 1, "threads": used,
                                        "repeats": repeats}, **measured}
    g = out["gcnn"]["tokens_per_s"]
    out["ratio"] = g / out["lstm_token_by_token"]["tokens_per_s"]
    out["ratio_fused"] = g / out["lstm_fused"]["tokens_per_s"]
    return out


def batched_throughput(gcnn: nn.Module, lstm: nn.Module, *, batch_size: int = 64, length: int = 100,
                       repeats: int = 5, warmup: int = 1, threads: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Throughput as the GCNN paper's Table 3 measures it (its only CPU column): tokens/s when many sentences are
    scored at once, so batching amortises the LSTM's sequential steps.

    ``batch_size`` random sentences of ``length + 1`` tokens; every next token scored (its ``-log p``, output layer
    included, through each model's own target-scoring path): the GCNN in one parallel pass (``gcnn``), the LSTM
    with its fused ``nn.LSTM`` (``lstm_fused``; the paper's LSTM ran cuDNN's fused kernel). Returns tokens/s per
    model and ``ratio`` = GCNN tokens/s / LSTM tokens/s (the paper, models of equal perplexity on a CPU: 0.72 for
    GCNN-9, 1.06 for GCNN-8 Bottleneck).
    """
    _, vocab = _check_pair(gcnn, lstm, "batched_throughput", batch_size=batch_size, length=length, repeats=repeats)
    gcnn, lstm = gcnn.eval(), lstm.eval()
    text = torch.randint(0, vocab, (batch_size, length + 1), generator=torch.Generator().manual_seed(seed))
    x, y = text[:, :-1], text[:, 1:]
    runs = {"gcnn": lambda: gcnn(x, targets=y)[0].sum(), "lstm_fused": lambda: lstm(x, targets=y)[0].sum()}
    measured, used = _measure(runs, batch_size * length, threads, repeats, warmup)
    out: dict[str, Any] = {"settings": {"vocab_size": vocab, "length": length, "batch_size": batch_size,
                                        "threads": used, "repeats": repeats}, **measured}
    out["ratio"] = out["gcnn"]["tokens_per_s"] / out["lstm_fused"]["tokens_per_s"]
    return out

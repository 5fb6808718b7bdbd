"""Speed harness: time the first sequence layer of registered models against ``torch.nn.LSTM``.

Every speed claim in seqzoo is a ratio measured in one process against an anchor on the same shapes
(``torch.nn.LSTM``, or ``torch.nn.GRU`` with ``anchor="gru"``), so the ratios survive a different
machine better than absolute numbers do. For each model the harness builds
``create_model(name, d_input=input_size, d_model=hidden, encoder="none", d_output=1)`` and times only
``model.layers[0]`` (no encoder, no head):

* forward: ``layer(x)`` under ``torch.no_grad()``;
* forward+backward: ``y.backward(g)`` with a fixed random ``g`` (so no loss op is timed) and an input
  that requires grad, as for a layer inside a stack;
* step: ``layer.step(x_t, state)`` latency per time step at the same batch size (``supports_step``
  layers; the anchor runs on a length-1 sequence);
* memory of one forward+backward, two ways: ``peak_mb`` is the peak of the bytes allocated during the
  call (CPU allocator events of ``torch.profiler`` with ``profile_memory``, parameters and inputs not
  counted, freed memory subtracted), ``saved_mb`` the unique storages the autograd graph saves for
  backward (``torch.autograd.graph.saved_tensors_hooks``; parameters and the input excluded).

Rounds are interleaved (every model, then the next round) and the median of the rounds is reported,
so load from other processes hits all rows alike; ``--clock cpu`` (process CPU time, with one thread)
is the load-robust alternative to wall time. ``--bf16`` adds a row per model under CPU autocast
to bfloat16, with ratios against the float32 anchor.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from seqzoo.errors import ConfigError

DEFAULT_MODELS = ("lstm", "lstm_native", "gru", "gru_native", "rnn_tanh")
ANCHORS = {"lstm": nn.LSTM, "gru": nn.GRU}
ROW_KEYS = (
    "model", "precision", "fwd_ms", "fwd_tokens_per_s", "fwd_ratio", "fwdbwd_ms", "fwdbwd_tokens_per_s",
    "fwdbwd_ratio", "step_us", "step_ratio", "peak_mb", "saved_mb", "fwd_ratio_min", "fwdbwd_ratio_min",
    "fwd_ms_rounds", "fwdbwd_ms_rounds",
)


class _Anchor(nn.Module):
    """``torch.nn.LSTM`` / ``nn.GRU`` (batch-first) with the seqzoo call and step conventions."""

    supports_step = True

    def __init__(self, kind: str, input_size: int, hidden: int) -> None:
        super().__init__()
        self.rnn = ANCHORS[kind](input_size, hidden, batch_first=True)
        self.kind = kind

    def init_state(self, batch_size: int, **_: Any):
        z = torch.zeros(1, batch_size, self.rnn.hidden_size, dtype=self.rnn.weight_hh_l0.dtype)
        return (z, z.clone()) if self.kind == "lstm" else z

    def forward(self, x: Tensor):
        return self.rnn(x)

    def step(self, x_t: Tensor, state):
        y, state = self.rnn(x_t.unsqueeze(1), state)
        return y.squeeze(1), state


def _build_layer(name: str, input_size: int, hidden: int) -> nn.Module:
    from seqzoo.models import create_model

    model = create_model(name, d_input=input_size, d_model=hidden, encoder="none", d_output=1)
    layers = getattr(model, "layers", None)
    if not layers:
        raise ConfigError(f"bench: model {name!r} has no `layers` to time (expected a SequenceModel-like backbone)")
    return layers[0]


def _autocast(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()


def _first(out: Any) -> Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def _timed(fn: Callable[[], Any], clock: Callable[[], float] = time.perf_counter) -> float:
    start = clock()
    fn()
    return clock() - start


class _Case:
    """One (layer, precision) to time, with its closures prepared once."""

    def __init__(self, name: str, layer: nn.Module, x: Tensor, grad_out: Tensor, bf16: bool, step_len: int,
                 clock: Callable[[], float]) -> None:
        self.name, self.layer, self.bf16, self.clock = name, layer, bf16, clock
        self.x = x
        self.x_grad = x.detach().clone().requires_grad_(True)
        self.grad_out = grad_out
        self._grad_by_dtype: dict[torch.dtype, Tensor] = {grad_out.dtype: grad_out}
        self.step_len = step_len
        self.fwd: list[float] = []
        self.fwdbwd: list[float] = []
        self.step: list[float] = []

    def run_fwd(self) -> None:
        with torch.no_grad(), _autocast(self.bf16):
            self.layer(self.x)

    def run_fwdbwd(self) -> None:
        with _autocast(self.bf16):
            y = _first(self.layer(self.x_grad))
        if y.dtype not in self._grad_by_dtype:  # cast once (warm-up), not inside the timed rounds
            self._grad_by_dtype[y.dtype] = self.grad_out.to(y.dtype)
        y.backward(self._grad_by_dtype[y.dtype])

    def clear_grads(self) -> None:
        self.layer.zero_grad(set_to_none=True)
        self.x_grad.grad = None

    def supports_step(self) -> bool:
        return bool(getattr(self.layer, "supports_step", False))

    def run_steps(self) -> None:
        with torch.no_grad(), _autocast(self.bf16):
            state = self.layer.init_state(self.x.shape[0])
            for t in range(self.step_len):
                _, state = self.layer.step(self.x[:, t], state)

    def measure_round(self) -> None:
        self.fwd.append(_timed(self.run_fwd, self.clock))
        self.clear_grads()
        self.fwdbwd.append(_timed(self.run_fwdbwd, self.clock))
        self.clear_grads()
        if self.supports_step():
            self.step.append(_timed(self.run_steps, self.clock) / self.step_len)


@contextmanager
def _drop_native_usdt_lines() -> Iterator[None]:
    """Hide the ``USDT: ... profiler_start/stop`` lines torch's native profiler writes to file descriptor 2.

    They come from C++ (no Python logger or environment variable silences them), so fd 2 is pointed at a
    temporary file for the duration and every other line is written back to stderr afterwards.
    """
    fd = 2  # the C++ side writes to descriptor 2 whatever Python's sys.stderr is
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().splitlines(keepends=True) if not line.startswith(b"USDT:")]
            if kept:
                sys.stderr.write(b"".join(kept).decode(errors="replace"))
                sys.stderr.flush()


def _peak_alloc_bytes(fn: Callable[[], Any]) -> int:
    """Peak of (allocated - freed) bytes during ``fn``, from the profiler's CPU allocator events."""
    from torch.profiler import ProfilerActivity, profile

    with _drop_native_usdt_lines(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as fh:
            trace = json.load(fh)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    running = peak = 0
    for ev in sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e.get("ts", 0.0)):
        args = ev.get("args", {})
        if args.get("Device Type", 0) != 0:  # CPU only
            continue
        running += int(args.get("Bytes", 0))
        peak = max(peak, running)
    return peak


def saved_bytes(fn: Callable[[], Any], exclude: Sequence[Tensor]) -> int:
    """Bytes of the unique storages saved for backward while ``fn`` runs (excluding ``exclude``)."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        if t.layout == torch.strided and t.device.type != "meta":
            ptr = t.untyped_storage().data_ptr()
            if ptr not in skip:
                seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _environment(threads: int) -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    env: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": threads,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "mkldnn": torch.backends.mkldnn.is_available(),
    }
    if hasattr(os, "getloadavg"):
        env["loadavg_start"] = [round(v, 2) for v in os.getloadavg()]
    return env


def run_bench(
    models: Sequence[str],
    *,
    batch: int = 32,
    seq_len: int = 256,
    input_size: int = 128,
    hidden: int = 256,
    repeats: int = 7,
    warmup: int = 2,
    bf16: bool = False,
    threads: int | None = None,
    anchor: str = "lstm",
    step_len: int | None = None,
    memory: bool = True,
    seed: int = 0,
    clock: str = "wall",
    env: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Time ``model.layers[0]`` of each model and the anchor; one row per (model, precision), anchor first.

    Times are medians over ``repeats`` interleaved rounds after ``warmup`` rounds; ``*_ratio`` is the
    row's time divided by the float32 anchor's (lower is faster; the anchor is 1.0), and ``*_ratio_min``
    the same with the fastest round of each (robust to load spikes). ``step_len`` steps
    (default ``min(seq_len, 64)``) are timed per round for the step latency. ``clock="cpu"`` times
    process CPU time instead of wall time: robust to other processes' load with one thread, but
    meaningless with several (it adds up the threads, spin-waits included). ``env``, when given, is
    filled with the environment (torch version, threads, cpu, load average).
    """
    if clock not in CLOCKS:
        raise ConfigError(f"bench: clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    if anchor not in ANCHORS:
        raise ConfigError(f"bench: anchor must be one of {sorted(ANCHORS)}, got {anchor!r}")
    for key, value in dict(batch=batch, seq_len=seq_len, input_size=input_size, hidden=hidden,
                           repeats=repeats).items():
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"bench: {key} must be a positive integer, got {value!r}")
    if warmup < 0:
        raise ConfigError(f"bench: warmup must be >= 0, got {warmup}")
    if threads is not None and threads < 1:
        raise ConfigError(f"bench: threads must be a positive integer or None, got {threads}")
    models = list(models)
    if not models:
        raise ConfigError("bench: give at least one model name")
    step_len = min(seq_len, 64) if step_len is None else step_len
    if step_len < 1:
        raise ConfigError(f"bench: step_len must be >= 1, got {step_len}")

    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        if env is not None:
            env.update(_environment(torch.get_num_threads()))
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(batch, seq_len, input_size, generator=gen)
        grad_out = torch.randn(batch, seq_len, hidden, generator=gen)
        torch.manual_seed(seed)
        layers: list[tuple[str, nn.Module]] = [(f"torch.nn.{ANCHORS[anchor].__name__}", _Anchor(anchor, input_size,
                                                                                              hidden))]
        for name in models:
            layer = _build_layer(name, input_size, hidden)
            if getattr(layer, "d_model", input_size) != input_size:
                raise ConfigError(f"bench: first layer of {name!r} expects width {layer.d_model}, not {input_size}")
            layers.append((name, layer))
        cases = [_Case(n, m, x, grad_out, False, step_len, CLOCKS[clock]) for n, m in layers]
        if bf16:
            cases += [_Case(n, m, x, grad_out, True, step_len, CLOCKS[clock]) for n, m in layers]
        for case in cases:
            case.layer.train()
            for _ in range(warmup):
                case.run_fwd()
                case.run_fwdbwd()
                case.clear_grads()
            if case.supports_step() and warmup:
                case.run_steps()
        for _ in range(repeats):
            for case in cases:
                case.measure_round()
        rows = []
        tokens = batch * seq_len
        base = cases[0]
        base_fwd, base_fb = statistics.median(base.fwd), statistics.median(base.fwdbwd)
        base_step = statistics.median(base.step) if base.step else None
        for case in cases:
            fwd, fb = statistics.median(case.fwd), statistics.median(case.fwdbwd)
            step = statistics.median(case.step) if case.step else None
            row: dict[str, Any] = {
                "model": case.name,
                "precision": "bf16-autocast" if case.bf16 else "fp32",
                "fwd_ms": fwd * 1e3,
                "fwd_tokens_per_s": tokens / fwd,
                "fwd_ratio": fwd / base_fwd,
                "fwdbwd_ms": fb * 1e3,
                "fwdbwd_tokens_per_s": tokens / fb,
                "fwdbwd_ratio": fb / base_fb,
                "step_us": step * 1e6 if step is not None else None,
                "step_ratio": step / base_step if (step is not None and base_step) else None,
                "peak_mb": None,
                "saved_mb": None,
                # min over rounds: the noise-robust lower bound (load only ever adds time)
                "fwd_ratio_min": min(case.fwd) / min(base.fwd),
                "fwdbwd_ratio_min": min(case.fwdbwd) / min(base.fwdbwd),
                "fwd_ms_rounds": [round(v * 1e3, 3) for v in case.fwd],
                "fwdbwd_ms_rounds": [round(v * 1e3, 3) for v in case.fwdbwd],
            }
            if memory:
                case.clear_grads()
                row["peak_mb"] = _peak_alloc_bytes(case.run_fwdbwd) / 2**20
                case.clear_grads()
                params = list(case.layer.parameters())
                row["saved_mb"] = saved_bytes(case.run_fwdbwd, params + [case.x_grad]) / 2**20
                case.clear_grads()
            rows.append(row)
        if env is not None and hasattr(os, "getloadavg"):
            env["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
        return rows
    finally:
        torch.set_num_threads(old_threads)


def _fmt(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of ``run_bench`` rows (ratios are times relative to the anchor: lower is faster)."""
    head = ("| model | precision | fwd tok/s | fwd × anchor | fwd+bwd tok/s | fwd+bwd × anchor "
            "| step µs | step × anchor | peak MB | saved MB |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['precision']} | {_fmt(r['fwd_tokens_per_s'], ',.0f')} | {r['fwd_ratio']:.2f} "
            f"| {_fmt(r['fwdbwd_tokens_per_s'], ',.0f')} | {r['fwdbwd_ratio']:.2f} | {_fmt(r['step_us'], '.1f')} "
            f"| {_fmt(r['step_ratio'], '.2f')} | {_fmt(r['peak_mb'], '.1f')} | {_fmt(r['saved_mb'], '.1f')} |"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seqzoo bench", description="Time sequence layers against torch.nn.LSTM.")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help="comma-separated registered model names (default: %(default)s)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--input-size", type=int, default=128)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--repeats", type=int, default=7, help="timed rounds; the median is reported")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--anchor", choices=sorted(ANCHORS), default="lstm")
    p.add_argument("--step-len", type=int, default=None, help="steps timed for step latency (default min(L, 64))")
    p.add_argument("--bf16", action="store_true", help="also run every layer under CPU autocast to bfloat16")
    p.add_argument("--no-memory", action="store_true", help="skip the peak / saved memory measurement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall time, or process CPU time (load-robust, only meaningful with --threads 1)")
    p.add_argument("--json", type=Path, default=None, help="write rows and environment to this JSON file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``seqzoo bench``: print the table (and write JSON with ``--json``)."""
    args = _parser().parse_args(list(argv) if argv is not None else None)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    env: dict[str, Any] = {}
    rows = run_bench(models, batch=args.batch, seq_len=args.seq_len, input_size=args.input_size,
                     hidden=args.hidden, repeats=args.repeats, warmup=args.warmup, bf16=args.bf16,
                     threads=args.threads, anchor=args.anchor, step_len=args.step_len,
                     memory=not args.no_memory, seed=args.seed, clock=args.clock, env=env)
    settings = dict(batch=args.batch, seq_len=args.seq_len, input_size=args.input_size, hidden=args.hidden,
                    repeats=args.repeats, warmup=args.warmup, anchor=args.anchor, bf16=args.bf16, clock=args.clock)
    print(format_table(rows))
    print(f"\nB={args.batch} L={args.seq_len} in={args.input_size} H={args.hidden}; median of {args.repeats} "
          f"interleaved rounds; ratios = time / float32 anchor (lower is faster). torch {env['torch']}, "
          f"{env['threads']} threads, {env['cpu']}; load average {env.get('loadavg_start')} -> "
          f"{env.get('loadavg_end')}. peak MB: profiler allocator events during one forward+backward; saved MB: "
          "unique storages saved for backward (parameters and input excluded).")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": settings, "environment": env, "rows": rows}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

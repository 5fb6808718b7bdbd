"""Card ``deq``: Deep Equilibrium Models at CPU scale (spec stacks-memory-equilibrium-translation-privacy.md §4).

Bai, Kolter & Koltun, "Deep Equilibrium Models" (NeurIPS 2019, arXiv 1909.01377). The paper's headline is that a
single weight-tied layer solved for its fixed point (implicit backward, constant training memory) matches deep
explicit networks on WikiText-103 with up to 88% less training memory, at 2-3x the training time. What fits a shared
2-core CPU (spec §4.7):

* ``digits``: the MLP-DEQ (``mlp_deq``: ``z* = tanh(W z* + U x)``, weight-normed ``W``, d = 64) on scikit-learn's
  8x8 digits (``layout="rows"``), Adam; the spec expects roughly 95% test accuracy [rough].
* ``lm``: the ``deq_transformer`` (one causal attention + FFN block with input injection, d = 64, 4 heads, FFN 256,
  Anderson forward, implicit backward solved by Anderson, previous segment's equilibrium as memory) against its
  explicit twin ``tied_transformer`` (the same block unrolled 8 times with autograd, one memory per application)
  on tiny-shakespeare characters, 16 streams x 64 characters with the memory carried across segments; test cross
  entropy (nats per character) at the best-validation checkpoint.

Numbers measured after training by ``derive`` (in the card's own process, one run after the other):

* ``grad_fd_rel_err``: the trained DEQ in float64, solved by Broyden to relative residual 1e-12 (forward and
  backward): the implicit gradient of the training loss along 3 random parameter directions vs central finite
  differences (largest relative error); ``grad_check_converged`` says whether every solve reached 1e-12.
* ``saved_mb``: bytes the autograd graph saves for the backward of one training forward of the sequence layer
  (the bench harness's accounting, ``seqzoo.experiments.bench``: unique storages, parameters and input excluded),
  on a training batch (16 x 64), memory reset.
* ``step_ms`` / ``step_vs_anchor``: median wall time of one forward + backward of the whole model on that batch over
  5 rounds, and the same divided by an anchor (a fixed chain of 512x512 matrix products) timed in the same rounds.
* ``final_rel_residual``: the DEQ forward solver's mean relative residual ``‖f(z) − z‖ / ‖f(z)‖`` over the last
  logged training steps (from ``module_metrics`` in ``metrics.jsonl``), and the iteration counts at the start and end.

How small differs from the paper: tiny-shakespeare characters instead of WikiText-103 words; d = 64 instead of 700,
no adaptive softmax, rotary positions instead of Transformer-XL relative ones, no weight normalization in the
transformer block, no explicit pretraining phase, a few hundred Adam steps; the twin has depth 8 (the paper's
Transformer-XL has 16-18 different layers). Memory is the autograd's saved tensors of the equilibrium layer, not a
GPU's peak memory.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seqzoo.experiments.card import Claim, ClaimResult, Entry, ExperimentCard, Plot, Results, Scale
from seqzoo.experiments.claims import all_held, compare, means, threshold
from seqzoo.experiments.registry import register_experiment

LM_TASK = {"dataset": "tiny-shakespeare", "bptt": 64}
WIDTH, HEADS, D_FF, DEPTH = 64, 4, 256, 8
DEQ_SOLVER = {"solver": "anderson", "max_iter": 20, "eval_max_iter": 30, "tol": 1e-3, "b_solver": "anderson",
              "b_max_iter": 20, "b_tol": 1e-3}
GRAD_TOL = 1e-4  # implicit gradient vs finite differences (spec §4.7)
MEMORY_RATIO = 0.20  # DEQ saved memory <= 20% of the twin's (the claim; paper: -88% on WT103)
LOSS_FACTOR = 1.05  # DEQ test loss within 5% of the twin's (paper: equal perplexity)
RESIDUAL = 0.05  # the maintainers' rule of thumb for a converged DEQ (deq issue #20)
DIGITS_ACCURACY = 0.95  # spec §4.7 item 4 [rough expectation]


def entries(width: int = WIDTH, heads: int = HEADS, d_ff: int = D_FF, depth: int = DEPTH, bptt: int = 64,
            lm_train: dict[str, Any] | None = None, digits_train: dict[str, Any] | None = None,
            solver: dict[str, Any] | None = None) -> list[Entry]:
    """The MLP-DEQ on digits and the DEQ-Transformer and its tied twin on tiny-shakespeare."""
    block = {"n_heads": heads, "d_ff": d_ff, "dropout": 0.0, "mem_len": bptt}
    lm = {**LM_TASK, "bptt": bptt}
    return [
        Entry("mlp_deq", "digits", {"d_model": 64}, {"layout": "rows"}, {"arch": "mlp_deq", "task": "digits"},
              dict(digits_train or {})),
        Entry("deq_transformer", "lm", {"d_model": width, "layer_kwargs": {**block, **(solver or DEQ_SOLVER)}}, lm,
              {"arch": "deq", "task": "lm"}, dict(lm_train or {})),
        Entry("tied_transformer", "lm", {"d_model": width, "layer_kwargs": {**block, "depth": depth}}, lm,
              {"arch": "tied", "task": "lm"}, dict(lm_train or {})),
    ]


# ----- measurements after training (derive) ----------------------------------------------------------------------

def _loss(model: Any, batch: dict[str, Any]) -> Any:
    import torch.nn.functional as F

    if getattr(model, "scores_targets", False):
        nll, _ = model(batch["inputs"], targets=batch["targets"])
        return nll.mean()
    out, _ = model(batch["inputs"])
    return F.cross_entropy(out, batch["targets"])


def _deqs(model: Any) -> list[Any]:
    from seqzoo.layers.deq import DEQ

    return [m for m in model.modules() if isinstance(m, DEQ)]


def gradient_check(model: Any, batch: dict[str, Any], *, directions: int = 3, h: float = 1e-6, seed: int = 0
                   ) -> dict[str, float]:
    """Largest relative error of the implicit gradient vs central differences along random directions (float64).

    Every DEQ of a float64 copy of ``model`` solves with Broyden (deq's backward solver) to a relative residual of
    1e-12, forward and backward: Anderson (m = 6) stalled near 1e-10 / 1e-8 on one trained DEQ-Transformer within
    400 iterations (the first small run), which is below what training needs but too coarse for this check. Each
    direction is Gaussian per parameter, scaled to the parameter's RMS, so the step ``h`` is relative.
    """
    import torch

    m = copy.deepcopy(model).double().eval()
    for d in _deqs(m):
        d.tol, d.max_iter, d.eval_max_iter, d.b_tol, d.b_max_iter = 1e-12, 400, None, 1e-12, 400
        d.solver = d.b_solver = "broyden"
    b = {k: (v.double() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in batch.items()}
    params = [p for p in m.parameters() if p.requires_grad]
    grads = torch.autograd.grad(_loss(m, b), params)
    converged = all(bool(d.last_stats.converged.all()) and bool(d.last_backward_stats.converged.all())
                    for d in _deqs(m))
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    with torch.no_grad():
        for _ in range(directions):
            dirs = [torch.randn(p.shape, generator=gen, dtype=p.dtype) * p.pow(2).mean().sqrt().clamp_min(1e-3)
                    for p in params]
            for p, v in zip(params, dirs):
                p.add_(h * v)
            up = float(_loss(m, b))
            for p, v in zip(params, dirs):
                p.sub_(2 * h * v)
            down = float(_loss(m, b))
            for p, v in zip(params, dirs):
                p.add_(h * v)
            fd = (up - down) / (2 * h)
            analytic = float(sum((g * v).sum() for g, v in zip(grads, dirs)))
            worst = max(worst, abs(analytic - fd) / max(abs(fd), 1e-30))
    return {"grad_fd_rel_err": worst, "grad_check_converged": float(converged)}


def saved_megabytes(model: Any, batch: dict[str, Any]) -> float:
    """MB the autograd graph saves in one training forward+backward of ``model.layers[0]`` (bench accounting)."""
    import torch

    from seqzoo.experiments.bench import saved_bytes

    model.train()
    with torch.no_grad():
        x = model.encode(batch["inputs"])
    x = x.detach().requires_grad_(True)
    layer = model.layers[0]

    def run() -> None:
        y, _ = layer(x)
        y.backward(torch.ones_like(y))

    mb = saved_bytes(run, list(layer.parameters()) + [x]) / 2**20
    model.zero_grad(set_to_none=True)
    return mb


def step_time(model: Any, batch: dict[str, Any], rounds: int = 5) -> dict[str, float]:
    """Median forward+backward wall time of ``model`` on ``batch`` and its ratio to an anchor timed alongside."""
    import torch

    a = torch.randn(512, 512, generator=torch.Generator().manual_seed(0))

    def anchor() -> None:
        x = a
        for _ in range(20):
            x = torch.tanh(x @ a)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        _loss(model, batch).backward()

    model.train()
    times: dict[str, list[float]] = {"step": [], "anchor": []}
    fns: dict[str, Callable[[], None]] = {"step": step, "anchor": anchor}
    for r in range(rounds + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if r:  # the first round warms up
                times[name].append(time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"step_ms": 1e3 * med["step"], "anchor_ms": 1e3 * med["anchor"],
            "step_vs_anchor": med["step"] / med["anchor"]}


def solver_numbers(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Forward-solver health from the train rows of ``metrics.jsonl`` (``module_metrics`` of the DEQ)."""
    train = [r for r in rows if r.get("split") == "train"]
    if not train:
        return {}
    key = next((k for k in train[-1] if k.endswith("deq.fwd_rel_residual")), None)
    if key is None:
        return {}
    base = key[: -len("fwd_rel_residual")]
    first, last = train[0], train[-1]
    out = {"final_rel_residual": last[key], "final_rel_residual_max": last.get(base + "fwd_rel_residual_max", 0.0),
           "fwd_iterations_first": first.get(base + "fwd_iterations", 0.0),
           "fwd_iterations_last": last.get(base + "fwd_iterations", 0.0),
           "bwd_iterations_last": last.get(base + "bwd_iterations", 0.0),
           "fwd_converged_last": last.get(base + "fwd_converged", 0.0)}
    return {k: float(v) for k, v in out.items()}


def derive(entry: Entry, run_dir: Path) -> dict[str, float]:
    """Gradient check, saved memory, step time and solver health of one finished run (the card's hook)."""
    from seqzoo.tasks import create_task
    from seqzoo.training.runs import load_run, read_config, read_metrics

    out = solver_numbers(read_metrics(run_dir))
    model = load_run(run_dir)
    task = create_task(entry.task, **entry.task_args)
    batch_size = int(read_config(run_dir)["train"]["batch_size"])
    batch = {k: v for k, v in task.train_batch(0, batch_size, 0).items() if k in ("inputs", "targets")}
    if _deqs(model):
        small = {k: v[:4, :32] if entry.task == "lm" else v[:16] for k, v in batch.items()}
        out.update(gradient_check(model, small))
    if entry.task == "lm":
        out["saved_mb"] = saved_megabytes(model, batch)
        out.update(step_time(model, batch))
    return out


# ----- claims ----------------------------------------------------------------------------------------------------

def _derived(results: Results, name: str, **labels: Any) -> Any:
    return results.stat(name, "derived", **labels)


def _check_gradient(results: Results) -> ClaimResult:
    parts, numbers = [], {}
    for arch in ("mlp_deq", "deq"):
        st = _derived(results, "grad_fd_rel_err", arch=arch)
        conv = _derived(results, "grad_check_converged", arch=arch)
        numbers[f"{arch}_max_rel_err"] = float(f"{max(st.values):.3g}")
        numbers[f"{arch}_solves_converged"] = conv.values
        parts.append((max(st.values) < GRAD_TOL, f"{arch}: largest relative error {max(st.values):.2e} over "
                                                 f"{st.n} seeds x 3 directions"))
    return all_held(parts, numbers, f"every seed's error < {GRAD_TOL:g}")


def _time_numbers(results: Results) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for arch in ("deq", "tied"):
        ms = results.get("step_ms", "derived", arch=arch)
        rel = results.get("step_vs_anchor", "derived", arch=arch)
        if ms is not None and rel is not None:
            out[f"{arch}_step_ms"] = round(ms.mean, 1)
            out[f"{arch}_step_vs_anchor"] = round(rel.mean, 3)
    if "deq_step_vs_anchor" in out and "tied_step_vs_anchor" in out:
        out["deq_over_tied_time"] = round(out["deq_step_vs_anchor"] / out["tied_step_vs_anchor"], 2)
    return out


def _check_memory(results: Results) -> ClaimResult:
    deq, tied = _derived(results, "saved_mb", arch="deq"), _derived(results, "saved_mb", arch="tied")
    ratio = deq.mean / tied.mean
    numbers = {"deq_saved_mb": round(deq.mean, 3), "tied_saved_mb": round(tied.mean, 3), "ratio": round(ratio, 3),
               **_time_numbers(results)}
    return ClaimResult(ratio <= MEMORY_RATIO, numbers,
                       f"DEQ {deq.mean:.3f} MB vs tied twin (depth {DEPTH}) {tied.mean:.3f} MB saved for backward: "
                       f"{ratio:.1%} (held if <= {MEMORY_RATIO:.0%})")


def _check_loss(results: Results) -> ClaimResult:
    numbers = {**means(results, ("deq", "tied"), where={"task": "lm"}, metric="cross_entropy", spread="seeds"),
               **_time_numbers(results)}
    return compare(results, "deq", "tied", "<=", where={"task": "lm"}, metric="cross_entropy", factor=LOSS_FACTOR,
                   numbers=numbers)


def _check_residual(results: Results) -> ClaimResult:
    numbers: dict[str, Any] = {}
    parts = []
    for arch in ("mlp_deq", "deq"):
        st = _derived(results, "final_rel_residual", arch=arch)
        numbers[f"{arch}_final_rel_residual"] = [round(v, 4) for v in st.values]
        numbers[f"{arch}_final_rel_residual_max"] = [
            round(v, 4) for v in _derived(results, "final_rel_residual_max", arch=arch).values]
        for key in ("fwd_iterations_first", "fwd_iterations_last", "bwd_iterations_last"):
            numbers[f"{arch}_{key}"] = round(_derived(results, key, arch=arch).mean, 1)
        parts.append((max(st.values) < RESIDUAL, f"{arch}: final relative residual {st}"))
    return all_held(parts, numbers, f"every seed's mean relative residual over the last logged steps < {RESIDUAL}")


def _check_digits(results: Results) -> ClaimResult:
    return threshold(results, {"arch": "mlp_deq", "task": "digits"}, ">=", DIGITS_ACCURACY, metric="accuracy",
                     numbers=lambda r: means(r, ("mlp_deq",), metric="accuracy", spread="seeds"))


# ----- plot ------------------------------------------------------------------------------------------------------

def _draw(results: Results, path: Path) -> None:
    from seqzoo.experiments.plots import bars, cells, panels, save

    fig, axes = panels(2, width=3.6)
    bars(axes[0], cells(results, "arch", ("deq", "tied"), metric="cross_entropy", task="lm"),
         colors={"deq": "#c44e52", "tied": "#999999"}, title="tiny-shakespeare (char)",
         ylabel=f"{results.split} cross-entropy (nats)")
    bars(axes[1], cells(results, "arch", ("deq", "tied"), metric="saved_mb", split="derived", task="lm"),
         colors={"deq": "#c44e52", "tied": "#999999"}, title="saved for backward", ylabel="MB")
    save(fig, path)


# ----- scales ----------------------------------------------------------------------------------------------------

_LM_TRAIN = {"batch_size": 16, "lr": 2e-3, "warmup_steps": 40, "clip_norm": 1.0, "eval_batch_size": 64}
_DIGITS_TRAIN = {"batch_size": 64, "lr": 3e-3, "eval_batch_size": 300}
SMALL_LM_STEPS, SMALL_DIGITS_STEPS = 400, 400

CARD = register_experiment(ExperimentCard(
    name="deq",
    title="Deep Equilibrium Models: implicit gradients, constant memory, and the explicit twin",
    paper="Bai, Kolter & Koltun, Deep Equilibrium Models (NeurIPS 2019, arXiv 1909.01377)",
    description="An MLP-DEQ on 8x8 digits, and a DEQ-Transformer (one weight-tied causal attention + FFN block with "
                "input injection, Anderson forward, implicit backward) against the same block unrolled 8 times with "
                "autograd on tiny-shakespeare characters; claims on the implicit gradient, the training memory, the "
                "loss and the solver's residual, with the time per step of both.",
    grid=entries,
    metric="cross_entropy",
    split="test",
    plots=[Plot("bars", _draw, "DEQ vs its tied twin: test cross-entropy and bytes saved for backward")],
    derive=derive,
    scales={
        "tiny": Scale(train={"steps": 3, "eval_every": 3, "test_split": "test"},
                      grid=lambda: entries(width=8, heads=2, d_ff=16, depth=2, bptt=8,
                                           lm_train={**_LM_TRAIN, "batch_size": 2, "eval_batch_size": 4096},
                                           digits_train={**_DIGITS_TRAIN, "batch_size": 8}),
                      note="plumbing only: 3 steps, width 8 (needs tiny-shakespeare); the derived numbers are "
                           "computed but mean nothing", expected_seconds=40),
        "small": Scale(train={"steps": SMALL_LM_STEPS, "eval_every": 200, "test_split": "test"}, seeds=(0, 1, 2),
                       grid=lambda: entries(lm_train=_LM_TRAIN,
                                            digits_train={**_DIGITS_TRAIN, "steps": SMALL_DIGITS_STEPS}),
                       workers=2, expected_seconds=324,
                       note=f"{SMALL_LM_STEPS} Adam steps (lr 2e-3, 40 warm-up steps, clip 1) of 16 x 64 "
                            "characters with the memory carried (about 0.4 epochs of tiny-shakespeare), "
                            f"width {WIDTH}, {HEADS} heads, FFN {D_FF}, twin depth {DEPTH}; DEQ: Anderson (m=6) "
                            "to rel. residual 1e-3, at most 20 iterations (30 in evaluation), implicit backward "
                            "by Anderson to 1e-3, at most 20; "
                            f"MLP-DEQ: {SMALL_DIGITS_STEPS} Adam steps (lr 3e-3, batch 64); 3 seeds. Expected time "
                            "estimated from CPU time (871 CPU-s over 2 workers); the one run, on a machine at load "
                            "20, took 55 min."),
    },
    claims=[
        Claim("implicit-gradient", "The implicit (IFT) gradient of the trained DEQs matches central finite "
              f"differences in float64 (relative error < {GRAD_TOL:g}; spec §4.7).", _check_gradient),
        Claim("constant-memory", "DEQ training saves at most 20% of the memory its equal-depth explicit twin saves "
              "for the backward (paper: up to 88% less training memory); time per step of both reported.",
              _check_memory),
        Claim("equal-loss", "The DEQ-Transformer's test loss is within 5% of its explicit weight-tied twin's at equal "
              "steps (paper: DEQ matches the explicit Transformer's perplexity).", _check_loss),
        Claim("solver-converges", f"The forward solver's relative residual at the end of training is < {RESIDUAL} "
              "(the maintainers' rule of thumb, deq issue #20).", _check_residual),
    ],
    observations=[
        Claim("digits-accuracy", f"The MLP-DEQ reaches >= {DIGITS_ACCURACY:.0%} test accuracy on the 8x8 digits "
              "(spec §4.7's rough expectation; not a claim of the paper, which has no digits experiment).",
              _check_digits),
    ],
))

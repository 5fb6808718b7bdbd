"""Running a model on task batches: the model call, the fit check and exact split evaluation.

Two ways to evaluate a split (``evaluate_split`` picks one and names it):

* ``"independent"``: every example (for ``lm``: every window of ``eval_context + bptt`` tokens) starts from a
  fresh state; ``evaluate``.
* ``"carried"``: for a task that offers ``stream_batches`` (``lm``) and a model that carries a state
  (``carries_state``), the split is read as parallel contiguous streams, segment after segment, the state carried
  from each segment into the next, every target scored once; ``evaluate_stream``. For a recurrent language model
  this is the full-history perplexity the papers report; the independent windows truncate the history.

One loss path: training (``Trainer.compute_loss``) and evaluation both score a batch with ``score_batch``, then
take ``batch_loss`` or ``batch_metric_sums`` of the result. When the model scores targets itself and the task can
use per-token NLLs, the model is asked for ``-log p(target)`` per position and never builds its full output
distribution; otherwise its outputs go to ``task.loss`` / ``task.metric_sums``. The protocol:

* model: a truthy ``scores_targets`` attribute, and ``model(**inputs, targets=targets[, state=...])`` returns
  ``(nll, state)`` with ``nll`` of the shape of ``targets`` (``SequenceModel`` with the ``"step"`` decoder; an
  adaptive softmax head then evaluates only the clusters the targets lie in). The call goes through
  ``model(...)``, so DistributedDataParallel's hooks run as for ``forward``.
* task: ``loss_from_nll(nll, batch)`` (a scalar) and ``metric_sums_from_nll(nll, batch)`` (``{metric: (sum,
  count)}``) that give the same numbers ``loss`` and ``metric_sums`` give on the outputs (``lm``).

Callers that need the distribution (generation, beam search, sampling) call the model without ``targets``.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from seqzoo.tasks.base import Batch, Task, TensorDataset
from seqzoo.training.distributed import DistContext, all_reduce_sum

# Evaluation sets are built with this seed for every run, so runs of different training seeds are
# measured on the same examples.
EVAL_SEED = 0


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def model_inputs(model: nn.Module, batch: Batch) -> dict[str, Tensor]:
    """The named inputs the model declares (``input_names``) that the batch holds."""
    names = getattr(unwrap(model), "input_names", ("inputs",))
    return {name: batch[name] for name in names if name in batch}


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


def forward(model: nn.Module, batch: Batch, *, device: torch.device, bf16: bool = False) -> Tensor:
    """``model(**inputs)[0]`` under optional bf16 autocast, returned in float32 for the loss."""
    with autocast(device, bf16):
        out = model(**model_inputs(model, batch))
    out = out[0] if isinstance(out, (tuple, list)) else out
    return out.float() if bf16 and out.is_floating_point() else out


NO_STATE = object()  # score_batch: do not pass a state (a plain forward), as opposed to None (a fresh state)


def scores_nll(model: nn.Module, task: Task) -> bool:
    """True when ``model`` scores targets itself and ``task`` takes per-token NLLs (module docstring)."""
    return bool(getattr(unwrap(model), "scores_targets", False)) and callable(getattr(task, "loss_from_nll", None))


@dataclass
class Scores:
    """What ``score_batch`` got from the model: per-token NLLs (``is_nll``) or its outputs, and its new state."""

    values: Tensor
    is_nll: bool
    state: Any = None


def score_batch(model: nn.Module, task: Task, batch: Batch, *, device: torch.device, bf16: bool = False,
                state: Any = NO_STATE) -> Scores:
    """Run the model on ``batch`` for the loss or metrics: per-token NLLs when the model and task support it
    (``scores_nll``), else the outputs. ``state`` (when given, None = fresh) is passed in and the new one returned,
    for truncated BPTT and carried evaluation. Under ``bf16`` the model runs in autocast and the values are float32.
    """
    kwargs = model_inputs(model, batch)
    nll = scores_nll(model, task)
    if nll:
        kwargs["targets"] = batch["targets"]
    if state is not NO_STATE:
        kwargs["state"] = state
    with autocast(device, bf16):
        out = model(**kwargs)
    new_state = None
    if state is not NO_STATE:
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise TypeError(f"{type(unwrap(model)).__name__} must return (outputs, state) to carry a state, "
                            f"got {type(out).__name__}")
        out, new_state = out
    elif isinstance(out, (tuple, list)):
        out = out[0]
    if bf16 and out.is_floating_point():
        out = out.float()
    return Scores(out, nll, new_state)


def batch_loss(task: Task, scores: Scores, batch: Batch) -> Tensor:
    """The task's training loss of a scored batch (a scalar with autograd)."""
    return task.loss_from_nll(scores.values, batch) if scores.is_nll else task.loss(scores.values, batch)


def batch_metric_sums(task: Task, scores: Scores, batch: Batch) -> dict[str, tuple[float, float]]:
    """The task's ``{metric: (sum, count)}`` of a scored batch."""
    return (task.metric_sums_from_nll(scores.values, batch) if scores.is_nll
            else task.metric_sums(scores.values, batch))


def detach_state(state: Any) -> Any:
    """The same nested tuple/list/dict of tensors, cut from the autograd graph (truncated BPTT)."""
    if torch.is_tensor(state):
        return state.detach()
    if isinstance(state, tuple):
        return tuple(detach_state(s) for s in state)
    if isinstance(state, list):
        return [detach_state(s) for s in state]
    if isinstance(state, dict):
        return {k: detach_state(v) for k, v in state.items()}
    return state


def carries_state(model: nn.Module) -> bool:
    """True when the model can carry its state from one segment of a stream to the next.

    That needs a ``forward(..., state=...)``, a causal model and a state of fixed, nonzero size (``state_size``
    of every layer the same for short and long inputs): recurrent cells, memory-limited stacks, causal
    convolution buffers. Models whose state grows with the input (attention caches, full stack DPs) or that hold
    none are never carried.
    """
    m = unwrap(model)
    try:
        if "state" not in inspect.signature(m.forward).parameters:
            return False
    except (TypeError, ValueError):
        return False
    if not getattr(m, "is_causal", False):
        return False
    parts = list(getattr(m, "layers", None) or [m])
    total = 0
    for part in parts:
        size = getattr(part, "state_size", None)
        if not callable(size):
            return False
        short, long = size(16), size(4096)
        if short != long:
            return False
        total += short
    return total > 0


def _shapes(batch: Batch) -> str:
    return ", ".join(f"{k}={tuple(v.shape)}" for k, v in batch.items() if torch.is_tensor(v))


def check_fit(model: nn.Module, task: Task, batch: Batch, *, device: torch.device, model_name: str,
              task_name: str) -> None:
    """Fail early, with a clear message, when the model's inputs or output size do not fit the task."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            try:
                outputs = forward(model, batch, device=device)
            except Exception as e:
                raise ValueError(f"model {model_name!r} cannot run on the inputs of task {task_name!r} "
                                 f"({_shapes(batch)}): {e}") from e
            spec = task.spec
            if outputs.dim() == 0 or outputs.shape[-1] != spec.d_output:
                got = outputs.shape[-1] if outputs.dim() else "a scalar"
                raise ValueError(
                    f"model {model_name!r} has output size {got} (output shape {tuple(outputs.shape)}) but task "
                    f"{task_name!r} ({spec.output_kind} output) needs d_output={spec.d_output}; "
                    f"drop d_output from the model arguments (it is filled from the task) or set it to "
                    f"{spec.d_output}")
            try:
                loss = task.loss(outputs, batch)
            except Exception as e:
                raise ValueError(
                    f"outputs of model {model_name!r} (shape {tuple(outputs.shape)}) do not fit task "
                    f"{task_name!r} ({spec.output_kind} output, {_shapes(batch)}); the task needs "
                    f"decoder={spec.decoder!r}: {e}") from e
            if loss.dim() != 0:
                raise ValueError(f"task {task_name!r} loss must be a scalar, got shape {tuple(loss.shape)}")
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, task: Task, data: TensorDataset, *, batch_size: int, device: torch.device,
             bf16: bool = False, ctx: DistContext | None = None) -> dict[str, float]:
    """Metrics of ``task.spec.metrics`` averaged exactly over ``data``.

    Under data parallelism rank r evaluates batches r, r + W, ... and the sums are added over ranks, so
    every rank returns the same numbers.
    """
    module = unwrap(model)
    was_training = module.training
    module.eval()
    names = list(task.spec.metrics)
    sums = torch.zeros(len(names), 2, dtype=torch.float64)
    rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
    try:
        with torch.no_grad():
            for i, batch in enumerate(data.batches(batch_size)):
                if i % world != rank:
                    continue
                batch = to_device(batch, device)
                scores = score_batch(module, task, batch, device=device, bf16=bf16)
                _add_sums(sums, batch_metric_sums(task, scores, batch), names)
    finally:
        module.train(was_training)
    return _metrics(task, names, sums, ctx)


def _add_sums(sums: Tensor, batch_sums: dict[str, tuple], names: list[str]) -> None:
    """Add one batch's (sum, count) per metric into ``sums`` (rows in the order of ``names``)."""
    for j, n in enumerate(names):
        s, c = batch_sums[n]
        sums[j, 0] += s
        sums[j, 1] += c


def _metrics(task: Task, names: list[str], sums: Tensor, ctx: DistContext | None) -> dict[str, float]:
    """Exact means from the (sum, count) rows, added over ranks, plus the task's derived metrics."""
    if ctx is not None and ctx.enabled:
        sums = all_reduce_sum(sums.to(ctx.device), ctx).cpu()
    out = {n: (float(sums[j, 0] / sums[j, 1]) if sums[j, 1] > 0 else math.nan) for j, n in enumerate(names)}
    out.update(task.derived_metrics(out))
    return out


def evaluate_stream(model: nn.Module, task: Task, batches: list[Batch], *, device: torch.device,
                    bf16: bool = False, ctx: DistContext | None = None) -> dict[str, float]:
    """Metrics over consecutive segments of parallel streams with the state carried between segments.

    ``batches`` come from ``task.stream_batches``: row i of a batch continues row i of the previous one unless its
    ``segment_index`` is 0 (the state is reset there). Under data parallelism rank r reads rows r, r + W, ... of
    every segment, carrying its own rows, and the sums are added over ranks.
    """
    module = unwrap(model)
    was_training = module.training
    module.eval()
    names = list(task.spec.metrics)
    sums = torch.zeros(len(names), 2, dtype=torch.float64)
    rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
    state = None
    try:
        with torch.no_grad():
            for batch in batches:
                if int(batch.get("segment_index", 0)) == 0:
                    state = None
                if world > 1:
                    batch = {k: (v[rank::world] if torch.is_tensor(v) and v.dim() > 0 else v) for k, v in batch.items()}
                if batch["inputs"].shape[0] == 0:
                    continue
                batch = to_device(batch, device)
                scores = score_batch(module, task, batch, device=device, bf16=bf16, state=state)
                state = scores.state
                _add_sums(sums, batch_metric_sums(task, scores, batch), names)
    finally:
        module.train(was_training)
    return _metrics(task, names, sums, ctx)


def evaluation_mode(model: nn.Module, task: Task) -> str:
    """``"carried"`` when the task offers streams and the model carries a state, else ``"independent"``."""
    return "carried" if callable(getattr(task, "stream_batches", None)) and carries_state(model) else "independent"


def evaluate_split(model: nn.Module, task: Task, split: str, *, batch_size: int, device: torch.device,
                   bf16: bool = False, ctx: DistContext | None = None) -> tuple[dict[str, float], str]:
    """Metrics of ``split`` and the evaluation mode used (see the module docstring).

    In the carried mode ``batch_size`` is the number of parallel streams.
    """
    mode = evaluation_mode(model, task)
    if mode == "carried":
        batches = task.stream_batches(split, batch_size)
        out = evaluate_stream(model, task, batches, device=device, bf16=bf16, ctx=ctx)
    else:
        out = evaluate(model, task, task.build(split, EVAL_SEED), batch_size=batch_size, device=device, bf16=bf16,
                       ctx=ctx)
    decode = getattr(task, "decode_metrics", None)  # metrics of decoded outputs (translation: BLEU, chrF)
    if callable(decode):
        out.update(decode(unwrap(model), split))
    return {**out, **module_metrics(model)}, mode


def module_metrics(model: nn.Module) -> dict[str, float]:
    """Numbers that modules report about themselves (``report_metrics()``, e.g. fitted ARMA coefficients).

    Keys keep their names; a key an earlier module already reported gets the prefix ``m<i>_`` (i = the
    module's index among the reporting modules).
    """
    out: dict[str, float] = {}
    reporters = [m for m in model.modules() if callable(getattr(m, "report_metrics", None))]
    for i, m in enumerate(reporters):
        for k, v in m.report_metrics().items():
            out[f"m{i}_{k}" if k in out else k] = float(v)
    return out

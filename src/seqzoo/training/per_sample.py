"""Per-example gradients of any model: ``torch.func`` ``vmap(grad)`` where it applies, an exact loop otherwise.

``per_sample_grads(model, loss_fn, batch, method)`` returns ``{parameter name: (B, *shape)}`` and the ``B`` losses,
where row ``i`` is the gradient of ``loss_fn(model, batch_i)`` and ``batch_i`` is example ``i`` alone as a batch of
one (every tensor entry whose first dimension is ``B`` is sliced; other entries are shared). Methods:

* ``"vmap"``: ``vmap(grad(functional_call))`` over the examples (one batched computation). Custom autograd
  Functions without a vmap rule (the fused LSTM loop, the hand-written scan and stack backward passes) and
  data-dependent Python control flow cannot run under it.
* ``"loop"``: one forward and ``autograd.grad`` per example: slower, works for every model (C kernel paths included,
  since it only uses ordinary autograd), and is the reference the tests compare ``vmap`` against.
* ``"auto"``: ``vmap``, and the loop for models on which ``vmap`` raises (decided once per model, remembered).
* ``"joint"``: one forward of the whole batch and the gradient of each example's loss in it (``is_grads_batched``).
  Only meaningful for models whose examples interact (batch statistics); the per-example loss then depends on the
  other examples, which is exactly why such models break DP-SGD's sensitivity bound. Used only for the labelled SIDP
  replication.
"""

from __future__ import annotations

import logging
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from seqzoo.errors import ConfigError

log = logging.getLogger("seqzoo.training")

METHODS = ("auto", "vmap", "loop", "joint")
LossFn = Callable[[nn.Module, dict[str, Any]], Tensor]
# model -> the method "auto" settled on ("vmap" or "loop"), so vmap is tried once per model
_AUTO_CHOICE: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


def batch_size_of(batch: dict[str, Any]) -> int:
    """The number of examples: the first dimension of ``inputs`` (or of the first tensor entry)."""
    x = batch.get("inputs")
    if not torch.is_tensor(x):
        x = next((v for v in batch.values() if torch.is_tensor(v) and v.dim() > 0), None)
    if x is None or x.dim() == 0:
        raise ValueError("per-sample gradients need a batch with a tensor 'inputs' entry of shape (B, ...)")
    return int(x.shape[0])


def _per_example_keys(batch: dict[str, Any], n: int) -> list[str]:
    return [k for k, v in batch.items() if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == n]


def example(batch: dict[str, Any], i: int) -> dict[str, Any]:
    """Example ``i`` of ``batch`` as a batch of one."""
    n = batch_size_of(batch)
    keys = set(_per_example_keys(batch, n))
    return {k: (v[i:i + 1] if k in keys else v) for k, v in batch.items()}


def trainable(model: nn.Module) -> dict[str, Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def per_sample_grads(model: nn.Module, loss_fn: LossFn, batch: dict[str, Any], method: str = "auto"
                     ) -> tuple[dict[str, Tensor], Tensor]:
    """``({name: (B, *p.shape)}, losses (B,))``: the gradient of each example's own loss (see the module doc)."""
    if method not in METHODS:
        raise ConfigError(f"per-sample gradient method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "auto":
        chosen = _AUTO_CHOICE.get(model, "vmap")
        if chosen == "vmap":
            try:
                out = _vmap(model, loss_fn, batch)
                _AUTO_CHOICE[model] = "vmap"
                return out
            except (RuntimeError, NotImplementedError, TypeError, ValueError) as err:
                log.info("per-sample gradients: vmap does not apply to %s (%s); using the per-example loop",
                         type(model).__name__, str(err).splitlines()[0] if str(err) else type(err).__name__)
                _AUTO_CHOICE[model] = "loop"
        return _loop(model, loss_fn, batch)
    return {"vmap": _vmap, "loop": _loop, "joint": _joint}[method](model, loss_fn, batch)


def _loop(model: nn.Module, loss_fn: LossFn, batch: dict[str, Any]) -> tuple[dict[str, Tensor], Tensor]:
    params = trainable(model)
    n = batch_size_of(batch)
    rows: list[list[Tensor]] = []
    losses = []
    for i in range(n):
        loss = loss_fn(model, example(batch, i))
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        rows.append([torch.zeros_like(p) if g is None else g for g, p in zip(grads, params.values())])
        losses.append(loss.detach())
    return ({name: torch.stack([r[j] for r in rows]) for j, name in enumerate(params)},
            torch.stack(losses) if losses else torch.zeros(0))


class _Call(nn.Module):
    """``loss_fn(model, batch)`` as a module, so ``torch.func.functional_call`` can swap the model's parameters."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: dict[str, Any]) -> Tensor:
        return self.loss_fn(self.model, batch)


def _vmap(model: nn.Module, loss_fn: LossFn, batch: dict[str, Any]) -> tuple[dict[str, Tensor], Tensor]:
    from torch.func import functional_call, grad_and_value, vmap

    params = {k: p.detach() for k, p in trainable(model).items()}
    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())
    call = _Call(model, loss_fn)
    n = batch_size_of(batch)
    keys = _per_example_keys(batch, n)
    shared = {k: v for k, v in batch.items() if k not in keys}

    def one(p: dict[str, Tensor], rows: dict[str, Tensor]) -> Tensor:
        b = {**shared, **{k: v.unsqueeze(0) for k, v in rows.items()}}
        state = {f"model.{k}": v for k, v in {**p, **frozen, **buffers}.items()}
        return functional_call(call, state, (b,))

    with warnings.catch_warnings():  # ops without a batching rule run in a (correct, slower) loop inside vmap
        warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet implemented")
        grads, losses = vmap(grad_and_value(one), in_dims=(None, 0), randomness="different")(
            params, {k: batch[k] for k in keys})
    return grads, losses.detach()


def _joint(model: nn.Module, loss_fn: LossFn, batch: dict[str, Any]) -> tuple[dict[str, Tensor], Tensor]:
    """Per-example losses of one joint forward (``loss_fn`` must return the (B,) vector) and their gradients."""
    params = trainable(model)
    losses = loss_fn(model, batch)
    n = losses.shape[0]
    eye = torch.eye(n, dtype=losses.dtype, device=losses.device)
    try:
        grads = torch.autograd.grad(losses, list(params.values()), grad_outputs=eye, is_grads_batched=True,
                                    allow_unused=True, retain_graph=True)
    except RuntimeError:  # an op without a batching rule in its backward: one backward per example
        per = [torch.autograd.grad(losses[i], list(params.values()), allow_unused=True, retain_graph=True)
               for i in range(n)]
        grads = tuple(torch.stack([g[j] if g[j] is not None else torch.zeros_like(p) for g in per])
                      for j, p in enumerate(params.values()))
    return ({name: torch.zeros((n, *p.shape), dtype=p.dtype, device=p.device) if g is None else g
             for (name, p), g in zip(params.items(), grads)}, losses.detach())

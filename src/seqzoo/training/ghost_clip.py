"""Ghost clipping: per-example gradient norms and the clipped sum from one batched backward, without ever forming
the per-example gradients (Goodfellow 2015's norm trick; Li et al. 2021, "ghost clipping"; Bu et al. 2022).

For ``nn.Linear`` with input ``a_i`` (T × d_in per example) and output gradient ``b_i`` (T × d_out), the example's
weight gradient is ``b_iᵀ a_i``; its squared norm is ``‖a_i‖²‖b_i‖²`` when T = 1 and ``Σ_{t,s} (a_t·a_s)(b_t·b_s)``
otherwise, and the clipped sum ``Σ_i c_i b_iᵀ a_i`` is one matrix product. ``LayerNorm`` and ``GroupNorm`` affine
parameters are small, so their per-example gradients (``Σ b ⊙ x̂`` and ``Σ b``) are formed directly. A step then
costs one forward, one backward and one extra product per layer instead of B per-example gradient copies.

``supports(model, task)``: every trainable parameter belongs to one of those modules, the task's loss is a plain
mean over examples (per-sequence outputs, no NLL scoring), and the model has no public-statistics norm (their
public rows receive gradient from every example, which cannot be split per example). Other models use
``per_sample.py`` (vmap or the loop). The result equals clipping materialized per-example gradients
(``tests/test_privacy.py``).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

SUPPORTED = (nn.Linear, nn.LayerNorm, nn.GroupNorm)


def supports(model: nn.Module, task: Any) -> bool:
    """True when ``clipped_sum_ghost`` applies to ``model`` on ``task`` (see the module doc)."""
    from seqzoo.tasks.base import Task
    from seqzoo.training.evaluation import scores_nll

    if getattr(task.spec, "output_kind", None) != "per_sequence" or scores_nll(model, task) or \
            type(task).loss is not Task.loss:  # the loss must be the plain mean over examples
        return False
    for m in model.modules():
        if hasattr(m, "n_public"):
            return False
        own = [p for p in m.parameters(recurse=False) if p.requires_grad]
        if own and not isinstance(m, SUPPORTED):
            return False
    return True


_LAYOUTS: weakref.WeakKeyDictionary[nn.Module, tuple[list[nn.Module], dict[int, str]]] = weakref.WeakKeyDictionary()


def _layout(model: nn.Module) -> tuple[list[nn.Module], dict[int, str]]:
    """The supported modules with trainable parameters, and parameter names by id (computed once per model)."""
    if model not in _LAYOUTS:
        mods = [m for m in model.modules()
                if isinstance(m, SUPPORTED) and any(p.requires_grad for p in m.parameters(recurse=False))]
        _LAYOUTS[model] = (mods, {id(p): n for n, p in model.named_parameters()})
    return _LAYOUTS[model]


class _Capture:
    """Forward hooks that keep each supported module's input and output."""

    def __init__(self, model: nn.Module) -> None:
        self.inputs: dict[nn.Module, Tensor] = {}
        self.outputs: dict[nn.Module, Tensor] = {}
        self.reused = False
        self.handles = [m.register_forward_hook(self._hook) for m in _layout(model)[0]]

    def _hook(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        self.reused = self.reused or module in self.inputs  # shared weights: per-example sums would be wrong
        self.inputs[module] = inputs[0].detach()
        self.outputs[module] = output

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _linear(a: Tensor, b: Tensor, has_bias: bool) -> tuple[Tensor, Any]:
    """Squared per-example norms of (weight, bias) grads and a function of the clip factors giving their sums."""
    n = a.shape[0]
    a3, b3 = a.reshape(n, -1, a.shape[-1]), b.reshape(n, -1, b.shape[-1])
    if a3.shape[1] == 1:
        sq = a3.pow(2).sum((1, 2)) * b3.pow(2).sum((1, 2))
    else:
        sq = (torch.bmm(a3, a3.transpose(1, 2)) * torch.bmm(b3, b3.transpose(1, 2))).sum((1, 2))
    bsum = b3.sum(1)
    if has_bias:
        sq = sq + bsum.pow(2).sum(1)

    def sums(c: Tensor) -> list[Tensor]:
        w = (b3 * c.reshape(-1, 1, 1)).flatten(0, 1).t() @ a3.flatten(0, 1)
        return [w, c @ bsum] if has_bias else [w]
    return sq, sums


def _affine(per_w: Tensor, per_b: Tensor | None) -> tuple[Tensor, Any]:
    sq = per_w.flatten(1).pow(2).sum(1) + (per_b.flatten(1).pow(2).sum(1) if per_b is not None else 0)

    def sums(c: Tensor) -> list[Tensor]:
        out = [torch.tensordot(c, per_w, dims=1)]
        return out + [torch.tensordot(c, per_b, dims=1)] if per_b is not None else out
    return sq, sums


def _norm_layer(m: nn.Module, x: Tensor, b: Tensor) -> tuple[Tensor, Any]:
    if isinstance(m, nn.LayerNorm):
        xhat = F.layer_norm(x, m.normalized_shape, None, None, m.eps)
        k = len(m.normalized_shape)
        dims = tuple(range(1, x.dim() - k))  # positions between the batch and the normalized dims
        per_w = (b * xhat).sum(dims) if dims else b * xhat
        per_b = (b.sum(dims) if dims else b) if m.bias is not None else None
        return _affine(per_w, per_b)
    xhat = F.group_norm(x, m.num_groups, None, None, m.eps)  # GroupNorm: channels are dimension 1
    dims = tuple(range(2, x.dim()))
    per_w = (b * xhat).sum(dims) if dims else b * xhat
    per_b = (b.sum(dims) if dims else b) if m.bias is not None else None
    return _affine(per_w, per_b)


def clipped_sum_ghost(model: nn.Module, loss_sum_fn: Any, batch: dict[str, Any], clip: float
                      ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """``({name: Σ_i c_i g_i}, per-example norms ‖g_i‖, mean loss)`` from one forward and backward.

    ``loss_sum_fn(model, batch)`` must return the sum of the examples' losses.
    """
    cap = _Capture(model)
    try:
        loss = loss_sum_fn(model, batch)
    finally:
        cap.close()
    if cap.reused:
        raise ValueError(f"ghost clipping: a module of {type(model).__name__} runs more than once per forward")
    mods = list(cap.outputs)
    # gradients of the modules' outputs only: the backward skips every weight gradient (the sums below replace them)
    out_grads = torch.autograd.grad(loss, [cap.outputs[m] for m in mods], allow_unused=True)
    names = _layout(model)[1]
    parts = []
    for m, b in zip(mods, out_grads):
        x = cap.inputs[m]
        b = torch.zeros_like(cap.outputs[m]) if b is None else b
        if isinstance(m, nn.Linear):
            sq, sums = _linear(x, b, m.bias is not None and m.bias.requires_grad)
            params = [m.weight] + ([m.bias] if m.bias is not None and m.bias.requires_grad else [])
        else:
            sq, sums = _norm_layer(m, x, b)
            params = [m.weight] + ([m.bias] if m.bias is not None else [])
        parts.append((sq, sums, params))
    norms = torch.sqrt(sum(sq for sq, _, _ in parts))
    c = (clip / norms).clamp(max=1.0)
    out: dict[str, Tensor] = {}
    for _, sums, params in parts:
        for p, s in zip(params, sums(c)):
            out[names[id(p)]] = s
    return out, norms, loss.detach() / max(1, norms.shape[0])

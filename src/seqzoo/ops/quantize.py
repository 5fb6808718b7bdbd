"""Quantizers of QNN (Hubara et al. 2016, spec rnn-cells-and-normalization.md §8.1) and the straight-through
estimator.

Every quantizer works in the normalized frame ``[-1, 1]`` (callers map gate ranges or weight scales into it):

* ``binarize``: deterministic ``sign(x)`` with ``sign(0) = +1``;
* ``binarize_stochastic``: ``+1`` with probability ``hσ(x) = clip((x + 1) / 2, 0, 1)``, else ``-1``;
* ``quantize_uniform``: the k-bit quantizer of bounded activations,
  ``q_k(x) = 2·round((2^k − 1)(x + 1)/2)/(2^k − 1) − 1`` (``2^k`` levels, no zero level);
* ``quantize_linear``: k-bit linear weight quantization ``clip(Δ·round(x/Δ), −1, 1)`` with
  ``Δ = 1/(2^(k−1) − 1)`` (``2^k − 1`` symmetric levels including 0; k = 2 is ternary);
* ``quantize_log``: k-bit logarithmic quantization ``sign(x)·2^round(log2|x|)`` with exponents clipped to
  ``[−(2^(k−1) − 2), 0]`` and magnitudes below ``2^(emin − 1/2)`` set to 0 (``2^k − 1`` levels including 0).

These are forward-only (no gradient). ``ste(x, q)`` returns ``q`` in the forward pass and passes the gradient to the
pre-quantization value ``x`` masked by ``1[|x| ≤ 1]`` (the hard-tanh derivative: "gradient cancellation"; the mask
uses ``x``, never ``q``, spec §8.4). ``quantize(x, bits, mode)`` composes both.

Reference twins (used by the tests): ``*_reference`` quantizers pick the nearest level from the explicit level table
(or draw by comparing against ``hσ``), and ``ste_reference`` gets its backward from autograd through
``clamp(x, −1, 1) + (q − clamp(x, −1, 1)).detach()`` (``clamp`` passes the gradient on the closed interval).
"""

from __future__ import annotations

import torch
from torch import Tensor

MODES = ("uniform", "linear", "log")


def _check_bits(bits: int, mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"quantizer mode must be one of {MODES}, got {mode!r}")
    low = 1 if mode == "uniform" else 2
    if isinstance(bits, bool) or not isinstance(bits, int) or not low <= bits <= 16:
        raise ValueError(f"{mode} quantization needs an integer bit width in [{low}, 16], got {bits!r}")


# ----- forward quantizers (no gradient) -----------------------------------------------------------------------
def binarize(x: Tensor) -> Tensor:
    """``sign(x)`` with ``sign(0) = +1`` (NaN stays NaN)."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype).where(~x.isnan(), x)


def hard_sigmoid(x: Tensor) -> Tensor:
    """``hσ(x) = clip((x + 1) / 2, 0, 1)``: the probability of ``+1`` in stochastic binarization."""
    return ((x + 1) / 2).clamp(0, 1)


def binarize_stochastic(x: Tensor, generator: torch.Generator | None = None, noise: Tensor | None = None) -> Tensor:
    """``+1`` with probability ``hσ(x)``, else ``-1``; ``noise`` (uniform [0, 1), shape of ``x``) fixes the draw."""
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) if noise is None else noise
    return torch.where(u < hard_sigmoid(x), 1.0, -1.0).to(x.dtype).where(~x.isnan(), x)


def quantize_uniform(x: Tensor, bits: int) -> Tensor:
    """``q_k(x)`` on ``[-1, 1]`` (inputs outside are clipped first); ``bits = 1`` is ``binarize``."""
    _check_bits(bits, "uniform")
    if bits == 1:
        return binarize(x)
    n = 2 ** bits - 1
    return 2 * torch.round(n * (x.clamp(-1, 1) + 1) / 2) / n - 1


def quantize_linear(x: Tensor, bits: int) -> Tensor:
    """``clip(Δ·round(x/Δ), -1, 1)`` with ``Δ = 1/(2^(bits-1) - 1)``."""
    _check_bits(bits, "linear")
    steps = 2 ** (bits - 1) - 1
    return (torch.round(x * steps) / steps).clamp(-1, 1)


def _log_emin(bits: int) -> int:
    return -(2 ** (bits - 1) - 2)


def quantize_log(x: Tensor, bits: int) -> Tensor:
    """``sign(x)·2^round(log2|x|)`` with exponents in ``[emin, 0]``; ``|x| < 2^(emin - 1/2)`` gives 0."""
    _check_bits(bits, "log")
    emin = _log_emin(bits)
    mag = x.abs()
    e = torch.round(torch.log2(mag)).clamp(emin, 0)
    q = torch.sign(x) * torch.exp2(e)
    return torch.where(mag < 2.0 ** (emin - 0.5), torch.zeros_like(x), q).where(~x.isnan(), x)


# ----- straight-through estimator -----------------------------------------------------------------------------
class _STE(torch.autograd.Function):
    """Forward ``q``; backward ``grad · 1[|x| ≤ 1]`` to ``x`` (nothing to ``q``). vmap-able (``torch.func``)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, q: Tensor) -> Tensor:  # type: ignore[override]
        return q.clone()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[override]
        x, _ = inputs
        ctx.save_for_backward(x.abs() <= 1)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        return grad * inside, None


def ste(x: Tensor, q: Tensor) -> Tensor:
    """``q`` forward, ``∂L/∂x = ∂L/∂q · 1[|x| ≤ 1]`` backward (gradient cancellation on the pre-quantization value)."""
    if not (x.requires_grad and torch.is_grad_enabled()):
        return q
    return _STE.apply(x, q.detach())


def ste_reference(x: Tensor, q: Tensor) -> Tensor:
    """Reference twin of ``ste``: autograd through ``clamp`` (its gradient is ``1[-1 ≤ x ≤ 1]``) plus a detached gap."""
    c = x.clamp(-1, 1)
    return c + (q.detach() - c).detach()


_QUANTIZERS = {"uniform": quantize_uniform, "linear": quantize_linear, "log": quantize_log}


def quantize(x: Tensor, bits: int, mode: str = "uniform", *, stochastic: bool = False,
             generator: torch.Generator | None = None) -> Tensor:
    """The ``bits``-bit quantizer ``mode`` of ``x`` (``bits = 1``: binarization, stochastic if asked) with the STE."""
    if bits == 1:
        with torch.no_grad():
            q = binarize_stochastic(x, generator) if stochastic else binarize(x)
        return ste(x, q)
    if stochastic:
        raise ValueError("stochastic quantization is defined for bits=1 (binarization) only")
    _check_bits(bits, mode)
    with torch.no_grad():
        q = _QUANTIZERS[mode](x, bits)
    return ste(x, q)


# ----- reference twins ----------------------------------------------------------------------------------------
def levels(bits: int, mode: str) -> Tensor:
    """The explicit level table of a quantizer (float64, ascending)."""
    _check_bits(bits, mode)
    if mode == "uniform":
        n = 2 ** bits - 1
        return torch.tensor([2 * i / n - 1 for i in range(n + 1)], dtype=torch.float64)
    if mode == "linear":
        s = 2 ** (bits - 1) - 1
        return torch.tensor([i / s for i in range(-s, s + 1)], dtype=torch.float64)
    mags = [2.0 ** e for e in range(_log_emin(bits), 1)]
    return torch.tensor(sorted([-m for m in mags] + [0.0] + mags), dtype=torch.float64)


def quantize_reference(x: Tensor, bits: int, mode: str = "uniform") -> Tensor:
    """Nearest level of the table (``log``: nearest in ``log2``) with the STE twin; ``bits = 1``: sign, sign(0) = +1."""
    if bits == 1:
        q = torch.tensor([1.0 if v >= 0 else -1.0 for v in x.detach().double().flatten().tolist()],
                         dtype=x.dtype).reshape(x.shape)
        return ste_reference(x, q)
    table = levels(bits, mode)
    flat = x.detach().double().flatten()
    out = []
    for v in flat.tolist():
        if mode == "log":
            m = abs(v)
            emin = _log_emin(bits)
            if m < 2.0 ** (emin - 0.5):
                out.append(0.0)
                continue
            e = min(max(round(torch.log2(torch.tensor(m, dtype=torch.float64)).item()), emin), 0)
            out.append((1.0 if v > 0 else -1.0) * 2.0 ** e)
        else:
            out.append(float(table[int(torch.argmin((table - min(max(v, -1.0), 1.0)).abs()))]))
    return ste_reference(x, torch.tensor(out, dtype=x.dtype).reshape(x.shape))


def binarize_stochastic_reference(x: Tensor, noise: Tensor) -> Tensor:
    """Reference twin of ``binarize_stochastic`` for a given uniform draw: element by element ``u < hσ(x)``."""
    vals = [1.0 if u < min(max((v + 1) / 2, 0.0), 1.0) else -1.0
            for v, u in zip(x.double().flatten().tolist(), noise.double().flatten().tolist())]
    return torch.tensor(vals, dtype=x.dtype).reshape(x.shape)

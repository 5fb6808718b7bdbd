"""Quantization injected like a normalization: a weight site and activation sites (QNN, spec §8).

``quant="w4a4"`` (weights 4 bits, activations 4 bits), ``"w1a1"`` (binary), ``"w2a32"`` (32 = floating point), ...
is accepted by every seqzoo LSTM/GRU/tanh cell (weights ``W_ih``, ``W_hh``; activations: each gate after its
nonlinearity and the hidden state ``h``), by ``Linear``, ``Conv1d`` and ``Conv2d`` below (weight; activation site
on the layer's *input*, which must be bounded in ``act_range``) and by the ``mlp``/``cnn`` classifiers. There is no
quantized copy of any cell: a cell asks its ``Quantizer`` for ``weight(w)`` and ``act(a, lo, hi)``, which are the
identity when the site is floating point.

Choices (``quant_kwargs``):

* weights: the real-valued *shadow weights* are kept and quantized in every forward pass; per output row they are
  scaled into ``[-1, 1]`` by a detached factor α (``max|w_row|`` for k ≥ 2 bits, ``mean|w_row|`` for 1 bit, the
  XNOR-Net choice) unless ``weight_scale=False``; ``weight_mode="linear"`` (default) or ``"log"``; biases stay
  floating point. The trainer clips shadow weights to ``[-1, 1]`` after every optimizer step
  (``seqzoo.training.quantization.ShadowWeightClip``, installed automatically when a model has them).
* activations: a bounded activation in ``[lo, hi]`` (sigmoid gates ``[0, 1]``, tanh ``[-1, 1]``) is mapped to
  ``[-1, 1]``, quantized with the k-bit uniform ``q_k`` (1 bit: sign) and mapped back.
* ``stochastic=True``: 1-bit weights and activations use stochastic binarization in training (deterministic in eval).

The STE with gradient cancellation (``seqzoo.ops.quantize.ste``) carries gradients to the pre-quantization values.
Embeddings and the softmax/output head of the models stay floating point (the paper's setting); only the layers
given ``quant=`` are quantized.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqzoo.errors import ConfigError
from seqzoo.ops.quantize import binarize, binarize_stochastic, quantize_linear, quantize_log, quantize_uniform, ste

FLOAT_BITS = 32
_SPEC = re.compile(r"^w(\d+)a(\d+)$")


@dataclass(frozen=True)
class QuantSpec:
    """Bit widths (32 = floating point) and the choices of the module docstring."""

    weight_bits: int = FLOAT_BITS
    act_bits: int = FLOAT_BITS
    weight_mode: str = "linear"
    weight_scale: bool = True
    stochastic: bool = False

    @property
    def name(self) -> str:
        return f"w{self.weight_bits}a{self.act_bits}"


def parse_quant(quant: str | None, **kwargs) -> QuantSpec | None:
    """``"w4a4"`` -> ``QuantSpec(4, 4)``; None or ``"none"`` -> None. Bits 1-8 or 32; kwargs set the choices."""
    if quant is None or quant == "none":
        if kwargs:
            raise ConfigError(f"quant_kwargs {sorted(kwargs)} given without quant=")
        return None
    m = _SPEC.match(quant) if isinstance(quant, str) else None
    if m is None:
        raise ConfigError(f"quant must look like 'w4a4' (weight bits, activation bits; 32 = float), got {quant!r}")
    wb, ab = int(m.group(1)), int(m.group(2))
    for what, b in (("weight", wb), ("activation", ab)):
        if not (1 <= b <= 8 or b == FLOAT_BITS):
            raise ConfigError(f"quant={quant!r}: {what} bits must be 1-8 or 32 (float), got {b}")
    valid = {"weight_mode", "weight_scale", "stochastic"}
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise ConfigError(f"unknown quant_kwargs {unknown}; expected some of {sorted(valid)}")
    spec = QuantSpec(wb, ab, **kwargs)
    if spec.weight_mode not in ("linear", "log"):
        raise ConfigError(f"quant_kwargs weight_mode must be 'linear' or 'log', got {spec.weight_mode!r}")
    if spec.weight_mode == "log" and wb == 1:
        raise ConfigError("quant_kwargs weight_mode='log' needs at least 2 weight bits")
    return spec


class Quantizer(nn.Module):
    """The quantization sites of one layer: ``weight(w)`` and ``act(a, lo, hi)``; identity where floating point."""

    def __init__(self, spec: QuantSpec | None) -> None:
        super().__init__()
        self.spec = spec

    @property
    def weights_float(self) -> bool:
        return self.spec is None or self.spec.weight_bits == FLOAT_BITS

    @property
    def acts_float(self) -> bool:
        return self.spec is None or self.spec.act_bits == FLOAT_BITS

    @property
    def is_identity(self) -> bool:
        return self.weights_float and self.acts_float

    def _stochastic(self) -> bool:
        return bool(self.spec is not None and self.spec.stochastic and self.training)

    def weight(self, w: Tensor) -> Tensor:
        """The quantized weight (rows = output units) with the STE to the shadow weight ``w``."""
        if self.weights_float:
            return w
        spec = self.spec
        assert spec is not None
        bits = spec.weight_bits
        alpha = self.weight_scale(w).reshape(-1, *([1] * (w.dim() - 1)))
        with torch.no_grad():
            if bits == 1:
                q = binarize_stochastic(w) if self._stochastic() else binarize(w)
            else:
                quantizer = quantize_log if spec.weight_mode == "log" else quantize_linear
                q = quantizer(w / alpha, bits)
            q = q * alpha
        return ste(w, q)

    def weight_scale(self, w: Tensor) -> Tensor:
        """The detached per-output-row scale α (``mean|w_row|`` for 1 bit, ``max|w_row|`` else; ones if off)."""
        assert self.spec is not None
        with torch.no_grad():
            if not self.spec.weight_scale:
                return torch.ones(w.shape[0], dtype=w.dtype, device=w.device)
            flat = w.reshape(w.shape[0], -1).abs()
            stat = flat.mean(1) if self.spec.weight_bits == 1 else flat.amax(1)
            return stat.clamp_min(torch.finfo(w.dtype).tiny)

    def act(self, a: Tensor, lo: float = -1.0, hi: float = 1.0) -> Tensor:
        """``a`` in ``[lo, hi]`` quantized to ``act_bits`` levels (uniform ``q_k``; 1 bit: sign), with the STE."""
        if self.acts_float:
            return a
        assert self.spec is not None
        bits = self.spec.act_bits
        u = a if (lo, hi) == (-1.0, 1.0) else (2 * a - (hi + lo)) / (hi - lo)
        with torch.no_grad():
            if bits == 1 and self._stochastic():
                q = binarize_stochastic(u)
            else:
                q = quantize_uniform(u, bits)
        q = ste(u, q)
        return q if (lo, hi) == (-1.0, 1.0) else (q * (hi - lo) + (hi + lo)) / 2

    def extra_repr(self) -> str:
        return "float" if self.spec is None else repr(self.spec)


def make_quantizer(quant: str | None, quant_kwargs: dict | None = None) -> Quantizer:
    return Quantizer(parse_quant(quant, **(quant_kwargs or {})))


class _QuantWeighted:
    """Shared forward of the quantized ``Linear`` / ``Conv1d`` / ``Conv2d``: quantize the input and the weight."""

    quant: Quantizer
    act_range: tuple[float, float] | None
    weight: nn.Parameter

    def _setup(self, quant: str | None, quant_kwargs: dict | None, act_range: tuple[float, float] | None) -> None:
        self.quant = make_quantizer(quant, quant_kwargs)
        if act_range is not None:
            lo, hi = (float(v) for v in act_range)
            if not lo < hi:
                raise ConfigError(f"act_range must be (lo, hi) with lo < hi, got {act_range!r}")
            act_range = (lo, hi)
        self.act_range = act_range

    def quantized_input(self, x: Tensor) -> Tensor:
        """The input at the activation site: quantized in ``act_range`` (None: the input stays as it is)."""
        if self.act_range is None:
            return x
        return self.quant.act(x.clamp(*self.act_range), *self.act_range)

    def quantized_weights(self) -> list[nn.Parameter]:
        """The shadow weights (quantized in forward), for ``ShadowWeightClip``."""
        return [] if self.quant.weights_float else [self.weight]


class Linear(_QuantWeighted, nn.Linear):
    """``nn.Linear`` with ``quant=`` sites; ``act_range=(lo, hi)`` quantizes the input (None: input kept float)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, quant: str | None = None,
                 quant_kwargs: dict | None = None, act_range: tuple[float, float] | None = (-1.0, 1.0)) -> None:
        super().__init__(in_features, out_features, bias)
        self._setup(quant, quant_kwargs, act_range)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.quantized_input(x), self.quant.weight(self.weight), self.bias)


class _QuantConv(_QuantWeighted):
    """Shared ``__init__``/``forward`` of the quantized convolutions (the conv arguments, then ``Linear``'s)."""

    def __init__(self, *args, quant: str | None = None, quant_kwargs: dict | None = None,
                 act_range: tuple[float, float] | None = (-1.0, 1.0), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._setup(quant, quant_kwargs, act_range)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self.quantized_input(x), self.quant.weight(self.weight), self.bias)  # type: ignore


class Conv1d(_QuantConv, nn.Conv1d):
    """``nn.Conv1d`` with ``quant=`` sites (as ``Linear``: weight site, activation site on the input)."""


class Conv2d(_QuantConv, nn.Conv2d):
    """``nn.Conv2d`` with ``quant=`` sites (as ``Conv1d``)."""


def shadow_weights(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter some module quantizes in its forward pass (modules with ``quantized_weights()``)."""
    out: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        fn = getattr(module, "quantized_weights", None)
        if callable(fn):
            for p in fn():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
    return out


class BinaryLinear(nn.Module):
    """Inference form of a W1/A1 ``Linear``: packed ±1 weights (1 bit each) and the XNOR-popcount GEMM.

    ``BinaryLinear.from_linear(lin)`` packs ``sign(W)`` once (``seqzoo.ops.xnor``) and keeps the per-row scale α
    and the bias; ``forward(x)`` binarizes the input at the layer's activation site (``act_range`` mapped to
    ``[-1, 1]``), packs it and computes ``α ⊙ (s·(b_x · b_W) + t·Σ_k b_W) + bias`` with the integer product from the
    kernel (``s, t`` undo the range map; ``s = 1, t = 0`` for ``[-1, 1]``). The output equals ``lin.eval()(x)`` up to
    float rounding of the last scaling (the integer product is exact). An input row holding NaN gives a NaN row,
    as on the float path. No gradient: train with ``Linear(quant="w1a1")``, deploy with this.
    """

    def __init__(self, packed_weight: Tensor, k: int, alpha: Tensor, bias: Tensor | None,
                 act_range: tuple[float, float], row_sums: Tensor) -> None:
        super().__init__()
        self.in_features, self.out_features = int(k), int(packed_weight.shape[0])
        self.register_buffer("packed_weight", packed_weight)
        self.register_buffer("alpha", alpha)
        self.register_buffer("row_sums", row_sums)
        self.register_buffer("bias", bias)
        self.act_range = act_range

    @classmethod
    def from_linear(cls, lin: Linear) -> BinaryLinear:
        from seqzoo.ops.xnor import pack_signs

        spec = lin.quant.spec
        if spec is None or spec.weight_bits != 1 or spec.act_bits != 1 or lin.act_range is None:
            raise ConfigError(f"BinaryLinear needs a Linear with quant='w1a1' and an input activation site, got "
                              f"quant={spec.name if spec else None!r}, act_range={lin.act_range!r}")
        with torch.no_grad():
            w = lin.weight.detach().float()
            alpha = lin.quant.weight_scale(w)
            signs = binarize(w)
            packed = pack_signs(signs)
            bias = lin.bias.detach().float().clone() if lin.bias is not None else None
        return cls(packed.words, packed.k, alpha.reshape(-1).clone(), bias, lin.act_range,
                   signs.sum(1).to(torch.float32))

    @property
    def weight_bytes(self) -> int:
        return self.packed_weight.numel() * 8

    def forward(self, x: Tensor) -> Tensor:
        from seqzoo.ops.xnor import PackedSigns, pack_signs, xnor_gemm

        if x.shape[-1] != self.in_features:
            raise ValueError(f"BinaryLinear: expected input (..., {self.in_features}), got {tuple(x.shape)}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).float()
        lo, hi = self.act_range
        u = x2 if (lo, hi) == (-1.0, 1.0) else (2 * x2 - (hi + lo)) / (hi - lo)
        prod = xnor_gemm(pack_signs(u), PackedSigns(self.packed_weight, self.in_features)).to(torch.float32)
        s, t = (hi - lo) / 2, (hi + lo) / 2
        y = prod * s + self.row_sums * t if (s, t) != (1.0, 0.0) else prod
        y = y * self.alpha
        if self.bias is not None:
            y = y + self.bias
        nan_rows = x2.isnan().any(1)
        if bool(nan_rows.any()):
            y = y.masked_fill(nan_rows[:, None], float("nan"))
        return y.reshape(*lead, self.out_features)


def to_binary_inference(model: nn.Module) -> nn.Module:
    """Replace (in place) every W1/A1 ``Linear`` with an input activation site by its ``BinaryLinear``; returns model.

    The model then runs those layers on the packed XNOR-popcount kernel (inference only; call ``model.eval()``
    first so BatchNorm and the other layers use their inference behaviour).
    """
    for name, child in list(model.named_children()):
        spec = child.quant.spec if isinstance(child, Linear) else None
        if spec is not None and spec.weight_bits == 1 and spec.act_bits == 1 and child.act_range is not None:
            setattr(model, name, BinaryLinear.from_linear(child))
        else:
            to_binary_inference(child)
    return model

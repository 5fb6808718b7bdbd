"""Feed-forward image classifiers (an MLP and a small CNN) with an optional norm before each nonlinearity.

These are the plain networks of Ioffe & Szegedy's BatchNorm paper (spec rnn-cells-and-normalization.md §3.1):
``norm="batch"`` puts BN between each linear map / convolution and its nonlinearity (``x -> W x -> BN -> act``),
as the paper does, and drops the layer's bias (BN's ``β`` replaces it). ``"bln"`` (Batch Layer Normalization,
``seqzoo.layers.bln``) and ``"layer"`` (LayerNorm over the features; over channels and space for the CNN) sit at
the same place; ``None`` is the plain network.

``quant="w1a1"`` (``"w4a4"``, ...; ``seqzoo.layers.quant``) quantizes every hidden linear map / convolution: its
weights (shadow weights clipped by the trainer) and its input activations (the first layer keeps the real-valued
image, the paper's choice); the nonlinearity must then be bounded (``hardtanh``, the BNN choice, ``tanh`` or
``sigmoid``). The output head stays floating point.

They are not sequence models. The input keeps the task's batch-first ``(B, L, d_input)`` layout, read as an
image of ``seq_len`` rows by ``d_input`` columns (the ``rows`` layout of the ``digits`` task is exactly the 8×8
image). So the input size is fixed: ``fixed_length`` is True, a mask with padded positions is an error, and the
output is one vector of logits per example (``decoder = "image"``, ``is_causal = supports_step = False``, an empty
state). The conformance suite skips the checks that need variable lengths for such models.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from seqzoo.errors import ConfigError
from seqzoo.layers import quant as qlayers
from seqzoo.layers.bln import BatchLayerNorm
from seqzoo.layers.public_batch_norm import PublicBatchNorm
from seqzoo.models.registry import register_model

NORMS = (None, "batch", "bln", "layer", "group", "batch_public", "batch_mixed")
ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh, "hardtanh": nn.Hardtanh}
_ACT_RANGES = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "hardtanh": (-1.0, 1.0)}  # bounded outputs


def _quant_site(quant: str | None, quant_kwargs: dict | None, activation: str) -> tuple[float, float] | None:
    """The input range of the quantized layers after the first (the activation's range); checks ``quant``."""
    spec = qlayers.parse_quant(quant, **(quant_kwargs or {}))
    if spec is not None and spec.act_bits != qlayers.FLOAT_BITS and activation not in _ACT_RANGES:
        raise ConfigError(f"quant={quant!r} quantizes activations, which needs a bounded activation "
                          f"({', '.join(_ACT_RANGES)}), got activation={activation!r}")
    return _ACT_RANGES.get(activation)


def _feature_norm(norm: str | None, width: int) -> nn.Module:
    """The norm of an MLP hidden layer ``(B, width)``."""
    if norm == "batch":
        return nn.BatchNorm1d(width)  # the paper's transform; running_var is the unbiased EMA (spec §3.1)
    if norm == "bln":
        return BatchLayerNorm(width)
    if norm == "layer":
        return nn.LayerNorm(width)
    return _dp_norm(norm, width, spatial=False)


def _conv_norm(norm: str | None, channels: int) -> nn.Module:
    """The norm of a conv feature map ``(B, C, H, W)``: BN statistics over batch and space, as the paper's conv BN."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "bln":
        return BatchLayerNorm(channels)
    if norm == "layer":
        return nn.GroupNorm(1, channels)  # LayerNorm over (C, H, W) per example
    return _dp_norm(norm, channels)


def _dp_norm(norm: str | None, channels: int, spatial: bool = True) -> nn.Module:
    """The norms added for DP training (spec privacy §7.3-7.4): GroupNorm with Opacus's ``gcd(32, C)`` groups (on
    MLP features, whose groups have no spatial extent, halved until each group holds at least 2 features), and
    BN with statistics of a public batch (``batch_public``) or of public + private rows (``batch_mixed``, SIDP)."""
    if norm == "group":
        groups = math.gcd(32, channels)
        while not spatial and groups > 1 and channels // groups < 2:
            groups //= 2
        return nn.GroupNorm(groups, channels)
    if norm in ("batch_public", "batch_mixed"):
        return PublicBatchNorm(channels, mode=norm.split("_")[1])
    return nn.Identity()


class ImageClassifier(nn.Module):
    """Shared input handling and protocol flags of the feed-forward classifiers."""

    input_names = ("inputs", "mask")
    is_causal = False
    supports_step = False
    step_exact_in_train = True
    fixed_length = True
    decoder = "image"  # one output per example, not per step

    def __init__(self, seq_len: int, d_input: int, d_output: int, norm: str | None, activation: str, *,
                 d_model: int, n_layers: int) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
        for name, v in (("seq_len", seq_len), ("d_input", d_input), ("d_output", d_output), ("d_model", d_model),
                        ("n_layers", n_layers)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        self.seq_len, self.d_input, self.d_output = seq_len, d_input, d_output
        self.norm_kind, self.activation = norm, activation

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> tuple:
        return ()

    def image(self, inputs: Tensor, mask: Tensor | None) -> Tensor:
        """Validate ``(B, seq_len, d_input)`` features and return them as ``(B, 1, seq_len, d_input)``."""
        who = type(self).__name__
        if not inputs.is_floating_point():
            raise TypeError(f"{who}: expected floating-point features, got dtype {inputs.dtype}")
        if inputs.dim() != 3 or tuple(inputs.shape[1:]) != (self.seq_len, self.d_input):
            raise ValueError(f"{who}: expected input of shape (batch, {self.seq_len}, {self.d_input}) (an image of "
                             f"seq_len rows x d_input columns), got {tuple(inputs.shape)}")
        if mask is not None and not bool(mask.all()):
            raise ValueError(f"{who}: a fixed-size image input has no padding, but the mask marks padded positions")
        return inputs.unsqueeze(1)


class MLPClassifier(ImageClassifier):
    """``n_layers`` hidden layers of ``d_model`` units over the flattened image (paper's MNIST net: 3 x 100 sigmoid).

    Args:
        d_model: hidden units per layer.
        n_layers: number of hidden layers.
        seq_len, d_input: the image is ``seq_len`` rows of ``d_input`` features (the task's input shape).
        d_output: classes.
        norm: None, ``"batch"``, ``"bln"``, ``"layer"``, or for DP training ``"group"``, ``"batch_public"``,
            ``"batch_mixed"``, before each nonlinearity (biases dropped when set).
        activation: ``"sigmoid"`` (the paper's MNIST net), ``"relu"``, ``"tanh"`` or ``"hardtanh"``.
        quant, quant_kwargs: quantization of the hidden layers (module docstring), None = floating point.
    """

    def __init__(self, *, d_model: int = 100, n_layers: int = 3, seq_len: int = 8, d_input: int = 8,
                 d_output: int = 10, norm: str | None = None, activation: str = "sigmoid", quant: str | None = None,
                 quant_kwargs: dict | None = None) -> None:
        super().__init__(seq_len, d_input, d_output, norm, activation, d_model=d_model, n_layers=n_layers)
        act_range = _quant_site(quant, quant_kwargs, activation)
        blocks: list[nn.Module] = []
        width = seq_len * d_input
        for i in range(n_layers):
            linear = nn.Linear(width, d_model, bias=norm is None) if quant is None else qlayers.Linear(
                width, d_model, bias=norm is None, quant=quant, quant_kwargs=quant_kwargs,
                act_range=act_range if i else None)
            blocks += [linear, _feature_norm(norm, d_model), ACTIVATIONS[activation]()]
            width = d_model
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(width, d_output)

    def forward(self, inputs: Tensor, state: tuple | None = None, *, mask: Tensor | None = None
                ) -> tuple[Tensor, tuple]:
        x = self.image(inputs, mask).flatten(1)
        return self.head(self.body(x)), ()


class ConvClassifier(ImageClassifier):
    """``n_layers`` blocks of 3x3 conv -> norm -> nonlinearity -> 2x2 max-pool, then global mean pool and a linear head.

    Block i has ``d_model * 2**i`` channels; a pool only halves a side that is at least 2 long, so small images
    (8x8 digits: 8 -> 4 -> 2) and odd shapes work.
    """

    def __init__(self, *, d_model: int = 16, n_layers: int = 2, seq_len: int = 8, d_input: int = 8,
                 d_output: int = 10, norm: str | None = None, activation: str = "relu", quant: str | None = None,
                 quant_kwargs: dict | None = None) -> None:
        super().__init__(seq_len, d_input, d_output, norm, activation, d_model=d_model, n_layers=n_layers)
        act_range = _quant_site(quant, quant_kwargs, activation)
        blocks: list[nn.Module] = []
        c_in, h, w = 1, seq_len, d_input
        for i in range(n_layers):
            c_out = d_model * 2 ** i
            kh, kw = (2 if h >= 2 else 1), (2 if w >= 2 else 1)
            conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=norm is None) if quant is None else qlayers.Conv2d(
                c_in, c_out, 3, padding=1, bias=norm is None, quant=quant, quant_kwargs=quant_kwargs,
                act_range=act_range if i else None)
            blocks += [conv, _conv_norm(norm, c_out),
                       ACTIVATIONS[activation](), nn.MaxPool2d((kh, kw), ceil_mode=True)]
            c_in, h, w = c_out, math.ceil(h / kh), math.ceil(w / kw)
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in, d_output)

    def forward(self, inputs: Tensor, state: tuple | None = None, *, mask: Tensor | None = None
                ) -> tuple[Tensor, tuple]:
        x = self.body(self.image(inputs, mask))
        return self.head(torch.mean(x, dim=(2, 3))), ()


_TINY = {"seq_len": 7}  # the conformance suite feeds (3, 7, d_input=3) features
_FF = [
    ("mlp", MLPClassifier, None, "MLP image classifier (3 x 100 sigmoid, the BN paper's MNIST net)"),
    ("mlp_bn", MLPClassifier, "batch", "the mlp preset with BatchNorm before each sigmoid"),
    ("cnn", ConvClassifier, None, "small CNN image classifier (2 conv-ReLU-pool blocks, 16/32 channels)"),
    ("cnn_bn", ConvClassifier, "batch", "the cnn preset with BatchNorm before each ReLU"),
]
for _name, _builder, _norm, _desc in _FF:
    register_model(_name, _builder, norm=_norm, description=_desc, paper="Ioffe & Szegedy 2015 (arXiv 1502.03167)",
                   tags=("feedforward", "image") + (("norm",) if _norm else ()), conformance=_TINY)

# Binarized networks (QNN / BNN, spec rnn-cells-and-normalization.md §8): W1/A1 hidden layers, BatchNorm before each
# hardtanh (the BNN layout), real-valued first-layer input and output head; quant= changes the bit widths.
_QNN_PAPER = "Hubara et al. 2016 (arXiv 1609.07061)"
register_model("mlp_q", MLPClassifier, norm="batch", activation="hardtanh", quant="w1a1", d_model=256,
               description="binarized MLP (W1/A1 hidden layers, BN + hardtanh; quant= sets the bits)",
               paper=_QNN_PAPER, tags=("feedforward", "image", "quantized"), conformance=_TINY)
register_model("cnn_q", ConvClassifier, norm="batch", activation="hardtanh", quant="w1a1", d_model=32,
               description="binarized CNN (W1/A1 convolutions after the first input, BN + hardtanh)",
               paper=_QNN_PAPER, tags=("feedforward", "image", "quantized"), conformance=_TINY)

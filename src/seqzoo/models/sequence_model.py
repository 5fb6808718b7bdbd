"""``SequenceModel``: encoder -> N sequence layers (residual, pre-norm, post-norm, dropout options) -> decoder.

The encoder is a token embedding (``vocab_size``) or a linear map of features (``d_input``); the
decoder reads every step (``"step"``), the last real step (``"last"``) or the masked mean
(``"mean"``). Inputs are batch-first; ``mask`` (B, L) is True at real positions (right padding).
The output head is linear (logits) or, for large vocabularies, an adaptive softmax (``head="adaptive"``,
normalised log-probabilities; see ``seqzoo.models.heads``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from seqzoo.errors import ConfigError
from seqzoo.layers import build_layer
from seqzoo.layers.post_norm import POST_NORMS, PostNormLayer
from seqzoo.models.heads import HEADS, AdaptiveHead, TiedLinearHead, head_nll

DECODERS = ("step", "last", "mean")
ModelState = tuple[tuple[Tensor, ...], ...]


def _with_cell_arg(layer: str, key: str, value: str | None, layer_kwargs: dict[str, Any] | None
                   ) -> dict[str, Any] | None:
    """``layer_kwargs`` with the cell argument ``key`` (``norm``, ``quant``) added; given both ways, they must agree."""
    if value is None:
        return layer_kwargs
    given = (layer_kwargs or {}).get(key, value)
    if given != value:
        what = "normalization" if key == "norm" else "quantization"
        raise ConfigError(f"{key}={value!r} and layer_kwargs['{key}']={given!r} disagree: the cell's {what} is set "
                          f"once (layer {layer!r} is preset with {given!r}; start from a preset without it)")
    return {**(layer_kwargs or {}), key: value}


def _build(layer: str, d_in: int, d_model: int, norm: str | None, layer_kwargs: dict[str, Any]) -> nn.Module:
    try:
        return build_layer(layer, d_in, d_model, **layer_kwargs)
    except TypeError as exc:
        if norm is not None and "'norm'" in str(exc):  # the layer has no cell normalization argument
            raise ConfigError(f"norm={norm!r}: layer {layer!r} has no cell normalization (cells such as lstm, gru, "
                              "rnn_tanh have one); between layers use post_norm=, on residual branches pre_norm=",
                              ) from None
        if "'quant'" in str(exc):  # the layer has no quantization sites
            raise ConfigError(f"quant={layer_kwargs['quant']!r}: layer {layer!r} has no quantization sites (the "
                              "lstm, gru and rnn_tanh cells have them)") from None
        raise


class SequenceModel(nn.Module):
    """A stack of sequence layers with an encoder and a decoder head.

    Args:
        layer: name of a registered layer (``seqzoo.layers.LAYERS``), e.g. ``"lstm"``.
        d_model: width of every layer.
        n_layers: number of stacked layers.
        d_input: feature size of the input (features input); exclusive with ``vocab_size``.
        vocab_size: number of input tokens (token input).
        d_output: size of the output head (classes or regression targets).
        decoder: ``"step"`` (output per step), ``"last"`` (last real step) or ``"mean"`` (masked mean).
        encoder: ``"linear"`` or ``"none"`` (features go straight into the first layer).
        residual: add each layer's input to its output (where widths agree).
        norm: the normalization inside each recurrent cell (``"layer"``, ``"batch"``, ``"atn"``, ``"bln"``, ...),
            the same as ``seqzoo.LSTM(norm=...)``: passed to the layer as ``layer_kwargs["norm"]``. None leaves
            the layer as it is. Layers without a cell normalization (native, convolutional, attention) refuse it.
        quant: the quantization of each recurrent cell (``"w4a4"``, ``"w1a1"``, ...; ``seqzoo.layers.quant``): its
            weights and its gate/hidden activations, passed as ``layer_kwargs["quant"]`` like ``norm``. The
            embedding and the output head stay floating point. None leaves the layer as it is.
        pre_norm: ``"layer"``: LayerNorm on the input of each residual branch (with ``residual=True``), or None.
        final_norm: LayerNorm after the last layer.
        post_norm: ``"layer"``, ``"batch"`` or ``"bln"``: normalize every layer's output, the last one included
            (``layer -> norm -> layer -> norm -> head``, the BLN paper's RNN layout); batch and BLN use per-time-step
            statistics (``seqzoo.layers.post_norm``). None = off.
        dropout: dropout on every layer's output (and the embedding).
        layer_kwargs: extra arguments of the layer (e.g. ``{"norm": "layer"}`` for a cell).
        head: ``"linear"`` (logits) or ``"adaptive"`` (adaptive softmax; outputs are log-probabilities, so a
            cross-entropy over them is exact).
        cutoffs: adaptive head only: class-id boundaries of the head and tail clusters (ids sorted by frequency);
            None = ``seqzoo.models.heads.default_cutoffs(d_output)``.
        div_value: adaptive head only: tail cluster i projects to ``width / div_value ** (i + 1)`` dims.
        tie_weights: share the token embedding's weight with the output head (token input, ``vocab_size ==
            d_output`` and the last layer's width equal to ``d_model``); see ``seqzoo.models.heads``.

    ``forward(inputs, targets=...)`` (decoder ``"step"``) returns the per-position NLL of ``targets`` instead of the
    outputs (``scores_targets``): the adaptive head then never builds the ``(B, L, d_output)`` log-probabilities.
    """

    input_names = ("inputs", "mask")

    def __init__(
        self,
        layer: str = "lstm",
        *,
        d_model: int = 128,
        n_layers: int = 1,
        d_input: int | None = None,
        vocab_size: int | None = None,
        d_output: int = 1,
        decoder: str = "step",
        encoder: str = "linear",
        residual: bool = False,
        norm: str | None = None,
        quant: str | None = None,
        pre_norm: str | None = None,
        final_norm: bool = False,
        post_norm: str | None = None,
        dropout: float = 0.0,
        layer_kwargs: dict[str, Any] | None = None,
        head: str = "linear",
        cutoffs: list[int] | None = None,
        div_value: float = 4.0,
        tie_weights: bool = False,
    ) -> None:
        super().__init__()
        if (d_input is None) == (vocab_size is None):
            raise ValueError(
                "give exactly one of d_input (feature input) or vocab_size (token input); "
                f"got d_input={d_input}, vocab_size={vocab_size}"
            )
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        if encoder not in ("linear", "none"):
            raise ValueError(f"encoder must be 'linear' or 'none', got {encoder!r}")
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if head == "linear" and cutoffs is not None:
            raise ValueError(f"cutoffs={cutoffs!r} need head='adaptive' (got head='linear')")
        if pre_norm not in (None, "layer"):
            raise ConfigError(f"pre_norm must be 'layer' or None, got {pre_norm!r}")
        layer_kwargs = _with_cell_arg(layer, "norm", norm, layer_kwargs)
        layer_kwargs = _with_cell_arg(layer, "quant", quant, layer_kwargs)
        if post_norm is not None and post_norm not in POST_NORMS:
            raise ValueError(f"post_norm must be one of {POST_NORMS} or None, got {post_norm!r}")
        if n_layers < 1 or d_model < 1 or d_output < 1:
            raise ValueError(f"n_layers, d_model and d_output must be >= 1, got {n_layers}, {d_model}, {d_output}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.d_input, self.vocab_size, self.d_model = d_input, vocab_size, d_model
        self.decoder, self.residual = decoder, residual
        if vocab_size is not None:
            self.embed: nn.Module = nn.Embedding(vocab_size, d_model)
            width = d_model
        elif encoder == "linear":
            self.embed = nn.Linear(d_input, d_model)
            width = d_model
        else:
            self.embed = nn.Identity()
            width = d_input
        layers, norms = [], []
        for _ in range(n_layers):
            built = _build(layer, width, d_model, norm, layer_kwargs or {})
            layers.append(PostNormLayer(built, post_norm) if post_norm is not None else built)
            norms.append(nn.LayerNorm(width) if (pre_norm == "layer" and residual) else nn.Identity())
            width = layers[-1].d_output
        self.layers = nn.ModuleList(layers)
        self.pre_norms = nn.ModuleList(norms)
        self.final_norm = nn.LayerNorm(width) if final_norm else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.head_kind = head
        tied = self.embed if tie_weights else None
        if head == "adaptive":
            self.head: nn.Module = AdaptiveHead(width, d_output, cutoffs, div_value, embedding=tied)
        else:
            self.head = TiedLinearHead(self.embed, width, d_output) if tie_weights else nn.Linear(width, d_output)

    # ----- protocol flags ---------------------------------------------------------------------
    @property
    def is_causal(self) -> bool:
        return all(layer.is_causal for layer in self.layers)

    @property
    def scores_targets(self) -> bool:
        """True when ``forward(..., targets=...)`` returns per-position NLLs (the training tier's loss protocol)."""
        return self.decoder == "step"

    @property
    def supports_step(self) -> bool:
        return self.decoder == "step" and all(layer.supports_step for layer in self.layers)

    @property
    def step_exact_in_train(self) -> bool:
        # dropout draws differ between one pass and per-step calls, so train-mode step is exact only without it
        return self.drop.p == 0.0 and all(getattr(layer, "step_exact_in_train", True) for layer in self.layers)

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> ModelState:
        dtype = dtype or next(self.head.parameters()).dtype
        return tuple(layer.init_state(batch_size, device=device, dtype=dtype) for layer in self.layers)

    # ----- computation ------------------------------------------------------------------------
    def encode(self, inputs: Tensor) -> Tensor:
        if self.vocab_size is not None:
            if inputs.dtype not in (torch.int64, torch.int32):
                raise TypeError(f"token input must be an integer tensor (batch, seq_len), got dtype {inputs.dtype}")
            if inputs.numel() and (int(inputs.min()) < 0 or int(inputs.max()) >= self.vocab_size):
                raise ValueError(
                    f"token ids must lie in [0, {self.vocab_size}), got range "
                    f"[{int(inputs.min())}, {int(inputs.max())}]"
                )
        elif not inputs.is_floating_point():
            raise TypeError(
                f"feature input must be floating point (batch, seq_len, {self.d_input}), got {inputs.dtype}"
            )
        return self.drop(self.embed(inputs))

    def _residual(self, x: Tensor, out: Tensor) -> Tensor:
        """Dropout on a layer's output, plus its input where residual connections are on and widths agree."""
        out = self.drop(out)
        if self.residual and out.shape[-1] == x.shape[-1]:
            return x + out
        return out

    def backbone(
        self, inputs: Tensor, state: ModelState | None = None, *, mask: Tensor | None = None
    ) -> tuple[Tensor, ModelState]:
        """Features before the head: ``(B, L, width)`` and the new state."""
        x = self.encode(inputs)
        if x.dim() != 3:
            raise ValueError(f"expected input of shape (batch, seq_len[, features]), got {tuple(inputs.shape)}")
        states = state if state is not None else (None,) * len(self.layers)
        if len(states) != len(self.layers):
            raise ValueError(f"state must hold one entry per layer ({len(self.layers)}), got {len(states)}")
        new_states = []
        for layer, pre, s in zip(self.layers, self.pre_norms, states):
            y, s = layer(pre(x), s, mask=mask)
            x = self._residual(x, y)
            new_states.append(s)
        return self.final_norm(x), tuple(new_states)

    def forward(
        self, inputs: Tensor, state: ModelState | None = None, *, mask: Tensor | None = None,
        targets: Tensor | None = None,
    ) -> tuple[Tensor, ModelState]:
        """``(outputs, state)``; with ``targets`` (decoder ``"step"``) ``(nll (B, L), state)``, see ``target_nll``."""
        x, new_state = self.backbone(inputs, state, mask=mask)
        if targets is not None:
            return self.target_nll(x, targets), new_state
        if self.decoder == "step":
            return self.head(x), new_state
        if self.decoder == "last":
            if mask is None:
                feat = x[:, -1]
            else:
                last = mask.long().sum(1).clamp(min=1) - 1
                feat = x[torch.arange(x.shape[0], device=x.device), last]
        else:
            if mask is None:
                feat = x.mean(1)
            else:
                m = mask.to(x.dtype).unsqueeze(-1)
                feat = (x * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.head(feat), new_state

    def target_nll(self, features: Tensor, targets: Tensor) -> Tensor:
        """``-log p(targets)`` per position from the backbone's features ``(B, L, width)`` and ``targets (B, L)``.

        The head scores the targets directly (the adaptive head evaluates only the clusters they lie in); without
        autograd the positions go through in bounded chunks (``seqzoo.models.heads.head_nll``).
        """
        if not self.scores_targets:
            raise ValueError(f"targets= needs decoder='step' (one output per position), got decoder={self.decoder!r}")
        if features.shape[:-1] != targets.shape:
            raise ValueError(f"targets of shape {tuple(targets.shape)} do not match the model's positions "
                             f"{tuple(features.shape[:-1])} (expected (batch, seq_len))")
        return head_nll(self.head, features, targets)

    def report_metrics(self) -> dict[str, float]:
        """Numbers of a layer that folds this model's linear head into its own (the ARMA cell's
        ``head_folded_metrics``: the classical coefficients of the whole model's predictor).

        Only where the output is exactly ``head(cell output)``: one recurrent layer on the raw features (no
        encoder), no residual, final norm or post-norm, a linear head; an empty dict otherwise.
        """
        if (len(self.layers) != 1 or not isinstance(self.embed, nn.Identity) or self.residual
                or not isinstance(self.final_norm, nn.Identity) or not isinstance(self.head, nn.Linear)):
            return {}
        # the layer itself must be the recurrence (a wrapper, e.g. a post-norm, would sit between cell and head)
        fold = getattr(getattr(self.layers[0], "cell", None), "head_folded_metrics", None)
        return fold(self.head.weight, self.head.bias) if callable(fold) else {}

    def step(self, x_t: Tensor, state: ModelState | None = None) -> tuple[Tensor, ModelState]:
        """One time step: tokens ``(B,)`` or features ``(B, d_input)`` -> ``(B, d_output)``."""
        if not self.supports_step:
            raise NotImplementedError("step() needs decoder='step' and layers that support step")
        x = self.encode(x_t.unsqueeze(1)).squeeze(1)
        states = state if state is not None else (None,) * len(self.layers)
        new_states = []
        for layer, pre, s in zip(self.layers, self.pre_norms, states):
            y, s = layer.step(pre(x), s)
            x = self._residual(x, y)
            new_states.append(s)
        return self.head(self.final_norm(x)), tuple(new_states)

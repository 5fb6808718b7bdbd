"""Target-space models: a dense MLP with dense shortcuts and a tanh RNN (spec §6.2–6.3), in target or weight space.

Both hold a fixed realisation batch ``X̄`` (the buffer ``realisation``, saved with the weights) and, in target space
(``space="target"``), one trainable target matrix per layer; ``forward`` solves every layer's weights from the
targets (``seqzoo.layers.target_space``) and runs the real batch through an ordinary network with them, so the
normal trainer and every optimizer train the targets. ``space="weight"`` is the same architecture and forward with
plain weight matrices (the paper's weight-space baseline).

``X̄`` starts as fixed standard-normal noise (what the paper uses for its IMDB RNN); ``set_realisation(inputs)``
replaces it with real inputs (the paper: the whole training set for two-spirals, the first training sequences for
the bit tasks) and redoes the projection init. ``seqzoo.training.target_space`` does that with the task's first
training inputs whenever a run is resolved, so ``seqzoo train ts_mlp two_spirals`` uses the spirals themselves.

Projection init (paper §3.4, on by default): solve the weights from the initial targets, run the realisation batch
through the network, and replace every target by the sums the weights actually achieve.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from seqzoo.layers.protocol import check_input, check_mask
from seqzoo.layers.target_space import MODES, SPACES, TSRNN, TSConv1d, TSDense, with_bias
from seqzoo.models.feedforward import ACTIVATIONS, ImageClassifier
from seqzoo.models.registry import register_model

PAPER = "Fairbank, Samothrakis & Citi 2022 (JMLR 23(8), arXiv 2006.01578)"


def _check_options(who: str, space: str, mode: str, lam: float, realisation_size: int, target_std: float) -> None:
    if space not in SPACES:
        raise ValueError(f"{who}: space must be one of {SPACES}, got {space!r}")
    if mode not in MODES:
        raise ValueError(f"{who}: mode must be one of {MODES} (sequential or optimistic cascade untangling), "
                         f"got {mode!r}")
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"{who}: lam (least-squares regularization) must be a finite number >= 0, got {lam!r}")
    if isinstance(realisation_size, bool) or not isinstance(realisation_size, int) or realisation_size < 1:
        raise ValueError(f"{who}: realisation_size must be an integer >= 1, got {realisation_size!r}")
    if not (math.isfinite(target_std) and target_std > 0):
        raise ValueError(f"{who}: target_std must be a finite number > 0, got {target_std!r}")


def _realisation_rows(who: str, inputs: Tensor, n: int, shape: tuple[int, ...]) -> Tensor:
    """The first ``n`` rows of ``inputs``, checked against the per-row ``shape`` the model's realisation has."""
    if not inputs.is_floating_point():
        raise ValueError(f"{who}: realisation inputs must be floating point, got dtype {inputs.dtype}")
    if inputs.dim() != 1 + len(shape) or inputs.shape[0] < n or any(
            got < want for got, want in zip(inputs.shape[1:], shape)):
        raise ValueError(f"{who}: realisation inputs must have at least {n} rows of shape {shape} (longer sequences "
                         f"are cut), got {tuple(inputs.shape)}")
    index = (slice(0, n),) + tuple(slice(0, s) for s in shape)
    return inputs[index]


class TargetSpaceMLP(ImageClassifier):
    """An MLP ``d_input -> n_layers x d_model -> d_output`` with dense shortcuts, in target or weight space.

    With ``shortcuts`` each layer (and the output layer) reads ``[1, x, h_1, ..., h_{l-1}]``, the spirals network of
    the paper (2-5-5-5-2 tanh). The input is a fixed-size ``(B, seq_len, d_input)`` feature block, flattened (as the
    other feed-forward classifiers); the output is one vector of logits per example.

    Args:
        space: ``"target"`` or ``"weight"``.
        d_model, n_layers: hidden width and number of hidden layers.
        seq_len, d_input, d_output: the input block and the classes.
        activation: ``"tanh"`` (the paper's), ``"relu"`` or ``"sigmoid"``.
        shortcuts: dense shortcut connections.
        realisation_size: rows of the realisation batch ``X̄`` (194 = the whole spirals training set).
        lam: least-squares regularization λ (0.001 in the spirals script).
        mode: ``"scu"`` or ``"ocu"``.
        projection_init: replace the initial targets by the sums they achieve.
        target_std: std of the initial targets (truncated normal).
    """

    def __init__(self, *, space: str = "target", d_model: int = 5, n_layers: int = 3, seq_len: int = 1,
                 d_input: int = 2, d_output: int = 2, activation: str = "tanh", shortcuts: bool = True,
                 realisation_size: int = 194, lam: float = 1e-3, mode: str = "scu", projection_init: bool = True,
                 target_std: float = 1.0) -> None:
        super().__init__(seq_len, d_input, d_output, None, activation, d_model=d_model, n_layers=n_layers)
        _check_options("TargetSpaceMLP", space, mode, lam, realisation_size, target_std)
        self.space, self.mode, self.shortcuts = space, mode, shortcuts
        self.projection_init, self.realisation_size = projection_init, realisation_size
        self.act = ACTIVATIONS[activation]()
        width, layers = seq_len * d_input, []
        for i in range(n_layers + 1):
            d_out = d_model if i < n_layers else d_output
            layers.append(TSDense(width, d_out, space=space, rows=realisation_size, lam=lam, target_std=target_std))
            width = width + d_out if shortcuts else d_out
        self.layers = nn.ModuleList(layers)
        if space == "target":
            self.register_buffer("realisation", torch.randn(realisation_size, seq_len * d_input))
            if projection_init:
                self.project_targets()

    def _next_input(self, a: Tensor, h: Tensor) -> Tensor:
        return torch.cat([a, h], -1) if self.shortcuts else with_bias(h)

    def matrices(self) -> list[Tensor]:
        """Every layer's ``(inputs + 1, outputs)`` weights (solved layer by layer on ``X̄`` in target space)."""
        if self.space == "weight":
            return [layer.weight for layer in self.layers]
        a, out = with_bias(self.realisation), []
        for i, layer in enumerate(self.layers):
            w = layer.matrix(a)
            out.append(w)
            if i < len(self.layers) - 1:
                a = self._next_input(a, self.act(layer.sums(a, w, self.mode)))
        return out

    def propagate(self, x: Tensor, matrices: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """``(logits, every layer's pre-activations)`` of flat inputs ``x (B, seq_len * d_input)``."""
        a, sums = with_bias(x), []
        for i, w in enumerate(matrices):
            s = a @ w
            sums.append(s)
            if i < len(matrices) - 1:
                a = self._next_input(a, self.act(s))
        return sums[-1], sums

    def forward(self, inputs: Tensor, state: tuple | None = None, *, mask: Tensor | None = None
                ) -> tuple[Tensor, tuple]:
        x = self.image(inputs, mask).flatten(1)
        return self.propagate(x, self.matrices())[0], ()

    @torch.no_grad()
    def project_targets(self) -> None:
        """Projection init: every target becomes the pre-activation its solved weights achieve on ``X̄``."""
        if self.space != "target":
            return
        _, sums = self.propagate(self.realisation, self.matrices())
        for layer, s in zip(self.layers, sums):
            layer.targets.copy_(s)

    @torch.no_grad()
    def set_realisation(self, inputs: Tensor) -> None:
        """Use the first ``realisation_size`` rows of ``inputs (N, seq_len, d_input)`` as ``X̄`` (then project)."""
        if self.space != "target":
            return
        rows = _realisation_rows("TargetSpaceMLP", inputs, self.realisation_size, (self.seq_len, self.d_input))
        self.realisation.copy_(rows.flatten(1).to(self.realisation))
        if self.projection_init:
            self.project_targets()


class _TargetSpaceSequence(nn.Module):
    """Shared by the sequence models: protocol flags, ``step`` and the realisation of ``realisation_size`` sequences
    of ``realisation_len`` steps."""

    input_names = ("inputs", "mask")
    decoder = "step"
    is_causal = True
    supports_step = True
    step_exact_in_train = True
    space: str
    d_input: int
    realisation_size: int
    realisation_len: int
    projection_init: bool

    def _options(self, space: str, mode: str, lam: float, target_std: float, projection_init: bool,
                 realisation_size: int, realisation_len: int, **sizes: int) -> None:
        """Check the shared arguments and the integer ``sizes`` (>= 1), and keep them as attributes."""
        who = type(self).__name__
        _check_options(who, space, mode, lam, realisation_size, target_std)
        for name, v in {**sizes, "realisation_len": realisation_len}.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{who}: {name} must be an integer >= 1, got {v!r}")
            setattr(self, name, v)
        self.space, self.mode, self.projection_init = space, mode, projection_init
        self.realisation_size = realisation_size

    def _realise(self) -> None:
        """In target space: the fixed-noise realisation sequences, then the projection init."""
        if self.space == "target":
            self.register_buffer("realisation", torch.randn(self.realisation_size, self.realisation_len,
                                                            self.d_input))
            if self.projection_init:
                self.project_targets()

    def project_targets(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def step(self, x_t: Tensor, state: tuple[Tensor, ...] | None = None) -> tuple[Tensor, tuple[Tensor, ...]]:
        """One step ``(B, d_input) -> (B, d_output)`` (solves the weights again; cache them for long generation)."""
        y, state = self(x_t.unsqueeze(1), state)
        return y.squeeze(1), state

    @torch.no_grad()
    def set_realisation(self, inputs: Tensor) -> None:
        """Use the first ``realisation_size`` sequences of ``inputs (N, L >= realisation_len, d_input)``, cut to
        ``realisation_len`` steps, as ``X̄`` (then project)."""
        if self.space != "target":
            return
        rows = _realisation_rows(type(self).__name__, inputs, self.realisation_size,
                                 (self.realisation_len, self.d_input))
        self.realisation.copy_(rows.to(self.realisation))
        if self.projection_init:
            self.project_targets()


class TargetSpaceRNN(_TargetSpaceSequence):
    """A tanh RNN (``TSRNN``) with a dense output layer, both in target or in weight space (the paper's RNN tasks).

    Outputs logits at every step (``decoder = "step"``); the state is the hidden vector. In target space the
    realisation is ``realisation_size`` sequences of ``realisation_len`` steps; the output layer solves its weights
    on the hidden states of all their steps (SCU: the states the solved recurrence reaches; OCU: ``tanh(T)``).

    Args:
        space: ``"target"`` or ``"weight"``.
        d_model: hidden units (the paper: delay + 3; delay + 5 for XOR and the adder).
        d_input, d_output: input features and output logits.
        realisation_size, realisation_len: the realisation batch's sequences and steps (task sequences are cut to
            ``realisation_len``).
        lam, mode, projection_init, target_std: as ``TargetSpaceMLP``.
    """

    def __init__(self, *, space: str = "target", d_model: int = 23, d_input: int = 1, d_output: int = 2,
                 realisation_size: int = 100, realisation_len: int = 70, lam: float = 1e-3, mode: str = "scu",
                 projection_init: bool = True, target_std: float = 1.0) -> None:
        super().__init__()
        self._options(space, mode, lam, target_std, projection_init, realisation_size, realisation_len,
                      d_model=d_model, d_input=d_input, d_output=d_output)
        self.rnn = TSRNN(d_input, d_model, space=space, rows=realisation_size, length=realisation_len, lam=lam,
                         target_std=target_std)
        self.head = TSDense(d_model, d_output, space=space, rows=realisation_size * realisation_len, lam=lam,
                            target_std=target_std)
        self._realise()

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> tuple[Tensor]:
        dtype = dtype or next(self.parameters()).dtype
        return (torch.zeros(batch_size, self.d_model, device=device, dtype=dtype),)

    def matrices(self) -> tuple[Tensor, Tensor]:
        """The recurrence's and the output layer's weights (solved on ``X̄`` in target space)."""
        if self.space == "weight":
            return self.rnn.weight, self.head.weight
        w_rnn = self.rnn.matrix(self.realisation)
        hidden = self.rnn.realised(self.realisation, w_rnn, self.mode)
        return w_rnn, self.head.matrix(with_bias(hidden).flatten(0, 1))

    def forward(self, inputs: Tensor, state: tuple[Tensor, ...] | None = None, *, mask: Tensor | None = None
                ) -> tuple[Tensor, tuple[Tensor]]:
        check_input(inputs, self.d_input, "TargetSpaceRNN")
        mask = check_mask(mask, inputs, "TargetSpaceRNN")
        h = None
        if state is not None and len(state):
            if len(state) != 1 or state[0].shape != (inputs.shape[0], self.d_model):
                raise ValueError(f"TargetSpaceRNN: state must be one tensor of shape ({inputs.shape[0]}, "
                                 f"{self.d_model}), got {[tuple(s.shape) for s in state]}")
            h = state[0]
        w_rnn, w_out = self.matrices()
        hidden, _, h = self.rnn.run(inputs, w_rnn, h, mask)
        return with_bias(hidden) @ w_out, (h,)

    @torch.no_grad()
    def project_targets(self) -> None:
        """Projection init: the targets become the sums the solved weights achieve on ``X̄``."""
        if self.space != "target":
            return
        w_rnn, w_out = self.matrices()
        hidden, sums, _ = self.rnn.run(self.realisation, w_rnn)
        self.rnn.targets.copy_(sums)
        self.head.targets.copy_(with_bias(hidden).flatten(0, 1) @ w_out)


class TargetSpaceCNN(_TargetSpaceSequence):
    """A causal 1-D CNN (``n_layers`` tanh ``TSConv1d`` of ``kernel_size`` taps) with a dense output per step, in
    target or weight space. The state is each layer's last ``kernel_size - 1`` inputs, so chunks and ``step``
    continue a sequence exactly.

    Args:
        space: ``"target"`` or ``"weight"``.
        d_model, n_layers, kernel_size: channels, layers and taps of the convolutions.
        d_input, d_output: input features and output logits.
        realisation_size, realisation_len, lam, mode, projection_init, target_std: as ``TargetSpaceRNN``.
    """

    def __init__(self, *, space: str = "target", d_model: int = 16, n_layers: int = 2, kernel_size: int = 3,
                 d_input: int = 1, d_output: int = 2, realisation_size: int = 50, realisation_len: int = 70,
                 lam: float = 1e-3, mode: str = "scu", projection_init: bool = True, target_std: float = 1.0) -> None:
        super().__init__()
        self._options(space, mode, lam, target_std, projection_init, realisation_size, realisation_len,
                      d_model=d_model, n_layers=n_layers, kernel_size=kernel_size, d_input=d_input, d_output=d_output)
        rows = {"rows": realisation_size, "length": realisation_len, "lam": lam, "target_std": target_std}
        self.convs = nn.ModuleList(TSConv1d(d_input if i == 0 else d_model, d_model, kernel_size, space=space, **rows)
                                   for i in range(n_layers))
        self.head = TSDense(d_model, d_output, space=space, rows=realisation_size * realisation_len, lam=lam,
                            target_std=target_std)
        self._realise()

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> tuple[Tensor, ...]:
        dtype = dtype or next(self.parameters()).dtype
        return tuple(torch.zeros(batch_size, c.kernel_size - 1, c.d_in, device=device, dtype=dtype)
                     for c in self.convs)

    def matrices(self) -> list[Tensor]:
        """Every convolution's and the output layer's weights (solved layer by layer on ``X̄`` in target space)."""
        if self.space == "weight":
            return [c.dense.weight for c in self.convs] + [self.head.weight]
        x, out = self.realisation, []
        for conv in self.convs:
            a = conv.patches(x)[0].flatten(0, 1)
            w = conv.dense.matrix(a)
            out.append(w)
            x = torch.tanh(conv.dense.sums(a, w, self.mode)).view(*x.shape[:2], -1)
        return out + [self.head.matrix(with_bias(x).flatten(0, 1))]

    def run(self, x: Tensor, matrices: list[Tensor], state: tuple[Tensor, ...] | None = None,
            lengths: Tensor | None = None) -> tuple[list[Tensor], tuple[Tensor, ...]]:
        """``(every layer's pre-activations, the last of them the outputs; the new state)`` of ``x (B, L, d_input)``."""
        sums, history = [], []
        for i, conv in enumerate(self.convs):
            a, padded = conv.patches(x, state[i] if state is not None else None)
            history.append(conv.history(padded, lengths))
            sums.append(a @ matrices[i])
            x = torch.tanh(sums[-1])
        sums.append(with_bias(x) @ matrices[-1])
        return sums, tuple(history)

    def forward(self, inputs: Tensor, state: tuple[Tensor, ...] | None = None, *, mask: Tensor | None = None
                ) -> tuple[Tensor, tuple[Tensor, ...]]:
        check_input(inputs, self.d_input, "TargetSpaceCNN")
        mask = check_mask(mask, inputs, "TargetSpaceCNN")
        if state is not None and len(state) == 0:
            state = None
        if state is not None:
            want = [(inputs.shape[0], c.kernel_size - 1, c.d_in) for c in self.convs]
            if [tuple(s.shape) for s in state] != want:
                raise ValueError(f"TargetSpaceCNN: state must be one tensor per layer of shapes {want}, got "
                                 f"{[tuple(s.shape) for s in state]}")
        lengths = mask.long().sum(1) if mask is not None else None
        sums, history = self.run(inputs, self.matrices(), state, lengths)
        return sums[-1], history

    @torch.no_grad()
    def project_targets(self) -> None:
        """Projection init: the targets become the sums the solved weights achieve on ``X̄``."""
        if self.space != "target":
            return
        sums, _ = self.run(self.realisation, self.matrices())
        for layer, s in zip([c.dense for c in self.convs] + [self.head], sums):
            layer.targets.copy_(s.flatten(0, 1))


_MLP_TINY = {"seq_len": 7, "realisation_size": 12}  # the conformance suite feeds (3, 7, d_input=3) features
_RNN_TINY = {"realisation_size": 4, "realisation_len": 5}
_PRESETS = [
    ("ts_mlp", TargetSpaceMLP, "target", "target-space MLP 2-5-5-5-2 tanh with dense shortcuts (SCU, projection init, "
     "λ=0.001)", "feedforward", _MLP_TINY),
    ("ws_mlp", TargetSpaceMLP, "weight", "the ts_mlp network in weight space (2-5-5-5-2 tanh, dense shortcuts, Glorot "
     "init)", "feedforward", _MLP_TINY),
    ("ts_rnn", TargetSpaceRNN, "target", "target-space tanh RNN (TSRNN) with a target-space output layer (SCU, "
     "projection init)", "rnn", _RNN_TINY),
    ("ws_rnn", TargetSpaceRNN, "weight", "the ts_rnn network in weight space (tanh RNN + dense output, Glorot init)",
     "rnn", _RNN_TINY),
    ("ts_cnn", TargetSpaceCNN, "target", "target-space causal 1-D CNN (2 x 16 channels, 3 taps, tanh) with a dense "
     "output per step (SCU, projection init)", "conv", _RNN_TINY),
    ("ws_cnn", TargetSpaceCNN, "weight", "the ts_cnn network in weight space (causal 1-D convolutions, Glorot init)",
     "conv", _RNN_TINY),
]
for _name, _builder, _space, _desc, _kind, _tiny in _PRESETS:
    register_model(_name, _builder, space=_space, description=_desc, paper=PAPER, tags=(_kind, "target-space"),
                   conformance=_tiny)

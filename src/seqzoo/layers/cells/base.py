"""Common machinery of recurrent cells: input projection, injected norm and quantization sites and state layout.

A cell's state is one flat tuple: its core tensors (``h`` or ``h, c``) followed by the states of
its norm sites in a fixed order, so the recurrent driver, padding and chunking treat every cell
the same way.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from seqzoo.errors import ConfigError
from seqzoo.layers.norms import RecurrentNorm, make_recurrent_norm
from seqzoo.layers.quant import make_quantizer

State = tuple[Tensor, ...]


class RecurrentCell(nn.Module):
    """Base class. Subclasses define ``core_state_names``, ``gate_multiplier`` and ``recur``.

    ``h0_noise``: in training, ``h_0`` is ``N(0, h0_noise²)`` per example and unit instead of 0 (Cooijmans et al.'s
    ``--noise`` for the BN-LSTM on sequential MNIST, std 0.1: with a zero ``h_0`` every sequence of a batch has the
    same state until its input differs, so a per-step BatchNorm sees zero variance and its backward multiplies by
    ``γ / sqrt(ε)`` at each such step, see ``layers/batch_norm.py``). Only ``h`` gets it (``c_0`` stays 0, as in the
    official code). Evaluation keeps ``h_0 = 0`` (deterministic; the official inference graph adds the noise too).

    Quantization (``quant="w4a4"``, ``seqzoo.layers.quant``) is injected like a norm: ``project_inputs`` and
    ``recurrent_term`` use ``quantized_weight``; a cell class that calls ``act_sigmoid``/``act_tanh`` at its gates and
    hidden state declares ``supports_quant = True`` in its own class body (subclasses that change ``recur`` do not
    inherit it, so they refuse ``quant=`` until they do the same).
    """

    core_state_names: tuple[str, ...] = ("h",)
    gate_multiplier: int = 1
    norm_site_names: tuple[str, ...] = ()

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        bias: bool = True,
        norm: str | None = None,
        norm_kwargs: dict | None = None,
        norm_sizes: dict[str, int] | None = None,
        quant: str | None = None,
        quant_kwargs: dict | None = None,
        h0_noise: float = 0.0,
    ) -> None:
        super().__init__()
        if not h0_noise >= 0.0:
            raise ConfigError(f"h0_noise={h0_noise!r}: expected the standard deviation of the noise on h_0, >= 0")
        self.h0_noise = float(h0_noise)
        if quant not in (None, "none") and not type(self).__dict__.get("supports_quant", False):
            raise ConfigError(f"quant={quant!r}: {type(self).__name__} has no quantization sites (the lstm, gru and "
                              "rnn_tanh cells have them)")
        if input_size <= 0 or hidden_size <= 0:
            raise ValueError(f"input_size and hidden_size must be positive, got {input_size}, {hidden_size}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.norm_kind = norm
        g = self.gate_multiplier * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(g, input_size))
        self.weight_hh = nn.Parameter(torch.empty(g, hidden_size))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(g))
            self.bias_hh = nn.Parameter(torch.empty(g))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        sizes = norm_sizes or {}
        self.norms = nn.ModuleDict(
            {
                site: make_recurrent_norm(norm, sizes.get(site, g), site=site, **(norm_kwargs or {}))
                for site in self.norm_site_names
            }
        )
        for site, name in (("x", "bias_ih"), ("h", "bias_hh")):  # a constant before a batch-mean site is dead
            if site in self.norms and self.norms[site].cancels_bias:
                self.register_parameter(name, None)
        self.quant = make_quantizer(quant, quant_kwargs)
        self._qcache: dict[str, tuple] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch.nn.LSTM's initialization: U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
            if p is not None:
                nn.init.uniform_(p, -bound, bound)

    # ----- norm sites -------------------------------------------------------------------------
    def norm(self, site: str) -> RecurrentNorm:
        return self.norms[site]

    @property
    def plain(self) -> bool:
        """True when every norm site is the identity (the cell may use a fused fast path)."""
        return all(n.is_identity for n in self.norms.values())

    @property
    def step_exact_in_train(self) -> bool:
        return all(n.step_exact_in_train for n in self.norms.values())

    def _stateful_sites(self) -> list[str]:
        return [s for s in self.norm_site_names if not self.norms[s].stateless]

    def __getstate__(self) -> dict:
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        return {**state, "_qcache": {}}  # quantized weights hold an autograd graph: never copied or pickled

    # ----- quantization sites -----------------------------------------------------------------------
    def quantized_weight(self, name: str, refresh: bool = False) -> Tensor:
        """``weight_ih`` / ``weight_hh`` at the weight site (itself when float).

        Quantized once per sequence: ``project_inputs`` refreshes both, the per-step ``recurrent_term`` reuses the
        cached one while the shadow weight is unchanged (same ``_version``, same grad mode).
        """
        w = getattr(self, name)
        if self.quant.weights_float:
            return w
        key = (w._version, torch.is_grad_enabled(), w.device, w.dtype)
        hit = self._qcache.get(name)
        if refresh or hit is None or hit[0] != key:
            hit = (key, self.quant.weight(w))
            self._qcache[name] = hit
        return hit[1]

    def quantized_weights(self) -> list[nn.Parameter]:
        """The shadow weights (for ``ShadowWeightClip``); none for cells that skip this base's ``__init__`` (ARMA)."""
        quant = self._modules.get("quant")
        return [] if quant is None or quant.weights_float else [self.weight_ih, self.weight_hh]

    def act_sigmoid(self, a: Tensor) -> Tensor:
        """``sigmoid(a)`` at an activation site (quantized on ``[0, 1]``)."""
        return self.quant.act(torch.sigmoid(a), 0.0, 1.0)

    def act_tanh(self, a: Tensor) -> Tensor:
        """``tanh(a)`` at an activation site (quantized on ``[-1, 1]``)."""
        return self.quant.act(torch.tanh(a))

    # ----- state layout -----------------------------------------------------------------------
    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        dtype = dtype or self.weight_hh.dtype
        device = device or self.weight_hh.device
        core = tuple(
            torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype) for _ in self.core_state_names
        )
        if self.h0_noise and self.training:
            core = (torch.randn_like(core[0]).mul_(self.h0_noise),) + core[1:]
        extra: tuple[Tensor, ...] = ()
        for site in self._stateful_sites():
            extra += tuple(self.norms[site].init_state(batch_size, device=device, dtype=dtype))
        return core + extra

    def split_state(self, state: State) -> tuple[State, dict[str, State]]:
        n = len(self.core_state_names)
        core, rest = tuple(state[:n]), tuple(state[n:])
        sites: dict[str, State] = {}
        for site in self._stateful_sites():
            k = self.norms[site].num_state
            sites[site], rest = rest[:k], rest[k:]
        return core, sites

    def run_norm(self, site: str, a: Tensor, states: dict[str, State]) -> Tensor:
        norm = self.norms[site]
        if norm.stateless:
            return norm(a)[0]
        y, states[site] = norm(a, states[site])
        return y

    def join_state(self, core: State, sites: dict[str, State]) -> State:
        extra: tuple[Tensor, ...] = ()
        for site in self._stateful_sites():
            extra += tuple(sites[site])
        return tuple(core) + extra

    def state_size(self) -> int:
        return len(self.core_state_names) * self.hidden_size

    # ----- computation ------------------------------------------------------------------------
    def project_inputs(self, x: Tensor) -> Tensor:
        """``W_ih x + b_ih`` for all time steps in one matrix multiply (hoisted out of the loop)."""
        if not self.quant.weights_float:
            self.quantized_weight("weight_hh", refresh=True)
        return nn.functional.linear(x, self.quantized_weight("weight_ih", refresh=True), self.bias_ih)

    def recurrent_term(self, h: Tensor) -> Tensor:
        return nn.functional.linear(h, self.quantized_weight("weight_hh"), self.bias_hh)

    def forward(self, xp_t: Tensor, state: State) -> tuple[Tensor, State]:
        """One step on a projected input ``xp_t: (B, G)``; returns ``(h_t, new_state)``."""
        core, sites = self.split_state(state)
        h, core = self.recur(xp_t, core, sites)
        return h, self.join_state(core, sites)

    def recur(self, xp_t: Tensor, core: State, sites: dict[str, State]) -> tuple[Tensor, State]:  # pragma: no cover
        raise NotImplementedError

    def sequence(self, xp: Tensor, state: State, mask: Tensor | None) -> tuple[Tensor, State] | None:
        """Optional fused path over a whole projected sequence; None means use the generic loop."""
        return None

    def sequence_inputs(self, x: Tensor, state: State, mask: Tensor | None) -> tuple[Tensor, State] | None:
        """Optional fused path over a whole raw input sequence (projection included); None: ``sequence``."""
        return None

    def extra_repr(self) -> str:
        quant = self._modules.get("quant")
        q = "" if quant is None or quant.spec is None else f", quant={quant.spec.name!r}"
        return f"{self.input_size}, {self.hidden_size}, norm={self.norm_kind!r}{q}"

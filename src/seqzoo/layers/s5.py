"""S5: simplified state space layers (Smith, Warrington & Linderman, ICLR 2023; spec §5).

``S5SSM`` is one MIMO diagonal state space model over ``H = d_model`` features with ``P`` complex states,
in eigen-coordinates of the HiPPO-N (block-diagonal) initialisation::

    x_k = Lambda_bar * x_k-1 + B_bar u_k,    y_k = 2 Re(C x_k) + D * u_k      (conjugate symmetry)

with learnable ``Lambda`` (real and imaginary parts), ``B`` and ``C`` (stored as real ``(..., 2)`` tensors so
optimisers and weight decay treat real and imaginary parts separately, as the JAX code does), ``D`` and one
log-timescale per state. ZOH or bilinear discretisation; ``bidirectional`` adds a scan over the reversed
sequence with the same ``Lambda_bar``, ``B_bar`` and its own ``C``. ``forward`` runs the chunked scan of
``seqzoo.ops.scan``; ``step`` runs the recurrence one step.

``S5Layer`` is the layer around it (the official ``SequenceLayer``): ``skip = x``, pre-norm, SSM, activation
block (``gelu`` / ``half_glu1`` / ``half_glu2`` / ``full_glu``, dropout masks shared across time), ``skip + .``,
post-norm when ``prenorm=False``. ``s5_param_groups`` gives the optimiser groups of §5.5.

Padding (``mask`` False) departs from the official code on purpose: a padded step neither decays nor feeds
the state (``a_t = 1``, ``b_t = 0``), so padding changes no output at a real position, also backwards, and
the state after a padded chunk is the state after each sequence's last real token.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqzoo.layers.protocol import SequenceLayer, State, check_input, check_mask
from seqzoo.ops.hippo import s5_init
from seqzoo.ops.scan import DEFAULT_CHUNK, linear_scan

DISCRETIZATIONS = ("zoh", "bilinear")
C_INITS = ("trunc_standard_normal", "lecun_normal", "complex_normal")
ACTIVATIONS = ("gelu", "half_glu1", "half_glu2", "full_glu")
NORMS = ("layer", "batch", None)
OPT_CONFIGS = ("standard", "BandCdecay", "BfastandCdecay", "noBCdecay")
SSM_PARAMETERS = ("Lambda_re", "Lambda_im", "B", "log_step")

_TRUNC_STD = 0.87962566103423978  # std of a standard normal truncated to [-2, 2]


def _complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def lecun_normal_(shape: tuple[int, ...], fan_in: int, generator: torch.Generator | None = None) -> Tensor:
    """Truncated normal (at +-2 std) with variance ``1 / fan_in`` after truncation, as JAX ``lecun_normal``."""
    std = math.sqrt(1.0 / fan_in) / _TRUNC_STD
    t = torch.empty(shape, dtype=torch.float64)
    return nn.init.trunc_normal_(t, 0.0, std, -2 * std, 2 * std, generator=generator)


def discretize(Lambda: Tensor, B_tilde: Tensor, step: Tensor, method: str = "zoh") -> tuple[Tensor, Tensor]:
    """``(Lambda_bar (P,), B_bar (P, H))`` of the diagonal system ``(Lambda, B_tilde)`` with per-state ``step``.

    ZOH: ``Lambda_bar = exp(Lambda step)``, ``B_bar = (Lambda_bar - 1) / Lambda * B_tilde``.
    Bilinear: ``Lambda_bar = (1 + step Lambda / 2) / (1 - step Lambda / 2)``,
    ``B_bar = step / (1 - step Lambda / 2) * B_tilde``.
    """
    if method == "zoh":
        lam_bar = torch.exp(Lambda * step)
        return lam_bar, ((lam_bar - 1) / Lambda).unsqueeze(-1) * B_tilde
    if method == "bilinear":
        inv = 1 / (1 - step / 2 * Lambda)
        return inv * (1 + step / 2 * Lambda), (inv * step).unsqueeze(-1) * B_tilde
    raise ValueError(f"discretization must be one of {DISCRETIZATIONS}, got {method!r}")


class S5SSM(nn.Module):
    """The S5 state space model: ``y (B, L, H), state = ssm(u (B, L, H), state, mask=...)``.

    Args:
        d_model: ``H``, input and output features.
        state_size: full state size ``P`` (``ssm_size_base`` of the official scripts).
        blocks: ``J`` blocks of the block-diagonal HiPPO-N initialisation (``P / J`` states each).
        conj_sym: store ``P/2`` eigenvalues (one per conjugate pair) and output ``2 Re(.)``.
        bidirectional: add a reversed scan with its own output matrix (then the model is not causal).
        discretization: ``"zoh"`` or ``"bilinear"``.
        C_init: ``"trunc_standard_normal"``, ``"lecun_normal"`` or ``"complex_normal"`` (spec §5.3).
        dt_min, dt_max: range of the log-uniform initial timescales.
        clip_eigs: clamp ``Re(Lambda) <= -1e-4`` in the forward pass.
        step_rescale: multiplies every timescale (e.g. 2.0 to run at half the sample rate).
        chunk: chunk length of the chunked scan (None: chosen from the length; used when numba is absent).
    """

    def __init__(self, d_model: int, state_size: int = 64, *, blocks: int = 1, conj_sym: bool = True,
                 bidirectional: bool = False, discretization: str = "zoh", C_init: str = "trunc_standard_normal",
                 dt_min: float = 0.001, dt_max: float = 0.1, clip_eigs: bool = False, step_rescale: float = 1.0,
                 chunk: int | None = DEFAULT_CHUNK) -> None:
        super().__init__()
        if isinstance(d_model, bool) or not isinstance(d_model, int) or d_model < 1:
            raise ValueError(f"S5: d_model must be an integer >= 1, got {d_model!r}")
        if discretization not in DISCRETIZATIONS:
            raise ValueError(f"S5: discretization must be one of {DISCRETIZATIONS}, got {discretization!r}")
        if C_init not in C_INITS:
            raise ValueError(f"S5: C_init must be one of {C_INITS}, got {C_init!r}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"S5: need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        if not step_rescale > 0:
            raise ValueError(f"S5: step_rescale must be > 0, got {step_rescale}")
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 2):
            raise ValueError(f"S5: chunk must be None or an integer >= 2, got {chunk!r}")
        init = s5_init(state_size, blocks, conj_sym=conj_sym)  # validates state_size / blocks
        H, P = d_model, state_size
        Ps = init.Lambda.shape[0]
        self.d_model, self.state_size, self.n_states = H, P, Ps
        self.conj_sym, self.bidirectional = conj_sym, bidirectional
        self.discretization, self.clip_eigs, self.step_rescale, self.chunk = discretization, clip_eigs, \
            step_rescale, chunk
        dtype = torch.get_default_dtype()
        self.Lambda_re = nn.Parameter(init.Lambda.real.to(dtype))
        self.Lambda_im = nn.Parameter(init.Lambda.imag.to(dtype))
        B = lecun_normal_((P, H), fan_in=P).to(torch.complex128)
        self.B = nn.Parameter(torch.view_as_real(init.V_inv @ B).to(dtype))  # (Ps, H, 2)
        n_out = 2 if bidirectional else 1
        self.C = nn.Parameter(torch.cat([self._init_C(C_init, init.V, H, P) for _ in range(n_out)], 1).to(dtype))
        self.D = nn.Parameter(torch.randn(H, dtype=torch.float64).to(dtype))
        log_step = torch.rand(Ps, dtype=torch.float64) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_step = nn.Parameter(log_step.to(dtype))

    @staticmethod
    def _init_C(kind: str, V: Tensor, H: int, P: int) -> Tensor:
        """``C_tilde`` as a real ``(H, Ps, 2)`` tensor."""
        if kind == "complex_normal":
            return torch.randn(H, V.shape[1], 2, dtype=torch.float64) * math.sqrt(0.5)
        if kind == "trunc_standard_normal":  # one lecun draw over (P, 2) per output row
            C = torch.stack([lecun_normal_((P, 2), fan_in=P) for _ in range(H)])
        else:  # lecun_normal over the whole (H, P, 2) tensor: fan_in = P * H
            C = lecun_normal_((H, P, 2), fan_in=P * H)
        return torch.view_as_real(torch.view_as_complex(C.contiguous()) @ V)

    # ----- parameters in complex form -----------------------------------------------------------
    def eigenvalues(self) -> Tensor:
        """Continuous-time ``Lambda (Ps,)`` (with ``clip_eigs`` applied)."""
        re = self.Lambda_re.clamp(max=-1e-4) if self.clip_eigs else self.Lambda_re
        return torch.complex(re, self.Lambda_im)

    def timescales(self) -> Tensor:
        return self.step_rescale * torch.exp(self.log_step)

    def discrete(self) -> tuple[Tensor, Tensor]:
        """``(Lambda_bar (Ps,), B_bar (Ps, H))`` complex."""
        return discretize(self.eigenvalues(), torch.view_as_complex(self.B), self.timescales(), self.discretization)

    def output_matrix(self) -> Tensor:
        """``C_tilde (H, n_out * Ps)`` complex (``[C_fwd, C_bwd]`` when bidirectional)."""
        return torch.view_as_complex(self.C)

    # ----- computation --------------------------------------------------------------------------
    def _input_map(self, B_bar: Tensor) -> Tensor:
        """Real ``(H, 2 Ps)`` matrix with ``u @ W`` = interleaved (re, im) of ``B_bar u``: one real GEMM."""
        return torch.view_as_real(B_bar).permute(1, 0, 2).reshape(self.d_model, -1)

    def _output_map(self) -> Tensor:
        """Real ``(n_out * 2 Ps, H)`` matrix with ``view_as_real(x) @ W = scale * Re(C x)``."""
        C = self.output_matrix()
        scale = 2.0 if self.conj_sym else 1.0
        return (scale * torch.stack([C.real, -C.imag], -1)).reshape(self.d_model, -1).t()

    def param_settings(self, config: Any) -> dict[str, dict[str, Any]] | None:
        """Trainer hook (``training.hooks``): with ``config.ssm_lr`` set, Lambda, B and log_step learn at
        ``ssm_lr`` without weight decay (spec §5.5, opt_config ``standard``); None otherwise."""
        ssm_lr = getattr(config, "ssm_lr", None)
        if ssm_lr is None:
            return None
        own = {"group": "ssm", "lr_scale": float(ssm_lr) / float(config.lr), "weight_decay": 0.0}
        return {name: own for name, _ in self.named_parameters(recurse=False)
                if name in ("Lambda_re", "Lambda_im", "B", "log_step")}

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        if self.bidirectional:
            return ()
        dtype = _complex_dtype(dtype or self.Lambda_re.dtype)
        return (torch.zeros(batch_size, self.n_states, device=device or self.Lambda_re.device, dtype=dtype),)

    def _state(self, state: State | None, batch: int, like: Tensor) -> Tensor | None:
        if self.bidirectional:
            if state:
                raise ValueError("S5 (bidirectional): a bidirectional layer carries no state; pass state=None")
            return None
        if state is None or len(state) == 0:
            return None
        if len(state) != 1 or state[0].shape != (batch, self.n_states):
            raise ValueError(f"S5: state must be a 1-tuple holding a ({batch}, {self.n_states}) complex tensor, got "
                             f"{[tuple(s.shape) for s in state]}")
        return state[0].to(_complex_dtype(like.dtype))

    def forward(self, u: Tensor, state: State | None = None, *, mask: Tensor | None = None) -> tuple[Tensor, State]:
        Bsz, L, H = u.shape
        x0 = self._state(state, Bsz, u)
        lam_bar, B_bar = self.discrete()
        bu = torch.view_as_complex((u @ self._input_map(B_bar)).view(Bsz, L, self.n_states, 2))
        a: Tensor = lam_bar
        if mask is not None:
            m = mask.unsqueeze(-1)
            a = torch.where(m, lam_bar, torch.ones_like(lam_bar))
            bu = bu * m
        W = self._output_map()
        xs = linear_scan(a, bu, x0, chunk=self.chunk)
        y = torch.view_as_real(xs).reshape(Bsz, L, -1) @ W[: 2 * self.n_states]
        if self.bidirectional:
            xb = linear_scan(a, bu, None, reverse=True, chunk=self.chunk)
            y = y + torch.view_as_real(xb).reshape(Bsz, L, -1) @ W[2 * self.n_states:]
            new_state: State = ()
        else:
            new_state = (xs[:, -1].clone() if L else (x0 if x0 is not None else self.init_state(Bsz, device=u.device,
                         dtype=u.dtype)[0]),)
        return y + self.D * u, new_state

    def step(self, u_t: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One step of the recurrence: ``u_t (B, H) -> y_t (B, H)``."""
        if self.bidirectional:
            raise NotImplementedError("S5 (bidirectional) reads the whole sequence and has no step()")
        x = self._state(state, u_t.shape[0], u_t)
        lam_bar, B_bar = self.discrete()
        bu = torch.view_as_complex((u_t @ self._input_map(B_bar)).view(u_t.shape[0], self.n_states, 2))
        x = bu if x is None else lam_bar * x + bu
        y = torch.view_as_real(x).reshape(u_t.shape[0], -1) @ self._output_map()
        return y + self.D * u_t, (x,)


class MaskedBatchNorm(nn.Module):
    """BatchNorm over all real positions (``mask``) of a ``(B, L, H)`` batch; running statistics at eval.

    ``momentum`` follows the Flax convention of the official code: ``running = momentum * running +
    (1 - momentum) * batch`` (0.95 there). The batch variance is the biased one, as in Flax.
    """

    def __init__(self, d: int, momentum: float = 0.95, eps: float = 1e-5) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"MaskedBatchNorm: momentum must be in [0, 1), got {momentum}")
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d))
        self.register_buffer("running_mean", torch.zeros(d))
        self.register_buffer("running_var", torch.ones(d))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.training:
            flat = x.reshape(-1, x.shape[-1])
            if mask is not None:
                flat = flat[mask.reshape(-1)]
            if flat.shape[0] == 0:
                raise ValueError("MaskedBatchNorm: the batch has no real position to take statistics from")
            mean, var = flat.mean(0), flat.var(0, unbiased=False)
            with torch.no_grad():
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), 1 - self.momentum)
                self.running_var.lerp_(var.to(self.running_var.dtype), 1 - self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


def _shared_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Dropout with one mask per sequence and feature, shared across time (``x: (B, L, H)`` or ``(B, H)``)."""
    if not training or p == 0.0:
        return x
    shape = (x.shape[0], 1, x.shape[-1]) if x.dim() == 3 else x.shape
    keep = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1 - p)
    return x * keep / (1 - p)


class S5Layer(SequenceLayer):
    """The S5 sequence layer: ``y = x + block(SSM(norm(x)))`` (pre-norm), per spec §5.4.

    Args (beyond those of ``S5SSM``):
        activation: ``"gelu"``, ``"half_glu1"`` (default), ``"half_glu2"`` or ``"full_glu"``.
        norm: ``"layer"`` (default; LayerNorm per position), ``"batch"`` (BatchNorm over real positions, the
            official default) or None.
        prenorm: normalise the input of the branch (True) or the output of the residual sum (False).
        dropout: dropout rate of the activation block, masks shared across time.
        bn_momentum: Flax-style BatchNorm momentum (0.95 in the official code).
    """

    def __init__(self, d_model: int, state_size: int = 64, *, blocks: int = 1, conj_sym: bool = True,
                 bidirectional: bool = False, discretization: str = "zoh", C_init: str = "trunc_standard_normal",
                 dt_min: float = 0.001, dt_max: float = 0.1, clip_eigs: bool = False, step_rescale: float = 1.0,
                 activation: str = "half_glu1", norm: str | None = "layer", prenorm: bool = True,
                 dropout: float = 0.0, bn_momentum: float = 0.95, chunk: int | None = DEFAULT_CHUNK) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"S5: activation must be one of {ACTIVATIONS}, got {activation!r}")
        if norm not in NORMS:
            raise ValueError(f"S5: norm must be one of {NORMS}, got {norm!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"S5: dropout must be in [0, 1), got {dropout}")
        self.d_model = self.d_output = d_model
        self.ssm = S5SSM(d_model, state_size, blocks=blocks, conj_sym=conj_sym, bidirectional=bidirectional,
                         discretization=discretization, C_init=C_init, dt_min=dt_min, dt_max=dt_max,
                         clip_eigs=clip_eigs, step_rescale=step_rescale, chunk=chunk)
        self.activation, self.norm_kind, self.prenorm, self.dropout_p = activation, norm, prenorm, dropout
        if norm == "layer":
            self.norm: nn.Module = nn.LayerNorm(d_model)
        elif norm == "batch":
            self.norm = MaskedBatchNorm(d_model, momentum=bn_momentum)
        else:
            self.norm = nn.Identity()
        if activation in ("half_glu1", "half_glu2"):
            self.out2 = nn.Linear(d_model, d_model)
        elif activation == "full_glu":
            self.out1 = nn.Linear(d_model, d_model)
            self.out2 = nn.Linear(d_model, d_model)

    # ----- protocol flags ---------------------------------------------------------------------
    @property
    def is_causal(self) -> bool:  # type: ignore[override]
        return not self.ssm.bidirectional

    @property
    def supports_step(self) -> bool:  # type: ignore[override]
        return not self.ssm.bidirectional

    @property
    def step_exact_in_train(self) -> bool:  # type: ignore[override]
        """Batch statistics and per-call dropout masks differ between one pass and steps."""
        return self.dropout_p == 0.0 and self.norm_kind != "batch"

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        return self.ssm.init_state(batch_size, device=device, dtype=dtype)

    def state_size(self, seq_len: int) -> int:
        """Real scalars of the complex state (none when bidirectional)."""
        return 0 if self.ssm.bidirectional else 2 * self.ssm.n_states

    # ----- computation --------------------------------------------------------------------------
    def _norm(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return self.norm(x, mask) if self.norm_kind == "batch" else self.norm(x)

    def _block(self, y: Tensor) -> Tensor:
        p, training = self.dropout_p, self.training
        z = _shared_dropout(F.gelu(y, approximate="tanh"), p, training)  # Flax's gelu is the tanh form
        if self.activation == "half_glu1":
            z = z * torch.sigmoid(self.out2(z))
        elif self.activation == "half_glu2":
            z = y * torch.sigmoid(self.out2(z))
        elif self.activation == "full_glu":
            z = self.out1(z) * torch.sigmoid(self.out2(z))
        else:
            return z
        return _shared_dropout(z, p, training)

    def forward(self, x: Tensor, state: State | None = None, *, mask: Tensor | None = None) -> tuple[Tensor, State]:
        check_input(x, self.d_model, "S5Layer")
        mask = check_mask(mask, x, "S5Layer")
        h = self._norm(x, mask) if self.prenorm else x
        y, state = self.ssm(h, state, mask=mask)
        out = x + self._block(y)
        if not self.prenorm:
            out = self._norm(out, mask)
        return out, state

    def step(self, x_t: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        if not self.supports_step:
            raise NotImplementedError("S5Layer (bidirectional) reads the whole sequence and has no step()")
        if x_t.dim() != 2 or x_t.shape[-1] != self.d_model:
            raise ValueError(f"S5Layer.step expects x_t of shape (batch, {self.d_model}), got {tuple(x_t.shape)}")
        h = self._norm(x_t, None) if self.prenorm else x_t
        y, state = self.ssm.step(h, state)
        out = x_t + self._block(y)
        if not self.prenorm:
            out = self._norm(out, None)
        return out, state


def build_s5(d_in: int, d_model: int, **kwargs: Any) -> S5Layer:
    """Layer factory for ``"s5"``: the layer has a residual, so ``d_in`` must equal ``d_model``."""
    if d_in != d_model:
        raise ValueError(
            f"s5 layer: input width d_in={d_in} must equal d_model={d_model} (the layer has a residual); "
            "use an encoder (encoder='linear' or vocab_size) so the first layer sees d_model features"
        )
    return S5Layer(d_model, **kwargs)


def s5_param_groups(model: nn.Module, lr: float, ssm_lr: float, weight_decay: float, *,
                    opt_config: str = "standard", dt_global: bool = False) -> list[dict[str, Any]]:
    """Optimiser parameter groups of the official code (spec §5.5) for every ``S5SSM`` inside ``model``.

    ``standard``: ``Lambda``, ``B``, ``log_step`` get ``ssm_lr`` and no weight decay; everything else ``lr`` and
    ``weight_decay``. ``BandCdecay``: ``B`` gets ``ssm_lr`` with weight decay. ``BfastandCdecay``: ``B`` joins
    the regular group. ``noBCdecay``: ``B``, ``C`` and ``D`` join the SSM group. ``dt_global``: ``log_step``
    moves to the regular group. Each group carries ``name`` and ``lr_scale`` (its lr / ``lr``) so a schedule can
    scale all groups by one factor; pass the list to ``torch.optim.AdamW``.
    """
    if opt_config not in OPT_CONFIGS:
        raise ValueError(f"s5_param_groups: opt_config must be one of {OPT_CONFIGS}, got {opt_config!r}")
    if not (lr > 0 and ssm_lr > 0 and weight_decay >= 0):
        raise ValueError(f"s5_param_groups: need lr > 0, ssm_lr > 0, weight_decay >= 0; got {lr}, {ssm_lr}, "
                         f"{weight_decay}")
    ssm_names = {"Lambda_re", "Lambda_im", "B", "log_step"}
    if opt_config == "noBCdecay":
        ssm_names |= {"C", "D"}
    if opt_config in ("BandCdecay", "BfastandCdecay"):
        ssm_names.discard("B")
    if dt_global:
        ssm_names.discard("log_step")
    where: dict[int, str] = {}
    found = False
    for module in model.modules():
        if isinstance(module, S5SSM):
            found = True
            for name, p in module.named_parameters(recurse=False):
                if name in ssm_names:
                    where[id(p)] = "ssm"
                elif name == "B" and opt_config == "BandCdecay":
                    where[id(p)] = "ssm_decay"
    if not found:
        raise ValueError(f"s5_param_groups: {type(model).__name__} holds no S5 layer (S5SSM module)")
    settings = {"ssm": (ssm_lr, 0.0), "ssm_decay": (ssm_lr, weight_decay), "regular": (lr, weight_decay)}
    params: dict[str, list[nn.Parameter]] = {k: [] for k in settings}
    for p in model.parameters():
        if p.requires_grad:
            params[where.get(id(p), "regular")].append(p)
    return [{"name": k, "params": ps, "lr": settings[k][0], "weight_decay": settings[k][1],
             "lr_scale": settings[k][0] / lr} for k, ps in params.items() if ps]

"""ARMA cell (Schiele, Berninger & Rügamer 2022, arXiv 2208.14919; spec §6.1).

The cell feeds back its own past outputs instead of unobservable innovations. Read at step t (after
it has consumed ``x_t``) its output is the one-step forecast of ``x_{t+1}``::

    ŷ_{t+1} = act( b + Σ_{i=1..p} B̆_i x_{t+1-i} + Σ_{j=1..q} Γ̆_j ŷ_{t+1-j} + Σ_{j=p+1..q} Γ̆_j (ŷ_{t+1-j} - x_{t+1-j}) )

where the last sum (only when q > p) makes the MA lags beyond p use explicit prediction errors, as the
reference package does. With ``act`` = identity and one unit on a univariate series this is exactly the
one-step ARMA(p, q) predictor under ``Γ̆_j = -γ_j``, ``B̆_i = β_i + γ_i`` (γ_i = 0 for i > q);
``coefficients()`` maps back to the classical (β, γ).

Multivariate input and units: ``k = input_size`` series and ``u`` units; every unit has its own k×k
matrices per lag, sees all k input series and only *its own* past outputs, and produces k values; the
output concatenates the units (``u·k`` values, unit-major). ``return_lags=True`` outputs the whole
output-lag buffer (``u·Q·k`` values, unit-major then lag, Q = max(q, 1)) so a second ARMA layer can
take it as input (deep ARMA).

Speed: the input lags enter linearly, so ``project_inputs`` computes ``B̆_i x_t`` for every lag i and
every step in one matrix multiply before the loop; the state carries the not-yet-due partial sums of
those terms (not the raw inputs), so a step costs one small matrix multiply for the MA part.

State layout (the driver shows ``state[0]`` at padded steps, so it is always the output):
``(last (B, u·k), older (B, u·(Q-1)·k), pending (B, (P-1)·u·k))``, or ``(lags (B, u·Q·k), pending)``
with ``return_lags``; ``P = max(p, q)`` input lags. Width-0 entries are kept so the layout is fixed.

Defaults follow the package where it matters: linear activation and kernels drawn from U(-0.05, 0.05).
The bias is on by default (the package's ``use_bias`` is False) like every other seqzoo cell.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from seqzoo.layers.cells.base import RecurrentCell, State

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "identity": lambda a: a,
    "linear": lambda a: a,
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}


def resolve_activation(name: str, who: str) -> Callable[[Tensor], Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(f"{who}: activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


def check_lags(p: int, q: int, who: str, *, min_p: int = 0) -> None:
    for name, v, lo in (("p", p, min_p), ("q", q, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{who}: {name} (number of {'AR' if name == 'p' else 'MA'} lags) must be an integer "
                             f">= {lo}, got {v!r}")
    if p + q < 1:
        raise ValueError(f"{who}: needs at least one lag, got p={p}, q={q}")


def units_from_width(width: int, per_unit: int, who: str, what: str) -> int:
    """``width / per_unit`` as an int, or a clear error saying which widths are valid."""
    if width <= 0 or width % per_unit:
        raise ValueError(f"{who}: {what} must be a positive multiple of {per_unit}, got {width}")
    return width // per_unit


class ARMACell(RecurrentCell):
    """ARMA(p, q) cell with ``units`` units over ``input_size`` series; runs under ``Recurrent``.

    Give the output width as ``hidden_size`` (``units·input_size``, or ``units·max(q,1)·input_size``
    with ``return_lags``) as every cell does, or give ``units`` and leave ``hidden_size`` None.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int | None = None,
        *,
        p: int = 1,
        q: int = 1,
        units: int | None = None,
        activation: str = "identity",
        bias: bool = True,
        return_lags: bool = False,
        init_scale: float = 0.05,
    ) -> None:
        nn.Module.__init__(self)  # no gate matrices and no norm sites: RecurrentCell.__init__ does not apply
        who = "ARMACell"
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size <= 0:
            raise ValueError(f"{who}: input_size (number of series k) must be a positive integer, got {input_size!r}")
        check_lags(p, q, who)
        self.act = resolve_activation(activation, who)
        k = input_size
        n_out_lags = max(q, 1)
        per_unit = k * (n_out_lags if return_lags else 1)
        if hidden_size is None and units is None:
            raise ValueError(f"{who}: give hidden_size (output width) or units")
        if hidden_size is None:
            hidden_size = units * per_unit
        what = "hidden_size (= units * input_size" + (" * max(q, 1) with return_lags)" if return_lags else ")")
        u = units_from_width(hidden_size, per_unit, who, what)
        if units is not None and units != u:
            raise ValueError(f"{who}: units={units} does not match hidden_size={hidden_size} "
                             f"(expected hidden_size {units * per_unit})")
        self.input_size, self.hidden_size = k, hidden_size
        self.p, self.q, self.units = p, q, u
        self.n_in_lags, self.n_out_lags = max(p, q), n_out_lags
        self.activation, self.return_lags, self.init_scale = activation, return_lags, init_scale
        self.norm_kind = None
        self.norms = nn.ModuleDict()
        # B̆: (p, u, k_out, k_in); Γ̆ stored as (u, k_out, q, k_in) so one unit's MA map is a (k, q·k) view
        self.ar_weight = nn.Parameter(torch.empty(p, u, k, k)) if p > 0 else None
        self.ma_weight = nn.Parameter(torch.empty(u, k, q, k)) if q > 0 else None
        self.bias = nn.Parameter(torch.empty(u, k)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The package's defaults: kernels U(-init_scale, init_scale), bias 0."""
        for w in (self.ar_weight, self.ma_weight):
            if w is not None:
                nn.init.uniform_(w, -self.init_scale, self.init_scale)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    # ----- state ------------------------------------------------------------------------------
    def _param(self) -> Tensor:
        return next(self.parameters())

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        ref = self._param()
        kw = {"device": device or ref.device, "dtype": dtype or ref.dtype}
        uk = self.units * self.input_size
        pending = torch.zeros(batch_size, (self.n_in_lags - 1) * uk, **kw)
        if self.return_lags:
            return torch.zeros(batch_size, self.n_out_lags * uk, **kw), pending
        return torch.zeros(batch_size, uk, **kw), torch.zeros(batch_size, (self.n_out_lags - 1) * uk, **kw), pending

    def state_size(self) -> int:
        uk = self.units * self.input_size
        return (self.n_out_lags + self.n_in_lags - 1) * uk

    # ----- computation ------------------------------------------------------------------------
    def input_kernel(self) -> Tensor:
        """``(P, u, k, k)``: B̆_i for lags i <= p, then -Γ̆_j for the explicit MA lags p < j <= q."""
        parts = []
        if self.ar_weight is not None:
            parts.append(self.ar_weight)
        if self.q > self.p:
            parts.append(-self.ma_weight[:, :, self.p:].permute(2, 0, 1, 3))
        return torch.cat(parts, 0) if len(parts) > 1 else parts[0]

    def project_inputs(self, x: Tensor) -> Tensor:
        """Every lag's input term for all steps: ``(..., P·u·k)``, slot i = contribution to the output i steps on."""
        P, uk = self.n_in_lags, self.units * self.input_size
        weight = self.input_kernel().reshape(P * uk, self.input_size)
        bias = None
        if self.bias is not None:
            bias = torch.cat([self.bias.reshape(uk), self.bias.new_zeros((P - 1) * uk)])
        return nn.functional.linear(x, weight, bias)

    def forward(self, xp_t: Tensor, state: State) -> tuple[Tensor, State]:
        """One step on a projected input ``xp_t: (B, P·u·k)``; returns ``(output, new_state)``."""
        B = xp_t.shape[0]
        u, k, Q = self.units, self.input_size, self.n_out_lags
        uk = u * k
        if self.return_lags:
            lags, pending = state
        else:
            last, older, pending = state
            lags = torch.cat([last.view(B, u, 1, k), older.view(B, u, Q - 1, k)], 2)
        lags = lags.view(B, u, Q * k)
        pre = xp_t[:, :uk]
        if self.n_in_lags > 1:
            pre = pre + pending[:, :uk]
            new_pending = xp_t[:, uk:] + nn.functional.pad(pending[:, uk:], (0, uk))
        else:
            new_pending = pending
        if self.ma_weight is not None:
            ma_in = lags[:, :, : self.q * k]
            if u == 1:
                ma = nn.functional.linear(ma_in[:, 0], self.ma_weight[0].reshape(k, self.q * k))
            else:
                ma = torch.einsum("bmi,mli->bml", ma_in, self.ma_weight.reshape(u, k, self.q * k)).reshape(B, uk)
            pre = pre + ma
        y = self.act(pre)
        if self.return_lags:
            new_lags = torch.cat([y.view(B, u, 1, k), lags.view(B, u, Q, k)[:, :, : Q - 1]], 2).reshape(B, u * Q * k)
            return new_lags, (new_lags, new_pending)
        new_older = lags.view(B, u, Q, k)[:, :, : Q - 1].reshape(B, (Q - 1) * uk)
        return y, (y, new_older, new_pending)

    def coefficients(self) -> dict[str, Tensor]:
        """Cell and classical coefficients (detached): ``ar``/``ma`` = β (p, u, k, k) and γ (q, u, k, k).

        Classical: ``γ_j = -Γ̆_j`` and ``β_i = B̆_i - γ_i`` (i <= min(p, q)). Exact for the linear cell;
        for a nonlinear activation these are only the linear parts of the recursion.
        """
        k, u = self.input_size, self.units
        ref = self._param().detach()
        ar_cell = self.ar_weight.detach().clone() if self.ar_weight is not None else ref.new_zeros(0, u, k, k)
        ma_cell = (self.ma_weight.detach().permute(2, 0, 1, 3).clone() if self.ma_weight is not None
                   else ref.new_zeros(0, u, k, k))
        ma = -ma_cell
        ar = ar_cell.clone()
        m = min(self.p, self.q)
        ar[:m] = ar_cell[:m] - ma[:m]
        bias = self.bias.detach().clone() if self.bias is not None else ref.new_zeros(u, k)
        return {"ar": ar, "ma": ma, "ar_cell": ar_cell, "ma_cell": ma_cell, "bias": bias}

    def report_metrics(self) -> dict[str, float]:
        """Classical coefficients as flat numbers (``coef_ar1``, ``coef_ma1`` ...; unit/series indices added
        when there are several) so that runs record the fitted β, γ and intercept next to their metrics."""
        c = self.coefficients()
        if self.bias is None:
            c["bias"] = c["bias"][:0]  # no intercept to report
        return _flat_coefficients(c, "coef_")

    def folded_coefficients(self, weight: Tensor, bias: Tensor | None) -> dict[str, Tensor] | None:
        """Classical coefficients of the model ``z_t = W ŷ_t + b`` that reads this cell through a linear map.

        A model's forecast is the head applied to the cell's output, so a head that is not the identity
        rescales the predictor: with ``ŷ = W⁻¹(z − b)`` the model is the ARMA predictor with input kernels
        ``W B̆_i``, output kernels ``W Γ̆_j W⁻¹`` and intercept ``b + W c − Σ_j W Γ̆_j W⁻¹ b`` (its past
        outputs start at ``b``, the image of the cell's zero state). Defined for a linear cell with one unit,
        ``q <= p`` (explicit-error lags would compare against ``W x``, not ``x``) and an invertible ``W``
        (k × k); returns None otherwise.
        """
        k = self.input_size
        if (self.units != 1 or self.activation not in ("identity", "linear") or self.q > self.p
                or tuple(weight.shape) != (k, k)):
            return None
        W = weight.detach().to(self._param().dtype)
        if not bool(torch.isfinite(W).all()) or torch.linalg.matrix_rank(W) < k:
            return None
        W_inv = torch.linalg.inv(W)
        c = self.coefficients()
        ma_eff = W @ c["ma_cell"][:, 0] @ W_inv  # (q, k, k)
        ar_eff = W @ c["ar_cell"][:, 0]  # (p, k, k)
        b = bias.detach().to(W.dtype) if bias is not None else W.new_zeros(k)
        intercept = b + W @ c["bias"][0] - (ma_eff @ b).sum(0)
        ma = -ma_eff
        ar = ar_eff.clone()
        ar[: self.q] = ar_eff[: self.q] - ma
        return {"ar": ar.unsqueeze(1), "ma": ma.unsqueeze(1), "bias": intercept.unsqueeze(0)}

    def head_folded_metrics(self, weight: Tensor, bias: Tensor | None) -> dict[str, float]:
        """``folded_coefficients`` as flat ``model_coef_*`` numbers (empty when the fold is not defined)."""
        c = self.folded_coefficients(weight, bias)
        return {} if c is None else _flat_coefficients(c, "model_coef_")

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, p={self.p}, q={self.q}, units={self.units}, "
                f"activation={self.activation!r}, return_lags={self.return_lags}")


def _flat_coefficients(c: dict[str, Tensor], prefix: str) -> dict[str, float]:
    """``{prefix}ar1``, ``{prefix}ma2`` ..., ``{prefix}c``: lag-major, unit/series indices appended when several."""
    out: dict[str, float] = {}
    for name in ("ar", "ma"):
        w = c[name]  # (lags, u, k, k)
        for idx in torch.cartesian_prod(*[torch.arange(n) for n in w.shape]).reshape(-1, w.dim()).tolist():
            lag, rest = idx[0], idx[1:]
            tail = "" if w[0].numel() == 1 else "_" + "_".join(str(i) for i in rest)
            out[f"{prefix}{name}{lag + 1}{tail}"] = float(w[tuple(idx)])
    b = c["bias"].flatten().tolist()
    if b:
        out.update({f"{prefix}c" if len(b) == 1 else f"{prefix}c_{i}": float(v) for i, v in enumerate(b)})
    return out

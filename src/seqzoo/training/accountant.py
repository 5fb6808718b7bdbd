"""Privacy accounting of DP-SGD with Opacus's accountants (spec stacks-memory-...-privacy.md §7.2).

Poisson-sampled Gaussian mechanism, ``steps`` compositions at sampling rate ``q`` and noise multiplier ``sigma``.
``epsilon`` asks Opacus (``opacus.accountants``): ``"rdp"`` is the RDP accountant with the RDP -> (ε, δ)
conversion of Balle et al. 2020 (Opacus's), minimised over Opacus's default orders plus the integer orders 2–255
(a larger set of orders only tightens a valid bound); ``"prv"`` is Opacus's PRV accountant (numerical composition
of privacy-loss distributions; tighter). ``"rdp-classic"`` uses Opacus's per-order RDP with the classic
conversion ``ε = min_α T ε_α + log(1/δ)/(α−1)`` (the TF-Privacy tutorial's numbers), for comparison with older
papers. Opacus is an optional extra (``pip install 'seqzoo[privacy]'``), imported on first use.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from seqzoo.errors import ConfigError

ACCOUNTANTS = ("rdp", "prv", "rdp-classic")
INTEGER_ORDERS = tuple(range(2, 256))
CONVERSIONS = {"rdp": "RDP, Balle et al. 2020 conversion (Opacus RDPAccountant; orders Opacus default + 2..255)",
               "prv": "PRV accountant (Opacus PRVAccountant, eps_error 0.01)",
               "rdp-classic": "RDP, classic conversion log(1/delta)/(alpha-1) (Opacus compute_rdp; orders 2..255)"}


def opacus_module(name: str) -> Any:
    """``opacus.<name>`` imported on first use, or a one-line error naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(f"opacus.{name}")
    except ImportError as err:
        raise ConfigError("DP-SGD accounting needs Opacus: pip install 'seqzoo[privacy]' (or pip install opacus)"
                          ) from err


def _orders(integer_only: bool) -> list[float]:
    if integer_only:
        return [float(a) for a in INTEGER_ORDERS]
    default = opacus_module("accountants.rdp").RDPAccountant.DEFAULT_ALPHAS
    return sorted({float(a) for a in default} | {float(a) for a in INTEGER_ORDERS})


def epsilon(sigma: float, sample_rate: float, steps: int, delta: float, accountant: str = "rdp", *,
            integer_orders: bool = False) -> float:
    """ε of ``steps`` Poisson-sampled Gaussian steps at ``(sigma, sample_rate)``, for ``delta``.

    ``integer_orders`` restricts the RDP orders to 2..255 (the spec's reference table). ``steps == 0`` is 0.
    """
    if accountant not in ACCOUNTANTS:
        raise ConfigError(f"privacy accountant must be one of {', '.join(ACCOUNTANTS)}, got {accountant!r}")
    if steps == 0:
        return 0.0
    with warnings.catch_warnings():  # "optimal order is the largest alpha": the bound is still valid
        warnings.simplefilter("ignore", UserWarning)
        if accountant == "prv":
            acc = opacus_module("accountants").PRVAccountant()
            acc.history = [(float(sigma), float(sample_rate), int(steps))]
            return float(acc.get_epsilon(delta=delta))
        orders = _orders(integer_only=integer_orders or accountant == "rdp-classic")
        if accountant == "rdp":
            acc = opacus_module("accountants").RDPAccountant()
            acc.history = [(float(sigma), float(sample_rate), int(steps))]
            eps, _ = acc.get_privacy_spent(delta=delta, alphas=orders)
            return float(eps)
        rdp = opacus_module("accountants.analysis.rdp").compute_rdp(
            q=float(sample_rate), noise_multiplier=float(sigma), steps=int(steps), orders=orders)
        return float(min(r + math.log(1.0 / delta) / (a - 1.0) for a, r in zip(orders, rdp)))


def rdp_of_order(sigma: float, sample_rate: float, steps: int, order: float) -> float:
    """Opacus's RDP of one order (for the ``q = 1`` check ``T α / (2σ²)``)."""
    return float(opacus_module("accountants.analysis.rdp").compute_rdp(
        q=float(sample_rate), noise_multiplier=float(sigma), steps=int(steps), orders=[float(order)])[0])

"""Normalizations injected into recurrent cells at named sites.

A cell asks ``make_recurrent_norm(kind, num_features, **kwargs)`` for each site it normalizes. A
norm carries its own (possibly empty) state tuple through time, so windowed or per-step
statistics can be added without touching any cell. ``None`` gives the identity.
Further kinds (batch, ATN, BLN) register themselves with ``register_recurrent_norm``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import Tensor, nn

from seqzoo.ops.lstm_sites import IDENTITY_SITE, SiteNorm
from seqzoo.registry_utils import Registry, check_kwargs

NormState = tuple[Tensor, ...]


class RecurrentNorm(nn.Module):
    """Base of a normalization site: ``y, state = norm(a_t, state)`` on ``a_t: (B, F)``.

    ``step_exact_in_train`` is False for norms whose train-time statistics depend on the whole
    batch of sequences (there ``step`` cannot equal ``forward`` in train mode).
    ``stateless`` lets the driver skip state bookkeeping. ``cancels_bias`` is True for norms that subtract a
    per-feature mean over the batch: a constant added before such a site has no effect, so a cell drops its own
    bias there (``RecurrentCell``).
    """

    num_state: int = 0
    cancels_bias: bool = False
    step_exact_in_train: bool = True
    stateless: bool = True
    is_identity: bool = False

    def init_state(self, batch_size: int, device=None, dtype=None) -> NormState:
        return ()

    def forward(self, a: Tensor, state: NormState = ()) -> tuple[Tensor, NormState]:  # pragma: no cover
        raise NotImplementedError

    def fused_site(self) -> SiteNorm | None:
        """This norm as a (windowed) LayerNorm the fused LSTM loop implements, or None (generic loop).

        A subclass that changes ``forward`` must override this too.
        """
        return None


class IdentityNorm(RecurrentNorm):
    """No normalization; lets cells take their fast path."""

    is_identity = True

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, a: Tensor, state: NormState = ()) -> tuple[Tensor, NormState]:
        return a, state

    def fused_site(self) -> SiteNorm | None:
        return IDENTITY_SITE if type(self) is IdentityNorm else None


class LayerNormSite(RecurrentNorm):
    """Layer normalization over the features of one site (Ba et al. 2016): gain 1, bias 0 at init."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, bias: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if (affine and bias) else None

    def forward(self, a: Tensor, state: NormState = ()) -> tuple[Tensor, NormState]:
        return nn.functional.layer_norm(a, (self.num_features,), self.weight, self.bias, self.eps), state

    def fused_site(self) -> SiteNorm | None:
        return SiteNorm(None, self.weight, self.bias, self.eps) if type(self) is LayerNormSite else None


NORMS: Registry[Callable[..., RecurrentNorm]] = Registry("recurrent normalization")
NORMS.add("layer", LayerNormSite)


def register_recurrent_norm(name: str, factory: Callable[..., RecurrentNorm]) -> None:
    """Make ``norm=name`` available to every cell."""
    NORMS.add(name, factory)


def make_recurrent_norm(kind: str | None, num_features: int, *, site: str | None = None, **kwargs) -> RecurrentNorm:
    """The norm for one site; ``kind=None`` (or "none") is the identity.

    ``site`` (e.g. "x", "h", "c") is passed to factories that take it, for per-site defaults.
    """
    if kind is None or kind == "none":
        return IdentityNorm(num_features)
    factory = NORMS.get(kind)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    if "site" in params:
        kwargs["site"] = site
    check_kwargs(f"norm {kind!r}", kwargs, [p for p in params if p != "num_features"] or list(kwargs))
    return factory(num_features, **kwargs)

"""Statistics pooled over a sliding window of time steps (the core of Assorted-Time Normalization).

For pre-activations ``a_1 .. a_t`` of one site (each ``(B, F)``) the window is the last
``m = min(t, k)`` of them; mean and biased variance are taken over the window and all features,
one scalar pair per sample, and only the current vector is normalized. Gradients flow into every
pre-activation in the window.

``window_moments_step`` is the O(1)-per-step form used by the layer (running sums of ``Σa`` and
``Σa²`` over a ring buffer of per-step scalars); ``window_normalize_reference`` is the slow twin
that stacks the window explicitly.
"""

from __future__ import annotations

import torch
from torch import Tensor

WindowState = tuple[Tensor, Tensor, Tensor]


def window_init_state(batch_size: int, k: int, *, device=None, dtype=None) -> WindowState:
    """Empty window: a ring of per-step (Σa, Σa²) (B, 2, k), their running sums (B, 2), the step count (B,)."""
    return (torch.zeros(batch_size, 2, k, device=device, dtype=dtype),
            torch.zeros(batch_size, 2, device=device, dtype=dtype),
            torch.zeros(batch_size, device=device, dtype=torch.long))


def window_moments_step(a: Tensor, state: WindowState, k: int) -> tuple[Tensor, Tensor, WindowState]:
    """Push ``a (B, F)`` into the window; return per-sample ``(mean, var)`` of the window and the new state."""
    ring, sums, t = state
    a = a.to(ring.dtype)  # the window keeps its sums in its own (float32) dtype, also under bf16 autocast
    x = torch.stack([a.sum(-1), (a * a).sum(-1)], -1)  # (B, 2): this step's Σa and Σa²
    slot = (t % k).view(-1, 1, 1).expand(-1, 2, 1)
    sums = sums - ring.gather(2, slot).squeeze(-1) + x  # the step leaving the window goes out, this one in
    ring = ring.scatter(2, slot, x.unsqueeze(-1))
    t = t + 1
    s1, s2 = sums.unbind(-1)
    count = torch.clamp(t, max=k).to(a.dtype) * a.shape[-1]
    mean = s1 / count
    var = torch.clamp(s2 / count - mean * mean, min=0.0)
    return mean, var, (ring, sums, t)


def window_normalize_reference(a: Tensor, k: int, eps: float = 1e-5) -> Tensor:
    """Normalize every step of ``a (B, L, F)`` by the statistics of its window (explicit stacking)."""
    outs = []
    for t in range(a.shape[1]):
        window = a[:, max(0, t - k + 1): t + 1]  # (B, m, F)
        mean = window.mean(dim=(1, 2), keepdim=True)
        var = ((window - mean) ** 2).mean(dim=(1, 2), keepdim=True)
        outs.append((a[:, t: t + 1] - mean) / torch.sqrt(var + eps))
    return torch.cat(outs, 1)

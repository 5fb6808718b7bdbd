"""Why BN-LSTM with ε = 1e-5 gets a NaN gradient on MNIST rows, and the gate bias BN would cancel.

The forward pass of a BN site over a batch whose rows are all the same (the blank first pixels of MNIST,
before any sequence of the batch has seen ink) is finite: ``a - E[a] = 0``. Its backward multiplies the
incoming gradient by ``γ / sqrt(Var[a] + ε)`` = 0.1 / sqrt(1e-5) ≈ 31.6. A recurrence of such steps
(the ``h`` and ``c`` sites at every step) compounds the gain until float32 overflows to inf, and the mean
subtraction of the next BN backward turns inf into NaN (docs/results/recurrent-bn-small.md).
"""

from __future__ import annotations

import math

import torch

from seqzoo.layers import build_recurrent
from seqzoo.layers.batch_norm import RecurrentBatchNorm
from seqzoo.layers.norms import make_recurrent_norm


def _chain(bn: RecurrentBatchNorm, a0: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` BN steps fed back into themselves: the recurrent BN path without the cell around it."""
    y, state = a0, bn.init_state(a0.shape[0])
    for _ in range(n):
        y, state = bn(y, state)
    return y


def test_zero_variance_step_is_finite_forward_and_scales_the_gradient_by_gamma_over_sqrt_eps() -> None:
    bn = RecurrentBatchNorm(4, eps=1e-5)  # the paper's γ = 0.1, ε = 1e-5
    a = torch.full((8, 4), 0.3, requires_grad=True)  # every row the same: batch variance exactly 0
    y, _ = bn(a)
    assert y.abs().max() < 1e-5  # zero up to the rounding of E[a], itself scaled by γ / sqrt(ε)
    g = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    y.backward(g)
    gain = 0.1 / math.sqrt(1e-5)
    torch.testing.assert_close(a.grad, gain * (g - g.mean(0)), rtol=1e-5, atol=0)


def test_chain_of_zero_variance_steps_overflows_in_backward_only() -> None:
    """The minimal reproduction: 26 blank steps give 31.6^26 ≈ 1e39 > float32 max: inf, then NaN."""
    g = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    a0 = torch.zeros(8, 4, requires_grad=True)
    y = _chain(RecurrentBatchNorm(4, eps=1e-5), a0, 26)
    assert torch.isfinite(y).all()  # the forward pass never overflows
    y.backward(g)
    assert torch.isnan(a0.grad).all()
    # the same chain one step shorter stays finite (31.6^25 ≈ 3e37): the overflow is the product of gains
    a1 = torch.zeros(8, 4, requires_grad=True)
    _chain(RecurrentBatchNorm(4, eps=1e-5), a1, 25).backward(g)
    assert torch.isfinite(a1.grad).all() and a1.grad.abs().max() > 1e36


def test_the_papers_remedies_bound_the_gain() -> None:
    """Noise of std 0.1 in the state (Cooijmans et al.'s h_0 noise) or ε = 1e-3 keep the chain finite."""
    g = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    noisy = (0.1 * torch.randn(8, 4, generator=torch.Generator().manual_seed(2))).requires_grad_()
    _chain(RecurrentBatchNorm(4, eps=1e-5), noisy, 26).backward(g)
    assert noisy.grad.abs().max() < 1e3  # variance ~γ² >> ε at every step: gain ≈ 1
    wide = torch.zeros(8, 4, requires_grad=True)
    _chain(RecurrentBatchNorm(4, eps=1e-3), wide, 26).backward(g)
    assert torch.isfinite(wide.grad).all() and wide.grad.abs().max() < 1e15  # 3.16^26 ≈ 1e13


def test_bn_sites_cancel_the_cells_biases_so_the_h_site_carries_the_gate_bias() -> None:
    """The paper's ``BN(W_h h) + BN(W_x x) + b``: the cell's b_ih, b_hh sit inside the sites and cancel."""
    torch.manual_seed(3)
    assert make_recurrent_norm("batch", 8, site="h").bias is not None
    assert make_recurrent_norm("batch", 8, site="x").bias is None
    layer = build_recurrent("lstm", 3, 5, norm="batch").double()
    x = torch.randn(16, 6, 3, dtype=torch.float64)
    y, _ = layer(x)
    cell = layer.cell
    with torch.no_grad():
        cell.bias_ih.add_(1.0)
        cell.bias_hh.sub_(0.7)
    y_moved, _ = layer(x)
    torch.testing.assert_close(y_moved, y, atol=1e-10, rtol=0)  # the cell's biases have no effect under BN
    with torch.no_grad():
        cell.norms["h"].bias[5:10] += 1.0  # the forget-gate rows (torch order i, f, g, o)
    y_forget, _ = layer(x)
    assert (y_forget - y).abs().max() > 1e-3  # β_h is a working gate bias
    y_forget.sum().backward()
    assert cell.norms["h"].bias.grad.abs().max() > 1e-6

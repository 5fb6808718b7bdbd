"""Why BN-LSTM with ε = 1e-5 gets a NaN gradient on MNIST rows, and the gate bias BN would cancel.

The forward pass of a BN site over a batch whose rows are all the same (the blank first pixels of MNIST,
before any sequence of the batch has seen ink) is finite: ``a - E[a] = 0``. Its backward multiplies the
incoming gradient by ``γ / sqrt(Var[a] + ε)`` = 0.1 / sqrt(1e-5) ≈ 31.6. A recurrence of such steps
(the ``h`` and ``c`` sites at every step) compounds the gain until float32 overflows to inf, and the mean
subtraction of the next BN backward turns inf into NaN (docs/results/recurrent-bn-small.md).
"""

from __future__ import annotations

import math

import pytest
import torch

from seqzoo.errors import ConfigError
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
    """The paper's ``BN(W_h h) + BN(W_x x) + b``: a bias inside a batch-mean site cancels, so the cell has none."""
    torch.manual_seed(3)
    assert make_recurrent_norm("batch", 8, site="h").bias is not None
    assert make_recurrent_norm("batch", 8, site="x").bias is None
    layer = build_recurrent("lstm", 3, 5, norm="batch").double()
    cell = layer.cell
    assert cell.bias_ih is None and cell.bias_hh is None  # dead under BN (they would only random-walk)
    assert build_recurrent("lstm", 3, 5, norm="layer").cell.bias_ih is not None  # LayerNorm keeps them
    x = torch.randn(16, 6, 3, dtype=torch.float64)
    y, _ = layer(x)
    a = torch.randn(16, 20, dtype=torch.float64)  # a constant before a BN site has no effect
    torch.testing.assert_close(cell.norms["x"](a + 1.7)[0], cell.norms["x"](a)[0], atol=1e-10, rtol=0)
    with torch.no_grad():
        cell.norms["h"].bias[5:10] += 1.0  # the forget-gate rows (torch order i, f, g, o)
    y_forget, _ = layer(x)
    assert (y_forget - y).abs().max() > 1e-3  # β_h is a working gate bias
    y_forget.sum().backward()
    assert cell.norms["h"].bias.grad.abs().max() > 1e-6


def _blank_start_gradient(h0_noise: float) -> tuple[list[float], list[torch.Tensor]]:
    """A BN-LSTM (ε = 1e-5) on 27 blank steps then 3 inked ones, like the first rows of MNIST: the h site's batch
    variance (min over features) at each step, and the parameter gradients."""
    torch.manual_seed(0)
    layer = build_recurrent("lstm", 1, 16, norm="batch", norm_kwargs={"eps": 1e-5}, h0_noise=h0_noise).train()
    x = torch.zeros(32, 30, 1)
    x[:, -3:] = torch.rand(32, 3, 1)
    var: list[float] = []
    site = layer.cell.norms["h"]
    site.register_forward_hook(lambda m, i, o: var.append(float(i[0].detach().var(0, unbiased=False).min())))
    y, _ = layer(x)
    (y[:, -1] * torch.randn(32, 16)).sum().backward()
    return var, [p.grad for p in layer.parameters() if p.grad is not None]


def test_bn_lstm_without_h0_noise_overflows_in_backward_on_blank_first_steps() -> None:
    """The cell-level reproduction: h_0 = 0 makes every sequence's state equal over the blank steps."""
    var, grads = _blank_start_gradient(0.0)
    assert var[0] == 0.0 and var[1] == 0.0
    assert not all(torch.isfinite(g).all() for g in grads)


def test_h0_noise_gives_the_first_steps_batch_variance_and_a_finite_gradient() -> None:
    """Cooijmans et al.'s --noise 0.1 on h_0: variance ≫ ε at the first steps, so the gain stays near 1."""
    var, grads = _blank_start_gradient(0.1)
    assert min(var[:2]) > 10 * 1e-5
    assert all(torch.isfinite(g).all() for g in grads)
    assert max(float(g.abs().max()) for g in grads) < 1e3


def test_h0_noise_is_training_only_and_checked() -> None:
    layer = build_recurrent("lstm", 2, 8, norm="batch", h0_noise=0.1)
    h0 = layer.init_state(64)[0]
    assert 0.05 < float(h0.std()) < 0.15 and layer.init_state(64)[1].abs().max() == 0  # noise on h only, not c
    layer.eval()
    assert layer.init_state(64)[0].abs().max() == 0  # evaluation is deterministic
    with pytest.raises(ConfigError, match="h0_noise"):
        build_recurrent("lstm", 2, 8, h0_noise=-0.1)


def test_forget_bias_sets_the_gate_bias_that_is_added_last() -> None:
    """The official code starts the forget-gate bias at 1: β_h under BatchNorm, b_ih (b_hh at 0) otherwise."""
    f = slice(8, 16)
    bn = build_recurrent("lstm", 2, 8, norm="batch", forget_bias=1.0).cell
    assert torch.equal(bn.norms["h"].bias[f], torch.ones(8)) and bn.norms["h"].bias[:8].abs().max() == 0
    plain = build_recurrent("lstm", 2, 8, forget_bias=1.0).cell
    assert torch.equal(plain.bias_ih[f], torch.ones(8)) and plain.bias_hh[f].abs().max() == 0
    with pytest.raises(ConfigError, match="forget_bias"):
        build_recurrent("lstm", 2, 8, bias=False, forget_bias=1.0)

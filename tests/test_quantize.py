"""QNN quantizers (spec rnn-cells-and-normalization.md §8.1, §8.3): fast ops against their reference twins, the STE's
gradient cancellation, stochastic binarization's mean, quantized cells/linear layers and the shadow-weight clip."""

from __future__ import annotations

import pytest
import torch

import seqzoo
from seqzoo.errors import ConfigError
from seqzoo.layers import build_layer
from seqzoo.layers.quant import Conv1d, Linear, parse_quant, shadow_weights
from seqzoo.ops import quantize as Q
from seqzoo.training.quantization import ShadowWeightClip, quantization_hooks


def _x(n: int = 400, scale: float = 1.5, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, generator=g, dtype=dtype) * scale).requires_grad_(True)


@pytest.mark.parametrize("bits,mode", [(1, "uniform"), (2, "uniform"), (4, "uniform"), (2, "linear"), (4, "linear"),
                                       (8, "linear"), (2, "log"), (4, "log")])
def test_quantizer_matches_reference_forward_and_backward(bits: int, mode: str) -> None:
    x = _x()
    x_ref = x.detach().clone().requires_grad_(True)
    q, q_ref = Q.quantize(x, bits, mode), Q.quantize_reference(x_ref, bits, mode)
    assert torch.equal(q, q_ref)
    if bits > 1:  # every output is one of the level table's values
        assert torch.isin(q.detach(), Q.levels(bits, mode).to(q.dtype)).all()
    w = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(1))
    (q * w).sum().backward()
    (q_ref * w).sum().backward()
    assert torch.equal(x.grad, x_ref.grad)


def test_uniform_formula_and_level_counts() -> None:
    x = torch.linspace(-1, 1, 1001, dtype=torch.float64)
    for k in (2, 3, 4):
        n = 2 ** k - 1
        want = 2 * torch.round(n * (x + 1) / 2) / n - 1
        assert torch.equal(Q.quantize_uniform(x, k), want)
        assert Q.quantize_uniform(x, k).unique().numel() == 2 ** k
        assert Q.quantize_linear(x, k).unique().numel() == 2 ** k - 1  # symmetric levels with 0
    assert Q.levels(4, "log").tolist()[:3] == [-1.0, -0.5, -0.25]


def test_sign_of_zero_is_plus_one_and_nan_propagates() -> None:
    x = torch.tensor([0.0, -0.0, -1e-30, 1e-30, float("nan"), float("inf"), -float("inf")])
    b = Q.binarize(x)
    assert b[:4].tolist() == [1.0, 1.0, -1.0, 1.0]
    assert b[4].isnan() and b[5] == 1 and b[6] == -1
    assert Q.quantize_log(x, 3)[4].isnan()


@pytest.mark.parametrize("bits,mode", [(1, "uniform"), (4, "uniform"), (3, "linear"), (3, "log")])
def test_ste_gradient_is_zero_exactly_where_abs_x_exceeds_one(bits: int, mode: str) -> None:
    x = torch.tensor([-3.0, -1.0001, -1.0, -0.5, 0.0, 0.7, 1.0, 1.0001, 2.5], dtype=torch.float64,
                     requires_grad=True)
    Q.quantize(x, bits, mode).backward(torch.full_like(x, 2.0))
    inside = x.detach().abs() <= 1
    assert torch.equal(x.grad, torch.where(inside, 2.0, 0.0).to(x.dtype))


def test_ste_mask_uses_pre_quantization_value() -> None:
    # q = sign(x) is always +-1 (|q| <= 1): a mask on q would pass every gradient; the spec's mask is on x
    x = torch.tensor([5.0, 0.3], requires_grad=True)
    Q.ste(x, Q.binarize(x.detach())).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0]


def test_stochastic_binarization_mean_and_reference() -> None:
    x = torch.tensor([-1.5, -0.6, 0.0, 0.2, 0.9, 2.0], dtype=torch.float64)
    n = 200_000
    g = torch.Generator().manual_seed(0)
    draws = Q.binarize_stochastic(x.expand(n, -1).contiguous(), generator=g)
    want = 2 * Q.hard_sigmoid(x) - 1
    se = (1 - want ** 2).clamp_min(1e-12).sqrt() / n ** 0.5
    assert ((draws.mean(0) - want).abs() <= 5 * se + 1e-12).all()
    u = torch.rand(50, 6, generator=g, dtype=torch.float64)
    xs = torch.randn(50, 6, generator=g, dtype=torch.float64)
    assert torch.equal(Q.binarize_stochastic(xs, noise=u), Q.binarize_stochastic_reference(xs, u))


def test_bad_bits_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="bit width"):
        Q.quantize_linear(torch.zeros(2), 1)
    with pytest.raises(ConfigError, match="w4a4"):
        parse_quant("4bit")
    with pytest.raises(ConfigError, match="1-8 or 32"):
        parse_quant("w9a4")
    with pytest.raises(ConfigError, match="no quantization sites"):
        build_layer("sr_gru", 3, 4, quant="w4a4")
    with pytest.raises(ConfigError, match="no quantization sites"):
        seqzoo.create_model("nc_gru", layer_kwargs={"quant": "w4a4"})
    with pytest.raises(ConfigError, match="bounded"):
        build_layer("rnn_relu", 3, 4, quant="w4a4")


# ----- injection ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("quant", ["w4a4", "w1a1", "w2a32"])
def test_quantized_cells_sequence_equals_steps_and_weights_are_quantized(kind: str, quant: str) -> None:
    torch.manual_seed(0)
    layer = build_layer(kind, 5, 6, quant=quant).double()
    x = torch.randn(3, 5, 5, dtype=torch.float64)
    y, _ = layer(x)
    state, ys = None, []
    for t in range(x.shape[1]):
        yt, state = layer.step(x[:, t], state)
        ys.append(yt)
    torch.testing.assert_close(y, torch.stack(ys, 1), rtol=1e-12, atol=1e-12)
    spec = parse_quant(quant)
    w = layer.cell.quantized_weight("weight_hh").detach()
    per_row = [r.unique().numel() for r in w]
    assert max(per_row) <= (2 if spec.weight_bits == 1 else 2 ** spec.weight_bits - 1)
    if spec.act_bits < 32:  # the hidden state takes at most 2^k values
        assert y.unique().numel() <= 2 ** spec.act_bits
    y.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


def test_float_quant_sites_leave_the_cell_unchanged() -> None:
    torch.manual_seed(0)
    a = build_layer("lstm", 4, 5)
    torch.manual_seed(0)
    b = build_layer("lstm", 4, 5, quant="w32a32")
    x = torch.randn(2, 6, 4)
    assert torch.equal(a(x)[0], b(x)[0])


@pytest.mark.parametrize("norm", [None, "layer"])
@pytest.mark.parametrize("native", [True, False])
def test_lstm_weight_only_quant_fast_path_matches_generic_loop(native: bool, norm: str | None) -> None:
    """W4/A32 takes the fused LSTM path (C kernels when built) on the quantized weights: equal to the per-step loop,
    and its gradients reach the shadow weights like the loop's."""
    from seqzoo.ops import native_kernels

    native_kernels.set_enabled(native)
    try:
        torch.manual_seed(0)
        layer = build_layer("lstm", 6, 8, quant="w4a32", norm=norm)
        x = torch.randn(4, 9, 6)
        assert layer.cell.sequence_inputs(x, layer.init_state(4), None) is not None  # the fused path applies
        y, _ = layer(x)
        y.pow(2).sum().backward()
        g_fast = [p.grad.clone() for p in layer.parameters()]
        layer.zero_grad()
        state, ys = None, []
        for t in range(x.shape[1]):
            yt, state = layer.step(x[:, t], state)
            ys.append(yt)
        y_loop = torch.stack(ys, 1)
        torch.testing.assert_close(y, y_loop, rtol=1e-5, atol=1e-6)
        y_loop.pow(2).sum().backward()
        for gf, p in zip(g_fast, layer.parameters()):
            torch.testing.assert_close(gf, p.grad, rtol=1e-4, atol=1e-5)
        # quantized activations: the fused paths step aside
        act = build_layer("lstm", 6, 8, quant="w4a4")
        assert act.cell.sequence_inputs(x, act.init_state(4), None) is None
        assert act.cell.sequence(act.cell.project_inputs(x), act.init_state(4), None) is None
    finally:
        native_kernels.set_enabled(None)


def test_linear_and_conv1d_sites() -> None:
    torch.manual_seed(0)
    lin = Linear(10, 4, quant="w1a1")
    x = torch.randn(3, 10, requires_grad=True)
    y = lin(x)
    alpha = lin.weight.abs().mean(1, keepdim=True)
    want = torch.nn.functional.linear(Q.binarize(x.detach().clamp(-1, 1)), Q.binarize(lin.weight.detach()) * alpha,
                                      lin.bias)
    torch.testing.assert_close(y, want)
    y.sum().backward()
    assert torch.equal(x.grad == 0, x.detach().abs() > 1)  # STE cancellation on the input site
    conv = Conv1d(3, 5, 3, padding=1, quant="w2a2")
    out = conv(torch.rand(2, 3, 7) * 2 - 1)
    assert out.shape == (2, 5, 7)
    assert shadow_weights(conv) == [conv.weight]
    assert shadow_weights(Linear(3, 3)) == []


def test_shadow_weight_clip_hook() -> None:
    torch.manual_seed(0)
    model = seqzoo.create_model("mlp_q", seq_len=8, d_input=8, d_model=16, n_layers=2)
    hooks = quantization_hooks(model)
    assert len(hooks) == 1 and isinstance(hooks[0], ShadowWeightClip)
    assert quantization_hooks(model, hooks) == []  # already there
    assert quantization_hooks(seqzoo.create_model("mlp")) == []
    opt = torch.optim.SGD(model.parameters(), lr=50.0)
    for _ in range(3):
        opt.zero_grad()
        out, _ = model(torch.randn(16, 8, 8))
        torch.nn.functional.cross_entropy(out, torch.randint(0, 10, (16,))).backward()
        opt.step()
        hooks[0].after_step(None, model)
        for p in shadow_weights(model):
            assert p.abs().max() <= 1.0
    head = model.head.weight  # the float head is not a shadow weight
    assert all(p is not head for p in shadow_weights(model))


def test_trainer_installs_the_clip_and_shadow_weights_stay_in_range(tmp_path) -> None:
    from seqzoo.training import Trainer, load_run

    config = {"steps": 4, "eval_every": 4, "batch_size": 8, "eval_batch_size": 64, "progress": False,
              "tensorboard": False, "optimizer": "sgd", "lr": 30.0, "clip_norm": None}
    trainer = Trainer("lstm_q", "adding", model_args={"d_model": 6}, task_args={"seq_len": 6, "n_valid": 8,
                                                                                 "n_test": 8},
                      config=config, out=tmp_path, run_name="q")
    res = trainer.run()
    assert sum(isinstance(h, ShadowWeightClip) for h in trainer.hooks) == 1
    model = load_run(res.run_dir)
    ws = [w.detach() for w in shadow_weights(model)]
    assert len(ws) == 2 and all(w.abs().max() <= 1.0 for w in ws)
    assert max(float(w.abs().max()) for w in ws) == 1.0  # lr 30 pushed some to the bound: the clip did work


def test_sequence_model_quant_argument_like_norm() -> None:
    fp = seqzoo.create_model("lstm_q", vocab_size=11, d_input=None, d_output=11, d_model=6, quant=None)
    assert fp.layers[0].cell.quant.is_identity
    q = seqzoo.create_model("lstm", vocab_size=11, d_input=None, d_output=11, d_model=6, quant="w2a2")
    assert q.layers[0].cell.quant.spec.name == "w2a2"
    assert shadow_weights(q) == [q.layers[0].cell.weight_ih, q.layers[0].cell.weight_hh]  # embedding, head: float
    with pytest.raises(ConfigError, match="disagree"):
        seqzoo.create_model("lstm", quant="w2a2", layer_kwargs={"quant": "w4a4"})
    with pytest.raises(ConfigError, match="no quantization sites"):
        seqzoo.create_model("s5", quant="w4a4")

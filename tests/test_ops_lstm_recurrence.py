"""The fast LSTM loop (hand-written backward through time) against its slow twin and torch.nn.LSTM."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqzoo.ops import gemm, lstm_chunks
from seqzoo.ops.lstm_recurrence import lstm_layer, lstm_sequence, lstm_sequence_reference

TOL = {torch.float64: 1e-10, torch.float32: 2e-5}


@pytest.fixture(autouse=True, params=["onednn", "aten"])
def gemm_backend(request):
    """Every test runs with the oneDNN GEMM route (float32) and with ATen's own mm."""
    if request.param == "onednn" and not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no oneDNN")
    gemm.set_backend(request.param)
    yield request.param
    gemm.set_backend(None)


def _inputs(bsz, seq_len, hidden, dtype, *, bias=True, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    xp = torch.randn(bsz, seq_len, 4 * hidden, dtype=dtype, generator=g)
    h0 = torch.randn(bsz, hidden, dtype=dtype, generator=g)
    c0 = torch.randn(bsz, hidden, dtype=dtype, generator=g)
    w = torch.randn(4 * hidden, hidden, dtype=dtype, generator=g) / hidden**0.5
    b = torch.randn(4 * hidden, dtype=dtype, generator=g) if bias else None
    tensors = [xp, h0, c0, w] + ([b] if bias else [])
    for t in tensors:
        t.requires_grad_(grad)
    return xp, h0, c0, w, b


def _right_padding(lengths, seq_len):
    return torch.arange(seq_len) < torch.tensor(lengths).unsqueeze(1)


def _outputs_and_grads(fn, args, mask, seed=1):
    """Outputs (ys, h_T, c_T) and the gradients of a random projection of all three w.r.t. every input."""
    ys, h, c = fn(*args, mask)
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, dtype=o.dtype, generator=g)).sum() for o in (ys, h, c))
    inputs = [a for a in args if a is not None]
    return [ys, h, c], list(torch.autograd.grad(loss, inputs))


def _assert_close_all(got, want, tol, what):
    for k, (a, b) in enumerate(zip(got, want)):
        err = (a - b).abs().max().item()
        assert err <= tol * max(1.0, b.abs().max().item()), f"{what}[{k}]: max error {err:.2e} > {tol:.0e}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("padded", [False, True])
def test_fast_matches_reference(dtype, bias, padded):
    bsz, seq_len, hidden = 4, 9, 6
    args = _inputs(bsz, seq_len, hidden, dtype, bias=bias)
    mask = _right_padding([9, 5, 1, 7], seq_len) if padded else None
    out_f, grad_f = _outputs_and_grads(lstm_sequence, args, mask)
    out_r, grad_r = _outputs_and_grads(lstm_sequence_reference, args, mask)
    _assert_close_all(out_f, out_r, TOL[dtype], "outputs")
    _assert_close_all(grad_f, grad_r, TOL[dtype], "grads (xp, h0, c0, w_hh, b_hh)")
    assert len(grad_f) == (5 if bias else 4)


@pytest.mark.parametrize("padded", [False, True])
def test_chunked_activations_match_reference(monkeypatch, padded):
    """Several saved-activation chunks (and inference workspace chunks), the last one shorter."""
    bsz, seq_len, hidden = 3, 11, 4
    item = torch.float64.itemsize
    monkeypatch.setattr(lstm_chunks, "TRAIN_CHUNK_BYTES", bsz * 4 * hidden * item * 3)  # 3 steps a chunk
    monkeypatch.setattr(lstm_chunks, "INFER_CHUNK_BYTES", bsz * 4 * hidden * item * 2)
    args = _inputs(bsz, seq_len, hidden, torch.float64)
    mask = _right_padding([11, 4, 7], seq_len) if padded else None
    out_f, grad_f = _outputs_and_grads(lstm_sequence, args, mask)
    out_r, grad_r = _outputs_and_grads(lstm_sequence_reference, args, mask)
    _assert_close_all(out_f, out_r, 1e-10, "outputs")
    _assert_close_all(grad_f, grad_r, 1e-10, "grads")
    with torch.no_grad():
        _assert_close_all(lstm_sequence(*args, mask), out_r, 1e-10, "no-grad outputs")


@pytest.mark.parametrize("padded", [False, True])
def test_inference_path_matches_training_path(padded):
    args = _inputs(3, 8, 5, torch.float64)
    mask = _right_padding([8, 3, 6], 8) if padded else None
    with_grad = lstm_sequence(*args, mask)
    assert all(o.requires_grad for o in with_grad)
    with torch.no_grad():
        no_grad = lstm_sequence(*args, mask)
    assert not any(o.requires_grad for o in no_grad)
    _assert_close_all(no_grad, [o.detach() for o in with_grad], 1e-12, "no-grad vs grad")
    # The inputs are left untouched (the loop works on its own buffers).
    fresh = _inputs(3, 8, 5, torch.float64)
    for a, b in zip(args, fresh):
        assert torch.equal(a, b)


def test_padding_semantics():
    """Padded steps carry (h, c); a sequence of length 0 returns h0, c0 everywhere."""
    args = _inputs(3, 6, 4, torch.float64, grad=False)
    mask = _right_padding([6, 2, 0], 6)
    ys, h, c = lstm_sequence(*args, mask)
    assert torch.equal(ys[1, 2:], ys[1, 1].expand(4, -1))
    assert torch.equal(h[1], ys[1, 1])
    assert torch.equal(ys[2], args[1][2].expand(6, -1))
    assert torch.equal(h[2], args[1][2]) and torch.equal(c[2], args[2][2])
    short, h_s, c_s = lstm_sequence(args[0][1:2, :2], args[1][1:2], args[2][1:2], args[3], args[4])
    assert torch.allclose(h_s[0], h[1], atol=1e-14) and torch.allclose(c_s[0], c[1], atol=1e-14)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck(padded, bias):
    args = _inputs(2, 4, 3, torch.float64, bias=bias)
    mask = _right_padding([4, 2], 4) if padded else None
    assert torch.autograd.gradcheck(lambda *a: lstm_sequence(*a, mask), tuple(a for a in args if a is not None)
                                    if bias else args[:4] + (None,), eps=1e-6, atol=1e-7)


def test_partial_gradients_and_unused_outputs():
    xp, h0, c0, w, b = _inputs(3, 5, 4, torch.float64, grad=False)
    w.requires_grad_(True)
    _, _, c = lstm_sequence(xp, h0, c0, w, b)
    (gw,) = torch.autograd.grad(c.sum(), [w])  # only the final cell state is used
    _, _, c_ref = lstm_sequence_reference(xp, h0, c0, w, b)
    (gw_ref,) = torch.autograd.grad(c_ref.sum(), [w])
    assert torch.allclose(gw, gw_ref, atol=1e-12)
    xp.requires_grad_(True)
    ys, _, _ = lstm_sequence(xp, h0, c0, w, b)
    gx, gw = torch.autograd.grad(ys.sum(), [xp, w])  # expanded (broadcast) output gradient
    ys_r, _, _ = lstm_sequence_reference(xp, h0, c0, w, b)
    gx_r, gw_r = torch.autograd.grad(ys_r.sum(), [xp, w])
    assert torch.allclose(gx, gx_r, atol=1e-12) and torch.allclose(gw, gw_r, atol=1e-12)


def test_double_backward_is_a_clear_error():
    xp, h0, c0, w, b = _inputs(2, 3, 2, torch.float64)
    ys, _, _ = lstm_sequence(xp, h0, c0, w, b)
    (gx,) = torch.autograd.grad((ys**2).sum(), [xp], create_graph=True)  # grad output depends on w
    with pytest.raises(RuntimeError, match="once_differentiable|differentiate twice"):
        gx.sum().backward()


@pytest.mark.parametrize("padded", [False, True])
def test_matches_torch_lstm_with_copied_weights(padded):
    torch.manual_seed(0)
    bsz, seq_len, d_in, hidden = 4, 10, 5, 7
    ref = torch.nn.LSTM(d_in, hidden, batch_first=True).double()
    x = torch.randn(bsz, seq_len, d_in, dtype=torch.float64)
    h0 = torch.randn(1, bsz, hidden, dtype=torch.float64)
    c0 = torch.randn(1, bsz, hidden, dtype=torch.float64)
    lengths = [10, 3, 7, 1] if padded else [seq_len] * bsz
    mask = _right_padding(lengths, seq_len) if padded else None
    if padded:
        packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
        y_ref, (h_ref, c_ref) = ref(packed, (h0, c0))
        y_ref, _ = pad_packed_sequence(y_ref, batch_first=True, total_length=seq_len)
    else:
        y_ref, (h_ref, c_ref) = ref(x, (h0, c0))
    xp = torch.nn.functional.linear(x, ref.weight_ih_l0, ref.bias_ih_l0)
    ys, h, c = lstm_sequence(xp, h0[0], c0[0], ref.weight_hh_l0, ref.bias_hh_l0, mask)
    real = _right_padding(lengths, seq_len).unsqueeze(-1)
    assert torch.allclose(ys * real, y_ref * real, atol=1e-12)  # torch zeroes padded outputs; seqzoo carries h
    assert torch.allclose(h, h_ref[0], atol=1e-12) and torch.allclose(c, c_ref[0], atol=1e-12)
    # Gradients w.r.t. the shared parameters agree too (on the real positions).
    g = torch.randn(ys.shape, dtype=torch.float64)
    ours = torch.autograd.grad((ys * real * g).sum() + h.sum(), list(ref.parameters()))
    theirs = torch.autograd.grad((y_ref * real * g).sum() + h_ref.sum(), list(ref.parameters()))
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("native", [True, False], ids=["c-kernels", "no-c-kernels"])
def test_lstm_layer_uses_fast_path_and_matches_torch(native, monkeypatch):
    import seqzoo
    from seqzoo.ops import native_kernels

    if native and native_kernels.load("norm_lstm_step") is None:
        pytest.skip("the C++ step kernel could not be built here")
    monkeypatch.setattr(native_kernels, "_enabled_override", native)

    torch.manual_seed(0)
    layer = seqzoo.create_model("lstm", d_input=5, d_model=6, encoder="none", d_output=1).layers[0].double()
    ref = torch.nn.LSTM(5, 6, batch_first=True).double()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(ref, f"{name}_l0").copy_(getattr(layer.cell, name))
    x = torch.randn(3, 8, 5, dtype=torch.float64)
    y, (h, c) = layer(x)
    y_ref, (h_ref, c_ref) = ref(x)
    assert torch.allclose(y, y_ref, atol=1e-12) and torch.allclose(c, c_ref[0], atol=1e-12)
    # plain cells take the C chunk kernels with identity sites, or else lstm_layer (projection inside the loop)
    want = "NormLSTMSequence"  # one loop for plain, LN and ATN cells, with or without the C kernels
    assert y.grad_fn is not None and want in type(y.grad_fn).__name__


def test_autocast_runs_recurrence_in_float32():
    args = _inputs(2, 5, 4, torch.float32, grad=False)
    want = lstm_sequence(*args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = lstm_sequence(args[0].bfloat16(), *args[1:])
    assert all(o.dtype == torch.float32 for o in got)
    _assert_close_all(got, want, 2e-2, "autocast")


def test_noncontiguous_inputs():
    xp, h0, c0, w, b = _inputs(3, 6, 4, torch.float64, grad=False)
    xp_t = xp.transpose(0, 1).contiguous().transpose(0, 1)  # same values, time-major memory
    w_t = w.t().contiguous().t()
    _assert_close_all(lstm_sequence(xp_t, h0, c0, w_t, b), lstm_sequence_reference(xp, h0, c0, w, b), 1e-12, "out")


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: (a[0][0],) + a[1:], "xp must have shape"),
        (lambda a: (a[0][..., :-1],) + a[1:], "xp last dimension"),
        (lambda a: (a[0][:, :0],) + a[1:], "seq_len must be at least 1"),
        (lambda a: (a[0], a[1][:1]) + a[2:], "h0 must have shape"),
        (lambda a: a[:3] + (a[3][:, :-1], a[4]), "weight_hh must have shape"),
        (lambda a: a[:4] + (a[4][:-1],), "bias_hh must have shape"),
        (lambda a: (a[0].float(),) + a[1:], "share one floating dtype"),
    ],
)
def test_bad_input_is_a_clear_error(change, match):
    args = _inputs(2, 3, 4, torch.float64, grad=False)
    with pytest.raises((ValueError, TypeError), match=match):
        lstm_sequence(*change(args))


def test_bad_mask_shape_is_a_clear_error():
    args = _inputs(2, 3, 4, torch.float64, grad=False)
    with pytest.raises(ValueError, match="mask must have shape"):
        lstm_sequence(*args, torch.ones(2, 4, dtype=torch.bool))


# ----- lstm_layer: the same loop with the input projection fused in ------------------------------------------


def _layer_inputs(bsz, seq_len, d_in, hidden, dtype, *, bias=True, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(bsz, seq_len, d_in, dtype=dtype, generator=g)
    w_ih = torch.randn(4 * hidden, d_in, dtype=dtype, generator=g) / d_in**0.5
    b_ih = torch.randn(4 * hidden, dtype=dtype, generator=g) if bias else None
    _, h0, c0, w_hh, b_hh = _inputs(bsz, seq_len, hidden, dtype, bias=bias, seed=seed + 1, grad=grad)
    for t in (x, w_ih, b_ih):
        if t is not None:
            t.requires_grad_(grad)
    return x, w_ih, b_ih, h0, c0, w_hh, b_hh


def _layer_reference(x, w_ih, b_ih, h0, c0, w_hh, b_hh, mask=None):
    return lstm_sequence_reference(torch.nn.functional.linear(x, w_ih, b_ih), h0, c0, w_hh, b_hh, mask)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("padded", [False, True])
def test_layer_matches_reference(monkeypatch, dtype, bias, padded):
    bsz, seq_len, d_in, hidden = 3, 10, 5, 4
    monkeypatch.setattr(lstm_chunks, "TRAIN_CHUNK_BYTES", bsz * 4 * hidden * dtype.itemsize * 4)  # 4 steps a chunk
    monkeypatch.setattr(lstm_chunks, "INFER_CHUNK_BYTES", bsz * 4 * hidden * dtype.itemsize * 3)
    args = _layer_inputs(bsz, seq_len, d_in, hidden, dtype, bias=bias)
    mask = _right_padding([10, 6, 1], seq_len) if padded else None
    out_f, grad_f = _outputs_and_grads(lstm_layer, args, mask)
    out_r, grad_r = _outputs_and_grads(_layer_reference, args, mask)
    _assert_close_all(out_f, out_r, TOL[dtype], "outputs")
    _assert_close_all(grad_f, grad_r, TOL[dtype], "grads (x, w_ih, b_ih, h0, c0, w_hh, b_hh)")
    with torch.no_grad():
        _assert_close_all(lstm_layer(*args, mask), out_r, TOL[dtype], "no-grad outputs")


def test_layer_one_bias_and_partial_grads():
    x, w_ih, b_ih, h0, c0, w_hh, _ = _layer_inputs(2, 6, 3, 4, torch.float64, grad=False)
    w_ih.requires_grad_(True)
    b_ih.requires_grad_(True)
    ys, _, c = lstm_layer(x, w_ih, b_ih, h0, c0, w_hh, None)
    ys_r, _, c_r = _layer_reference(x, w_ih, b_ih, h0, c0, w_hh, None)
    got = torch.autograd.grad(ys.sum() + c.sum(), [w_ih, b_ih])
    want = torch.autograd.grad(ys_r.sum() + c_r.sum(), [w_ih, b_ih])
    _assert_close_all([ys, *got], [ys_r, *want], 1e-10, "one bias")


@pytest.mark.parametrize("padded", [False, True])
def test_layer_gradcheck(padded):
    args = _layer_inputs(2, 4, 3, 2, torch.float64)
    mask = _right_padding([4, 2], 4) if padded else None
    assert torch.autograd.gradcheck(lambda *a: lstm_layer(*a, mask), args, eps=1e-6, atol=1e-7)


def test_layer_bad_weight_ih_is_a_clear_error():
    x, w_ih, b_ih, h0, c0, w_hh, b_hh = _layer_inputs(2, 3, 3, 4, torch.float64, grad=False)
    with pytest.raises(ValueError, match="weight_ih must have shape"):
        lstm_layer(x, w_ih[:, :-1], b_ih, h0, c0, w_hh, b_hh)
    with pytest.raises(ValueError, match="bias_ih must have shape"):
        lstm_layer(x, w_ih, b_ih[:-1], h0, c0, w_hh, b_hh)

"""The fused LSTM loop with LN/ATN/identity sites (``ops.lstm_loop``) against its autograd reference twin."""

from __future__ import annotations

import pytest
import torch

import seqzoo
from seqzoo.ops import lstm_chunks, lstm_loop, native_kernels
from seqzoo.ops.lstm_loop import norm_lstm_sequence
from seqzoo.ops.lstm_reference import norm_lstm_sequence_reference
from seqzoo.ops.lstm_sites import IDENTITY_SITE, SiteNorm
from seqzoo.ops.window_norm import window_init_state

B, I, H = 3, 5, 4
DT = torch.float64


@pytest.fixture(autouse=True, params=["native", "torch-ops"])
def step_backend(request):
    """Every test runs twice: with the C step kernel (``csrc/norm_lstm_step.cpp``) and with the torch-op loop."""
    if request.param == "native" and native_kernels.load("norm_lstm_step") is None:
        pytest.skip("the C++ step kernel could not be built here (no compiler?)")
    native_kernels.set_enabled(request.param == "native")
    yield request.param
    native_kernels.set_enabled(None)


def _setup(kind: str, seq_len: int, project: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=DT).requires_grad_()

    x = r(B, seq_len, I if project else 4 * H)
    w = {"weight_hh": r(4 * H, H), "bias_hh": r(4 * H), "h0": r(B, H), "c0": r(B, H)}
    proj = {"weight_ih": r(4 * H, I), "bias_ih": r(4 * H)} if project else {}
    if kind == "plain":  # every site the identity: the plain LSTM through the fused loop
        return x, w, proj, {"x": IDENTITY_SITE, "h": IDENTITY_SITE, "c": IDENTITY_SITE}
    if kind == "partial":  # LayerNorm on the recurrent term only
        return x, w, proj, {"x": IDENTITY_SITE, "h": SiteNorm(None, r(4 * H), r(4 * H)), "c": IDENTITY_SITE}
    win = {"ln": None, "atn": 3, "mixed": 2}[kind]
    norms = {"x": SiteNorm(win, r(4 * H), r(4 * H)), "h": SiteNorm(None if kind == "mixed" else win, r(4 * H),
                                                                      r(4 * H)),
             "c": SiteNorm(win, r(H), r(H))}
    return x, w, proj, norms


def _params(x, w, proj, norms):
    return [x, *w.values(), *proj.values(), *(t for n in norms.values() for t in (n.weight, n.bias) if t is not None)]


def _run(fn, x, w, proj, norms, mask=None, states=None):
    hs, h, c, st = fn(x, w["h0"], w["c0"], w["weight_hh"], w["bias_hh"], norms, mask, states, **proj)
    weights = torch.linspace(-1, 1, hs.numel(), dtype=DT).view_as(hs)
    loss = (hs * weights).sum() + (h ** 2).sum() + 0.3 * c.sum()
    grads = torch.autograd.grad(loss, _params(x, w, proj, norms))
    return (hs.detach(), h.detach(), c.detach()), grads, st


@pytest.fixture(params=[False, True], ids=["whole-chunk", "2-step-chunks"])
def small_chunks(request, monkeypatch):
    if request.param:  # force chunks of about two steps so chunk boundaries are crossed
        budget = 2 * B * (2 * 4 * H + H) * 8
        monkeypatch.setattr(lstm_chunks, "TRAIN_CHUNK_BYTES", budget)
        monkeypatch.setattr(lstm_chunks, "INFER_CHUNK_BYTES", budget)
    return request.param


@pytest.mark.parametrize("kind", ["ln", "atn", "mixed", "plain", "partial"])
@pytest.mark.parametrize("project", [False, True], ids=["projected", "raw-input"])
def test_fast_equals_reference(kind, project, small_chunks):
    x, w, proj, norms = _setup(kind, 9, project)
    ref = _run(norm_lstm_sequence_reference, x, w, proj, norms)
    fast = _run(norm_lstm_sequence, x, w, proj, norms)
    for a, b in zip(ref[0], fast[0]):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)
    for a, b in zip(ref[1], fast[1]):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9)
    assert sorted(ref[2]) == sorted(fast[2])
    for site in ref[2]:
        for a, b in zip(ref[2][site], fast[2][site]):
            torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", ["ln", "plain", "partial"])
def test_layernorm_with_padding(kind, small_chunks):
    x, w, proj, norms = _setup(kind, 9, True)
    mask = torch.ones(B, 9, dtype=torch.bool)
    mask[0, 6:] = False
    mask[1, 2:] = False
    ref = _run(norm_lstm_sequence_reference, x, w, proj, norms, mask)
    fast = _run(norm_lstm_sequence, x, w, proj, norms, mask)
    for a, b in zip((*ref[0], *ref[1]), (*fast[0], *fast[1])):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9)


def test_atn_incoming_window_states_and_no_grad(small_chunks):
    """A carried (non-fresh) ATN window, and the inference path that keeps nothing for backward."""
    x, w, proj, norms = _setup("atn", 8, True)
    _, _, _, st = norm_lstm_sequence_reference(x[:, :4], w["h0"], w["c0"], w["weight_hh"], w["bias_hh"], norms,
                                               weight_ih=proj["weight_ih"], bias_ih=proj["bias_ih"])
    st = {k: tuple(t.detach() for t in v) for k, v in st.items()}
    ref = _run(norm_lstm_sequence_reference, x, w, proj, norms, states=st)
    fast = _run(norm_lstm_sequence, x, w, proj, norms, states=st)
    for a, b in zip((*ref[0], *ref[1]), (*fast[0], *fast[1])):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9)
    with torch.no_grad():
        hs, h, c, out = norm_lstm_sequence(x, w["h0"], w["c0"], w["weight_hh"], w["bias_hh"], norms, None, st,
                                           **proj)
    torch.testing.assert_close(hs, ref[0][0])
    torch.testing.assert_close(c, ref[0][2])
    for site in ref[2]:
        for a, b in zip(ref[2][site], out[site]):
            torch.testing.assert_close(b, a.detach())


def test_float32_close_to_reference():
    torch.manual_seed(1)
    x = torch.randn(4, 40, 4 * 16)
    weight_hh, bias_hh = torch.randn(64, 16) * 0.3, torch.randn(64)
    h0, c0 = torch.zeros(4, 16), torch.zeros(4, 16)
    norms = {"h": SiteNorm(None, torch.ones(64), torch.zeros(64)), "c": SiteNorm(None, torch.ones(16), None)}
    a = norm_lstm_sequence_reference(x, h0, c0, weight_hh, bias_hh, norms)[0]
    b = norm_lstm_sequence(x, h0, c0, weight_hh, bias_hh, norms)[0]
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["ln", "atn"])
def test_float32_gradients_close_to_float64_reference(kind):
    """The float32 fast path (oneDNN GEMMs, C step kernel or torch ops) against the float64 reference twin."""
    g = torch.Generator().manual_seed(3)
    bsz, seq_len, d_in, hidden = 5, 37, 12, 24
    x = torch.randn(bsz, seq_len, d_in, generator=g)
    params = {"weight_ih": torch.randn(4 * hidden, d_in, generator=g) * 0.3, "bias_ih": torch.randn(4 * hidden,
                                                                                                  generator=g) * 0.1}
    w_hh, b_hh = torch.randn(4 * hidden, hidden, generator=g) * 0.2, torch.randn(4 * hidden, generator=g) * 0.1
    win = None if kind == "ln" else 4
    aff = {s: (1 + 0.1 * torch.randn(f, generator=g), 0.1 * torch.randn(f, generator=g))
           for s, f in (("x", 4 * hidden), ("h", 4 * hidden), ("c", hidden))}

    def run(fn, dtype):
        leaves = [t.to(dtype).requires_grad_() for t in (x, params["weight_ih"], params["bias_ih"], w_hh, b_hh)]
        norm_leaves = {s: (w.to(dtype).requires_grad_(), b.to(dtype).requires_grad_()) for s, (w, b) in aff.items()}
        norms = {s: SiteNorm(win, *wb) for s, wb in norm_leaves.items()}
        h0 = torch.zeros(bsz, hidden, dtype=dtype)
        hs, h, c, _ = fn(leaves[0], h0, h0, leaves[3], leaves[4], norms, weight_ih=leaves[1], bias_ih=leaves[2])
        loss = (hs * torch.linspace(-1, 1, hs.numel(), dtype=dtype).view_as(hs)).sum() + c.sum()
        all_leaves = leaves + [t for wb in norm_leaves.values() for t in wb]
        return hs.detach().double(), [t.double() for t in torch.autograd.grad(loss, all_leaves)]

    ref_hs, ref_grads = run(norm_lstm_sequence_reference, torch.float64)
    hs, grads = run(norm_lstm_sequence, torch.float32)
    torch.testing.assert_close(hs, ref_hs, rtol=0, atol=2e-5)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=2e-4, atol=2e-4 * max(1.0, want.abs().max().item()))


@pytest.mark.parametrize("kind", ["ln", "atn", "mixed"])
def test_two_threads_match_reference(kind, step_backend):
    """With 2 threads the C kernels split rows and GEMM columns over OpenMP threads; results must not change."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        g = torch.Generator().manual_seed(5)
        bsz, seq_len, hidden = 9, 13, 32  # 4H = 128: two 64-column tiles, one per thread
        x = torch.randn(bsz, seq_len, 4 * hidden, generator=g, dtype=DT).requires_grad_()
        w = {"weight_hh": (torch.randn(4 * hidden, hidden, generator=g, dtype=DT) * 0.3).requires_grad_(),
             "bias_hh": torch.randn(4 * hidden, generator=g, dtype=DT).requires_grad_(),
             "h0": torch.randn(bsz, hidden, generator=g, dtype=DT).requires_grad_(),
             "c0": torch.randn(bsz, hidden, generator=g, dtype=DT).requires_grad_()}
        win = {"ln": None, "atn": 3, "mixed": 2}[kind]
        norms = {"x": SiteNorm(win, torch.randn(4 * hidden, generator=g, dtype=DT).requires_grad_(),
                               torch.randn(4 * hidden, generator=g, dtype=DT).requires_grad_()),
                 "h": SiteNorm(None if kind == "mixed" else win,
                               torch.randn(4 * hidden, generator=g, dtype=DT).requires_grad_(),
                               torch.randn(4 * hidden, generator=g, dtype=DT).requires_grad_()),
                 "c": SiteNorm(win, torch.randn(hidden, generator=g, dtype=DT).requires_grad_(),
                               torch.randn(hidden, generator=g, dtype=DT).requires_grad_())}
        proj: dict = {}
        ref = _run(norm_lstm_sequence_reference, x, w, proj, norms)
        fast = _run(norm_lstm_sequence, x, w, proj, norms)
        for a, b in zip(ref[0] + ref[1], fast[0] + fast[1]):
            torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("kind", ["plain", "ln"])
def test_float32_saturated_gates_stay_finite(kind):
    """Huge pre-activations saturate every gate; the C kernels' sigmoid must give 0/1, never NaN."""
    g = torch.Generator().manual_seed(2)
    bsz, seq_len, d_in, hidden = 6, 25, 8, 16
    x = (torch.randn(bsz, seq_len, d_in, generator=g) * 40).requires_grad_()
    w_ih = (torch.randn(4 * hidden, d_in, generator=g) * 5).requires_grad_()
    w_hh = (torch.randn(4 * hidden, hidden, generator=g) * 5).requires_grad_()
    b = (torch.randn(4 * hidden, generator=g) * 50).requires_grad_()
    if kind == "plain":
        norms = {"h": IDENTITY_SITE, "c": IDENTITY_SITE}
    else:  # a large gain makes the normalized pre-activations huge too
        norms = {"h": SiteNorm(None, torch.full((4 * hidden,), 200.0), None),
                 "c": SiteNorm(None, torch.full((hidden,), 200.0), None)}
    h0 = torch.zeros(bsz, hidden)

    def run(fn):
        hs, h, c, _ = fn(x, h0, h0, w_hh, b, norms, weight_ih=w_ih, bias_ih=b)
        grads = torch.autograd.grad((hs * hs).sum() + c.sum(), [x, w_ih, w_hh, b])
        return [hs.detach(), *grads]

    ref, fast = run(norm_lstm_sequence_reference), run(norm_lstm_sequence)
    for got, want in zip(fast, ref):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3 * max(1.0, want.abs().max().item()))


def test_identity_sites_are_the_plain_lstm():
    """All-identity sites through the fused loop equal the plain LSTM's own reference twin."""
    from seqzoo.ops.lstm_recurrence import lstm_sequence_reference

    x, w, proj, norms = _setup("plain", 11, True)
    hs, h, c, _ = norm_lstm_sequence(x, w["h0"], w["c0"], w["weight_hh"], w["bias_hh"], norms, **proj)
    xp = torch.nn.functional.linear(x, proj["weight_ih"], proj["bias_ih"])
    ref = lstm_sequence_reference(xp, w["h0"], w["c0"], w["weight_hh"], w["bias_hh"])
    for a, b in zip(ref, (hs, h, c)):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


def test_bad_input_errors():
    x, w, proj, norms = _setup("atn", 5, False)
    with pytest.raises(ValueError, match="sites 'h', 'c'"):
        norm_lstm_sequence(x, w["h0"], w["c0"], w["weight_hh"], w["bias_hh"], {"h": norms["h"]})
    with pytest.raises(ValueError, match="no mask"):
        norm_lstm_sequence(x, w["h0"], w["c0"], w["weight_hh"], w["bias_hh"], norms,
                           torch.ones(B, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(batch, seq_len>0, 16\)"):
        norm_lstm_sequence(x[..., :5], w["h0"], w["c0"], w["weight_hh"], w["bias_hh"], norms)
    states = {"h": tuple(t.requires_grad_() if t.is_floating_point() else t for t in window_init_state(B, 3, dtype=DT))}
    with pytest.raises(ValueError, match="must not require grad"):
        norm_lstm_sequence(x, w["h0"], w["c0"], w["weight_hh"], w["bias_hh"], norms, None, states)


@pytest.mark.parametrize("norm", ["layer", "atn"])
def test_cell_takes_fused_path_and_matches_generic_loop(norm, monkeypatch):
    """``seqzoo.LSTM(norm=...)`` uses the fused loop and gives the generic loop's outputs and gradients."""
    torch.manual_seed(0)
    layer = seqzoo.LSTM(6, 8, norm=norm).double()
    x = torch.randn(2, 11, 6, dtype=DT, requires_grad=True)
    calls = []
    real = lstm_loop.norm_lstm_sequence

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    import seqzoo.layers.cells.lstm as lstm_mod

    monkeypatch.setattr(lstm_mod, "norm_lstm_sequence", spy)
    y_fast, _ = layer(x)
    g_fast = torch.autograd.grad(y_fast.square().sum(), [x, *layer.parameters()])
    assert calls, "the fused loop was not used"
    cell = layer.cell if hasattr(layer, "cell") else next(m for m in layer.modules() if hasattr(m, "sequence_inputs"))
    monkeypatch.setattr(type(cell), "sequence_inputs", lambda self, *a: None)
    monkeypatch.setattr(type(cell), "sequence", lambda self, *a: None)
    calls.clear()
    y_ref, _ = layer(x)
    g_ref = torch.autograd.grad(y_ref.square().sum(), [x, *layer.parameters()])
    assert not calls
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("norm", ["layer", "atn"])
def test_bf16_autocast_forward_and_step(norm):
    """Under CPU bf16 autocast the fused loop and ``step`` run (ATN window sums stay float32) and stay close."""
    torch.manual_seed(0)
    layer = seqzoo.LSTM(6, 8, norm=norm).recurrent_l0
    x = torch.randn(2, 5, 6)
    ref, _ = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = layer(x)
        state = None
        steps = []
        for t in range(5):
            h, state = layer.step(x[:, t], state)
            steps.append(h)
    torch.testing.assert_close(y.float(), ref, rtol=0.05, atol=0.05)
    torch.testing.assert_close(torch.stack(steps, 1).float(), ref, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("kind", ["plain", "ln", "atn"])
def test_backward_twice_with_retain_graph(kind):
    """A retained graph can be differentiated again with the same result (the sites outlive the first backward)."""
    x, w, proj, norms = _setup(kind, 9, True)
    hs, h, c, _ = norm_lstm_sequence(x, w["h0"], w["c0"], w["weight_hh"], w["bias_hh"], norms, **proj)
    loss = (hs * hs).sum() + c.sum()
    params = _params(x, w, proj, norms)
    first = torch.autograd.grad(loss, params, retain_graph=True)
    second = torch.autograd.grad(loss, params)
    for a, b in zip(first, second):
        torch.testing.assert_close(b, a, rtol=0, atol=0)

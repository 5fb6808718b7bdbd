"""IEEE semantics of the C LSTM kernels (``ops/csrc/norm_lstm_step.cpp``): NaN/Inf propagate exactly as on the
torch-op path and in ``torch.nn.LSTM``, extreme finite values agree, and loading the library leaves the process's
FP mode alone (no flush-to-zero / denormals-are-zero).

Every comparison runs the same module twice, with the C kernels on and off (``native_kernels.set_enabled``), and
checks that outputs and gradients have the same NaN, +Inf and -Inf positions and agree where finite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest
import torch

import seqzoo
from seqzoo.ops import native_kernels

B, L, I, H = 3, 7, 5, 6
NORMS = [None, "layer", "atn"]
PRESETS = ["lstm", "lstm_ln", "lstm_atn"]


@pytest.fixture(autouse=True)
def _restore_native():
    yield
    native_kernels.set_enabled(None)


def _need_kernels() -> None:
    native_kernels.set_enabled(True)
    if native_kernels.load("norm_lstm_step") is None:
        pytest.skip("the C++ LSTM kernels could not be built here (no C++ compiler)")


def _assert_same(got: torch.Tensor, want: torch.Tensor, what: str, rtol: float = 1e-4) -> None:
    """Same NaN / +Inf / -Inf positions, and the finite entries close."""
    for pred in (torch.isnan, torch.isposinf, torch.isneginf):
        a, b = pred(got), pred(want)
        assert torch.equal(a, b), (f"{what}: {pred.__name__} pattern differs ({int(a.sum())} vs {int(b.sum())} "
                                   f"entries)")
    fin = torch.isfinite(want)
    if fin.any():
        scale = max(1.0, want[fin].abs().max().item())
        torch.testing.assert_close(got[fin], want[fin], rtol=rtol, atol=rtol * scale, msg=lambda m: f"{what}: {m}")


Poison = Callable[[dict[str, torch.Tensor]], None]


def _nan_at(name: str, value: float) -> Poison:
    def poison(t: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            flat = t[name].view(-1)
            flat[flat.numel() // 3] = value

    poison.__name__ = f"{name}={value}"
    return poison


POISONS = [_nan_at(n, v) for n, v in [("x", float("nan")), ("x", float("inf")), ("x", -float("inf")),
                                        ("weight_hh_l0", float("nan")), ("weight_ih_l0", float("inf")),
                                        ("bias_hh_l0", -float("inf")), ("h0", float("nan")), ("c0", float("inf")),
                                        ("c0", -float("inf"))]]


def _dropin_run(norm: str | None, native: bool, poison: Poison | None, scale: float = 1.0,
                dtype: torch.dtype = torch.float32) -> list[tuple[str, torch.Tensor]]:
    """Outputs and all gradients of ``seqzoo.LSTM(..., impl="seqzoo", norm=norm)`` with one entry poisoned."""
    native_kernels.set_enabled(native)
    torch.manual_seed(0)
    kwargs = {"norm_kwargs": {"k": 3}} if norm == "atn" else {}
    m = seqzoo.LSTM(I, H, batch_first=True, norm=norm, impl="seqzoo", **kwargs).to(dtype)
    t = {"x": torch.randn(B, L, I, dtype=dtype) * scale, "h0": torch.randn(1, B, H, dtype=dtype),
         "c0": torch.randn(1, B, H, dtype=dtype)}
    t.update(dict(m.named_parameters()))
    if poison is not None:
        poison(t)
    for k in ("x", "h0", "c0"):
        t[k].requires_grad_()
    y, (h, c) = m(t["x"], (t["h0"], t["c0"]))
    weights = torch.linspace(-1, 1, y.numel(), dtype=dtype).view_as(y)
    ((y * weights).sum() + (h * h).sum() + c.sum()).backward()
    out = [("y", y.detach()), ("h_n", h.detach()), ("c_n", c.detach())]
    out += [(f"grad {k}", t[k].grad) for k in ("x", "h0", "c0")]
    out += [(f"grad {n}", p.grad) for n, p in m.named_parameters()]
    return out


@pytest.mark.parametrize("poison", POISONS, ids=lambda p: p.__name__)
@pytest.mark.parametrize("norm", NORMS, ids=lambda n: f"norm={n}")
def test_nonfinite_propagate_like_the_torch_path(norm, poison):
    _need_kernels()
    c_path = _dropin_run(norm, True, poison)
    torch_path = _dropin_run(norm, False, poison)
    if "nan" in poison.__name__:  # a NaN always reaches the outputs or gradients (an Inf may saturate a gate)
        assert any(torch.isnan(t).any() for _, t in torch_path)
    for (name, got), (_, want) in zip(c_path, torch_path):
        _assert_same(got, want, f"{name} (norm={norm}, {poison.__name__})")


@pytest.mark.parametrize("poison", POISONS, ids=lambda p: p.__name__)
def test_plain_cell_nonfinite_like_torch_nn_lstm(poison):
    """The plain seqzoo cell on the C path and ``torch.nn.LSTM`` (same weights) agree, non-finite entries included."""
    _need_kernels()
    ours = _dropin_run(None, True, poison)
    native_kernels.set_enabled(None)
    torch.manual_seed(0)
    ref = torch.nn.LSTM(I, H, batch_first=True)
    t = {"x": torch.randn(B, L, I), "h0": torch.randn(1, B, H), "c0": torch.randn(1, B, H)}
    t.update(dict(ref.named_parameters()))
    poison(t)
    for k in ("x", "h0", "c0"):
        t[k].requires_grad_()
    y, (h, c) = ref(t["x"], (t["h0"], t["c0"]))
    weights = torch.linspace(-1, 1, y.numel()).view_as(y)
    ((y * weights).sum() + (h * h).sum() + c.sum()).backward()
    theirs = [y.detach(), h.detach(), c.detach(), *(t[k].grad for k in ("x", "h0", "c0")),
              *(p.grad for _, p in ref.named_parameters())]
    for (name, got), want in zip(ours, theirs):
        _assert_same(got, want, f"{name} ({poison.__name__}) vs torch.nn.LSTM", rtol=1e-3)


@pytest.mark.parametrize("scale", [80.0, 1e4, 1e-39], ids=["x80", "x1e4", "denormal"])
@pytest.mark.parametrize("norm", NORMS, ids=lambda n: f"norm={n}")
def test_extreme_finite_inputs_agree(norm, scale):
    """Saturating (±80, ±1e4) and denormal-range inputs: C path and torch path agree, all finite."""
    _need_kernels()
    c_path = _dropin_run(norm, True, None, scale)
    torch_path = _dropin_run(norm, False, None, scale)
    for (name, got), (_, want) in zip(c_path, torch_path):
        assert torch.isfinite(want).all(), name
        _assert_same(got, want, f"{name} (norm={norm}, scale={scale})", rtol=1e-3)
    if scale < 1e-30 and norm is None:  # dW_ih = dgates^T x is denormal: it must not be flushed to zero
        grads = dict(c_path)
        assert (grads["grad weight_ih_l0"] != 0).any()


def test_sigmoid_edges_match_torch():
    """The kernels' sigmoid (no clamp) gives what ``torch.sigmoid`` gives at the extremes: 0 below -88.72 (float32),
    denormals just above, exactly 1 for large inputs, NaN for NaN. A plain cell with the f gate shut and g = 1
    carries ``c_n = sigmoid(i)``, with the i pre-activation set by its bias."""
    _need_kernels()
    values = torch.tensor([-1e4, -103.0, -88.8, -88.7, -88.5, -87.5, -80.0, -20.0, 0.0, 20.0, 80.0, 1e4,
                           float("inf"), -float("inf"), float("nan")])
    want = torch.sigmoid(values)
    assert (want[3:5] > 0).all() and (want[3:5] < 1.2e-38).all()  # torch gives denormals here
    for native in (True, False):
        native_kernels.set_enabled(native)
        m = seqzoo.LSTM(1, 1, batch_first=True, impl="seqzoo")
        got = []
        for v in values:
            with torch.no_grad():
                for p in m.parameters():
                    p.zero_()
                m.bias_ih_l0[0] = v  # i gate pre-activation
                m.bias_ih_l0[1] = -1.0e4  # f gate shut
                m.bias_ih_l0[2] = 1.0e4  # g = tanh(1e4) = 1
                _, (_, c) = m(torch.zeros(1, 1, 1))
            got.append(c.view(()))
        _assert_same(torch.stack(got), want, f"c_n = sigmoid(v), native={native}", rtol=1e-6)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("where,value", [("x", float("nan")), ("x", float("inf")), ("x", -float("inf")),
                                         ("cell.weight_hh", float("nan")), ("cell.weight_ih", float("inf"))])
def test_presets_nonfinite_like_the_torch_path(preset, where, value):
    _need_kernels()
    results = []
    for native in (True, False):
        native_kernels.set_enabled(native)
        torch.manual_seed(0)
        layer = seqzoo.create_model(preset, d_input=I, d_model=H, encoder="none", d_output=1).layers[0]
        t = {"x": torch.randn(B, L, I), **dict(layer.named_parameters())}
        _nan_at(where, value)(t)
        t["x"].requires_grad_()
        y = layer(t["x"])[0]
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        results.append([("y", y.detach()), ("grad x", t["x"].grad),
                        *((f"grad {n}", p.grad) for n, p in layer.named_parameters())])
    assert any(not torch.isfinite(t).all() for _, t in results[1])  # the poison reached the outputs or gradients
    for (name, got), (_, want) in zip(*results):
        _assert_same(got, want, f"{preset}: {name} ({where}={value})")


_FRESH = textwrap.dedent("""
    import numpy as np, torch, seqzoo
    from seqzoo.ops import native_kernels
    assert np.float32(1e-40) * np.float32(1) != 0, "denormals flushed before anything ran"
    lib = native_kernels.load("norm_lstm_step")
    assert lib is not None, "the C kernels did not load although a compiler is present"
    used = set()

    class Spy:  # records which kernel entry points the loop calls
        def __getattr__(self, name):
            used.add(name)
            return getattr(lib, name)

    native_kernels._libs["norm_lstm_step"] = Spy()
    m = seqzoo.LSTM(8, 16, batch_first=True, norm="layer")
    x = torch.randn(4, 12, 8, requires_grad=True)
    y, _ = m(x)
    y.sum().backward()
    assert {"norm_lstm_forward_chunk_f32", "norm_lstm_backward_chunk_f32"} <= used, used
    tiny = np.float32(1e-40) * np.float32(1)
    assert tiny != 0, f"numpy: 1e-40 * 1 = {tiny}: flush-to-zero set by loading the kernels"
    t = torch.tensor([1e-40]) * 1.0
    assert t.item() != 0, "torch: a denormal was flushed to zero after the kernels ran"
    print("OK", sorted(used))
""")


def test_loading_the_kernels_keeps_denormals():
    """In a fresh interpreter: an LN-LSTM forward+backward on the C path leaves FTZ/DAZ off (numpy and torch)."""
    if native_kernels._compiler() is None:
        pytest.skip("no C++ compiler: the C kernels cannot be built here")
    env = {**os.environ, "SEQZOO_NATIVE": "1"}
    proc = subprocess.run([sys.executable, "-c", _FRESH], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("OK"), proc.stdout + proc.stderr[-2000:]

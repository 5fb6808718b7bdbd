"""``ops.workspace``: reused buffers are never handed out while anything still references them."""

from __future__ import annotations

import pytest
import torch

from seqzoo.ops import workspace


@pytest.fixture(autouse=True)
def fresh_pool():
    workspace.clear()
    yield
    workspace.clear()


def test_busy_buffers_are_not_reused_and_idle_ones_are():
    a = workspace.take((4, 5), torch.float32)
    b = workspace.take((4, 5), torch.float32)
    assert a.data_ptr() != b.data_ptr()  # a is still referenced
    ptr = a.data_ptr()
    del a
    c = workspace.take((5, 4), torch.float32)
    assert c.data_ptr() == ptr and c.shape == (5, 4)  # the idle buffer came back
    view = c[1:]
    del c
    d = workspace.take((20,), torch.float32)
    assert d.data_ptr() != ptr and view.data_ptr() == ptr + 4 * 4  # a view of it is still alive


def test_saved_for_backward_keeps_a_buffer_busy_even_with_retain_graph():
    holder = [workspace.take((3,), torch.float64)]
    ptr = holder[0].data_ptr()

    class Scale(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(holder.pop())
            return x * 2

        @staticmethod
        def backward(ctx, g):
            (saved,) = ctx.saved_tensors
            return g * 2 + saved * 0

    x = torch.ones(3, dtype=torch.float64, requires_grad=True)
    y = Scale.apply(x).sum()
    assert workspace.take((3,), torch.float64).data_ptr() != ptr  # the graph holds it
    y.backward(retain_graph=True)
    assert workspace.take((3,), torch.float64).data_ptr() != ptr  # retained graph: still held
    del y
    assert workspace.take((3,), torch.float64).data_ptr() == ptr  # graph gone: reused


def test_limits_dtypes_and_switch_off(monkeypatch):
    a = workspace.take((8,), torch.float32)
    del a
    assert workspace.take((8,), torch.float64).dtype == torch.float64  # no reuse across dtypes
    assert workspace.take((100,), torch.float32).numel() == 100  # a much larger request gets its own buffer
    filled = workspace.take((16,), torch.float32).fill_(7.0)
    del filled
    assert workspace.zeros((16,), torch.float32).abs().sum() == 0
    monkeypatch.setenv("SEQZOO_WORKSPACE_MB", "0")
    before = workspace.pooled_bytes()
    workspace.take((64,), torch.float32)
    assert workspace.pooled_bytes() == before
    monkeypatch.setenv("SEQZOO_WORKSPACE_MB", "lots")
    with pytest.raises(ValueError, match="SEQZOO_WORKSPACE_MB must be a number"):
        workspace.take((4,), torch.float32)

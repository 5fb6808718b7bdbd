"""Block-Recurrent Transformer: a dense reference twin, step/chunk agreement at and inside block boundaries, the
spec §3.5 unit tests (gate at 1 keeps the state; a zeroed state path is a plain sliding-window layer), padding with
different per-row block positions, stop-gradient on the carried state, and argument errors."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from seqzoo.layers.block_recurrent import BlockRecurrentTransformer, RecurrentBlockLayer, relative_buckets

D, H, W, S = 8, 2, 4, 3
TOL = {"rtol": 1e-9, "atol": 1e-9}


def make(**kw) -> BlockRecurrentTransformer:
    torch.manual_seed(0)
    args = {"depth": 2, "n_heads": H, "window": W, "n_states": S, "d_ff": 16, "recurrent_layers": [1], **kw}
    net = BlockRecurrentTransformer(D, **args).double().eval()
    with torch.no_grad():  # non-trivial position bias so a misplaced bucket shows
        for block in net.blocks:
            block.rel_bias.weight.normal_()
    return net


def dense_reference(net: BlockRecurrentTransformer, x: torch.Tensor) -> torch.Tensor:
    """The network written the slow, obvious way: full (L, L) attention with the sliding-window mask, a Python loop
    over blocks for the states, one sequence from the start of a document (no padding)."""
    n = x.shape[1]
    pos = torch.arange(n)
    qb, kb = (pos // W).unsqueeze(1), (pos // W).unsqueeze(0)
    allowed = (pos.unsqueeze(0) <= pos.unsqueeze(1)) & (kb >= qb - 1)
    buckets = relative_buckets(pos.unsqueeze(1) - pos.unsqueeze(0), net.blocks[0].rel_bias.num_embeddings, 2 * W)
    for layer in net.blocks:
        h = layer.norm_attn(x)
        q, k, v = layer.qkv_heads(h)
        bias = layer.rel_bias(buckets).permute(2, 0, 1)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=torch.where(allowed, bias, float("-inf")), scale=1.0)
        o = o.transpose(1, 2).reshape(x.shape)
        if isinstance(layer, RecurrentBlockLayer):
            c = layer.state_init.unsqueeze(0)
            reads = []
            for j in range(0, n, W):
                zs = layer.norm_state(c) + layer.state_ids
                qs, ks, vs = (t.view(1, S, H, D // H).transpose(1, 2) for t in layer.state_qkv(zs).chunk(3, -1))
                qsc = layer.state_q_cross(zs).view(1, S, H, D // H).transpose(1, 2)
                qe = layer.q_cross(h[:, j:j + W]).view(1, -1, H, D // H).transpose(1, 2)
                scale = lambda t, s: F.normalize(t, dim=-1) * s.view(-1, 1, 1)  # noqa: E731
                ks = F.normalize(ks, dim=-1)
                reads.append(F.scaled_dot_product_attention(scale(qe, layer.cross_scale), ks, vs, scale=1.0))
                if j + W <= n:  # the block is complete: update the states from the previous and this block
                    lo = max(0, j - W)
                    own = F.scaled_dot_product_attention(scale(qs, layer.state_scale), ks, vs, scale=1.0)
                    read = F.scaled_dot_product_attention(scale(qsc, layer.state_cross_scale), k[:, :, lo:j + W],
                                                          v[:, :, lo:j + W], scale=1.0)
                    cat = torch.cat([t.transpose(1, 2).reshape(1, S, D) for t in (own, read)], -1)
                    c = layer.gate(layer.state_proj(cat), c)
                    if layer.config == "dual":
                        c = layer.gate_ff(layer.state_ff(layer.norm_state_ff(c)), c)
            cross = torch.cat(reads, 2).transpose(1, 2).reshape(x.shape)
            o = torch.cat((o, cross), -1)
        x = layer.finish(x, o)
    return x


@pytest.mark.parametrize("kw", [{}, {"gate": "lstm"}, {"config": "dual"}, {"recurrent_layers": []},
                                {"recurrent_layers": [0, 1], "gate": "lstm", "config": "dual"}])
def test_matches_dense_reference(kw: dict) -> None:
    net = make(**kw)
    x = torch.randn(1, 3 * W + 2, D, dtype=torch.float64)
    with torch.no_grad():
        y, _ = net(x)
        torch.testing.assert_close(y, dense_reference(net, x), **TOL)


@pytest.mark.parametrize("kw", [{}, {"gate": "lstm", "config": "dual"}, {"recurrent_layers": []}])
def test_step_and_every_chunking_equal_one_pass(kw: dict) -> None:
    net = make(**kw)
    n = 3 * W + 3
    x = torch.randn(2, n, D, dtype=torch.float64)
    with torch.no_grad():
        full, state_full = net(x)
        state, outs = None, []
        for t in range(n):
            y, state = net.step(x[:, t], state)
            outs.append(y)
        torch.testing.assert_close(torch.stack(outs, 1), full, **TOL)
        for cuts in ([W], [W - 1], [1, W + 1], [2, 3, 2 * W + 1], [W + 2, 2 * W]):  # at and inside block boundaries
            state, outs, lo = None, [], 0
            for hi in [*cuts, n]:
                y, state = net(x[:, lo:hi], state)
                outs.append(y)
                lo = hi
            torch.testing.assert_close(torch.cat(outs, 1), full, **TOL, msg=lambda m, c=cuts: f"cuts {c}: {m}")
            for a, b in zip(state, state_full):
                torch.testing.assert_close(a, b, **TOL)


def test_padding_with_different_block_positions_per_row() -> None:
    """Rows at different positions inside their block (padded chunks) continue exactly as unpadded rows."""
    net = make()
    lengths = [5, 2, 7]
    x1 = torch.randn(3, 7, D, dtype=torch.float64)
    x2 = torch.randn(3, 6, D, dtype=torch.float64)
    mask = torch.arange(7).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    with torch.no_grad():
        _, state = net(torch.where(mask.unsqueeze(-1), x1, 1e3), mask=mask)
        y2, _ = net(x2, state)
        for i, n in enumerate(lengths):
            ref, _ = net(torch.cat((x1[i:i + 1, :n], x2[i:i + 1]), 1))
            torch.testing.assert_close(y2[i], ref[0, n:], **TOL)


def test_gate_at_one_keeps_the_initial_state() -> None:
    net = make()
    layer = net.blocks[1]
    with torch.no_grad():
        layer.gate.gate_bias.fill_(1e4)  # sigmoid(b_g) == 1 exactly in float64
        _, state = net(torch.randn(2, 3 * W + 1, D, dtype=torch.float64))
    assert torch.equal(state[4][:, 0], layer.state_init.expand(2, -1, -1))
    net_free = make()
    with torch.no_grad():
        _, moved = net_free(torch.randn(2, 3 * W + 1, D, dtype=torch.float64))
    assert not torch.allclose(moved[4][:, 0], net_free.blocks[1].state_init.expand(2, -1, -1))


def test_gate_initialisation_is_meliads() -> None:
    """Regression (issue 20): the fixed gate is meliad's ``bias`` gate, ``c' = c g + z (1 - g)`` on the projection
    ``z`` with no weights of its own, and a fresh one keeps about half of the state per block (b_g ~ N(0, 0.1));
    the LSTM gate starts at forget sigmoid(1) and input sigmoid(-1) (the paper's remember offsets)."""
    torch.manual_seed(0)
    d = 512
    fixed = BlockRecurrentTransformer(d, n_heads=4, depth=1, recurrent_layers=[0]).blocks[0].gate
    assert [n for n, _ in fixed.named_parameters()] == ["gate_bias"]
    keep = fixed.keep_fraction().detach()
    assert abs(float(keep.mean()) - 0.5) < 0.005 and 0.003 < float(keep.std()) < 0.05
    z, c = torch.randn(2, 3, d), torch.randn(2, 3, d)
    torch.testing.assert_close(fixed(z, c), c * keep + z * (1 - keep), rtol=0, atol=0)
    biased = BlockRecurrentTransformer(d, n_heads=4, depth=1, recurrent_layers=[0], remember_bias=2.0).blocks[0]
    assert abs(float(biased.gate.keep_fraction().detach().mean()) - float(torch.sigmoid(torch.tensor(2.0)))) < 0.005
    lstm = BlockRecurrentTransformer(d, n_heads=4, depth=1, recurrent_layers=[0], gate="lstm").blocks[0].gate
    with torch.no_grad():  # zero input, state 1: the new state is the forget gate plus tanh(b_z) * input gate
        new = lstm(torch.zeros(1, 1, d), torch.ones(1, 1, d))
        z_part = torch.tanh(lstm.proj.bias[:d]) * torch.sigmoid(lstm.proj.bias[d:2 * d] - 1)
        forget = (new[0, 0] - z_part).mean()
    assert abs(float(forget) - float(torch.sigmoid(torch.tensor(1.0)))) < 0.01


def test_zeroed_state_path_is_a_plain_sliding_window_layer() -> None:
    rec = make()
    slide = make(recurrent_layers=[])
    with torch.no_grad():
        rec.blocks[1].state_qkv.weight[2 * D:].zero_()  # V_s = 0: the tokens' state read is exactly zero
        slide.load_state_dict({k: v for k, v in rec.state_dict().items() if k in slide.state_dict()
                               and not k.endswith("1.proj.weight")}, strict=False)
        slide.blocks[1].proj.weight.copy_(rec.blocks[1].proj.weight[:, :D])
        x = torch.randn(2, 3 * W + 2, D, dtype=torch.float64)
        torch.testing.assert_close(rec(x)[0], slide(x)[0], **TOL)
        rec.blocks[1].state_qkv.weight[2 * D:].fill_(0.3)  # the test can fail: with a state read they differ
        assert not torch.allclose(rec(x)[0], slide(x)[0])


def test_window_limits_slide_but_not_the_recurrent_state() -> None:
    """A change at t=0 reaches block 3 only through the recurrent state (two sliding layers reach back two
    blocks)."""
    x = torch.randn(1, 4 * W, D, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 0] += torch.randn(D, dtype=torch.float64)  # not a constant shift: LayerNorm would remove that
    with torch.no_grad():
        for net, reaches in ((make(recurrent_layers=[]), False), (make(), True)):
            a, b = net(x)[0][:, 3 * W:], net(x2)[0][:, 3 * W:]
            assert (not torch.allclose(a, b, rtol=0, atol=1e-12)) == reaches


def test_carried_state_is_cut_from_the_graph_and_initial_state_learns() -> None:
    net = make().train()
    x = torch.randn(2, 2 * W + 1, D, dtype=torch.float64)
    y, state = net(x)
    y.sum().backward()
    assert net.blocks[1].state_init.grad is not None and net.blocks[1].state_init.grad.abs().sum() > 0
    net.zero_grad()
    state = tuple(s.requires_grad_() if s.is_floating_point() else s for s in (t.detach() for t in state))
    y2, _ = net(x, state)
    y2.sum().backward()
    assert all(s.grad is None for s in state)


def test_reset_rows_starts_a_new_document() -> None:
    net = make()
    x = torch.randn(2, 2 * W + 1, D, dtype=torch.float64)
    with torch.no_grad():
        _, state = net(x)
        state = net.reset_rows(state, torch.tensor([True, False]))
        y, _ = net(x, state)
        fresh, _ = net(x)
        torch.testing.assert_close(y[0], fresh[0], **TOL)
        assert not torch.allclose(y[1], fresh[1])


@pytest.mark.parametrize(("kw", "word"), [({"gate": "gru"}, "gate"), ({"config": "single"}, "config"),
                                          ({"recurrent_layers": [2]}, "recurrent_layers"), ({"window": 0}, "window")])
def test_bad_arguments_name_the_argument(kw: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        make(**kw)

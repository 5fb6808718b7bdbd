"""Conformance checks for seq2seq presets (every model tagged ``seq2seq``), the encoder-decoder version of
tests/test_conformance.py: forward/backward reaches every parameter; the decoder is causal; ``start`` + ``step``
reproduces the teacher-forced forward (float64, 1e-5: ConvS2S's shift buffers, GNMT's carried LSTM states) in eval
mode and, without dropout, in train mode; padding of the source or the target and the other rows of the batch do
not change a sentence's outputs; ``save -> load`` round-trips exactly."""

from __future__ import annotations

import pytest
import torch

import seqzoo
from seqzoo.models import MODELS
from seqzoo.models.seq2seq.base import BOS, PAD

NAMES = [n for n in seqzoo.list_models() if "seq2seq" in MODELS.get(n).tags]
V, B, S, T = 13, 3, 7, 6
SRC_LENGTHS, TGT_LENGTHS = (7, 4, 1), (6, 3, 2)
TOL = {"rtol": 1e-5, "atol": 1e-5}


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return seqzoo.create_model(name, vocab_size=V, **MODELS.get(name).conformance).double()


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, V, (B, S), generator=g)
    mask = torch.arange(S).unsqueeze(0) < torch.tensor(SRC_LENGTHS).unsqueeze(1)
    src = src.masked_fill(~mask, PAD)
    prev = torch.randint(4, V, (B, T), generator=g)
    prev[:, 0] = BOS
    return src, mask, prev


def test_there_are_seq2seq_presets() -> None:
    assert {"gnmt_small", "gnmt", "convs2s_small"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_every_parameter_gets_a_gradient(name: str) -> None:
    model = build(name).train()
    src, mask, prev = data()
    logits, _ = model(src, mask=mask, prev=prev)
    assert logits.shape == (B, T, V) and torch.isfinite(logits).all()
    nll, _ = model(src, mask=mask, prev=prev, targets=torch.randint(0, V, (B, T)))
    assert nll.shape == (B, T)
    (logits.sum() + nll.sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing}"


@pytest.mark.parametrize("name", NAMES)
def test_decoder_is_causal(name: str) -> None:
    model = build(name).eval()
    src, mask, prev = data()
    with torch.no_grad():
        out, _ = model(src, mask=mask, prev=prev)
        prev2 = prev.clone()
        prev2[:, 3:] = (prev[:, 3:] + 1) % V
        out2, _ = model(src, mask=mask, prev=prev2)
    torch.testing.assert_close(out2[:, :3], out[:, :3], rtol=0, atol=1e-12)
    assert not torch.allclose(out2[:, 3:], out[:, 3:])


@pytest.mark.parametrize("name", NAMES)
def test_step_reproduces_teacher_forced_forward(name: str) -> None:
    model = build(name)
    src, mask, prev = data()
    for mode in ["eval"] + (["train"] if model.step_exact_in_train else []):
        model.train(mode == "train")
        with torch.no_grad():
            full, _ = model(src, mask=mask, prev=prev)
            state = model.start(model.encode(src, mask))
            steps = []
            for t in range(T):
                logits, state = model.step(prev[:, t], state)
                steps.append(logits)
                assert state["attn"].shape == (B, S)
                torch.testing.assert_close(state["attn"].sum(-1), torch.ones(B, dtype=torch.float64))
                assert bool((state["attn"][~mask] == 0).all()), "attention on padded source positions"
        torch.testing.assert_close(torch.stack(steps, 1), full, **TOL, msg=lambda m, mode=mode: f"{mode}: {m}")


@pytest.mark.parametrize("name", NAMES)
def test_padding_and_other_rows_do_not_change_a_sentence(name: str) -> None:
    model = build(name).eval()
    src, mask, prev = data()
    garbage = torch.randint(4, V, src.shape, generator=torch.Generator().manual_seed(9))
    src = torch.where(mask, src, garbage)  # padded source positions hold real-looking tokens
    with torch.no_grad():
        out, _ = model(src, mask=mask, prev=prev)
        for i, (n, m) in enumerate(zip(SRC_LENGTHS, TGT_LENGTHS)):
            ref, _ = model(src[i:i + 1, :n], prev=prev[i:i + 1, :m])
            torch.testing.assert_close(out[i, :m], ref[0], **TOL, msg=lambda e, i=i: f"sentence {i}: {e}")


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name: str, tmp_path) -> None:
    model = build(name)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.eval()
    seqzoo.save_model(model, tmp_path)
    loaded = seqzoo.load_model(tmp_path).eval()
    assert type(loaded) is type(model) and loaded.seqzoo_config == model.seqzoo_config
    src, mask, prev = data()
    with torch.no_grad():
        torch.testing.assert_close(loaded(src, mask=mask, prev=prev)[0], model(src, mask=mask, prev=prev)[0],
                                   rtol=0, atol=0)

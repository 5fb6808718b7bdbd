"""Conformance suite: every registered model goes through the same checks.

The cases come from ``seqzoo.list_models()`` at collection time, so a newly registered preset is checked without
touching this file. Each preset is made small by generic overrides (filtered to the arguments it accepts) plus the
preset's own ``conformance`` overrides from its registry entry; it is run with feature input and, where it accepts
``vocab_size``, with token input. Numerics are compared in float64. Checks that depend on a capability run only
when the model's flags say it has it (``is_causal``, ``supports_step``, ``step_exact_in_train``, per-step decoder;
``fixed_length`` models such as the feed-forward image classifiers take no padded or shorter inputs).

Question-answering models over a set of memories (``model_kind = "qa"``, e.g. MemN2N: ``model(inputs=question
(B, Jq), story=(B, M, J))`` -> ``(logits (B, d_output), ())``) have no time axis, so the per-step checks do not
apply; the QA section at the end checks them instead: every parameter gets a gradient, empty memory slots and
padding words change nothing, a row's answer does not depend on the other rows of its batch, and save -> load
round-trips.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

import seqzoo
from seqzoo.models import MODELS

B, L = 3, 7
SMALL = {"d_model": 8, "n_layers": 2, "d_output": 5}
D_INPUT, VOCAB = 3, 11
TOL = {"rtol": 1e-6, "atol": 1e-6}
LENGTHS = (L, 4, 1)  # right padding: one full, one half, one single-token sequence


def _kinds(name: str) -> list[str]:
    """Input kinds a preset is run with: features and/or tokens (or only its own when its overrides fix it)."""
    entry = MODELS.get(name)
    args = set(entry.valid_args())
    if {"d_input", "vocab_size"} & set(entry.conformance):
        return ["preset"]
    kinds = [kind for kind, arg in (("features", "d_input"), ("tokens", "vocab_size")) if arg in args]
    return kinds or ["preset"]


def model_kind(name: str) -> str:
    """``"qa"`` for question-answering models over a set of memories (``model_kind`` on the builder), else
    ``"sequence"`` (the layer protocol's sequence models, checked by the tests above the QA section)."""
    return getattr(MODELS.get(name).builder, "model_kind", "sequence")


# seq2seq presets read two sequences; tests/test_seq2seq_conformance.py runs the checks that apply to them
CASES = [pytest.param(name, kind, id=f"{name}-{kind}") for name in seqzoo.list_models() for kind in _kinds(name)
         if model_kind(name) == "sequence" and "seq2seq" not in MODELS.get(name).tags]


def small_kwargs(name: str, kind: str, **extra: Any) -> dict[str, Any]:
    entry = MODELS.get(name)
    args = set(entry.valid_args())
    kw: dict[str, Any] = dict(SMALL)
    if kind == "features":
        kw.update(d_input=D_INPUT, vocab_size=None)
    elif kind == "tokens":
        kw.update(vocab_size=VOCAB, d_input=None)
    kw = {k: v for k, v in kw.items() if k in args}
    kw.update(entry.conformance)
    kw.update(extra)
    return kw


def build(name: str, kind: str, **extra: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    return seqzoo.create_model(name, **small_kwargs(name, kind, **extra)).to(torch.float64)


def _config(model: torch.nn.Module, key: str) -> Any:
    return getattr(model, "seqzoo_config", {}).get(key, getattr(model, key, None))


def make_inputs(model: torch.nn.Module, batch: int, length: int, gen: torch.Generator) -> Tensor:
    vocab, d_input = _config(model, "vocab_size"), _config(model, "d_input")
    if vocab is not None:
        return torch.randint(0, vocab, (batch, length), generator=gen)
    if d_input is not None:
        return torch.randn(batch, length, d_input, generator=gen, dtype=torch.float64)
    pytest.fail(f"{model.seqzoo_name}: config has neither vocab_size nor d_input; the conformance suite feeds one "
                "sequence of tokens or features (declare `conformance` overrides on the preset)")


def perturb(model: torch.nn.Module, x: Tensor, gen: torch.Generator) -> Tensor:
    """Different inputs of the same kind and shape (every token changes; features move by O(1))."""
    vocab = _config(model, "vocab_size")
    if vocab is not None:
        return (x + torch.randint(1, vocab, x.shape, generator=gen)) % vocab
    return x + torch.randn(x.shape, generator=gen, dtype=x.dtype)


def per_step(model: torch.nn.Module) -> bool:
    return getattr(model, "decoder", "step") == "step"


def flat(state: Any) -> list[Tensor]:
    """All tensors of a (nested) state tuple, in order."""
    if isinstance(state, Tensor):
        return [state]
    return [t for s in state for t in flat(s)]


def assert_states_close(a: Any, b: Any) -> None:
    fa, fb = flat(a), flat(b)
    assert len(fa) == len(fb), f"states hold {len(fa)} vs {len(fb)} tensors"
    for i, (ta, tb) in enumerate(zip(fa, fb)):
        torch.testing.assert_close(ta, tb, **TOL, msg=lambda m, i=i: f"state tensor {i}: {m}")


def padding_mask(lengths: tuple[int, ...], length: int) -> Tensor:
    return torch.arange(length).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


def fill_padding(model: torch.nn.Module, x: Tensor, mask: Tensor, gen: torch.Generator) -> Tensor:
    """Put large garbage (features) or random other tokens at the padded positions."""
    garbage = perturb(model, x, gen)
    if x.is_floating_point():
        garbage = 1e3 * garbage
    keep = mask if x.dim() == 2 else mask.unsqueeze(-1)
    return torch.where(keep, x, garbage)



@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_forward_backward_every_parameter_gets_a_gradient(name: str, kind: str, gen: torch.Generator) -> None:
    model = build(name, kind).train()
    x = make_inputs(model, B, L, gen)
    out, _ = model(x)
    d_out = _config(model, "d_output")
    expected = (B, L) if per_step(model) else (B,)
    assert tuple(out.shape[:-1]) == expected and (d_out is None or out.shape[-1] == d_out), tuple(out.shape)
    assert torch.isfinite(out).all()
    (out * torch.randn(out.shape, generator=gen, dtype=out.dtype)).sum().backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert params, "model has no trainable parameters"
    missing = [n for n, p in params if p.grad is None]
    assert not missing, f"parameters without a gradient: {missing}"
    bad = [n for n, p in params if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad}"


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_causal_models_do_not_look_ahead(name: str, kind: str, gen: torch.Generator) -> None:
    model = build(name, kind).eval()
    if not model.is_causal:
        pytest.skip("not applicable: model.is_causal is False (it may read the whole sequence by design)")
    if not per_step(model):
        pytest.skip("not applicable: the decoder gives one output per sequence, no per-step outputs")
    x = make_inputs(model, B, L, gen)
    with torch.no_grad():
        out, _ = model(x)
        for k in (1, 4):
            x2 = x.clone()
            x2[:, k:] = perturb(model, x[:, k:], gen)
            out2, _ = model(x2)
            torch.testing.assert_close(out2[:, :k], out[:, :k], rtol=0, atol=1e-12,
                                       msg=lambda m, k=k: f"output before t={k} changed with inputs at t>={k}: {m}")
            assert not torch.allclose(out2[:, k:], out[:, k:]), "outputs ignore the inputs"


def _run_steps(model: torch.nn.Module, x: Tensor) -> Tensor:
    state, outs = None, []
    for t in range(x.shape[1]):
        y, state = model.step(x[:, t], state)
        outs.append(y)
    return torch.stack(outs, 1)


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_step_reproduces_forward(name: str, kind: str, gen: torch.Generator) -> None:
    model = build(name, kind)
    if not model.supports_step:
        pytest.skip("not applicable: model.supports_step is False")
    x = make_inputs(model, B, L, gen)
    modes = ["eval"] + (["train"] if model.step_exact_in_train else [])
    for mode in modes:
        model.train(mode == "train")
        with torch.no_grad():
            full, _ = model(x)
            stepped = _run_steps(model, x)
        torch.testing.assert_close(stepped, full, **TOL, msg=lambda m, mode=mode: f"{mode} mode: {m}")


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_state_across_two_chunks_equals_one_pass(name: str, kind: str, gen: torch.Generator) -> None:
    model = build(name, kind)
    if not model.is_causal:
        pytest.skip("not applicable: model.is_causal is False (no state to carry)")
    if not per_step(model):
        pytest.skip("not applicable: the decoder gives one output per sequence, no per-step outputs")
    x = make_inputs(model, B, L, gen)
    modes = ["eval"] + (["train"] if model.step_exact_in_train else [])
    for mode in modes:
        model.train(mode == "train")
        with torch.no_grad():
            full, state_full = model(x)
            a, state = model(x[:, :3])
            b, state = model(x[:, 3:], state)
        torch.testing.assert_close(torch.cat([a, b], 1), full, **TOL, msg=lambda m, mode=mode: f"{mode} mode: {m}")
        assert_states_close(state, state_full)


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_padding_does_not_change_real_positions(name: str, kind: str, gen: torch.Generator) -> None:
    model = build(name, kind).eval()
    if getattr(model, "fixed_length", False):
        pytest.skip("not applicable: model.fixed_length is True (a fixed-size input such as an image, no padding)")
    mask = padding_mask(LENGTHS, L)
    x = fill_padding(model, make_inputs(model, B, L, gen), mask, gen)
    with torch.no_grad():
        out, state = model(x, mask=mask)
        refs = [model(x[i: i + 1, :n]) for i, n in enumerate(LENGTHS)]
    for i, (n, (ref, _)) in enumerate(zip(LENGTHS, refs)):
        got = out[i, :n] if per_step(model) else out[i]
        torch.testing.assert_close(got, ref[0], **TOL, msg=lambda m, i=i: f"sequence {i} (length {LENGTHS[i]}): {m}")
    if not (model.is_causal and per_step(model)):
        return  # no carried state to continue from
    # the state after a padded chunk must act as the state after each sequence's last real token
    x2 = make_inputs(model, B, 3, gen)
    with torch.no_grad():
        out2, _ = model(x2, state)
        for i, (_, ref_state) in enumerate(refs):
            ref2, _ = model(x2[i: i + 1], ref_state)
            torch.testing.assert_close(out2[i], ref2[0], **TOL,
                                       msg=lambda m, i=i: f"continuing after padding, sequence {i}: {m}")


@pytest.mark.parametrize("decoder", ["last", "mean"])
@pytest.mark.parametrize(("name", "kind"), CASES)
def test_padding_does_not_change_sequence_output(name: str, kind: str, decoder: str, gen: torch.Generator) -> None:
    if "decoder" not in MODELS.get(name).valid_args():
        pytest.skip("not applicable: the preset has no decoder argument")
    model = build(name, kind, decoder=decoder).eval()
    mask = padding_mask(LENGTHS, L)
    x = fill_padding(model, make_inputs(model, B, L, gen), mask, gen)
    with torch.no_grad():
        out, _ = model(x, mask=mask)
        assert out.shape[0] == B and out.dim() == 2, tuple(out.shape)
        for i, n in enumerate(LENGTHS):
            ref, _ = model(x[i: i + 1, :n])
            torch.testing.assert_close(out[i], ref[0], **TOL, msg=lambda m, i=i: f"sequence {i}: {m}")


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_save_load_round_trip(name: str, kind: str, gen: torch.Generator, tmp_path) -> None:
    model = build(name, kind)
    move_weights(model, gen)
    x = make_inputs(model, B, L, gen)
    assert_round_trip(model, name, tmp_path, lambda m: m(x)[0])


def move_weights(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Move away from the initialization, so loading a fresh model cannot pass by chance."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def assert_round_trip(model: torch.nn.Module, name: str, tmp_path, run) -> None:
    """save -> load gives the same class, config, state (dtypes and values) and outputs ``run(model)`` (eval)."""
    model.eval()
    seqzoo.save_model(model, tmp_path)
    loaded = seqzoo.load_model(tmp_path).eval()
    assert type(loaded) is type(model) and loaded.seqzoo_name == name
    assert loaded.seqzoo_config == model.seqzoo_config
    want, got = model.state_dict(), loaded.state_dict()
    assert list(got) == list(want)
    for key in want:
        assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), key
    with torch.no_grad():
        torch.testing.assert_close(run(loaded), run(model), rtol=0, atol=0)


# ----- question-answering models over a set of memories (model_kind "qa") ------------------------------------------

QA_CASES = [pytest.param(name, id=name) for name in seqzoo.list_models() if model_kind(name) == "qa"]
QA_B, QA_M, QA_J, QA_JQ = 4, 5, 4, 3


def build_qa(name: str) -> torch.nn.Module:
    """The preset at its ``conformance`` sizes (vocab_size, memory_size, width), in float64."""
    torch.manual_seed(0)
    return seqzoo.create_model(name, **MODELS.get(name).conformance).to(torch.float64)


def qa_inputs(model: torch.nn.Module, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """A question batch and stories with a different number of real memories and words per row (right padding)."""
    vocab = model.seqzoo_config["vocab_size"]
    story = torch.randint(1, vocab, (QA_B, QA_M, QA_J), generator=gen)
    n_mem, n_words = torch.tensor([QA_M, 3, 1, 2]), torch.tensor([QA_J, 2, 1, 3])
    story = story * (torch.arange(QA_M) < n_mem[:, None])[:, :, None]
    story = story * (torch.arange(QA_J) < n_words[:, None])[:, None, :]
    question = torch.randint(1, vocab, (QA_B, QA_JQ), generator=gen)
    question[1:, -1] = 0
    return question, story


@pytest.mark.parametrize("name", QA_CASES)
def test_qa_every_parameter_gets_a_gradient(name: str, gen: torch.Generator) -> None:
    model = build_qa(name).train()
    for phase in ("initial", "switched"):
        if phase == "switched" and not callable(getattr(model, "switch_on_plateau", None)):
            continue
        if phase == "switched":
            model.switch_on_plateau()
        model.zero_grad()
        question, story = qa_inputs(model, gen)
        out, state = model(question, story)
        assert tuple(out.shape) == (QA_B, model.seqzoo_config.get("d_output") or out.shape[-1]) and state == ()
        assert torch.isfinite(out).all()
        (out * torch.randn(out.shape, generator=gen, dtype=out.dtype)).sum().backward()
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        missing = [n for n, p in params if p.grad is None or not bool(p.grad.abs().sum() > 0)]
        assert not missing, f"{phase}: parameters without a (nonzero) gradient: {missing}"


@pytest.mark.parametrize("name", QA_CASES)
def test_qa_empty_memory_slots_and_padding_change_nothing(name: str, gen: torch.Generator) -> None:
    """Extra all-nil memory slots and extra nil columns (in the story and the question) leave every answer as it
    was, in both phases of a linear start."""
    model = build_qa(name).eval()
    question, story = qa_inputs(model, gen)
    padded_story = torch.nn.functional.pad(story[:, :-1], (0, 2, 0, 0))  # one slot fewer, two more word columns
    padded_story = torch.cat([padded_story, torch.zeros(QA_B, 1 + 0, QA_J + 2, dtype=story.dtype)], 1)
    assert padded_story.shape[1] == QA_M
    cut = story[:, :QA_M - 1]
    padded_question = torch.nn.functional.pad(question, (0, 3))
    phases = ["initial"] + (["switched"] if callable(getattr(model, "switch_on_plateau", None)) else [])
    for phase in phases:
        if phase == "switched":
            model.switch_on_plateau()
        with torch.no_grad():
            ref, _ = model(question, cut)
            got, _ = model(padded_question, padded_story)
            fewer, _ = model(question, cut[:, :3])  # rows 1-3 hold at most 3 real memories
        torch.testing.assert_close(got, ref, **TOL, msg=lambda m, p=phase: f"{p}: {m}")
        torch.testing.assert_close(fewer[1:], ref[1:], **TOL, msg=lambda m, p=phase: f"{p}, fewer slots: {m}")
        assert not torch.allclose(ref[0], ref[1]), "answers ignore the inputs"


@pytest.mark.parametrize("name", QA_CASES)
def test_qa_rows_do_not_depend_on_the_batch(name: str, gen: torch.Generator) -> None:
    model = build_qa(name).eval()
    question, story = qa_inputs(model, gen)
    with torch.no_grad():
        full, _ = model(question, story)
        for i in range(QA_B):
            alone, _ = model(question[i: i + 1], story[i: i + 1])
            torch.testing.assert_close(alone[0], full[i], **TOL, msg=lambda m, i=i: f"row {i}: {m}")
        flipped, _ = model(question.flip(0), story.flip(0))
    torch.testing.assert_close(flipped.flip(0), full, **TOL)


@pytest.mark.parametrize("name", QA_CASES)
def test_qa_save_load_round_trip(name: str, gen: torch.Generator, tmp_path) -> None:
    model = build_qa(name)
    move_weights(model, gen)
    if callable(getattr(model, "switch_on_plateau", None)):
        model.switch_on_plateau()  # the phase is part of what is saved
    question, story = qa_inputs(model, gen)
    assert_round_trip(model, name, tmp_path, lambda m: m(question, story)[0])

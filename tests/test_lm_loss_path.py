"""One loss path for language models (issue 21): the trainer and the evaluators ask a model that scores targets for
per-token NLLs, so the adaptive softmax trains and evaluates cluster-wise without ever building the (B, L, V)
log-probabilities; losses and metrics equal the full-softmax path; default cutoffs; tied embeddings; bounded
evaluation chunks."""

from __future__ import annotations

import copy
import math
import random
from pathlib import Path

import pytest
import torch

from seqzoo.errors import ConfigError
from seqzoo.models import create_model, load_model, save_model
from seqzoo.models import heads as heads_mod
from seqzoo.models.heads import AdaptiveHead, default_cutoffs, head_nll
from seqzoo.tasks import create_task
from seqzoo.training import train
from seqzoo.training.evaluation import (
    EVAL_SEED,
    batch_loss,
    batch_metric_sums,
    evaluate,
    evaluate_split,
    score_batch,
)

CPU = torch.device("cpu")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A word corpus of 80 word types with a Zipf-like frequency (enough classes for three adaptive clusters)."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(80)]
    weights = [1.0 / (i + 1) for i in range(80)]
    for split, n_lines in (("train", 300), ("valid", 40), ("test", 40)):
        lines = [" ".join(rng.choices(words, weights, k=rng.randint(3, 12))) for _ in range(n_lines)]
        (tmp_path / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def _task(corpus: Path, **kw):
    return create_task("lm", dataset="text", data_dir=str(corpus), bptt=9, **kw)


def _model(task, name: str = "lstm_native", **kw):
    torch.manual_seed(0)
    return create_model(name, d_model=16, **{**task.spec.model_kwargs(), **kw})


def _full_softmax_metrics(model, task, batches, carried: bool) -> dict[str, float]:
    """Today's path, written out: the model's full outputs, ``task.metric_sums``, exact averages."""
    sums: dict[str, list[float]] = {}
    state = None
    with torch.no_grad():
        for batch in batches:
            if carried and int(batch["segment_index"]) == 0:
                state = None
            outputs, new_state = model(batch["inputs"], state)
            state = new_state if carried else None
            for k, (s, c) in task.metric_sums(outputs, batch).items():
                acc = sums.setdefault(k, [0.0, 0.0])
                acc[0] += s
                acc[1] += c
    out = {k: s / c for k, (s, c) in sums.items()}
    return {**out, **task.derived_metrics(out)}


ADAPTIVE = {"head": "adaptive", "cutoffs": [8, 20, 40], "div_value": 2.0}
HEADS = [ADAPTIVE, {"head": "adaptive", "cutoffs": [8, 20], "tie_weights": True}, {"head": "linear"},
         {"head": "linear", "tie_weights": True}]


@pytest.mark.parametrize("head", HEADS, ids=lambda h: "-".join(str(v) for v in h.values()))
@pytest.mark.parametrize("level", ["word", "char"])
def test_loss_and_metrics_equal_the_full_softmax_path(corpus: Path, head: dict, level: str) -> None:
    task = _task(corpus, level=level)
    if level == "char" and head.get("cutoffs"):
        head = {**head, "cutoffs": [c for c in (4, 10) if c < task.spec.d_output - 1]}
    model = _model(task, **head).eval()
    # training loss (with a loss_mask, and the gradient)
    batch = task.train_batch(3, 4)
    batch["loss_mask"] = torch.rand(batch["targets"].shape, generator=torch.Generator().manual_seed(1)) < 0.7
    scores = score_batch(model, task, batch, device=CPU)
    assert scores.is_nll and scores.values.shape == batch["targets"].shape
    loss = batch_loss(task, scores, batch)
    ref = task.loss(model(batch["inputs"])[0], batch)
    assert abs(float(loss.detach()) - float(ref.detach())) < 1e-5
    grads = torch.autograd.grad(loss, list(model.parameters()))
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-6, rtol=1e-4)
    # per-batch metric sums
    with torch.no_grad():
        got = batch_metric_sums(task, score_batch(model, task, batch, device=CPU), batch)
        want = task.metric_sums(model(batch["inputs"])[0], batch)
    assert got.keys() == want.keys() == set(task.spec.metrics)
    for k in want:
        assert got[k][1] == want[k][1] and abs(got[k][0] - want[k][0]) < 1e-5 * max(1.0, abs(want[k][0]))
    # whole splits: independent windows and carried streams (perplexity / bpc to 1e-5)
    data = task.build("valid", EVAL_SEED)
    independent = evaluate(model, task, data, batch_size=7, device=CPU)
    ref_ind = _full_softmax_metrics(model, task, data.batches(7), carried=False)
    carried, mode = evaluate_split(model, task, "valid", batch_size=5, device=CPU)
    assert mode == "carried"
    ref_car = _full_softmax_metrics(model, task, task.stream_batches("valid", 5), carried=True)
    for got_m, want_m in ((independent, ref_ind), (carried, ref_car)):
        for k in want_m:
            assert math.isclose(got_m[k], want_m[k], rel_tol=1e-5, abs_tol=1e-6), (k, got_m[k], want_m[k])


def test_adaptive_nll_equals_torchs_adaptive_softmax_and_its_gradient() -> None:
    torch.manual_seed(0)
    head = AdaptiveHead(12, 50, [5, 15, 30], div_value=2.0)
    x = torch.randn(4, 9, 12, requires_grad=True)
    t = torch.randint(0, 50, (4, 9))
    t[0, :4] = torch.tensor([0, 7, 20, 45])  # every cluster present
    nll = head.nll(x, t)
    ref = -head.asm(x.reshape(-1, 12), t.reshape(-1)).output.view(4, 9)
    torch.testing.assert_close(nll, ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(nll, -head(x).gather(-1, t.unsqueeze(-1)).squeeze(-1), atol=1e-5, rtol=1e-5)
    g = torch.autograd.grad(nll.sum(), [x, *head.parameters()])
    r = torch.autograd.grad(ref.sum(), [x, *head.parameters()])
    for a, b in zip(g, r):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match=r"target ids must lie in \[0, 50\)"):
        head.nll(x, t + 50)


def test_training_and_evaluation_never_build_the_full_log_probabilities(corpus: Path, tmp_path: Path,
                                                                        monkeypatch) -> None:
    """The (B, L, V) tensor comes only from ``AdaptiveHead.forward``; training and evaluation must not call it."""
    calls: list[tuple[int, ...]] = []
    full = AdaptiveHead.forward

    def spy(self, x):
        calls.append(tuple(x.shape))
        return full(self, x)

    monkeypatch.setattr(AdaptiveHead, "forward", spy)
    res = train("lstm_native", "lm", model_args={"d_model": 16, **ADAPTIVE},
                task_args={"dataset": "text", "data_dir": str(corpus), "bptt": 9},
                config={"steps": 6, "batch_size": 4, "eval_every": 3, "eval_batch_size": 3, "progress": False,
                        "tensorboard": False, "test_split": "test"}, out=tmp_path / "runs", index=False)
    assert res.status == "finished" and math.isfinite(res.test["cross_entropy"])
    # the trainer's fit check runs the model once on a 2-row batch (outputs, for the shape message); nothing else
    assert all(shape[0] <= 2 for shape in calls), calls
    n_fit = len(calls)
    task = _task(corpus)
    model = _model(task, **ADAPTIVE)
    evaluate(model, task, task.build("valid", EVAL_SEED), batch_size=4, device=CPU)
    evaluate_split(model, task, "valid", batch_size=4, device=CPU)
    assert len(calls) == n_fit
    # a caller that needs the distribution (generation, sampling) still gets it
    model(task.train_batch(0, 2)["inputs"])
    assert len(calls) == n_fit + 1


def test_evaluation_scores_in_bounded_chunks(monkeypatch) -> None:
    torch.manual_seed(0)
    rows_seen: list[int] = []
    for head in (AdaptiveHead(8, 40, [6, 20], div_value=2.0), torch.nn.Linear(8, 40)):
        x, t = torch.randn(3, 50, 8), torch.randint(0, 40, (3, 50))
        with torch.no_grad():
            whole = head_nll(head, x, t)
            monkeypatch.setattr(heads_mod, "EVAL_CHUNK_ELEMENTS", 40 * 16)  # 16 rows of the widest matrix
            first = head.asm.head if isinstance(head, AdaptiveHead) else head  # sees every row once
            handle = first.register_forward_pre_hook(lambda m, a: rows_seen.append(a[0].shape[0]))
            chunked = head_nll(head, x, t)
            handle.remove()
            monkeypatch.setattr(heads_mod, "EVAL_CHUNK_ELEMENTS", 1 << 22)
        torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=1e-6)
        width = head.widest if isinstance(head, AdaptiveHead) else 40
        assert sum(rows_seen) == 150 and max(rows_seen) <= 40 * 16 // width, rows_seen
        rows_seen.clear()


def test_default_cutoffs_rule() -> None:
    assert default_cutoffs(10_000) == [2000, 5000]
    assert default_cutoffs(33_278) == [2000, 10_000]
    assert default_cutoffs(267_735) == [2000, 10_000, 50_000]
    assert all(default_cutoffs(n) == [n // 5, n // 2] for n in (10, 999, 10_000))  # the former rule up to 10k
    assert default_cutoffs(3) == [1, 2]
    with pytest.raises(ValueError, match="d_output >= 3"):
        default_cutoffs(2)


@pytest.mark.parametrize("head", ["linear", "adaptive"])
def test_tied_weights_share_the_embedding(head: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    kw = {"head": head, "cutoffs": [5, 15], "div_value": 2.0} if head == "adaptive" else {"head": head}
    model = create_model("lstm_native", d_model=8, vocab_size=30, d_input=None, d_output=30, tie_weights=True, **kw)
    untied = create_model("lstm_native", d_model=8, vocab_size=30, d_input=None, d_output=30, **kw)
    keys = list(model.state_dict())
    assert not any(k.startswith("head.") and k.endswith("weight") and "cluster" not in k for k in keys), keys
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in untied.parameters())
    x, t = torch.randint(0, 30, (2, 6)), torch.randint(0, 30, (2, 6))
    logp = torch.log_softmax(model(x)[0], -1)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(2, 6))
    nll = model(x, targets=t)[0]
    torch.testing.assert_close(nll, -logp.gather(-1, t.unsqueeze(-1)).squeeze(-1), atol=1e-5, rtol=1e-5)
    # the output side's gradient lands in the embedding (rows never read as inputs still get one)
    model.zero_grad()
    nll.sum().backward()
    unseen = sorted(set(range(30)) - set(x.flatten().tolist()) - set(range(5, 30) if head == "adaptive" else ()))
    assert model.embed.weight.grad[unseen].abs().sum() > 0 or not unseen
    # a copy shares its own embedding; save/load keeps the tie
    twin = copy.deepcopy(model)
    assert twin.head.embedding is twin.embed and twin.head.embedding is not model.embed
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.head.embedding is loaded.embed
    torch.testing.assert_close(loaded(x, targets=t)[0], nll.detach())
    with pytest.raises(ConfigError, match="tie_weights=True needs a token embedding"):
        create_model("lstm_native", d_model=8, d_input=3, d_output=30, tie_weights=True, **kw)


@pytest.mark.parametrize("head", [ADAPTIVE, {"head": "linear"}], ids=["adaptive", "linear"])
def test_bf16_scores_are_float32_and_close_to_the_float32_path(corpus: Path, head: dict) -> None:
    task = _task(corpus)
    model = _model(task, **head)
    batch = task.train_batch(0, 4)
    fp32 = score_batch(model, task, batch, device=CPU)
    bf16 = score_batch(model, task, batch, device=CPU, bf16=True)
    assert bf16.values.dtype == torch.float32
    torch.testing.assert_close(bf16.values, fp32.values, atol=0.1, rtol=0.02)
    batch_loss(task, bf16, batch).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())

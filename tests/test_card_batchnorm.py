"""Card ``batchnorm``: claim predicates on fabricated results, the grid, the feed-forward models, a tiny reproduce."""

from __future__ import annotations

import pytest
import torch

import seqzoo
from seqzoo.experiments import testing
from seqzoo.experiments.card import Results
from seqzoo.experiments.cards import batchnorm
from seqzoo.experiments.registry import get_experiment

FULL = 2000


def _records(plain_final: float = 0.95, bn_curve: dict[int, float] | None = None, plain_hi: float = 0.10,
             bn_hi: float = 0.96, family: str = "mlp") -> list[dict]:
    """One family's grid at FULL steps: plain/BN at every lr multiple, BN-x5 and BN-same-lr budget curves."""
    bn_curve = bn_curve or {100: 0.90, 200: 0.94, 400: 0.96, 1000: 0.97, FULL: 0.975}
    rows = []
    for m in batchnorm.LR_MULTIPLES:
        rows.append({"arch": family, "lr_x": m, "steps": FULL,
                     "accuracy": plain_final if m == 1 else (plain_hi if m == batchnorm.HIGH_LR else 0.9)})
        if m not in (1, 5):
            rows.append({"arch": f"{family}_bn", "lr_x": m, "steps": FULL,
                         "accuracy": bn_hi if m == batchnorm.HIGH_LR else 0.95})
    for n, acc in bn_curve.items():
        rows.append({"arch": f"{family}_bn", "lr_x": 5, "steps": n, "accuracy": acc})
        rows.append({"arch": f"{family}_bn", "lr_x": 1, "steps": n, "accuracy": acc - 0.02})
        if n != FULL:
            rows.append({"arch": family, "lr_x": 1, "steps": n, "accuracy": 0.5})
    return rows


def _results(rows: list[dict]) -> Results:
    return Results.from_records(rows, "accuracy")


def test_registered_and_grid_shape() -> None:
    card = get_experiment("batchnorm")
    small = card.entries("small")
    per_family = 2 * len(batchnorm.LR_MULTIPLES) + len(batchnorm.CURVES) * (len(batchnorm.BUDGETS) - 1)
    assert len(small) == len(batchnorm.FAMILIES) * per_family == 40
    assert {e.model for e in small} == {"mlp", "mlp_bn", "cnn", "cnn_bn"}
    for e in small:
        family = e.labels["arch"].removesuffix("_bn")
        assert e.train["lr"] == pytest.approx(batchnorm.LR0[family] * e.labels["lr_x"])
        assert e.train["steps"] == e.labels["steps"] and e.task_args == {"layout": "rows"}
    assert {e.labels["steps"] for e in small if e.labels["arch"] == "cnn_bn" and e.labels["lr_x"] == 5} == \
        {100, 200, 400, 1000, FULL}
    sc = card.scale("small")
    assert len(sc.seeds) >= 2 and sc.train["clip_norm"] is None and sc.train["optimizer"] == "sgd"
    assert sc.train["batch_size"] == 60


@pytest.mark.parametrize("family", batchnorm.FAMILIES)
def test_fewer_steps_held_not_held_undecided(family: str) -> None:
    claim = testing.claim("batchnorm", f"{family}_bn_5x_fewer_steps")
    out = claim.evaluate(_results(_records(family=family)))
    assert out.held is True and out.numbers["speedup_bn_x5"] == pytest.approx(FULL / 400)
    out = claim.evaluate(_results(_records(plain_final=0.965, family=family)))  # BN-x5 at 400 steps: 0.96 < 0.965
    assert out.held is False and out.numbers["speedup_bn_x5"] == pytest.approx(FULL / 1000)
    out = claim.evaluate(_results(_records(plain_final=0.99, family=family)))
    assert out.held is False and out.numbers["speedup_bn_x5"] is None and "not reached" in out.detail
    rows = [r for r in _records(family=family) if not (r["arch"].endswith("_bn") and r["steps"] == 400)]
    assert claim.evaluate(_results(rows)).held is None
    other = "cnn" if family == "mlp" else "mlp"
    assert claim.evaluate(_results(_records(family=other))).held is None


@pytest.mark.parametrize("family", batchnorm.FAMILIES)
def test_high_lr_held_not_held_undecided(family: str) -> None:
    claim = testing.claim("batchnorm", f"{family}_bn_high_lr")
    out = claim.evaluate(_results(_records(family=family)))
    assert out.held is True and out.numbers["plain_x10"] == 0.1 and out.numbers["plain_best_lr_x"] == 1
    assert claim.evaluate(_results(_records(bn_hi=0.85, family=family))).held is False  # BN does not train
    assert claim.evaluate(_results(_records(plain_hi=0.94, family=family))).held is False  # plain drops only 0.01
    assert claim.evaluate(_results(_records(plain_hi=0.93, family=family))).held is True  # a drop of 0.02 counts
    assert claim.evaluate(_results(_records(plain_hi=float("nan"), family=family))).held is True  # diverged
    rows = [r for r in _records(family=family) if r["lr_x"] != batchnorm.HIGH_LR]
    assert claim.evaluate(_results(rows)).held is None


@pytest.mark.parametrize("name", ["mlp", "mlp_bn", "cnn", "cnn_bn"])
def test_models_bn_before_nonlinearity_and_fixed_size(name: str) -> None:
    model = seqzoo.create_model(name)
    mods = list(model.body)
    kinds = [type(m).__name__ for m in mods]
    if name.endswith("_bn"):
        bn = [i for i, k in enumerate(kinds) if k.startswith("BatchNorm")]
        assert bn and all(kinds[i + 1] in ("Sigmoid", "ReLU") for i in bn)  # BN right before each nonlinearity
        assert all(getattr(mods[i - 1], "bias", None) is None for i in bn)  # BN's beta replaces the layer bias
    out, state = model(torch.rand(4, 8, 8))
    assert out.shape == (4, 10) and state == ()
    assert model.fixed_length and not model.is_causal and not model.supports_step
    with pytest.raises(ValueError, match="expected input of shape"):
        model(torch.rand(4, 7, 8))
    mask = torch.ones(4, 8, dtype=torch.bool)
    model(torch.rand(4, 8, 8), mask=mask)
    mask[0, -1] = False
    with pytest.raises(ValueError, match="no padding"):
        model(torch.rand(4, 8, 8), mask=mask)


@pytest.mark.parametrize("norm", ["bln", "layer"])
def test_other_norms_build_and_train_step(norm: str) -> None:
    for name in ("mlp", "cnn"):
        model = seqzoo.create_model(name, norm=norm)
        out, _ = model(torch.rand(5, 8, 8))
        out.sum().backward()
        assert all(p.grad is not None for p in model.parameters())


def test_tiny_reproduce(tmp_path) -> None:
    from seqzoo.experiments.runner import reproduce

    report = reproduce("batchnorm", scale="tiny", out=tmp_path, workers=1, progress=False, echo=None)
    assert not report.failures and report.runs_total == 7
    held = {c.name: r.held for c, r in report.claims}
    assert held["mlp_bn_5x_fewer_steps"] is not None and held["mlp_bn_high_lr"] is not None  # the MLP claims decide
    assert held["cnn_bn_5x_fewer_steps"] is None and held["cnn_bn_high_lr"] is None  # the tiny grid has no CNN
    assert (report.out_dir / "curves.png").exists()

"""DP-SGD (training/privacy.py, per_sample.py, accountant.py): accountant table, per-sample gradients of every
model, the Opacus cross-check, clipping and noise properties, the leak validator and a tiny private run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_conformance import CASES, build, make_inputs
from torch import nn

import seqzoo
from seqzoo.errors import ConfigError
from seqzoo.training.accountant import epsilon, rdp_of_order
from seqzoo.training.per_sample import _AUTO_CHOICE, _loop, example, per_sample_grads
from seqzoo.training.privacy import (
    DPSGD,
    check_model,
    check_settings,
    clip_factors,
    clip_per_sample,
    clipped_sum,
    leaking_modules,
    noisy_sum,
    poisson_lot,
    resolve_privacy,
)

pytest.importorskip("opacus", reason="the privacy extra (opacus) is not installed")

# spec §7.2 reference table: (N, L, sigma, steps, eps Balle/Opacus-style, eps classic), delta = 1e-5
TABLE = [(60_000, 256, 1.1, 14_062, 2.60, 3.01), (60_000, 256, 0.7, 10_546, 6.37, 7.12),
         (50_000, 256, 1.1, 5_859, 1.99, 2.35), (60_000, 600, 4.0, 10_000, 1.04, 1.26),
         (100, 1, 1.0, 1_000, 2.11, 2.54), (1_437, 64, 1.0, 673, 8.63, 9.59), (1_437, 64, 1.5, 673, 4.29, 4.84)]


@pytest.mark.parametrize("n,lot,sigma,steps,balle,classic", TABLE)
def test_accountant_reproduces_reference_table(n, lot, sigma, steps, balle, classic):
    q = lot / n
    assert round(epsilon(sigma, q, steps, 1e-5, "rdp", integer_orders=True), 2) == balle
    assert round(epsilon(sigma, q, steps, 1e-5, "rdp-classic"), 2) == classic


def test_accountant_orders_and_prv_are_tighter_and_q1_rdp_is_closed_form():
    q, steps = 64 / 1437, 673
    ref = epsilon(1.0, q, steps, 1e-5, "rdp", integer_orders=True)
    assert epsilon(1.0, q, steps, 1e-5, "rdp") <= ref  # more orders only tighten
    assert epsilon(1.0, q, steps, 1e-5, "prv") < ref
    for alpha, sigma in ((2, 1.0), (5, 1.3), (32, 4.0)):
        assert rdp_of_order(sigma, 1.0, 1, alpha) == pytest.approx(alpha / (2 * sigma ** 2), rel=1e-9)
    assert epsilon(1.0, q, 0, 1e-5) == 0.0
    with pytest.raises(ConfigError, match="accountant"):
        epsilon(1.0, q, 10, 1e-5, "moments")


# ----- per-sample gradients of every registered model ------------------------------------------------------------

def _row_loss(model, b):
    out = model(b["inputs"])
    out = out[0] if isinstance(out, tuple) else out
    return out.pow(2).flatten(1).mean(1).sum()


def _no_dropout(model):
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    return model


@pytest.mark.parametrize("name,kind", CASES)
def test_per_sample_grads_equal_loop_for_every_model(name, kind):
    """auto (vmap where it applies) equals the per-example loop, and the loop sums to the batch gradient; models
    whose examples interact through batch statistics are refused instead."""
    model = _no_dropout(build(name, kind))
    if leaking_modules(model):
        with pytest.raises(ConfigError, match="privacy: module .* statistics of the whole batch"):
            check_model(model, check_settings({"sigma": 1.0}))
        return
    x = make_inputs(model, 3, 7, torch.Generator().manual_seed(1))
    batch = {"inputs": x}
    auto, losses = per_sample_grads(model, _row_loss, batch, "auto")
    loop, loop_losses = _loop(model, _row_loss, batch)
    torch.testing.assert_close(losses, loop_losses, rtol=1e-9, atol=1e-12)
    for k in loop:
        torch.testing.assert_close(auto[k], loop[k], rtol=1e-7, atol=1e-10)
    params = [p for p in model.parameters() if p.requires_grad]
    total = torch.autograd.grad(_row_loss(model, batch), params, allow_unused=True)
    for g, p, t in zip(loop.values(), params, total):
        torch.testing.assert_close(g.sum(0), torch.zeros_like(p) if t is None else t, rtol=1e-7, atol=1e-10)


def test_vmap_is_used_where_it_applies_and_loop_elsewhere():
    for name, expected in (("mlp", "vmap"), ("tcn", "vmap"), ("lstm", "loop")):  # lstm: the fused autograd Function
        model = _no_dropout(build(name, "features"))
        x = make_inputs(model, 2, 7, torch.Generator().manual_seed(0))
        per_sample_grads(model, _row_loss, {"inputs": x}, "auto")
        assert _AUTO_CHOICE[model] == expected, name


# ----- cross-check against Opacus's GradSampleModule --------------------------------------------------------------

class _Mixed(nn.Module):
    """Embedding -> Conv1d -> GroupNorm -> LayerNorm -> Linear: modules Opacus computes per-sample gradients for."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.conv = nn.Conv1d(6, 8, 3, padding=1)
        self.gn = nn.GroupNorm(2, 8)
        self.ln = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 5)
        self.conv2 = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, inputs):
        h = self.gn(self.conv(self.emb(inputs).transpose(1, 2)))  # (B, 8, L)
        h = self.conv2(h.unsqueeze(1)).mean(1)  # (B, 8, L)
        return self.fc(self.ln(h.transpose(1, 2))).mean(1)


class _LSTMNet(nn.Module):
    def __init__(self):
        super().__init__()
        from opacus.layers import DPLSTM

        self.lstm = DPLSTM(4, 6, batch_first=True)
        self.fc = nn.Linear(6, 3)

    def forward(self, inputs):
        return self.fc(self.lstm(inputs)[0][:, -1])


@pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")  # Opacus's hooks on a leaf input
@pytest.mark.parametrize("make,inputs", [
    (_Mixed, lambda g: torch.randint(0, 11, (4, 7), generator=g)),
    (_LSTMNet, lambda g: torch.randn(4, 5, 4, generator=g)),
])
def test_per_sample_grads_match_opacus_grad_sample_module(make, inputs):
    from opacus import GradSampleModule

    torch.manual_seed(0)
    model = make()
    x = inputs(torch.Generator().manual_seed(0))
    ours, _ = per_sample_grads(model, _row_loss, {"inputs": x}, "auto")
    gsm = GradSampleModule(make(), loss_reduction="sum")
    gsm._module.load_state_dict(model.state_dict())
    _row_loss(gsm, {"inputs": x}).backward()
    for name, p in gsm._module.named_parameters():
        torch.testing.assert_close(ours[name], p.grad_sample, rtol=1e-4, atol=1e-6)


# ----- clipping and noise -----------------------------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.floats(1e-3, 10.0), st.floats(1e-3, 100.0), st.integers(0, 2 ** 31 - 1))
def test_every_clipped_norm_is_at_most_c(n, clip, scale, seed):
    g = torch.Generator().manual_seed(seed)
    grads = {"a": torch.randn(n, 3, 4, generator=g, dtype=torch.float64) * scale,
             "b": torch.randn(n, 5, generator=g, dtype=torch.float64) * scale}
    grads["b"][0] = 0.0
    clipped, norms = clip_per_sample(grads, clip)
    new = torch.sqrt(sum(v.flatten(1).pow(2).sum(1) for v in clipped.values()))
    assert bool((new <= clip * (1 + 1e-9)).all())
    small = norms <= clip  # examples already within C are untouched
    for k in grads:
        torch.testing.assert_close(clipped[k][small], grads[k][small])
    factor, _ = clip_factors(grads, clip)  # the step's one contraction equals the sum of the clipped copies
    for k, v in clipped_sum(grads, factor).items():
        torch.testing.assert_close(v, clipped[k].sum(0))


@settings(max_examples=8, deadline=None)
@given(st.floats(0.3, 3.0), st.floats(0.1, 5.0), st.integers(0, 2 ** 31 - 1))
def test_summed_noise_std_is_sigma_times_c(sigma, clip, seed):
    params = {"w": torch.zeros(200, 200, dtype=torch.float64)}
    grads = {"w": torch.zeros(3, 200, 200, dtype=torch.float64)}
    factor, _ = clip_factors(grads, clip)
    noise = noisy_sum(clipped_sum(grads, factor), params, sigma, clip, torch.Generator().manual_seed(seed))["w"]
    # 40,000 draws: the sample std is within 2% of sigma * C with overwhelming probability
    assert float(noise.std()) == pytest.approx(sigma * clip, rel=0.02)
    assert abs(float(noise.mean())) < 0.02 * sigma * clip


def test_poisson_lot_is_deterministic_and_has_the_expected_size():
    lots = [poisson_lot(1437, 64 / 1437, seed=3, step=s) for s in range(300)]
    sizes = torch.tensor([len(lot) for lot in lots], dtype=torch.float64)
    assert float(sizes.mean()) == pytest.approx(64, rel=0.05)
    assert float(sizes.std()) > 3  # a random size, not a fixed batch
    assert torch.equal(lots[7], poisson_lot(1437, 64 / 1437, seed=3, step=7))
    assert not torch.equal(lots[7], poisson_lot(1437, 64 / 1437, seed=4, step=7))


# ----- the step, the validator and a run --------------------------------------------------------------------------

def _digits():
    from seqzoo.tasks import create_task

    return create_task("digits", layout="rows", n_valid=60, n_test=300)


def _mlp(norm=None):
    torch.manual_seed(0)
    return seqzoo.create_model("mlp", seq_len=8, d_input=8, d_output=10, d_model=16, n_layers=2, norm=norm,
                               activation="tanh")


class _FakeTrainer:
    done = 5


def test_dp_step_is_clipped_sum_plus_noise_over_expected_lot():
    task, model = _digits(), _mlp("layer")
    s = resolve_privacy({"sigma": 0.7, "clip": 0.05}, task, model, steps=10, batch_size=32)
    hook = DPSGD(s, task, seed=0, device=torch.device("cpu"))
    batch = hook.train_batch(_FakeTrainer(), 5)
    hook.compute_gradients(_FakeTrainer(), model, batch)
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    # by hand: one example at a time, clip, sum, the same noise draw, divide by L = 32 (not the realized size)
    from seqzoo.tasks.base import generator

    total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(batch["inputs"])):
        model.zero_grad()
        hook.loss(model, example(batch, i)).backward()
        norm = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters()))
        for n, p in model.named_parameters():
            total[n] += p.grad * min(1.0, 0.05 / norm)
    noise = torch.randn(sum(p.numel() for p in model.parameters()), generator=generator("dp-noise", 0, 5))
    at = 0
    for n, p in model.named_parameters():  # one draw, split in parameter order
        want = (total[n] + noise[at:at + p.numel()].view(p.shape) * 0.7 * 0.05) / 32
        at += p.numel()
        torch.testing.assert_close(got[n], want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("norm", ["batch", "bln"])
def test_validator_refuses_batch_statistics_with_the_safe_options(norm):
    with pytest.raises(ConfigError) as err:
        resolve_privacy({"sigma": 1.0}, _digits(), _mlp(norm), steps=10, batch_size=32)
    msg = str(err.value)
    assert "\n" not in msg and "body.1" in msg and "'group'" in msg and "batch_public" in msg


def test_validator_probe_catches_unlisted_batch_statistics_and_public_bn_passes():
    class Center(nn.Module):  # batch statistics in a module no list knows
        def forward(self, x):
            return x - x.mean(0, keepdim=True)

    model = _mlp()
    model.body[1] = Center()
    with pytest.raises(ConfigError, match="changes when another example is in the batch"):
        resolve_privacy({"sigma": 1.0}, _digits(), model, steps=10, batch_size=32)
    with pytest.raises(ConfigError, match="no public batch"):
        resolve_privacy({"sigma": 1.0}, _digits(), _mlp("batch_public"), steps=10, batch_size=32)
    s = resolve_privacy({"sigma": 1.0, "public_split": "valid"}, _digits(), _mlp("batch_public"), 10, 32)
    assert s["guarantee"] and s["n_public"] == 60
    with pytest.raises(ConfigError, match="statistics of the whole batch"):
        resolve_privacy({"sigma": 1.0, "public_split": "valid"}, _digits(), _mlp("batch_mixed"), 10, 32)
    s = resolve_privacy({"sigma": 1.0, "public_split": "valid", "replication": True}, _digits(),
                        _mlp("batch_mixed"), 10, 32)
    assert s["guarantee"] is False


def test_public_bn_statistics_never_see_private_rows():
    task, model = _digits(), _mlp("batch_public")
    s = resolve_privacy({"sigma": 1.0, "public_split": "valid"}, task, model, steps=10, batch_size=32)
    hook = DPSGD(s, task, seed=0, device=torch.device("cpu"))
    stats = []
    for step in (1, 2):  # two different private lots, the same weights
        for m in model.modules():
            if hasattr(m, "running_mean"):
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
        trainer = _FakeTrainer()
        trainer.done = step
        hook.compute_gradients(trainer, model, hook.train_batch(trainer, step))
        stats.append(torch.cat([m.running_mean.clone() for m in model.modules() if hasattr(m, "running_mean")]))
    assert not torch.equal(stats[0], torch.zeros_like(stats[0]))
    torch.testing.assert_close(stats[0], stats[1], rtol=0, atol=0)


def test_privacy_settings_errors_are_one_line():
    with pytest.raises(ConfigError, match="did you mean 'sigma'"):
        check_settings({"sigmaa": 1.0})
    with pytest.raises(ConfigError, match="'sigma' must be a positive number"):
        check_settings({"sigma": -1})
    with pytest.raises(ConfigError, match="'privacy' must be a dict"):
        check_settings(1.0)
    with pytest.raises(ConfigError, match="'public_split' must be valid, test or null"):
        check_settings({"sigma": 1.0, "public_split": "train"})  # the private rows are never the public batch


def test_private_run_records_epsilon_in_config_and_metrics(tmp_path):
    from seqzoo.training import train

    r = train("mlp", "digits", model_args={"norm": "group", "d_model": 16, "n_layers": 1, "activation": "tanh"},
              task_args={"layout": "rows", "n_valid": 60, "n_test": 300},
              config={"steps": 4, "batch_size": 64, "optimizer": "sgd", "lr": 0.5, "clip_norm": None,
                      "eval_every": 4, "progress": False, "tensorboard": False, "privacy": {"sigma": 1.5}},
              out=tmp_path, index=False)
    cfg = json.loads((r.run_dir / "config.json").read_text())["train"]["privacy"]
    q = 64 / 1437
    assert cfg["sample_rate"] == pytest.approx(q) and cfg["steps"] == 4 and cfg["delta"] == 1e-5
    assert cfg["epsilon"] == pytest.approx(epsilon(1.5, q, 4, 1e-5), abs=1e-5) and "Balle" in cfg["conversion"]
    assert r.test["dp_epsilon"] == pytest.approx(cfg["epsilon"], abs=1e-5) and r.test["dp_sigma"] == 1.5
    rows = [json.loads(line) for line in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("dp_lot" in row for row in rows if row["split"] == "train")
    from seqzoo.experiments.compare import format_table, group_runs, load_runs

    table = format_table(group_runs(load_runs([str(tmp_path)]), "accuracy"), "accuracy")
    assert "eps (delta)" in table and f"{r.test['dp_epsilon']:.3g} (1e-05)" in table
    with pytest.raises(ConfigError, match="statistics of the whole batch"):
        train("mlp_bn", "digits", task_args={"layout": "rows"}, config={"steps": 1, "privacy": {"sigma": 1.0}},
              out=tmp_path, index=False)


@pytest.mark.parametrize("norm", [None, "layer", "group"])
def test_ghost_clipping_equals_clipping_materialized_per_example_grads(norm):
    from seqzoo.training.ghost_clip import clipped_sum_ghost, supports

    task, model = _digits(), _mlp(norm)
    s = resolve_privacy({"sigma": 1.0, "clip": 0.3, "per_sample": "vmap"}, task, model, steps=10, batch_size=32)
    hook = DPSGD(s, task, seed=0, device=torch.device("cpu"))
    batch = hook.train_batch(_FakeTrainer(), 3)
    assert supports(model, task) and not supports(_mlp("batch_public"), task)
    ghost, norms, _ = clipped_sum_ghost(model, lambda m, b: hook.loss(m, b) * len(b["inputs"]), batch, 0.3)
    grads, _ = per_sample_grads(model, hook.loss, batch, "vmap")
    factor, want_norms = clip_factors(grads, 0.3)
    torch.testing.assert_close(norms, want_norms, rtol=1e-4, atol=1e-6)
    assert float((want_norms > 0.3).float().mean()) > 0.2  # clipping is active for part of the lot
    want = clipped_sum(grads, factor)
    assert set(ghost) == set(want)
    for k in want:
        torch.testing.assert_close(ghost[k], want[k], rtol=1e-4, atol=1e-6)


def test_ghost_linear_norms_with_positions():
    """A Linear applied at every position (T > 1): the Gram-matrix norm equals the materialized one."""
    from seqzoo.training.ghost_clip import _linear

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 5, 3, generator=g, dtype=torch.float64), torch.randn(4, 5, 2, generator=g,
                                                                                dtype=torch.float64)
    sq, sums = _linear(a, b, True)
    per_w = torch.einsum("ito,itd->iod", b, a)
    per_b = b.sum(1)
    torch.testing.assert_close(sq, per_w.flatten(1).pow(2).sum(1) + per_b.pow(2).sum(1))
    c = torch.rand(4, generator=g, dtype=torch.float64)
    w, bias = sums(c)
    torch.testing.assert_close(w, torch.tensordot(c, per_w, dims=1))
    torch.testing.assert_close(bias, c @ per_b)

"""Target-space learning (spec §6.4): the regularized least-squares solve, the layers, the models and their runs.

The spec's three unit tests: (1) with λ → 0 and B̄ ≥ n + 1, targets ``Ā W_true`` give back ``W_true``; (2) SCU and
OCU coincide when every target is exactly achievable; (3) the loss gradient with respect to the targets matches
finite differences in float64. Around them: the solve against its SVD twin, the RNN's padding and state, and the
normal trainer with every optimizer (the realisation batch is the task's training inputs).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

import seqzoo
from seqzoo.errors import ConfigError
from seqzoo.layers.target_space import TSRNN, TSConv1d, TSDense, with_bias
from seqzoo.models.target_space import TargetSpaceCNN, TargetSpaceMLP, TargetSpaceRNN
from seqzoo.ops.ridge import ridge_solve, ridge_solve_reference
from seqzoo.tasks import create_task
from seqzoo.training.config import OPTIMIZERS
from seqzoo.training.target_space import use_task_realisation

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----- the solve ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("rows", "cols"), [(40, 6), (5, 9)])  # over- and under-determined
@pytest.mark.parametrize("lam", [0.0, 1e-3, 0.7])
def test_ridge_solve_matches_its_svd_twin(rows: int, cols: int, lam: float) -> None:
    g = _gen()
    A, T = torch.randn(rows, cols, generator=g, dtype=F64), torch.randn(rows, 3, generator=g, dtype=F64)
    torch.testing.assert_close(ridge_solve(A, T, lam), ridge_solve_reference(A, T, lam), rtol=1e-8, atol=1e-9)


def test_ridge_solve_returns_the_input_dtype_and_propagates_nan() -> None:
    g = _gen()
    A, T = torch.randn(20, 4, generator=g), torch.randn(20, 2, generator=g)
    assert ridge_solve(A, T, 1e-3).dtype == torch.float32
    T[3, 1] = math.nan
    assert torch.isnan(ridge_solve(A, T, 1e-3)[:, 1]).all()


def test_ridge_solve_rejects_bad_shapes_and_lambda() -> None:
    with pytest.raises(ValueError, match="equal rows"):
        ridge_solve(torch.zeros(4, 2), torch.zeros(5, 1), 0.1)
    with pytest.raises(ValueError, match="lam"):
        ridge_solve(torch.zeros(4, 2), torch.zeros(4, 1), -1.0)


def test_ridge_solve_gradient_matches_finite_differences() -> None:
    g = _gen(1)
    for rows, cols in ((12, 4), (3, 6)):
        A = torch.randn(rows, cols, generator=g, dtype=F64, requires_grad=True)
        T = torch.randn(rows, 2, generator=g, dtype=F64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a, t: ridge_solve(a, t, 0.05), (A, T))


# ----- spec §6.4 unit tests ---------------------------------------------------------------------------------------
def test_exact_targets_recover_the_true_weights() -> None:
    """(1) λ → 0, B̄ >= n_in + 1: the targets ``Ā W_true`` are solved back to ``W_true``."""
    g = _gen(2)
    x_bar = torch.randn(30, 5, generator=g, dtype=F64)
    w_true = torch.randn(6, 4, generator=g, dtype=F64)
    layer = TSDense(5, 4, rows=30, lam=1e-12).to(F64)
    with torch.no_grad():
        layer.targets.copy_(with_bias(x_bar) @ w_true)
    torch.testing.assert_close(layer.matrix(with_bias(x_bar)), w_true, rtol=1e-8, atol=1e-8)
    # the same for the RNN: targets from running it with W_true give W_true back
    rnn = TSRNN(2, 3, rows=8, length=6, lam=1e-12).to(F64)
    x_seq = torch.randn(8, 6, 2, generator=g, dtype=F64)
    w_rnn = 0.5 * torch.randn(6, 3, generator=g, dtype=F64)
    with torch.no_grad():
        rnn.targets.copy_(rnn.run(x_seq, w_rnn)[1])
    torch.testing.assert_close(rnn.matrix(x_seq), w_rnn, rtol=1e-7, atol=1e-7)
    # and the convolution: targets of every position of every realisation sequence
    conv = TSConv1d(2, 3, 3, rows=8, length=6, lam=1e-12).to(F64)
    w_conv = torch.randn(7, 3, generator=g, dtype=F64)
    a = conv.patches(x_seq)[0].flatten(0, 1)
    with torch.no_grad():
        conv.dense.targets.copy_(a @ w_conv)
    torch.testing.assert_close(conv.dense.matrix(a), w_conv, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("kind", ["mlp", "rnn", "cnn"])
def test_scu_and_ocu_coincide_when_targets_are_achievable(kind: str) -> None:
    """(2) After projection with λ = 0 every target is exactly achievable: both modes solve the same weights."""
    torch.manual_seed(3)
    if kind == "mlp":
        model = TargetSpaceMLP(d_model=4, n_layers=2, seq_len=1, d_input=2, realisation_size=40, lam=0.0).to(F64)
    elif kind == "rnn":
        model = TargetSpaceRNN(d_model=3, d_input=2, realisation_size=6, realisation_len=5, lam=0.0).to(F64)
    else:
        model = TargetSpaceCNN(d_model=3, d_input=2, realisation_size=6, realisation_len=5, lam=0.0).to(F64)
    model.project_targets()  # in float64 now, so the achieved sums are exact to rounding
    scu = model.matrices()
    model.mode = "ocu"
    ocu = model.matrices()
    for a, b in zip(scu, ocu):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-7)
    # and they do differ for targets that are not achievable (the test can fail)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model.mode = "scu"
    scu2 = model.matrices()
    model.mode = "ocu"
    assert not torch.allclose(scu2[-1], model.matrices()[-1], atol=1e-4)


@pytest.mark.parametrize("kind", ["mlp", "rnn", "cnn"])
@pytest.mark.parametrize("mode", ["scu", "ocu"])
def test_target_gradient_matches_finite_differences(kind: str, mode: str) -> None:
    """(3) d loss / d targets through the solves, against central differences in float64."""
    torch.manual_seed(4)
    g = _gen(4)
    if kind == "mlp":
        model = TargetSpaceMLP(d_model=3, n_layers=2, realisation_size=10, lam=1e-2, mode=mode).to(F64)
        x = torch.randn(7, 1, 2, generator=g, dtype=F64)
        y = torch.randint(0, 2, (7,), generator=g)
    else:
        cls = TargetSpaceRNN if kind == "rnn" else TargetSpaceCNN
        model = cls(d_model=3, d_input=1, realisation_size=3, realisation_len=4, lam=1e-2, mode=mode).to(F64)
        x = torch.randn(5, 6, 1, generator=g, dtype=F64)
        y = torch.randint(0, 2, (5, 6), generator=g)
    names = [n for n, _ in model.named_parameters()]
    assert all(n.endswith("targets") for n in names)

    def loss(*targets: torch.Tensor) -> torch.Tensor:
        out, _ = functional_call(model, dict(zip(names, targets)), (x,))
        return torch.nn.functional.cross_entropy(out.reshape(-1, 2), y.reshape(-1))

    params = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())
    assert torch.autograd.gradcheck(loss, params, eps=1e-6, atol=1e-6, rtol=1e-4)


# ----- the models --------------------------------------------------------------------------------------------------
def test_weight_space_twin_has_weights_and_the_same_forward_shapes() -> None:
    ts, ws = seqzoo.create_model("ts_mlp"), seqzoo.create_model("ws_mlp")
    assert {n.split(".")[-1] for n, _ in ts.named_parameters()} == {"targets"}
    assert {n.split(".")[-1] for n, _ in ws.named_parameters()} == {"weight"}
    x = torch.randn(4, 1, 2)
    assert ts(x)[0].shape == ws(x)[0].shape == (4, 2)
    # 2-5-5-5-2 with dense shortcuts: inputs of the four layers are 2, 7, 12 and 17 wide (plus the bias)
    assert [tuple(w.shape) for w in ts.matrices()] == [(3, 5), (8, 5), (13, 5), (18, 2)]


def test_projection_init_makes_targets_the_achieved_sums() -> None:
    torch.manual_seed(5)
    model = TargetSpaceMLP(realisation_size=50, lam=1e-3).to(F64)
    _, achieved = model.propagate(model.realisation, model.matrices())
    model.project_targets()
    for layer, s in zip(model.layers, achieved):
        torch.testing.assert_close(layer.targets, s, rtol=0, atol=0)
    # the first layer's new targets are achievable: solving them again reaches them (up to the λ shrinkage)
    first = model.layers[0]
    a0 = with_bias(model.realisation)
    torch.testing.assert_close(a0 @ first.matrix(a0), first.targets, rtol=0, atol=1e-3)
    off = TargetSpaceMLP(realisation_size=50, projection_init=False)
    _, sums = off.propagate(off.realisation, off.matrices())
    assert (off.layers[0].targets - sums[0]).abs().max() > 0.1


def test_rnn_holds_its_state_at_padding_and_carries_it_across_chunks() -> None:
    torch.manual_seed(6)
    model = TargetSpaceRNN(d_model=4, d_input=2, realisation_size=5, realisation_len=6).to(F64).eval()
    x = torch.randn(2, 7, 2, dtype=F64)
    mask = torch.tensor([[True] * 7, [True] * 3 + [False] * 4])
    with torch.no_grad():
        out, (h,) = model(x, mask=mask)
        _, (h_short,) = model(x[1:, :3])
        a, s = model(x[:, :4])
        b, _ = model(x[:, 4:], s)
        full, _ = model(x)
    torch.testing.assert_close(h[1], h_short[0])
    torch.testing.assert_close(torch.cat([a, b], 1), full)


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="space"):
        seqzoo.create_model("ts_mlp", space="targets")
    with pytest.raises(ConfigError, match="mode"):
        seqzoo.create_model("ts_rnn", mode="cascade")
    with pytest.raises(ConfigError, match="lam"):
        seqzoo.create_model("ts_mlp", lam=-0.1)
    model = seqzoo.create_model("ts_rnn", realisation_size=4, realisation_len=10)
    with pytest.raises(ValueError, match="at least 4 rows"):
        model.set_realisation(torch.zeros(4, 8, 1))


def test_task_realisation_is_the_training_inputs() -> None:
    task = create_task("two_spirals")
    model = seqzoo.create_model("ts_mlp")
    use_task_realisation(model, task, seed=0)
    torch.testing.assert_close(model.realisation, task.build("train").tensors["inputs"].flatten(1))
    bits = create_task("bit_delay", delay=3, n_scored=5, n_train=20)
    rnn = seqzoo.create_model("ts_rnn", d_model=4, realisation_size=10, realisation_len=6)
    use_task_realisation(rnn, bits, seed=0)
    torch.testing.assert_close(rnn.realisation, bits.build("train").tensors["inputs"][:10, :6])
    too_many = seqzoo.create_model("ts_mlp", realisation_size=195)
    with pytest.raises(ConfigError, match="realisation_size=195"):
        use_task_realisation(too_many, task, seed=0)


# ----- the normal trainer, every optimizer ----------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_trains_with_every_optimizer(optimizer: str, tmp_path) -> None:
    torch.set_num_threads(1)  # tiny matrices: threads only add contention on a shared machine
    cfg = {"steps": 3, "batch_size": 194, "optimizer": optimizer, "lr": 0.01, "momentum": 0.9, "eval_every": 3,
           "progress": False, "tensorboard": False}
    res = seqzoo.train("ts_mlp", "two_spirals", config=cfg, out=tmp_path, index=False)
    assert res.status == "finished" and math.isfinite(res.valid["cross_entropy"])
    loaded = seqzoo.load_run(res.run_dir)
    task = create_task("two_spirals")
    torch.testing.assert_close(loaded.realisation, task.build("train").tensors["inputs"].flatten(1))
    fresh = seqzoo.create_model("ts_mlp")
    use_task_realisation(fresh, task, seed=0)
    assert not torch.equal(loaded.layers[0].targets, fresh.layers[0].targets)  # the targets were trained


# ----- the tasks ---------------------------------------------------------------------------------------------------
def test_two_spirals_is_the_spec_generator() -> None:
    task = create_task("two_spirals")
    train, test = task.build("train").tensors, task.build("test").tensors
    assert train["inputs"].shape == test["inputs"].shape == (194, 1, 2)
    for data, offset in ((train, 0.0), (test, 0.5)):
        for k in (0, 1, 50, 96):  # i = k + offset: class 0 at row 2k, class 1 (the point mirrored) at row 2k + 1
            i = k + offset
            r, theta = 0.65 + 5.85 * i / 96, i * math.pi / 16
            want = torch.tensor([r * math.cos(theta), r * math.sin(theta)])
            torch.testing.assert_close(data["inputs"][2 * k, 0], want)
            torch.testing.assert_close(data["inputs"][2 * k + 1, 0], -want)
            assert data["targets"][2 * k] == 0 and data["targets"][2 * k + 1] == 1
    assert task.baseline()["accuracy"] == 0.5


@pytest.mark.parametrize("op", ["recall", "xor", "add"])
def test_bit_delay_targets_follow_their_definition(op: str) -> None:
    delay, n_scored = 4, 9
    data = create_task("bit_delay", op=op, delay=delay, n_scored=n_scored, n_train=30).build("train").tensors
    bits = data["inputs"][..., 0].long().tolist()
    assert data["loss_mask"].sum(1).eq(n_scored).all() and not data["loss_mask"][:, :delay].any()
    for row, target in zip(bits, data["targets"].tolist()):
        carry, want = 0, []
        for t in range(delay, delay + n_scored):
            a, b = row[t - delay], row[t]
            if op == "recall":
                want.append(a)
            elif op == "xor":
                want.append(a ^ b)
            else:
                carry, bit = divmod(a + b + carry, 2)
                want.append(bit)
        assert target[delay:] == want


def test_resume_is_bit_identical(tmp_path) -> None:
    """The realisation is a saved buffer and the targets ordinary parameters: a stopped and resumed run ends equal."""
    from seqzoo.training import Trainer
    from seqzoo.training.checkpoint import load_checkpoint

    class StopAtThree(Trainer):  # stops the way a time budget does, after step 3
        def train_step(self) -> bool:
            if self.done == 3:
                self.status = "time_budget"
                return False
            return super().train_step()

    torch.set_num_threads(1)
    args = {"model_args": {"d_model": 4, "realisation_size": 20, "realisation_len": 8},
            "task_args": {"delay": 3, "n_scored": 5, "n_train": 40, "n_valid": 8, "n_test": 8},
            "config": {"steps": 6, "batch_size": 8, "eval_every": 2, "checkpoint_every": 2, "progress": False,
                       "tensorboard": False}}
    whole = Trainer("ts_rnn", "bit_delay", out=tmp_path, run_name="whole", **args).run()
    part = StopAtThree("ts_rnn", "bit_delay", out=tmp_path, run_name="part", **args).run()
    assert part.status == "time_budget" and part.steps == 3
    done = Trainer("ts_rnn", "bit_delay", out=tmp_path, run_name="part", resume=True, **args).run()
    a, b = load_checkpoint(whole.run_dir), load_checkpoint(done.run_dir)
    assert a.step == b.step == 6 and "realisation" in a.model
    assert all(torch.equal(a.model[k], b.model[k]) for k in a.model)

"""Recurrent BN's population statistics as the paper estimates them (``refit_batches``, ``training/population.py``).

The regression: with the EMA of training (momentum 0.1) the population statistics lag weights that move fast;
on the MNIST-test subset the BN-LSTM evaluated with them lost 0.30 test accuracy against its own batch statistics
(docs/results/recurrent-bn-small.md). The paper averages the batch statistics over the training set on the weights
being evaluated; the trainer now does that before every evaluation when a norm asks for it.
"""

from __future__ import annotations

import pytest
import torch

from seqzoo.errors import ConfigError
from seqzoo.layers.batch_norm import PerStepPopulation, RecurrentBatchNorm
from seqzoo.training.population import refit_populations


def test_averaging_gives_the_plain_mean_of_the_batch_statistics_and_keeps_unreached_rows() -> None:
    torch.manual_seed(0)
    pop = PerStepPopulation(3, 5, momentum=0.1)
    pop.update_rows(0, torch.randn(5, 3), torch.rand(5, 3), 4)  # some EMA state from training
    before_mean, before_var = pop.running_mean.clone(), pop.running_var.clone()
    means, variances = torch.randn(3, 2, 3), torch.rand(3, 2, 3)
    pop.begin_average()
    for m, v in zip(means, variances):
        pop.update_rows(1, m, v, 4)
    pop.end_average()
    torch.testing.assert_close(pop.running_mean[1:3], means.mean(0))
    torch.testing.assert_close(pop.running_var[1:3], variances.mean(0) * 4 / 3)
    for rows in (slice(0, 1), slice(3, 5)):  # no batch reached them: the values from before
        assert torch.equal(pop.running_mean[rows], before_mean[rows])
        assert torch.equal(pop.running_var[rows], before_var[rows])
    new_mean = torch.randn(1, 3)
    expected = pop.running_mean[1] * 0.9 + new_mean[0] * 0.1
    pop.update_rows(1, new_mean, torch.rand(1, 3), 4)  # after the average: the EMA again
    torch.testing.assert_close(pop.running_mean[1], expected)


def test_refit_batches_is_checked() -> None:
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="refit_batches"):
            RecurrentBatchNorm(4, refit_batches=bad)
    model = torch.nn.Sequential(RecurrentBatchNorm(4, refit_batches=2))
    with pytest.raises(ConfigError, match="at least 2 examples"):
        refit_populations(model, None, batch_size=1, seed=0, device=torch.device("cpu"))  # type: ignore[arg-type]
    assert refit_populations(torch.nn.Linear(2, 2), None, batch_size=1, seed=0,  # type: ignore[arg-type]
                             device=torch.device("cpu")) == 0  # nothing asks for it: nothing runs


def _train(tmp_path, refit: int, name: str):
    from seqzoo.training import train

    return train("lstm_bn", "digits", model_args={"d_model": 8, "encoder": "none",
                                                  "layer_kwargs": {"norm_kwargs": {"refit_batches": refit}}},
                 task_args={"layout": "pixels"},
                 config={"steps": 12, "batch_size": 16, "lr": 3e-2, "optimizer": "rmsprop", "eval_every": 6,
                         "progress": False, "tensorboard": False},
                 out=tmp_path, run_name=name, index=False)


def _site_inputs(model, batch) -> dict[str, list[torch.Tensor]]:
    """The input of every BN site at every step of a training-mode forward (batch statistics)."""
    seen: dict[str, list[torch.Tensor]] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, RecurrentBatchNorm):
            mod.register_forward_hook(lambda m, i, o, name=name: seen.setdefault(name, []).append(i[0].detach()))
    model.train()
    with torch.no_grad():
        model(batch["inputs"])
    return seen


def test_the_trainer_evaluates_with_the_average_of_training_batch_statistics_on_the_evaluated_weights(
        tmp_path) -> None:
    """The saved best model's population rows are the average, over the first ``refit_batches`` training batches,
    of each step's batch mean and unbiased variance computed with the saved weights themselves; training is the
    same as with the EMA (bit-identical weights), whose populations are not that average."""
    import seqzoo
    from seqzoo.tasks import create_task

    refit = _train(tmp_path, 3, "refit")
    ema = _train(tmp_path, 0, "ema")
    assert refit.status == ema.status == "finished"
    model, ema_model = seqzoo.load_model(refit.run_dir), seqzoo.load_model(ema.run_dir)
    weights = {k: v for k, v in model.state_dict().items() if "population" not in k}
    assert all(torch.equal(v, ema_model.state_dict()[k]) for k, v in weights.items())
    task = create_task("digits", layout="pixels")
    per_batch = [_site_inputs(seqzoo.load_model(refit.run_dir), task.train_batch(i, 16, 0)) for i in range(3)]
    far = 0.0
    for name, mod in model.named_modules():
        if not isinstance(mod, RecurrentBatchNorm):
            continue
        steps = len(per_batch[0][name])
        mean = torch.stack([torch.stack([a.mean(0) for a in b[name]]) for b in per_batch]).mean(0)
        var = torch.stack([torch.stack([a.var(0, unbiased=True) for a in b[name]]) for b in per_batch]).mean(0)
        torch.testing.assert_close(mod.population.running_mean[:steps], mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(mod.population.running_var[:steps], var, rtol=1e-4, atol=1e-7)
        ema_mod = dict(ema_model.named_modules())[name]
        far = max(far, float((ema_mod.population.running_mean[:steps] - mean).abs().max()))
    assert far > 1e-3  # the EMA of the same training is not the refit average

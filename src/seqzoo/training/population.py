"""Population statistics re-estimated on the weights being evaluated (recurrent BN's ``refit_batches``).

Cooijmans et al.: "At test time we use estimates obtained by averaging the minibatch estimates over the training
set"; the official ``sequential_mnist_evaluate.py`` does it after training, on the final weights, with the training
graph (h₀ noise included). An EMA kept during training instead mixes the statistics of the last ~1/momentum
updates, each taken with other weights; while the weights move fast it lags them. So before every evaluation the
trainer calls ``refit_populations``: every ``PerStepPopulation`` with ``refit_batches = N > 0`` is replaced by the
plain average of the batch statistics of the first N training batches of seed ``seed``, the model in training mode
(batch statistics, h₀ noise) under ``no_grad``. Weights and the training trajectory are untouched; the global RNG
is forked, so the steps after an evaluation draw what they drew before. Other EMA statistics in the same model
see these batches as one more training update each.
"""

from __future__ import annotations

import torch
from torch import nn

from seqzoo.errors import ConfigError
from seqzoo.layers.batch_norm import PerStepPopulation
from seqzoo.tasks.base import Task, derive_seed
from seqzoo.training.evaluation import forward, to_device, unwrap


def refit_populations(model: nn.Module, task: Task, *, batch_size: int, seed: int, device: torch.device,
                      bf16: bool = False) -> int:
    """Re-estimate the populations that ask for it (``refit_batches``); returns the number of batches run (0: none).

    All of them see the same batches: the largest ``refit_batches`` of the model.
    """
    net = unwrap(model)
    pops = [m for m in net.modules() if isinstance(m, PerStepPopulation) and m.refit_batches > 0]
    if not pops:
        return 0
    if batch_size < 2:
        raise ConfigError(f"batch_size={batch_size}: re-estimating population statistics (refit_batches) needs "
                          "batches of at least 2 examples (the unbiased variance of one example is undefined)")
    n = max(p.refit_batches for p in pops)
    was_training = net.training
    devices = [] if device.type == "cpu" else [device]
    with torch.random.fork_rng(devices=devices, device_type=device.type), torch.no_grad():
        torch.manual_seed(derive_seed("population-refit", seed))
        for p in pops:
            p.begin_average()
        net.train()
        try:
            for i in range(n):
                forward(net, to_device(task.train_batch(i, batch_size, seed), device), device=device, bf16=bf16)
        finally:
            for p in pops:
                p.end_average()
            net.train(was_training)
    return n

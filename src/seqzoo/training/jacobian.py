"""``JacobianRegularization``: add the Jacobian penalty of every DEQ in the model to the training loss.

A ``seqzoo.layers.deq.DEQ`` built with ``jac_reg > 0`` estimates ``jac_reg · ‖εᵀ J_f‖² / n`` (Hutchinson, one
vector–Jacobian product at the equilibrium, Bai et al. 2021) in each training forward, with probability
``jac_freq``, and keeps it until ``jacobian_loss()`` is called. This hook is that call, through the trainer's
``extra_loss`` point (``seqzoo.training.hooks``), so the trainer itself stays generic:

    train("mlp_deq", "digits", model_args={"deq_kwargs": {"jac_reg": 1.0}}, ..., hooks=[JacobianRegularization()])

The penalty of the last step is logged as ``jacobian_loss``. The ε and the ``jac_freq`` draw come from the global
RNG, which the trainer re-seeds from the step, so resumed runs stay bit-identical.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from seqzoo.training.hooks import TrainHook


class JacobianRegularization(TrainHook):
    """Sum of the modules' ``jacobian_loss()`` (None when no module computed one this step)."""

    def __init__(self) -> None:
        self.last = 0.0

    def extra_loss(self, trainer: Any, model: nn.Module, batch: dict[str, Any]) -> Tensor | None:
        total = None
        for module in model.modules():
            fn = getattr(module, "jacobian_loss", None)
            loss = fn() if callable(fn) else None
            if loss is not None:
                total = loss if total is None else total + loss
        self.last = 0.0 if total is None else float(total.detach())
        return total

    def metrics(self, trainer: Any, model: nn.Module) -> dict[str, float]:
        return {"jacobian_loss": self.last}

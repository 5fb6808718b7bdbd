"""Deep equilibrium models: the MLP-DEQ image classifier and the DEQ-Transformer presets with their tied twin.

* ``mlp_deq``: the spec's tiny-training model (§4.7 item 4): the flattened image is injected, ``u = U x``, into
  ``f(z; u) = tanh(W z + u)`` with weight-normalized ``W`` (d = 64); the class is read from ``z*`` by a linear
  head. It follows the feed-forward classifiers' conventions (``seqzoo.models.feedforward``: fixed input size, one
  output per example).
* ``deq_transformer`` / ``tied_transformer``: a ``SequenceModel`` of one ``DEQTransformer`` (equilibrium) or one
  ``TiedTransformer`` (the same block unrolled ``depth`` times) for language modelling (spec §4.5 at small width).

Every ``DEQ`` option (``solver``, ``max_iter``, ``tol``, ``grad``, ``jac_reg`` ...) is a key of ``layer_kwargs``
(transformers) or of ``deq_kwargs`` (``mlp_deq``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from seqzoo.layers.deq import DEQ, VariationalDropout
from seqzoo.models.feedforward import ImageClassifier
from seqzoo.models.registry import register_model
from seqzoo.models.sequence_model import SequenceModel


class TanhInjected(nn.Module):
    """``f(z, u) = tanh(W drop(z) + u)`` with weight-normalized ``W`` initialised at spectral norm about ``rho``."""

    def __init__(self, d_model: int, rho: float = 0.5, dropout: float = 0.0) -> None:
        super().__init__()
        lin = nn.Linear(d_model, d_model, bias=False)
        with torch.no_grad():
            lin.weight.mul_(rho / torch.linalg.matrix_norm(lin.weight, ord=2))
        self.W = weight_norm(lin)
        self.drop = VariationalDropout(dropout)

    def forward(self, z: Tensor, u: Tensor) -> Tensor:
        return torch.tanh(self.W(self.drop(z)) + u)


class MLPDEQ(ImageClassifier):
    """MLP-DEQ classifier: ``logits = head(z*)``, ``z* = tanh(W z* + U flatten(image) + b)``.

    Args:
        d_model: width of the equilibrium state.
        seq_len, d_input: the image is ``seq_len`` rows of ``d_input`` features (the task's input shape).
        d_output: classes.
        dropout: variational dropout on ``z`` inside ``f`` (one mask per solve).
        deq_kwargs: options of ``seqzoo.layers.deq.DEQ``.
    """

    def __init__(self, *, d_model: int = 64, seq_len: int = 8, d_input: int = 8, d_output: int = 10,
                 dropout: float = 0.0, deq_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__(seq_len, d_input, d_output, None, "tanh", d_model=d_model, n_layers=1)
        self.d_model = d_model
        self.inject = nn.Linear(seq_len * d_input, d_model)
        self.deq = DEQ(TanhInjected(d_model, dropout=dropout), **(deq_kwargs or {}))
        self.head = nn.Linear(d_model, d_output)

    def forward(self, inputs: Tensor, state: tuple | None = None, *, mask: Tensor | None = None
                ) -> tuple[Tensor, tuple]:
        u = self.inject(self.image(inputs, mask).flatten(1))
        return self.head(self.deq(u)), ()


_PAPER = "Bai, Kolter & Koltun 2019 (arXiv 1909.01377)"
# conformance: float64 and a tight tolerance, so a solve is exact to rounding (causality and chunking are checked
# to 1e-12 / 1e-6)
_TIGHT = {"max_iter": 200, "tol": 1e-13, "b_max_iter": 100, "b_tol": 1e-12}
register_model("mlp_deq", MLPDEQ, deq_kwargs={"solver": "anderson", "max_iter": 30, "tol": 1e-3},
               description="MLP-DEQ image classifier: z* = tanh(W z* + U x) (weight-normed W, d=64), Anderson "
                           "forward, implicit backward", paper=_PAPER, tags=("equilibrium", "feedforward", "image"),
               conformance={"seq_len": 7, "deq_kwargs": _TIGHT})

_TF = {"n_heads": 4, "d_ff": 256, "dropout": 0.0}
register_model("deq_transformer", SequenceModel, layer="deq_transformer", d_model=64, n_layers=1, d_input=1,
               d_output=1, layer_kwargs={**_TF, "solver": "anderson", "max_iter": 16, "tol": 1e-3,
                                         "b_solver": "anderson", "b_max_iter": 20, "b_tol": 1e-4},
               description="DEQ-Transformer: equilibrium of one weight-tied causal attention + FFN block with input "
                           "injection (Anderson forward, implicit backward, previous segment's equilibrium as "
                           "memory)", paper=_PAPER, tags=("equilibrium", "attention"),
               conformance={"n_layers": 1, "layer_kwargs": {"n_heads": 2, "d_ff": 16, **_TIGHT}})
register_model("tied_transformer", SequenceModel, layer="tied_transformer", d_model=64, n_layers=1, d_input=1,
               d_output=1, layer_kwargs={**_TF, "depth": 8},
               description="the deq_transformer's explicit twin: the same block unrolled depth=8 times with "
                           "autograd (weights tied)", paper=_PAPER, tags=("equilibrium", "attention"),
               conformance={"n_layers": 1, "layer_kwargs": {"n_heads": 2, "d_ff": 16, "depth": 3}})

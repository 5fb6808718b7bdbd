"""DP-SGD for any seqzoo model and task: ``train(..., config={"privacy": {"sigma": 1.0, ...}})``.

Each step (spec stacks-memory-...-privacy.md §7.2): a **Poisson lot** (every training example independently with
probability ``q = L / N``, where the expected lot ``L`` is the trainer's ``batch_size``), **per-example gradients**
(``training/per_sample.py``: ``vmap(grad)``, or the exact per-example loop for models vmap cannot run), **flat
clipping** of each example's gradient over all parameters to norm ``clip``, **Gaussian noise**
``N(0, sigma² clip² I)`` added to the sum, **division by the expected lot size** ``L`` (never the realized one).
The optimizer then consumes the noisy gradient (its momentum or Adam state is post-processing). ε comes from
Opacus's accountant (``training/accountant.py``).

The settings (``privacy`` in the train config; ``resolve_privacy`` is the one rule that fills the derived fields,
called by ``run_config.resolve_run``):

======================  ==========================================================================================
``sigma``               noise multiplier (required)
``clip``                per-example clipping norm C (default 1.0)
``delta``               δ of the reported (ε, δ) (default 1e-5)
``accountant``          ``rdp`` (default), ``prv`` or ``rdp-classic``
``per_sample``          ``auto`` (default: ghost clipping where it applies, else vmap, else the loop), ``ghost``,
                        ``vmap`` or ``loop``
``public_split``        a split of the task used as the public batch of public-statistics BN (None = none)
``replication``         True allows models that leak across examples (SIDP mixed-statistics BN); their ε is
                        recorded but ``guarantee`` is False
derived (recorded)      ``dataset_size`` N, ``expected_lot`` L, ``sample_rate`` q, ``steps`` T, ``epsilon``,
                        ``conversion``, ``guarantee``, ``n_public``
======================  ==========================================================================================

The noise comes from a generator seeded by (run seed, step) so resumed runs are bit-identical; that is
reproducibility, not secrecy: anyone who knows the seed can subtract the noise (Opacus's ``secure_mode`` exists for
this). Models whose training forward mixes examples (BatchNorm with batch statistics, BLN, recurrent BN, mixed BN)
are refused by ``check_model`` before any work. Under privacy the trainer's ``clip_norm`` (clipping of the
noisy lot gradient) is post-processing and keeps the guarantee; the card sets it off.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from seqzoo.errors import ConfigError
from seqzoo.registry_utils import closest
from seqzoo.tasks.base import Batch, generator
from seqzoo.training.accountant import ACCOUNTANTS, CONVERSIONS, epsilon
from seqzoo.training.ghost_clip import clipped_sum_ghost, supports
from seqzoo.training.hooks import TrainHook
from seqzoo.training.per_sample import batch_size_of, example, per_sample_grads, trainable

if TYPE_CHECKING:  # pragma: no cover
    from seqzoo.tasks.base import Task
    from seqzoo.training.trainer import Trainer

USER_KEYS = {"sigma": None, "clip": 1.0, "delta": 1e-5, "accountant": "rdp", "per_sample": "auto",
             "public_split": None, "replication": False}
PER_SAMPLE = ("auto", "ghost", "vmap", "loop")
DERIVED_KEYS = ("dataset_size", "expected_lot", "sample_rate", "steps", "epsilon", "conversion", "guarantee",
                "n_public")
SAFE_OPTIONS = ("norm='layer', 'group', 'batch_public' (BN with public-batch statistics, privacy.public_split) "
                "or no norm")


def check_settings(privacy: Any) -> dict[str, Any]:
    """The user's privacy settings with defaults filled, each checked (a ConfigError names the key)."""
    if not isinstance(privacy, dict):
        raise ConfigError(f"train config 'privacy' must be a dict of settings (e.g. {{'sigma': 1.0}}), "
                          f"got {type(privacy).__name__}")
    valid = list(USER_KEYS) + list(DERIVED_KEYS)
    for key in privacy:
        if key not in valid:
            hint = closest(str(key), valid)
            raise ConfigError(f"unknown privacy setting {key!r}" + (f"; did you mean {hint!r}?" if hint else "")
                              + f" Valid settings: {', '.join(USER_KEYS)}")
    out = {k: privacy.get(k, default) for k, default in USER_KEYS.items()}
    for key in ("sigma", "clip", "delta"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ConfigError(f"privacy {key!r} must be a positive number, got {v!r}")
        out[key] = float(v)
    if out["delta"] >= 1:
        raise ConfigError(f"privacy 'delta' must be below 1, got {out['delta']!r}")
    if out["accountant"] not in ACCOUNTANTS:
        raise ConfigError(f"privacy 'accountant' must be one of {', '.join(ACCOUNTANTS)}, got {out['accountant']!r}")
    if out["per_sample"] not in PER_SAMPLE:
        raise ConfigError(f"privacy 'per_sample' must be one of {', '.join(PER_SAMPLE)}, got {out['per_sample']!r}")
    if out["public_split"] is not None and out["public_split"] not in ("valid", "test"):  # never the private rows
        raise ConfigError(f"privacy 'public_split' must be valid, test or null, got {out['public_split']!r}")
    if not isinstance(out["replication"], bool):
        raise ConfigError(f"privacy 'replication' must be true or false, got {out['replication']!r}")
    return out


def leaking_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Submodules whose training output for one example depends on other examples of the batch.

    A module says so with ``leaks_across_examples``; otherwise BatchNorm (``nn.BatchNorm*``, S5's masked BN) and
    every norm that keeps per-step batch statistics (a ``PerStepPopulation`` child: recurrent BN, BLN, the
    post-layer sequence BN/BLN) leak. ``check_model`` also probes the model itself for leaks this list misses.
    """
    from seqzoo.layers.batch_norm import PerStepPopulation
    from seqzoo.layers.s5 import MaskedBatchNorm

    found = []
    for name, m in model.named_modules():
        leaks = getattr(m, "leaks_across_examples", None)
        if leaks is None:
            leaks = (isinstance(m, (nn.modules.batchnorm._BatchNorm, MaskedBatchNorm))
                     or any(isinstance(c, PerStepPopulation) for c in m.children()))
        if leaks:
            found.append((name or "<model>", m))
    return found


def public_modules(model: nn.Module) -> list[nn.Module]:
    """Submodules that take a public batch in front of the private rows (``n_public``)."""
    return [m for m in model.modules() if hasattr(m, "n_public")]


def check_model(model: nn.Module, settings: dict[str, Any], task: Task | None = None) -> None:
    """Refuse, in one line, a model DP-SGD cannot train with a guarantee (or that lacks its public batch).

    With ``task``, the model is also probed: example 0's training output must be the same alone and next to
    example 1 (dropout off), which catches batch statistics in modules ``leaking_modules`` does not know.
    """
    leaks = leaking_modules(model)
    if leaks and not settings["replication"]:
        name, m = leaks[0]
        raise ConfigError(f"privacy: module {name!r} ({type(m).__name__}) normalizes with statistics of the whole "
                          f"batch, so one example changes the others' gradients and DP-SGD's guarantee fails; use "
                          f"{SAFE_OPTIONS} (Opacus replaces BatchNorm with GroupNorm)")
    if public_modules(model) and settings["public_split"] is None:
        raise ConfigError("privacy: the model has public-statistics BatchNorm but no public batch; set privacy "
                          "'public_split' to a split of public data (e.g. 'valid' for the digits stand-in)")
    public = task.build(settings["public_split"]).batch(slice(None)) if task and settings["public_split"] else None
    if task is not None and not leaks and mixes_examples(model, task, public):
        raise ConfigError(f"privacy: the training output of one example changes when another example is in the "
                          f"batch ({type(model).__name__} uses batch statistics somewhere), so DP-SGD's guarantee "
                          f"fails; use {SAFE_OPTIONS}")


def mixes_examples(model: nn.Module, task: Task, public: Batch | None = None) -> bool:
    """True when example 0's training output differs alone and in a batch with example 1 (a copy is probed;
    ``public`` rows go in front, as under DP-SGD, for public-statistics norms)."""
    import copy

    from seqzoo.training.evaluation import score_batch

    probe = copy.deepcopy(model).train()
    for m in probe.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    data = task.build("train")
    pair = data.batch(slice(0, 2))
    device = next((p.device for p in probe.parameters()), torch.device("cpu"))
    p = batch_size_of(public) if public is not None else 0

    def first_row(batch: Batch) -> Tensor:
        batch = {k: v.to(device) for k, v in batch.items()}
        if public is not None:
            batch = _prepend({k: v.to(device) for k, v in public.items()}, batch)
        torch.manual_seed(0)
        with public_rows(probe, p, update_running=False):
            return score_batch(probe, task, batch, device=device).values[p:p + 1]

    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        both = first_row(pair)
        alone = first_row({k: v[:1] for k, v in pair.items()})
    return both.shape != alone.shape or not torch.allclose(both.float(), alone.float(), rtol=1e-4, atol=1e-5)


def resolve_privacy(privacy: dict[str, Any], task: Task, model: nn.Module, steps: int, batch_size: int,
                    world_size: int = 1) -> dict[str, Any]:
    """The recorded privacy settings: the user's, checked, plus (N, L, q, T, ε, conversion, guarantee, n_public).

    ``ε`` is for the planned ``steps``; the run's metrics record the ε of the steps actually taken.
    """
    s = check_settings(privacy)
    if world_size != 1:
        raise ConfigError("privacy: DP-SGD runs in one process (no torchrun data parallelism yet)")
    if getattr(task, "fresh_train_data", False):
        raise ConfigError(f"privacy: task {task.name!r} draws fresh training data every step; DP-SGD needs a fixed "
                          f"training set to sample lots from")
    check_model(model, s, task)
    n = len(task.build("train"))
    if batch_size > n:
        raise ConfigError(f"privacy: the expected lot (batch_size {batch_size}) exceeds the training set ({n})")
    q = batch_size / n
    n_public = len(task.build(s["public_split"])) if s["public_split"] is not None else 0
    eps = epsilon(s["sigma"], q, steps, s["delta"], s["accountant"])
    return {**s, "dataset_size": n, "expected_lot": batch_size, "sample_rate": q, "steps": steps,
            "epsilon": round(eps, 6), "conversion": CONVERSIONS[s["accountant"]],
            "guarantee": not leaking_modules(model), "n_public": n_public}


def poisson_lot(n: int, q: float, seed: int, step: int) -> Tensor:
    """Indices of the lot of ``step``: each of ``n`` examples independently with probability ``q``."""
    g = generator("dp-lot", seed, step)
    return (torch.rand(n, generator=g, dtype=torch.float64) < q).nonzero().squeeze(1)


def clip_factors(grads: dict[str, Tensor], clip: float) -> tuple[Tensor, Tensor]:
    """``(min(1, C / ‖g_i‖), ‖g_i‖)`` per example, the norm taken over all parameters jointly (flat clipping)."""
    norms = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1)
                                                  for g in grads.values()], 1), dim=1)
    return (clip / norms).clamp(max=1.0), norms  # norm 0 -> inf -> 1


def clip_per_sample(grads: dict[str, Tensor], clip: float) -> tuple[dict[str, Tensor], Tensor]:
    """Each example's gradient scaled to norm ≤ ``clip`` (materialized; the step uses ``clipped_sum``)."""
    factor, norms = clip_factors(grads, clip)
    return {k: g * factor.reshape(-1, *([1] * (g.dim() - 1))).to(g.dtype) for k, g in grads.items()}, norms


def clipped_sum(grads: dict[str, Tensor], factor: Tensor) -> dict[str, Tensor]:
    """``Σ_i factor_i g_i`` per parameter, as one contraction (no clipped copy of the per-example gradients)."""
    return {k: torch.tensordot(factor.to(g.dtype), g, dims=1) for k, g in grads.items()}


def noisy_sum(summed: dict[str, Tensor], params: dict[str, Tensor], sigma: float, clip: float,
              g: torch.Generator) -> dict[str, Tensor]:
    """``Σ_i ḡ_i + N(0, σ² C² I)`` per parameter (a parameter missing from ``summed``, or an empty lot: noise only)."""
    if not params:
        return {}
    dtype = next(iter(params.values())).dtype
    flat = torch.randn(sum(p.numel() for p in params.values()), generator=g, dtype=dtype) * (sigma * clip)
    out, at = {}, 0
    for name, p in params.items():  # one draw for all parameters, split in parameter order
        noise = flat[at:at + p.numel()].view(p.shape).to(device=p.device, dtype=p.dtype)
        at += p.numel()
        out[name] = (summed[name] if name in summed else torch.zeros_like(p)) + noise
    return out


@contextlib.contextmanager
def public_rows(model: nn.Module, n_public: int, update_running: bool) -> Iterator[None]:
    """Tell public-statistics norms that the leading ``n_public`` rows are public (and whether to update stats)."""
    mods = public_modules(model)
    old = [(m.n_public, m.update_running) for m in mods]
    try:
        for m in mods:
            m.n_public, m.update_running = n_public, update_running
        yield
    finally:
        for m, (n, u) in zip(mods, old):
            m.n_public, m.update_running = n, u


def _prepend(public: Batch, batch: Batch) -> Batch:
    n = batch_size_of(batch)
    out = dict(batch)
    for k, v in batch.items():
        if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == n and k in public:
            out[k] = torch.cat([public[k].to(v.device, v.dtype), v])
    return out


class DPSGD(TrainHook):
    """The DP-SGD step as a trainer hook: supplies the Poisson lot and the clipped, noised gradient."""

    def __init__(self, settings: dict[str, Any], task: Task, seed: int, device: torch.device,
                 bf16: bool = False) -> None:
        self.s, self.task, self.seed, self.device, self.bf16 = settings, task, seed, device, bf16
        self.data = task.build("train")
        from seqzoo.training.evaluation import to_device

        self.public = (to_device(task.build(settings["public_split"]).batch(slice(None)), device)
                       if settings["public_split"] else None)
        self.method = "joint" if not settings.get("guarantee", True) else settings["per_sample"]
        self._last: dict[str, float] = {}
        self._ghost_ok: bool | None = None
        self._params: tuple[nn.Module, dict[str, Tensor]] | None = None

    # ----- the per-example loss -------------------------------------------------------------------------
    def _scores(self, model: nn.Module, batch: Batch):
        from seqzoo.training.evaluation import Scores, score_batch

        if self.public is None:
            return score_batch(model, self.task, batch, device=self.device, bf16=self.bf16)
        p = batch_size_of(self.public)
        with public_rows(model, p, update_running=False):
            sc = score_batch(model, self.task, _prepend(self.public, batch), device=self.device, bf16=self.bf16)
        return Scores(sc.values[p:], sc.is_nll, sc.state)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """The task's loss of ``batch`` (one example under vmap/loop), with the public rows when there are any."""
        from seqzoo.training.evaluation import batch_loss

        return batch_loss(self.task, self._scores(model, batch), batch)

    def joint_losses(self, model: nn.Module, batch: Batch) -> Tensor:
        """Each example's loss in one joint forward of the whole lot (the SIDP replication)."""
        from seqzoo.training.evaluation import Scores, batch_loss

        sc = self._scores(model, batch)
        return torch.stack([batch_loss(self.task, Scores(sc.values[i:i + 1], sc.is_nll), example(batch, i))
                            for i in range(batch_size_of(batch))])

    def _ghost(self, model: nn.Module, batch: Batch) -> bool:
        """Use ghost clipping (``per_sample`` auto or ghost, a supported model, a batch without a loss mask)."""
        if self.method not in ("auto", "ghost") or "loss_mask" in batch:
            return False
        if self._ghost_ok is None:
            self._ghost_ok = supports(model, self.task)
            if self.method == "ghost" and not self._ghost_ok:
                raise ConfigError(f"privacy: per_sample 'ghost' needs Linear/LayerNorm/GroupNorm parameters only, "
                                  f"a per-sequence task and no public-statistics norm; {type(model).__name__} on "
                                  f"{self.task.name!r} is not; use 'auto'")
        return self._ghost_ok

    # ----- hook points ----------------------------------------------------------------------------------
    def train_batch(self, trainer: Trainer, step: int) -> Batch:
        return self.data.batch(poisson_lot(len(self.data), self.s["sample_rate"], self.seed, step))

    def compute_gradients(self, trainer: Trainer, model: nn.Module, batch: Batch) -> Tensor:
        if self._params is None or self._params[0] is not model:
            self._params = (model, trainable(model))
        params = self._params[1]
        n = batch_size_of(batch)
        if n and self._ghost(model, batch):
            summed, norms, mean_loss = clipped_sum_ghost(model, lambda m, b: self.loss(m, b) * batch_size_of(b),
                                                         batch, self.s["clip"])
            losses = mean_loss.reshape(1)
        elif n:
            fn = self.joint_losses if self.method == "joint" else self.loss
            grads, losses = per_sample_grads(model, fn, batch, "auto" if self.method == "ghost" else self.method)
            factor, norms = clip_factors(grads, self.s["clip"])
            summed = clipped_sum(grads, factor)
        else:
            summed, losses, norms = {}, torch.zeros(0), torch.zeros(0)
        g = generator("dp-noise", self.seed, trainer.done)
        total = noisy_sum(summed, params, self.s["sigma"], self.s["clip"], g)
        lot = float(self.s["expected_lot"])
        for name, p in params.items():
            p.grad = total[name] / lot
        if self.public is not None and public_modules(model):  # running stats from the public batch alone
            from seqzoo.training.evaluation import score_batch

            with torch.no_grad(), public_rows(model, batch_size_of(self.public), update_running=True):
                score_batch(model, self.task, self.public, device=self.device, bf16=self.bf16)
        self._last = {"dp_lot": float(n),
                      "dp_clipped": float((norms > self.s["clip"]).float().mean()) if n else 0.0}
        return losses.mean() if n else torch.zeros(())

    def metrics(self, trainer: Trainer, model: nn.Module) -> dict[str, float]:
        return dict(self._last)

    def final_metrics(self, trainer: Trainer, model: nn.Module) -> dict[str, float]:
        """(ε, δ) of the steps taken, so early stops and time budgets report what was spent."""
        s = self.s
        eps = epsilon(s["sigma"], s["sample_rate"], trainer.done, s["delta"], s["accountant"])
        return {"dp_epsilon": eps, "dp_delta": s["delta"], "dp_sigma": s["sigma"], "dp_sample_rate": s["sample_rate"],
                "dp_steps": float(trainer.done)}

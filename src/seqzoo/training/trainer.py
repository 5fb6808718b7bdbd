"""The training loop: ``train(model, task, ...)`` and the ``Trainer`` behind it.

Determinism: the model is initialised after ``torch.manual_seed(seed)``; the batch of step ``s`` is
``task.train_batch(s, batch_size, seed)``; the torch RNG (dropout) is re-seeded from ``(seed, s, rank)``
before every step; the learning rate is a pure function of the step. A checkpoint therefore captures all
the state there is, and a resumed run repeats exactly what an uninterrupted run does (bit-identical on
CPU, where ``torch.use_deterministic_algorithms`` is switched on for the duration of the run).

Truncated BPTT: when a training batch says ``carry_state`` (``lm``: row i continues row i of the previous step's
batch) and the model carries a state (``evaluation.carries_state``), the model's state after step s, detached, is
fed into step s + 1, and reset where the batch's ``segment_index`` is 0. The carried state is part of the checkpoint
(safetensors + a JSON structure), so resumed runs stay bit-identical. Under data parallelism every rank carries the
rows of its own shard; the checkpoint holds the gathered global-batch state.

A run is ``_build`` (resolve and check everything, before any file) -> ``_prepare_dir`` -> ``_start`` (optimizer,
resume, logs) -> ``_train_loop`` (``train_step`` / ``evaluate`` / ``checkpoint``) -> ``_finish_training`` ->
``_test`` -> ``_record``; the loop's own bookkeeping is one ``LoopState``. Methods that change how a step is taken
plug in as ``TrainHook``s (``training/hooks.py``: extra losses, gradient transforms, after-step parameter
transforms, per-step metrics; modules add ``module_metrics`` and ``param_settings``). Subclasses may still override
``compute_loss``, ``backward`` and ``optimizer_step``; ``model_outputs`` is the model call that carries the state.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from seqzoo.errors import ConfigError, ConfigTypeError, RunError, RunExistsError
from seqzoo.files import atomic_write_bytes, remove_stale_tmp
from seqzoo.tasks.base import Batch, Task, derive_seed
from seqzoo.training.checkpoint import (
    Checkpoint,
    atomic_write_json,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from seqzoo.training.config import RESUMABLE_CHANGES, TrainConfig
from seqzoo.training.distributed import (
    DistContext,
    all_gather_batch,
    all_reduce_sum,
    barrier,
    broadcast_flag,
    setup_distributed,
    shard_batch,
    teardown_distributed,
)
from seqzoo.training.evaluation import (
    NO_STATE,
    Scores,
    batch_loss,
    carries_state,
    detach_state,
    evaluate_split,
    score_batch,
    to_device,
)
from seqzoo.training.hooks import TrainHook, module_hooks, module_metrics
from seqzoo.training.index import RunIndex
from seqzoo.training.population import refit_populations
from seqzoo.training.progress import Progress
from seqzoo.training.quantization import quantization_hooks
from seqzoo.training.run_config import RunConfig, as_train_config, check_run_name, resolve_run
from seqzoo.training.runs import (
    CONFIG_FILE,
    ENV_FILE,
    INDEX_FILE,
    METRICS_FILE,
    MetricsLog,
    RunResult,
    check_out_dir,
    environment,
    index_row,
    jsonable,
    read_config,
    read_json,
    read_result,
    remove_run_dir,
    write_result,
)
from seqzoo.training.schedule import LRSchedule, build_optimizer, optimizer_params

log = logging.getLogger("seqzoo.training")


def _set_deterministic(mode: bool, warn_only: bool = False) -> None:
    """``torch.use_deterministic_algorithms`` without importing TorchInductor when it is not loaded yet.

    The public function imports ``torch._inductor`` (about 2 s) only to mirror the flag into its config;
    when Inductor is not loaded nothing can read that config, so the core flag alone is set.
    """
    if "torch._inductor.config" in sys.modules or not hasattr(torch._C, "_set_deterministic_algorithms"):
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    else:
        torch._C._set_deterministic_algorithms(mode, warn_only=warn_only)


@contextlib.contextmanager
def deterministic_algorithms(device: torch.device) -> Iterator[None]:
    """Deterministic kernels for the duration of a run (CPU always; CUDA when cuBLAS is configured for it)."""
    import torch.utils.deterministic as det

    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_fill = det.fill_uninitialized_memory
    prev_cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    try:
        if device.type == "cpu" or os.environ.get("CUBLAS_WORKSPACE_CONFIG"):
            _set_deterministic(True)
            # Filling fresh memory with NaN only helps find reads of uninitialised memory and costs time.
            det.fill_uninitialized_memory = False
        if device.type == "cuda":
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        yield
    finally:
        if torch.are_deterministic_algorithms_enabled() != prev or \
                torch.is_deterministic_algorithms_warn_only_enabled() != prev_warn:
            _set_deterministic(prev, warn_only=prev_warn)
        det.fill_uninitialized_memory = prev_fill
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev_cudnn


def _tokens(batch: Batch) -> int:
    x = batch.get("inputs")
    if x is None or not torch.is_tensor(x) or x.dim() == 0:
        return 0
    return int(x.shape[0] * (x.shape[1] if x.dim() > 1 else 1))


def _seed_step(seed: int, device: torch.device) -> None:
    """``torch.manual_seed(seed)`` as far as a step on ``device`` can tell: on CPU only the CPU generator is seeded
    (the same state; ``torch.manual_seed`` also runs the CUDA, XPU and MTIA seeding hooks, about 5% of a small
    model's step)."""
    if device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


def _finite_params(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _better(value: float, best: float | None, higher_is_better: bool) -> bool:
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if higher_is_better else value < best


@dataclass
class LoopState:
    """What a checkpoint records of the loop (JSON), besides weights, optimizer, RNG and carried state."""

    step: int = 0
    best_value: float | None = None
    best_step: int = 0
    best_metrics: dict[str, float] = field(default_factory=dict)
    evals_since_best: int = 0
    last_eval_step: int = -1
    elapsed: float = 0.0
    loss_sum: float = 0.0  # the train log row being accumulated
    loss_count: int = 0
    grad_norm_sum: float = 0.0
    grad_norm_count: int = 0
    grad_norm_max: float = 0.0
    extra_sums: dict[str, float] = field(default_factory=dict)  # hooks' and modules' per-step metrics
    metrics_bytes: int = 0  # size of metrics.jsonl at the checkpoint (rows after it are dropped on resume)
    history: list[dict] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoopState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def add_step(self, loss: float, grad_norm: float | None, extra: dict[str, float]) -> None:
        self.loss_sum += loss
        self.loss_count += 1
        if grad_norm is not None:  # pre-clip global gradient norm (only computed when clipping)
            self.grad_norm_sum += grad_norm
            self.grad_norm_count += 1
            self.grad_norm_max = max(self.grad_norm_max, grad_norm)
        for k, v in extra.items():
            self.extra_sums[k] = self.extra_sums.get(k, 0.0) + float(v)

    def train_row(self) -> dict[str, float]:
        n = max(1, self.loss_count)
        row = {"loss": self.loss_sum / n}
        if self.grad_norm_count:
            row["grad_norm"] = self.grad_norm_sum / self.grad_norm_count
            row["grad_norm_max"] = self.grad_norm_max
        row.update({k: v / n for k, v in self.extra_sums.items()})
        return row

    def reset_train_row(self) -> None:
        self.loss_sum, self.loss_count = 0.0, 0
        self.grad_norm_sum, self.grad_norm_count, self.grad_norm_max = 0.0, 0, 0.0
        self.extra_sums = {}


class CarriedState:
    """The model state carried from one training step to the next (truncated BPTT).

    ``begin(batch)`` decides, before a step, whether it continues the previous step (the batch's ``carry_state`` is
    true, ``segment_index`` is not 0 and the model carries a state); ``state`` is then the input state (None =
    fresh). ``model_outputs`` stores the step's new state in ``pending``; ``commit()`` after a successful optimizer
    step makes it the state of the next step.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.state: Any = None
        self.pending: Any = None
        self.active = False

    def begin(self, batch: Batch) -> None:
        flag = batch.get("carry_state")
        self.active = self.enabled and flag is not None and bool(flag)
        if not self.active or int(batch.get("segment_index", 0)) == 0:
            self.state = None
        self.pending = None

    def commit(self) -> None:
        self.state = self.pending if self.active else None
        self.pending = None


class Trainer:
    """One run: builds the task and model, trains, evaluates, checkpoints and records the result."""

    def __init__(
        self,
        model: str | RunConfig,
        task: str | None = None,
        *,
        model_args: dict | None = None,
        task_args: dict | None = None,
        config: TrainConfig | dict | None = None,
        out: str | os.PathLike = "runs",
        run_name: str | None = None,
        resume: bool = False,
        tags: dict | None = None,
        index: bool = True,
        overwrite: bool = False,
        hooks: Sequence[TrainHook] = (),
    ) -> None:
        """``model``/``task`` are registered names (with ``model_args``/``task_args``/``config``), or ``model`` is a
        ``RunConfig`` from ``resolve_run`` and the rest is left out. Nothing is built until ``run()``."""
        if isinstance(model, RunConfig):
            if task is not None or model_args is not None or task_args is not None or config is not None:
                raise ConfigError("with a RunConfig, give no task, model_args, task_args or config")
            self.model_name, self.task_name = model.model, model.task
            self.user_model_args, self.user_task_args = dict(model.model_args), dict(model.task_args)
            self.config = as_train_config(model.train)
        else:
            if not isinstance(model, str) or not isinstance(task, str):
                raise ConfigTypeError(f"model and task must be registered names (str), got {_short(model)} and "
                                  f"{_short(task)}; register a custom module with seqzoo.register_model")
            if task_args is not None and not isinstance(task_args, dict):
                raise ConfigTypeError(f"task_args must be a dict, got {type(task_args).__name__}")
            self.model_name, self.task_name = model, task
            self.user_model_args = dict(model_args or {})
            self.user_task_args = dict(task_args or {})
            self.config = as_train_config(config)
        if tags is not None and not isinstance(tags, dict):
            raise ConfigTypeError(f"tags must be a dict, got {type(tags).__name__}")
        if resume and overwrite:
            raise ConfigError("resume=True and overwrite=True contradict each other; pick one")
        self.out = Path(out)
        self.run_name = check_run_name(run_name) if run_name is not None else None
        self.resume = resume
        self.tags = dict(tags or {})
        self.use_index = index
        self.overwrite = overwrite
        self.hooks = list(hooks)
        for hook in self.hooks:
            if not isinstance(hook, TrainHook):
                raise ConfigTypeError(f"hooks must be TrainHook instances, got {_short(hook)}")
        self.model: nn.Module | None = None  # the trained model (last weights) after run()
        self.task: Task | None = None
        self.carry = CarriedState(False)

    # ----- overridable steps ----------------------------------------------------------------------------
    def model_outputs(self, model: nn.Module, batch: Batch) -> Scores:
        """The model's scores of ``batch`` (``evaluation.score_batch``: per-token NLLs or outputs); continues from
        the carried state when this step carries one."""
        state = self.carry.state if self.carry.active else NO_STATE
        scores = score_batch(model, self.task, batch, device=self.ctx.device, bf16=self.config.bf16, state=state)
        if self.carry.active:
            self.carry.pending = detach_state(scores.state)
        return scores

    def compute_loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return batch_loss(self.task, self.model_outputs(model, batch), batch)

    def backward(self, loss: Tensor) -> None:
        loss.backward()

    def optimizer_step(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> float | None:
        """Clip and step; returns the gradient norm when clipping (None otherwise)."""
        norm = None
        if self.config.clip_norm is not None:
            norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), self.config.clip_norm))
            if not math.isfinite(norm):
                return norm
        optimizer.step()
        return norm

    # ----- run ------------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        self.ctx = setup_distributed(self.config.device)
        try:
            with deterministic_algorithms(self.ctx.device):
                return self._run()
        finally:
            teardown_distributed(self.ctx)

    def _build(self) -> None:
        """Resolve and check everything (config, data, model on one batch, output folder, index) before any file
        is written, so a failed start leaves nothing behind."""
        res = resolve_run(self.model_name, self.task_name, model_args=self.user_model_args,
                          task_args=self.user_task_args, config=self.config, device=self.ctx.device)
        self.task, self.model = res.task, res.model.to(self.ctx.device)
        self.hooks += quantization_hooks(self.model, self.hooks)  # shadow-weight clipping of quantized layers
        self.resolved = res.config.to_dict()
        self.privacy = res.config.train.privacy  # resolved DP-SGD settings (training/privacy.py) or None
        self.run_dir = self.out / (self.run_name or res.config.run_name())
        self.run_id = self.run_dir.name
        check_out_dir(self.out, index=self.use_index)

    def _prepare_dir(self) -> RunResult | None:
        """Check the run directory against resume/overwrite; returns a finished result to hand back."""
        d = self.run_dir
        exists = (d / CONFIG_FILE).exists()
        if exists and not self.resume and not self.overwrite:
            raise RunExistsError(f"run directory {d} already holds a run; pass resume=True (--resume) to "
                                 f"continue or return it, overwrite=True to start it again, or choose another run_name")
        if exists and self.resume:
            stored = read_config(d)
            diffs = self._config_differences(stored)
            if diffs:
                raise ValueError(f"cannot resume {d}: its config.json differs in {', '.join(diffs)}; "
                                 f"use another run_name (or overwrite=True) for a different configuration")
            result = read_result(d)
            if result is not None and result.status != "time_budget":
                return result
        barrier(self.ctx)
        if self.ctx.is_main:
            if exists and self.overwrite:
                remove_run_dir(d, self.out)
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise RunError(f"cannot create the run folder {d}: {err.strerror or err}") from err
            if self.resume:
                remove_stale_tmp(d)
                remove_stale_tmp(d / "checkpoint")
            atomic_write_json(d / CONFIG_FILE, {**self.resolved, "seqzoo_version": _version()})
            run_files = getattr(self.task, "run_files", None)  # files a run needs without the data (a tokenizer)
            for name, data in (run_files() if callable(run_files) else {}).items():
                atomic_write_bytes(d / name, data)
        barrier(self.ctx)
        return None

    def _read_best_weights(self, best_step: int) -> dict[str, Tensor]:
        """The best weights a resumed run recorded, checked against ``model.json``; missing or damaged is an error
        (continuing without them would report a best step whose weights are gone)."""
        from seqzoo.errors import IntegrityError
        from seqzoo.models.serialization import read_weights, verify_weights

        try:
            path = verify_weights(self.run_dir)
        except RunError as err:
            raise IntegrityError(f"cannot resume {self.run_dir}: the best weights of step {best_step} cannot be "
                                 f"used ({err}); start the run again with overwrite") from err
        return read_weights(path, device=str(self.ctx.device))

    def _config_differences(self, stored: dict) -> list[str]:
        diffs = [k for k in ("model", "model_args", "task", "task_args") if jsonable(stored[k]) != self.resolved[k]]
        old, new = stored["train"], self.resolved["train"]
        diffs += [f"train.{k}" for k in sorted(set(old) | set(new))
                  if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k)]
        return diffs

    def _write_env(self, resumed_from: int | None) -> None:
        env = environment(self.ctx.device, self.config.seed, self.ctx.world_size)
        path = self.run_dir / ENV_FILE
        if resumed_from is not None and path.exists():
            try:
                first = read_json(path)
            except ValueError:
                first = env
            first.setdefault("resumes", []).append({**env, "from_step": resumed_from})
            env = first
        atomic_write_json(path, env)

    def _run(self) -> RunResult:
        self._build()
        finished = self._prepare_dir()
        if finished is not None:
            if self.ctx.is_main and self.use_index:
                self._index(finished, only_if_missing=True)  # a kill after result.json may have missed it
            return finished
        self._start()
        try:
            self._train_loop()
            self._finish_training()
            test = self._test()
        finally:
            self._close()
        return self._record(test)

    # ----- the pieces of a run ----------------------------------------------------------------------------
    def _start(self) -> None:
        """Optimizer, schedule, resume from the checkpoint, logs and (under DDP) the wrapped model."""
        cfg, ctx, model = self.config, self.ctx, self.model
        self.optimizer = build_optimizer(optimizer_params(model, cfg), cfg)
        self.schedule = LRSchedule(cfg)
        self.state = LoopState()
        self.carry = CarriedState(carries_state(model))
        self.status, self.message = "finished", ""
        self.hooks = [*self.hooks, *module_hooks(model, self.hooks)]  # e.g. MemN2N's linear start
        ckpt = load_checkpoint(self.run_dir) if self.resume else None
        if ckpt is not None:
            model.load_state_dict(ckpt.model, strict=True)
            self.optimizer.load_state_dict(ckpt.optimizer)
            restore_rng(*ckpt.rng)
            self.state = LoopState.from_dict(ckpt.trainer)
            if ckpt.carried_state is not None and self.carry.enabled:
                self.carry.state = _local_rows(ckpt.carried_state, ctx)
        self.done = self.state.step
        self.best_state = self._read_best_weights(self.state.best_step) if self.state.best_step else None
        self.metrics_log = self.tb = self.bar = None
        if ctx.is_main:
            self._write_env(self.done if ckpt is not None else None)
            self.metrics_log = MetricsLog(self.run_dir / METRICS_FILE, keep_bytes=self.state.metrics_bytes)
            self.tb = self._open_tensorboard(purge_step=self.done + 1 if self.done else None)
            if cfg.progress:  # a bar on a terminal, else a plain log line every 30 s (training/progress.py)
                self.bar = Progress(cfg.steps, initial=self.done, desc=self.run_id)
        if self.privacy is not None:
            self._add_privacy_hook()
        self.train_model: nn.Module = model
        if ctx.enabled:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self._prior_elapsed = self.state.elapsed
        self._t_session = time.monotonic()  # the clock of time_budget and wall_time: training and evaluation
        self._tokens, self._t_tok = 0, time.monotonic()

    def _add_privacy_hook(self) -> None:
        """DP-SGD (``privacy`` in the config) as the first hook: it supplies the lots and the noisy gradients."""
        from seqzoo.training.privacy import DPSGD

        if self.ctx.world_size != 1:
            raise ConfigError("privacy: DP-SGD runs in one process (no torchrun data parallelism yet)")
        for hook in self.hooks:
            if type(hook).extra_loss is not TrainHook.extra_loss or type(hook).compute_gradients is not \
                    TrainHook.compute_gradients:
                raise ConfigError(f"privacy: hook {type(hook).__name__} changes the loss or the gradients, which "
                                  f"DP-SGD's per-example gradients would not include; drop it or train without privacy")
        self.hooks = [DPSGD(self.privacy, self.task, self.config.seed, self.ctx.device, self.config.bf16),
                      *(h for h in self.hooks if not isinstance(h, DPSGD))]

    def elapsed(self) -> float:
        """Seconds of training and evaluation of this run, over all its sessions."""
        return self._prior_elapsed + (time.monotonic() - self._t_session)

    def _write(self, row: dict[str, Any]) -> None:
        if self.metrics_log is not None:
            self.metrics_log.write(row)
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "split", "time") and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{row['split']}/{k}", v, row["step"])

    def _train_loop(self) -> None:
        cfg, ctx = self.config, self.ctx
        self.model.train()
        while self.done < cfg.steps:
            if cfg.time_budget is not None and broadcast_flag(self.elapsed() >= cfg.time_budget, ctx):
                self.status = "time_budget"
                self.message = f"time budget of {cfg.time_budget:g} s reached at step {self.done}"
                return
            if not self.train_step():
                return
            self.done += 1
            self._log_train()
            if self.bar is not None:
                self.bar.update(1)
            if self.done % cfg.eval_every == 0 and self.evaluate():
                self.status = "early_stopped"
                self.message = (f"no improvement of {self.task.spec.primary_metric} in {cfg.early_stopping} "
                                f"evaluations; stopped at step {self.done}")
                return
            if self.done % cfg.checkpoint_interval == 0 and self.done < cfg.steps:
                self.checkpoint()

    def train_step(self) -> bool:
        """One optimizer step at step ``self.done``; False (with ``status`` set) when the loss or gradient is not
        finite, in which case the weights are left as they were before the optimizer step."""
        cfg, ctx, model, st = self.config, self.ctx, self.train_model, self.state
        _seed_step(derive_seed("train-step", cfg.seed, self.done, ctx.rank), ctx.device)
        batch = self._hook_batch()
        if batch is None:
            batch = self.task.train_batch(self.done, cfg.batch_size, cfg.seed)
        self._tokens += _tokens(batch)
        batch = to_device(shard_batch(batch, ctx), ctx.device)
        self._lr = self.schedule.apply(self.optimizer, self.done + 1)
        self.carry.begin(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss, own = None, False
        for hook in self.hooks:
            loss = hook.compute_gradients(self, model, batch)
            if loss is not None:
                own = True
                break
        if loss is None:
            loss = self.compute_loss(model, batch)
            for hook in self.hooks:
                extra = hook.extra_loss(self, model, batch)
                if extra is not None:
                    loss = loss + extra
        lv = float(all_reduce_sum(loss.detach().float().reshape(1).clone(), ctx) / ctx.world_size)
        if not math.isfinite(lv):
            self.status = "stopped_nan"
            self.message = f"loss is {lv} at step {self.done + 1}; training stopped. " + _kept(st)
            return False
        if not own:
            self.backward(loss)
        for hook in self.hooks:
            hook.transform_gradients(self, model)
        norm = self.optimizer_step(self.optimizer, model)
        if norm is not None and not math.isfinite(norm):
            self.status = "stopped_nan"
            self.message = f"gradient norm is {norm} at step {self.done + 1}; training stopped. " + _kept(st)
            return False
        if self.hooks:
            with torch.no_grad():
                for hook in self.hooks:
                    hook.after_step(self, model)
        self.carry.commit()
        st.add_step(lv, norm, self._step_metrics())
        return True

    def _hook_batch(self) -> Batch | None:
        """The batch of this step from the first hook that supplies one (e.g. DP-SGD's Poisson lot), or None."""
        for hook in self.hooks:
            batch = hook.train_batch(self, self.done)
            if batch is not None:
                return batch
        return None

    def _step_metrics(self) -> dict[str, float]:
        out = module_metrics(self.model)
        for hook in self.hooks:
            out.update(hook.metrics(self, self.model) or {})
        return out

    def _log_train(self) -> None:
        cfg, st = self.config, self.state
        if self.done % cfg.log_every and self.done != cfg.steps:
            return
        row = {"step": self.done, "split": "train", **st.train_row(), "lr": self._lr}
        self._write({**row, "time": round(self.elapsed(), 3)})
        st.reset_train_row()
        if self.bar is not None:
            now = time.monotonic()
            self.bar.set_postfix(loss=f"{row['loss']:.4g}", tok_s=f"{self._tokens / max(now - self._t_tok, 1e-9):.3g}")
            self._tokens, self._t_tok = 0, now

    def evaluate(self) -> bool:
        """Evaluate at ``self.done`` on ``eval_split``, keep the best (finite) weights; True when early stopping
        triggers."""
        cfg, st, model, spec = self.config, self.state, self.model, self.task.spec
        refit_populations(model, self.task, batch_size=cfg.batch_size, seed=cfg.seed, device=self.ctx.device,
                          bf16=cfg.bf16)  # the paper's population statistics, where a norm asks for them
        m, mode = evaluate_split(model, self.task, cfg.eval_split, batch_size=cfg.eval_batch_size,
                                 device=self.ctx.device, bf16=cfg.bf16, ctx=self.ctx)
        row = {"step": self.done, "split": cfg.eval_split, **m, "eval": mode, "time": round(self.elapsed(), 3)}
        self._write(row)
        st.history.append({k: v for k, v in row.items() if k not in ("time", "eval")})
        st.last_eval_step = self.done
        value = m[spec.primary_metric]
        if _better(value, st.best_value, spec.higher_is_better) and _finite_params(model):
            st.best_value, st.best_step, st.best_metrics, st.evals_since_best = value, self.done, m, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if self.ctx.is_main:
                from seqzoo.models import save_model

                save_model(model, self.run_dir)
            return False
        st.evals_since_best += 1
        return cfg.early_stopping is not None and st.evals_since_best >= cfg.early_stopping

    def checkpoint(self) -> None:
        """Write a checkpoint of step ``self.done`` (never of non-finite weights)."""
        if not _finite_params(self.model):
            log.warning("%s: weights at step %d are not finite; checkpoint not written", self.run_id, self.done)
            return
        carried = _gather_rows(self.carry.state, self.ctx)  # a collective: every rank takes part
        if not self.ctx.is_main:
            return
        st = self.state
        st.step, st.elapsed, st.metrics_bytes = self.done, self.elapsed(), self.metrics_log.sync()
        save_checkpoint(self.run_dir, Checkpoint(step=self.done, model=self.model.state_dict(),
                                                 optimizer=self.optimizer.state_dict(), rng=capture_rng(),
                                                 trainer=jsonable(st.to_dict()), schedule=self.schedule.state_dict(),
                                                 carried_state=carried))

    def _finish_training(self) -> None:
        if self.status != "stopped_nan":
            if self.state.last_eval_step != self.done:
                self.evaluate()
            self.checkpoint()
        elif self.best_state is None and _finite_params(self.model) and self.ctx.is_main:
            from seqzoo.models import save_model

            save_model(self.model, self.run_dir)  # the last good weights, so load_run still works
        if self.message and self.ctx.is_main:
            (log.warning if self.status == "stopped_nan" else log.info)("%s: %s", self.run_id, self.message)

    def _test(self) -> dict[str, float]:
        """Metrics of the best weights on ``test_split`` ({} when there is none or the weights are not finite)."""
        cfg = self.config
        extra: dict[str, float] = {}
        for hook in self.hooks:
            extra.update(hook.final_metrics(self, self.model) or {})
        if cfg.test_split is None:
            if extra:
                self._write({"step": self.done, "split": "final", **extra, "time": round(self.elapsed(), 3)})
            return extra
        final = self.model
        if self.best_state is not None:
            final = copy.deepcopy(self.model)
            final.load_state_dict(self.best_state)
        if not _finite_params(final):
            return extra
        test, mode = evaluate_split(final, self.task, cfg.test_split, batch_size=cfg.eval_batch_size,
                                    device=self.ctx.device, bf16=cfg.bf16, ctx=self.ctx)
        test.update(extra)
        self._write({"step": self.done, "split": "test", **test, "eval": mode, "time": round(self.elapsed(), 3)})
        return test

    def _close(self) -> None:
        for thing in (self.bar, self.tb, self.metrics_log):
            if thing is not None:
                thing.close()

    def _record(self, test: dict[str, float]) -> RunResult:
        st, cfg = self.state, self.config
        result = RunResult(
            run_dir=self.run_dir, run_id=self.run_id, model=self.model_name, task=self.task_name, seed=cfg.seed,
            status=self.status, steps=self.done, best_step=st.best_step, valid=dict(st.best_metrics), test=test,
            wall_time=round(self.elapsed(), 3), history=list(st.history),
            primary_metric=self.task.spec.primary_metric, message=self.message,
        )
        if self.ctx.is_main:
            write_result(result)
            if self.use_index:
                self._index(result)
        barrier(self.ctx)
        return result

    def _open_tensorboard(self, purge_step: int | None):
        if not self.config.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is an optional extra; runs work without it
            return None
        return SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=purge_step)

    def _index(self, result: RunResult, *, only_if_missing: bool = False) -> None:
        index = RunIndex(self.out / INDEX_FILE)
        if only_if_missing and index.query(run_ids=[result.run_id]):
            return
        index.add(index_row(result, self.tags))


def _map_tensors(tree: Any, fn) -> Any:
    if torch.is_tensor(tree):
        return fn(tree)
    if isinstance(tree, (tuple, list)):
        return type(tree)(_map_tensors(t, fn) for t in tree)
    if isinstance(tree, dict):
        return {k: _map_tensors(v, fn) for k, v in tree.items()}
    return tree


def _gather_rows(state: Any, ctx: DistContext) -> Any:
    """The carried state of the global batch: every rank's rows (dimension 0) in rank order."""
    if state is None or not ctx.enabled:
        return state
    return _map_tensors(state, lambda t: all_gather_batch(t, ctx))


def _local_rows(state: Any, ctx: DistContext) -> Any:
    """This rank's rows of a global-batch state read from a checkpoint, on the run's device."""
    def take(t: Tensor) -> Tensor:
        if ctx.enabled:
            if t.dim() == 0 or t.shape[0] % ctx.world_size:
                raise ValueError(f"carried state tensor of shape {tuple(t.shape)} in the checkpoint cannot be split "
                                 f"over {ctx.world_size} ranks along its batch dimension")
            per = t.shape[0] // ctx.world_size
            t = t[ctx.rank * per:(ctx.rank + 1) * per]
        return t.to(ctx.device)
    return _map_tensors(state, take)


def _kept(state: LoopState) -> str:
    ckpt = f"the last good checkpoint (step {state.step})" if state.step else "no checkpoint"
    best = f"the best weights (step {state.best_step})" if state.best_step else "the last finite weights"
    return f"Kept {ckpt} and {best}; lower the learning rate or enable clip_norm."


def _short(value: Any) -> str:
    """A one-line description of ``value`` for an error message (never a whole module's repr)."""
    if isinstance(value, str) or value is None:
        return repr(value)
    return f"a {type(value).__name__}"


def _version() -> str:
    from seqzoo._version import __version__

    return __version__


def train(model: str | RunConfig, task: str | None = None, **options: Any) -> RunResult:
    """Train registered ``model`` on registered ``task``; the run lands in ``out/<run_name or derived name>``.

    Takes exactly ``Trainer``'s arguments (``model_args``, ``task_args``, ``config``, ``out``, ``run_name``,
    ``resume``, ``tags``, ``index``, ``overwrite``), or a ``RunConfig`` from ``resolve_run``. ``model_args``
    override the preset and the task's sizes, which are filled in otherwise. ``resume=True`` continues from the
    directory's last checkpoint (or returns its result when it already finished); ``overwrite=True`` deletes an
    existing run of the same name first (only a seqzoo run folder inside ``out``). A finished run is added to
    ``out/index.sqlite`` unless ``index=False``. Everything is validated before the run folder is created.
    """
    return Trainer(model, task, **options).run()


train.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    list(inspect.signature(Trainer.__init__).parameters.values())[1:], return_annotation=RunResult)

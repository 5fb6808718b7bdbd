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

Subclasses may override ``compute_loss``, ``backward`` and ``optimizer_step`` (hooks for per-sample
gradients, private training or quantization-aware steps); ``model_outputs`` is the model call that carries the
state.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from seqzoo.errors import RunExistsError
from seqzoo.tasks.base import Batch, Task, derive_seed
from seqzoo.training.checkpoint import (
    Checkpoint,
    atomic_write_json,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from seqzoo.training.config import PRESENTATION_FIELDS, RESUMABLE_CHANGES, UNHASHED_WHEN_NONE, TrainConfig
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
    check_fit,
    detach_state,
    evaluate_split,
    score_batch,
    to_device,
)
from seqzoo.training.index import RunIndex
from seqzoo.training.runs import (
    CONFIG_FILE,
    ENV_FILE,
    INDEX_FILE,
    METRICS_FILE,
    MetricsLog,
    RunResult,
    default_run_name,
    environment,
    jsonable,
    read_config,
    read_json,
    read_result,
    run_hash,
    write_result,
)
from seqzoo.training.schedule import LRSchedule, build_optimizer, optimizer_params

log = logging.getLogger("seqzoo.training")


def resolve_config(config: TrainConfig | dict | None) -> TrainConfig:
    if config is None:
        return TrainConfig()
    if isinstance(config, TrainConfig):
        return TrainConfig.from_dict(config.to_dict())  # re-validate a config edited after construction
    if isinstance(config, dict):
        return TrainConfig.from_dict(config)
    raise TypeError(f"config must be a TrainConfig, a dict or None, got {type(config).__name__}")


def fill_model_args(model: str, model_args: dict | None, task: Task) -> dict[str, Any]:
    """The user's model arguments plus the task's sizes (``spec.model_kwargs()``) the preset accepts."""
    from seqzoo.models import model_info

    if model_args is not None and not isinstance(model_args, dict):
        raise TypeError(f"model_args must be a dict, got {type(model_args).__name__}")
    accepted = model_info(model)["arguments"]
    args = dict(model_args or {})
    preset_decoder = model_info(model)["defaults"].get("decoder")
    for key, value in task.spec.model_kwargs().items():
        if key in accepted and key not in args:
            # a preset that pools the whole sequence ("mean", e.g. CDIL's ensembled per-position logits) keeps
            # its head on per-sequence tasks; only a per-step head is replaced
            if key == "decoder" and value != "step" and preset_decoder in ("last", "mean"):
                continue
            args[key] = value
    return args


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


def _progress_wanted(config: TrainConfig, ctx: DistContext) -> bool:
    if not config.progress or not ctx.is_main:
        return False
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


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
        model: str,
        task: str,
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
    ) -> None:
        if not isinstance(model, str) or not isinstance(task, str):
            raise TypeError(f"model and task must be registered names (str), got {model!r} and {task!r}")
        if task_args is not None and not isinstance(task_args, dict):
            raise TypeError(f"task_args must be a dict, got {type(task_args).__name__}")
        if tags is not None and not isinstance(tags, dict):
            raise TypeError(f"tags must be a dict, got {type(tags).__name__}")
        if resume and overwrite:
            raise ValueError("resume=True and overwrite=True contradict each other; pick one")
        self.model_name, self.task_name = model, task
        self.user_model_args = dict(model_args or {})
        self.user_task_args = dict(task_args or {})
        self.config = resolve_config(config)
        self.out = Path(out)
        self.run_name = run_name
        self.resume = resume
        self.tags = dict(tags or {})
        self.use_index = index
        self.overwrite = overwrite
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
        from seqzoo.models import create_model
        from seqzoo.tasks import create_task

        cfg = self.config
        self.task = create_task(self.task_name, **self.user_task_args)
        args = fill_model_args(self.model_name, self.user_model_args, self.task)
        torch.manual_seed(cfg.seed)
        model = create_model(self.model_name, **args)
        resolved_args = getattr(model, "seqzoo_config", args)
        self.model = model.to(self.ctx.device)
        task_params = getattr(self.task, "params", None)
        train = cfg.to_dict()
        self.resolved = jsonable({
            "model": self.model_name,
            "model_args": resolved_args,
            "task": self.task_name,
            "task_args": task_params if isinstance(task_params, dict) else self.user_task_args,
            "train": train,
        })
        hashed = dict(self.resolved)
        hashed["train"] = {k: v for k, v in train.items()
                            if k not in PRESENTATION_FIELDS and not (k in UNHASHED_WHEN_NONE and v is None)}
        self.run_dir = self.out / (self.run_name or default_run_name(self.task_name, self.model_name, cfg.seed,
                                                                      run_hash(jsonable(hashed))))
        self.run_id = self.run_dir.name

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
                shutil.rmtree(d)
            d.mkdir(parents=True, exist_ok=True)
            atomic_write_json(d / CONFIG_FILE, {**self.resolved, "seqzoo_version": _version()})
        barrier(self.ctx)
        return None

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
        cfg, ctx = self.config, self.ctx
        self._build()
        finished = self._prepare_dir()
        if finished is not None:
            if ctx.is_main and self.use_index:
                self._index(finished, only_if_missing=True)  # a kill after result.json may have missed it
            return finished
        task, model = self.task, self.model
        spec = task.spec
        check_fit(model, task, to_device(task.train_batch(0, min(2, cfg.batch_size), cfg.seed), ctx.device),
                  device=ctx.device, model_name=self.model_name, task_name=self.task_name)
        optimizer = build_optimizer(optimizer_params(model, cfg), cfg)
        schedule = LRSchedule(cfg)

        state: dict[str, Any] = {"step": 0, "best_value": None, "best_step": 0, "best_metrics": {},
                                 "evals_since_best": 0, "last_eval_step": -1, "elapsed": 0.0, "loss_sum": 0.0,
                                 "loss_count": 0, "grad_norm_sum": 0.0, "grad_norm_count": 0, "grad_norm_max": 0.0,
                                 "metrics_bytes": 0, "history": []}
        self.carry = CarriedState(carries_state(model))
        ckpt = load_checkpoint(self.run_dir) if self.resume else None
        if ckpt is not None:
            model.load_state_dict(ckpt.model, strict=True)
            optimizer.load_state_dict(ckpt.optimizer)
            restore_rng(*ckpt.rng)
            state.update(ckpt.trainer)
            if ckpt.carried_state is not None and self.carry.enabled:
                self.carry.state = _local_rows(ckpt.carried_state, ctx)
        start = int(state["step"])
        best_state = None
        if state["best_step"] and (self.run_dir / "model.safetensors").exists():
            from safetensors.torch import load_file

            best_state = load_file(str(self.run_dir / "model.safetensors"), device=str(ctx.device))

        metrics = tb = bar = None
        if ctx.is_main:
            self._write_env(start if ckpt is not None else None)
            metrics = MetricsLog(self.run_dir / METRICS_FILE, keep_bytes=int(state["metrics_bytes"]))
            tb = self._open_tensorboard(purge_step=start + 1 if start else None)
            if _progress_wanted(cfg, ctx):
                from tqdm import tqdm

                bar = tqdm(total=cfg.steps, initial=start, desc=self.run_id, dynamic_ncols=True, leave=False)

        train_model: nn.Module = model
        if ctx.enabled:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            train_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)

        status, message = "finished", ""
        done = start
        prior_elapsed = float(state["elapsed"])
        t_session = time.monotonic()  # the clock of time_budget and wall_time: training and evaluation, not set-up
        tokens, t_tok = 0, time.monotonic()

        def elapsed() -> float:
            return prior_elapsed + (time.monotonic() - t_session)

        def write(row: dict[str, Any]) -> None:
            if metrics is not None:
                metrics.write(row)
            if tb is not None:
                for k, v in row.items():
                    if k not in ("step", "split", "time") and isinstance(v, (int, float)):
                        tb.add_scalar(f"{row['split']}/{k}", v, row["step"])

        def run_eval() -> bool:
            """Evaluate at ``done``; returns True when early stopping triggers."""
            m, mode = evaluate_split(model, task, cfg.eval_split, batch_size=cfg.eval_batch_size, device=ctx.device,
                                     bf16=cfg.bf16, ctx=ctx)
            row = {"step": done, "split": cfg.eval_split, **m, "eval": mode, "time": round(elapsed(), 3)}
            write(row)
            state["history"].append({k: v for k, v in row.items() if k not in ("time", "eval")})
            state["last_eval_step"] = done
            value = m[spec.primary_metric]
            if _better(value, state["best_value"], spec.higher_is_better):
                nonlocal best_state
                state.update(best_value=value, best_step=done, best_metrics=m, evals_since_best=0)
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if ctx.is_main:
                    from seqzoo.models import save_model

                    save_model(model, self.run_dir)
                return False
            state["evals_since_best"] += 1
            return cfg.early_stopping is not None and state["evals_since_best"] >= cfg.early_stopping

        def checkpoint() -> None:
            if not _finite_params(model):
                log.warning("%s: weights at step %d are not finite; checkpoint not written", self.run_id, done)
                return
            carried = _gather_rows(self.carry.state, ctx)  # a collective: every rank takes part
            if not ctx.is_main:
                return
            state["step"] = done
            state["elapsed"] = elapsed()
            state["metrics_bytes"] = metrics.sync()
            save_checkpoint(self.run_dir, Checkpoint(step=done, model=model.state_dict(),
                                                     optimizer=optimizer.state_dict(), rng=capture_rng(),
                                                     trainer=jsonable(state), schedule=schedule.state_dict(),
                                                     carried_state=carried))

        try:
            model.train()
            stop = False
            while done < cfg.steps and not stop:
                if cfg.time_budget is not None:
                    over = broadcast_flag(elapsed() >= cfg.time_budget, ctx)
                    if over:
                        status, message = "time_budget", f"time budget of {cfg.time_budget:g} s reached at step {done}"
                        break
                _seed_step(derive_seed("train-step", cfg.seed, done, ctx.rank), ctx.device)
                batch = task.train_batch(done, cfg.batch_size, cfg.seed)
                tokens += _tokens(batch)
                batch = to_device(shard_batch(batch, ctx), ctx.device)
                lr = schedule.apply(optimizer, done + 1)
                self.carry.begin(batch)
                optimizer.zero_grad(set_to_none=True)
                loss = self.compute_loss(train_model, batch)
                loss_value = all_reduce_sum(loss.detach().float().reshape(1).clone(), ctx) / ctx.world_size
                lv = float(loss_value)
                if not math.isfinite(lv):
                    status = "stopped_nan"
                    message = f"loss is {lv} at step {done + 1}; training stopped. " + _kept(state)
                    break
                self.backward(loss)
                norm = self.optimizer_step(optimizer, train_model)
                if norm is not None and not math.isfinite(norm):
                    status = "stopped_nan"
                    message = f"gradient norm is {norm} at step {done + 1}; training stopped. " + _kept(state)
                    break
                self.carry.commit()
                done += 1
                state["loss_sum"] += lv
                state["loss_count"] += 1
                if norm is not None:  # pre-clip global gradient norm (only computed when clipping)
                    state["grad_norm_sum"] += norm
                    state["grad_norm_count"] += 1
                    state["grad_norm_max"] = max(state["grad_norm_max"], norm)
                if done % cfg.log_every == 0 or done == cfg.steps:
                    mean = state["loss_sum"] / max(1, state["loss_count"])
                    row = {"step": done, "split": "train", "loss": mean, "lr": lr}
                    if state["grad_norm_count"]:
                        row["grad_norm"] = state["grad_norm_sum"] / state["grad_norm_count"]
                        row["grad_norm_max"] = state["grad_norm_max"]
                    write({**row, "time": round(elapsed(), 3)})
                    state["loss_sum"], state["loss_count"] = 0.0, 0
                    state["grad_norm_sum"], state["grad_norm_count"], state["grad_norm_max"] = 0.0, 0, 0.0
                    if bar is not None:
                        now = time.monotonic()
                        bar.set_postfix(loss=f"{mean:.4g}", tok_s=f"{tokens / max(now - t_tok, 1e-9):.3g}")
                        tokens, t_tok = 0, now
                if bar is not None:
                    bar.update(1)
                if done % cfg.eval_every == 0:
                    stop = run_eval()
                    if stop:
                        status = "early_stopped"
                        message = (f"no improvement of {spec.primary_metric} in {cfg.early_stopping} evaluations; "
                                   f"stopped at step {done}")
                if done % cfg.checkpoint_interval == 0 and done < cfg.steps and not stop:
                    checkpoint()

            if status != "stopped_nan":
                if state["last_eval_step"] != done:
                    run_eval()
                checkpoint()
            elif best_state is None and _finite_params(model) and ctx.is_main:
                from seqzoo.models import save_model

                save_model(model, self.run_dir)  # the last good weights, so load_run still works
            if message and ctx.is_main:
                (log.warning if status == "stopped_nan" else log.info)("%s: %s", self.run_id, message)

            test: dict[str, float] = {}
            if cfg.test_split is not None:
                final = model
                if best_state is not None:
                    final = copy.deepcopy(model)
                    final.load_state_dict(best_state)
                if _finite_params(final):
                    test, mode = evaluate_split(final, task, cfg.test_split, batch_size=cfg.eval_batch_size,
                                                device=ctx.device, bf16=cfg.bf16, ctx=ctx)
                    write({"step": done, "split": "test", **test, "eval": mode, "time": round(elapsed(), 3)})
        finally:
            if bar is not None:
                bar.close()
            if tb is not None:
                tb.close()
            if metrics is not None:
                metrics.close()

        result = RunResult(
            run_dir=self.run_dir, run_id=self.run_id, model=self.model_name, task=self.task_name, seed=cfg.seed,
            status=status, steps=done, best_step=int(state["best_step"]), valid=dict(state["best_metrics"]),
            test=test, wall_time=round(elapsed(), 3), history=list(state["history"]),
            primary_metric=spec.primary_metric, message=message,
        )
        if ctx.is_main:
            write_result(result)
            if self.use_index:
                self._index(result)
        barrier(ctx)
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
        cfg = read_config(result.run_dir)
        index = RunIndex(self.out / INDEX_FILE)
        if only_if_missing and index.query(run_ids=[result.run_id]):
            return
        index.add({
            "run_id": result.run_id, "run_dir": str(result.run_dir.resolve()), "model": result.model,
            "task": result.task, "seed": result.seed, "status": result.status, "steps": result.steps,
            "best_step": result.best_step, "primary_metric": result.primary_metric,
            "primary_value": result.valid.get(result.primary_metric), "valid": result.valid, "test": result.test,
            "config": cfg, "tags": self.tags, "wall_time": result.wall_time,
        })


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


def _kept(state: dict[str, Any]) -> str:
    ckpt = f"the last good checkpoint (step {state['step']})" if state["step"] else "no checkpoint"
    best = f"the best weights (step {state['best_step']})" if state["best_step"] else "the last finite weights"
    return f"Kept {ckpt} and {best}; lower the learning rate or enable clip_norm."


def _version() -> str:
    import seqzoo

    return getattr(seqzoo, "__version__", "unknown")


def train(
    model: str,
    task: str,
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
) -> RunResult:
    """Train registered ``model`` on registered ``task``; the run lands in ``out/<run_name or derived name>``.

    ``model_args`` override the preset and the task's sizes (``spec.model_kwargs()``), which are filled in
    otherwise. ``resume=True`` continues from the directory's last checkpoint (or returns its result when
    it already finished); ``overwrite=True`` deletes an existing run of the same name first. A finished run
    is added to ``out/index.sqlite`` unless ``index=False``.
    """
    return Trainer(model, task, model_args=model_args, task_args=task_args, config=config, out=out,
                   run_name=run_name, resume=resume, tags=tags, index=index, overwrite=overwrite).run()

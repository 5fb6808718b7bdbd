"""Data parallelism under ``torchrun``: process group set-up, batch sharding and small collectives.

``torchrun`` (or any launcher) sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; with ``WORLD_SIZE > 1`` the trainer joins the group (gloo on CPU, NCCL on GPU). Every
rank draws the same global batch of the step and keeps its contiguous slice; DDP averages gradients,
so the update equals single-process training on the global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from seqzoo.tasks.base import Batch


@dataclass
class DistContext:
    """Where this process sits in the job (a single process is rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is an error."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train config device='cuda' but no CUDA device is available; use 'cpu' or 'auto'")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def setup_distributed(device: str = "auto") -> DistContext:
    """Join the process group described by the environment (or reuse one already initialised)."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = _env_int("LOCAL_RANK", rank)
        dev = resolve_device(device, local)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        return DistContext(rank, world, local, dev, owns_group=False)
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext(device=resolve_device(device))
    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={world} but this torch build has no torch.distributed")
    rank = _env_int("RANK", -1)
    if not 0 <= rank < world:
        raise ValueError(f"WORLD_SIZE={world} needs RANK in [0, {world}), got {os.environ.get('RANK')!r}")
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise ValueError(f"WORLD_SIZE={world} but {', '.join(missing)} not set; start the job with torchrun")
    local = _env_int("LOCAL_RANK", rank)
    dev = resolve_device(device, local)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    return DistContext(rank, world, local, dev, owns_group=True)


def teardown_distributed(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def shard_batch(batch: Batch, ctx: DistContext) -> Batch:
    """This rank's contiguous slice of every tensor whose first dimension is the batch."""
    if not ctx.enabled:
        return batch
    sizes = {v.shape[0] for v in batch.values() if torch.is_tensor(v) and v.dim() > 0}
    if len(sizes) != 1:
        raise ValueError(f"cannot shard a batch whose tensors disagree on the batch size: {sorted(sizes)}")
    n = sizes.pop()
    if n % ctx.world_size:
        raise ValueError(f"batch of {n} examples does not split evenly over {ctx.world_size} ranks; "
                         f"choose a batch_size divisible by the world size")
    per = n // ctx.world_size
    lo = ctx.rank * per
    return {k: (v[lo:lo + per] if torch.is_tensor(v) and v.dim() > 0 else v) for k, v in batch.items()}


def all_gather_batch(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Every rank's ``t`` concatenated along dimension 0 in rank order (the inverse of ``shard_batch``).

    Ranks hold equal shards (``shard_batch`` splits evenly), so the shapes agree; the result is on the CPU.
    """
    if not ctx.enabled:
        return t
    if t.dim() == 0:
        raise ValueError("all_gather_batch needs a tensor with a batch dimension, got a 0-dim tensor")
    local = t.detach().contiguous().to(ctx.device)
    parts = [torch.empty_like(local) for _ in range(ctx.world_size)]
    dist.all_gather(parts, local)
    return torch.cat(parts, 0).cpu()


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``t`` over ranks in place (identity in a single process)."""
    if ctx.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_flag(flag: bool, ctx: DistContext) -> bool:
    """Rank 0's decision, seen by every rank (so all ranks stop at the same step)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=ctx.device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


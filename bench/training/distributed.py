"""Data-parallel training across processes: ``torchrun --nproc_per_node=N bench train ...``.

torchrun starts N copies of the command and tells each its place in the environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). ``init_from_env`` joins the
process group from those (gloo on a CPU, NCCL on CUDA, where rank r takes ``cuda:LOCAL_RANK``);
without them training stays in one process, untouched.

How the work is shared:

- Data: every rank draws its own batch of ``batch_size`` crops from the same seeded
  permutation (``ImageSampler.shard``): rank r takes the r-th block of each global batch of
  ``batch_size x world`` positions, so the ranks see disjoint images and the sampler's saved
  position is the same on every rank.
- Gradients: averaged over the ranks just before each optimizer step (``average_gradients``,
  called by ``AmpContext``, through which every trainable steps its optimizers), which is the
  arithmetic of ``DistributedDataParallel``. Not the DDP wrapper itself: bench's trainables
  call their networks' methods (``model.encode``, a GAN's generator and discriminator in one
  step) rather than one wrapped ``forward``, which DDP needs to see every backward pass; the
  averaging at the optimizer serves every trainable unchanged. The parameters are broadcast
  from rank 0 once before the first step, as DDP does when it wraps a model.
- Randomness: every rank keeps the same seed (the same initial weights and training noise);
  the data differ by the sharding. A resumed run thus restores every rank from rank 0's state.
- Output: rank 0 alone logs and writes checkpoints; the losses it logs are the ranks' mean.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.errors import UsageError

if TYPE_CHECKING:
    import torch

ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process logs and writes checkpoints (rank 0)."""
        return self.rank == 0


def from_env(environ: Mapping[str, str] | None = None) -> World | None:
    """The world torchrun describes in the environment, or None when not launched by it."""
    env = os.environ if environ is None else environ
    if not all(name in env for name in ENVIRONMENT):
        return None
    try:
        return World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"]))
    except ValueError as exc:
        raise UsageError(f"torchrun's RANK, WORLD_SIZE, LOCAL_RANK: not integers ({exc})") from exc


def init_from_env(device: str) -> tuple[World, str]:
    """Join torchrun's process group when launched by it; (world, this rank's device).

    ``device`` ``cuda`` becomes ``cuda:LOCAL_RANK`` with NCCL; a CPU uses gloo. A single
    process (no torchrun, or ``WORLD_SIZE=1``) gets ``World()`` and ``device`` unchanged.
    """
    world = from_env()
    if world is None or world.size == 1:
        return World(), device
    import torch
    import torch.distributed as dist

    cuda = torch.device(device).type == "cuda"
    if cuda:
        if torch.cuda.device_count() <= world.local_rank:
            raise UsageError(
                f"rank {world.rank}: LOCAL_RANK={world.local_rank} but only "
                f"{torch.cuda.device_count()} CUDA device(s); --nproc_per_node must not exceed "
                "the GPUs of a node"
            )
        device = f"cuda:{world.local_rank}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return world, device


def current() -> World:
    """The world of the initialised process group, or a single process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def average_gradients(optimizer: torch.optim.Optimizer, world: int) -> None:
    """Replace the gradients of ``optimizer``'s parameters by their mean over the ranks (one
    all-reduce per device and dtype, over the flattened gradients)."""
    import torch
    import torch.distributed as dist

    groups: dict[tuple[Any, Any], list[torch.Tensor]] = {}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            if parameter.grad is not None:
                grad = parameter.grad
                groups.setdefault((grad.device, grad.dtype), []).append(grad)
    for grads in groups.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat.div_(world)
        at = 0
        for grad in grads:
            grad.copy_(flat[at : at + grad.numel()].view_as(grad))
            at += grad.numel()


def broadcast_modules(modules: Mapping[str, torch.nn.Module]) -> None:
    """Every rank takes rank 0's parameters and buffers."""
    import torch.distributed as dist

    for _, module in sorted(modules.items()):
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def mean_over_ranks(values: Mapping[str, float], world: int, device: str) -> dict[str, float]:
    """Each value averaged over the ranks (the same keys on every rank); ``device`` is where
    the backend reduces (a CUDA device for NCCL)."""
    import torch
    import torch.distributed as dist

    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return {k: float(v) / world for k, v in zip(keys, tensor.tolist(), strict=True)}


def finish() -> None:
    """Leave the process group, when this process joined one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


__all__ = [
    "World",
    "average_gradients",
    "barrier",
    "broadcast_modules",
    "current",
    "finish",
    "from_env",
    "init_from_env",
    "mean_over_ranks",
]

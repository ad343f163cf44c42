"""Training a QuantizedModule on several processes: DDP, or FSDP2 with sharding.

``multi_gpu = True`` in the settings makes ``acekit.compile`` distribute the module it
returns: replicated with ``DistributedDataParallel`` (``use_sharding = False``) or
sharded with FSDP2's ``fully_shard`` (``use_sharding = True``; it runs on CPU with gloo,
unlike the older ``FullyShardedDataParallel`` wrapper). Every rank starts from rank 0's
weights and scales, so all ranks train the same model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")

LAUNCH_HINT = (
    "start one process per device with a launcher, e.g. "
    "'torchrun --nproc_per_node 2 train.py', and call "
    "torch.distributed.init_process_group() before acekit.compile "
    "(or set distributed.multi_gpu = False)"
)


class DistributedSetupError(RuntimeError):
    """``multi_gpu`` is set but torch.distributed is not running."""


def check_process_group() -> None:
    """Raise :class:`DistributedSetupError` saying how to launch when no group runs."""
    if not dist.is_available() or not dist.is_initialized():
        raise DistributedSetupError(
            f"distributed.multi_gpu = True needs an initialised process group: {LAUNCH_HINT}"
        )


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy ``src``'s parameters and buffers to every rank, in place."""
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=src)


def shard(module: nn.Module) -> nn.Module:
    """Shard ``module``'s parameters across the ranks with FSDP2 (in place)."""
    from torch.distributed.fsdp import fully_shard

    fully_shard(module)
    return module


def replicate(module: nn.Module) -> nn.Module:
    """A ``DistributedDataParallel`` wrapper of ``module`` (gradients averaged)."""
    device_ids = [module_device(module).index] if module_device(module).type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (CPU for a module without any)."""
    for parameter in module.parameters():
        return parameter.device
    return torch.device("cpu")


def on_rank_zero(write: Callable[[], T], result: T) -> T:
    """Run ``write`` on rank 0 only (every process when not distributed).

    The other ranks wait for it and get ``result``; an error on rank 0 is raised there
    (the others are released by the barrier only if rank 0 reaches it).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return write()
    written = write() if dist.get_rank() == 0 else result
    dist.barrier()
    return written


def full_tensor(tensor: Any) -> torch.Tensor:
    """``tensor`` whole: a sharded DTensor is gathered (a collective: call on all ranks)."""
    gather = getattr(tensor, "full_tensor", None)
    return gather() if callable(gather) else tensor

"""torchrun environment -> (rank, world size, device); gloo on CPU, nccl on CUDA.

The same code runs as one process (no env vars: rank 0 of 1, no process group) or under
`torchrun`, which sets RANK, WORLD_SIZE and LOCAL_RANK.
"""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import PctError


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self):
        return self.rank == 0


def setup(device=None):
    """Initialise the process group when launched by torchrun; pick this process's device."""
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = parse_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
    return Dist(rank, world, local_rank, device)


def parse_device(name):
    """torch.device of a --device value; PctError for a name torch does not know or a CUDA
    device this machine does not have."""
    try:
        device = torch.device(name)
    except RuntimeError:  # torch's error for an unparsable device string
        raise PctError(f"unknown --device {name!r} (e.g. cpu, cuda, cuda:0)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise PctError(f"--device {name!r}: this machine has {count} CUDA device(s)")
    return device


def cleanup():
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier():
    if dist.is_initialized():
        dist.barrier()


def all_sum(values, device):
    """Sum a list of floats over all processes (on `device`, so nccl works too)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()


def broadcast_object(obj, src=0):
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_with_grad(tensor):
    """Concatenate equal-shaped [b, ...] tensors of all ranks into [world * b, ...].

    Differentiable: the backward pass sums each rank's gradient for every slice and returns
    this rank's slice, so a loss over the global batch trains every rank's inputs correctly.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return tensor
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(tensor), dim=0)

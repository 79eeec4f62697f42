"""torchrun environment -> (rank, world size, node, device); gloo on CPU, nccl on CUDA.

The same code runs as one process (no env vars: rank 0 of 1, no process group) or under
`torchrun`, which sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE and GROUP_RANK (the
node's rank). Node-local resources (shared memory) are named by `run_id` and `node`, so two
launchers on one machine (two "nodes") never share them.
"""
import os
import secrets
import sys
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from . import allocator
from .errors import PctError


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    local_world: int = 1      # processes on this node
    node: int = 0             # this node's rank (torchrun's GROUP_RANK)
    run_id: str = "local"     # the same on every rank of one run, different between runs
    node_group: object = field(default=None, compare=False)  # gloo group of this node's
                                                              # processes (None: alone)

    @property
    def is_main(self):
        return self.rank == 0


def setup(device=None):
    """Initialise the process group when launched by torchrun; pick this process's device;
    keep freed host memory mapped between steps (allocator.py)."""
    allocator.keep_freed_memory()
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif device == "cuda":  # no index: this process's GPU on its node
        device = f"cuda:{local_rank}"
    device = parse_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    node = int(os.environ.get("GROUP_RANK", 0))
    run_id = broadcast_object(secrets.token_hex(6))
    group = node_group(node) if dist.is_initialized() and local_world > 1 else None
    return Dist(rank, world, local_rank, device, local_world, node, run_id, group)


def node_group(node):
    """A gloo process group of the processes on this process's node (`node`); every process
    calls this, and creates every node's group in the same order, as torch requires. Gloo on
    every device: its collectives run on the CPU, beside nccl's."""
    nodes = [None] * dist.get_world_size()
    dist.all_gather_object(nodes, node)
    groups = {n: dist.new_group([r for r, m in enumerate(nodes) if m == n], backend="gloo")
              for n in sorted(set(nodes))}
    return groups[node]


def node_agree(ok, d):
    """True when `ok` is true on every process of this process's node (one all_reduce of the
    node's gloo group, `d.node_group`; callable from a background thread): a barrier that
    also tells every process whether another one failed."""
    if d.node_group is None:
        return bool(ok)
    flag = torch.tensor([1 if ok else 0], dtype=torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=d.node_group)
    return bool(flag.item())


def usable_cores():
    """Cores this process may run on (its CPU affinity), e.g. a Slurm allocation's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform
        return os.cpu_count() or 1


def workers_for(asked=None):
    """Loader threads for this process: `asked` (--workers), or by default the usable cores
    divided among the processes of this node. More threads than cores cannot run (numba
    refuses them), so a larger `asked` is lowered to that, with a one-line note."""
    share = max(1, usable_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    if asked is None:
        return share
    if asked > usable_cores():
        if int(os.environ.get("RANK", 0)) == 0:
            print(f"pct: note: --workers {asked} is more than the {usable_cores()} cores this "
                  f"process may use; using {usable_cores()}", file=sys.stderr, flush=True)
        return usable_cores()
    return asked


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


def first_problem(problem):
    """The first non-None of every process's `problem` (an error message or None), in rank
    order, so that all processes stop together when one of them cannot go on."""
    if not dist.is_initialized():
        return problem
    problems = [None] * dist.get_world_size()
    dist.all_gather_object(problems, problem)
    return next((p for p in problems if p is not None), None)


def agree(action):
    """Run `action` here and stop every process with the first process's PctError (in rank
    order) if any raised one, so that no process waits for one that has stopped."""
    problem = None
    try:
        action()
    except PctError as exc:
        problem = str(exc)
    problem = first_problem(problem)
    if problem is not None:
        raise PctError(problem)


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

"""One process or many (``torchrun``): who am I, which share of the work is mine.

No global state of our own: a ``ProcessGroup`` context sets up torch.distributed when torchrun's
environment says so (WORLD_SIZE > 1), and always tears it down.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

from wsseg.errors import WssegError

T = TypeVar("T")


@dataclass(frozen=True)
class ProcessGroup:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    local_world_size: int = 1  # processes on this machine (they share its CPU cores and GPUs)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's items: every world_size-th one, starting at its rank."""
        return list(items[self.rank::self.world_size])

    def shard_blocks(self, items: Sequence[T], block: int) -> list[T]:
        """This rank's items in whole blocks of ``block`` consecutive ones, dealt round-robin.

        Batched inference cuts its batches from such blocks, so each rank computes every image with
        the same batch neighbours as a single process does, and writes the same bytes.
        """
        if block < 1:
            raise ValueError("block size must be at least 1")
        starts = range(self.rank * block, len(items), self.world_size * block)
        return [item for start in starts for item in items[start:start + block]]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_sum(self, values: np.ndarray) -> np.ndarray:
        """Element-wise sum of an integer array over all ranks (every rank gets the total)."""
        if not self.distributed:
            return values
        tensor = torch.as_tensor(np.ascontiguousarray(values, dtype=np.int64)).to(self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.cpu().numpy()

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """Run this rank's share; on leaving, wait for every rank, and fail on all if any failed.

        Used instead of a bare barrier so a rank stopped by a bad file makes the others stop with a
        clear message rather than wait at the barrier until the collective timeout.
        """
        failure: WssegError | OSError | None = None
        try:
            yield
        except (WssegError, OSError) as exc:
            failure = exc
        failed_ranks = int(self.all_sum(np.array([failure is not None]))[0]) if self.distributed else 0
        if failure is not None:
            raise failure
        if failed_ranks:
            raise WssegError(f"rank {self.rank}: {failed_ranks} other rank(s) failed (their messages say why); "
                             "this rank's finished outputs are complete and a rerun resumes")


def rank_device(requested: str | None, local_rank: int = 0, local_world_size: int = 1,
                cuda_count: int = 0) -> torch.device:
    """The device of the process with ``local_rank`` among ``local_world_size`` on its machine.

    ``auto`` (or None) and a bare ``cuda`` give each rank a GPU of its own, ``cuda:LOCAL_RANK``
    (torchrun numbers the processes of a machine 0..n-1), so that n processes never pile onto
    cuda:0; ``auto`` without a GPU is the CPU. An explicit ``cuda:N`` is one GPU for one process:
    under torchrun with several processes per machine it is refused. A pure function of its
    arguments, so the policy is tested without a GPU.
    """
    name = (requested or "auto").strip().lower()
    if name == "auto":
        if cuda_count == 0:
            return torch.device("cpu")
        name = "cuda"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise WssegError(f"--device {requested!r}: not a device (auto, cpu, cuda or cuda:N)") from None
    if device.type != "cuda":
        return device
    if cuda_count == 0:
        raise WssegError(f"--device {requested}: no CUDA device is available here (torch {torch.__version__}); "
                         "use --device cpu or auto")
    if local_world_size > cuda_count:
        raise WssegError(f"{local_world_size} processes on this machine but {cuda_count} GPU(s): give torchrun "
                         f"--nproc_per_node {cuda_count} or less (one GPU per process)")
    if device.index is None:
        if local_rank >= cuda_count:
            raise WssegError(f"LOCAL_RANK {local_rank} but {cuda_count} GPU(s) visible to this process")
        return torch.device("cuda", local_rank)
    if local_world_size > 1:
        raise WssegError(f"--device {requested}: every one of the {local_world_size} processes would use that one "
                         "GPU; give --device cuda (or auto) and each process takes cuda:LOCAL_RANK")
    if device.index >= cuda_count:
        raise WssegError(f"--device {requested}: there are only {cuda_count} GPU(s) (cuda:0..cuda:{cuda_count - 1})")
    return device


def pick_device(requested: str | None = None, local_rank: int = 0, local_world_size: int = 1) -> torch.device:
    """:func:`rank_device` with this machine's GPU count."""
    cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return rank_device(requested, local_rank, local_world_size, cuda_count)


@contextlib.contextmanager
def process_group(device: str | None = None) -> Iterator[ProcessGroup]:
    """Join torchrun's process group when launched by it (gloo on CPU, nccl on GPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if world_size > 1 else 1
    chosen = pick_device(device, local_rank, local_world_size)
    if world_size <= 1:
        yield ProcessGroup(device=chosen)
        return
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    backend = "nccl" if chosen.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    try:
        yield ProcessGroup(rank, world_size, local_rank, chosen, local_world_size)
    finally:
        dist.destroy_process_group()

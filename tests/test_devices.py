"""Which device each process uses, how many loader workers it starts, and in which precision it
trains: pure policies, tested here without a GPU (the CUDA numbers themselves are benchmarks')."""

from __future__ import annotations

import pytest
import torch

from wsseg.distributed import rank_device
from wsseg.errors import WssegError


@pytest.mark.parametrize("requested", [None, "auto", "cuda", "CUDA"])
def test_each_torchrun_rank_takes_its_own_gpu(requested) -> None:
    devices = [rank_device(requested, local_rank, local_world_size=4, cuda_count=4) for local_rank in range(4)]
    assert devices == [torch.device("cuda", n) for n in range(4)]


def test_auto_without_a_gpu_is_the_cpu_for_every_rank() -> None:
    assert {rank_device("auto", r, 3, cuda_count=0) for r in range(3)} == {torch.device("cpu")}
    assert rank_device("cpu", 2, 4, cuda_count=4) == torch.device("cpu")


def test_an_explicit_gpu_is_kept_for_one_process_and_refused_for_several() -> None:
    assert rank_device("cuda:1", 0, 1, cuda_count=2) == torch.device("cuda", 1)
    with pytest.raises(WssegError, match="every one of the 2 processes"):
        rank_device("cuda:1", 1, 2, cuda_count=2)
    with pytest.raises(WssegError, match="only 2 GPU"):
        rank_device("cuda:2", 0, 1, cuda_count=2)


def test_more_processes_than_gpus_or_no_gpu_is_one_clear_error() -> None:
    with pytest.raises(WssegError, match="4 processes on this machine but 2 GPU"):
        rank_device("auto", 3, 4, cuda_count=2)
    with pytest.raises(WssegError, match="no CUDA device"):
        rank_device("cuda", 0, 1, cuda_count=0)
    with pytest.raises(WssegError, match="not a device"):
        rank_device("gpu0", 0, 1, cuda_count=1)

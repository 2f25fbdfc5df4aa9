"""Which device each process uses, how many loader workers it starts, and in which precision it
trains: pure policies, tested here without a GPU (the CUDA numbers themselves are benchmarks')."""

from __future__ import annotations

import pytest
import torch

from wsseg.data.loading import EpochShards, LabelledImages, auto_workers, cpus_per_rank, loader_settings
from wsseg.distributed import rank_device
from wsseg.errors import WssegError
from wsseg.train import precision_name, resolve_workers, training_autocast


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


# -- loader workers ----------------------------------------------------------------------------


def test_auto_workers_is_none_on_cpu_and_cores_but_one_up_to_eight_on_cuda() -> None:
    assert [auto_workers("cpu", n) for n in (1, 2, 64)] == [0, 0, 0]
    assert [auto_workers("cuda", n) for n in (1, 2, 4, 9, 10, 64)] == [0, 1, 3, 8, 8, 8]


def test_cores_are_shared_among_the_ranks_of_a_machine(monkeypatch) -> None:
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert [cpus_per_rank(n) for n in (1, 2, 4, 32)] == [16, 8, 4, 1]
    assert resolve_workers(None, torch.device("cuda", 1), local_world_size=4) == 3
    assert resolve_workers(None, torch.device("cpu"), local_world_size=1) == 0
    assert resolve_workers(5, torch.device("cpu")) == 5
    with pytest.raises(WssegError, match="--workers -1"):
        resolve_workers(-1, torch.device("cpu"))


def test_cuda_loaders_pin_memory_and_workers_persist() -> None:
    assert loader_settings(torch.device("cpu"), 0) == {"num_workers": 0, "pin_memory": False}
    assert loader_settings(torch.device("cuda", 0), 3) == {"num_workers": 3, "pin_memory": True,
                                                           "persistent_workers": True}


def test_persistent_workers_give_the_in_process_batches_of_every_epoch(tiny_bench) -> None:
    from torch.utils.data import DataLoader

    from wsseg.data.voc import VOCDataset

    images = LabelledImages(VOCDataset(tiny_bench, "train"), 64, seed=3, augment=True, jitter=0.4)

    def epochs(workers: int) -> list[list[torch.Tensor]]:
        sampler = EpochShards(len(images), seed=3, rank=1, world_size=3)
        loader = DataLoader(images, batch_size=2, sampler=sampler, **loader_settings(torch.device("cpu"), workers))
        seen = []
        for epoch in range(2):
            sampler.set_epoch(epoch)
            seen.append([batch[0] for batch in loader])
        return seen

    in_process, with_workers = epochs(0), epochs(2)
    assert len(in_process[0]) == 2  # 8 images over 3 ranks: 3 each (padded), in batches of 2
    for a, b in zip(in_process, with_workers):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(in_process[0][0], in_process[1][0])  # the epoch reached the persistent workers


def test_epoch_shards_cover_the_split_once_per_epoch_over_all_ranks() -> None:
    shards = [EpochShards(10, seed=1, rank=r, world_size=4) for r in range(4)]
    for epoch in (0, 5):
        for shard in shards:
            shard.set_epoch(epoch)
        keys = [key for shard in shards for key in shard]
        assert {e for e, _ in keys} == {epoch} and len(keys) == 12 and {i for _, i in keys} == set(range(10))
    assert [list(s) for s in shards] != [list(EpochShards(10, seed=2, rank=r, world_size=4)) for r in range(4)]


# -- mixed precision ---------------------------------------------------------------------------

def test_autocast_is_off_on_cpu_and_bf16_where_the_gpu_has_it() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert training_autocast(cpu, "auto") is None and training_autocast(cpu, "fp32") is None
    assert training_autocast(gpu, "auto", bf16_supported=True) == torch.bfloat16
    assert training_autocast(gpu, "auto", bf16_supported=False) == torch.float16
    assert training_autocast(gpu, "fp16", bf16_supported=True) == torch.float16
    assert training_autocast(gpu, "fp32", bf16_supported=True) is None
    with pytest.raises(WssegError, match="mixed precision is for CUDA"):
        training_autocast(cpu, "bf16")
    with pytest.raises(WssegError, match="no native bfloat16"):
        training_autocast(gpu, "bf16", bf16_supported=False)
    assert precision_name(torch.float16) == "fp16 autocast + grad scaler"


def test_cpu_training_records_fp32_and_refuses_gpu_precision(tiny_bench, tmp_path, capsys) -> None:
    from wsseg.cli import main
    from wsseg.train import TrainOptions, train

    history = train(TrainOptions(data=str(tiny_bench), out=str(tmp_path / "run"), epochs=1, image_size=64,
                                 batch_size=4, val_split=None, progress=False))
    assert history[0]["precision"] == "fp32"
    args = ["train", "--data", str(tiny_bench), "--out", str(tmp_path / "bf16"), "--precision", "bf16",
            "--device", "cpu", "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mixed precision is for CUDA" in err[0]


def test_maps_run_in_true_float32_and_restore_the_tf32_flags() -> None:
    from wsseg.maps.hooks import inference_state

    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        model = torch.nn.Linear(2, 2)
        with inference_state(model):
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32 and model.training
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_colour_jitter_in_place_gives_the_bytes_of_its_formula() -> None:
    import numpy as np

    from wsseg.data.transforms import colour_jitter

    rgb = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for seed in range(5):
        b, c, s = np.random.default_rng(seed).uniform(0.6, 1.4, size=3)
        image = rgb.astype(np.float32) * b
        image = (image - image.mean()) * c + image.mean()
        grey = image @ np.array([0.299, 0.587, 0.114], np.float32)
        expected = np.clip(np.round(grey[..., None] + (image - grey[..., None]) * s), 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(colour_jitter(rgb, np.random.default_rng(seed), 0.4), expected)
    assert colour_jitter(rgb, np.random.default_rng(0), 0.0) is rgb


def test_train_cli_takes_auto_or_a_count_of_workers_and_a_precision(capsys) -> None:
    from wsseg.cli import build_parser

    parser = build_parser()
    base = ["train", "--data", "d", "--out", "o"]
    defaults = parser.parse_args(base)
    assert defaults.workers is None and defaults.precision == "auto"  # None: the device's policy
    assert parser.parse_args(base + ["--workers", "0"]).workers == 0
    assert parser.parse_args(base + ["--workers", "AUTO", "--precision", "fp16"]).workers is None
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(base + ["--workers", "-1"])
    assert stop.value.code == 2 and "must be 0 or more" in capsys.readouterr().err
    train_help = " ".join(parser._subparsers._group_actions[0].choices["train"].format_help().split())
    assert "default auto: 0 on a CPU" in train_help and "min(8, CPU cores per process - 1)" in train_help

"""torchrun sharding of segment / maps / evaluate: same bytes as one process, merged scores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from wsseg.cli import main


def _wsseg(args: list[str], port: int | None = None) -> subprocess.CompletedProcess:
    """wsseg in one process, or in two under torchrun, with two threads in every process: outputs are
    identical for the same threads per process (kernels may round differently with another count),
    and with two threads a batch made of other images rounds differently too, which this catches."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    launcher = [] if port is None else ["-m", "torch.distributed.run", "--nproc_per_node", "2",
                                        "--master_port", str(port)]
    return subprocess.run([sys.executable, *launcher, "-m", "wsseg", *args, "--quiet"],
                          capture_output=True, text=True, timeout=300, env=env)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def test_two_process_segment_maps_and_evaluate_equal_one_process(tiny_bench: Path, tiny_run: Path,
                                                                 tmp_path: Path) -> None:
    common = ["--run-dir", str(tiny_run), "--data", str(tiny_bench), "--split", "train", "--batch-size", "3"]
    jobs = {"segment": ["segment", *common, "--method", "dcsm-crf"],
            "maps": ["maps", *common, "--method", "dcsm", "--scales", "1"]}
    for port, (name, args) in enumerate(jobs.items(), start=29541):
        assert _wsseg([*args, "--out", str(tmp_path / f"{name}-one")]).returncode == 0
        result = _wsseg([*args, "--out", str(tmp_path / f"{name}-two")], port)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "rank 0/2" in result.stdout and "rank 1/2" in result.stdout  # both ranks did a share
        one, two = _files(tmp_path / f"{name}-one"), _files(tmp_path / f"{name}-two")
        assert len(one) >= 8 and one.keys() == two.keys()
        assert [k for k in one if one[k] != two[k]] == []  # byte-identical outputs

    evaluate = ["evaluate", "--pred", str(tmp_path / "segment-one"), "--data", str(tiny_bench), "--split", "train"]
    assert main([*evaluate, "--json", str(tmp_path / "one.json"), "--quiet"]) == 0
    result = _wsseg([*evaluate, "--json", str(tmp_path / "two.json")], 29545)
    assert result.returncode == 0, result.stderr[-2000:]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert two["n_images"] == one["n_images"] == 8  # the shares were added up, not rank 0's alone
    assert two["confusion"] == one["confusion"] and two["miou"] == one["miou"]
    assert result.stdout.count("mIoU") == 1  # only rank 0 prints the table


def test_a_rank_failing_on_a_bad_file_stops_every_rank_with_one_line(tiny_bench: Path, tiny_run: Path,
                                                                     tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_bench, data)
    ids = (data / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    bad = data / "JPEGImages" / f"{ids[1]}.jpg"  # rank 1's first image
    bad.write_bytes(b"not an image")
    out = tmp_path / "out"
    result = _wsseg(["segment", "--run-dir", str(tiny_run), "--data", str(data), "--split", "train",
                        "--method", "cam", "--out", str(out), "--batch-size", "1"], 29547)
    assert result.returncode != 0
    assert f"wsseg segment: error: {bad}: cannot decode image" in result.stderr
    assert "other rank(s) failed" in result.stderr  # rank 0 stopped too, instead of waiting at a barrier
    assert not list(out.glob(".*.tmp"))


def test_batches_come_from_fixed_blocks_whatever_is_done(tmp_path: Path) -> None:
    import numpy as np

    from conftest import write_voc
    from wsseg.data.voc import VOCDataset
    from wsseg.distributed import ProcessGroup
    from wsseg.runner import iter_batches

    sizes = {"a": 8, "b": 8, "c": 6, "d": 8, "e": 8}  # "c" differs in size
    root = write_voc(tmp_path / "voc", {i: {"mask": np.zeros((side, side), np.uint8)} for i, side in sizes.items()})
    dataset = VOCDataset(root, "train")

    def batches(ids, done=()):
        return [[(item.id, item.done) for item in batch]
                for batch in iter_batches(dataset, ids, 3, False, False, is_done=lambda i: i in done)]

    assert batches(dataset.ids) == [[("a", False), ("b", False)], [("c", False)], [("d", False), ("e", False)]]
    # "a" done: "b" is still computed next to it, as in the uninterrupted run; finished runs are not yielded
    assert batches(dataset.ids, done={"a"}) == [[("a", True), ("b", False)], [("c", False)],
                                                [("d", False), ("e", False)]]
    assert batches(dataset.ids, done={"a", "b", "c"}) == [[("d", False), ("e", False)]]
    # ranks get whole blocks, so their batches are the single process's
    shards = [ProcessGroup(rank, 2).shard_blocks(dataset.ids, 3) for rank in (0, 1)]
    assert shards == [["a", "b", "c"], ["d", "e"]]
    assert batches(shards[0]) + batches(shards[1]) == batches(dataset.ids)

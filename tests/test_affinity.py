"""Affinity network and random walk (issue 14): pair targets, the walk, the transition matrix,
and train-affinity / cam-rw from the command line on tiny generated data."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from wsseg.cli import main
from wsseg.data.images import write_label_png
from wsseg.fusion.random_walk import random_walk, transition_matrix, walk_with_background
from wsseg.models.affinity import neighbours_per_pixel, pair_offsets, pair_targets

VOID = 255


def _brute_force_groups(labels: np.ndarray, radius: int) -> dict[str, set]:
    """Every unordered pair within the radius, sorted into the three groups by hand."""
    height, width = labels.shape
    pixels = [(y, x) for y in range(height) for x in range(width)]
    groups: dict[str, set] = {"background": set(), "foreground": set(), "different": set()}
    for i, p in enumerate(pixels):
        for q in pixels[i + 1:]:
            if (p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 >= radius ** 2:
                continue
            a, b = int(labels[p]), int(labels[q])
            if VOID in (a, b):
                continue
            group = "different" if a != b else ("background" if a == 0 else "foreground")
            groups[group].add(frozenset((p, q)))
    return groups


def _groups_from_targets(labels: np.ndarray, radius: int) -> dict[str, set]:
    targets = pair_targets(torch.from_numpy(labels), radius)
    found: dict[str, set] = {}
    for name in ("background", "foreground", "different"):
        pairs = set()
        for (dy, dx), mask in zip(pair_offsets(radius), getattr(targets, name)):
            x0 = max(0, -dx)
            for y, x in zip(*np.nonzero(mask.numpy())):
                p = (int(y), int(x) + x0)
                pairs.add(frozenset((p, (p[0] + dy, p[1] + dx))))
        found[name] = pairs
    return found


def test_affinity_targets_from_a_hand_made_label_map() -> None:
    labels = np.zeros((7, 9), np.uint8)
    labels[1:5, 1:4] = 2  # a class region
    labels[2:6, 6:9] = 1  # another class
    labels[0, 5] = VOID  # uncertain pixels
    labels[3, 4] = VOID
    targets = _groups_from_targets(labels, radius=3)
    expected = _brute_force_groups(labels, radius=3)
    assert targets == expected
    inside = frozenset(((1, 1), (2, 2)))
    across = frozenset(((2, 3), (2, 4)))  # class 2 next to background
    touching_void = frozenset(((3, 3), (3, 4)))
    assert inside in targets["foreground"] and across in targets["different"]
    assert all(touching_void not in pairs for pairs in targets.values())
    assert frozenset(((6, 0), (6, 1))) in targets["background"]
    assert not any(pair for pair in targets["different"] if any(labels[p] == VOID for p in pair))


def _two_region_embedding(height: int, width: int, edge: int) -> torch.Tensor:
    """One-channel embedding: 0 left of column ``edge``, 10 from it on (affinity exp(-10) across)."""
    embedding = torch.zeros(1, height, width)
    embedding[:, :, edge:] = 10.0
    return embedding


def test_random_walk_fills_a_region_without_leaking_across_an_affinity_edge() -> None:
    height, width, edge = 12, 16, 9
    transition = transition_matrix(_two_region_embedding(height, width, edge), radius=5, beta=8)
    scores = torch.zeros(2, height, width)
    scores[0, 5:7, 1:3] = 1.0  # a seed of class A at the left
    scores[1, 4:6, 12:14] = 1.0  # a seed of class B at the right
    walked = random_walk(scores, transition, logt=8)
    left, right = walked[:, :, :edge], walked[:, :, edge:]
    assert bool((left[0] > 1e-3).all()) and bool((right[1] > 1e-3).all())  # each region filled
    assert float(left[1].max()) < 1e-6 * float(left[0].min())  # nothing leaked across the edge
    assert float(right[0].max()) < 1e-6 * float(right[1].min())
    # and through the labels: a class seeded over part of the left region takes all of it
    maps = np.zeros((1, 4 * height, 4 * width), np.float32)
    maps[0, :, : 4 * 5] = 1.0  # the class map covers 5 of the region's 9 columns
    scores = walk_with_background(maps, transition, (height, width), threshold=0.5)
    labels = np.argmax(scores, axis=0)
    assert (labels[:, : 4 * edge - 4] == 1).all() and (labels[:, 4 * edge + 4:] == 0).all()
    without_walk = np.argmax(np.concatenate([1 - maps.max(0, keepdims=True), maps]), axis=0)
    assert (without_walk[:, 4 * 6: 4 * edge - 4] == 0).all()  # the walk, not the map, filled those columns


def test_transition_rows_sum_to_one_and_nonzeros_stay_within_the_bound() -> None:
    radius = 5
    embedding = torch.randn(8, 13, 17, generator=torch.Generator().manual_seed(0))
    transition = transition_matrix(embedding, radius=radius, beta=8)
    pixels = 13 * 17
    assert transition.layout == torch.sparse_csr and transition.shape == (pixels, pixels)
    dense = transition.to_dense()
    assert torch.allclose(dense.sum(dim=1), torch.ones(pixels), atol=1e-5)
    assert transition._nnz() <= pixels * (math.pi * radius ** 2 + 1)
    assert transition._nnz() <= pixels * neighbours_per_pixel(radius)
    assert neighbours_per_pixel(radius) == 69 <= math.pi * radius ** 2 + 1
    # the pattern is symmetric (A is) and only pixels closer than the radius are linked
    assert torch.equal(dense > 0, (dense > 0).T)
    ys, xs = torch.nonzero(dense, as_tuple=True)
    distance2 = (ys // 17 - xs // 17) ** 2 + (ys % 17 - xs % 17) ** 2
    assert int(distance2.max()) < radius ** 2


def _pseudo_labels(run: Path, data: Path, out: Path) -> Path:
    assert main(["segment", "--run", str(run), "--data", str(data), "--split", "train", "--labels", "gt",
                 "--method", "cam-crf", "--ignore-uncertain", "--scales", "1", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def affinity_run(tiny_run: Path, tiny_bench: Path, tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("affinity")
    run = root / "run"
    shutil.copytree(tiny_run, run)
    pseudo = _pseudo_labels(run, tiny_bench, root / "pseudo")
    assert main(["train-affinity", "--run", str(run), "--data", str(tiny_bench), "--pseudo", str(pseudo),
                 "--epochs", "2", "--batch-size", "4", "--quiet"]) == 0
    return run, tiny_bench, pseudo


def test_train_affinity_records_where_its_labels_came_from(affinity_run) -> None:
    run, _, pseudo = affinity_run
    record = json.loads((run / "affinity.json").read_text())
    assert record["labels"]["method"] == "cam-crf" and record["labels"]["ignore_uncertain"] is True
    assert record["labels"]["threshold"] == 0.55 and record["labels"]["folder"] == str(pseudo.resolve())
    assert record["training"]["backbone_frozen"] is True and record["network"]["stride"] == 4
    history = json.loads((run / "affinity-history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2] and all(math.isfinite(r["loss"]) for r in history)
    state = torch.load(run / "affinity.pt", weights_only=True)
    assert state["epoch"] == 1 and "optimizer" in state


def test_resume_ends_with_the_same_weights(affinity_run, tmp_path: Path) -> None:
    run, data, pseudo = affinity_run
    resumed = tmp_path / "run"
    shutil.copytree(run, resumed)
    for name in ("affinity.pt", "affinity.json", "affinity-history.json"):
        (resumed / name).unlink()
    args = ["train-affinity", "--run", str(resumed), "--data", str(data), "--pseudo", str(pseudo),
            "--epochs", "2", "--batch-size", "4", "--quiet"]
    assert main([*args, "--stop-after", "1"]) == 0
    assert json.loads((resumed / "affinity-history.json").read_text())[-1]["epoch"] == 1
    assert main([*args, "--resume"]) == 0
    straight, again = (torch.load(r / "affinity.pt", weights_only=True) for r in (run, resumed))
    assert straight["epoch"] == again["epoch"] == 1
    assert all(torch.equal(straight["model"][k], again["model"][k]) for k in straight["model"])  # bit for bit
    moments = [(a["exp_avg"], b["exp_avg"]) for a, b in zip(straight["optimizer"]["state"].values(),
                                                            again["optimizer"]["state"].values())]
    assert moments and all(torch.equal(a, b) for a, b in moments)


def test_cam_rw_segments_and_tunes(affinity_run, tmp_path: Path) -> None:
    run, data, _ = affinity_run
    out = tmp_path / "cam-rw"
    assert main(["segment", "--run", str(run), "--data", str(data), "--split", "val", "--method", "cam-rw",
                 "--labels", "predicted", "--out", str(out), "--quiet"]) == 0
    record = json.loads((out / "segment.json").read_text())
    assert record["method"] == "cam-rw" and len(record["affinity_sha256"]) == 64
    assert len(list(out.glob("*.png"))) == 4
    assert main(["tune-background", "--run", str(run), "--data", str(data), "--split", "train", "--method",
                 "dcsm-rw", "--thresholds", "0.45,0.65", "--scales", "1", "--quiet"]) == 0


def test_cam_rw_without_affinity_names_the_file_and_the_command(tiny_run: Path, tiny_bench: Path, tmp_path: Path,
                                                                 capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert main(["segment", "--run", str(run), "--data", str(tiny_bench), "--method", "cam-rw",
                 "--out", str(tmp_path / "out"), "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert str(run / "affinity.pt") in error and "run wsseg train-affinity first" in error


def test_bad_pseudo_labels_are_one_line_naming_the_file(affinity_run, tmp_path: Path, capsys) -> None:
    run, data, pseudo = affinity_run
    bad = tmp_path / "pseudo"
    shutil.copytree(pseudo, bad)
    victim = sorted(bad.glob("*.png"))[0]
    write_label_png(victim, np.zeros((5, 7), np.uint8))  # the wrong size
    fresh = tmp_path / "run"
    shutil.copytree(run, fresh)
    args = ["train-affinity", "--run", str(fresh), "--data", str(data), "--pseudo", str(bad), "--epochs", "1",
            "--batch-size", "4", "--overwrite", "--quiet"]  # the copy holds the fixture's affinity network
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and str(victim) in error and "7x5" in error
    write_label_png(victim, np.full((5, 7), 9, np.uint8))  # a value out of range (tiny_bench has 6 classes)
    assert main(args) == 2
    assert str(victim) in capsys.readouterr().err
    (bad / "segment.json").unlink()
    assert main(args) == 2
    assert str(bad / "segment.json") in capsys.readouterr().err

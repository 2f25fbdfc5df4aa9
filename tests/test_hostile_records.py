"""The second hostile-user pass (issue 23): nothing a user already has is replaced, and a record
never describes what its folder does not hold. Each test names the failure it guards; all run
offline on the tiny generated benchmark."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from wsseg.cli import main
from wsseg.errors import WssegError

SEG_FAST = ["--crop-size", "64", "--batch-size", "4", "--val-split", "none", "--device", "cpu", "--quiet"]


class Killed(BaseException):
    """What ``kill -9`` does to a trainer, as far as its files can tell: it stops, mid-way."""


def _killed(*args, **kwargs):
    raise Killed()


def _exit_or_killed(args: list[str]) -> int | str:
    """The command's exit code, or 'killed' when it was stopped part-way by :func:`_killed`."""
    try:
        return main(args)
    except Killed:
        return "killed"


def _digests(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative name -> SHA-256): 'unchanged byte for byte'."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def _seg_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train-seg", "--data", str(data), "--out", str(out), "--ground-truth", "--epochs", "1", *SEG_FAST, *extra]


@pytest.fixture(scope="module")
def finished_seg(tiny_bench: Path, tmp_path_factory) -> Path:
    """A finished one-epoch stage-2 run (seed 0) on ground truth."""
    out = tmp_path_factory.mktemp("seg") / "seg"
    assert main(_seg_args(tiny_bench, out)) == 0
    return out


@pytest.fixture(scope="module")
def pseudo(tiny_run: Path, tiny_bench: Path, tmp_path_factory) -> Path:
    """Confident pseudo-labels of train by the tiny classifier (what train-affinity learns from)."""
    out = tmp_path_factory.mktemp("pseudo") / "pseudo"
    assert main(["segment", "--run", str(tiny_run), "--data", str(tiny_bench), "--split", "train", "--labels", "gt",
                 "--method", "cam-crf", "--ignore-uncertain", "--scales", "1", "--out", str(out), "--quiet"]) == 0
    return out


def _affinity_args(run: Path, data: Path, pseudo: Path, *extra: str) -> list[str]:
    return ["train-affinity", "--run", str(run), "--data", str(data), "--pseudo", str(pseudo), "--epochs", "1",
            "--batch-size", "4", "--device", "cpu", "--quiet", *extra]


# --- 1. a record never describes weights it does not hold ----------------------------------------------------------


def test_seg_config_is_not_replaced_before_a_new_seed_has_a_checkpoint(finished_seg: Path, tiny_bench: Path,
                                                                       tmp_path: Path, monkeypatch) -> None:
    """Guards: `train-seg --seed 7` into a finished seed-0 folder, killed before its first checkpoint, left a seed-7
    config.json over the seed-0 network (and `--resume` then said 'finished' with the wrong weights)."""
    import wsseg.training.loop

    out = tmp_path / "seg"
    shutil.copytree(finished_seg, out)
    weights = (out / "model.pt").read_bytes()
    monkeypatch.setattr(wsseg.training.loop, "_train_one_epoch", _killed)
    assert _exit_or_killed(_seg_args(tiny_bench, out, "--seed", "7")) in (2, "killed")
    assert (out / "model.pt").read_bytes() == weights
    assert json.loads((out / "config.json").read_text())["seed"] == 0  # the record still names what is held


def test_seg_overwrite_killed_before_its_first_checkpoint_leaves_no_record_of_the_old_weights(
        finished_seg: Path, tiny_bench: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """Guards: a new run killed before its first checkpoint left config.json next to weights of other settings;
    with --overwrite the old files go first and the new record comes with the first checkpoint."""
    import wsseg.training.loop

    out = tmp_path / "seg"
    shutil.copytree(finished_seg, out)
    with monkeypatch.context() as patch:
        patch.setattr(wsseg.training.loop, "_train_one_epoch", _killed)
        assert _exit_or_killed(_seg_args(tiny_bench, out, "--seed", "7", "--overwrite")) == "killed"
    assert not any((out / name).exists() for name in ("config.json", "model.pt", "last.pt", "history.json"))
    assert main(_seg_args(tiny_bench, out, "--seed", "7", "--resume")) == 0
    assert "nothing to do" not in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["seed"] == 7
    assert (out / "model.pt").read_bytes() != (finished_seg / "model.pt").read_bytes()


def test_affinity_record_is_not_replaced_before_a_new_radius_has_a_checkpoint(
        tiny_run: Path, tiny_bench: Path, pseudo: Path, tmp_path: Path, monkeypatch) -> None:
    """Guards: train-affinity with a new --radius, killed before its first checkpoint, left affinity.json saying
    the new radius over the old network: segment then walked with the new radius over the old weights."""
    import wsseg.training.loop

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert main(_affinity_args(run, tiny_bench, pseudo)) == 0
    weights = (run / "affinity.pt").read_bytes()
    monkeypatch.setattr(wsseg.training.loop, "_train_one_epoch", _killed)
    assert _exit_or_killed(_affinity_args(run, tiny_bench, pseudo, "--radius", "3")) in (2, "killed")
    assert (run / "affinity.pt").read_bytes() == weights
    assert json.loads((run / "affinity.json").read_text())["training"]["radius"] == 5


# --- 2. a trainer never replaces a finished or foreign run without being told --------------------------------------


def test_train_seg_into_a_classifier_run_is_refused_and_leaves_it_whole(tiny_run: Path, tiny_bench: Path,
                                                                        tmp_path: Path, capsys) -> None:
    """Guards: `train-seg --out <classifier run>` replaced the classifier's model.pt with exit 0."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = _digests(run)
    assert main(_seg_args(tiny_bench, run)) == 2
    _one_line_error(capsys, str(run), "--overwrite")
    assert _digests(run) == before
    assert main(_seg_args(tiny_bench, run, "--resume")) == 2  # --resume continues only a run of its own kind
    _one_line_error(capsys, "config.json")
    assert _digests(run) == before


@pytest.mark.parametrize("trainer", ["train", "train-seg"])
def test_a_finished_run_is_not_retrained_over_without_resume_or_overwrite(trainer: str, finished_seg: Path,
                                                                          tiny_run: Path, tiny_bench: Path,
                                                                          tmp_path: Path, capsys) -> None:
    """Guards: a trainer started again on a finished run's folder (no --resume) silently replaced it."""
    out = tmp_path / "run"
    shutil.copytree(tiny_run if trainer == "train" else finished_seg, out)
    before = _digests(out)
    args = (["train", "--data", str(tiny_bench), "--out", str(out), "--epochs", "1", "--image-size", "64",
             "--batch-size", "4", "--val-split", "none", "--device", "cpu", "--quiet"]
            if trainer == "train" else _seg_args(tiny_bench, out))
    assert main(args) == 2
    _one_line_error(capsys, "already holds", "--resume", "--overwrite")
    assert _digests(out) == before
    assert main([*args, "--resume", "--overwrite"]) == 2
    _one_line_error(capsys, "--resume", "--overwrite")
    assert main([*args, "--overwrite"]) == 0
    assert _digests(out) != before and (out / "config.json").is_file()


def test_train_affinity_over_an_affinity_run_needs_resume_or_overwrite(tiny_run: Path, tiny_bench: Path,
                                                                       pseudo: Path, tmp_path: Path, capsys) -> None:
    """Guards: train-affinity into a run that already has an affinity network replaced it without being told."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert main(_affinity_args(run, tiny_bench, pseudo)) == 0
    before = _digests(run)
    assert main(_affinity_args(run, tiny_bench, pseudo, "--seed", "3")) == 2
    _one_line_error(capsys, "affinity", "--overwrite")
    assert _digests(run) == before
    assert main(_affinity_args(run, tiny_bench, pseudo, "--seed", "3", "--overwrite")) == 0
    assert json.loads((run / "affinity.json").read_text())["training"]["seed"] == 3


# --- 3. no output path may replace an input ------------------------------------------------------------------------


@pytest.fixture
def scored(tiny_bench: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the benchmark, and a folder of val predictions (the masks themselves)."""
    data = tmp_path / "data"
    shutil.copytree(tiny_bench, data)
    pred = tmp_path / "pred"
    pred.mkdir()
    for image_id in (data / "ImageSets" / "Segmentation" / "val.txt").read_text().split():
        shutil.copy(data / "SegmentationClass" / f"{image_id}.png", pred / f"{image_id}.png")
    return data, pred


@pytest.mark.parametrize("target", ["split file", "classes.txt", "mask", "prediction"])
def test_evaluate_json_never_replaces_an_input(target: str, scored: tuple[Path, Path], tmp_path: Path,
                                               capsys) -> None:
    """Guards: `evaluate --json` pointed at the split file, classes.txt, a mask or a prediction PNG replaced it."""
    data, pred = scored
    first = (data / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[0]
    path = {"split file": data / "ImageSets" / "Segmentation" / "val.txt", "classes.txt": data / "classes.txt",
            "mask": data / "SegmentationClass" / f"{first}.png", "prediction": pred / f"{first}.png"}[target]
    before = _digests(tmp_path)
    assert main(["evaluate", "--pred", str(pred), "--data", str(data), "--json", str(path), "--quiet"]) == 2
    _one_line_error(capsys, str(path))
    assert _digests(tmp_path) == before
    assert main(["evaluate", "--pred", str(pred), "--data", str(data), "--json", str(tmp_path / "scores.json"),
                 "--quiet"]) == 0  # a new file beside them is fine


@pytest.mark.parametrize("case", ["same file", "same file without .png", "overlay onto the input", "into the dataset"])
def test_segment_image_never_writes_over_its_input_or_into_a_dataset(case: str, tiny_run: Path, tiny_bench: Path,
                                                                     tmp_path: Path, capsys) -> None:
    """Guards: `segment --image IN --out OUT` with OUT equal to IN (or its overlay landing on IN, or OUT inside a
    dataset's folders) replaced the user's image or the dataset's mask."""
    data = tmp_path / "data"
    shutil.copytree(tiny_bench, data)
    first = (data / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[0]
    photos = tmp_path / "photos"
    photos.mkdir()
    image = photos / ("x_overlay.png" if case == "overlay onto the input" else "photo.png")
    from PIL import Image
    Image.open(next((data / "JPEGImages").glob(f"{first}.*"))).save(image)
    out = {"same file": image, "same file without .png": photos / "photo", "overlay onto the input": photos / "x.png",
           "into the dataset": data / "SegmentationClass" / f"{first}.png"}[case]
    before = _digests(tmp_path)
    assert main(["segment", "--run", str(tiny_run), "--image", str(image), "--out", str(out), "--method", "cam",
                 "--scales", "1", "--device", "cpu", "--quiet"]) == 2
    _one_line_error(capsys)
    assert _digests(tmp_path) == before


@pytest.mark.parametrize("where", ["out", "out/data"])
def test_demo_refuses_a_folder_of_files_it_did_not_write(where: str, tmp_path: Path, monkeypatch, capsys) -> None:
    """Guards: `wsseg demo --out DIR` wrote (and synthesised over) DIR or DIR/data holding the user's own files."""
    import wsseg.demo

    monkeypatch.setattr(wsseg.demo, "write_synthetic_dataset", _killed)  # the demo must stop before it
    folder = tmp_path / where
    folder.mkdir(parents=True)
    (folder / "thesis.tex").write_text("years of work")
    before = _digests(tmp_path)
    assert main(["demo", "--out", str(tmp_path / "out"), "--quick", "--quiet"]) == 2
    _one_line_error(capsys, str(folder))
    assert _digests(tmp_path) == before


# --- 6. an empty split, or one of bad images only, is refused by every command ------------------------------------


@pytest.fixture
def odd_splits(tiny_bench: Path, tmp_path: Path) -> Path:
    """A copy of the benchmark with an empty split and a split of two undecodable images."""
    data = tmp_path / "data"
    shutil.copytree(tiny_bench, data)
    splits = data / "ImageSets" / "Segmentation"
    (splits / "empty.txt").write_text("")
    bad = (splits / "train.txt").read_text().split()[:2]
    (splits / "bad.txt").write_text("".join(f"{i}\n" for i in bad))
    for image_id in bad:
        next((data / "JPEGImages").glob(f"{image_id}.*")).write_bytes(b"GIF89a not an image")
    return data


def test_tune_background_on_an_empty_split_leaves_the_tuned_threshold_alone(odd_splits: Path, tiny_run: Path,
                                                                           tmp_path: Path, capsys) -> None:
    """Guards: `tune-background` on an empty split wrote threshold 0.05 with mIoU null over a good tuned value (then
    a traceback), and every later segment silently used 0.05."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    tuned = {"cam": {"threshold": 0.35, "miou": 0.5, "split": "train", "tuned_on_ground_truth": True, "curve": []}}
    (run / "background.json").write_text(json.dumps(tuned))
    before = _digests(run)
    for split, skip in (("empty", []), ("bad", ["--skip-bad"])):
        assert main(["tune-background", "--run", str(run), "--data", str(odd_splits), "--split", split, "--method",
                     "cam", "--thresholds", "0.05,0.5", "--scales", "1", "--quiet", *skip]) == 2
        _one_line_error(capsys, split)
        assert _digests(run) == before


@pytest.mark.parametrize("command", ["segment", "maps", "tune-background", "train", "evaluate"])
def test_every_command_refuses_an_empty_split_and_a_split_of_bad_images_only(command: str, odd_splits: Path,
                                                                            tiny_run: Path, tmp_path: Path,
                                                                            capsys) -> None:
    """Guards: `segment` and `maps` on an empty split (or, with --skip-bad, a split whose every image is bad) wrote
    nothing and exited 0, where `train` and `evaluate` refuse: --skip-bad means the same for every command."""
    for split in ("empty", "bad"):
        out = tmp_path / f"{command}-{split}"
        common = ["--data", str(odd_splits), "--split", split, "--skip-bad", "--quiet"]
        args = {"segment": ["segment", "--run", str(tiny_run), "--method", "cam", "--scales", "1", "--out", str(out)],
                "maps": ["maps", "--run", str(tiny_run), "--method", "cam", "--scales", "1", "--out", str(out)],
                "tune-background": ["tune-background", "--run", str(tiny_run), "--method", "cam", "--scales", "1",
                                    "--thresholds", "0.5"],
                "train": ["train", "--out", str(out), "--epochs", "1", "--image-size", "64", "--val-split", "none"],
                "evaluate": ["evaluate", "--pred", str(tmp_path)]}[command]  # no prediction: all bad
        if command == "tune-background":
            shutil.copytree(tiny_run, tmp_path / "run", dirs_exist_ok=True)
            args[2] = str(tmp_path / "run")
        assert main([*args, *common]) == 2, split
        _one_line_error(capsys, split)


# --- 11. options a method does not use are refused -----------------------------------------------------------------


@pytest.mark.parametrize("flag, expected", [
    (["--label-threshold", "0.3"], "--label-threshold is for --labels predicted"),
    (["--labels", "predicted"], "names no classifier run"),  # a network started from ImageNet, on masks
    (["--classifier", "elsewhere"], "--classifier predicts the labels of --labels predicted"),
    (["--ignore-uncertain"], "--ignore-uncertain: not for --method seg"),
])
def test_segment_method_seg_refuses_label_options_it_cannot_use(flag: list[str], expected: str, finished_seg: Path,
                                                                tiny_run: Path, tiny_bench: Path, tmp_path: Path,
                                                                capsys) -> None:
    """Guards: `segment --method seg` silently ignored --labels / --label-threshold (the network used
    neither). It now restricts itself to --labels, but an option it cannot use is still refused."""
    for target in (["--data", str(tiny_bench)], ["--image", str(next((tiny_bench / "JPEGImages").iterdir()))]):
        out = tmp_path / "out"
        assert main(["segment", "--run", str(finished_seg), *target, "--method", "seg", *flag, "--out", str(out),
                     "--device", "cpu", "--quiet"]) == 2
        _one_line_error(capsys, expected)
        assert not out.exists() and not out.with_suffix(".png").exists()
    # one image has no true labels to restrict the network to (nor to explain with a map method)
    image = next((tiny_bench / "JPEGImages").iterdir())
    assert main(["segment", "--run", str(finished_seg), "--image", str(image), "--method", "seg", "--labels", "gt",
                 "--out", str(tmp_path / "one"), "--device", "cpu"]) == 2
    _one_line_error(capsys, "--image has no ground-truth labels")
    assert main(["segment", "--run", str(tiny_run), "--image", str(image), "--method", "cam", "--labels", "gt",
                 "--out", str(tmp_path / "one"), "--device", "cpu"]) == 2
    _one_line_error(capsys, "--image has no ground-truth labels")
    assert not (tmp_path / "one.png").exists()


# --- 8. the stale-lock takeover is atomic; a damaged lock is refused -----------------------------------------------


def _racer(out: Path, barrier, results) -> None:
    """One of several processes that find the same dead run's lock at once (in a forked child)."""
    import os
    import time

    from wsseg.outputs import OutputLock

    barrier.wait()
    try:
        with OutputLock(out):
            try:
                os.close(os.open(out / "holder", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                results.put("two holders")
                return
            time.sleep(0.3)
            os.unlink(out / "holder")
            results.put("held")
    except WssegError:
        results.put("refused")


def test_two_processes_never_both_take_over_the_same_dead_lock(tmp_path: Path, monkeypatch) -> None:
    """Guards: processes finding the same dead-pid lock each removed it and took it, so two held the folder at once
    (2 of 25 trials with 6 racers; here the window is widened so that the old takeover fails every time)."""
    import multiprocessing
    import os
    import socket
    import subprocess
    import sys
    import time

    import wsseg.outputs

    alive = wsseg.outputs._pid_alive

    def slowly_alive(pid: int) -> bool:  # every racer has read the dead lock before any acts on it
        answer = alive(pid)
        time.sleep(0.2)
        return answer

    monkeypatch.setattr(wsseg.outputs, "_pid_alive", slowly_alive)
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    context = multiprocessing.get_context("fork")
    for trial in range(3):
        out = tmp_path / f"out{trial}"
        out.mkdir()
        (out / ".wsseg.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": dead}))
        barrier, results = context.Barrier(6), context.Queue()
        racers = [context.Process(target=_racer, args=(out, barrier, results)) for _ in range(6)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(30)
        outcomes = sorted(results.get(timeout=5) for _ in racers)
        assert outcomes.count("held") == 1 and "two holders" not in outcomes, outcomes
        assert not (out / ".wsseg.lock").exists() and not [p for p in os.listdir(out) if "lock" in p]


@pytest.mark.parametrize("pid", [10 ** 30, -1, 0, True, 1.5, "12", None])
def test_a_lock_with_an_invalid_pid_is_refused_as_damaged(pid: object, tmp_path: Path) -> None:
    """Guards: a lock naming pid 10**30 raised OverflowError (a traceback), and -1 or 0 were taken for live runs."""
    import socket

    from wsseg.outputs import OutputLock

    (tmp_path / ".wsseg.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": pid}))
    with pytest.raises(WssegError, match="damaged lock"):
        with OutputLock(tmp_path):
            pass


# --- 7. bounds on every numeric option that sizes work or divides ---------------------------------------------------


@pytest.mark.parametrize("case", ["maps --scales 100", "maps --scales 0.01", "segment --scales 100",
                                  "segment --scales of nine", "segment --threshold 1e-300",
                                  "segment --threshold 0.99999", "tune --thresholds 1e-300"])
def test_options_that_size_work_or_divide_are_bounded(case: str, tiny_run: Path, tiny_bench: Path, tmp_path: Path,
                                                      capsys) -> None:
    """Guards: `maps --scales 100` ran a 64 px image at 6400 px (6.9 GB); `--threshold 1e-300` divided by zero (a
    traceback); now each is one line naming the option and its range, before any work."""
    out = tmp_path / "out"
    common = ["--run", str(tiny_run), "--data", str(tiny_bench), "--split", "val", "--device", "cpu", "--quiet"]
    option, value = case.split()[1], case.split()[2]
    value = {"of": ",".join(["1"] * 9)}.get(value, value)
    args = {"maps": ["maps", *common, "--method", "cam", "--out", str(out)],
            "segment": ["segment", *common, "--method", "cam-crf", "--out", str(out),
                        *(["--scales", "1"] if option != "--scales" else [])],
            "tune": ["tune-background", *common, "--method", "cam-crf", "--scales", "1"]}[case.split()[0]]
    assert main([*args, option, value]) == 2
    _one_line_error(capsys, option.lstrip("-").rstrip("s"))
    assert not out.exists() and not (tiny_run / "background.json").exists()


@pytest.mark.parametrize("option", [["--radius", "40"], ["--image-size", "2048"], ["--radius", "16",
                                                                                    "--image-size", "64"]])
def test_train_affinity_bounds_radius_and_image_size(option: list[str], tiny_run: Path, tiny_bench: Path,
                                                     pseudo: Path, tmp_path: Path, capsys) -> None:
    """Guards: `train-affinity --radius 40` was a traceback (pairs farther apart than the crop's grid), and
    --image-size had no cap (train-seg's is 1024); now one line naming the option and why."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = _digests(run)
    assert main(_affinity_args(run, tiny_bench, pseudo, *option)) == 2
    err = _one_line_error(capsys, option[0] if option[0] != "--radius" or len(option) == 2 else "--radius")
    assert ("grid" in err or "pairs" in err) if option[0] == "--radius" else "1024" in err
    assert _digests(run) == before


# --- 5. stored maps are validated before use ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cam_maps(tiny_run: Path, tiny_bench: Path, tmp_path_factory) -> Path:
    """`wsseg maps` of val by the tiny classifier (CAM at scale 1, ground-truth labels)."""
    out = tmp_path_factory.mktemp("maps") / "cam"
    assert main(["maps", "--run", str(tiny_run), "--data", str(tiny_bench), "--split", "val", "--method", "cam",
                 "--scales", "1", "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    return out


def _npz_claiming(path: Path, shape: tuple[int, ...], labels) -> None:
    """A small .npz whose maps member's header claims ``shape`` (float32) but holds a few bytes."""
    import io
    import zipfile

    import numpy as np

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("maps.npy", header.getvalue() + b"\0" * 64)
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(labels, np.int16))
        archive.writestr("labels.npy", buffer.getvalue())


@pytest.mark.parametrize("damage", ["half size", "label 99", "NaN", "text dtype", "claims 3.6 TiB"])
def test_segment_refuses_stored_maps_that_do_not_fit_the_image(damage: str, cam_maps: Path, tiny_run: Path,
                                                               tiny_bench: Path, tmp_path: Path, capsys) -> None:
    """Guards: `segment --maps` fused 32x32 maps of a 64x64 image into a 32x32 PNG, label 99 into a PNG of 99s, NaN
    maps into one class over the whole image, and read a 300-byte .npz claiming 3.6 TiB (MemoryError)."""
    import numpy as np

    maps = tmp_path / "maps"
    shutil.copytree(cam_maps, maps)
    victim = sorted(maps.glob("*.npz"))[0]
    with np.load(victim) as data:
        arrays = {key: data[key] for key in data.files}
    if damage == "claims 3.6 TiB":
        _npz_claiming(victim, (1000, 1000, 1_000_000), arrays["labels"])
    else:
        if damage == "half size":
            arrays["maps"] = arrays["maps"][:, ::2, ::2]
        elif damage == "label 99":
            arrays["labels"] = np.full_like(arrays["labels"], 99)
        elif damage == "NaN":
            arrays["maps"] = np.full_like(arrays["maps"], np.nan)
        else:
            arrays["maps"] = arrays["maps"].astype(str)
        np.savez(victim, **arrays)
    out = tmp_path / "seg"
    assert main(["segment", "--run", str(tiny_run), "--data", str(tiny_bench), "--split", "val", "--method", "cam",
                 "--scales", "1", "--maps", str(maps), "--out", str(out), "--device", "cpu", "--quiet"]) == 2
    _one_line_error(capsys, str(victim))
    assert not (out / f"{victim.stem}.png").exists()


# --- 4. records are compared with what the command is given ---------------------------------------------------------


@pytest.fixture
def twin(tiny_bench: Path, tmp_path: Path) -> Path:
    """A byte-for-byte copy of the benchmark elsewhere: another dataset, with the same ids."""
    data = tmp_path / "twin"
    shutil.copytree(tiny_bench, data)
    splits = data / "ImageSets" / "Segmentation"
    shutil.copy(splits / "val.txt", splits / "val2.txt")
    shutil.copy(splits / "train.txt", splits / "train2.txt")
    return data


@pytest.mark.parametrize("trainer", ["train", "train-seg", "train-affinity"])
def test_resume_refuses_another_dataset_or_split(trainer: str, tiny_run: Path, tiny_bench: Path, pseudo: Path,
                                                 twin: Path, tmp_path: Path, capsys) -> None:
    """Guards: `--resume` with another --data (or --split) continued the run on other images under the old record."""
    out = tmp_path / "run"
    if trainer == "train-affinity":
        shutil.copytree(tiny_run, out)

    def args(data: Path, split: str = "train") -> list[str]:
        if trainer == "train":
            return ["train", "--data", str(data), "--split", split, "--out", str(out), "--epochs", "2", "--image-size",
                    "64", "--batch-size", "4", "--val-split", "none", "--device", "cpu", "--quiet"]
        if trainer == "train-seg":
            return ["train-seg", "--data", str(data), "--split", split, "--out", str(out), "--ground-truth",
                    "--epochs", "2", *SEG_FAST]
        return ["train-affinity", "--run", str(out), "--data", str(data), "--pseudo", str(pseudo), "--split", split,
                "--epochs", "2", "--batch-size", "4", "--device", "cpu", "--quiet"]

    first = tiny_bench if trainer == "train-affinity" else twin  # the pseudo-labels were made on tiny_bench
    assert main([*args(first), "--stop-after", "1"]) == 0
    before = _digests(out)
    other = twin if first == tiny_bench else tiny_bench
    for data, split, named in ((other, "train", "data"), (first, "train2" if first == twin else "val", "split")):
        assert main([*args(data, split), "--resume"]) == 2, named
        _one_line_error(capsys, named)
        assert _digests(out) == before


def test_segment_maps_refuses_maps_of_another_dataset_or_split(cam_maps: Path, tiny_run: Path, twin: Path,
                                                               tmp_path: Path, capsys) -> None:
    """Guards: `segment --maps` fused maps made on another dataset (same ids) or split as if they were this one's."""
    for split in ("val", "val2"):
        out = tmp_path / f"seg-{split}"
        assert main(["segment", "--run", str(tiny_run), "--data", str(twin), "--split", split, "--method", "cam",
                     "--scales", "1", "--maps", str(cam_maps), "--out", str(out), "--device", "cpu", "--quiet"]) == 2
        _one_line_error(capsys, "maps.json")
        assert not out.exists()


@pytest.mark.parametrize("change", ["dataset", "split", "classes"])
@pytest.mark.parametrize("trainer", ["train-seg", "train-affinity"])
def test_trainers_refuse_pseudo_labels_of_another_dataset_split_or_class_list(
        trainer: str, change: str, pseudo: Path, tiny_run: Path, tiny_bench: Path, twin: Path, tmp_path: Path,
        capsys) -> None:
    """Guards: train-seg / train-affinity learnt from pseudo-labels whose segment.json names another dataset, split
    or class list than the one they were given."""
    labels = tmp_path / "pseudo"
    shutil.copytree(pseudo, labels)
    data, split = {"dataset": (twin, "train"), "split": (tiny_bench, "train2"), "classes": (tiny_bench, "train")}[change]
    if change == "split":
        shutil.copytree(tiny_bench, tmp_path / "bench")
        data = tmp_path / "bench"
        (labels / "segment.json").write_text(json.dumps({**json.loads((labels / "segment.json").read_text()),
                                                         "data": str(data.resolve())}))
        shutil.copy(data / "ImageSets/Segmentation/train.txt", data / "ImageSets/Segmentation/train2.txt")
    if change == "classes":
        record = json.loads((labels / "segment.json").read_text())
        (labels / "segment.json").write_text(json.dumps({**record, "classes": ["cat", "dog"]}))
    out = tmp_path / "out"
    if trainer == "train-seg":
        args = ["train-seg", "--data", str(data), "--split", split, "--pseudo", str(labels), "--out", str(out),
                "--epochs", "1", *SEG_FAST]
    else:
        shutil.copytree(tiny_run, out)
        args = _affinity_args(out, data, labels, "--split", split)
    before = _digests(out) if out.exists() else {}
    assert main(args) == 2
    _one_line_error(capsys, "segment.json", {"dataset": "dataset", "split": "split", "classes": "class"}[change])
    assert (_digests(out) if out.exists() else {}) == before


def test_a_damaged_record_in_an_output_folder_is_refused_not_taken_for_none(cam_maps: Path, tiny_run: Path,
                                                                            tiny_bench: Path, pseudo: Path,
                                                                            tmp_path: Path, capsys) -> None:
    """Guards: a damaged segment.json made `segment` resume into the folder (as if it held no record), a damaged
    maps.json could not be replaced even with --overwrite, and train-seg took damaged pseudo-labels' segment.json
    for 'made by another tool'."""
    common = ["--run", str(tiny_run), "--data", str(tiny_bench), "--split", "val", "--scales", "1", "--device", "cpu",
              "--quiet"]
    out = tmp_path / "seg"
    assert main(["segment", *common, "--method", "cam", "--out", str(out)]) == 0
    (out / "segment.json").write_text("{not json")
    before = _digests(out)
    assert main(["segment", *common, "--method", "cam", "--threshold", "0.3", "--out", str(out)]) == 2
    _one_line_error(capsys, "segment.json", "damaged")
    assert _digests(out) == before
    assert main(["segment", *common, "--method", "cam", "--threshold", "0.3", "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "segment.json").read_text())["threshold"] == 0.3
    assert _digests(out).keys() == before.keys() and _digests(out) != before

    maps = tmp_path / "maps"
    shutil.copytree(cam_maps, maps)
    (maps / "maps.json").write_text("[]")
    assert main(["maps", *common, "--method", "cam", "--out", str(maps)]) == 2
    _one_line_error(capsys, "maps.json", "damaged")
    assert main(["maps", *common, "--method", "cam", "--out", str(maps), "--overwrite"]) == 0
    assert json.loads((maps / "maps.json").read_text())["method"] == "cam"

    labels = tmp_path / "pseudo"
    shutil.copytree(pseudo, labels)
    (labels / "segment.json").write_text("\x00\x01 garbage")
    assert main(["train-seg", "--data", str(tiny_bench), "--pseudo", str(labels), "--out", str(tmp_path / "net"),
                 "--epochs", "1", *SEG_FAST]) == 2
    _one_line_error(capsys, "segment.json", "damaged")


def test_init_from_auto_finds_the_run_named_relatively_and_says_loudly_when_it_falls_back(
        tiny_run: Path, tiny_bench: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """Guards: pseudo-labels made with a relative --run named it relatively in segment.json, so train-seg --init-from
    auto from another folder did not find it and quietly started from ImageNet."""
    import os

    work = tmp_path / "work"
    shutil.copytree(tiny_run, work / "run")
    monkeypatch.chdir(work)
    assert main(["segment", "--run", "run", "--data", str(tiny_bench), "--split", "train", "--method", "cam",
                 "--scales", "1", "--out", "pseudo", "--device", "cpu", "--quiet"]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["train-seg", "--data", str(tiny_bench), "--pseudo", str(work / "pseudo"), "--out", "net",
                 "--epochs", "1", *SEG_FAST]) == 0
    assert json.loads((tmp_path / "net" / "config.json").read_text())["init"]["source"] == "classifier"
    capsys.readouterr()
    os.unlink(work / "run" / "model.pt")  # the classifier is gone: ImageNet, said on stderr even with --quiet
    assert main(["train-seg", "--data", str(tiny_bench), "--pseudo", str(work / "pseudo"), "--out", "net2",
                 "--epochs", "1", *SEG_FAST]) == 0
    err = capsys.readouterr().err
    assert "ImageNet" in err and "warning" in err


# --- 10. a damaged record field is one line naming the file and the field -------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000  # valid JSON that Python's parser cannot descend


@pytest.fixture
def report_folder(tiny_run: Path, tiny_bench: Path, tmp_path: Path) -> Path:
    """A results folder as the demo lays it out: val scored from predictions equal to the masks."""
    folder = tmp_path / "results"
    shutil.copytree(tiny_run, folder / "run")
    predictions = folder / "predictions" / "cam"
    predictions.mkdir(parents=True)
    for image_id in (tiny_bench / "ImageSets" / "Segmentation" / "val.txt").read_text().split():
        shutil.copy(tiny_bench / "SegmentationClass" / f"{image_id}.png", predictions / f"{image_id}.png")
    assert main(["evaluate", "--pred", str(predictions), "--data", str(tiny_bench), "--json",
                 str(folder / "scores" / "cam.json"), "--quiet"]) == 0
    return folder


@pytest.mark.parametrize("damage", ["history elapsed", "history deep", "scores seconds", "segment.json threshold",
                                    "segment.json deep"])
def test_report_names_a_damaged_record_field_in_one_line(damage: str, report_folder: Path, tiny_bench: Path,
                                                         capsys) -> None:
    """Guards: `report` raised a traceback on a string where a number belongs (history's elapsed, a score's seconds,
    segment.json's label_threshold) or on JSON nested too deeply to parse."""
    history = report_folder / "run" / "history.json"
    scores = report_folder / "scores" / "cam.json"
    record = report_folder / "predictions" / "cam" / "segment.json"
    if damage == "history elapsed":
        history.write_text(json.dumps([{**r, "elapsed": "soon"} for r in json.loads(history.read_text())]))
        named = (history, "elapsed")
    elif damage == "history deep":
        history.write_text(DEEP)
        named = (history, "nested")
    elif damage == "scores seconds":
        scores.write_text(json.dumps({**json.loads(scores.read_text()), "seconds_per_image": "fast"}))
        named = (scores, "seconds_per_image")
    elif damage == "segment.json threshold":
        record.write_text(json.dumps({"method": "cam", "labels": "predicted", "label_threshold": [0.5],
                                      "maps": [{"method": "cam", "options": {"scales": [1.0]}}]}))
        named = (record, "label_threshold")
    else:
        record.write_text(DEEP)
        named = (record, "nested")
    assert main(["report", str(report_folder), "--data", str(tiny_bench), "--examples", "1"]) == 2
    _one_line_error(capsys, str(named[0]), named[1])


@pytest.mark.parametrize("damage", ["run is a list", "deep"])
def test_train_seg_names_a_damaged_pseudo_record_field(damage: str, pseudo: Path, tiny_bench: Path, tmp_path: Path,
                                                       capsys) -> None:
    """Guards: train-seg raised a traceback on pseudo-labels whose segment.json names its run as a list, or nests
    too deeply to parse."""
    labels = tmp_path / "pseudo"
    shutil.copytree(pseudo, labels)
    record = labels / "segment.json"
    record.write_text(DEEP if damage == "deep" else json.dumps({**json.loads(record.read_text()), "run": ["run"]}))
    assert main(["train-seg", "--data", str(tiny_bench), "--pseudo", str(labels), "--out", str(tmp_path / "net"),
                 "--epochs", "1", *SEG_FAST]) == 2
    _one_line_error(capsys, str(record), "nested" if damage == "deep" else "run")


def test_train_seg_resume_names_a_damaged_history_field(tiny_bench: Path, tmp_path: Path, capsys) -> None:
    """Guards: `train-seg --resume` raised a traceback on a history.json whose elapsed is a string."""
    out = tmp_path / "seg"
    args = ["train-seg", "--data", str(tiny_bench), "--out", str(out), "--ground-truth", "--epochs", "2", *SEG_FAST]
    assert main([*args, "--stop-after", "1"]) == 0
    history = out / "history.json"
    history.write_text(json.dumps([{**r, "elapsed": "long"} for r in json.loads(history.read_text())]))
    assert main([*args, "--resume"]) == 2
    _one_line_error(capsys, str(history), "elapsed")


def test_report_of_another_split_labels_what_it_shows(report_folder: Path, tiny_bench: Path) -> None:
    """Guards: `report --split train` headed val's scores as train's ('N train images'), mislabelling the table."""
    assert main(["report", str(report_folder), "--data", str(tiny_bench), "--split", "train", "--examples", "1"]) == 0
    page = (report_folder / "report" / "index.html").read_text()
    assert 'id="results-split">val<' in page and 'id="examples-split">train<' in page


# --- 9. EXIF orientation: the image as it is shown; a mask must follow it -------------------------------------------


def _exif_dataset(root: Path, stored_hw: tuple[int, int], mask_hw: tuple[int, int], orientation: int = 6) -> Path:
    """One image stored ``stored_hw`` with an EXIF orientation tag, and a mask of ``mask_hw``."""
    import numpy as np
    from PIL import Image

    from conftest import write_voc

    write_voc(root, {"a": {"mask": np.ones(mask_hw, np.uint8), "objects": ["cat"]}})
    pixels = np.zeros((*stored_hw, 3), np.uint8)
    pixels[0, 0] = 255  # a marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(root / "JPEGImages" / "a.png", exif=exif)
    return root


def test_exif_rotated_image_is_read_as_shown_and_its_mask_must_follow(tmp_path: Path) -> None:
    """Guards: EXIF orientation was ignored, so a photo's pixels were read unrotated while a mask drawn on the photo
    as shown (rotated) was refused as the wrong size."""
    from wsseg.data.voc import VOCDataset

    sample = VOCDataset(_exif_dataset(tmp_path / "data", (6, 8), (8, 6)), "train").load("a")
    assert sample.image.shape[:2] == (8, 6) and sample.mask.shape == (8, 6)
    assert sample.image[0, -1, 0] == 255  # orientation 6 turns the stored top-left corner to the top right


@pytest.mark.parametrize("case", ["mask fits the stored image only", "square image"])
def test_a_mask_that_may_not_follow_the_exif_orientation_is_refused_naming_exif(case: str, tmp_path: Path) -> None:
    """Guards: a mask drawn on the unrotated pixels (or any mask of a square image with an EXIF rotation, where the
    size cannot tell) was silently paired with the image, misaligned."""
    from wsseg.data.voc import VOCDataset
    from wsseg.errors import DataError

    stored, mask = ((6, 8), (6, 8)) if case == "mask fits the stored image only" else ((8, 8), (8, 8))
    dataset = VOCDataset(_exif_dataset(tmp_path / "data", stored, mask), "train")
    with pytest.raises(DataError, match="EXIF"):
        dataset.load("a")

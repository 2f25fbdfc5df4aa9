"""A corpus of hostile inputs, fed to every command that reads them.

Each case ends in one of two ways: a one-line error naming the file with exit code 2 (or, with
--skip-bad, a counted skip and the other images done), or a correct result. Never a traceback
(``main`` would raise), never a partial or temporary file left in the output folder.
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsseg.cli import main
from wsseg.errors import WssegError
from wsseg.data.images import read_label_png, write_label_png
from wsseg.models.run import CHECKPOINT_FORMAT

SPLIT = "val"  # 4 images of 64 px; the second one is made hostile


def huge_png(path: Path, side: int = 20_000) -> None:
    """A valid side x side 1-bit PNG (400 megapixels) written in a few MB of memory."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\xff" * ((side + 7) // 8)  # filter byte + one row of white pixels
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def _image_of(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _replace_image(root: Path, victim: str, writer: Callable[[Path, np.ndarray], None]) -> Path:
    path = root / "JPEGImages" / f"{victim}.jpg"
    original = _image_of(path)
    writer(path, original)
    return path


def _truncated(path: Path, rgb: np.ndarray) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _tiny(path: Path, rgb: np.ndarray) -> None:
    Image.fromarray(rgb[:1, :1]).save(path, format="JPEG")
    write_label_png(path.parents[1] / "SegmentationClass" / f"{path.stem}.png", np.zeros((1, 1), np.uint8))


def _sixteen_bit(path: Path, rgb: np.ndarray) -> None:
    grey = (rgb.mean(axis=2) * 257).astype(np.uint16)
    Image.fromarray(grey).save(path, format="PNG")  # a PNG under a .jpg name: content decides


BAD_IMAGES: dict[str, tuple[Callable[[Path, np.ndarray], None], str]] = {
    "corrupt": (lambda p, rgb: p.write_bytes(b"GIF89a\x00garbage" * 20), "cannot decode image"),
    "truncated": (_truncated, "cannot decode image"),
    "zero-byte": (lambda p, rgb: p.write_bytes(b""), "empty (0 bytes)"),
    "20000x20000": (lambda p, rgb: huge_png(p), "refused before decoding"),
    "missing": (lambda p, rgb: p.unlink(), "missing"),
}
ODD_IMAGES: dict[str, Callable[[Path, np.ndarray], None]] = {
    "1x1": _tiny,
    "cmyk": lambda p, rgb: Image.fromarray(rgb).convert("CMYK").save(p, format="JPEG"),
    "16-bit": _sixteen_bit,
    "grayscale": lambda p, rgb: Image.fromarray(rgb).convert("L").save(p, format="JPEG"),
    "alpha": lambda p, rgb: Image.fromarray(rgb).convert("RGBA").save(p, format="PNG"),
}


@pytest.fixture
def data(tiny_bench: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(tiny_bench, root)
    return root


def _victim(root: Path) -> str:
    return (root / "ImageSets" / "Segmentation" / f"{SPLIT}.txt").read_text().split()[1]


def _commands(root: Path, run: Path, out: Path) -> dict[str, list[str]]:
    common = ["--data", str(root), "--split", SPLIT, "--quiet"]
    return {
        "segment": ["segment", "--run", str(run), *common, "--method", "dcsm-crf", "--out", str(out / "segment")],
        "maps": ["maps", "--run", str(run), *common, "--method", "dcsm", "--scales", "1", "--out", str(out / "maps")],
        "train": ["train", "--data", str(root), "--split", SPLIT, "--val-split", "none", "--epochs", "1",
                  "--image-size", "64", "--batch-size", "2", "--out", str(out / "train"), "--quiet"],
    }


def _assert_one_line_error(capsys, command: str, *fragments: str) -> None:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"wsseg {command}: error: ") and "Traceback" not in captured.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _assert_nothing_partial(folder: Path) -> None:
    assert not [p for p in folder.rglob(".*.tmp")], "temporary files left behind"
    for png in folder.rglob("*.png"):
        Image.open(png).load()  # every output that exists is whole


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_image_is_one_line_error_or_counted_skip(case: str, data: Path, tiny_run: Path, tmp_path: Path,
                                                     capsys) -> None:
    writer, problem = BAD_IMAGES[case]
    victim = _victim(data)
    path = _replace_image(data, victim, writer)
    commands = _commands(data, tiny_run, tmp_path / "out")
    for name, args in commands.items():
        assert main(args) == 2, name
        _assert_one_line_error(capsys, name, str(path), problem)
    _assert_nothing_partial(tmp_path / "out")
    for name, args in commands.items():
        assert main([*args, "--skip-bad"]) == 0, name
        printed = capsys.readouterr().out
        if name == "train":
            assert json.loads((tmp_path / "out" / "train" / "history.json").read_text())[0]["skipped"] == 1
        else:
            assert "3 written" in printed and "1 bad images skipped" in printed
            assert not (tmp_path / "out" / name / f"{victim}.png").exists()
    _assert_nothing_partial(tmp_path / "out")


@pytest.mark.parametrize("case", list(ODD_IMAGES))
def test_odd_but_valid_images_are_processed(case: str, data: Path, tiny_run: Path, tmp_path: Path) -> None:
    victim = _victim(data)
    path = _replace_image(data, victim, ODD_IMAGES[case])
    height, width = _image_of(path).shape[:2]
    for name, args in _commands(data, tiny_run, tmp_path / "out").items():
        assert main(args) == 0, name
    assert read_label_png(tmp_path / "out" / "segment" / f"{victim}.png", 6).shape == (height, width)
    assert (tmp_path / "out" / "maps" / f"{victim}.npz").exists()
    _assert_nothing_partial(tmp_path / "out")


def test_max_side_guard_can_be_raised_or_lowered(data: Path, tiny_run: Path, tmp_path: Path, capsys) -> None:
    victim = _victim(data)
    args = _commands(data, tiny_run, tmp_path / "out")["segment"]
    assert main([*args, "--max-side", "48"]) == 2  # every image is 64 px: the first one is refused
    _assert_one_line_error(capsys, "segment", "is 64x64, larger than --max-side 48")
    assert main([*args, "--max-side", "64"]) == 0
    assert (tmp_path / "out" / "segment" / f"{victim}.png").exists()


def _split_with(root: Path, bad_id: str) -> None:
    (root / "ImageSets" / "Segmentation" / f"{SPLIT}.txt").write_text(f"{_victim(root)}\n{bad_id}\n")


@pytest.mark.parametrize("bad_id,problem", [("../train_000001", "not allowed"), ("/etc/passwd", "separator")])
def test_ids_escaping_the_root(bad_id: str, problem: str, data: Path, tiny_run: Path, tmp_path: Path,
                               capsys) -> None:
    _split_with(data, bad_id)
    for name, args in _commands(data, tiny_run, tmp_path / "out").items():
        assert main(args) == 2, name
        _assert_one_line_error(capsys, name, f"{SPLIT}.txt", problem)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.png"))


def test_symlink_leading_out_of_the_root(data: Path, tiny_run: Path, tmp_path: Path, capsys) -> None:
    victim = _victim(data)
    outside = tmp_path / "secret.jpg"
    shutil.copy(data / "JPEGImages" / f"{victim}.jpg", outside)
    (data / "JPEGImages" / f"{victim}.jpg").unlink()
    (data / "JPEGImages" / f"{victim}.jpg").symlink_to(outside)
    for name, args in _commands(data, tiny_run, tmp_path / "out").items():
        assert main(args) == 2, name
        _assert_one_line_error(capsys, name, f"{victim}.jpg", "outside")
    _assert_nothing_partial(tmp_path / "out")


def test_unknown_class_and_empty_label_set(data: Path, tiny_run: Path, tmp_path: Path, capsys) -> None:
    ids = (data / "ImageSets" / "Segmentation" / f"{SPLIT}.txt").read_text().split()
    unknown, empty = data / "Annotations" / f"{ids[1]}.xml", data / "Annotations" / f"{ids[2]}.xml"
    unknown.write_text("<annotation><object><name>unicorn</name></object></annotation>")
    empty.write_text("<annotation></annotation>")  # no object: nothing to explain, all background
    write_label_png(data / "SegmentationClass" / f"{ids[2]}.png", np.zeros((64, 64), np.uint8))
    commands = _commands(data, tiny_run, tmp_path / "out")
    for name in ("segment", "maps", "train"):
        assert main(commands[name]) == 2, name
        _assert_one_line_error(capsys, name, str(unknown), "unicorn")
    assert main([*commands["segment"], "--skip-bad"]) == 0
    assert "1 bad images skipped" in capsys.readouterr().out
    assert not read_label_png(tmp_path / "out" / "segment" / f"{ids[2]}.png", 6).any()


@pytest.mark.parametrize("mask,problem", [
    (np.zeros((32, 48), np.uint8), "ground truth is 48x32"),
    (np.full((64, 64), 9, np.uint8), "outside 0..6"),
])
def test_bad_ground_truth_masks_at_evaluate(mask: np.ndarray, problem: str, data: Path, tmp_path: Path,
                                            capsys) -> None:
    victim = _victim(data)
    predictions = tmp_path / "pred"
    for image_id in (data / "ImageSets" / "Segmentation" / f"{SPLIT}.txt").read_text().split():
        write_label_png(predictions / f"{image_id}.png", np.zeros((64, 64), np.uint8))
    write_label_png(data / "SegmentationClass" / f"{victim}.png", mask)
    args = ["evaluate", "--pred", str(predictions), "--data", str(data), "--split", SPLIT, "--quiet",
            "--json", str(tmp_path / "scores.json")]
    assert main(args) == 2
    _assert_one_line_error(capsys, "evaluate", victim, problem)
    assert not (tmp_path / "scores.json").exists()
    assert main([*args, "--skip-bad"]) == 0
    assert json.loads((tmp_path / "scores.json").read_text())["n_skipped"] == 1


class _RunsCode:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/wsseg-hostile-pickle-ran"),))


def _run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    return run


def test_run_folders_that_do_not_fit(data: Path, tiny_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    # a checkpoint made for another class list
    run = _run_copy(tiny_run, tmp_path)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "classes": ["cat", "dog", "bird", "cow", "car", "bus"]}))
    assert main(_commands(data, run, out)["segment"]) == 2
    _assert_one_line_error(capsys, "segment", "class lists must match")
    shutil.rmtree(run)
    # a pickled checkpoint carrying code: refused, and the code never runs
    run = _run_copy(tiny_run, tmp_path)
    marker = Path("/tmp/wsseg-hostile-pickle-ran")
    marker.unlink(missing_ok=True)
    torch.save({"format": CHECKPOINT_FORMAT, "epoch": 0, "model": _RunsCode()}, run / "model.pt")
    assert main(_commands(data, run, out)["segment"]) == 2
    _assert_one_line_error(capsys, "segment", "model.pt", "carries code")
    assert not marker.exists()
    # weights of another backbone inside the run
    torch.save({"format": CHECKPOINT_FORMAT, "epoch": 0,
                "model": {"features.0.weight": torch.zeros(64, 3, 3, 3), "features.0.bias": torch.zeros(64)}},
               run / "model.pt")
    assert main(_commands(data, run, out)["segment"]) == 2
    _assert_one_line_error(capsys, "segment", "model.pt", "weights do not fit")
    # backbone weights for another architecture given to train
    vgg_layout = tmp_path / "vgg16.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "features.0.bias": torch.zeros(64)}, vgg_layout)
    assert main([*_commands(data, run, out)["train"], "--weights", str(vgg_layout)]) == 2
    _assert_one_line_error(capsys, "train", str(vgg_layout), "not for the efficientnet-lite0 backbone")
    _assert_nothing_partial(out)


def _padded_jpeg(path: Path, rgb: np.ndarray) -> None:
    """A valid JPEG followed by 3 MiB of zeros (a sparse file: the disk holds no zeros)."""
    Image.fromarray(rgb).save(path, format="JPEG")
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size + 3 * 2 ** 20)


def test_oversized_files_are_refused_unread(data: Path, tiny_run: Path, tmp_path: Path, capsys,
                                            monkeypatch) -> None:
    """--max-file-size refuses from the file's size (item 7 of the hostile-user issue: a 64 px
    JPEG padded to 3 GB was read whole); a PDF given to --image names the file, not a buffer."""
    victim = _victim(data)
    path = _replace_image(data, victim, _padded_jpeg)
    read_sizes: list[int] = []
    real_read = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: read_sizes.append(self.stat().st_size) or real_read(self))
    commands = _commands(data, tiny_run, tmp_path / "out")
    for name, args in commands.items():
        assert main([*args, "--max-file-size", "2"]) == 2, name
        _assert_one_line_error(capsys, name, str(path), "larger than --max-file-size 2 MiB")
    assert not [size for size in read_sizes if size > 2 ** 20], "a refused file was read whole"
    assert main([*commands["segment"], "--max-file-size", "4"]) == 0  # under the bound: a valid JPEG
    pdf = tmp_path / "paper.pdf"
    pdf.write_bytes(b"%PDF-1.4\n" + b"0" * 500)
    single = ["segment", "--run", str(tiny_run), "--image", str(pdf), "--labels", "predicted", "--method", "cam",
              "--out", str(tmp_path / "single.png"), "--quiet"]
    assert main(single) == 2
    captured = capsys.readouterr()
    assert str(pdf) in captured.err and "BytesIO" not in captured.err and "BufferedReader" not in captured.err


def test_symlinked_class_list_and_split_file_are_refused(data: Path, tiny_run: Path, tmp_path: Path,
                                                         capsys) -> None:
    """Item 8: list files symlinked out of the root are refused like images, and no message
    quotes more than a short excerpt of a file it does not understand."""
    secret = tmp_path / "secret.txt"
    secret.write_text("".join(f"line{n}:x:{n}:{n}:{'-' * 40} private line of a file that is not ours\n"
                              for n in range(20)))
    split = data / "ImageSets" / "Segmentation" / f"{SPLIT}.txt"
    commands = _commands(data, tiny_run, tmp_path / "out")
    for link in (data / "classes.txt", split):
        saved = link.read_bytes()
        link.unlink()
        link.symlink_to(secret)
        for name, args in commands.items():
            assert main(args) == 2, name
            _assert_one_line_error(capsys, name, str(link), "outside the dataset root")
        link.unlink()
        link.write_bytes(saved)
    split.write_text(secret.read_text())  # inside the root, but not a split file
    assert main(commands["segment"]) == 2
    message = capsys.readouterr().err
    assert "private" not in message and "line1:" not in message and len(message) < 300


def test_byte_order_marks_and_ids_with_spaces(data: Path, tiny_run: Path, tmp_path: Path, capsys) -> None:
    """Item 10: a UTF-8 BOM (as Windows editors write) is not part of the first id or class; an
    id with a space is refused with its line number instead of being cut at the space."""
    split = data / "ImageSets" / "Segmentation" / f"{SPLIT}.txt"
    ids = split.read_text().split()
    split.write_text("\ufeff" + "".join(f"{i}\n" for i in ids))
    classes = data / "classes.txt"
    classes.write_text("\ufeff" + classes.read_text())
    commands = _commands(data, tiny_run, tmp_path / "out")
    assert main(commands["segment"]) == 0
    assert sorted(p.stem for p in (tmp_path / "out" / "segment").glob("*.png")) == sorted(ids)
    split.write_text(f"{ids[0]}\n{ids[1]} copy\n")
    assert main(commands["maps"]) == 2
    _assert_one_line_error(capsys, "maps", str(split), "line 2", "spaces are not supported")
    split.write_text(f"{ids[0]}  1\n{ids[1]} -1\n")  # VOC's ImageSets/Main format: id and flag
    assert main(commands["maps"]) == 0


@pytest.mark.parametrize("extra", [["--lr", "nan"], ["--lr", "inf"], ["--weight-decay", "-1"], ["--seed", "-1"],
                                   ["--stop-after", "-1"], ["--stop-after", "0"], ["--batch-size", "0"],
                                   ["--image-size", "1048576"], ["--lse-r", "nan"], ["--jitter", "inf"]])
def test_bad_training_arguments_are_one_line_errors(extra: list[str], data: Path, tmp_path: Path, capsys) -> None:
    """Item 5: each of these ended in a traceback, trained to NaN, or trained nothing with exit 0."""
    args = _commands(data, Path("unused"), tmp_path / "out")["train"]
    assert _exit_code(main, [*args, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and extra[0] in err, err
    assert not (tmp_path / "out" / "train" / "model.pt").exists()


def _exit_code(function, args: list[str]) -> int:
    """main's return value, or the code argparse exits with on a bad argument."""
    try:
        return function(args)
    except SystemExit as exc:
        return int(exc.code)


@pytest.mark.parametrize("command,extra", [("segment", ["--batch-size", "0"]), ("maps", ["--batch-size", "0"]),
                                           ("maps", ["--scales", "inf"]), ("maps", ["--scales", "nan"]),
                                           ("segment", ["--label-threshold", "nan"])])
def test_bad_map_arguments_are_one_line_errors(command: str, extra: list[str], data: Path, tiny_run: Path,
                                               tmp_path: Path, capsys) -> None:
    assert _exit_code(main, [*_commands(data, tiny_run, tmp_path / "out")[command], *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and extra[0] in err and "Traceback" not in err, err


def test_seeds_out_of_range_are_refused_before_any_work(tmp_path: Path, tiny_run: Path, data: Path, capsys) -> None:
    assert _exit_code(main, ["synth", str(tmp_path / "d"), "--seed", "-1", "--quiet"]) == 2
    assert "--seed" in capsys.readouterr().err and not (tmp_path / "d").exists()
    assert _exit_code(main, ["train-misvm", "--run", str(tiny_run), "--data", str(data), "--seed", "-1",
                             "--quiet"]) == 2
    assert "--seed" in capsys.readouterr().err


def test_a_diverging_loss_stops_training_with_a_message(data: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """--lr huge enough to overflow: the run stops at the first non-finite loss (it used to save
    a NaN model with exit 0)."""
    import wsseg.training.classifier as training

    real_bce = training.F.binary_cross_entropy_with_logits
    monkeypatch.setattr(training.F, "binary_cross_entropy_with_logits",
                        lambda logits, targets: real_bce(logits, targets) * float("inf"))
    args = _commands(data, Path("unused"), tmp_path / "out")["train"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "training diverged" in err and "--lr" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "train" / "model.pt").exists()


CONFIG_TAMPERING = {
    "a list": lambda config: [1, 2],
    "null": lambda config: None,
    "classes not a list": lambda config: {**config, "classes": "circle"},
    "lse_r a string": lambda config: {**config, "lse_r": "five"},
}


@pytest.mark.parametrize("case", list(CONFIG_TAMPERING))
def test_tampered_run_config(case: str, data: Path, tiny_run: Path, tmp_path: Path, capsys) -> None:
    """Item 6: each of these ended in a traceback."""
    run = _run_copy(tiny_run, tmp_path)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(CONFIG_TAMPERING[case](config)))
    assert main(_commands(data, run, tmp_path / "out")["segment"]) == 2
    _assert_one_line_error(capsys, "segment", str(run / "config.json"))


@pytest.mark.parametrize("entry,value,problem", [("model", torch.zeros(3), "'model'"), ("epoch", "two", "'epoch'")])
def test_tampered_checkpoint_on_resume(entry: str, value, problem: str, data: Path, tmp_path: Path, capsys) -> None:
    args = _commands(data, Path("unused"), tmp_path / "out")["train"]
    assert main(args) == 0
    checkpoint = tmp_path / "out" / "train" / "last.pt"
    state = torch.load(checkpoint, weights_only=True)
    state[entry] = value
    torch.save(state, checkpoint)
    assert main([*args, "--resume"]) == 2
    _assert_one_line_error(capsys, "train", str(checkpoint), problem)


def test_damaged_history_and_scores(data: Path, tmp_path: Path, capsys) -> None:
    from wsseg.report.html import load_scores

    args = _commands(data, Path("unused"), tmp_path / "out")["train"]
    assert main(args) == 0
    history = tmp_path / "out" / "train" / "history.json"
    history.write_text("{oops")
    assert main([*args, "--resume"]) == 2
    _assert_one_line_error(capsys, "train", str(history), "unreadable training history")
    scores = tmp_path / "scores"
    scores.mkdir()
    (scores / "cam.json").write_text(json.dumps({"miou": "high", "iou": {"background": 0.5}}))
    with pytest.raises(WssegError, match="damaged scores"):
        load_scores(scores)


@pytest.mark.parametrize("content,problem", [([1, 2], "must map method names"),
                                              ({"cam": {"threshold": "low", "split": "train"}}, "damaged")])
def test_tampered_background_choice(content, problem: str, data: Path, tiny_run: Path, tmp_path: Path,
                                    capsys) -> None:
    run = _run_copy(tiny_run, tmp_path)
    (run / "background.json").write_text(json.dumps(content))
    args = _commands(data, run, tmp_path / "out")["segment"]
    assert main([*args[:args.index("--method") + 1], "cam", *args[args.index("--method") + 2:]]) == 2
    _assert_one_line_error(capsys, "segment", str(run / "background.json"), problem)


def test_stale_or_damaged_misvm(data: Path, tiny_run: Path, tmp_path: Path, capsys) -> None:
    """A truncated misvm.npz, one left over from a classifier with other classes, and one from a
    version that did not record its class list: each refused naming the file (no IndexError)."""
    from wsseg.fusion.misvm import MISVM_FILE, MiSVM

    run = _run_copy(tiny_run, tmp_path)
    args = _commands(data, run, tmp_path / "out")["segment"]
    args = [*args[:args.index("--method") + 1], "pipeline-a", *args[args.index("--method") + 2:]]
    assert main(["train-misvm", "--run", str(run), "--data", str(data), "--split", "train", "--quiet"]) == 0
    path = run / MISVM_FILE
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    assert main(args) == 2
    _assert_one_line_error(capsys, "segment", str(path), "unreadable mi-SVM")
    path.write_bytes(good)
    svm = MiSVM.load(path)
    for classes, problem in ((("circle", "square", "cat", "dog", "star", "moon"), "other classes"),
                             ((), "retrain it")):
        np.savez(path, mean=svm.mean, scale=svm.scale, weights=svm.weights, bias=svm.bias, platt=svm.platt,
                 **({"classes": np.array(classes)} if classes else {}))
        assert main(args) == 2
        _assert_one_line_error(capsys, "segment", str(path), problem)
    np.savez(path, mean=svm.mean, scale=svm.scale, weights=svm.weights, bias=svm.bias, platt=svm.platt,
             classes=np.array(svm.classes), max_side=np.array(5))
    assert main(args) == 2
    _assert_one_line_error(capsys, "segment", str(path), "max_side")


def test_outputs_never_replace_the_dataset(data: Path, tiny_run: Path, tmp_path: Path, capsys) -> None:
    """Item 1: `maps --out D/SegmentationClass` replaced every ground-truth mask."""
    masks = data / "SegmentationClass"
    before = {p.name: p.read_bytes() for p in masks.iterdir()}
    commands = _commands(data, tiny_run, tmp_path / "unused")
    for name in ("maps", "segment", "train"):
        args = commands[name]
        args[args.index("--out") + 1] = str(masks)
        assert main(args) == 2, name
        _assert_one_line_error(capsys, name, str(masks), "inside the dataset's SegmentationClass folder")
    assert {p.name: p.read_bytes() for p in masks.iterdir()} == before
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.png").write_bytes(b"mine")
    args = commands["segment"]
    args[args.index("--out") + 1] = str(photos)
    assert main(args) == 2
    _assert_one_line_error(capsys, "segment", str(photos), "not ours")
    assert (photos / "holiday.png").read_bytes() == b"mine" and len(list(photos.iterdir())) == 1


def _with_method(args: list[str], method: str) -> list[str]:
    at = args.index("--method") + 1
    return [*args[:at], method, *args[at + 1:]]


def test_a_folder_made_otherwise_is_refused_unless_overwrite(data: Path, tiny_run: Path, tmp_path: Path,
                                                             capsys) -> None:
    """Item 3: a second method into the same folder printed 'already done' and evaluate scored
    the first method's masks as the second's."""
    run = _run_copy(tiny_run, tmp_path)
    out = tmp_path / "out"
    segment = _commands(data, run, out)["segment"]
    assert main(_with_method(segment, "cam")) == 0
    assert main(segment) == 2  # dcsm-crf into cam's folder
    _assert_one_line_error(capsys, "segment", "segment.json", "method", "--overwrite")
    assert main([*segment, "--overwrite"]) == 0
    fresh = tmp_path / "fresh"
    assert main(_commands(data, run, fresh)["segment"]) == 0
    for png in fresh.glob("*.png"):
        assert (out / "segment" / png.name).read_bytes() == png.read_bytes()
    assert json.loads((out / "segment" / "segment.json").read_text())["method"] == "dcsm-crf"
    from wsseg.tune import map_settings
    tuned_choice = {"threshold": 0.3, "split": "train", "miou": 0.5, "maps": map_settings(None, "auto", "dcsm-crf")}
    (run / "background.json").write_text(json.dumps({"dcsm-crf": tuned_choice}))
    tuned = tmp_path / "tuned"
    assert main(_commands(data, run, tuned)["segment"]) == 0  # with the tuned threshold (an oracle)
    capsys.readouterr()
    assert main([*_commands(data, run, tuned)["segment"], "--threshold", "0.3"]) == 2  # same value, not tuned
    _assert_one_line_error(capsys, "segment", "threshold_source")
    state = torch.load(run / "model.pt", weights_only=True)
    state["epoch"] = 99  # a retrained model at the same path: other bytes
    torch.save(state, run / "model.pt")
    assert main(segment) == 2
    _assert_one_line_error(capsys, "segment", "model_sha256")


def test_two_runs_into_one_folder(data: Path, tiny_run: Path, tmp_path: Path, capsys) -> None:
    """Item 9: the second run deleted the first's in-flight temporary file and any .*.tmp of the
    user's; now it refuses, naming the first run, and a user's file is never touched."""
    import os
    import socket

    out = tmp_path / "out" / "segment"
    segment = _commands(data, tiny_run, tmp_path / "out")["segment"]
    assert main(segment) == 0
    (out / ".wsseg.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid()}))
    (out / ".draft.tmp").write_text("the user's")
    assert main(segment) == 2
    _assert_one_line_error(capsys, "segment", f"pid {os.getppid()}", "is writing here")
    (out / ".wsseg.lock").unlink()
    assert main(segment) == 0
    assert (out / ".draft.tmp").read_text() == "the user's" and not (out / ".wsseg.lock").exists()

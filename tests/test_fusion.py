from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsseg.cli import main
from wsseg.data.transforms import batch_tensor
from wsseg.data.voc import VOCDataset
from wsseg.errors import WssegError
from wsseg.fusion import alpha_for_threshold, dense_crf, labels_from_maps, soft_probabilities
from wsseg.fusion.misvm import MISVM_FILE, MiSVM
from wsseg.fusion.zoomout import zoomout_layers
from wsseg.maps import capture_outputs
from wsseg.runner import predict_labels
from wsseg.models import build_classifier
from wsseg.models.run import RunConfig, build_from_config, load_run, save_checkpoint
from wsseg.fusion.crf import PSA
from wsseg.maps import CAM, DCSM
from wsseg.pipelines import (Confident, DenseCRF, PipelineA, PipelineB, SegmentInput, Thresholded, build_segmenter,
                             segment_images)


def test_threshold_background_by_hand() -> None:
    maps = np.array([[[0.9, 0.1, 0.3]], [[0.2, 0.05, 0.6]]], np.float32)  # classes 3 and 7
    np.testing.assert_array_equal(labels_from_maps(maps, [3, 7], 0.25), [[3, 0, 7]])
    np.testing.assert_array_equal(labels_from_maps(np.zeros((0, 1, 2)), [], 0.25), [[0, 0]])
    with pytest.raises(WssegError):
        labels_from_maps(maps, [3, 7], 1.5)


def test_soft_background_ties_with_a_class_at_the_threshold() -> None:
    threshold = 0.125
    assert (1 - threshold) ** alpha_for_threshold(threshold) == pytest.approx(threshold)
    probabilities = soft_probabilities(np.array([[[threshold, 0.9, 0.0]]]), threshold)
    assert probabilities.shape == (2, 1, 3)
    np.testing.assert_allclose(probabilities.sum(0), 1.0, rtol=1e-5)
    assert probabilities[0, 0, 0] == pytest.approx(probabilities[1, 0, 0], rel=1e-3)
    assert probabilities[1, 0, 1] > 0.9 and probabilities[0, 0, 2] > 0.99


def test_dense_crf_cleans_a_noisy_unary() -> None:
    rng = np.random.default_rng(0)
    truth = np.zeros((48, 64), np.int64)
    truth[:, 32:] = 1
    truth[10:30, 5:20] = 2
    colours = np.array([[200, 40, 40], [40, 40, 200], [40, 200, 40]], np.float32)
    image = np.clip(colours[truth] + rng.normal(0, 10, (48, 64, 3)), 0, 255).astype(np.uint8)
    clean = np.eye(3, dtype=np.float32)[truth].transpose(2, 0, 1)
    noisy = 0.45 * clean + rng.uniform(0, 1, clean.shape).astype(np.float32)
    noisy /= noisy.sum(0, keepdims=True)
    image.flags.writeable = False  # e.g. np.asarray of a PIL image: pydensecrf needs a writable buffer
    before = (noisy.argmax(0) == truth).mean()
    after = (dense_crf(image, noisy).argmax(0) == truth).mean()
    assert before < 0.85 and after > 0.98


def _read_pngs(folder: Path, ids) -> list[np.ndarray]:
    return [np.asarray(Image.open(folder / f"{image_id}.png")) for image_id in ids]


def test_segment_split_and_single_image_write_the_library_segmentations(tiny_run: Path, tiny_bench: Path,
                                                                        tmp_path: Path, capsys) -> None:
    out = tmp_path / "seg"
    dataset = VOCDataset(tiny_bench, "val")
    model, _ = load_run(tiny_run)
    images = [dataset.load_image(image_id) for image_id in dataset.ids]
    truth = [dataset.load_labels(image_id) for image_id in dataset.ids]
    foreground = 0
    for method in ("cam", "dcsm-crf", "pipeline-b"):
        assert main(["segment", "--run", str(tiny_run), "--data", str(tiny_bench), "--split", "val",
                     "--method", method, "--out", str(out / method), "--scales", "1", "--quiet"]) == 0
        written = _read_pngs(out / method, dataset.ids)
        expected = segment_images(model, images, [[c - 1 for c in labels] for labels in truth],
                                  build_segmenter(method, scales=(1.0,)))
        for labels, ours, theirs in zip(truth, written, expected):
            np.testing.assert_array_equal(ours, theirs)
            assert set(np.unique(ours)) <= {0, *labels}  # --labels gt: only the image's own classes
        foreground += sum(int((png > 0).sum()) for png in written)
        assert main(["evaluate", "--pred", str(out / method), "--data", str(tiny_bench), "--split", "val",
                     "--quiet"]) == 0
    assert "4 images scored" in capsys.readouterr().out and foreground > 0  # not all background
    image_path = dataset.image_path(dataset.ids[0])
    assert main(["segment", "--run", str(tiny_run), "--image", str(image_path), "--method", "cam",
                 "--threshold", "0.3", "--out", str(tmp_path / "one.png")]) == 0
    predicted = predict_labels(model, batch_tensor(images[:1]))
    (expected,) = segment_images(model, images[:1], predicted, build_segmenter("cam", threshold=0.3))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "one.png")), expected)
    overlay = np.asarray(Image.open(tmp_path / "one_overlay.png").convert("RGB"))
    assert overlay.shape == (64, 64, 3)
    np.testing.assert_array_equal(overlay[expected == 0], images[0][expected == 0])


def test_tune_background_stores_an_oracle_choice_that_segment_uses(tiny_run: Path, tiny_bench: Path, tmp_path: Path,
                                                                   capsys) -> None:
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert main(["tune-background", "--run", str(run), "--data", str(tiny_bench), "--split", "val",
                 "--method", "cam", "--thresholds", "0.1,0.3,0.6", "--quiet"]) == 0
    stored = json.loads((run / "background.json").read_text())["cam"]
    assert stored["tuned_on_ground_truth"] and stored["threshold"] in (0.1, 0.3, 0.6)
    assert stored["miou"] == max(row["miou"] for row in stored["curve"])
    out = tmp_path / "seg"
    assert main(["segment", "--run", str(run), "--data", str(tiny_bench), "--split", "val", "--method", "cam",
                 "--out", str(out), "--quiet"]) == 0
    assert "oracle" in capsys.readouterr().err
    meta = json.loads((out / "segment.json").read_text())
    assert meta["tuned_on_ground_truth"] and meta["threshold"] == stored["threshold"]
    assert main(["evaluate", "--pred", str(out), "--data", str(tiny_bench), "--split", "val", "--quiet",
                 "--json", str(tmp_path / "s.json")]) == 0
    assert "oracle" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())["tuned_on_ground_truth"] is True


def test_cli_method_choices_are_the_registry() -> None:
    from wsseg.cli import build_parser
    from wsseg.maps import MAP_METHODS
    from wsseg.pipelines import BUILDERS
    from wsseg.registry import NETWORK_METHODS, SEGMENT_METHODS

    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    choices = {name: next(a.choices for a in commands[name]._actions if a.dest == "method")
               for name in ("segment", "tune-background", "maps")}
    assert list(choices["tune-background"]) == list(SEGMENT_METHODS) == list(BUILDERS)
    assert list(choices["segment"]) == [*SEGMENT_METHODS, *NETWORK_METHODS]  # and stage 2's network
    assert sorted(choices["maps"]) == sorted(MAP_METHODS)


def test_ilp_keeps_its_constraints() -> None:
    from wsseg.fusion.ilp import solve_labels

    scores = np.array([[0.9, 0.0], [0.8, 0.1], [0.1, 0.2], [0.0, 0.05]])
    areas = np.array([10.0, 10.0, 10.0, 70.0])
    # plain thresholding at 0.5 would give class 2 nothing; the area constraint keeps it present
    labels = solve_labels(scores, areas, threshold=0.5, min_area=0.05)
    assert labels[0] == 1 and labels[1] == 1 and (labels == 2).any()
    covered = [areas[labels == c].sum() for c in (1, 2)]
    assert min(covered) >= 0.05 * areas.sum()
    assert labels[3] == 0  # the big low-scoring superpixel stays background
    # with min_area 0 it is thresholding per superpixel
    np.testing.assert_array_equal(solve_labels(scores, areas, 0.5, min_area=0.0), [1, 1, 0, 0])
    # impossible constraints (3 classes x 40% of the image) are dropped, not crashed on
    assert solve_labels(np.zeros((2, 3)), np.ones(2), 0.5, min_area=0.4).shape == (2,)


def test_objectness_and_superpixels() -> None:
    from wsseg.fusion.objectness import border_contrast
    from wsseg.fusion.superpixels import slic_superpixels, superpixel_means

    image = np.clip(np.random.default_rng(0).normal(120, 6, (64, 64, 3)), 0, 255).astype(np.uint8)
    image[24:40, 24:40] = (250, 30, 30)
    superpixels = slic_superpixels(image, pixels_per_superpixel=64)
    assert superpixels.shape == (64, 64) and superpixels.min() == 0
    objectness = border_contrast(image, superpixels)
    inside = np.zeros((64, 64), bool)
    inside[26:38, 26:38] = True
    assert objectness[inside].mean() > 0.8 and objectness[~inside].mean() < 0.3
    means = superpixel_means(np.stack([np.ones((64, 64)), np.zeros((64, 64))]), superpixels)
    np.testing.assert_allclose(means, np.tile([1.0, 0.0], (superpixels.max() + 1, 1)))


def test_misvm_finds_the_planted_positive_instance() -> None:
    from wsseg.fusion.misvm import train_misvm

    rng = np.random.default_rng(0)
    features, bags, bag_labels, planted = [], [], [], []
    for bag in range(60):
        instances = rng.normal(0, 1, (12, 5))
        positive = bag % 2 == 0
        if positive:
            spot = int(rng.integers(12))
            instances[spot, 0] += 6.0  # the one instance that makes the bag positive
            planted.append(bag * 12 + spot)
        features.append(instances)
        bags.append(np.full(12, bag))
        bag_labels.append([0] if positive else [])
    features, bags = np.concatenate(features), np.concatenate(bags)
    svm = train_misvm(features, bags, bag_labels, num_classes=1)
    probability = svm.probabilities(features)[:, 0]
    for index in planted:  # in every positive bag the planted instance scores highest
        members = np.nonzero(bags == bags[index])[0]
        assert members[np.argmax(probability[members])] == index
    others = np.setdiff1d(np.arange(len(features)), planted)
    assert probability[planted].min() > 0.5 > np.median(probability[others])


def test_pipeline_a_needs_and_uses_a_trained_misvm(tiny_run: Path, tiny_bench: Path, tmp_path: Path, capsys) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)

    def segment(out: Path) -> list[np.ndarray]:
        assert main(["segment", "--run", str(run), "--data", str(tiny_bench), "--split", "val", "--method",
                     "pipeline-a", "--scales", "1", "--out", str(out), "--quiet"]) == 0
        return _read_pngs(out, VOCDataset(tiny_bench, "val").ids)

    assert main(["segment", "--run", str(run), "--data", str(tiny_bench), "--split", "val", "--method", "pipeline-a",
                 "--out", str(tmp_path / "none"), "--quiet"]) == 2
    assert "train-misvm" in capsys.readouterr().err
    assert main(["train-misvm", "--run", str(run), "--data", str(tiny_bench), "--quiet"]) == 0
    trained = segment(tmp_path / "trained")
    # a mi-SVM that calls every superpixel unlikely halves all saliency: less foreground must survive
    svm = MiSVM.load(run / MISVM_FILE)
    dataclasses.replace(svm, platt=np.tile(np.array([0.0, -50.0], np.float32), (len(svm.platt), 1))).save(
        run / MISVM_FILE)
    doubting = segment(tmp_path / "doubting")
    foreground = [sum(int((png > 0).sum()) for png in pngs) for pngs in (trained, doubting)]
    assert foreground[0] > foreground[1], foreground


def test_feature_taps_declare_what_the_layers_give() -> None:
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="randomly initialised"):
        vgg = build_classifier(3, backbone="vgg16", pretrained=False, output_stride=16)
    for model in (build_classifier(3, pretrained=False, output_stride=16), vgg):
        taps = model.feature_taps
        with torch.no_grad(), capture_outputs(model.eval(), [tap.module for tap in taps]) as captured:
            model(torch.rand(1, 3, 64, 64))
        for tap in taps:
            assert captured[tap.module].shape[1:] == (tap.channels, 64 // min(tap.stride, 16), 64 // min(tap.stride, 16))
        assert model.saliency_layers == [tap.module for tap in taps]
    assert zoomout_layers(vgg) == ["backbone.features.relu3_2", "backbone.features.relu4_2", "backbone.features.relu5_2"]


def test_pipeline_a_and_train_misvm_work_on_vgg16(tiny_bench: Path, tmp_path: Path) -> None:
    run = tmp_path / "vgg"
    config = RunConfig(classes=list(VOCDataset(tiny_bench, "train").classes.foreground), backbone="vgg16")
    config.save(run)
    torch.manual_seed(0)
    save_checkpoint(run / "model.pt", build_from_config(config), epoch=0)  # random init: this checks plumbing
    assert main(["train-misvm", "--run", str(run), "--data", str(tiny_bench), "--quiet"]) == 0
    assert MiSVM.load(run / MISVM_FILE).weights.shape[1] == 4 * (256 + 512 + 512)  # VGG's zoom-out taps
    out = tmp_path / "a"
    assert main(["segment", "--run", str(run), "--data", str(tiny_bench), "--split", "val", "--method", "pipeline-a",
                 "--scales", "1", "--out", str(out), "--quiet"]) == 0
    assert [png.shape for png in _read_pngs(out, VOCDataset(tiny_bench, "val").ids)] == [(64, 64)] * 4


def test_pipeline_a_works_on_the_side_its_misvm_was_trained_at(tiny_run: Path, tiny_bench: Path,
                                                                tmp_path: Path) -> None:
    """A photo is cut into superpixels on a copy shrunk to the mi-SVM's side (so a 640x480 photo is
    not 1,536 instances of a 580 MB feature stack); the side is saved with the mi-SVM, older files
    without one read as full size, and the labels come back at the image's own size."""
    from wsseg.train_misvm import train_misvm_on_split

    model, _ = load_run(tiny_run)
    run = tmp_path / "run"
    run.mkdir()
    train_misvm_on_split(model, VOCDataset(tiny_bench, "train"), run, progress=False, max_side=32)
    svm = MiSVM.load(run / MISVM_FILE)
    assert svm.max_side == 32
    with np.load(run / MISVM_FILE) as data:  # an mi-SVM saved before sides were recorded
        np.savez(run / "old.npz", **{key: data[key] for key in data.files if key != "max_side"})
    assert MiSVM.load(run / "old.npz").max_side is None
    item = VOCDataset(tiny_bench, "val")[0]
    labels = list(item.labels) or [1]
    counts = {}
    for side in (32, None):
        segmenter = PipelineA(dataclasses.replace(svm, max_side=side), threshold=0.3)
        features = segmenter.image_features(model, batch_tensor([item.image]))[0]
        assert features.shape[1:] == ((32, 32) if side else item.image.shape[:2])
        inputs = SegmentInput(item.image, [int(v) for v in labels],
                              {DCSM(): np.random.default_rng(0).random((len(labels), 64, 64), np.float32)}, features)
        prepared = segmenter.prepare(inputs, {})
        assert prepared.superpixels.shape == item.image.shape[:2]
        counts[side] = int(prepared.superpixels.max()) + 1
        assert len(prepared.probabilities) == counts[side]
        assert segmenter(inputs, prepared=prepared).shape == item.image.shape[:2]
    assert counts[32] < counts[None], counts


def _fusion_inputs(features: int = 0) -> SegmentInput:
    """A 48 x 64 image of coloured blocks with two classes' blurry maps (and random features)."""
    rng = np.random.default_rng(3)
    blocks = rng.integers(0, 255, (6, 8, 3))
    image = np.kron(blocks, np.ones((8, 8, 1))).astype(np.uint8)
    yy, xx = np.mgrid[0:48, 0:64]
    maps = np.stack([np.exp(-((yy - 16) ** 2 + (xx - 16) ** 2) / 200.0),
                     np.exp(-((yy - 30) ** 2 + (xx - 45) ** 2) / 300.0)]).astype(np.float32)
    cam, dcsm = CAM(), DCSM()
    return SegmentInput(image, [2, 5], {cam: maps, dcsm: maps[::-1] * 0.5 + maps * 0.5},
                        rng.normal(size=(features, 48, 64)).astype(np.float32) if features else None)


def test_fusion_weights_change_the_segmentation_and_prepare_is_shared() -> None:
    """Each tuned option of a segmenter reaches its output, and a search that prepares an image
    once (superpixels, mi-SVM probabilities) gets the labels of a plain call."""
    rng = np.random.default_rng(0)
    inputs = _fusion_inputs(features=8)
    misvm = MiSVM(np.zeros(32), np.ones(32), rng.normal(size=(6, 32)), np.zeros(6), np.tile([1.0, 0.0], (6, 1)))
    cases = [(PipelineB(threshold=0.3), dict(objectness_weight=0.0), dict(objectness_weight=1.0)),
             (PipelineB(threshold=0.3), dict(cam_weight=0.1), dict(cam_weight=0.9)),
             (PipelineA(misvm, threshold=0.3), dict(misvm_weight=0.0), dict(misvm_weight=1.0)),
             (DenseCRF(DCSM(), threshold=0.3), dict(crf=PSA), dict(crf=dataclasses.replace(PSA, bilateral_compat=0.0,
                                                                                              gaussian_compat=30.0)))]
    for segmenter, one, other in cases:
        first, second = dataclasses.replace(segmenter, **one), dataclasses.replace(segmenter, **other)
        assert (first(inputs) != second(inputs)).any(), (type(segmenter).__name__, one, other)
        prepared = segmenter.prepare(inputs, {})
        np.testing.assert_array_equal(second(inputs, prepared=prepared), second(inputs))


def test_dcsm_normalisations() -> None:
    """linear-minmax removes the pedestal and the tanh, linear-max only the tanh, saturated neither."""
    linear = torch.tensor([[[[0.2, 0.6, 1.0]]]])  # one map with a pedestal of 0.2
    saturated = torch.tanh(3 * linear)
    np.testing.assert_allclose(DCSM(normalization="linear-minmax").normalize(saturated), [[[[0.0, 0.5, 1.0]]]],
                               atol=1e-4)
    np.testing.assert_allclose(DCSM(normalization="linear-max").normalize(saturated), linear, atol=1e-4)
    np.testing.assert_allclose(DCSM(normalization="saturated").normalize(saturated), saturated / saturated.max(),
                               atol=1e-6)
    with pytest.raises(WssegError, match="normalisation"):
        DCSM(normalization="sigmoid")


def test_otsu_normalisation_keeps_an_object_that_sits_below_a_few_peak_pixels() -> None:
    """A photo-like map: an object body at 0.3 of the peak, four peak pixels at 1, background at
    0.05. At threshold 0.5 the minmax-stretched map loses the body; centred on Otsu's cut it keeps
    it (and nothing else). On a clean map (object at the peak) both keep the same object."""
    from wsseg.maps.normalize import otsu_thresholds
    linear = torch.full((1, 1, 64, 64), 0.05)
    linear[..., 10:30, 10:30] = 0.3
    linear[..., 20:22, 20:22] = 1.0
    saturated = torch.tanh(3 * linear)
    body = np.zeros((64, 64), bool)
    body[10:30, 10:30] = True
    for normalization, kept in (("linear-minmax", body & False), ("linear-otsu", body)):
        maps = DCSM(normalization=normalization).normalize(saturated)[0].numpy()
        labels = labels_from_maps(maps, [7], threshold=0.5)
        kept = kept | (linear[0, 0].numpy() == 1.0)  # the peak is object under both
        np.testing.assert_array_equal(labels == 7, kept, err_msg=normalization)
    clean = torch.tanh(3 * torch.where(torch.from_numpy(body), 1.0, 0.05))[None, None]
    masks = [labels_from_maps(DCSM(normalization=n).normalize(clean)[0].numpy(), [7], 0.5)
             for n in ("linear-minmax", "linear-otsu")]
    np.testing.assert_array_equal(masks[0], masks[1])
    otsu = DCSM(normalization="linear-otsu").normalize(saturated)
    assert float(otsu.min()) == 0.0 and float(otsu.max()) == pytest.approx(1.0)
    two_levels = torch.cat([torch.full((1, 32, 64), 0.2), torch.full((1, 32, 64), 0.8)], dim=1)
    assert 0.2 < float(otsu_thresholds(two_levels)[0]) <= 0.8
    # maps stay on their device (a GPU's; "meta" checks the same without one)
    assert DCSM(normalization="linear-otsu").normalize(saturated.to("meta")).device.type == "meta"


def test_confident_pseudo_labels_mark_the_uncertain_band() -> None:
    """IRN's rule around a method's threshold: sure class inside each blob, sure background far
    from both, 255 between; values only background, the image's classes and 255."""
    inputs = _fusion_inputs()
    base = Thresholded(CAM(), threshold=0.4)
    labels = Confident.of(base)(inputs)
    assert set(np.unique(labels)) <= {0, 2, 5, 255} and (labels == 255).any()
    assert labels[16, 16] == 2 and labels[30, 45] == 5 and labels[47, 0] == 0
    plain = base(inputs)
    assert ((labels == 255) | (labels == plain)).mean() > 0.9  # it withholds labels; it rarely changes them


def test_a_lower_class_threshold_in_the_confident_band_keeps_more_object_and_is_checked() -> None:
    """On peaky maps the shipped band (a class above (1 + t) / 2) keeps little of each object; a
    band whose class threshold is t itself keeps at least as much, and no more uncertainty."""
    inputs = _fusion_inputs()
    base = Thresholded(CAM(), threshold=0.4)
    shipped, rim = Confident.of(base), Confident(base, threshold=0.4, high=0.4)
    assert shipped.band == (0.2, 0.7) and rim.band == (0.2, 0.4)
    objects = [int(((labels > 0) & (labels != 255)).sum()) for labels in (shipped(inputs), rim(inputs))]
    assert objects[1] > objects[0]
    with pytest.raises(WssegError, match="confident band"):
        Confident(base, threshold=0.4, low=0.5, high=0.3)


def test_evaluate_ignores_uncertain_pixels_only_when_asked() -> None:
    from wsseg.evaluate import ConfusionMatrix

    truth = np.array([[0, 1, 1, 255]])
    prediction = np.array([[0, 1, 255, 255]])
    plain, confident = ConfusionMatrix(2), ConfusionMatrix(2)
    plain.update(prediction, truth)
    confident.update(prediction, truth, ignore_uncertain=True)
    assert plain.miou() == pytest.approx((0.5 + 0.5) / 2) and plain.ignored == 0
    assert confident.miou() == 1.0 and confident.ignored == 1 and confident.ignored_fraction() == pytest.approx(1 / 3)


def test_segment_and_evaluate_with_ignore_uncertain(tiny_run: Path, tiny_bench: Path, tmp_path: Path) -> None:
    common = ["--data", str(tiny_bench), "--split", "val", "--quiet"]
    assert main(["segment", "--run", str(tiny_run), *common, "--method", "cam", "--ignore-uncertain",
                 "--out", str(tmp_path / "confident")]) == 0
    record = json.loads((tmp_path / "confident" / "segment.json").read_text())
    assert record["ignore_uncertain"] is True
    assert main(["evaluate", "--pred", str(tmp_path / "confident"), *common, "--ignore-uncertain",
                 "--json", str(tmp_path / "with.json")]) == 0
    assert main(["evaluate", "--pred", str(tmp_path / "confident"), *common, "--json", str(tmp_path / "without.json")]) == 0
    scored = json.loads((tmp_path / "with.json").read_text())
    assert 0 < scored["ignored_fraction"] < 1
    assert json.loads((tmp_path / "without.json").read_text())["ignored_fraction"] is None
    # the same folder without --ignore-uncertain is another kind of segmentation: refused
    assert main(["segment", "--run", str(tiny_run), *common, "--method", "cam", "--out", str(tmp_path / "confident")]) == 2


def test_dense_crf_on_a_shrunk_grid_agrees_with_the_full_grid_and_keeps_the_size() -> None:
    """CRFParams.max_side refines a large image on a smaller grid (its spatial widths shrunk alike)
    and returns probabilities at the image's size whose labels match the full-size CRF's almost
    everywhere; images no larger than max_side are refined exactly as before."""
    rng = np.random.default_rng(0)
    image = np.zeros((240, 320, 3), np.uint8)
    image[:, 160:] = (200, 60, 40)
    image = np.clip(image + rng.integers(0, 20, image.shape), 0, 255).astype(np.uint8)
    truth = np.zeros((240, 320), np.int64)
    truth[:, 160:] = 1
    noisy = np.where(rng.random((240, 320)) < 0.3, 1 - truth, truth)
    probabilities = np.stack([np.where(noisy == 0, 0.7, 0.3), np.where(noisy == 1, 0.7, 0.3)]).astype(np.float32)
    full = dense_crf(image, probabilities, PSA)
    shrunk = dense_crf(image, probabilities, dataclasses.replace(PSA, max_side=160))
    assert shrunk.shape == full.shape
    assert (shrunk.argmax(0) == full.argmax(0)).mean() > 0.97
    assert (shrunk.argmax(0) == truth).mean() > 0.97  # and it still removes the noise
    assert np.array_equal(dense_crf(image, probabilities, dataclasses.replace(PSA, max_side=320)), full)


def test_a_threshold_tuned_on_other_maps_is_not_used_on_these(tmp_path: Path, capsys) -> None:
    """A threshold belongs to the maps it was tuned on: tuned at map side 32, it is used for maps at
    32 and not for maps at the default side (the default threshold, and a warning, instead); a
    choice stored before the record existed is used as before, except a DCSM one: those were
    tuned on linear-minmax maps, and DCSM's default normalisation is now another."""
    from wsseg.registry import method_info
    from wsseg.segment import choose_threshold
    from wsseg.tune import map_settings, store_choice

    curve = [{"threshold": 0.3, "miou": 0.5}, {"threshold": 0.6, "miou": 0.4}]
    for method in ("dcsm-crf", "cam-crf"):
        store_choice(tmp_path, method, curve, "train", map_settings(None, 32, method))
    assert choose_threshold(tmp_path, "dcsm-crf", map_side=32).value == 0.3
    capsys.readouterr()
    other = choose_threshold(tmp_path, "dcsm-crf", map_side="auto")
    assert other.value == method_info("dcsm-crf").threshold and other.source == "default"
    assert "tuned on other maps" in capsys.readouterr().err
    stored = json.loads((tmp_path / "background.json").read_text())
    for method in ("dcsm-crf", "cam-crf"):
        del stored[method]["maps"]
    (tmp_path / "background.json").write_text(json.dumps(stored))
    assert choose_threshold(tmp_path, "cam-crf").value == 0.3
    older = choose_threshold(tmp_path, "dcsm-crf")
    assert older.value == method_info("dcsm-crf").threshold and older.source == "default"
    assert "dcsm_normalization 'linear-minmax'" in capsys.readouterr().err

"""Class maps checked against captum and torchcam, by hand on tiny tensors, and for hook hygiene."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wsseg.errors import WssegError
from wsseg.maps import CAM, DCSM, MAP_METHODS, Guided, class_maps, dcsm, map_method, normalize_maps
from wsseg.maps.distinct import distinct_sum_caffe, distinct_sum_matconvnet, finish_matconvnet
from wsseg.models import build_classifier

TINY = 1e-20


class SmallNet(nn.Module):
    """A classifier built from nn.ReLU modules (what captum's GuidedBackprop expects)."""

    def __init__(self, inplace: bool = False, shared_relu: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu2 = self.relu1 if shared_relu else nn.ReLU(inplace=inplace)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def fcn() -> nn.Module:
    torch.manual_seed(0)
    return build_classifier(4, pretrained=False, output_stride=16).eval()


def _images(n: int = 2, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_gradient_equals_captum_saliency() -> None:
    from captum.attr import Saliency

    model, images = SmallNet(), _images()
    ours = class_maps(model, images, [[1, 3], [2]], "gradient")
    for n, asked in enumerate([[1, 3], [2]]):
        for k, c in enumerate(asked):
            theirs = Saliency(model).attribute(images[n:n + 1], target=c, abs=True).amax(1)[0]
            torch.testing.assert_close(ours[n, k], theirs)
    assert (ours[1, 1] == 0).all()  # unused slot


def test_guided_equals_captum_guided_backprop() -> None:
    from captum.attr import GuidedBackprop

    model, images = SmallNet(), _images()
    ours = class_maps(model, images, [[0], [4]], "guided")
    for n, c in enumerate([0, 4]):
        theirs = GuidedBackprop(model).attribute(images[n:n + 1], target=c).abs().amax(1)[0]
        torch.testing.assert_close(ours[n, 0], theirs)
    assert not torch.allclose(ours, class_maps(model, images, [[0], [4]], "gradient"))


def test_guided_handles_inplace_and_reused_relus_and_batches() -> None:
    images = _images(3)
    reference = class_maps(SmallNet(), images, [[1], [2], [3]], "guided")
    tricky = SmallNet(inplace=True, shared_relu=True)  # same weights (same seed), one in-place ReLU used twice
    torch.testing.assert_close(class_maps(tricky, images, [[1], [2], [3]], "guided"), reference)
    one_by_one = torch.cat([class_maps(SmallNet(), images[i:i + 1], [[c]], "guided") for i, c in enumerate([1, 2, 3])])
    torch.testing.assert_close(one_by_one, reference)


def test_layer_derivatives_equal_captum_layer_gradient(fcn) -> None:
    from captum.attr import LayerGradientXActivation

    images = _images()
    name = fcn.saliency_layers[-2]
    layer = dict(fcn.named_modules())[name]
    ours = class_maps(fcn, images, [[2], [0]], "layers", layers=[name], guided=False, target="logit")
    for n, c in enumerate([2, 0]):
        grad = LayerGradientXActivation(fcn, layer, multiply_by_inputs=False).attribute(images[n:n + 1], target=c)
        theirs = F.interpolate(grad.abs().amax(1, keepdim=True), size=(32, 32), mode="bilinear", align_corners=False)
        torch.testing.assert_close(ours[n, 0], theirs[0, 0])


def test_cam_matches_torchcam(fcn) -> None:
    from torchcam.methods import CAM

    images = _images(1, 64)
    ours = class_maps(fcn, images, [[1, 3]], "cam")
    with CAM(fcn, target_layer="backbone", fc_layer="classifier", input_shape=(3, 64, 64)) as extractor:
        scores = fcn(images)
        for k, c in enumerate([1, 3]):
            raw = extractor(c, scores, normalized=False)[0]
            theirs = F.interpolate(F.relu(raw).unsqueeze(1), size=(64, 64), mode="bilinear", align_corners=False)
            torch.testing.assert_close(ours[0, k], theirs[0, 0])


def test_distinct_subtraction_by_hand() -> None:
    target = torch.tensor([[[1.0, 2.0, 0.0]]])  # L=1, H=1, W=3
    others = torch.tensor([[[[0.0, 1.0, 1.0]]],   # D = [1, 1, -1], max 1 -> tanh(3 D), negatives -> 1e-20
                           [[[1.0, 2.0, 0.0]]],   # D = 0 everywhere: max 0, skipped
                           [[[3.0, 3.0, 1.0]]]])  # D = [-2, -1, -1], max -1: their code flips it -> [2, 1, 1]
    t3 = math.tanh(3.0)
    expected = torch.tensor([t3 + math.tanh(6.0), t3 + t3, TINY + t3])
    torch.testing.assert_close(distinct_sum_matconvnet(target, others)[0], expected)
    sums = torch.tensor([[[[0.0, 1.0, 2.0]]]])
    final, agnostic = finish_matconvnet(sums, torch.tensor([[True]]))
    torch.testing.assert_close(final[0, 0, 0], torch.tensor([TINY, math.tanh(1.5), t3]))
    torch.testing.assert_close(agnostic[0, 0], torch.tensor([0.0, math.tanh(1.5), t3]))


def test_caffe_combination_by_hand() -> None:
    target = torch.tensor([[[2.0, 0.0]]])
    others = torch.tensor([[[[0.0, 1.0]]]])  # D = [2, -1]; N(D) = 3 D / 2 = [3, -1.5]
    pair = torch.tanh(torch.tensor([3.0, -1.5]))
    layer = torch.tanh(3 * pair / pair.max())
    torch.testing.assert_close(distinct_sum_caffe(target, others)[0], layer)


def test_dcsm_pads_candidates_and_returns_maps_for_asked_classes_only(fcn) -> None:
    images = _images()
    result = dcsm(fcn, images, [[1], [0, 2]], scales=(1.0,))
    assert result.maps.shape == (2, 2, 32, 32) and result.agnostic.shape == (2, 32, 32)
    assert result.candidates.shape == (2, 4) and result.candidate_valid.all()
    assert result.candidates[0, 0] == 1 and result.candidates[1, :2].tolist() == [0, 2]
    assert (result.maps[0, 1] == 0).all()
    assert result.maps.max() <= 1 and result.maps[0, 0].min() > 0
    caffe = dcsm(fcn, images, [[1], [0, 2]], variant="caffe")
    assert caffe.candidates.shape == (2, 3) and caffe.maps.amax(dim=(-2, -1))[1].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("method", sorted(MAP_METHODS))
def test_every_method_has_the_same_contract_and_cleans_up(fcn, method: str) -> None:
    fcn.train()
    fcn.classifier.weight.requires_grad_(False)
    maps = class_maps(fcn, _images(), [[0, 1], [3]], method)
    assert maps.shape == (2, 2, 32, 32) and (maps[1, 1] == 0).all() and torch.isfinite(maps).all()
    normalized = map_method(method).normalize(maps)
    peaks = normalized.amax(dim=(-2, -1)).flatten().tolist()  # 1, or 0 for an all-zero map
    assert normalized.min() >= 0 and all(peak == pytest.approx(1.0) or peak == 0 for peak in peaks)
    assert fcn.training and all(m.training for m in fcn.modules())
    assert not fcn.classifier.weight.requires_grad and fcn.classifier.bias.requires_grad
    assert all(not m._forward_hooks and "forward" not in m.__dict__ for m in fcn.modules())
    assert all(p.grad is None for p in fcn.parameters())
    fcn.classifier.weight.requires_grad_(True)
    fcn.eval()


def test_methods_are_typed_objects_and_class_maps_builds_them_by_name(fcn) -> None:
    images = _images()
    torch.testing.assert_close(DCSM(scales=(1.0,), variant="caffe")(fcn, images, [[0], [2]]),
                               class_maps(fcn, images, [[0], [2]], "dcsm", scales=[1.0], variant="caffe"))
    assert map_method("cam").with_scales([0.5, 1.0]) == CAM(scales=(0.5, 1.0)) and Guided().with_scales([2.0]) == Guided()
    with pytest.raises(WssegError, match="unexpected keyword argument 'scales'"):
        class_maps(fcn, images, [[0], [2]], "gradcam", scales=(1.0,))
    with pytest.raises(WssegError, match="unknown map method 'nope'"):
        map_method("nope")


def test_hooks_are_removed_after_an_error(fcn) -> None:
    with pytest.raises(WssegError, match="outside"):
        class_maps(fcn, _images(), [[0], [9]], "dcsm")
    with pytest.raises(WssegError, match="unknown layer"):
        class_maps(fcn, _images(), [[0], [1]], "layers", layers=["nope"])
    assert all(not m._forward_hooks and "forward" not in m.__dict__ for m in fcn.modules())
    with pytest.raises(WssegError, match="needs a wsseg FCN"):
        class_maps(SmallNet(), _images(), [[0], [1]], "dcsm")


def test_normalisation_is_separate() -> None:
    maps = torch.tensor([[[[0.0, 2.0], [-1.0, 4.0]]]])
    torch.testing.assert_close(normalize_maps(maps), torch.tensor([[[[0.0, 0.5], [0.0, 1.0]]]]))
    torch.testing.assert_close(normalize_maps(maps, "minmax"), torch.tensor([[[[0.2, 0.6], [0.0, 1.0]]]]))
    assert (normalize_maps(torch.zeros(1, 1, 2, 2)) == 0).all()


def test_folding_batch_norms_changes_dcsm_only_by_rounding() -> None:
    torch.manual_seed(3)
    fcn = build_classifier(4, pretrained=False).eval()
    for module in fcn.modules():  # non-trivial statistics, so that folding has something to fold
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    images = _images()
    folded = dcsm(fcn, images, [[0, 1], [2]], scales=(1.0,))
    exact = dcsm(fcn, images, [[0, 1], [2]], scales=(1.0,), fold_bn=False)
    torch.testing.assert_close(folded.maps, exact.maps, atol=2e-3, rtol=0)
    assert all("forward" not in m.__dict__ for m in fcn.modules())


@pytest.mark.parametrize("method", [CAM(), DCSM(scales=(1.0,))])
def test_maps_are_computed_at_the_classifiers_training_side_and_returned_at_the_images(fcn, method) -> None:
    """By default (max_side "auto") a classifier trained at 64 px computes a 128 px image's maps at
    64 px and up-samples them; max_side=None computes at 128 px, and a model of unknown training
    side is never capped."""
    from wsseg.maps.resolution import grow, shrink

    torch.manual_seed(1)
    images = torch.rand(1, 3, 128, 96)
    classes = [[0, 2]]
    fcn.input_size = 64
    try:
        capped = method.normalize(method(fcn, images, classes))
        full = method.normalize(method.with_max_side(None)(fcn, images, classes))
        by_hand = method.normalize(grow(method.with_max_side(None)(fcn, shrink(images, 64), classes), (128, 96)))
    finally:
        fcn.input_size = None
    assert capped.shape == full.shape == (1, 2, 128, 96)
    assert torch.allclose(capped, by_hand, atol=1e-4)
    assert (capped - full).abs().max() > 0.05
    assert torch.equal(method.normalize(method(fcn, images, classes)), full)  # input_size None: the image's own size


def test_a_map_side_too_small_to_locate_anything_is_refused() -> None:
    with pytest.raises(WssegError, match="map side"):
        DCSM(max_side=8)
    with pytest.raises(WssegError, match="map side"):
        CAM(max_side="big")

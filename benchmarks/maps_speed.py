"""Seconds per image of every class-map method, against the floor and against captum/torchcam.

For K = 1, 3, 5 classes per image at 224 px on the default backbone (EfficientNet-Lite0, 20
classes as in PASCAL VOC, batch of 8): each method runs in its own process so that its peak
memory can be read. The floor is 1 forward + K backward passes of the same bare model
(plain ``.backward()``), measured the same way; "floor (channels-last)" is the same with the
memory layout our methods use, to show what the layout alone buys. Usage:
    .venv/bin/python benchmarks/maps_speed.py [--size 224] [--batch 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import time

import torch

NUM_CLASSES = 20


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _build():
    from wsseg.models import build_classifier

    torch.manual_seed(0)
    return build_classifier(NUM_CLASSES).eval()


def _run(name: str, k: int, size: int, batch: int, repeats: int, queue) -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    model = _build()
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    classes = [[(n + j) % NUM_CLASSES for j in range(k)] for n in range(batch)]
    call = _method(name, model, images, classes, k)
    call()  # warm-up
    base = _rss_mb()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    queue.put((min(times) / batch, max(0.0, _rss_mb() - base), _rss_mb()))


def _method(name: str, model, images, classes, k):
    from wsseg.maps import class_maps

    if name.startswith("floor"):
        layout = torch.channels_last if "channels-last" in name else torch.contiguous_format

        def floor():
            x = images.clone().contiguous(memory_format=layout)
            out = model(x)
            for j in range(k):
                model.zero_grad(set_to_none=True)
                out[:, j].sum().backward(retain_graph=j < k - 1)
        return floor
    if name == "dcsm (1 scale)":
        return lambda: class_maps(model, images, classes, "dcsm", scales=(1.0,))
    if name == "dcsm (3 scales)":
        return lambda: class_maps(model, images, classes, "dcsm")
    if name == "captum GuidedBackprop x K":
        from captum.attr import GuidedBackprop

        def captum_loop():
            explainer = GuidedBackprop(model)
            for j in range(k):
                target = torch.tensor([c[j] for c in classes])
                explainer.attribute(images.clone().requires_grad_(True), target=target).abs().amax(1)
        return captum_loop
    if name == "torchcam GradCAM":
        from torchcam.methods import GradCAM

        def torchcam_gradcam():
            with GradCAM(model, target_layer="backbone", input_shape=tuple(images.shape[1:])) as extractor:
                scores = model(images.clone().requires_grad_(True))
                for j in range(k):
                    extractor([c[j] for c in classes], scores, retain_graph=j < k - 1)
        return torchcam_gradcam
    return lambda: class_maps(model, images, classes, name)


METHODS = ["floor", "floor (channels-last)", "dcsm (1 scale)", "dcsm (3 scales)", "layers", "guided", "gradient", "cam", "gradcam",
           "captum GuidedBackprop x K", "torchcam GradCAM"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ks", default="1,3,5")
    args = parser.parse_args()
    context = mp.get_context("spawn")
    results: dict[tuple[str, int], tuple[float, float, float]] = {}
    ks = [int(k) for k in args.ks.split(",")]
    for k in ks:
        for name in METHODS:
            queue = context.Queue()
            process = context.Process(target=_run, args=(name, k, args.size, args.batch, args.repeats, queue))
            process.start()
            results[(name, k)] = queue.get()
            process.join()
            print(f"  measured {name} K={k}: {results[(name, k)][0]:.4f} s/img", flush=True)
    print()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
          f"{args.size} px, batch {args.batch}, best of {args.repeats}")
    header = "| method | " + " | ".join(f"K={k} s/img | x floor" for k in ks) + " | peak RSS MB (K=3) |"
    print(header)
    print("|---|" + "---:|---:|" * len(ks) + "---:|")
    for name in METHODS:
        cells = []
        for k in ks:
            seconds = results[(name, k)][0]
            cells.append(f"{seconds:.4f} | {seconds / results[('floor', k)][0]:.2f}")
        k_mem = 3 if 3 in ks else ks[0]
        print(f"| {name} | " + " | ".join(cells) + f" | {results[(name, k_mem)][2]:.0f} |")
    if 3 in ks:
        speedup = results[("captum GuidedBackprop x K", 3)][0] / results[("dcsm (1 scale)", 3)][0]
        print(f"\ndcsm (1 scale) vs captum's per-class GuidedBackprop at K=3: {speedup:.2f}x faster")


if __name__ == "__main__":
    main()

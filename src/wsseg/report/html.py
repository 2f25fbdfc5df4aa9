"""The HTML report of a results folder: one self-contained directory that opens offline.

Layout read from ``DIR`` (what ``wsseg demo`` writes, and what ``wsseg segment``/``evaluate``
write when pointed there)::

    DIR/scores/<method>.json        wsseg evaluate output (+ seconds_per_image)
    DIR/predictions/<method>/<id>.png
    DIR/run/history.json, model.pt  the classifier (training curve, class maps)
    DIR/data                        the dataset (images, ground truth)

Written: ``DIR/report/index.html`` with ``training_curve.png`` and ``images/*.png`` beside it,
every file atomically, the page last, so a crash never leaves a page pointing at missing files.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsseg.data.classes import mask_values
from wsseg.data.images import read_label_png, voc_palette, write_image
from wsseg.data.transforms import batch_tensor
from wsseg.data.layout import open_dataset
from wsseg.data.voc import VOCDataset
from wsseg.errors import DataError, WssegError
from wsseg.io import NUMBER, check_fields, read_json, write_text_atomic
from wsseg.outputs import read_segment_record
from wsseg.segmentation.map_folders import StoredMaps, method_options
from wsseg.maps import DCSM, MapMethod
from wsseg.maps.export import heat_overlay
from wsseg.models.run import load_run, read_history
from wsseg.registry import SEGMENT_METHODS, STAGE2_BOUND_ROW, is_stage2_row, row_description, row_title
from wsseg.report.plots import colour_labels, plot_training_curve
from wsseg.segmentation.runner import ImageItem, batch_classes, run_split
from wsseg.segmentation.segment import record_maps
from wsseg.training.loop import best_record

REPORT_DIR = "report"
BASELINE = "background-only"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
.scroll { overflow-x: auto; }
h1 { margin-bottom: 0.2em; } .muted { color: #666; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #f2f2f2; } td.name, th.name { text-align: left; }
tr.best td { background: #e8f5e9; font-weight: bold; }
.legend span { display: inline-block; margin: 0 1em 0.4em 0; }
.swatch { display: inline-block; width: 1em; height: 1em; vertical-align: middle; border: 1px solid #888;
          margin-right: 0.3em; }
table.grid td { text-align: center; vertical-align: top; padding: 2px; }
table.grid img { width: 128px; height: 128px; image-rendering: pixelated; display: block; }
table.grid .caption { font-size: 0.75em; color: #555; }
"""


def method_order(names: Sequence[str]) -> list[str]:
    """The baseline first, then the registry's order, then the stage-2 rows (the upper bound last),
    then anything else alphabetically."""
    known = [BASELINE, *SEGMENT_METHODS]
    stage2 = sorted(n for n in names if is_stage2_row(n) and n != STAGE2_BOUND_ROW)
    stage2 += [STAGE2_BOUND_ROW] if STAGE2_BOUND_ROW in names else []
    return ([n for n in known if n in names] + stage2
            + sorted(n for n in names if n not in known and n not in stage2))


def load_scores(scores_dir: Path) -> dict[str, dict]:
    """Every ``<method>.json`` written by ``wsseg evaluate``/the demo, in method order."""
    found: dict[str, dict] = {}
    for path in sorted(scores_dir.glob("*.json")):
        try:
            data = read_json(path)
        except (OSError, ValueError) as exc:
            raise DataError(path, f"cannot read scores ({exc})") from None
        if not isinstance(data, dict) or "iou" not in data or "miou" not in data:
            raise DataError(path, "not a wsseg evaluate result (no 'miou'/'iou')")
        if not (_score_value(data["miou"]) and isinstance(data["iou"], dict)
                and all(map(_score_value, data["iou"].values()))):
            raise DataError(path, "damaged scores: 'miou' and 'iou' must hold numbers (or null)")
        check_fields(data, {"seconds_per_image": NUMBER, "tuned_on_ground_truth": bool, "split": str}, path)
        found[path.stem] = data
    if not found:
        raise WssegError(f"{scores_dir}: no scores (*.json) to report; write them with "
                         "`wsseg evaluate --json DIR/scores/METHOD.json`")
    return {name: found[name] for name in method_order(list(found))}


def _score_value(value: object) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _percent(value: float | None) -> str:
    return "&ndash;" if value is None else f"{100 * value:.1f}"


def results_table(scores: dict[str, dict], class_names: Sequence[str]) -> str:
    best = max((s["miou"] for s in scores.values() if s["miou"] is not None), default=None)
    head = "".join(f"<th>{html.escape(name)}</th>" for name in class_names)
    rows = []
    for method, score in scores.items():
        description = "every pixel background: the floor" if method == BASELINE else row_description(method)
        seconds = score.get("seconds_per_image")
        flags = " (threshold tuned on ground truth)" if score.get("tuned_on_ground_truth") else ""
        cells = "".join(f"<td>{_percent(score['iou'].get(name))}</td>" for name in class_names)
        css = ' class="best"' if score["miou"] is not None and score["miou"] == best else ""
        rows.append(f'<tr{css} data-method="{html.escape(method)}"><td class="name" title="{html.escape(description)}">'
                    f"{html.escape(row_title(method))}{html.escape(flags)}</td><td>{_percent(score['miou'])}</td>"
                    f"<td>{'&ndash;' if seconds is None else f'{seconds:.3g}'}</td>{cells}</tr>")
    return (f'<table id="results"><thead><tr><th class="name">method</th><th>mIoU %</th><th>s / image</th>'
            f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>" + weak_full_note(scores))


def weak_full_ratio(scores: dict[str, dict]) -> tuple[str, float] | None:
    """(stage-2 row from pseudo-labels, its mIoU / the ground-truth-trained network's), when both were scored."""
    bound = scores.get(STAGE2_BOUND_ROW, {}).get("miou")
    weak = [row for row in scores if is_stage2_row(row) and row != STAGE2_BOUND_ROW and scores[row]["miou"] is not None]
    if not bound or not weak:
        return None
    return weak[0], scores[weak[0]]["miou"] / bound


def weak_full_note(scores: dict[str, dict]) -> str:
    ratio = weak_full_ratio(scores)
    if ratio is None:
        return ""
    return (f'<p id="weak-full">weak/full ratio: {html.escape(row_title(ratio[0]))} reaches <b>{ratio[1]:.2f}</b> of '
            "the same network trained on the ground-truth masks (same budget).</p>")


def legend(class_names: Sequence[str]) -> str:
    palette = voc_palette()
    items = [(name, palette[index]) for index, name in enumerate(class_names)] + [("void (not scored)", palette[255])]
    spans = "".join(f'<span><i class="swatch" style="background: rgb({r},{g},{b})"></i>{html.escape(name)}</span>'
                    for name, (r, g, b) in items)
    return f'<div class="legend" id="legend">{spans}</div>'


def example_ids(ids: Sequence[str], count: int) -> list[str]:
    """``count`` ids spread evenly over the split (the same ones on every rerun)."""
    if count <= 0 or not ids:
        return []
    positions = np.linspace(0, len(ids) - 1, num=min(count, len(ids))).round().astype(int)
    return [ids[p] for p in dict.fromkeys(positions.tolist())]


@dataclass(frozen=True)
class UsedMaps:
    """The class maps one method's segmentations read, as its ``segment.json`` records them."""

    segmenter: str  # the segmentation method whose record this is ("" when there is none)
    method: MapMethod
    label_source: str  # "gt" or "predicted" (segment.json's "labels")
    label_threshold: float
    stored: Path | None  # the `wsseg maps` folder it fused, when it read stored maps

    def describe(self) -> str:
        options = ", ".join(f"{key} {'default' if value is None else value}"
                            for key, value in method_options(self.method).items())
        source = ("ground-truth labels" if self.label_source == "gt"
                  else f"predicted labels (score > {self.label_threshold})")
        used = f"the maps {self.segmenter} fused" if self.segmenter else "no segment.json found, so the defaults"
        where = f", read from {self.stored}" if self.stored else ""
        return f"{used}: {self.method.name} ({options}), {source}{where}"


def used_maps(predictions_dir: Path, methods: Sequence[str]) -> UsedMaps:
    """The maps to draw: those of the first method (in table order) whose segment.json names a DCSM
    map, else any map; DCSM at its defaults on ground-truth labels when no record says more."""
    candidates = []
    for name in methods:
        record = read_segment_record(predictions_dir / name) or {}
        for method in record_maps(record):
            candidates.append((method.name != "dcsm", name, method, record))
    if not candidates:
        return UsedMaps("", DCSM(), "gt", 0.5, None)
    _, name, method, record = min(candidates, key=lambda candidate: candidate[0])
    stored = (record.get("stored_maps") or {}).get(method.name)
    return UsedMaps(name, method, record.get("labels", "gt"), float(record.get("label_threshold", 0.5)),
                    Path(stored) if stored else None)


def map_overlays(model, dataset: VOCDataset, ids: Sequence[str],
                 used: UsedMaps) -> dict[str, list[tuple[int, np.ndarray]]]:
    """Per example id: (class 1..C, its normalised map in jet colours over the image), for the classes
    the segmentations explained; read from the stored maps, else computed as the record says."""
    overlays: dict[str, list[tuple[int, np.ndarray]]] = {}

    def finish(item: ImageItem, result: tuple[list[int], np.ndarray]) -> None:
        classes, maps = result
        overlays[item.id] = [(value, heat_overlay(item.image, maps[k])) for k, value in enumerate(mask_values(classes))]

    if used.stored is not None:
        stored = StoredMaps({used.method: used.stored})

        def compute(batch: list[ImageItem]) -> list[tuple[list[int], np.ndarray]]:
            classes, maps = stored.batch(batch)
            return list(zip(classes, maps[used.method]))
    elif model is not None:
        def compute(batch: list[ImageItem]) -> list[tuple[list[int], np.ndarray]]:
            images = batch_tensor([item.image for item in batch], next(model.parameters()).device)
            classes = batch_classes(model, batch, used.label_source, used.label_threshold, images)
            maps = used.method.normalize(used.method(model, images, classes)).cpu().numpy()
            return [(per_image, maps[n, :len(per_image)]) for n, per_image in enumerate(classes)]
    else:
        return overlays
    run_split(dataset, compute, finish, ids=ids, batch_size=1, progress=False, desc="report maps")
    return overlays


def _figure(src: str, caption: str) -> str:
    return (f'<td><img src="{html.escape(src)}" alt="{html.escape(caption)}">'
            f'<div class="caption">{html.escape(caption)}</div></td>')


def example_grid(out: Path, dataset: VOCDataset, predictions_dir: Path, methods: Sequence[str],
                 ids: Sequence[str], model=None, used: UsedMaps | None = None) -> str:
    """Write the grid's pictures under ``out/images`` and return its HTML table.

    ``used``: the maps to draw per class (default: the ones the segmentations' records name),
    computed with ``model`` (the run's classifier) unless they were stored; without either the
    grid shows segmentations only.
    """
    names = dataset.classes.names
    used = used or used_maps(predictions_dir, methods)
    overlays = map_overlays(model, dataset, ids, used)
    label = used.method.name.upper() if used.method.name in ("dcsm", "cam") else used.method.name
    rows, most_classes = [], 0
    for image_id in ids:
        image, labels = dataset.load_image(image_id), sorted(dataset.load_labels(image_id))
        write_image(out / "images" / f"{image_id}.png", image)
        write_image(out / "images" / f"{image_id}_gt.png", colour_labels(dataset.load_mask(image_id)))
        present = ", ".join(names[label] for label in labels)
        cells = [_figure(f"images/{image_id}.png", image_id),
                 _figure(f"images/{image_id}_gt.png", present or "no class")]
        for method in methods:
            try:
                prediction = read_label_png(predictions_dir / method / f"{image_id}.png", dataset.num_classes,
                                            what="prediction")
            except DataError:
                cells.append('<td class="caption">no prediction</td>')
                continue
            write_image(out / "images" / f"{image_id}_{method}.png", colour_labels(prediction))
            cells.append(_figure(f"images/{image_id}_{method}.png", method))
        drawn = overlays.get(image_id, [])
        for class_value, overlay in drawn:
            picture = f"images/{image_id}_{used.method.name}_{class_value}.png"
            write_image(out / picture, overlay)
            cells.append(_figure(picture, f"{label}: {names[class_value]}"))
        most_classes = max(most_classes, len(drawn))
        rows.append((cells, len(drawn)))
    head = ("<th>image</th><th>ground truth</th>" + "".join(f"<th>{html.escape(m)}</th>" for m in methods)
            + "".join(f"<th>{html.escape(label)} {k + 1}</th>" for k in range(most_classes)))
    body = "".join(f"<tr>{''.join(cells)}{'<td></td>' * (most_classes - count)}</tr>" for cells, count in rows)
    return (f'<div class="scroll"><table class="grid" id="examples"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def build_report(folder: str | Path, data: str | Path | None = None, run: str | Path | None = None,
                 split: str = "val", examples: int = 8, title: str = "wsseg results") -> Path:
    """Write ``folder/report/index.html`` from the folder's scores, predictions and run; returns its path."""
    folder = Path(folder)
    data = Path(data) if data is not None else folder / "data"
    run = Path(run) if run is not None else folder / "run"
    scores = load_scores(folder / "scores")
    dataset = open_dataset(data, split)
    out = folder / REPORT_DIR
    class_names = dataset.classes.names
    # the scores say which split they were scored on; the examples are of --split: each is labelled as such
    scored = ", ".join(sorted({str(score.get("split") or "unknown") for score in scores.values()}))
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="muted">Results on split <span id="results-split">{html.escape(scored)}</span> (as the '
             f'score files record it) of {html.escape(str(data))}; segmentations made with the labels the '
             "classifier predicts unless a row says otherwise.</p>",
             "<h2>Results</h2>", results_table(scores, class_names),
             '<p class="muted">mIoU and per-class IoU in % (PASCAL VOC protocol, void pixels ignored); '
             "seconds per image on the machine that ran it. Hover a method for what it does.</p>"]
    if (run / "history.json").is_file():
        history = read_history(run)
        if history:
            plot_training_curve(history, out / "training_curve.png")
            best, last = best_record(history), history[-1]
            parts += ["<h2>Classifier training</h2>",
                      '<img id="training-curve" src="training_curve.png" alt="training loss and validation mAP">',
                      f'<p class="muted">{last["epoch"]} epochs, {last.get("elapsed", 0):.0f} s; the model used '
                      f'is epoch {best["epoch"]}, val mAP {best.get("val_map") or float("nan"):.3f}.</p>']
    chosen = example_ids(dataset.ids, examples)
    model = load_run(run)[0] if (run / "model.pt").is_file() else None
    methods = [m for m in scores if m != BASELINE and (folder / "predictions" / m).is_dir()]
    used = used_maps(folder / "predictions", methods)
    parts += ["<h2>Examples</h2>",
              f'<p class="muted">{len(chosen)} of the {len(dataset)} images of split <span id="examples-split">'
              f"{html.escape(split)}</span>.</p>", "<h3>Colours</h3>", legend(class_names),
              example_grid(out, dataset, folder / "predictions", methods, chosen, model, used),
              f'<p class="muted" id="maps-note">Map columns: {html.escape(used.describe())}; one map per class '
              "explained, normalised as the fusion reads it and drawn in jet colours over the image.</p>"]
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
    index = out / "index.html"
    write_text_atomic(index, page)
    return index

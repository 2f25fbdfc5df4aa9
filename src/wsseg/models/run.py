"""A training run folder: RUN/config.json (what the model is) and RUN/model.pt (its weights).

Checkpoints hold only tensors and plain values, and are read with torch.load(weights_only=True):
a checkpoint that carries code is refused, never executed.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from wsseg.data.classes import ClassList
from wsseg.errors import WssegError
from wsseg.io import (NUMBER, atomic_write, check_fields, load_weights_only, read_json_or_refuse,
                      write_json_atomic)
from wsseg.models.classifier import FCNClassifier, build_classifier

CHECKPOINT_FORMAT = "wsseg-checkpoint-1"


@dataclass
class TrainedRunConfig:
    """What every training run's config.json holds, the classifier's and the stage-2 network's:
    the class list, the backbone and the shared training recipe. One base, so that a key the two
    formats share means one thing in both; each format adds its own keys and, where they differ,
    its own defaults (defaults only stand in for keys that files written by older versions lack,
    so they are the values those versions trained with)."""

    classes: list[str]
    backbone: str = "efficientnet-lite0"
    output_stride: int = 16
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    head_lr_scale: float = 10.0
    weight_decay: float = 1e-4
    scale_range: list[float] = field(default_factory=lambda: [0.7, 1.3])
    jitter: float = 0.0
    seed: int = 0
    split: str = "train"
    val_split: str | None = "val"
    data: str = ""
    masks: str = "SegmentationClass"

    @property
    def class_list(self) -> ClassList:
        return ClassList(tuple(self.classes))

    def save(self, run: str | Path) -> None:
        write_json_atomic(Path(run) / "config.json", asdict(self))

    @classmethod
    def read(cls, run: str | Path, missing: str) -> tuple[Path, Any]:
        """RUN/config.json's path and content as read (any JSON value: each format says what it
        refuses); ``missing`` says what to do when there is no such file."""
        path = Path(run) / "config.json"
        if not path.is_file():
            raise WssegError(f"{path}: {missing}")
        return path, read_json_or_refuse(path, "run config")

    @classmethod
    def known(cls, data: dict[str, Any]) -> dict[str, Any]:
        """The keys of ``data`` this format has: a newer version's extra keys are ignored, not refused."""
        names = {f.name for f in fields(cls)}
        return {k: v for k, v in data.items() if k in names}


@dataclass
class RunConfig(TrainedRunConfig):
    """Everything needed to rebuild the classifier and to know what it was trained for.

    ``wsseg.training.classifier.run_config`` fills every field from the training options (the one
    source of defaults)."""

    pooling: str = "gap"
    lse_r: float = 5.0
    image_size: int = 224
    patience: int | None = None
    probe_epochs: int = 0
    freeze_bn: bool = False
    cutmix: float = 0.0
    micro_batch: int | None = None  # images per forward pass when a step was split (None: the whole batch)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, run: str | Path) -> RunConfig:
        path, data = cls.read(run, f"run config is missing (is {run} a training run folder?)")
        if not isinstance(data, dict):
            raise WssegError(f"{path}: run config must be a JSON object, not {type(data).__name__}")
        if data.get("network") == "segmentation":  # wsseg.models.segnet.SEGMENTATION_NETWORK
            raise WssegError(f"{path}: this is a stage-2 segmentation network's run (`wsseg train-seg`), not a "
                             "classifier's: use it with --method seg")
        values = cls.known(data)
        for name, value in values.items():
            problem = _field_problem(name, value)
            if problem:
                raise WssegError(f"{path}: {name!r} {problem}")
        if "classes" not in values:
            raise WssegError(f"{path}: 'classes' is missing")
        return cls(**values)


_NUMBERS = {"lse_r", "lr", "head_lr_scale", "weight_decay", "jitter", "cutmix"}
_INTEGERS = {"image_size", "output_stride", "epochs", "batch_size", "seed", "probe_epochs"}
_STRINGS = {"backbone", "pooling", "split", "data", "masks"}


def _field_problem(name: str, value: Any) -> str | None:
    """What is wrong with a config.json value (a tampered or hand-edited file), or None."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if name == "classes":
        ok = isinstance(value, list) and value and all(isinstance(c, str) and c for c in value)
        return None if ok else "must be a non-empty list of class names"
    if name in _NUMBERS:
        return None if number(value) else "must be a number"
    if name in _INTEGERS:
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be a whole number"
    if name in _STRINGS:
        return None if isinstance(value, str) else "must be a string"
    if name == "scale_range":
        return None if isinstance(value, list) and len(value) == 2 and all(map(number, value)) else \
            "must be a list of two numbers"
    if name in ("patience", "micro_batch"):
        return None if value is None or (isinstance(value, int) and not isinstance(value, bool)) else \
            "must be a whole number or null"
    if name == "val_split":
        return None if value is None or isinstance(value, str) else "must be a string or null"
    if name == "freeze_bn":
        return None if isinstance(value, bool) else "must be true or false"
    if name == "extra":
        return None if isinstance(value, dict) else "must be an object"
    return None


def read_history(run: str | Path, name: str = "history.json") -> list[dict]:
    """RUN/history.json, or another trainer's ``name`` (one record per finished epoch; [] when
    absent); a damaged file is refused with its name, as --resume and the report must not guess."""
    path = Path(run) / name
    if not path.exists():
        return []
    history = read_json_or_refuse(path, "training history")
    if not isinstance(history, list) or not all(
            isinstance(r, dict) and isinstance(r.get("epoch"), int) and not isinstance(r.get("epoch"), bool)
            for r in history):
        raise WssegError(f"{path}: not a training history (a list of epoch records)")
    for record in history:  # what the report draws and --resume adds to: numbers, or null
        check_fields(record, {key: (NUMBER if key != "best" else bool) for key in record if key != "precision"}, path)
    return history


def save_checkpoint(path: str | Path, model: torch.nn.Module, epoch: int,
                    optimizer: torch.optim.Optimizer | None = None) -> None:
    """Write weights (and optimiser state, for --resume) atomically."""
    state: dict[str, Any] = {"format": CHECKPOINT_FORMAT, "epoch": epoch,
                             "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    with atomic_write(path) as handle:
        torch.save(state, handle)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    state = load_weights_only(path, "checkpoint")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "model" not in state:
        raise WssegError(f"{path}: not a wsseg checkpoint")
    weights = state["model"]
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise WssegError(f"{path}: damaged checkpoint ('model' is not a table of tensors)")
    if not isinstance(state.get("epoch"), int) or isinstance(state.get("epoch"), bool):
        raise WssegError(f"{path}: damaged checkpoint ('epoch' is not a whole number)")
    if "optimizer" in state and not isinstance(state["optimizer"], dict):
        raise WssegError(f"{path}: damaged checkpoint ('optimizer' is not an optimiser state)")
    return state


def build_from_config(config: RunConfig) -> FCNClassifier:
    """The classifier architecture of a run, without loading any pretrained weights."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no 'randomly initialised' warning: weights come next
        return build_classifier(len(config.classes), backbone=config.backbone, pooling=config.pooling,
                                pretrained=False, output_stride=config.output_stride, lse_r=config.lse_r)


def load_run(run: str | Path, map_location: str | torch.device = "cpu") -> tuple[FCNClassifier, RunConfig]:
    """Rebuild a trained classifier from its run folder, in eval mode."""
    config = RunConfig.load(run)
    model = build_from_config(config)
    state = read_checkpoint(Path(run) / "model.pt")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise WssegError(f"{Path(run) / 'model.pt'}: weights do not fit the {config.backbone} classifier with "
                         f"{len(config.classes)} classes described in config.json ({str(exc).splitlines()[0]})") from None
    model.input_size = config.image_size
    return model.to(map_location).eval(), config


def check_same_classes(config: RunConfig, classes: ClassList, run: str | Path, data: str | Path) -> None:
    """Refuse to apply a model to a dataset with another class list (labels would be shuffled)."""
    if tuple(config.classes) != classes.foreground:
        def first(names) -> str:  # short and escaped: a class list may be any file
            return ", ".join(repr(str(name)[:20]) for name in list(names)[:4]) + ", ..."
        raise WssegError(f"{run}: the model was trained for classes {first(config.classes)} but {data} has "
                         f"{first(classes.foreground)}; class lists must match")

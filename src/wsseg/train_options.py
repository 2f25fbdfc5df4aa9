"""The trainers' options, kept where earlier versions had them: they live in
:mod:`wsseg.training.options` (torch-free, as here)."""

from wsseg.training.options import AffinityOptions, SegTrainOptions, TrainerOptions, TrainOptions

__all__ = ["AffinityOptions", "SegTrainOptions", "TrainOptions", "TrainerOptions"]

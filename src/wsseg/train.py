"""``wsseg train``'s Python entry point, kept where earlier versions had it: the classifier's task
lives in :mod:`wsseg.training.classifier`, the loop in :mod:`wsseg.training.loop`."""

from wsseg.training.classifier import (best_record, classification_metrics, cutmix,
                                       micro_batch_size, predict_scores, train)
from wsseg.training.options import MAX_IMAGE_SIZE, PRECISIONS, TrainOptions
from wsseg.training.steps import auto_image_size, precision_name, resolve_workers, training_autocast

__all__ = ["MAX_IMAGE_SIZE", "PRECISIONS", "TrainOptions", "auto_image_size", "best_record", "classification_metrics",
           "cutmix", "micro_batch_size", "precision_name", "predict_scores", "resolve_workers", "train",
           "training_autocast"]

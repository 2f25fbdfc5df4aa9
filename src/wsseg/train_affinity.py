"""``wsseg train-affinity``'s Python entry point, kept where earlier versions had it: the affinity
network's task lives in :mod:`wsseg.training.affinity`, the loop in :mod:`wsseg.training.loop`."""

from wsseg.training.affinity import AFFINITY_FILES, AFFINITY_HISTORY, train_affinity
from wsseg.training.options import AffinityOptions

__all__ = ["AFFINITY_FILES", "AFFINITY_HISTORY", "AffinityOptions", "train_affinity"]

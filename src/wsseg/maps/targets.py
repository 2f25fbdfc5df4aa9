"""Which classes to explain, per image, as padded index tensors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from wsseg.errors import WssegError


@dataclass(frozen=True)
class Targets:
    """``index[n, k]`` is the k-th class asked for image n; ``valid[n, k]`` is False for padding."""

    index: torch.Tensor  # [N, K] long
    valid: torch.Tensor  # [N, K] bool

    @property
    def slots(self) -> int:
        return self.index.shape[1]

    def one_hot(self, slot: int, num_classes: int) -> torch.Tensor:
        """[N, C] selector of slot ``slot``'s class (a zero row where the slot is padding)."""
        selector = torch.zeros(self.index.shape[0], num_classes)
        rows = torch.nonzero(self.valid[:, slot]).flatten()
        selector[rows, self.index[rows, slot]] = 1.0
        return selector


def make_targets(classes: Sequence[Sequence[int]] | torch.Tensor, batch: int, num_classes: int | None) -> Targets:
    """Per-image class lists (0-based classifier outputs) -> padded [N, K] tensors."""
    if isinstance(classes, torch.Tensor):
        classes = [[int(c)] for c in classes.flatten()] if classes.dim() <= 1 else classes.tolist()
    lists = [list(map(int, per_image)) for per_image in classes]
    if len(lists) != batch:
        raise WssegError(f"classes gives lists for {len(lists)} images but the batch has {batch}")
    for per_image in lists:
        if len(set(per_image)) != len(per_image):
            raise WssegError(f"class list {per_image} repeats a class")
        for c in per_image:
            if c < 0 or (num_classes is not None and c >= num_classes):
                raise WssegError(f"class index {c} is outside 0..{(num_classes or 1) - 1}")
    slots = max((len(p) for p in lists), default=0)
    index = torch.zeros(batch, max(slots, 0), dtype=torch.long)
    valid = torch.zeros(batch, max(slots, 0), dtype=torch.bool)
    for n, per_image in enumerate(lists):
        index[n, : len(per_image)] = torch.tensor(per_image, dtype=torch.long)
        valid[n, : len(per_image)] = True
    return Targets(index, valid)

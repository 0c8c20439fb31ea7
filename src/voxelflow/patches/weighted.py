"""``WeightedSampler``: patch centres drawn in proportion to a weight map of any size."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from voxelflow._errors import VoxelflowValueError
from voxelflow._geometry import Triplet, describe
from voxelflow.patches.random_sampling import RandomSampler, map_image
from voxelflow.patches.tables import build_tables, draw_in_blocks
from voxelflow.subject import Subject


class WeightedSampler(RandomSampler):
    """Patch centres drawn with probability proportional to a map in the subject.

    The map (one channel, any numeric dtype, non-negative) is an image of the
    subject named by ``probability_map``. Only valid centres count (with no
    padding, the margins of ``patch_size // 2`` are never centres). Works on
    volumes of any size, in float64, reading the map slab by slab once per
    subject (see the module docstring).

    Example:
        >>> import torch, voxelflow as tio
        >>> weights = torch.zeros(1, 9, 9, 9)
        >>> weights[0, 6, 2, 4] = 1.0
        >>> subject = tio.Subject(
        ...     t1=tio.ScalarImage(torch.rand(1, 9, 9, 9)),
        ...     sampling_weights=tio.ScalarImage(weights),
        ... )
        >>> sampler = tio.WeightedSampler(subject, patch_size=3, probability_map="sampling_weights")
        >>> sampler.sample_locations(subject, 2)[0].index  # centred on the only weighted voxel
        (5, 1, 3)
    """

    def __init__(
        self,
        subject: Subject | None = None,
        patch_size: int | Sequence[int] | None = None,
        probability_map: str | None = None,
        num_patches: int | None = None,
        padding_mode: str | float | None = None,
        seed: int | None = None,
    ) -> None:
        if probability_map is None:
            raise VoxelflowValueError(
                "WeightedSampler needs probability_map=, the name of the image holding the "
                "sampling weights"
            )
        self.probability_map = probability_map
        super().__init__(subject, patch_size, num_patches, padding_mode, seed)

    def check_subject(self, subject: Subject) -> None:
        super().check_subject(subject)
        image = map_image(self, subject, self.probability_map, "probability map")
        if image.num_channels != 1:
            raise VoxelflowValueError(
                f"{image.path or self.probability_map}: a probability map has one channel, "
                f"got {image.num_channels}; keep the channel to sample from"
            )

    def _sample_centres(
        self,
        subject: Subject,
        count: int,
        generator: torch.Generator,
        first: Triplet,
        extent: Triplet,
    ) -> np.ndarray:
        image = map_image(self, subject, self.probability_map, "probability map")
        label = image.path or self.probability_map

        def masses(slab: np.ndarray) -> list[np.ndarray]:
            values = slab[0]
            if values.dtype.kind == "f" and not np.isfinite(values).all():
                raise VoxelflowValueError(
                    f"{label}: the probability map has NaN or infinite weights; replace them"
                )
            if values.dtype.kind in "fi" and values.size and values.min() < 0:
                raise VoxelflowValueError(
                    f"{label}: the probability map has negative weights (minimum "
                    f"{values.min()}); weights must be non-negative"
                )
            return [values]

        (table,) = self._tables.get(
            image,
            (first, extent, "weights"),
            lambda: build_tables(image, first, extent, masses),
        )
        if table.total <= 0:
            raise VoxelflowValueError(
                f"{label}: every weight of the probability map is zero among the valid patch "
                f"centres (patch {describe(self.patch_size)}); give some centres a positive weight "
                "or pass padding_mode= so the borders count"
            )
        blocks = table.draw_blocks(count, generator)

        def pick(values: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
            cumulative = np.cumsum(values[0].ravel(), dtype=np.float64)
            found = np.searchsorted(cumulative, uniforms * cumulative[-1], side="right")
            positive = np.flatnonzero(values[0].ravel() > 0)
            return np.minimum(found, positive[-1])

        return draw_in_blocks(image, table, blocks, generator, pick)

    def __repr__(self) -> str:
        return (
            f"WeightedSampler(patch_size={self.patch_size}, "
            f"probability_map={self.probability_map!r})"
        )

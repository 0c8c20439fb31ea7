"""``LabelSampler``: patches centred on label classes, with class probabilities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from voxelflow._errors import VoxelflowValueError
from voxelflow._geometry import Triplet, describe
from voxelflow.image import LABEL, Image
from voxelflow.patches.random_sampling import RandomSampler, map_image
from voxelflow.patches.reading import subject_name
from voxelflow.patches.tables import build_tables, draw_in_blocks
from voxelflow.subject import Subject


class LabelSampler(RandomSampler):
    """Patches centred on label classes, with class probabilities.

    ``label_probabilities`` maps a class to the probability that a patch is
    centred on a voxel of that class: with ``{0: 0.5, 1: 0.5}`` half the
    centres fall on label 1, however small label 1 is (TorchIO applies these
    per voxel instead). Within a class, every voxel (valid centre) is equally
    likely. Classes absent from a subject's valid centres are skipped and the
    others renormalised. ``None`` centres patches uniformly on the foreground
    (voxels that are not 0).

    A single-channel label map holds class values; a multi-channel map is
    one-hot: class ``k`` is channel ``k`` (voxels where it is positive), and
    the foreground is channels ``1...``.

    Example:
        >>> import torch, voxelflow as tio
        >>> seg = torch.zeros(1, 20, 20, 20, dtype=torch.uint8)
        >>> seg[0, 10, 10, 10] = 1  # one voxel of label 1
        >>> subject = tio.Subject(
        ...     t1=tio.ScalarImage(torch.rand(1, 20, 20, 20)), seg=tio.LabelMap(seg)
        ... )
        >>> sampler = tio.LabelSampler(
        ...     subject, patch_size=4, label_name="seg", label_probabilities={0: 0.5, 1: 0.5}
        ... )
        >>> locations = sampler.sample_locations(subject, 1000, torch.Generator().manual_seed(0))
        >>> on_one = sum(location.index == (8, 8, 8) for location in locations)
        >>> 400 < on_one < 600
        True
    """

    def __init__(
        self,
        subject: Subject | None = None,
        patch_size: int | Sequence[int] | None = None,
        label_name: str | None = None,
        label_probabilities: Mapping[int, float] | None = None,
        num_patches: int | None = None,
        padding_mode: str | float | None = None,
        seed: int | None = None,
    ) -> None:
        self.label_name = label_name
        self.label_probabilities = _parse_probabilities(label_probabilities)
        super().__init__(subject, patch_size, num_patches, padding_mode, seed)

    def _label_image(self, subject: Subject) -> Image:
        if self.label_name is None:
            labels = [n for n, image in subject.images.items() if image.type == LABEL]
            if not labels:
                raise VoxelflowValueError(
                    f"{subject_name(subject)}: LabelSampler needs label_name= or a LabelMap in "
                    f"the subject; images: {', '.join(subject.images) or 'none'}"
                )
            return subject.images[labels[0]]
        return map_image(self, subject, self.label_name, "label map")

    def check_subject(self, subject: Subject) -> None:
        super().check_subject(subject)
        image = self._label_image(subject)
        channels = image.num_channels
        if channels > 1 and self.label_probabilities is not None:
            too_big = [c for c in self.label_probabilities if not 0 <= c < channels]
            if too_big:
                raise VoxelflowValueError(
                    f"{image.path or self.label_name}: a one-hot label map of {channels} channels "
                    f"has classes 0...{channels - 1}; label_probabilities names {too_big}"
                )

    def _classes(self, channels: int) -> list[Any]:
        if self.label_probabilities is None:
            return ["foreground"]
        return list(self.label_probabilities)

    def _sample_centres(
        self,
        subject: Subject,
        count: int,
        generator: torch.Generator,
        first: Triplet,
        extent: Triplet,
    ) -> np.ndarray:
        image = self._label_image(subject)
        channels = image.num_channels
        classes = self._classes(channels)

        def mask(values: np.ndarray, cls: Any) -> np.ndarray:
            if channels == 1:
                return np.asarray(values[0] != 0 if cls == "foreground" else values[0] == cls)
            if cls == "foreground":
                return np.asarray((values[1:] > 0).any(axis=0))
            return np.asarray(values[cls] > 0)

        def masses(slab: np.ndarray) -> list[np.ndarray]:
            return [mask(slab, cls) for cls in classes]

        tables = self._tables.get(
            image,
            (first, extent, "labels", tuple(classes)),
            lambda: build_tables(image, first, extent, masses),
        )
        present = [n for n, table in enumerate(tables) if table.total > 0]
        if not present:
            wanted = "foreground voxels" if classes == ["foreground"] else f"classes {classes}"
            raise VoxelflowValueError(
                f"{image.path or self.label_name}: no {wanted} among the valid patch centres "
                f"(patch {describe(self.patch_size)}); check label_probabilities, or pass "
                "padding_mode= so the borders count"
            )
        if self.label_probabilities is None:
            weights = np.ones(1)
        else:
            weights = np.asarray([self.label_probabilities[classes[n]] for n in present])
            if weights.sum() <= 0:
                raise VoxelflowValueError(
                    f"{image.path or self.label_name}: the classes present "
                    f"{[classes[n] for n in present]} all have probability 0"
                )
        probabilities = torch.as_tensor(weights / weights.sum(), dtype=torch.float64)
        chosen = torch.multinomial(probabilities, count, replacement=True, generator=generator)
        chosen_classes = np.asarray(present)[chosen.numpy()]
        out = np.empty((count, 3), dtype=np.int64)
        for n in present:
            rows = np.flatnonzero(chosen_classes == n)
            if rows.size == 0:
                continue
            table = tables[n]
            blocks = table.draw_blocks(rows.size, generator)
            cls = classes[n]

            def pick(values: np.ndarray, uniforms: np.ndarray, cls: Any = cls) -> np.ndarray:
                voxels = np.flatnonzero(mask(values, cls).ravel())
                return voxels[
                    np.minimum((uniforms * voxels.size).astype(np.int64), voxels.size - 1)
                ]

            out[rows] = draw_in_blocks(image, table, blocks, generator, pick)
        return out

    def __repr__(self) -> str:
        return (
            f"LabelSampler(patch_size={self.patch_size}, label_name={self.label_name!r}, "
            f"label_probabilities={self.label_probabilities})"
        )


def _parse_probabilities(probabilities: Mapping[int, float] | None) -> dict[int, float] | None:
    if probabilities is None:
        return None
    if not isinstance(probabilities, Mapping) or not probabilities:
        raise VoxelflowValueError(
            f"label_probabilities must be a non-empty dict {{class: probability}}, got "
            f"{probabilities!r}"
        )
    parsed = {}
    for cls, probability in probabilities.items():
        if isinstance(cls, bool) or not isinstance(cls, int | np.integer):
            raise VoxelflowValueError(f"label_probabilities: classes must be ints, got {cls!r}")
        value = float(probability)
        if not np.isfinite(value) or value < 0:
            raise VoxelflowValueError(
                f"label_probabilities: probability of class {cls} must be a non-negative "
                f"number, got {probability!r}"
            )
        parsed[int(cls)] = value
    if sum(parsed.values()) <= 0:
        raise VoxelflowValueError(
            f"label_probabilities are all zero ({parsed}); give some class a positive probability"
        )
    return parsed

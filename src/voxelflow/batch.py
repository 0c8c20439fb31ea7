"""Batches: images and subjects collated along a leading batch axis."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from voxelflow._errors import VoxelflowKeyError, VoxelflowValueError, did_you_mean
from voxelflow.image import INTENSITY, Image, ScalarImage
from voxelflow.subject import Subject


class ImagesBatch:
    """``B`` images of one shape: ``data`` is ``(B, C, I, J, K)``, ``affines`` is ``(B, 4, 4)``.

    Example:
        >>> import torch, voxelflow as tio
        >>> images = [tio.ScalarImage(torch.rand(1, 4, 4, 4)) for _ in range(3)]
        >>> batch = tio.ImagesBatch.from_images(images)
        >>> tuple(batch.data.shape), batch.batch_size
        ((3, 1, 4, 4, 4), 3)
    """

    def __init__(
        self,
        data: torch.Tensor,
        affines: np.ndarray | None = None,
        *,
        image_class: type[Image] = ScalarImage,
        type: str = INTENSITY,  # noqa: A002
        paths: Sequence[Any] | None = None,
    ) -> None:
        if data.ndim != 5:
            raise VoxelflowValueError(
                f"ImagesBatch: data must be (B, C, I, J, K), got shape {tuple(data.shape)}"
            )
        self.data = data
        size = data.shape[0]
        self.affines = np.tile(np.eye(4), (size, 1, 1)) if affines is None else np.asarray(affines)
        self.image_class = image_class
        self.type = type
        self.paths = list(paths) if paths is not None else [None] * size

    @classmethod
    def from_images(cls, images: Sequence[Image]) -> ImagesBatch:
        if not images:
            raise VoxelflowValueError("ImagesBatch: cannot collate an empty list of images")
        shapes = {tuple(image.shape) for image in images}
        if len(shapes) > 1:
            raise VoxelflowValueError(
                f"ImagesBatch: images of different shapes cannot be stacked: {sorted(shapes)}; "
                "sample patches of one size, or crop or pad the images to a common shape"
            )
        data = torch.stack([_read(image) for image in images])
        affines = np.stack([image.affine for image in images])
        first = images[0]
        return cls(
            data, affines, image_class=type(first), type=first.type, paths=[i.path for i in images]
        )

    @property
    def batch_size(self) -> int:
        return int(self.data.shape[0])

    @property
    def device(self) -> torch.device:
        """Where ``data`` lives."""
        return self.data.device

    def __len__(self) -> int:
        return self.batch_size

    def to(self, *args: Any, **kwargs: Any) -> ImagesBatch:
        """Move ``data`` (like ``Tensor.to``); returns a new batch."""
        return self._with(self.data.to(*args, **kwargs))

    def pin_memory(self) -> ImagesBatch:
        return self._with(self.data.pin_memory())

    def _with(self, data: torch.Tensor) -> ImagesBatch:
        return ImagesBatch(
            data, self.affines, image_class=self.image_class, type=self.type, paths=self.paths
        )

    def unbatch(self) -> list[Image]:
        """The images again, one per batch element."""
        return [
            self.image_class(tensor=self.data[n], affine=self.affines[n])
            for n in range(self.batch_size)
        ]

    def __repr__(self) -> str:
        return f"ImagesBatch(shape: {tuple(self.data.shape)}; dtype: {self.data.dtype}; type: {self.type})"


class SubjectsBatch:
    """``B`` subjects collated: ``batch.t1.data`` is ``(B, C, I, J, K)``;
    ``batch.metadata[name]`` lists the other entries (e.g. ``"patch_location"``).

    Example:
        >>> import torch, voxelflow as tio
        >>> subjects = [tio.Subject(t1=tio.ScalarImage(torch.rand(1, 4, 4, 4)), age=a) for a in (30, 40)]
        >>> batch = tio.SubjectsBatch.from_subjects(subjects)
        >>> tuple(batch.t1.data.shape), batch.metadata["age"]
        ((2, 1, 4, 4, 4), [30, 40])
    """

    def __init__(self, images: dict[str, ImagesBatch], metadata: dict[str, list[Any]]) -> None:
        self.images = images
        self.metadata = metadata

    @classmethod
    def from_subjects(cls, subjects: Sequence[Subject]) -> SubjectsBatch:
        if not subjects:
            raise VoxelflowValueError("SubjectsBatch: cannot collate an empty list of subjects")
        keys = list(subjects[0].keys())
        for subject in subjects[1:]:
            if list(subject.keys()) != keys:
                raise VoxelflowValueError(
                    f"SubjectsBatch: subjects have different entries ({keys} vs {list(subject.keys())})"
                )
        images = {}
        metadata = {}
        for key in keys:
            values = [dict.__getitem__(subject, key) for subject in subjects]
            if isinstance(values[0], Image):
                images[key] = ImagesBatch.from_images(values)
            else:
                metadata[key] = values
        return cls(images, metadata)

    @property
    def batch_size(self) -> int:
        if self.images:
            return next(iter(self.images.values())).batch_size
        return len(next(iter(self.metadata.values()), []))

    def __len__(self) -> int:
        return self.batch_size

    @property
    def device(self) -> torch.device:
        """Where the image batches live (the CPU for a batch without images)."""
        devices = {batch.device for batch in self.images.values()}
        if len(devices) > 1:
            raise VoxelflowValueError(
                f"SubjectsBatch: its images live on different devices ({sorted(map(str, devices))}); "
                "move them together with batch.to(device)"
            )
        return devices.pop() if devices else torch.device("cpu")

    def __getitem__(self, name: str) -> ImagesBatch | list[Any]:
        if name in self.images:
            return self.images[name]
        if name in self.metadata:
            return self.metadata[name]
        names = (*self.images, *self.metadata)
        raise VoxelflowKeyError(
            f"SubjectsBatch has no entry {name!r}; entries: {', '.join(names)}."
            + did_you_mean(name, names)
        )

    def __getattr__(self, name: str) -> ImagesBatch | list[Any]:
        if name.startswith("__") or name in ("images", "metadata"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError as error:
            raise AttributeError(str(error)) from None

    def __contains__(self, name: object) -> bool:
        return name in self.images or name in self.metadata

    def to(self, *args: Any, **kwargs: Any) -> SubjectsBatch:
        """Move every image batch (like ``Tensor.to``); returns a new batch."""
        images = {name: batch.to(*args, **kwargs) for name, batch in self.images.items()}
        return SubjectsBatch(images, self.metadata)

    def pin_memory(self) -> SubjectsBatch:
        return SubjectsBatch(
            {name: batch.pin_memory() for name, batch in self.images.items()}, self.metadata
        )

    def unbatch(self) -> list[Subject]:
        """The subjects again, one per batch element."""
        per_image = {name: batch.unbatch() for name, batch in self.images.items()}
        subjects = []
        for n in range(self.batch_size):
            entries: dict[str, Any] = {name: images[n] for name, images in per_image.items()}
            entries.update({key: values[n] for key, values in self.metadata.items()})
            subjects.append(Subject(entries))
        return subjects

    def __repr__(self) -> str:
        return (
            f"SubjectsBatch(batch_size: {self.batch_size}; images: {tuple(self.images)}; "
            f"metadata: {tuple(self.metadata)})"
        )


def _read(image: Image) -> torch.Tensor:
    """The image's tensor; a lazy image is read without caching (the caller's stays lazy)."""
    return image.read()


def collate_subjects(subjects: Sequence[Subject]) -> SubjectsBatch:
    """``collate_fn`` that turns a list of subjects into a :class:`SubjectsBatch`."""
    return SubjectsBatch.from_subjects(subjects)


def collate_images(images: Sequence[Image]) -> ImagesBatch:
    """``collate_fn`` that turns a list of images into an :class:`ImagesBatch`."""
    return ImagesBatch.from_images(images)

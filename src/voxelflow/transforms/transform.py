"""``Transform``: the base of every transform, with ``p`` and one seeded generator.

A transform takes a :class:`~voxelflow.Subject`, an :class:`~voxelflow.Image`,
a tensor ``(C, I, J, K)`` or ``(B, C, I, J, K)``, or a whole
:class:`~voxelflow.SubjectsBatch` / :class:`~voxelflow.ImagesBatch` (each
element gets its own random parameters, computed on the batch's device), and
returns a new object of the same kind. Inputs are never modified: new images
come from ``image.new_like``; lazy images are read without caching.

Randomness comes from one ``torch.Generator``: the one passed to the call
(a Queue passes one per patch, so a seed reproduces the stream whatever the
threads do), or the transform's own, seeded by ``seed``.

``patchwise`` says whether applying the transform to a patch gives the same
result (in distribution) as applying it to the volume and then cutting the
patch: true for flips, noise and intensity maps with fixed parameters; false
for anything that looks at the whole volume (statistics, crops, pads). A
Queue reads only patches when the transform is patchwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import torch

from voxelflow._errors import VoxelflowTypeError, VoxelflowValueError
from voxelflow._random import fresh_seed, make_generator
from voxelflow.batch import ImagesBatch, SubjectsBatch
from voxelflow.image import INTENSITY, LABEL, Image, ScalarImage
from voxelflow.subject import Subject

Data = TypeVar("Data")


def image_tensor(image: Image) -> torch.Tensor:
    """The image's whole tensor, read without caching it in ``image`` (read-only)."""
    data = getattr(image, "_data", None)
    return data if data is not None else image.dataobj.read(None)  # type: ignore[no-any-return]


def uniform(generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    """One float64 number in ``[low, high)``."""
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def parse_range(
    value: float | Sequence[float], name: str, nonnegative: bool = False
) -> tuple[float, float]:
    """``x`` → ``(x, x)``; ``(a, b)`` with ``a <= b`` stays; others raise."""
    if isinstance(value, int | float | np.number):
        low = high = float(value)
    else:
        values = tuple(float(v) for v in value)
        if len(values) != 2 or values[0] > values[1]:
            raise VoxelflowValueError(
                f"{name} must be a number or (low, high) with low <= high, got {value!r}"
            )
        low, high = values
    if nonnegative and low < 0:
        raise VoxelflowValueError(f"{name} must be non-negative, got {value!r}")
    return low, high


class Transform:
    """Base of all transforms.

    Subclasses implement :meth:`apply` (a ``Subject`` in, a new ``Subject``
    out) and set ``patchwise``.

    Args:
        p: probability of applying the transform (otherwise the input comes
            back unchanged).
        seed: seed of the transform's own generator (used when the call gets
            no generator).
        include: names of the images to transform (default: all it applies to).
        exclude: names of images to leave alone.

    Example:
        >>> import torch, voxelflow as tio
        >>> transform = tio.Flip(axes=(0,), p=1.0)
        >>> transform(torch.arange(3.0).reshape(1, 3, 1, 1)).flatten().tolist()
        [2.0, 1.0, 0.0]
    """

    patchwise: bool = True

    def __init__(
        self,
        p: float = 1.0,
        seed: int | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
    ) -> None:
        p = float(p)
        if not 0.0 <= p <= 1.0:
            raise VoxelflowValueError(f"{type(self).__name__}: p must be in [0, 1], got {p}")
        self.p = p
        self.seed = fresh_seed(seed)
        self.generator = make_generator(self.seed)
        self.include = None if include is None else tuple(include)
        self.exclude = tuple(exclude or ())

    # ------------------------------------------------------------ entry point
    def __call__(self, data: Data, generator: torch.Generator | None = None) -> Data:
        generator = self.generator if generator is None else generator
        if isinstance(data, Subject):
            return self.transform_subject(data, generator)  # type: ignore[return-value]
        if isinstance(data, Image):
            return self.transform_subject(Subject(image=data), generator)["image"]  # type: ignore[no-any-return]
        if isinstance(data, SubjectsBatch):
            return self._transform_subjects_batch(data, generator)  # type: ignore[return-value]
        if isinstance(data, ImagesBatch):
            result = self._transform_subjects_batch(SubjectsBatch({"image": data}, {}), generator)
            return result.images["image"]  # type: ignore[return-value]
        if isinstance(data, torch.Tensor | np.ndarray):
            return self._transform_tensor(data, generator)  # type: ignore[return-value]
        raise VoxelflowTypeError(
            f"{type(self).__name__}: cannot transform a {type(data).__name__}; pass a Subject, an "
            "Image, a tensor (C, I, J, K) or (B, C, I, J, K), or a batch"
        )

    def transform_subject(self, subject: Subject, generator: torch.Generator) -> Subject:
        """Apply with probability ``p``; the subject is never modified."""
        if self.p < 1.0 and uniform(generator) >= self.p:
            return subject
        return self.apply(subject, generator)

    def apply(self, subject: Subject, generator: torch.Generator) -> Subject:
        raise NotImplementedError

    # ------------------------------------------------------------ helpers
    def images_to_transform(
        self, subject: Subject, types: Sequence[str] = (INTENSITY, LABEL)
    ) -> dict[str, Image]:
        """The images of ``subject`` this transform touches (by type, include, exclude)."""
        return {
            name: image
            for name, image in subject.images.items()
            if image.type in types
            and (self.include is None or name in self.include)
            and name not in self.exclude
        }

    @staticmethod
    def replace(subject: Subject, images: dict[str, Image]) -> Subject:
        """A copy of ``subject`` with some images replaced."""
        new = subject.copy()
        for name, image in images.items():
            dict.__setitem__(new, name, image)
        return new

    def output_dtype(self, image_type: str, dtype: torch.dtype) -> torch.dtype:
        """The dtype an image of ``image_type`` and ``dtype`` has after this transform."""
        return dtype

    def _transform_tensor(self, data: torch.Tensor | np.ndarray, generator: torch.Generator) -> Any:
        tensor = torch.as_tensor(data)
        if tensor.ndim == 4:
            out = self(ScalarImage(tensor), generator).data
        elif tensor.ndim == 5:
            out = self(ImagesBatch(tensor), generator).data
        else:
            raise VoxelflowValueError(
                f"{type(self).__name__}: a tensor must be (C, I, J, K) or (B, C, I, J, K), got "
                f"shape {tuple(tensor.shape)}"
            )
        return out.cpu().numpy() if isinstance(data, np.ndarray) else out

    def _transform_subjects_batch(
        self, batch: SubjectsBatch, generator: torch.Generator
    ) -> SubjectsBatch:
        """Each element of the batch with its own parameters, on the batch's device."""
        outputs = []
        for n in range(batch.batch_size):
            entries: dict[str, Any] = {
                name: images.image_class(
                    tensor=images.data[n], affine=images.affines[n], type=images.type
                )
                for name, images in batch.images.items()
            }
            outputs.append(self.transform_subject(Subject(entries), generator))
        images = {}
        for name, old in batch.images.items():
            data = torch.stack([subject[name].data for subject in outputs])
            affines = np.stack([subject[name].affine for subject in outputs])
            images[name] = ImagesBatch(
                data, affines, image_class=old.image_class, type=old.type, paths=old.paths
            )
        return SubjectsBatch(images, batch.metadata)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"

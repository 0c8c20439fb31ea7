"""``Transform``: the base of every transform, with ``p``, one seeded generator and a history.

A transform takes a :class:`~voxelflow.Subject`, an :class:`~voxelflow.Image`,
a tensor ``(C, I, J, K)`` or ``(B, C, I, J, K)``, or a whole
:class:`~voxelflow.SubjectsBatch` / :class:`~voxelflow.ImagesBatch` (each
element gets its own random parameters, computed on the batch's device), and
returns a new object of the same kind. Inputs are never modified: new images
come from ``image.new_like`` (or ``image.lazy_like`` over a region-computed
backend); lazy images are read without caching.

**Parameters, then application.** A call draws the transform's random
parameters once (:meth:`Transform.make_params`, plain JSON-able values), then
applies them (:meth:`Transform.apply_transform`, deterministic). The
parameters are recorded in ``subject.applied_transforms`` as an
:class:`AppliedTransform`, and :meth:`Transform.inverse` turns them into the
transform that undoes them (see :mod:`voxelflow.transforms.inverse`).

Randomness comes from one ``torch.Generator``: the one passed to the call
(a Queue passes one per subject, so a seed reproduces the stream whatever the
threads do), or the transform's own, seeded by ``seed``.

``lazy`` says that the transform returns images whose regions are computed
on demand from a bounded region of the input (:mod:`voxelflow.transforms.lazy`):
applying it to a lazy subject reads nothing, and a patch cut from the result
reads only what that patch needs, while equalling the same region of the
whole transformed volume. ``patchwise`` (older, kept for the Queue) says that
applying the transform to each patch gives the same result, in distribution,
as applying it to the volume and cutting the patch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch

from voxelflow._errors import VoxelflowTypeError, VoxelflowValueError
from voxelflow._random import fresh_seed, make_generator
from voxelflow.batch import ImagesBatch, SubjectsBatch
from voxelflow.image import INTENSITY, LABEL, Image, ScalarImage
from voxelflow.subject import Subject

Data = TypeVar("Data")

_REGISTRY: dict[str, type[Transform]] = {}
"""Transform classes by name, to rebuild an inverse from a recorded history."""


@dataclass(frozen=True)
class AppliedTransform:
    """One entry of ``subject.applied_transforms``: what ran, with which parameters.

    Attributes:
        name: the transform's class name (a key of the registry of transforms).
        params: the parameters :meth:`Transform.make_params` drew (JSON-able).
        include: the ``include`` list the transform had (``None``: all images).
        exclude: the ``exclude`` list it had.
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()


def record(subject: Subject, entry: AppliedTransform) -> Subject:
    """``subject`` with ``entry`` appended to its history (a new list: copies never share it)."""
    subject.applied_transforms = [*subject.applied_transforms, entry]
    return subject


def image_tensor(image: Image) -> torch.Tensor:
    """The image's whole tensor (``data``'s dtype), read without caching it in ``image``
    (read-only)."""
    return image.read()


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

    Subclasses implement :meth:`make_params` (draw the random parameters; the
    default draws none) and :meth:`apply_transform` (apply them: a ``Subject``
    in, a new ``Subject`` out), and set ``lazy``/``patchwise``. Invertible
    transforms set ``invertible = True`` and implement :meth:`inverse`.

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
    lazy: bool = False
    invertible: bool = False
    records_history: ClassVar[bool] = True  # containers (Compose, OneOf...) leave it to children

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls

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
        """Apply with probability ``p`` and record it; the subject is never modified."""
        if self.p < 1.0 and uniform(generator) >= self.p:
            return subject
        params = self.make_params(subject, generator)
        result = self.apply_transform(subject, params)
        if not self.records_history:
            return result
        if result is subject:
            result = subject.copy()
        entry = AppliedTransform(type(self).__name__, params, self.include, self.exclude)
        return record(result, entry)

    def make_params(self, subject: Subject, generator: torch.Generator) -> dict[str, Any]:
        """Draw this call's random parameters (JSON-able values; none by default).

        May read headers of ``subject`` (shapes, spacings), never voxel data.
        """
        return {}

    def apply_transform(self, subject: Subject, params: dict[str, Any]) -> Subject:
        """Apply the transform with ``params`` (deterministic): a new subject."""
        raise NotImplementedError

    def apply(self, subject: Subject, generator: torch.Generator) -> Subject:
        """Draw parameters with ``generator`` and apply them, without recording history."""
        return self.apply_transform(subject, self.make_params(subject, generator))

    def inverse(self, params: dict[str, Any]) -> Transform:
        """The transform that undoes this one applied with ``params``."""
        from voxelflow._errors import VoxelflowRuntimeError

        raise VoxelflowRuntimeError(f"{type(self).__name__} is not invertible")

    @classmethod
    def from_history(cls, entry: AppliedTransform) -> Transform | None:
        """The inverse of a recorded ``entry``, or ``None`` if its transform is not invertible."""
        klass = _REGISTRY.get(entry.name)
        if klass is None or not klass.invertible:
            return None
        instance = klass.__new__(klass)
        Transform.__init__(instance, include=entry.include, exclude=entry.exclude)
        inverse = instance.inverse(entry.params)
        inverse.include = entry.include
        inverse.exclude = entry.exclude
        return inverse

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

"""Masks for intensity transforms: which voxels statistics are computed on, or kept.

A ``masking_method`` is, as in TorchIO:

* ``None``: every voxel;
* the name of an image of the subject (a ``LabelMap``, e.g. a brain mask):
  its non-zero voxels (with ``labels=``, the voxels holding one of them); the
  mask stays lazy: statistics stream it slab by slab beside the image, and
  ``Mask`` reads it region by region;
* a function ``f(tensor) -> boolean tensor`` of the image's ``(C, I, J, K)``
  data: the image is read whole once to evaluate it (the function may need the
  whole volume, e.g. ``lambda x: x > x.mean()``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch

from voxelflow._errors import VoxelflowKeyError, VoxelflowTypeError, VoxelflowValueError
from voxelflow.image import Image
from voxelflow.subject import Subject
from voxelflow.transforms.intensity.base import describe, region_source
from voxelflow.transforms.lazy import Region, RegionMapBackend
from voxelflow.transforms.statistics import Mask, Selection

MaskingMethod = str | Callable[[torch.Tensor], torch.Tensor] | None


def check_masking_method(owner: str, masking_method: object) -> MaskingMethod:
    """Validate a ``masking_method`` once, at construction."""
    if masking_method is None or isinstance(masking_method, str) or callable(masking_method):
        return masking_method  # type: ignore[return-value]
    raise VoxelflowTypeError(
        f"{owner}: masking_method must be None, the name of a label map in the subject, or a "
        f"function of the image's tensor returning a boolean mask; got "
        f"{type(masking_method).__name__}"
    )


def resolve_mask(
    owner: str,
    masking_method: MaskingMethod,
    subject: Subject,
    name: str,
    image: Image,
    labels: Sequence[float] | None = None,
) -> Mask:
    """The mask of ``image`` (the subject's ``name``): ``None``, a backend, or a tensor."""
    if masking_method is None:
        return None
    if isinstance(masking_method, str):
        entry = subject.get(masking_method)
        if not isinstance(entry, Image):
            raise VoxelflowKeyError(
                f"{owner}: masking image {masking_method!r} not in the subject (images: "
                f"{', '.join(subject.images) or 'none'}); add it to the subject, or pass "
                "masking_method=None (a bare image or tensor has no mask)"
            )
        if entry.spatial_shape != image.spatial_shape:
            raise VoxelflowValueError(
                f"{owner}: the mask {describe(masking_method, entry)} has spatial shape "
                f"{entry.spatial_shape}, but {describe(name, image)} has {image.spatial_shape}; "
                "resample the mask to the image's grid first"
            )
        backend = region_source(entry)
        if labels is None:
            return backend
        values = tuple(float(v) for v in labels)
        return RegionMapBackend(backend, partial(is_in, labels=values), dtype=torch.bool)
    mask = torch.as_tensor(masking_method(image.data))
    if mask.ndim == 3:
        mask = mask[None]
    if mask.ndim != 4 or tuple(mask.shape[1:]) != image.spatial_shape:
        raise VoxelflowValueError(
            f"{owner}: the masking function returned shape {tuple(mask.shape)} for "
            f"{describe(name, image)} of shape {image.shape}; it must return a boolean tensor "
            "of the image's shape"
        )
    return mask.to(device="cpu", dtype=torch.bool)


def selection(
    owner: str, masking_method: MaskingMethod, subject: Subject, name: str, image: Image
) -> Selection:
    """The voxels of ``image`` its statistics are computed on."""
    mask = resolve_mask(owner, masking_method, subject, name, image)
    return Selection(region_source(image), mask, label=f"{owner}: {describe(name, image)}")


def is_in(data: torch.Tensor, region: Region, *, labels: tuple[float, ...]) -> torch.Tensor:
    """Voxels whose value is one of ``labels``."""
    found = torch.zeros(data.shape, dtype=torch.bool, device=data.device)
    for label in labels:
        found |= data == label
    return found

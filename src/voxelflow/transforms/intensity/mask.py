"""``Mask``: set the voxels outside a mask to a constant."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch

from voxelflow._errors import VoxelflowValueError
from voxelflow.image import Image
from voxelflow.subject import Subject
from voxelflow.transforms.intensity.base import IntensityTransform, float_dtype, map_lazily
from voxelflow.transforms.intensity.masking import (
    MaskingMethod,
    check_masking_method,
    resolve_mask,
)
from voxelflow.transforms.lazy import Region
from voxelflow.transforms.statistics import Mask as MaskSource


def apply_mask(
    data: torch.Tensor, region: Region, *, mask: MaskSource, outside_value: float
) -> torch.Tensor:
    """``data`` where the mask's region is non-zero, ``outside_value`` elsewhere."""
    spatial = tuple(slice(a, b, 1) for a, b in zip(region.start, region.stop, strict=True))
    if isinstance(mask, torch.Tensor):
        inside = mask[(slice(None), *spatial)]
    else:
        assert mask is not None
        inside = mask.read((slice(0, mask.shape[0], 1), *spatial))  # type: ignore[arg-type]
    inside = inside.to(data.device) != 0
    if inside.shape[0] not in (1, data.shape[0]):
        inside = inside.any(dim=0, keepdim=True)
    out = data.to(float_dtype(data.dtype))
    return torch.where(inside, out, outside_value)


class Mask(IntensityTransform):
    """Set intensities outside a mask to ``outside_value`` (TorchIO 2.0's ``Mask``).

    Lazy: a patch reads the mask's region only (a label map named by
    ``masking_method``), or uses the mask a function computed from the whole
    image once.

    Args:
        masking_method: the name of a label map of the subject (its non-zero
            voxels, or those holding one of ``labels``), or a function of the
            image's tensor returning a boolean mask.
        outside_value: the value given to voxels outside the mask.
        labels: label values that make the mask (default: every non-zero value).
        **kwargs: ``p``, ``seed``, ``include``, ``exclude``.

    Example:
        >>> import torch, voxelflow as tio
        >>> subject = tio.Subject(t1=tio.ScalarImage(torch.ones(1, 4, 1, 1)),
        ...                       seg=tio.LabelMap(torch.tensor([0, 1, 2, 1]).reshape(1, 4, 1, 1)))
        >>> tio.Mask(masking_method="seg", labels=[1], outside_value=-1)(subject).t1.data.flatten().tolist()
        [-1.0, 1.0, -1.0, 1.0]
    """

    patchwise = False  # the mask is another image: applied lazily to the whole subject

    def __init__(
        self,
        masking_method: MaskingMethod = "brain",
        outside_value: float = 0.0,
        labels: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if masking_method is None:
            raise VoxelflowValueError(
                "Mask: masking_method must name a label map of the subject or be a function "
                "returning a boolean mask; None would mask nothing"
            )
        self.masking_method = check_masking_method("Mask", masking_method)
        self.outside_value = float(outside_value)
        self.labels = None if labels is None else [float(v) for v in labels]

    def transform_image(
        self, name: str, image: Image, subject: Subject, params: dict[str, Any]
    ) -> Image:
        mask = resolve_mask("Mask", self.masking_method, subject, name, image, self.labels)
        function = partial(apply_mask, mask=mask, outside_value=self.outside_value)
        return map_lazily(image, function, dtype=float_dtype(image.dtype))

    def __repr__(self) -> str:
        return f"Mask(masking_method={self.masking_method!r}, p={self.p})"

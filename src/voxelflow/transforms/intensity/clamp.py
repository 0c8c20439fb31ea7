"""``Clamp``: limit intensities to a range."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from voxelflow._errors import VoxelflowValueError
from voxelflow.image import Image
from voxelflow.subject import Subject
from voxelflow.transforms.intensity.base import IntensityTransform, map_lazily, unchanged
from voxelflow.transforms.lazy import Region


def clamp(
    data: torch.Tensor, region: Region, *, low: float | None, high: float | None
) -> torch.Tensor:
    """``data`` limited to ``[low, high]`` (either may be ``None``)."""
    return data.clamp(low, high)


class Clamp(IntensityTransform):
    """Limit intensities to ``[out_min, out_max]`` (either may be ``None``); the dtype is
    kept. Lazy and patchwise.

    Example:
        >>> import torch, voxelflow as tio
        >>> tio.Clamp(0, 1)(torch.tensor([[[[-1.0]], [[0.5]], [[2.0]]]])).flatten().tolist()
        [0.0, 0.5, 1.0]
    """

    patchwise = True

    def __init__(
        self, out_min: float | None = None, out_max: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if out_min is not None and out_max is not None and out_min > out_max:
            raise VoxelflowValueError(
                f"Clamp: out_min {out_min} > out_max {out_max}; pass out_min <= out_max"
            )
        self.out_min, self.out_max = out_min, out_max

    def output_dtype(self, image_type: str, dtype: torch.dtype) -> torch.dtype:
        return dtype

    def transform_image(
        self, name: str, image: Image, subject: Subject, params: dict[str, Any]
    ) -> Image:
        if self.out_min is None and self.out_max is None:
            return unchanged(image)
        function = partial(clamp, low=self.out_min, high=self.out_max)
        return map_lazily(
            image, function, dtype=image.dtype, key=("Clamp", self.out_min, self.out_max)
        )

    def __repr__(self) -> str:
        return f"Clamp({self.out_min}, {self.out_max}, p={self.p})"

"""``Blur``: Gaussian smoothing with standard deviations in millimetres."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch

from voxelflow._errors import VoxelflowValueError
from voxelflow.image import Image
from voxelflow.subject import Subject
from voxelflow.transforms.intensity.base import (
    IntensityTransform,
    describe,
    float_dtype,
    map_lazily,
    unchanged,
)
from voxelflow.transforms.lazy import Region
from voxelflow.transforms.parameters import ParameterValue, to_range


def gaussian_kernel(sigma: float) -> tuple[torch.Tensor, int]:
    """TorchIO 2.0's kernel for ``sigma`` voxels: radius ``max(ceil(3 sigma), 1)``,
    ``exp(-x²/2σ²)`` normalised to sum 1 (float64); ``(tensor([1.]), 0)`` for ``sigma <= 0``."""
    if sigma <= 0:
        return torch.ones(1, dtype=torch.float64), 0
    radius = max(math.ceil(3 * sigma), 1)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum(), radius


class Blur(IntensityTransform):
    """Blur intensity images with a Gaussian filter, separable along I, J, K.

    The standard deviations are in millimetres, converted to voxels with the
    image's spacing (TorchIO 2.0's kernel: radius ``ceil(3σ)`` voxels, the
    borders replicated, i.e. ``scipy.ndimage.gaussian_filter(..., mode="nearest",
    radius=ceil(3σ))``). Lazy with a halo of the kernel's radius: a patch is
    computed from its region plus the radius, with the volume's borders
    replicated as the whole-volume blur replicates them, by a fixed sum of
    shifted slices, so it equals the whole blurred volume's region exactly.

    Args:
        std: per-axis standard deviations in mm: a number (fixed), ``(a, b)``
            (each axis drawn uniformly), three numbers, six numbers (a range
            per axis), ``Choice`` or ``Distribution``; non-negative. The default
            0 is the identity.
        **kwargs: ``p``, ``seed``, ``include``, ``exclude``.

    Example:
        >>> import torch, voxelflow as tio
        >>> impulse = torch.zeros(1, 9, 1, 1); impulse[0, 4] = 1
        >>> out = tio.Blur(std=(1.0, 0.0, 0.0))(impulse)
        >>> round(out.sum().item(), 6), round(out[0, 4, 0, 0].item(), 4)
        (1.0, 0.3991)
    """

    patchwise = False  # needs the neighbours of the patch: computed lazily, not per patch

    def __init__(self, std: ParameterValue = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.std = to_range(std, "Blur std", nonnegative=True)

    def make_params(self, subject: Subject, generator: torch.Generator) -> dict[str, Any]:
        return {"std": list(self.std.sample(generator))}

    def transform_image(
        self, name: str, image: Image, subject: Subject, params: dict[str, Any]
    ) -> Image:
        std_mm = [float(s) for s in params["std"]]
        spacing = image.spacing
        if any(not s > 0 for s in spacing):
            raise VoxelflowValueError(
                f"Blur: {describe(name, image)} has spacing {spacing}, which must be positive "
                "to convert std from mm to voxels; fix the image's affine"
            )
        sigmas = tuple(s / d for s, d in zip(std_mm, spacing, strict=True))
        if not any(s > 0 for s in sigmas):
            return unchanged(image)
        radii = tuple(gaussian_kernel(s)[1] for s in sigmas)
        function = partial(gaussian_blur, sigmas=sigmas)
        return map_lazily(
            image,
            function,
            dtype=float_dtype(image.dtype),
            halo=radii,  # type: ignore[arg-type]
            border="edge",
            key=("Blur", sigmas),
        )

    def __repr__(self) -> str:
        return f"Blur(std={self.std!r}, p={self.p})"


def gaussian_blur(data: torch.Tensor, region: Region, *, sigmas: Sequence[float]) -> torch.Tensor:
    """The region blurred: ``data`` holds it plus each axis's radius on both sides.

    Each axis is a sum over the kernel's taps of a shifted slice times a weight,
    in a fixed order, so every output voxel goes through the same operations
    wherever it lies in the region (no extent-dependent rounding).
    """
    dtype = float_dtype(data.dtype)
    result = data.to(dtype)
    for axis, sigma in enumerate(sigmas):
        kernel, radius = gaussian_kernel(float(sigma))
        if radius == 0:
            continue
        dim = axis + 1
        length = result.shape[dim] - 2 * radius
        weights = kernel.to(dtype).tolist()
        out = result.narrow(dim, radius, length) * weights[radius]
        for offset in range(1, radius + 1):  # symmetric taps, nearest first
            pair = result.narrow(dim, radius - offset, length) + result.narrow(
                dim, radius + offset, length
            )
            out = out + pair * weights[radius + offset]
        result = out
    return result

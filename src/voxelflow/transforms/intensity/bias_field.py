"""``BiasField``: a smooth multiplicative field, the MRI receive-coil inhomogeneity.

Two models, both computed region by region from the voxel's place in the
*whole* volume, so a patch gets exactly its part of the whole field:

* **polynomial** (``coefficients=``, ``order=``: TorchIO 1.x's ``RandomBiasField``
  and the examples of TorchIO 2.0's docs): :math:`\\exp\\big(\\sum_{a+b+c \\le n}
  c_{abc}\\, x^a y^b z^c\\big)`, with coordinates in ``[-1, 1]`` across the whole
  volume along each axis (TorchIO's grid: ``x_i = (2i - (I-1)) / (I-1)``), the
  coefficients in TorchIO's order (``x`` outermost, ``z`` innermost);
* **smooth random** (``std=``, ``scale=``: TorchIO 2.0's default, after SynthSeg):
  a coarse grid of :math:`\\mathcal{N}(0, \\sigma^2)` values per channel
  (``max(round(size * scale), 4)`` points per axis, from the drawn seed),
  trilinearly interpolated to the volume (``align_corners=True``), exponentiated.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch

from voxelflow._errors import VoxelflowValueError
from voxelflow._random import make_generator, seed_from
from voxelflow.image import Image
from voxelflow.subject import Subject
from voxelflow.transforms.intensity.base import (
    IntensityTransform,
    Replay,
    float_dtype,
    map_lazily,
    unchanged,
)
from voxelflow.transforms.lazy import Region
from voxelflow.transforms.parameters import ParameterRange, ParameterValue, to_range
from voxelflow.transforms.transform import Transform


def num_coefficients(order: int) -> int:
    """Terms of a 3-D polynomial of total degree ``order``: ``(n+1)(n+2)(n+3)/6``."""
    return (order + 1) * (order + 2) * (order + 3) // 6


def exponents(order: int) -> list[tuple[int, int, int]]:
    """``(a, b, c)`` of each term, in TorchIO's order of coefficients."""
    return [
        (a, b, c)
        for a in range(order + 1)
        for b in range(order + 1 - a)
        for c in range(order + 1 - a - b)
    ]


class BiasField(IntensityTransform):
    """Multiply intensity images by a smooth bias field (lazy; invertible).

    Pass ``coefficients`` (with ``order``) for the polynomial field, or ``std``
    (with ``scale``) for the smooth random field; with neither, the smooth
    random field with ``std=0.5`` (TorchIO 2.0's default).

    Args:
        coefficients: the polynomial's coefficients: a number (every coefficient
            fixed to it), ``(a, b)`` (each drawn uniformly), a ``Choice`` or a
            ``Distribution`` (each drawn from it), or the list of all
            :func:`num_coefficients` values. (TorchIO 1.x's
            ``RandomBiasField(coefficients=0.5)`` meant ``(-0.5, 0.5)``.)
        order: the polynomial's total degree (default 3, 20 coefficients).
        std: standard deviation of the coarse random grid: a number, ``(a, b)``,
            a ``Choice`` or a ``Distribution``; non-negative.
        scale: coarse grid size over the volume's, in ``(0, 1]``.
        **kwargs: ``p``, ``seed``, ``include``, ``exclude``.

    Example:
        >>> import torch, voxelflow as tio
        >>> image = tio.ScalarImage(torch.ones(1, 5, 4, 3))
        >>> field = tio.BiasField(coefficients=[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ...                                     1.0, 0, 0, 0, 0, 0, 0, 0, 0, 0])(image)
        >>> [round(v, 4) for v in field.data[0, :, 0, 0].tolist()]  # exp(x), x from -1 to 1
        [0.3679, 0.6065, 1.0, 1.6487, 2.7183]
    """

    patchwise = False  # the field spans the whole volume: computed lazily, not per patch
    invertible = True

    def __init__(
        self,
        coefficients: ParameterValue | Sequence[float] | None = None,
        order: int = 3,
        *,
        std: ParameterValue | None = None,
        scale: float = 0.025,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if coefficients is not None and std is not None:
            raise VoxelflowValueError(
                "BiasField: pass coefficients= (a polynomial field) or std= (a smooth random "
                "field), not both"
            )
        if isinstance(order, bool) or not isinstance(order, int) or order < 0:
            raise VoxelflowValueError(
                f"BiasField order must be a non-negative int, got {order!r}; e.g. order=3"
            )
        scale = float(scale)
        if not 0.0 < scale <= 1.0:
            raise VoxelflowValueError(f"BiasField scale must be in (0, 1], got {scale}")
        self.order = order
        self.scale = scale
        self.polynomial = coefficients is not None
        self.fixed_coefficients: list[float] | None = None
        self.coefficients: ParameterRange | None = None
        self.std: ParameterRange | None = None
        if coefficients is not None:
            count = num_coefficients(order)
            if (
                isinstance(coefficients, Sequence)
                and not isinstance(coefficients, str)
                and len(coefficients) == count
                and count not in (2, 3, 6)
            ):
                self.fixed_coefficients = [float(c) for c in coefficients]
            elif isinstance(coefficients, Sequence) and len(coefficients) > 2:
                raise VoxelflowValueError(
                    f"BiasField: order {order} has {count} coefficients, got a list of "
                    f"{len(coefficients)}; pass {count} values, a number or a (low, high) range"
                )
            else:
                self.coefficients = to_range(coefficients, "BiasField coefficients")  # type: ignore[arg-type]
        else:
            self.std = to_range(0.5 if std is None else std, "BiasField std", nonnegative=True)

    def make_params(self, subject: Subject, generator: torch.Generator) -> dict[str, Any]:
        if self.polynomial:
            if self.fixed_coefficients is not None:
                values = list(self.fixed_coefficients)
            else:
                assert self.coefficients is not None
                values = [
                    self.coefficients.sample_1d(generator)
                    for _ in range(num_coefficients(self.order))
                ]
            return {"order": self.order, "coefficients": values, "sign": 1.0}
        assert self.std is not None
        return {
            "std": self.std.sample_1d(generator),
            "scale": self.scale,
            "seed": seed_from(generator),
            "sign": 1.0,
        }

    def transform_image(
        self, name: str, image: Image, subject: Subject, params: dict[str, Any]
    ) -> Image:
        sign = float(params.get("sign", 1.0))
        dtype = float_dtype(image.dtype)
        if "coefficients" in params:
            coefficients = tuple(float(c) for c in params["coefficients"])
            order = int(params["order"])
            if len(coefficients) != num_coefficients(order):
                raise VoxelflowValueError(
                    f"BiasField: {len(coefficients)} coefficients for order {order}; "
                    f"expected {num_coefficients(order)}"
                )
            if not any(coefficients):
                return unchanged(image)
            function = partial(polynomial_bias, order=order, coefficients=coefficients, sign=sign)
            key: tuple[Any, ...] = ("BiasField", order, coefficients, sign)
        else:
            std, seed, scale = float(params["std"]), int(params["seed"]), float(params["scale"])
            if std == 0:
                return unchanged(image)
            coarse = coarse_field(seed, std, scale, image.shape)
            function = partial(smooth_bias, coarse=coarse, sign=sign)
            key = ("BiasField", std, seed, scale, sign)
        return map_lazily(image, function, dtype=dtype, key=key)

    def inverse(self, params: dict[str, Any]) -> Transform:
        """The division by the same field (the field with the opposite sign)."""
        return Replay(self, dict(params, sign=-float(params.get("sign", 1.0))))

    def __repr__(self) -> str:
        if self.polynomial:
            coefficients = self.fixed_coefficients or self.coefficients
            return f"BiasField(coefficients={coefficients!r}, order={self.order}, p={self.p})"
        return f"BiasField(std={self.std!r}, scale={self.scale}, p={self.p})"


def axis_coordinates(
    start: int, stop: int, size: int, device: torch.device | None = None
) -> torch.Tensor:
    """TorchIO's normalised coordinates of voxels ``start:stop`` of an axis of ``size``
    (``-1`` to ``1`` across the axis; 0 for an axis of one voxel), float64."""
    index = torch.arange(start, stop, dtype=torch.float64, device=device)
    if size == 1:
        return torch.zeros_like(index)
    half = (size - 1) / 2
    return (index - half) / half


def polynomial_bias(
    data: torch.Tensor,
    region: Region,
    *,
    order: int,
    coefficients: tuple[float, ...],
    sign: float,
) -> torch.Tensor:
    """``data`` times ``exp(sign * polynomial)`` over the region (the per-axis sums in
    float64, the volume in the output's float dtype)."""
    device, dtype = data.device, float_dtype(data.dtype)
    x, y, z = (
        axis_coordinates(a, b, n, device)
        for a, b, n in zip(region.start, region.stop, region.volume_shape, strict=True)
    )
    terms = dict(zip(exponents(order), coefficients, strict=True))
    field = torch.zeros(region.shape, dtype=dtype, device=device)
    for a in range(order + 1):  # sum over c, then b, then a: each voxel's terms in a fixed order
        plane = torch.zeros(region.shape[1:], dtype=torch.float64, device=device)
        for b in range(order + 1 - a):
            line = torch.zeros(region.shape[2], dtype=torch.float64, device=device)
            for c in range(order + 1 - a - b):
                line = line + terms[(a, b, c)] * z**c
            plane = plane + (y**b)[:, None] * line[None, :]
        field = field + (x**a).to(dtype)[:, None, None] * (plane * sign).to(dtype)[None]
    return data.to(dtype) * torch.exp(field)[None]


def coarse_field(seed: int, std: float, scale: float, shape: Sequence[int]) -> torch.Tensor:
    """The coarse ``(C, m_I, m_J, m_K)`` grid of the smooth field, drawn from ``seed`` (CPU)."""
    channels, *spatial = (int(n) for n in shape)
    small = [max(round(n * scale), 4) for n in spatial]
    generator = make_generator(seed)
    return torch.randn((channels, *small), generator=generator, dtype=torch.float64) * std


def _interpolation(start: int, stop: int, size: int, coarse: int) -> tuple[torch.Tensor, ...]:
    """Trilinear (``align_corners=True``) neighbours and weights for output voxels start:stop."""
    index = torch.arange(start, stop, dtype=torch.float64)
    position = index * ((coarse - 1) / (size - 1)) if size > 1 else torch.zeros_like(index)
    low = position.floor().to(torch.int64).clamp_(0, coarse - 1)
    high = (low + 1).clamp_(max=coarse - 1)
    weight = position - low.to(torch.float64)
    return low, high, weight


def smooth_bias(
    data: torch.Tensor, region: Region, *, coarse: torch.Tensor, sign: float
) -> torch.Tensor:
    """``data`` times ``exp(sign * interpolated coarse field)`` over the region."""
    field = (coarse * sign).to(data.device)
    for axis in range(3):  # separable: each output voxel is computed from its own indices
        low, high, weight = _interpolation(
            region.start[axis], region.stop[axis], region.volume_shape[axis], coarse.shape[axis + 1]
        )
        view = [1, 1, 1, 1]
        view[axis + 1] = -1
        low, high = low.to(data.device), high.to(data.device)
        w = weight.to(data.device).view(view)
        if axis == 2:  # the last, full-size step in the output's dtype
            field, w = field.to(float_dtype(data.dtype)), w.to(float_dtype(data.dtype))
        field = field.index_select(axis + 1, low) * (1 - w) + field.index_select(axis + 1, high) * w
    return data.to(field.dtype) * torch.exp(field)

"""Linear intensity normalisation: ``Normalize``/``RescaleIntensity``, ``Standardize``/``ZNormalization``.

Statistics of the whole volume (percentiles, mean and standard deviation) are
computed once per image in bounded-memory streaming passes
(:mod:`voxelflow.transforms.statistics`: exact percentiles, equal to NumPy's),
cached by the file's identity, and recorded in the history; the linear map is
then applied lazily, region by region. With the input range (or mean and std)
given, nothing is read and the transform is patchwise.

``Normalize`` and ``Standardize`` have TorchIO 2.0's parameters;
``RescaleIntensity`` and ``ZNormalization`` keep TorchIO 1.x's.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch

from voxelflow._errors import VoxelflowValueError
from voxelflow.image import Image
from voxelflow.subject import Subject
from voxelflow.transforms.compose import Compose
from voxelflow.transforms.intensity.base import IntensityTransform, float_dtype, map_lazily
from voxelflow.transforms.intensity.masking import (
    MaskingMethod,
    check_masking_method,
    selection,
)
from voxelflow.transforms.lazy import Region
from voxelflow.transforms.parameters import ParameterValue, to_range
from voxelflow.transforms.statistics import moments, quantiles
from voxelflow.transforms.transform import Transform


def linear_map(
    data: torch.Tensor,
    region: Region,
    *,
    clip: tuple[float, float] | None,
    in_range: tuple[float, float],
    out_range: tuple[float, float],
) -> torch.Tensor:
    """``clip``, then map ``in_range`` linearly onto ``out_range`` (in the output's dtype);
    an empty input range maps every voxel to the lower output bound."""
    dtype = float_dtype(data.dtype)
    (in_low, in_high), (out_low, out_high) = in_range, out_range
    if in_high == in_low:
        return torch.full(data.shape, out_low, dtype=dtype, device=data.device)
    x = data.to(dtype)
    if clip is not None:
        x = x.clamp(clip[0], clip[1])
    return (x - in_low) * ((out_high - out_low) / (in_high - in_low)) + out_low


def standardize(data: torch.Tensor, region: Region, *, mean: float, std: float) -> torch.Tensor:
    """``(x - mean) / std`` (in the output's dtype)."""
    return (data.to(float_dtype(data.dtype)) - mean) / std


def _rescale_inverse(params: dict[str, Any], names: Sequence[str]) -> Transform:
    """Per image, the linear map from the output range back to the input range."""
    steps: list[Transform] = []
    for name in names:
        in_low, in_high = params["in_ranges"][name]
        out_low, out_high = params["out_ranges"][name]
        steps.append(
            RescaleIntensity(
                out_min_max=(in_low, in_high), in_min_max=(out_low, out_high), include=[name]
            )
        )
    return Compose(steps)


class Normalize(IntensityTransform):
    """Clip intensities to ``[in_min, in_max]`` and map that range linearly onto
    ``[out_min, out_max]`` (TorchIO 2.0's ``Normalize``).

    Without ``in_min``/``in_max``, the input range is the image's
    ``percentile_low`` and ``percentile_high`` percentiles (of the voxels in the
    mask): exact, as ``numpy.percentile`` gives them, computed in streaming
    passes over the whole image (see :mod:`voxelflow.transforms.statistics`).
    A constant image maps to ``out_min``. Lazy; invertible (up to the clipping).

    Args:
        out_min, out_max: the output range; each a number, ``(a, b)``, a
            ``Choice`` or a ``Distribution``.
        in_min, in_max: the input range (default: from the percentiles).
        percentile_low, percentile_high: percentiles in ``[0, 100]`` giving the
            input range (default 0 and 100: the minimum and maximum; nnU-Net uses
            0.5 and 99.5).
        masking_method: voxels the percentiles are computed on (see
            :mod:`~voxelflow.transforms.intensity.masking`).
        **kwargs: ``p``, ``seed``, ``include``, ``exclude``.

    Example:
        >>> import torch, voxelflow as tio
        >>> out = tio.Normalize()(torch.arange(5.0).reshape(1, 5, 1, 1))
        >>> out.flatten().tolist()
        [-1.0, -0.5, 0.0, 0.5, 1.0]
    """

    invertible = True

    def __init__(
        self,
        *,
        out_min: ParameterValue = -1.0,
        out_max: ParameterValue = 1.0,
        in_min: ParameterValue | None = None,
        in_max: ParameterValue | None = None,
        percentile_low: ParameterValue = 0.0,
        percentile_high: ParameterValue = 100.0,
        masking_method: MaskingMethod = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.out_min = to_range(out_min, "Normalize out_min")
        self.out_max = to_range(out_max, "Normalize out_max")
        self.in_min = None if in_min is None else to_range(in_min, "Normalize in_min")
        self.in_max = None if in_max is None else to_range(in_max, "Normalize in_max")
        bounds = (0.0, 100.0)
        self.percentile_low = to_range(percentile_low, "Normalize percentile_low", bounds=bounds)
        self.percentile_high = to_range(percentile_high, "Normalize percentile_high", bounds=bounds)
        self.masking_method = check_masking_method("Normalize", masking_method)

    @property
    def patchwise(self) -> bool:  # type: ignore[override]
        return self.in_min is not None and self.in_max is not None

    def make_params(self, subject: Subject, generator: torch.Generator) -> dict[str, Any]:
        params: dict[str, Any] = {
            "out_min": self.out_min.sample_1d(generator),
            "out_max": self.out_max.sample_1d(generator),
            "percentile_low": self.percentile_low.sample_1d(generator),
            "percentile_high": self.percentile_high.sample_1d(generator),
        }
        if params["percentile_low"] > params["percentile_high"]:
            raise VoxelflowValueError(
                f"Normalize: percentile_low {params['percentile_low']} is above percentile_high "
                f"{params['percentile_high']}; pass percentile_low <= percentile_high"
            )
        for side, parameter in (("in_min", self.in_min), ("in_max", self.in_max)):
            if parameter is not None:
                params[side] = parameter.sample_1d(generator)
        return params

    def prepare(self, subject: Subject, images: dict[str, Image], params: dict[str, Any]) -> None:
        in_ranges, out_ranges = {}, {}
        wanted = [params["percentile_low"] / 100, params["percentile_high"] / 100]
        for name, image in images.items():
            low, high = params.get("in_min"), params.get("in_max")
            if low is None or high is None:
                chosen = selection("Normalize", self.masking_method, subject, name, image)
                found = quantiles(chosen, wanted)
                low = found[0] if low is None else low
                high = found[1] if high is None else high
            in_ranges[name] = [float(low), float(high)]
            out_ranges[name] = [float(params["out_min"]), float(params["out_max"])]
        params["in_ranges"], params["out_ranges"] = in_ranges, out_ranges

    def transform_image(
        self, name: str, image: Image, subject: Subject, params: dict[str, Any]
    ) -> Image:
        in_range = tuple(params["in_ranges"][name])
        out_range = tuple(params["out_ranges"][name])
        function = partial(linear_map, clip=in_range, in_range=in_range, out_range=out_range)
        key = ("Normalize", in_range, out_range)
        return map_lazily(image, function, dtype=float_dtype(image.dtype), key=key)

    def inverse(self, params: dict[str, Any]) -> Transform:
        return _rescale_inverse(params, list(params["in_ranges"]))

    def __repr__(self) -> str:
        return f"Normalize(out_min={self.out_min!r}, out_max={self.out_max!r}, p={self.p})"


def _one_x_range(
    value: float | Sequence[float], name: str, low: float | None
) -> tuple[float, float]:
    """TorchIO 1.x's ``_parse_range``: ``d`` means ``(-d, d)`` (or ``(low, d)``)."""
    if isinstance(value, int | float):
        if value < 0:
            raise VoxelflowValueError(
                f"RescaleIntensity: a single {name} must be >= 0, got {value}"
            )
        return (-float(value) if low is None else low, float(value))
    values = tuple(float(v) for v in value)
    if len(values) != 2 or values[0] > values[1]:
        raise VoxelflowValueError(
            f"RescaleIntensity: {name} must be a number or (low, high) with low <= high, got "
            f"{value!r}"
        )
    return values  # type: ignore[return-value]


class RescaleIntensity(IntensityTransform):
    """TorchIO 1.x's rescaling: clip to the image's ``percentiles``, then map the
    range (``in_min_max``, or the clipped image's) onto ``out_min_max``.

    Percentiles are exact (``numpy.percentile``), computed in streaming passes
    over the whole image (and the mask). With ``in_min_max`` given and the
    default percentiles nothing is read and the transform is patchwise. A
    constant image maps to the lower output bound. Lazy; invertible.

    Args:
        out_min_max: output range; a number ``d`` means ``(-d, d)``.
        percentiles: percentiles of the input mapped to the output range; a
            number ``d`` means ``(0, d)``.
        masking_method: voxels the percentiles are computed on.
        in_min_max: input range mapped to ``out_min_max`` (default: the clipped
            image's minimum and maximum).
        **kwargs: ``p``, ``seed``, ``include``, ``exclude``.

    Example:
        >>> import torch, voxelflow as tio
        >>> tio.RescaleIntensity((0, 1))(torch.tensor([[[[2.0]], [[4.0]], [[6.0]]]])).flatten().tolist()
        [0.0, 0.5, 1.0]
    """

    invertible = True

    def __init__(
        self,
        out_min_max: float | Sequence[float] = (0.0, 1.0),
        percentiles: float | Sequence[float] = (0.0, 100.0),
        masking_method: MaskingMethod = None,
        in_min_max: float | Sequence[float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.out_min_max = _one_x_range(out_min_max, "out_min_max", None)
        low, high = _one_x_range(percentiles, "percentiles", 0.0)
        if not 0.0 <= low <= high <= 100.0:
            raise VoxelflowValueError(
                f"RescaleIntensity: percentiles must lie in [0, 100], got {percentiles!r}"
            )
        self.percentiles = (low, high)
        self.in_min_max = (
            None if in_min_max is None else _one_x_range(in_min_max, "in_min_max", None)
        )
        self.masking_method = check_masking_method("RescaleIntensity", masking_method)

    @property
    def patchwise(self) -> bool:  # type: ignore[override]
        return self.in_min_max is not None and self.percentiles == (0.0, 100.0)

    def make_params(self, subject: Subject, generator: torch.Generator) -> dict[str, Any]:
        return {"percentiles": list(self.percentiles)}

    def prepare(self, subject: Subject, images: dict[str, Image], params: dict[str, Any]) -> None:
        clips: dict[str, list[float] | None] = {}
        in_ranges, out_ranges = {}, {}
        for name, image in images.items():
            clip = None
            if not self.patchwise:
                chosen = selection("RescaleIntensity", self.masking_method, subject, name, image)
                clip = quantiles(chosen, [p / 100 for p in self.percentiles])
            in_range = self.in_min_max if self.in_min_max is not None else clip
            assert in_range is not None
            clips[name] = None if clip is None else [float(v) for v in clip]
            in_ranges[name] = [float(v) for v in in_range]
            out_ranges[name] = list(self.out_min_max)
        params["clips"], params["in_ranges"], params["out_ranges"] = clips, in_ranges, out_ranges

    def transform_image(
        self, name: str, image: Image, subject: Subject, params: dict[str, Any]
    ) -> Image:
        clip = params["clips"][name]
        clip = None if clip is None else tuple(clip)
        in_range = tuple(params["in_ranges"][name])
        out_range = tuple(params["out_ranges"][name])
        function = partial(linear_map, clip=clip, in_range=in_range, out_range=out_range)
        key = ("RescaleIntensity", clip, in_range, out_range)
        return map_lazily(image, function, dtype=float_dtype(image.dtype), key=key)

    def inverse(self, params: dict[str, Any]) -> Transform:
        return _rescale_inverse(params, list(params["in_ranges"]))

    def __repr__(self) -> str:
        return f"RescaleIntensity(out_min_max={self.out_min_max}, p={self.p})"


class Standardize(IntensityTransform):
    """Subtract the mean and divide by the standard deviation (z-score), TorchIO 2.0's
    ``Standardize``.

    The statistics are the image's (of the voxels in the mask; the standard
    deviation with Bessel's correction, as TorchIO), computed in one streaming
    pass over the whole image and cached, or given (``mean`` and ``std``: then
    nothing is read and the transform is patchwise). Lazy; invertible.

    Args:
        masking_method: voxels the statistics are computed on: ``None`` (all),
            the name of a label map in the subject (its non-zero voxels), or a
            function of the tensor returning a boolean mask.
        mean, std: precomputed statistics (voxelflow's addition; both or neither).
        **kwargs: ``p``, ``seed``, ``include``, ``exclude``.

    Example:
        >>> import torch, voxelflow as tio
        >>> out = tio.Standardize()(torch.tensor([[[[1.0]], [[3.0]]]]))
        >>> [round(v, 4) for v in out.flatten().tolist()]
        [-0.7071, 0.7071]
    """

    invertible = True

    def __init__(
        self,
        masking_method: MaskingMethod = None,
        mean: float | None = None,
        std: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        owner = type(self).__name__
        if (mean is None) != (std is None):
            raise VoxelflowValueError(f"{owner}: pass both mean= and std=, or neither")
        if std is not None and not float(std) > 0:
            raise VoxelflowValueError(f"{owner}: std must be positive, got {std}")
        self.masking_method = check_masking_method(owner, masking_method)
        self.mean = None if mean is None else float(mean)
        self.std = None if std is None else float(std)

    @property
    def patchwise(self) -> bool:  # type: ignore[override]
        return self.mean is not None

    def prepare(self, subject: Subject, images: dict[str, Image], params: dict[str, Any]) -> None:
        owner = type(self).__name__
        stats: dict[str, list[float]] = {}
        for name, image in images.items():
            if self.mean is not None and self.std is not None:
                stats[name] = [self.mean, self.std]
                continue
            chosen = selection(owner, self.masking_method, subject, name, image)
            found = moments(chosen)
            if not found.std > 0:
                raise VoxelflowValueError(
                    f"{chosen.label}: {owner} over a constant region (std 0) is undefined; check "
                    "the mask, or pass mean= and std="
                )
            stats[name] = [found.mean, found.std]
        params["stats"] = stats

    def transform_image(
        self, name: str, image: Image, subject: Subject, params: dict[str, Any]
    ) -> Image:
        mean, std = (float(v) for v in params["stats"][name])
        function = partial(standardize, mean=mean, std=std)
        return map_lazily(
            image, function, dtype=float_dtype(image.dtype), key=(type(self).__name__, mean, std)
        )

    def inverse(self, params: dict[str, Any]) -> Transform:
        steps: list[Transform] = [
            RescaleIntensity(out_min_max=(mean, mean + std), in_min_max=(0.0, 1.0), include=[name])
            for name, (mean, std) in params["stats"].items()
        ]
        return Compose(steps)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(masking_method={self.masking_method!r}, p={self.p})"


class ZNormalization(Standardize):
    """TorchIO 1.x's name of :class:`Standardize` (same parameters).

    Example:
        >>> import torch, voxelflow as tio
        >>> out = tio.ZNormalization(mean=2, std=1)(torch.tensor([[[[1.0]], [[3.0]]]]))
        >>> out.flatten().tolist()
        [-1.0, 1.0]
    """

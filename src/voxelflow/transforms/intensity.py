"""Intensity transforms: ``Noise``, ``RescaleIntensity``, ``ZNormalization``, ``Clamp``.

They change intensity images only; label maps pass through untouched (never
noised, never rescaled). Integer intensities become float32.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from voxelflow._errors import VoxelflowKeyError, VoxelflowTypeError, VoxelflowValueError
from voxelflow._random import derive_seed, make_generator, seed_from
from voxelflow.image import INTENSITY, Image
from voxelflow.subject import Subject
from voxelflow.transforms.transform import Transform, image_tensor, parse_range, uniform


def as_float(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` unchanged if floating, else as float32."""
    return tensor if tensor.is_floating_point() else tensor.float()


class IntensityTransform(Transform):
    """Base of intensity transforms: maps each intensity image's tensor."""

    def output_dtype(self, image_type: str, dtype: torch.dtype) -> torch.dtype:
        if image_type != INTENSITY or dtype.is_floating_point:
            return dtype
        return torch.float32

    def apply_transform(self, subject: Subject, params: dict[str, Any]) -> Subject:
        new = {}
        for name, image in self.images_to_transform(subject, (INTENSITY,)).items():
            new[name] = image.new_like(self.map(image, subject, params, name))
        return self.replace(subject, new)

    def map(
        self, image: Image, subject: Subject, params: dict[str, Any], name: str = "image"
    ) -> torch.Tensor:
        """The new tensor of the intensity image ``name``, given the drawn ``params``."""
        raise NotImplementedError


class Noise(IntensityTransform):
    """Add Gaussian noise: ``mean`` and ``std`` are numbers or ``(low, high)``
    ranges drawn uniformly at each call. Patchwise (noise is voxel by voxel).

    Example:
        >>> import torch, voxelflow as tio
        >>> noisy = tio.Noise(std=0.5, seed=0)(torch.zeros(1, 20, 20, 20))
        >>> round(noisy.std().item(), 1)
        0.5
    """

    def __init__(
        self,
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 0.1,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.mean = parse_range(mean, "Noise mean")
        self.std = parse_range(std, "Noise std", nonnegative=True)

    def make_params(self, subject: Subject, generator: torch.Generator) -> dict[str, Any]:
        return {
            "mean": uniform(generator, *self.mean),
            "std": uniform(generator, *self.std),
            "seed": seed_from(generator),
        }

    def map(
        self, image: Image, subject: Subject, params: dict[str, Any], name: str = "image"
    ) -> torch.Tensor:
        data = as_float(image_tensor(image))
        mean, std = params["mean"], params["std"]
        # one noise seed per call, mixed with the image's name: two images get different noise
        seed = derive_seed(params["seed"], zlib.crc32(name.encode()))
        local = make_generator(seed, data.device if data.device.type != "cpu" else None)
        noise = torch.randn(data.shape, generator=local, dtype=data.dtype, device=data.device)
        out = torch.add(data, noise, alpha=std)  # one pass: data + std * noise
        return out.add_(mean) if mean else out

    def __repr__(self) -> str:
        return f"Noise(mean={self.mean}, std={self.std}, p={self.p})"


class RescaleIntensity(IntensityTransform):
    """Map intensities linearly from ``in_min_max`` (default: the image's
    ``percentiles``) to ``out_min_max``. Values outside are not clipped.

    Patchwise only with ``in_min_max`` given (otherwise it needs the volume's
    statistics).

    Example:
        >>> import torch, voxelflow as tio
        >>> tio.RescaleIntensity((0, 1))(torch.tensor([[[[2.0]], [[4.0]], [[6.0]]]])).flatten().tolist()
        [0.0, 0.5, 1.0]
    """

    def __init__(
        self,
        out_min_max: Sequence[float] = (0.0, 1.0),
        percentiles: Sequence[float] = (0.0, 100.0),
        in_min_max: Sequence[float] | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.out_min_max = parse_range(out_min_max, "out_min_max")
        low, high = parse_range(percentiles, "percentiles", nonnegative=True)
        if high > 100:
            raise VoxelflowValueError(f"percentiles must lie in [0, 100], got {percentiles!r}")
        self.percentiles = (low, high)
        self.in_min_max = None if in_min_max is None else parse_range(in_min_max, "in_min_max")

    @property
    def patchwise(self) -> bool:  # type: ignore[override]
        return self.in_min_max is not None

    def map(
        self, image: Image, subject: Subject, params: dict[str, Any], name: str = "image"
    ) -> torch.Tensor:
        data = as_float(image_tensor(image))
        if self.in_min_max is not None:
            low, high = self.in_min_max
        elif self.percentiles == (0.0, 100.0):
            low, high = float(data.min()), float(data.max())
        else:
            values = data.detach().cpu().numpy().ravel()
            low, high = (float(v) for v in np.percentile(values, self.percentiles))
        out_low, out_high = self.out_min_max
        if high == low:  # a constant image: every voxel to the lower bound
            return torch.full_like(data, out_low)
        scale = (out_high - out_low) / (high - low)
        return (data - low) * scale + out_low

    def __repr__(self) -> str:
        return f"RescaleIntensity(out_min_max={self.out_min_max}, p={self.p})"


Masking = str | Callable[[torch.Tensor], torch.Tensor] | None


class ZNormalization(IntensityTransform):
    """Subtract the mean and divide by the standard deviation.

    Args:
        masking_method: where to compute the statistics: ``None`` (every
            voxel), the name of an image in the subject (voxels where it is
            positive, e.g. a brain mask), or ``function(tensor) -> bool mask``.
        mean, std: precomputed statistics; with both the transform is patchwise.

    Example:
        >>> import torch, voxelflow as tio
        >>> out = tio.ZNormalization()(torch.tensor([[[[1.0]], [[3.0]]]]))
        >>> [round(v, 3) for v in out.flatten().tolist()]
        [-1.0, 1.0]
    """

    def __init__(
        self,
        masking_method: Masking = None,
        mean: float | None = None,
        std: float | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if (mean is None) != (std is None):
            raise VoxelflowValueError("ZNormalization: pass both mean= and std=, or neither")
        if std is not None and not float(std) > 0:
            raise VoxelflowValueError(f"ZNormalization: std must be positive, got {std}")
        if masking_method is not None and not (
            isinstance(masking_method, str) or callable(masking_method)
        ):
            raise VoxelflowTypeError(
                "ZNormalization: masking_method must be None, an image name or a function"
            )
        self.masking_method = masking_method
        self.mean = None if mean is None else float(mean)
        self.std = None if std is None else float(std)

    @property
    def patchwise(self) -> bool:  # type: ignore[override]
        return self.mean is not None

    def _mask(self, data: torch.Tensor, subject: Subject, name: str) -> torch.Tensor:
        method = self.masking_method
        if method is None:
            return torch.ones_like(data, dtype=torch.bool)
        if isinstance(method, str):
            if method not in subject or not isinstance(subject[method], Image):
                raise VoxelflowKeyError(
                    f"ZNormalization: masking image {method!r} not in the subject (images: "
                    f"{', '.join(subject.images)}); a bare image or tensor has no mask"
                )
            mask = image_tensor(subject[method]).to(data.device) > 0
            mask = mask.any(dim=0, keepdim=True)
        else:
            mask = torch.as_tensor(method(data)).to(device=data.device, dtype=torch.bool)
        return mask.expand_as(data)

    def map(
        self, image: Image, subject: Subject, params: dict[str, Any], name: str = "image"
    ) -> torch.Tensor:
        data = as_float(image_tensor(image))
        label = str(image.path or "image")
        if self.mean is not None and self.std is not None:
            mean, std = self.mean, self.std
        else:
            values = data[self._mask(data, subject, label)].double()
            if values.numel() == 0:
                raise VoxelflowValueError(f"{label}: ZNormalization mask selects no voxel")
            mean, std = float(values.mean()), float(values.std(correction=0))
            if not std > 0:
                raise VoxelflowValueError(
                    f"{label}: ZNormalization over a constant region (std 0); check the mask"
                )
        return (data - mean) / std

    def __repr__(self) -> str:
        return f"ZNormalization(masking_method={self.masking_method!r}, p={self.p})"


class Clamp(IntensityTransform):
    """Limit intensities to ``[out_min, out_max]`` (either may be ``None``). Patchwise.

    Example:
        >>> import torch, voxelflow as tio
        >>> tio.Clamp(0, 1)(torch.tensor([[[[-1.0]], [[0.5]], [[2.0]]]])).flatten().tolist()
        [0.0, 0.5, 1.0]
    """

    def __init__(
        self, out_min: float | None = None, out_max: float | None = None, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if out_min is not None and out_max is not None and out_min > out_max:
            raise VoxelflowValueError(f"Clamp: out_min {out_min} > out_max {out_max}")
        self.out_min, self.out_max = out_min, out_max

    def output_dtype(self, image_type: str, dtype: torch.dtype) -> torch.dtype:
        return dtype

    def map(
        self, image: Image, subject: Subject, params: dict[str, Any], name: str = "image"
    ) -> torch.Tensor:
        return image_tensor(image).clamp(self.out_min, self.out_max)

    def __repr__(self) -> str:
        return f"Clamp({self.out_min}, {self.out_max}, p={self.p})"

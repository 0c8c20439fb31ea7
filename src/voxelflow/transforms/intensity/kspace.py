"""MRI artefacts made in k-space: ``Motion``, ``Ghosting``, ``Spike``.

Each takes the 3-D Fourier transform of the whole volume (``torch.fft``),
changes it, and transforms back, so these are **whole-volume** transforms
(``lazy = False``): they read the whole image and return it in memory. In a
``Queue`` they run on each subject before patches are cut. The input's dtype
is kept for floating images; integer intensities become float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from voxelflow._errors import VoxelflowValueError
from voxelflow.image import Image
from voxelflow.subject import Subject
from voxelflow.transforms.intensity.base import (
    IntensityTransform,
    check_axes,
    describe,
    float_dtype,
)
from voxelflow.transforms.parameters import ParameterValue, symmetric_range, to_range
from voxelflow.transforms.transform import image_tensor

SPATIAL = (-3, -2, -1)


def centered_spectrum(data: torch.Tensor) -> torch.Tensor:
    """``fftshift(fftn(data))`` over the three spatial axes (zero frequency in the middle)."""
    return torch.fft.fftshift(torch.fft.fftn(data, dim=SPATIAL), dim=SPATIAL)


def from_centered_spectrum(spectrum: torch.Tensor) -> torch.Tensor:
    """The real part of the inverse of :func:`centered_spectrum`."""
    return torch.fft.ifftn(torch.fft.ifftshift(spectrum, dim=SPATIAL), dim=SPATIAL).real


def _as_float(image: Image) -> torch.Tensor:
    data = image_tensor(image)
    dtype = float_dtype(data.dtype)
    return data.to(dtype if dtype != torch.float16 else torch.float32)


class _KSpaceTransform(IntensityTransform):
    lazy = False
    patchwise = False

    def transform_image(
        self, name: str, image: Image, subject: Subject, params: dict[str, Any]
    ) -> Image:
        data = _as_float(image)
        out = self.corrupt(data, params, describe(name, image))
        return image.new_like(out.to(float_dtype(image.dtype)))

    def corrupt(self, data: torch.Tensor, params: dict[str, Any], what: str) -> torch.Tensor:
        raise NotImplementedError


class Spike(_KSpaceTransform):
    """Add spikes to k-space: stripes across the image (herringbone artefact).

    Each spike adds ``intensity`` times the spectrum's peak magnitude (per
    channel) at a random point of the centred spectrum. Whole-volume (FFT).

    Args:
        num_spikes: number of spikes: a number or ``(a, b)`` (rounded, at least 1).
        intensity: spike amplitude over the spectrum's peak: a number, ``(a, b)``,
            ``Choice`` or ``Distribution``. The default 0 is the identity.
        **kwargs: ``p``, ``seed``, ``include``, ``exclude``.

    Example:
        >>> import torch, voxelflow as tio
        >>> out = tio.Spike(intensity=0.5, seed=0)(torch.ones(1, 8, 8, 8))
        >>> out.std().item() > 0
        True
    """

    def __init__(
        self, num_spikes: ParameterValue = 1, intensity: ParameterValue = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.num_spikes = to_range(num_spikes, "Spike num_spikes", nonnegative=True)
        self.intensity = to_range(intensity, "Spike intensity")

    def make_params(self, subject: Subject, generator: torch.Generator) -> dict[str, Any]:
        count = max(1, round(self.num_spikes.sample_1d(generator)))
        positions = torch.rand((count, 3), generator=generator, dtype=torch.float64)
        return {"positions": positions.tolist(), "intensity": self.intensity.sample_1d(generator)}

    def corrupt(self, data: torch.Tensor, params: dict[str, Any], what: str) -> torch.Tensor:
        intensity = float(params["intensity"])
        if intensity == 0 or not params["positions"]:
            return data
        spectrum = centered_spectrum(data)
        peak = spectrum.abs().amax(dim=SPATIAL)  # per channel
        for index in spike_indices(params["positions"], data.shape[1:]):
            spectrum[(slice(None), *index)] += peak * intensity
        return from_centered_spectrum(spectrum)

    def __repr__(self) -> str:
        return f"Spike(num_spikes={self.num_spikes!r}, intensity={self.intensity!r}, p={self.p})"


def spike_indices(
    positions: Sequence[Sequence[float]], shape: Sequence[int]
) -> list[tuple[int, int, int]]:
    """Where spikes at relative ``positions`` (in ``[0, 1)``) fall in a centred spectrum."""
    return [
        tuple(int(p * s) % s for p, s in zip(position, shape, strict=True))  # type: ignore[misc]
        for position in positions
    ]


class Ghosting(_KSpaceTransform):
    """Attenuate evenly spaced planes of k-space along one axis: faint copies of the
    anatomy ("ghosts") repeat along it, as periodic motion (breathing, pulsation)
    makes them. Whole-volume (FFT).

    Planes ``0, step, 2 step, ...`` of the centred spectrum (``step = size //
    num_ghosts``) are multiplied by ``1 - intensity``; the central plane (zero
    frequency along the axis: the image's mean along it) is restored, or the
    central ``restore`` fraction of planes. The ghosts are then copies shifted
    by multiples of ``size / step`` voxels.

    Args:
        num_ghosts: number of ghosts: a number or ``(a, b)`` (rounded, at least 1).
        axes: axes among which one is chosen at each call.
        intensity: artefact strength in ``[0, 1]``: number, ``(a, b)``, ``Choice`` or
            ``Distribution``. The default 0 is the identity.
        restore: fraction of central planes kept intact (``None``: the central one).
        **kwargs: ``p``, ``seed``, ``include``, ``exclude``.

    Example:
        >>> import torch, voxelflow as tio
        >>> image = torch.zeros(1, 16, 1, 1); image[0, 6:10] = 1
        >>> out = tio.Ghosting(num_ghosts=2, axes=(0,), intensity=1.0)(image)
        >>> round(out.mean().item(), 6) == round(image.mean().item(), 6)  # the mean is kept
        True
    """

    def __init__(
        self,
        num_ghosts: ParameterValue = 4,
        axes: int | Sequence[int] = (0, 1, 2),
        intensity: ParameterValue = 0.0,
        restore: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_ghosts = to_range(num_ghosts, "Ghosting num_ghosts", nonnegative=True)
        self.axes = check_axes("Ghosting", axes)
        self.intensity = to_range(intensity, "Ghosting intensity", bounds=(0.0, 1.0))
        if restore is not None and not 0.0 <= float(restore) <= 1.0:
            raise VoxelflowValueError(f"Ghosting restore must be in [0, 1], got {restore}")
        self.restore = None if restore is None else float(restore)

    def make_params(self, subject: Subject, generator: torch.Generator) -> dict[str, Any]:
        count = max(1, round(self.num_ghosts.sample_1d(generator)))
        choice = int(torch.randint(len(self.axes), (), generator=generator))
        return {
            "num_ghosts": count,
            "axis": self.axes[choice],
            "intensity": self.intensity.sample_1d(generator),
            "restore": self.restore,
        }

    def corrupt(self, data: torch.Tensor, params: dict[str, Any], what: str) -> torch.Tensor:
        intensity = float(params["intensity"])
        if intensity == 0:
            return data
        axis, count, restore = int(params["axis"]), int(params["num_ghosts"]), params["restore"]
        size = data.shape[axis + 1]
        spectrum = centered_spectrum(data)
        planes = torch.ones(size, dtype=data.dtype)
        planes[:: max(size // count, 1)] = 1 - intensity
        middle = size // 2
        if restore is None or float(restore) == 0:
            planes[middle] = 1
        else:
            half = max(int(size * float(restore) / 2), 1)
            planes[max(0, middle - half) : middle + half] = 1
        view = [1, 1, 1, 1]
        view[axis + 1] = size
        return from_centered_spectrum(spectrum * planes.view(view).to(spectrum.device))

    def __repr__(self) -> str:
        return f"Ghosting(num_ghosts={self.num_ghosts!r}, axes={self.axes}, p={self.p})"


class Motion(_KSpaceTransform):
    """Simulate motion during the acquisition (Shaw et al., 2019): k-space is split
    into ``num_transforms + 1`` segments along the first axis; segment 0 comes
    from the image, segment ``n`` from the image moved by the ``n``-th random
    rigid transform; the inverse FFT gives ringing and blurring. Whole-volume
    (FFT and resampling).

    Rotations (degrees, about the volume's centre, ``Rz Ry Rx`` over axes I, J, K)
    and translations (voxels) are drawn for each segment. As TorchIO documents
    for this transform, a number ``d`` means ``(-d, d)``. Without motion the
    image comes back unchanged.

    Args:
        degrees: rotation range: ``d`` (``(-d, d)``), ``(a, b)``, six numbers,
            ``Choice`` or ``Distribution``.
        translation: translation range in voxels, in the same forms.
        num_transforms: number of movements (positive int).
        **kwargs: ``p``, ``seed``, ``include``, ``exclude``.

    Example:
        >>> import torch, voxelflow as tio
        >>> image = torch.rand(1, 12, 10, 8)
        >>> torch.equal(tio.Motion(degrees=0, translation=0)(image), image)
        True
    """

    def __init__(
        self,
        degrees: ParameterValue = 10.0,
        translation: ParameterValue = 10.0,
        num_transforms: int = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.degrees = to_range(symmetric_range(degrees), "Motion degrees")
        self.translation = to_range(symmetric_range(translation), "Motion translation")
        if isinstance(num_transforms, bool) or not isinstance(num_transforms, int):
            raise VoxelflowValueError(
                f"Motion num_transforms must be a positive int, got {num_transforms!r}"
            )
        if num_transforms < 1:
            raise VoxelflowValueError(
                f"Motion num_transforms must be a positive int, got {num_transforms}"
            )
        self.num_transforms = num_transforms

    def make_params(self, subject: Subject, generator: torch.Generator) -> dict[str, Any]:
        return {
            "transforms": [
                {
                    "degrees": list(self.degrees.sample(generator)),
                    "translation": list(self.translation.sample(generator)),
                }
                for _ in range(self.num_transforms)
            ]
        }

    def corrupt(self, data: torch.Tensor, params: dict[str, Any], what: str) -> torch.Tensor:
        moves = params["transforms"]
        if all(not any(m["degrees"]) and not any(m["translation"]) for m in moves):
            return data
        segments = len(moves) + 1
        size = data.shape[1]
        length = size // segments
        if length == 0:
            raise VoxelflowValueError(
                f"Motion: {what} has {size} planes along its first axis, too few for "
                f"{segments} k-space segments; pass num_transforms < {size}"
            )
        spectrum = torch.fft.fftn(data, dim=SPATIAL)
        for number, move in enumerate(moves, start=1):
            if not any(move["degrees"]) and not any(move["translation"]):
                continue
            moved = rigid_resample(data, move["degrees"], move["translation"])
            stop = size if number == segments - 1 else (number + 1) * length
            part = torch.fft.fftn(moved, dim=SPATIAL)
            spectrum[:, number * length : stop] = part[:, number * length : stop]
        return torch.fft.ifftn(spectrum, dim=SPATIAL).real

    def __repr__(self) -> str:
        return (
            f"Motion(degrees={self.degrees!r}, translation={self.translation!r}, "
            f"num_transforms={self.num_transforms}, p={self.p})"
        )


def rotation_matrix(degrees: Sequence[float]) -> torch.Tensor:
    """``Rz @ Ry @ Rx`` (float64) for rotations in degrees about axes I, J, K."""
    ax, ay, az = (math.radians(float(d)) for d in degrees)
    cx, sx, cy, sy, cz, sz = (
        math.cos(ax),
        math.sin(ax),
        math.cos(ay),
        math.sin(ay),
        math.cos(az),
        math.sin(az),
    )
    rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=torch.float64)
    ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
    rz = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]], dtype=torch.float64)
    return rz @ ry @ rx


def rigid_resample(
    data: torch.Tensor, degrees: Sequence[float], translation: Sequence[float]
) -> torch.Tensor:
    """``data`` rotated about the volume's centre and translated (voxels), trilinear,
    zeros outside."""
    shape = data.shape[1:]
    rotation = rotation_matrix(degrees)
    centre = torch.tensor([(n - 1) / 2 for n in shape], dtype=torch.float64)
    shift = torch.tensor([float(t) for t in translation], dtype=torch.float64)
    axes = [torch.arange(n, dtype=torch.float64) for n in shape]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (I, J, K, 3)
    # the output voxel p shows the input at R^T (p - centre - shift) + centre
    source = (points - centre - shift) @ rotation + centre
    scale = torch.tensor([2 / (n - 1) if n > 1 else 0.0 for n in shape], dtype=torch.float64)
    grid = (source * scale - (scale > 0).to(torch.float64)).flip(-1)  # (x, y, z) = (K, J, I)
    grid = grid.to(device=data.device, dtype=torch.float32)[None]
    moved = torch.nn.functional.grid_sample(
        data.to(torch.float32)[:, None],
        grid.expand(data.shape[0], *grid.shape[1:]),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )
    return moved[:, 0].to(data.dtype)

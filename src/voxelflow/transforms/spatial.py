"""Spatial transforms that never interpolate: ``Flip``, ``Crop``, ``Pad``, ``CropOrPad``.

Label maps go through the same voxel moves as intensities (no resampling, so
no interpolation); ``Pad`` fills label maps with 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from voxelflow._errors import VoxelflowValueError
from voxelflow._geometry import shifted_affine
from voxelflow._padding import PADDING_MODES, pad_tensor, parse_padding_mode
from voxelflow.image import LABEL, Image
from voxelflow.subject import Subject
from voxelflow.transforms.compose import Compose
from voxelflow.transforms.transform import Transform, image_tensor

Bounds = tuple[int, int, int, int, int, int]


def parse_bounds(value: int | Sequence[int], name: str) -> Bounds:
    """``n`` → six ``n``; ``(a, b, c)`` → ``(a, a, b, b, c, c)``; six ints stay."""
    values = (int(value),) if isinstance(value, int | np.integer) else tuple(int(v) for v in value)
    if len(values) == 1:
        values = values * 6
    elif len(values) == 3:
        values = tuple(v for v in values for _ in range(2))
    if len(values) != 6 or any(v < 0 for v in values):
        raise VoxelflowValueError(
            f"{name} must be one, three or six non-negative ints (before/after along I, J, K), "
            f"got {value!r}"
        )
    return values  # type: ignore[return-value]


class Flip(Transform):
    """Reverse the order of voxels along spatial ``axes`` (0, 1, 2 for I, J, K).

    The affine is kept: the content is mirrored in world space (augmentation).
    Patchwise: flipping a patch equals cutting it from a flipped volume's mirror.

    Example:
        >>> import torch, voxelflow as tio
        >>> flipped = tio.Flip(axes=(1,))(torch.arange(4.0).reshape(1, 1, 4, 1))
        >>> flipped.flatten().tolist()
        [3.0, 2.0, 1.0, 0.0]
    """

    def __init__(self, axes: int | Sequence[int] = (0,), **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        axes = (axes,) if isinstance(axes, int | np.integer) else tuple(axes)
        if not axes or any(int(a) not in (0, 1, 2) for a in axes):
            raise VoxelflowValueError(
                f"Flip: axes must be spatial axes among 0, 1, 2 (I, J, K), got {axes!r}"
            )
        self.axes = tuple(sorted({int(a) for a in axes}))

    invertible = True

    def make_params(self, subject: Subject, generator: torch.Generator) -> dict[str, Any]:
        return {"axes": list(self.axes)}

    def apply_transform(self, subject: Subject, params: dict[str, Any]) -> Subject:
        dims = [int(a) + 1 for a in params["axes"]]
        return self.replace(
            subject,
            {
                name: image.new_like(image_tensor(image).flip(dims))
                for name, image in self.images_to_transform(subject).items()
            },
        )

    def inverse(self, params: dict[str, Any]) -> Transform:
        return Flip(axes=params["axes"])  # a flip is its own inverse

    def __repr__(self) -> str:
        return f"Flip(axes={self.axes}, p={self.p})"


class Crop(Transform):
    """Remove voxels at the borders: ``cropping`` is one, three or six ints
    (``(i_before, i_after, j_before, j_after, k_before, k_after)``).

    Lazy images stay lazy (the crop is a window on the file).

    Example:
        >>> import torch, voxelflow as tio
        >>> tio.Crop((1, 0, 2))(torch.rand(1, 5, 6, 7)).shape
        torch.Size([1, 3, 6, 3])
    """

    patchwise = False

    def __init__(self, cropping: int | Sequence[int], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.cropping = parse_bounds(cropping, "cropping")

    invertible = True

    def make_params(self, subject: Subject, generator: torch.Generator) -> dict[str, Any]:
        return {"bounds": list(self.cropping)}

    def apply_transform(self, subject: Subject, params: dict[str, Any]) -> Subject:
        return crop_subject(self, subject, tuple(params["bounds"]))  # type: ignore[arg-type]

    def inverse(self, params: dict[str, Any]) -> Transform:
        return Pad(params["bounds"])

    def __repr__(self) -> str:
        return f"Crop(cropping={self.cropping}, p={self.p})"


def crop_subject(transform: Transform, subject: Subject, bounds: Bounds) -> Subject:
    if not any(bounds):
        return subject
    images = transform.images_to_transform(subject)
    if not images:
        return subject
    shape = subject.spatial_shape
    slices = []
    for axis, size in enumerate(shape):
        before, after = bounds[2 * axis], bounds[2 * axis + 1]
        if before + after >= size:
            raise VoxelflowValueError(
                f"{type(transform).__name__}: cropping {before}+{after} voxels leaves nothing of "
                f"axis {axis} (size {size}); crop less"
            )
        slices.append(slice(before, size - after))
    return transform.replace(
        subject, {name: image[(slice(None), *slices)] for name, image in images.items()}
    )


class Pad(Transform):
    """Add voxels at the borders: ``padding`` is one, three or six ints.

    Args:
        padding_mode: a number (constant value for intensities; label maps get
            0) or ``"constant"``, ``"edge"``, ``"reflect"``, ``"symmetric"``.

    Example:
        >>> import torch, voxelflow as tio
        >>> tio.Pad((1, 0, 0), padding_mode=5)(torch.zeros(1, 2, 1, 1)).flatten().tolist()
        [5.0, 0.0, 0.0, 5.0]
    """

    patchwise = False

    def __init__(
        self, padding: int | Sequence[int], padding_mode: str | float = 0, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.padding = parse_bounds(padding, "padding")
        self.padding_mode = parse_padding_mode(padding_mode)

    invertible = True

    def make_params(self, subject: Subject, generator: torch.Generator) -> dict[str, Any]:
        return {"bounds": list(self.padding), "padding_mode": self.padding_mode}

    def apply_transform(self, subject: Subject, params: dict[str, Any]) -> Subject:
        bounds = tuple(params["bounds"])
        return pad_subject(self, subject, bounds, params["padding_mode"])  # type: ignore[arg-type]

    def inverse(self, params: dict[str, Any]) -> Transform:
        return Crop(params["bounds"])

    def __repr__(self) -> str:
        return f"Pad(padding={self.padding}, padding_mode={self.padding_mode!r}, p={self.p})"


def pad_subject(
    transform: Transform, subject: Subject, bounds: Bounds, mode: str | float | None
) -> Subject:
    if not any(bounds):
        return subject
    new: dict[str, Image] = {}
    for name, image in transform.images_to_transform(subject).items():
        image_mode = 0 if image.type == LABEL and isinstance(mode, int | float) else mode
        data = pad_tensor(image_tensor(image), bounds[::2], bounds[1::2], image_mode)
        new[name] = image.new_like(data, shifted_affine(image.affine, [-b for b in bounds[::2]]))
    return transform.replace(subject, new)


class CropOrPad(Transform):
    """Crop or pad each axis (centred) to ``target_shape``.

    Example:
        >>> import torch, voxelflow as tio
        >>> tio.CropOrPad((4, 4, 4))(torch.rand(1, 6, 3, 4)).shape
        torch.Size([1, 4, 4, 4])
    """

    patchwise = False

    def __init__(
        self,
        target_shape: int | Sequence[int],
        padding_mode: str | float = 0,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        shape = (
            (int(target_shape),) * 3
            if isinstance(target_shape, int | np.integer)
            else tuple(int(s) for s in target_shape)
        )
        if len(shape) != 3 or any(s <= 0 for s in shape):
            raise VoxelflowValueError(
                f"CropOrPad: target_shape must be an int or three positive ints, got {target_shape!r}"
            )
        self.target_shape = shape
        self.padding_mode = parse_padding_mode(padding_mode)

    invertible = True

    def make_params(self, subject: Subject, generator: torch.Generator) -> dict[str, Any]:
        crop, pad = [], []
        for size, target in zip(subject.spatial_shape, self.target_shape, strict=True):
            diff = size - target
            amount = abs(diff)
            before, after = amount // 2, amount - amount // 2
            crop += [before, after] if diff > 0 else [0, 0]
            pad += [before, after] if diff < 0 else [0, 0]
        return {"crop": crop, "pad": pad, "padding_mode": self.padding_mode}

    def apply_transform(self, subject: Subject, params: dict[str, Any]) -> Subject:
        subject = crop_subject(self, subject, tuple(params["crop"]))  # type: ignore[arg-type]
        return pad_subject(self, subject, tuple(params["pad"]), params["padding_mode"])  # type: ignore[arg-type]

    def inverse(self, params: dict[str, Any]) -> Transform:
        return Compose([Crop(params["pad"]), Pad(params["crop"])])

    def __repr__(self) -> str:
        return f"CropOrPad(target_shape={self.target_shape}, p={self.p})"


__all__ = ["PADDING_MODES", "Crop", "CropOrPad", "Flip", "Pad"]

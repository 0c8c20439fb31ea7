"""Small geometric values shared by every package: triplets and shifted affines."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from voxelflow._errors import VoxelflowTypeError, VoxelflowValueError

Triplet = tuple[int, int, int]


def to_triplet(value: int | Sequence[int], name: str = "patch_size") -> Triplet:
    """``64`` → ``(64, 64, 64)``; three integers stay; anything else raises.

    Booleans and floats (``16.5``, even ``16.0``) are refused, not truncated.

    Example:
        >>> from voxelflow._geometry import to_triplet
        >>> to_triplet(4), to_triplet((1, 2, 3))
        ((4, 4, 4), (1, 2, 3))
    """
    items = [value] * 3 if _is_number(value) else _as_list(value, name)
    if len(items) != 3:
        raise VoxelflowValueError(f"{name} must be an int or three ints, got {value!r}")
    out = []
    for item in items:
        if isinstance(item, bool | np.bool_) or not isinstance(item, int | np.integer):
            raise VoxelflowTypeError(
                f"{name} must be an int or three ints, got {value!r}; pass whole numbers of voxels"
            )
        out.append(int(item))
    return (out[0], out[1], out[2])


def to_positive_triplet(value: int | Sequence[int], name: str = "patch_size") -> Triplet:
    """:func:`to_triplet`, and every value at least 1."""
    triplet = to_triplet(value, name)
    if any(v <= 0 for v in triplet):
        raise VoxelflowValueError(f"{name} must be positive along every axis, got {triplet}")
    return triplet


def shifted_affine(affine: np.ndarray, shift: Sequence[float]) -> np.ndarray:
    """The affine of a grid whose voxel 0 is voxel ``shift`` of ``affine``'s grid.

    Example:
        >>> import numpy as np
        >>> from voxelflow._geometry import shifted_affine
        >>> shifted_affine(np.diag([2.0, 2.0, 2.0, 1.0]), (1, 0, -1))[:3, 3].tolist()
        [2.0, 0.0, -2.0]
    """
    new = np.array(affine, dtype=np.float64, copy=True)
    new[:3, 3] = new[:3, :3] @ np.asarray(shift, dtype=np.float64) + new[:3, 3]
    return new


def describe(values: Sequence[object]) -> str:
    """``(64, 64, 32)`` → ``'64×64×32'`` for messages."""
    return "×".join(map(str, values))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating)


def _as_list(value: object, name: str) -> list[object]:
    try:
        return list(value)  # type: ignore[call-overload]
    except TypeError:
        raise VoxelflowTypeError(
            f"{name} must be an int or three ints, got {type(value).__name__} {value!r}"
        ) from None

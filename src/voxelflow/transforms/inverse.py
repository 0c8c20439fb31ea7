"""Undoing transforms from a subject's history (test-time augmentation, back to input space).

Each recorded :class:`~voxelflow.transforms.transform.AppliedTransform` names
its transform and the parameters it drew; an invertible transform turns those
parameters into the transform that undoes them (:meth:`Transform.inverse`).
The inverse of a history is those inverses in reverse order.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from voxelflow.transforms.compose import Compose
from voxelflow.transforms.transform import _REGISTRY, AppliedTransform, Transform


def get_inverse_transform(
    history: Sequence[AppliedTransform], *, warn: bool = True, ignore_intensity: bool = False
) -> Compose:
    """The ``Compose`` that undoes ``history`` (last transform first).

    Example:
        >>> import torch, voxelflow as tio
        >>> subject = tio.Subject(t1=tio.ScalarImage(torch.rand(1, 4, 5, 6)))
        >>> padded = tio.Pad((1, 2, 3))(subject)
        >>> padded.spatial_shape, padded.apply_inverse_transform().spatial_shape
        ((6, 9, 12), (4, 5, 6))
    """
    from voxelflow.transforms.intensity import IntensityTransform

    steps: list[Transform] = []
    for entry in reversed(list(history)):
        klass = _REGISTRY.get(entry.name)
        if klass is None:
            if warn:
                warnings.warn(
                    f"unknown transform {entry.name!r} in the history: skipped", stacklevel=2
                )
            continue
        if ignore_intensity and issubclass(klass, IntensityTransform):
            continue
        inverse = Transform.from_history(entry)
        if inverse is None:
            if warn:
                warnings.warn(f"{entry.name} is not invertible: skipped", stacklevel=2)
            continue
        steps.append(inverse)
    return Compose(steps)

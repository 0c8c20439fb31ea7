"""``Lambda``: a user function as a transform."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from voxelflow._errors import VoxelflowTypeError, VoxelflowValueError
from voxelflow.image import INTENSITY, LABEL
from voxelflow.subject import Subject
from voxelflow.transforms.transform import Transform, image_tensor


class Lambda(Transform):
    """Apply ``function(tensor) -> tensor`` to each image (of ``types_to_apply``).

    Args:
        function: takes and returns a ``(C, I, J, K)`` tensor; must not modify
            its input (it may be a view of the caller's data).
        types_to_apply: image types to transform, e.g. ``("intensity",)``;
            default: all.
        patchwise: declare that ``function`` acts voxel by voxel (so a Queue may
            apply it to patches); default ``False``.

    Example:
        >>> import torch, voxelflow as tio
        >>> double = tio.Lambda(lambda x: 2 * x, types_to_apply=("intensity",))
        >>> double(torch.ones(1, 2, 2, 2)).sum().item()
        16.0
    """

    def __init__(
        self,
        function: Callable[[torch.Tensor], torch.Tensor],
        types_to_apply: Sequence[str] | None = None,
        patchwise: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if not callable(function):
            raise VoxelflowTypeError(f"Lambda needs a callable, got {type(function).__name__}")
        self.function = function
        self.types_to_apply = tuple(types_to_apply or (INTENSITY, LABEL))
        self._patchwise = bool(patchwise)

    @property
    def patchwise(self) -> bool:  # type: ignore[override]
        return self._patchwise

    def apply_transform(self, subject: Subject, params: dict[str, Any]) -> Subject:
        new = {}
        for name, image in self.images_to_transform(subject, self.types_to_apply).items():
            result = self.function(image_tensor(image))
            if not isinstance(result, torch.Tensor) or result.ndim != 4:
                raise VoxelflowValueError(
                    f"Lambda: the function must return a 4-D tensor (C, I, J, K); for {name!r} it "
                    f"returned {type(result).__name__} {getattr(result, 'shape', '')}"
                )
            new[name] = image.new_like(result)
        return self.replace(subject, new)

    def __repr__(self) -> str:
        return f"Lambda({getattr(self.function, '__name__', self.function)}, p={self.p})"

"""``Compose`` (transforms in order) and ``OneOf`` (one transform, drawn by weight)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from voxelflow._errors import VoxelflowTypeError, VoxelflowValueError
from voxelflow.subject import Subject
from voxelflow.transforms.transform import Transform, uniform


def _check_transforms(owner: str, transforms: Sequence[object]) -> list[Transform]:
    checked: list[Transform] = []
    for transform in transforms:
        if not isinstance(transform, Transform):
            raise VoxelflowTypeError(
                f"{owner}: every element must be a voxelflow transform, got "
                f"{type(transform).__name__}; wrap functions with tio.Lambda"
            )
        checked.append(transform)
    return checked


class Compose(Transform):
    """Apply transforms one after the other, threading one generator through them.

    Example:
        >>> import torch, voxelflow as tio
        >>> transform = tio.Compose([tio.Flip(axes=(0,), p=0.5), tio.Noise(std=0.1)], seed=0)
        >>> transform(torch.zeros(1, 4, 4, 4)).std().item() > 0
        True
    """

    records_history = False  # each transform records itself

    def __init__(
        self, transforms: Sequence[Transform], p: float = 1.0, seed: int | None = None
    ) -> None:
        super().__init__(p=p, seed=seed)
        self.transforms = _check_transforms("Compose", transforms)

    @property
    def patchwise(self) -> bool:  # type: ignore[override]
        return all(transform.patchwise for transform in self.transforms)

    @property
    def lazy(self) -> bool:  # type: ignore[override]
        return all(transform.lazy for transform in self.transforms)

    def transform_subject(self, subject: Subject, generator: torch.Generator) -> Subject:
        if self.p < 1.0 and uniform(generator) >= self.p:
            return subject
        for transform in self.transforms:
            subject = transform.transform_subject(subject, generator)
        return subject

    def apply(self, subject: Subject, generator: torch.Generator) -> Subject:
        for transform in self.transforms:
            subject = transform.apply(subject, generator)
        return subject

    def split(self) -> tuple[Transform | None, Transform | None]:
        """``(whole, per_patch)``: the transforms up to the last one that needs the whole
        volume, and the patchwise rest (``None`` for an empty part).

        A Queue applies ``whole`` to each subject and ``per_patch`` to each patch,
        which gives the same results in distribution as applying everything to the
        subject. Only a composition applied always (``p == 1``) can be split.
        """
        if self.p < 1.0:
            return (None, self) if self.patchwise else (self, None)
        last = max((n for n, t in enumerate(self.transforms) if not t.patchwise), default=-1)
        whole, patch = self.transforms[: last + 1], self.transforms[last + 1 :]
        return (Compose(whole, seed=self.seed) if whole else None), (
            Compose(patch, seed=self.seed) if patch else None
        )

    def output_dtype(self, image_type: str, dtype: torch.dtype) -> torch.dtype:
        for transform in self.transforms:
            dtype = transform.output_dtype(image_type, dtype)
        return dtype

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, index: int) -> Transform:
        return self.transforms[index]

    def __repr__(self) -> str:
        inner = ", ".join(map(repr, self.transforms))
        return f"Compose([{inner}], p={self.p})"


class OneOf(Transform):
    """Apply one of several transforms, chosen at random (weights optional).

    Args:
        transforms: a list (equal weights) or a dict ``{transform: weight}``.

    Example:
        >>> import torch, voxelflow as tio
        >>> transform = tio.OneOf({tio.Flip(axes=(0,)): 0.7, tio.Flip(axes=(1,)): 0.3}, seed=1)
        >>> tuple(transform(torch.rand(1, 4, 4, 4)).shape)
        (1, 4, 4, 4)
    """

    def __init__(
        self,
        transforms: Sequence[Transform] | Mapping[Transform, float],
        p: float = 1.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(p=p, seed=seed)
        if isinstance(transforms, Mapping):
            self.transforms = _check_transforms("OneOf", list(transforms))
            weights = [float(w) for w in transforms.values()]
        else:
            self.transforms = _check_transforms("OneOf", transforms)
            weights = [1.0] * len(self.transforms)
        if not self.transforms:
            raise VoxelflowValueError("OneOf needs at least one transform")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise VoxelflowValueError(
                f"OneOf: weights must be non-negative with a positive sum, got {weights}"
            )
        self.weights = torch.tensor(weights, dtype=torch.float64) / sum(weights)

    records_history = False  # the chosen transform records itself

    @property
    def lazy(self) -> bool:  # type: ignore[override]
        return all(transform.lazy for transform in self.transforms)

    def transform_subject(self, subject: Subject, generator: torch.Generator) -> Subject:
        if self.p < 1.0 and uniform(generator) >= self.p:
            return subject
        choice = int(torch.multinomial(self.weights, 1, generator=generator))
        return self.transforms[choice].transform_subject(subject, generator)

    @property
    def patchwise(self) -> bool:  # type: ignore[override]
        return all(transform.patchwise for transform in self.transforms)

    def apply(self, subject: Subject, generator: torch.Generator) -> Subject:
        choice = int(torch.multinomial(self.weights, 1, generator=generator))
        return self.transforms[choice].transform_subject(subject, generator)

    def output_dtype(self, image_type: str, dtype: torch.dtype) -> torch.dtype:
        dtypes = [t.output_dtype(image_type, dtype) for t in self.transforms]
        return max(dtypes, key=lambda d: torch.empty((), dtype=d).element_size())

    def __repr__(self) -> str:
        return f"OneOf({self.transforms}, p={self.p})"

"""``Compose`` (transforms in order), ``OneOf`` (one, drawn by weight) and ``SomeOf`` (a random
subset).

Containers record nothing themselves: each transform that runs records its own
entry in ``subject.applied_transforms``, so the history lists the transforms
``OneOf`` and ``SomeOf`` chose, in the order they ran.
"""

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
        """``(subject_part, per_patch)``: the transforms a Queue applies to each subject,
        and those it applies to each patch (``None`` for an empty part).

        The subject part runs up to the last transform that needs the whole volume
        (not patchwise), then on through the lazy transforms that follow it: lazy
        transforms (intensity maps, noise, label maps, flips, resampling) cost
        nothing on a subject and give each patch exactly the values of the whole
        transformed subject. The rest, from the first patchwise transform that is
        not lazy, runs on patches (the same results in distribution). Only a
        composition applied always (``p == 1``) is split.
        """
        if self.p < 1.0:
            return (None, self) if self.patchwise and not self.lazy else (self, None)
        transforms = self.transforms
        end = max((n + 1 for n, t in enumerate(transforms) if not t.patchwise), default=0)
        while end < len(transforms) and transforms[end].lazy:
            end += 1
        whole, patch = transforms[:end], transforms[end:]
        return (Compose(whole, seed=self.seed) if whole else None), (
            Compose(patch, seed=self.seed) if patch else None
        )

    def output_dtype(self, image_type: str, dtype: torch.dtype) -> torch.dtype:
        for transform in self.transforms:
            dtype = transform.output_dtype(image_type, dtype)
        return dtype

    def __len__(self) -> int:
        return len(self.transforms)

    def __add__(self, other: Transform) -> Compose:
        """``preprocessing + augmentation``: one ``Compose`` of both (TorchIO 2.0)."""
        if not isinstance(other, Transform):
            return NotImplemented
        right = other.transforms if isinstance(other, Compose) and other.p == 1 else [other]
        left: list[Transform] = self.transforms if self.p == 1 else [self]
        return Compose([*left, *right], seed=self.seed)

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
        return self.transforms[choice].apply(subject, generator)

    def output_dtype(self, image_type: str, dtype: torch.dtype) -> torch.dtype:
        dtypes = [t.output_dtype(image_type, dtype) for t in self.transforms]
        return max(dtypes, key=lambda d: torch.empty((), dtype=d).element_size())

    def __repr__(self) -> str:
        return f"OneOf({self.transforms}, p={self.p})"


class SomeOf(Transform):
    """Apply a random subset of the transforms, in a random order (TorchIO 2.0's ``SomeOf``).

    Args:
        transforms: the candidate transforms.
        num_transforms: how many to apply: an int, or ``(low, high)`` drawn
            uniformly (inclusive); without replacement at most all of them.
        replace: draw with replacement (a transform may run more than once).
        p: probability of applying any of them.
        seed: seed of the container's own generator.

    Example:
        >>> import torch, voxelflow as tio
        >>> some = tio.SomeOf([tio.Noise(std=0.1), tio.Gamma(log_gamma=0.1), tio.Flip(axes=(0,))],
        ...                   num_transforms=2, seed=0)
        >>> subject = some(tio.Subject(t1=tio.ScalarImage(torch.rand(1, 4, 4, 4))))
        >>> len(subject.applied_transforms)
        2
    """

    records_history = False  # the chosen transforms record themselves

    def __init__(
        self,
        transforms: Sequence[Transform] | None = None,
        *,
        num_transforms: int | tuple[int, int] = 1,
        replace: bool = False,
        p: float = 1.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(p=p, seed=seed)
        self.transforms = _check_transforms("SomeOf", list(transforms or []))
        if isinstance(num_transforms, int) and not isinstance(num_transforms, bool):
            low = high = num_transforms
        elif (
            isinstance(num_transforms, Sequence)
            and len(num_transforms) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) for n in num_transforms)
        ):
            low, high = num_transforms
        else:
            raise VoxelflowTypeError(
                f"SomeOf: num_transforms must be an int or (low, high) ints, got {num_transforms!r}"
            )
        if not 0 <= low <= high:
            raise VoxelflowValueError(
                f"SomeOf: num_transforms must satisfy 0 <= low <= high, got {num_transforms!r}"
            )
        if high > 0 and not self.transforms:
            raise VoxelflowValueError("SomeOf needs at least one transform to choose from")
        self.num_transforms = (low, high)
        self.replacement = bool(replace)  # (``replace`` is the base class's method)

    @property
    def lazy(self) -> bool:  # type: ignore[override]
        return all(transform.lazy for transform in self.transforms)

    @property
    def patchwise(self) -> bool:  # type: ignore[override]
        return all(transform.patchwise for transform in self.transforms)

    def choose(self, generator: torch.Generator) -> list[Transform]:
        """The transforms of one call, in the order they run."""
        low, high = self.num_transforms
        count = int(torch.randint(low, high + 1, (), generator=generator))
        total = len(self.transforms)
        if self.replacement:
            indices = torch.randint(0, total, (count,), generator=generator).tolist()
        else:
            indices = torch.randperm(total, generator=generator)[: min(count, total)].tolist()
        return [self.transforms[i] for i in indices]

    def transform_subject(self, subject: Subject, generator: torch.Generator) -> Subject:
        if self.p < 1.0 and uniform(generator) >= self.p:
            return subject
        for transform in self.choose(generator):
            subject = transform.transform_subject(subject, generator)
        return subject

    def apply(self, subject: Subject, generator: torch.Generator) -> Subject:
        for transform in self.choose(generator):
            subject = transform.apply(subject, generator)
        return subject

    def output_dtype(self, image_type: str, dtype: torch.dtype) -> torch.dtype:
        dtypes = [dtype] + [t.output_dtype(image_type, dtype) for t in self.transforms]
        return max(dtypes, key=lambda d: torch.empty((), dtype=d).element_size())

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        return f"SomeOf({self.transforms}, num_transforms={self.num_transforms}, p={self.p})"

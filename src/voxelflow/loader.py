"""Data loaders that collate subjects and images into batches, and the dataset they load.

``SubjectsLoader`` and ``ImagesLoader`` are ``torch.utils.data.DataLoader``
subclasses: every ``DataLoader`` argument works (``num_workers``,
``pin_memory``, ``sampler``...), and a custom ``collate_fn`` replaces theirs.
``SubjectsDataset`` gives transformed copies of subjects, one per index.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from torch.utils.data import DataLoader, Dataset

from voxelflow._errors import VoxelflowTypeError
from voxelflow.batch import collate_images, collate_subjects
from voxelflow.subject import Subject


class SubjectsLoader(DataLoader):  # type: ignore[type-arg]
    """A ``DataLoader`` whose batches are :class:`~voxelflow.SubjectsBatch`.

    Example:
        >>> import torch, voxelflow as tio
        >>> from voxelflow.loader import SubjectsLoader
        >>> subjects = [tio.Subject(t1=tio.ScalarImage(torch.rand(1, 4, 4, 4))) for _ in range(4)]
        >>> batch = next(iter(SubjectsLoader(subjects, batch_size=2)))
        >>> tuple(batch.t1.data.shape)
        (2, 1, 4, 4, 4)
    """

    def __init__(self, dataset: Any, **kwargs: Any) -> None:
        kwargs.setdefault("collate_fn", collate_subjects)
        super().__init__(dataset, **kwargs)


class ImagesLoader(DataLoader):  # type: ignore[type-arg]
    """A ``DataLoader`` whose batches are :class:`~voxelflow.ImagesBatch`.

    Example:
        >>> import torch, voxelflow as tio
        >>> from voxelflow.loader import ImagesLoader
        >>> images = [tio.ScalarImage(torch.rand(1, 4, 4, 4)) for _ in range(4)]
        >>> tuple(next(iter(ImagesLoader(images, batch_size=4))).data.shape)
        (4, 1, 4, 4, 4)
    """

    def __init__(self, dataset: Any, **kwargs: Any) -> None:
        kwargs.setdefault("collate_fn", collate_images)
        super().__init__(dataset, **kwargs)


class SubjectsDataset(Dataset):  # type: ignore[type-arg]
    """A map-style dataset of subjects: ``dataset[n]`` is a transformed copy of subject ``n``.

    TorchIO 1.x's ``SubjectsDataset`` (TorchIO 2.0 passes a plain list to the
    loader instead; both work here). The caller's subjects are never loaded or
    changed: each item is a copy whose images are read (``load_getitem=True``,
    the default) and then transformed.

    Args:
        subjects: a sequence of :class:`~voxelflow.Subject`.
        transform: called on each copy, e.g. a :class:`~voxelflow.Compose`.
        load_getitem: read each copy's images whole before the transform.

    Example:
        >>> import torch, voxelflow as tio
        >>> subjects = [tio.Subject(t1=tio.ScalarImage(torch.rand(1, 4, 4, 4))) for _ in range(3)]
        >>> dataset = tio.SubjectsDataset(subjects, transform=tio.Flip(axes=(0,), p=1.0))
        >>> len(dataset), torch.equal(dataset[0].t1.data, subjects[0].t1.data.flip(1))
        (3, True)
        >>> batch = next(iter(tio.SubjectsLoader(dataset, batch_size=3)))
        >>> tuple(batch.t1.data.shape)
        (3, 1, 4, 4, 4)
    """

    def __init__(
        self,
        subjects: Sequence[Subject],
        transform: Callable[[Subject], Subject] | None = None,
        load_getitem: bool = True,
    ) -> None:
        subjects = list(subjects)
        for number, subject in enumerate(subjects):
            if not isinstance(subject, Subject):
                raise VoxelflowTypeError(
                    f"SubjectsDataset: item {number} is a {type(subject).__name__}, not a "
                    "Subject; wrap images in tio.Subject(name=image, ...)"
                )
        self._subjects = subjects
        self._transform = transform
        self.load_getitem = load_getitem

    def __len__(self) -> int:
        return len(self._subjects)

    def __getitem__(self, index: int) -> Subject:
        if not isinstance(index, int):
            raise VoxelflowTypeError(
                f"SubjectsDataset: index must be an int, got {type(index).__name__}"
            )
        subject = self._subjects[index].copy()
        for name, image in self._subjects[index].images.items():
            twin = copy.copy(image)  # the caller's image stays unloaded and unchanged
            twin.metadata = dict(image.metadata)
            if self.load_getitem:
                twin.load()
            dict.__setitem__(subject, name, twin)
        return self._transform(subject) if self._transform is not None else subject

    def dry_iter(self) -> Iterator[Subject]:
        """The subjects themselves, untransformed and unread (TorchIO 1.x's name)."""
        yield from self._subjects

    def set_transform(self, transform: Callable[[Subject], Subject] | None) -> None:
        """Replace the transform."""
        self._transform = transform

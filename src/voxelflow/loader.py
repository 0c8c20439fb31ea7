"""Data loaders that collate subjects and images into batches.

``SubjectsLoader`` and ``ImagesLoader`` are ``torch.utils.data.DataLoader``
subclasses: every ``DataLoader`` argument works (``num_workers``,
``pin_memory``, ``sampler``...), and a custom ``collate_fn`` replaces theirs.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import DataLoader

from voxelflow.batch import collate_images, collate_subjects


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

"""``Subject``: named images and metadata that belong together."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from voxelflow._errors import (
    VoxelflowKeyError,
    VoxelflowTypeError,
    VoxelflowValueError,
    did_you_mean,
)
from voxelflow.image import INTENSITY, Image


class Subject(dict):  # type: ignore[type-arg]
    """Images and metadata by name: ``subject.t1`` and ``subject["t1"]``.

    A subject holds at least one ``Image``; every image must share one spatial
    shape; other entries are metadata (ages, ids, a patch location). As in
    TorchIO 2.0, iterating a subject (and ``len``) goes over its *images*;
    ``keys()``, ``items()`` and ``values()`` are those of the dict of every
    entry. Indexing with something that is not a string slices every image
    spatially at once (up to three indices over ``I, J, K``; the images must
    agree on their spatial shape) and returns a new subject.

    Example:
        >>> import torch, voxelflow as tio
        >>> subject = tio.Subject(
        ...     t1=tio.ScalarImage(torch.rand(1, 10, 12, 8)),
        ...     seg=tio.LabelMap(torch.zeros(1, 10, 12, 8)),
        ...     age=42,
        ... )
        >>> subject.spatial_shape, subject["age"]
        ((10, 12, 8), 42)
        >>> subject[2:6].spatial_shape
        (4, 12, 8)
        >>> list(subject), len(subject)  # images only, as in TorchIO
        (['t1', 'seg'], 2)
    """

    def __init__(self, *args: dict[str, Any], **entries: Any) -> None:
        if args:
            if len(args) > 1 or not isinstance(args[0], dict):
                raise VoxelflowTypeError("Subject takes one dict or keyword arguments")
            entries = {**args[0], **entries}
        for key in entries:
            if not isinstance(key, str):
                raise VoxelflowTypeError(f"Subject: keys must be strings, got {key!r}")
        if not any(isinstance(value, Image) for value in entries.values()):
            given = f" (got only: {', '.join(entries)})" if entries else ""
            raise VoxelflowValueError(
                f"Subject needs at least one image{given}; pass images by name, e.g. "
                "Subject(t1=tio.ScalarImage('t1.nii.gz'), age=42)"
            )
        super().__init__(**entries)
        self.__dict__["_applied_transforms"] = []

    def __iter__(self) -> Iterator[str]:
        """The names of the images (not the metadata), as TorchIO 2.0 iterates a subject."""
        return iter(self.images)

    def __len__(self) -> int:
        """The number of images."""
        return len(self.images)

    # -------------------------------------------------------------- access
    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"Subject has no entry or attribute {name!r}; entries: {', '.join(self.keys())}"
            ) from None

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            try:
                return dict.__getitem__(self, key)
            except KeyError:
                raise VoxelflowKeyError(
                    f"Subject has no entry {key!r}; entries: {', '.join(self.keys()) or 'none'}."
                    + did_you_mean(key, tuple(self.keys()))
                ) from None
        spatial = key if isinstance(key, tuple) else (key,)
        if Ellipsis not in spatial and len(spatial) > 3:
            raise VoxelflowValueError(
                f"Subject slicing takes at most 3 spatial indices (I, J, K), got {len(spatial)}"
            )
        self.check_consistent_space()  # one index must mean the same voxels in every image
        new = self.copy()
        for name, image in self.get_images_dict(intensity_only=False).items():
            dict.__setitem__(new, name, image[(slice(None), *spatial)])
        return new

    def copy(self) -> Subject:  # type: ignore[override]
        """A shallow copy (images are shared, not copied)."""
        new = self.__class__.__new__(self.__class__)
        dict.update(new, self)
        new.__dict__.update(self.__dict__)
        return new

    def __copy__(self) -> Subject:
        return self.copy()

    # -------------------------------------------------------------- images
    def get_images_dict(
        self,
        intensity_only: bool = True,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
    ) -> dict[str, Image]:
        """Images by name, optionally only intensity images, or an include/exclude list."""
        include = None if include is None else set(include)
        exclude = set(exclude or ())
        images = {}
        for name, value in self.items():
            if not isinstance(value, Image):
                continue
            if intensity_only and value.type != INTENSITY:
                continue
            if include is not None and name not in include:
                continue
            if name in exclude:
                continue
            images[name] = value
        return images

    def get_images(self, intensity_only: bool = True, **kwargs: Any) -> list[Image]:
        return list(self.get_images_dict(intensity_only=intensity_only, **kwargs).values())

    @property
    def images(self) -> dict[str, Image]:
        """Every image, by name."""
        return {name: value for name, value in self.items() if isinstance(value, Image)}

    @property
    def metadata(self) -> dict[str, Any]:
        """Every entry that is not an image."""
        if "metadata" in self:
            return dict.__getitem__(self, "metadata")  # type: ignore[no-any-return]
        return {k: v for k, v in self.items() if not isinstance(v, Image)}

    def _consistent(self, attribute: str) -> Any:
        values = {name: getattr(image, attribute) for name, image in self.images.items()}
        if not values:
            raise VoxelflowValueError("Subject has no images")
        if len(set(values.values())) > 1:
            listing = "; ".join(f"{name}: {value}" for name, value in values.items())
            raise VoxelflowValueError(
                f"Subject images disagree on {attribute} ({listing}); resample or crop them "
                "to a common grid"
            )
        return next(iter(values.values()))

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """The spatial shape shared by every image (checked)."""
        return self._consistent("spatial_shape")  # type: ignore[no-any-return]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The ``(C, I, J, K)`` shape shared by every image (checked)."""
        return self._consistent("shape")  # type: ignore[no-any-return]

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self._consistent("spacing")  # type: ignore[no-any-return]

    def check_consistent_space(self) -> None:
        """Raise unless every image has the same spatial shape."""
        self.spatial_shape  # noqa: B018

    # -------------------------------------------------------------- history
    @property
    def applied_transforms(self) -> list[Any]:
        """The transforms applied to this subject, in order, with their drawn parameters
        (:class:`~voxelflow.transforms.transform.AppliedTransform` entries)."""
        return self.__dict__.get("_applied_transforms", [])  # type: ignore[no-any-return]

    @applied_transforms.setter
    def applied_transforms(self, value: Iterable[Any]) -> None:
        self.__dict__["_applied_transforms"] = list(value)

    def get_inverse_transform(self, warn: bool = True, ignore_intensity: bool = False) -> Any:
        """A ``Compose`` that undoes the invertible transforms of :attr:`applied_transforms`."""
        from voxelflow.transforms.inverse import get_inverse_transform

        return get_inverse_transform(
            self.applied_transforms, warn=warn, ignore_intensity=ignore_intensity
        )

    def apply_inverse_transform(self, warn: bool = True, ignore_intensity: bool = False) -> Subject:
        """A new subject with the invertible transforms of its history undone, last first.

        Transforms that cannot be undone (noise, intensity maps...) are skipped,
        with a warning when ``warn``; ``ignore_intensity`` skips every intensity
        transform silently. Label maps are resampled with nearest neighbours.
        """
        return self.get_inverse_transform(warn=warn, ignore_intensity=ignore_intensity)(self)  # type: ignore[no-any-return]

    # -------------------------------------------------------------- memory
    def load(self) -> None:
        """Load every image."""
        for image in self.images.values():
            image.load()

    def unload(self) -> None:
        """Drop every image's cache (file-backed images go back to lazy)."""
        for image in self.images.values():
            image.unload()

    @property
    def is_loaded(self) -> bool:
        return all(image.is_loaded for image in self.images.values())

    def to(self, *args: Any, **kwargs: Any) -> Subject:
        """``Image.to(...)`` on every image, in place; returns ``self`` (as TorchIO)."""
        for image in self.images.values():
            image.to(*args, **kwargs)
        return self

    def __repr__(self) -> str:
        return f"Subject(keys: {tuple(self.keys())}; images: {len(self.images)})"

"""Reading patches: one allocation and one backend read per patch and image.

Everything the patch pipeline reads goes through here, and only through the
backend contract (``region_cost``, ``read_into``), never a concrete backend:

* :func:`read_patch_into` fills a caller-owned ``(C, p, p, p)`` buffer: the
  part of the box inside the volume is read straight into its middle, and the
  padding is written only around it (:func:`voxelflow._padding.fill_padding`);
* :func:`read_patch` / :func:`extract_patch` wrap that in new images and
  subjects (copies: a patch never keeps a whole volume alive);
* :func:`read_region` reads a box without caching anything in the image (for
  sampling maps);
* :func:`private_copy` gives a sampler or the Queue images of its own, read
  whole once when region reads would cost more than the volume
  (:func:`reads_whole`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch

from voxelflow._errors import VoxelflowValueError
from voxelflow._geometry import shifted_affine
from voxelflow._padding import fill_padding
from voxelflow.image import Image
from voxelflow.patches import _contract
from voxelflow.patches.location import PatchLocation
from voxelflow.subject import Subject


def subject_name(subject: Subject) -> str:
    """A short name for error messages: the image paths, or 'subject'."""
    paths = [str(image.path) for image in subject.images.values() if image.path is not None]
    return ", ".join(dict.fromkeys(paths)) if paths else "subject"


def reads_whole(image: Image) -> bool:
    """Whether patches of ``image`` are better cut from one whole read.

    False for loaded images and backends whose region reads cost about the
    region (``.nii`` memory maps, chunked stores, tensors); true for streams
    (``.nii.gz``: each read inflates from a seek point) and whole-volume
    fallbacks, when many patches are wanted.
    """
    return not image.is_loaded and _contract.region_cost(image.dataobj) != "proportional"


def read_region(image: Image, slices: Sequence[slice]) -> torch.Tensor:
    """The ``(C, ...)`` values of a spatial box, without caching anything in ``image``.

    The result may be a view of a loaded image's data: treat it as read-only.
    """
    key = (slice(None), *slices)
    if image.is_loaded:
        return image.data[key]
    box = (slice(0, image.num_channels), *(slice(s.start, s.stop) for s in slices))
    out = torch.empty((image.num_channels, *(s.stop - s.start for s in slices)), dtype=image.dtype)
    _contract.read_into(image.dataobj, box, out)  # type: ignore[arg-type]
    return out


def inside_box(
    spatial_shape: Sequence[int], location: PatchLocation
) -> tuple[tuple[slice, slice, slice], tuple[slice, slice, slice]]:
    """``(in the image, in the patch)``: the part of ``location`` inside the volume."""
    image_box, patch_box = [], []
    for n, ini, fin in zip(spatial_shape, location.index_ini, location.index_fin, strict=True):
        start, stop = max(0, ini), min(n, fin)
        if start >= stop:
            raise VoxelflowValueError(
                f"patch {location} lies entirely outside spatial shape {tuple(spatial_shape)}"
            )
        image_box.append(slice(start, stop))
        patch_box.append(slice(start - ini, stop - ini))
    return tuple(image_box), tuple(patch_box)  # type: ignore[return-value]


def read_patch_into(
    image: Image,
    location: PatchLocation,
    out: torch.Tensor,
    padding_mode: str | float | None = None,
) -> None:
    """Fill ``out`` ``(C, *location.size)`` with ``location`` of ``image``.

    The inside of the box is read once, into ``out``; what sticks out of the
    volume is padded with ``padding_mode`` (constant 0 when ``None``). ``out``
    may have another dtype than the image (values are converted as they are
    written) and may be a view into a batch.
    """
    try:
        image_box, patch_box = inside_box(image.spatial_shape, location)
    except VoxelflowValueError as error:
        raise VoxelflowValueError(f"{image.path or 'image'}: {error}") from None
    target = out[(slice(None), *patch_box)]
    if image.is_loaded:
        target.copy_(image.data[(slice(None), *image_box)])
    else:
        box = (slice(0, image.num_channels), *image_box)
        _contract.read_into(image.dataobj, box, target)
    fill_padding(out, patch_box, padding_mode)


def read_patch(
    image: Image, location: PatchLocation, padding_mode: str | float | None = None
) -> Image:
    """Read ``location`` of ``image`` as a new in-memory image (a copy).

    Only the part of the box inside the image is read from the backend, into
    the one tensor allocated for the patch; the rest is padded with
    ``padding_mode``. The affine puts voxel 0 of the patch at
    ``location.index`` in the image's grid, padding included.

    Example:
        >>> import torch, voxelflow as tio
        >>> from voxelflow.patches.reading import read_patch
        >>> image = tio.ScalarImage(torch.arange(8.0).reshape(1, 2, 2, 2))
        >>> patch = read_patch(image, tio.PatchLocation((1, 0, 0), (2, 2, 2)), "edge")
        >>> patch.data[0, :, 0, 0].tolist(), float(patch.affine[0, 3])
        ([4.0, 4.0], 1.0)
    """
    out = torch.empty((image.num_channels, *location.size), dtype=image.dtype)
    read_patch_into(image, location, out, padding_mode)
    return image.new_like(out, shifted_affine(image.affine, location.index_ini))


def extract_patch(
    subject: Subject, location: PatchLocation, padding_mode: str | float | None = None
) -> Subject:
    """A new subject holding ``location`` of every image (copies), with the
    subject's other entries and ``patch_location`` set to ``location``."""
    patch = subject.copy()
    for name, image in subject.images.items():
        dict.__setitem__(patch, name, read_patch(image, location, padding_mode))
    dict.__setitem__(patch, "patch_location", location)
    return patch


def private_copy(subject: Subject, load: Callable[[Image], bool] | None = None) -> Subject:
    """A copy of ``subject`` whose images are copies of the caller's (never touched).

    ``load(image)`` says which copies to read whole into memory now (for
    example :func:`reads_whole`); the caller's images stay as they were.
    """
    new = subject.copy()
    for name, image in subject.images.items():
        twin = copy.copy(image)
        twin.metadata = dict(image.metadata)
        if load is not None and load(twin):
            twin.load()
        dict.__setitem__(new, name, twin)
    return new

"""Patch equals whole-then-crop: the check every lazy (region-computed) transform must pass.

A transform applied to a subject returns images over virtual backends; a patch is a region
read of them. The promise: that region equals the same region of the whole transformed
volume (the region "everything", computed by the same code). These helpers check it at the
places where mistakes hide: the eight corners, the middle of each of the six faces and the
centre (and along the edges), for several patch sizes (odd and even), plus any boxes the caller adds.

Use from a test module in this folder::

    from equivalence import check_lazy_transform, check_regions_match_whole

    def test_my_transform_is_patchwise_exact(subject):
        check_lazy_transform(tio.MyTransform(...), subject, seed=0)

``replay_history`` re-applies the parameters a subject (or a queue's patch) recorded, so a
patch from a ``Queue`` can be compared with the same region of the whole subject
transformed with the same parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

import voxelflow as tio
from voxelflow.transforms.transform import AppliedTransform, Transform

Box3 = tuple[slice, slice, slice]
SIZES: tuple[tuple[int, int, int], ...] = ((1, 1, 1), (4, 4, 4), (5, 6, 7), (8, 3, 2))
"""Default patch sizes: a voxel, even, odd and mixed, elongated."""


def region_boxes(spatial_shape: Sequence[int], size: Sequence[int]) -> list[Box3]:
    """Boxes of ``size`` (clipped to the volume) at every corner, edge and face of a volume
    of ``spatial_shape`` and at its centre: along each axis the box touches the low face,
    sits in the middle, or touches the high face (27 placements, duplicates dropped)."""
    size = [min(int(p), int(s)) for p, s in zip(size, spatial_shape, strict=True)]
    starts = [sorted({0, (s - p) // 2, s - p}) for p, s in zip(size, spatial_shape, strict=True)]
    return [
        (slice(i, i + size[0]), slice(j, j + size[1]), slice(k, k + size[2]))
        for i in starts[0]
        for j in starts[1]
        for k in starts[2]
    ]


def _whole(image: tio.Image) -> torch.Tensor:
    """The whole transformed volume, read through the image's backend (nothing cached)."""
    if image.is_loaded:
        return image.data
    return image.dataobj.read(None)


def check_regions_match_whole(
    subject: tio.Subject | tio.Image,
    sizes: Iterable[Sequence[int]] = SIZES,
    *,
    extra_boxes: Iterable[Box3] = (),
    rtol: float = 1e-6,
    atol: float = 1e-6,
    exact_labels: bool = True,
) -> None:
    """Every image's region reads equal the same region of its whole volume.

    Label maps are compared exactly unless ``exact_labels`` is false.
    """
    images = {"image": subject} if isinstance(subject, tio.Image) else subject.images
    for name, image in images.items():
        whole = _whole(image)
        shape = image.spatial_shape
        boxes = [box for size in sizes for box in region_boxes(shape, size)]
        boxes += list(extra_boxes)
        for box in boxes:
            patch = image[(slice(None), *box)]
            assert patch.spatial_shape == tuple(s.stop - s.start for s in box), (name, box)
            expected = whole[(slice(None), *box)]
            got = patch.data
            assert got.dtype == expected.dtype, (name, box, got.dtype, expected.dtype)
            if image.type == tio.LABEL and exact_labels:
                assert torch.equal(got, expected), f"{name}: label region {box} differs"
            else:
                torch.testing.assert_close(
                    got,
                    expected,
                    rtol=rtol,
                    atol=atol,
                    msg=lambda m, n=name, b=box: f"{n} {b}: {m}",
                )


def check_lazy_transform(
    transform: Transform,
    subject: tio.Subject,
    *,
    seed: int = 0,
    sizes: Iterable[Sequence[int]] = SIZES,
    rtol: float = 1e-6,
    atol: float = 1e-6,
    exact_labels: bool = True,
) -> tio.Subject:
    """Apply ``transform`` (generator seeded by ``seed``) and check it is patchwise exact.

    Checks that the caller's images are not loaded by the call, that a transform
    declaring ``lazy`` returns unloaded images, and :func:`check_regions_match_whole`.
    Returns the transformed subject.
    """
    loaded_before = {name: image.is_loaded for name, image in subject.images.items()}
    transformed = transform(subject, torch.Generator().manual_seed(seed))
    for name, image in subject.images.items():
        assert image.is_loaded == loaded_before[name], f"{name}: the input was loaded"
    if transform.lazy:
        for name, image in transformed.images.items():
            if transformed[name] is not subject.get(name):
                assert not image.is_loaded, f"{name}: a lazy transform returned a loaded image"
    check_regions_match_whole(transformed, sizes, rtol=rtol, atol=atol, exact_labels=exact_labels)
    return transformed


def replay_history(
    subject: tio.Subject, transforms: Sequence[Transform], history: Sequence[AppliedTransform]
) -> tio.Subject:
    """``subject`` with the recorded ``history`` re-applied (same parameters, no randomness).

    Each entry is applied by the first not yet used transform of ``transforms`` with the
    entry's class name (so a ``Compose``'s members can be passed in order).
    """
    used: set[int] = set()
    for entry in history:
        for number, transform in enumerate(transforms):
            if number not in used and type(transform).__name__ == entry.name:
                used.add(number)
                subject = transform.apply_transform(subject, dict(entry.params))
                break
        else:
            raise AssertionError(f"no transform named {entry.name} among {transforms}")
    return subject


def patch_region(patch: tio.Subject) -> Box3:
    """The spatial slices a queue's or sampler's patch was cut from."""
    location: Any = patch["patch_location"]
    return tuple(slice(a, b) for a, b in zip(location.index_ini, location.index_fin, strict=True))  # type: ignore[return-value]

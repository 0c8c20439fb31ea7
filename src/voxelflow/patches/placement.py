"""Where a patch's output goes: the destination box in the output and the source box in the patch.

Pure geometry, one function per question, no tensors:

* :func:`output_factor` / :func:`parse_output_shapes`: an output smaller than
  the input (``output_shape``) shrinks every axis by a whole factor;
* :func:`place`: the boxes of one patch, after checking that the patch fits
  the grid (a padded grid may stick out by its padding) and, in ``"crop"``
  mode, trimming ``overlap // 2`` voxels on each side that faces another
  patch (the rest of the overlap after), none on a side at the border. An
  optional ``region`` restricts the output to a sub-box (one shard of a
  distributed inference): boxes are clipped to it and given relative to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from voxelflow._errors import VoxelflowValueError
from voxelflow._geometry import Triplet, describe, to_triplet
from voxelflow.patches.grid import Padding, grid_padding
from voxelflow.patches.location import PatchLocation

Box = tuple[slice, slice, slice]
Placement = tuple[Box, Box]  # (destination in the output, source in the patch)


def parse_output_shapes(spatial_shape: Triplet, output_shape: Any) -> dict[str | None, Triplet]:
    """``output_shape`` (a shape, or one per named output) checked against ``spatial_shape``."""
    if output_shape is None:
        return {}
    items: dict[str | None, Any]
    if isinstance(output_shape, Mapping):
        items = {str(k): v for k, v in output_shape.items()}
    else:
        items = {None: output_shape}
    shapes: dict[str | None, Triplet] = {}
    for key, value in items.items():
        shape = to_triplet(value, "output_shape")
        if any(o <= 0 or s % o for s, o in zip(spatial_shape, shape, strict=True)):
            raise VoxelflowValueError(
                f"output_shape {describe(shape)} must divide spatial_shape "
                f"{describe(spatial_shape)} by a whole factor along every axis "
                "(e.g. (128, 128, 88) for (256, 256, 176))"
            )
        shapes[key] = shape
    return shapes


def output_factor(spatial_shape: Triplet, output_shape: Sequence[int]) -> Triplet:
    """The whole downsampling factor along each axis."""
    return tuple(s // o for s, o in zip(spatial_shape, output_shape, strict=True))  # type: ignore[return-value]


def place(
    *,
    name: str,
    spatial_shape: Triplet,
    patch_overlap: Triplet,
    factor: Triplet,
    crop: bool,
    location: PatchLocation,
    patch_out: Sequence[int],
    region: Box | None = None,
    padding: Padding | None = None,
) -> Placement | None:
    """The destination and source boxes of one patch (``None`` if it misses ``region``).

    Args:
        name: the output's name (for messages).
        spatial_shape: ``(I, J, K)`` of the input volume.
        patch_overlap: the grid's overlap.
        factor: the output's downsampling factor per axis.
        crop: trim the overlap (``"crop"`` mode).
        location: where the input patch was cut.
        patch_out: the spatial shape of the model's output for it.
        region: a sub-box of the output (output voxels) to restrict to.
        padding: the grid's padding for this patch size (computed when not given).

    Example:
        >>> from voxelflow import PatchLocation
        >>> from voxelflow.patches.placement import place
        >>> dst, src = place(name="output", spatial_shape=(16, 8, 8), patch_overlap=(4, 0, 0),
        ...                  factor=(1, 1, 1), crop=True, location=PatchLocation((6, 0, 0), (10, 8, 8)),
        ...                  patch_out=(10, 8, 8))
        >>> dst[0], src[0]
        (slice(8, 16, None), slice(2, 10, None))
    """
    size, index, fin = location.size, location.index_ini, location.index_fin
    expected = tuple(s // f for s, f in zip(size, factor, strict=True))
    if any(s % f for s, f in zip(size, factor, strict=True)) or expected != tuple(patch_out):
        hint = (
            f"the output is downsampled by {describe(factor)}, so expected {describe(expected)}"
            if any(f > 1 for f in factor)
            else "pass output_shape= when the model's output is smaller than its input"
        )
        raise VoxelflowValueError(
            f"PatchAggregator: output {name!r} patches are {describe(patch_out)} "
            f"for input patches of {describe(size)} at {location.index}; {hint}"
        )
    if padding is None:
        padding = grid_padding(spatial_shape, size, patch_overlap)
    for axis in range(3):
        before, after = padding[axis]
        n = spatial_shape[axis]
        if index[axis] < -before or fin[axis] > n + after or fin[axis] <= 0 or index[axis] >= n:
            raise VoxelflowValueError(
                f"PatchAggregator: location {index}..{fin} lies outside the volume "
                f"{describe(spatial_shape)} along axis {'IJK'[axis]}; only a padded "
                f"GridSampler may stick out, by at most {before} before and {after} after "
                "(its overlap); check spatial_shape and patch_overlap match the sampler"
            )
    if any(i % f for i, f in zip(index, factor, strict=True)):
        raise VoxelflowValueError(
            f"PatchAggregator: location {index} is not a multiple of the downsampling "
            f"factor {describe(factor)}; use a patch size, overlap and padding that are"
        )
    dst, src = [], []
    for axis in range(3):
        f = factor[axis]
        n_out = spatial_shape[axis] // f
        start, stop = index[axis] // f, fin[axis] // f
        lo, hi = start, stop
        if crop:
            overlap = patch_overlap[axis]
            if index[axis] > 0:
                lo += (overlap // 2) // f
            if fin[axis] < spatial_shape[axis]:
                hi -= (overlap - overlap // 2) // f
        lo, hi = max(lo, 0), min(hi, n_out)
        offset = 0
        if region is not None:
            lo, hi = max(lo, region[axis].start), min(hi, region[axis].stop)
            offset = region[axis].start
        if lo >= hi:
            return None
        dst.append(slice(lo - offset, hi - offset))
        src.append(slice(lo - start, hi - start))
    return tuple(dst), tuple(src)  # type: ignore[return-value]

"""TEMPORARY: creating a NIfTI-Zarr store for the on-disk aggregator.

This moves to the one NIfTI-Zarr writer in :mod:`voxelflow.backends` (its
``create``/``write``/``finalize``/``abort``, with a completeness marker); the
slab accumulator will then write through it and this module goes away.

The layout is NIfTI-Zarr (``nifti-zarr`` 0.x, OME-Zarr 0.5 on Zarr v3): a group
whose array ``"0"`` holds the voxels as ``(z, y, x)`` or ``(c, z, y, x)``, whose
attributes hold the OME ``multiscales`` (one level), and whose array
``"nifti"`` holds the binary NIfTI header (with the JNIfTI fields as its
attributes). It is read back by the reference reader (``niizarr.zarr2nii``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import nibabel as nib
import numpy as np
import torch


def nifti_header(
    spatial_shape: Sequence[int],
    channels: int,
    dtype: np.dtype[Any],
    affine: np.ndarray,
    *,
    label: bool = False,
) -> nib.Nifti1Header | nib.Nifti2Header:
    """A NIfTI header for a ``(C, I, J, K)`` volume; channels go on the 5th axis (vectors)."""
    large = any(n > 32767 for n in (*spatial_shape, channels))
    header = nib.Nifti2Header() if large else nib.Nifti1Header()
    shape = tuple(spatial_shape) if channels == 1 else (*spatial_shape, 1, channels)
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_xyzt_units("mm", "sec")
    if label:
        header.set_intent("label")
    elif channels > 1:
        header.set_intent("vector")
    return header


def _jnifti_fields(header: nib.Nifti1Header, affine: np.ndarray) -> dict[str, Any]:
    """The JNIfTI fields the reference writer stores as the ``nifti`` array's attributes."""
    dims = [int(d) for d in header.get_data_shape()]
    zooms = [float(z) for z in header.get_zooms()]
    return {
        "NIIHeaderSize": int(header["sizeof_hdr"]),
        "Dim": dims,
        "DataType": str(header.get_data_dtype()),
        "BitDepth": int(header["bitpix"]),
        "VoxelSize": zooms,
        "Intent": str(header.get_intent()[0]),
        "Unit": {"L": "mm", "T": "sec"},
        "QForm": 1,
        "SForm": 1,
        "Affine": np.asarray(affine, dtype=float)[:3].tolist(),
        "ScaleSlope": 1.0,
        "ScaleOffset": 0.0,
    }


def create_nifti_zarr(
    path: str,
    spatial_shape: Sequence[int],
    channels: int,
    dtype: torch.dtype,
    affine: np.ndarray,
    *,
    chunks: Sequence[int],
    label: bool = False,
) -> Any:
    """Create an empty NIfTI-Zarr group at ``path``; return its voxel array (``"0"``)."""
    import zarr

    numpy_dtype = torch.empty((), dtype=dtype).numpy().dtype
    i, j, k = (int(n) for n in spatial_shape)
    ci, cj, ck = (int(c) for c in chunks)
    group = zarr.open_group(store=path, mode="w", zarr_format=3)
    spatial_axes = ["z", "y", "x"]
    axes = spatial_axes if channels == 1 else ["c", *spatial_axes]
    shape = (k, j, i) if channels == 1 else (channels, k, j, i)
    chunk_shape = (ck, cj, ci) if channels == 1 else (1, ck, cj, ci)
    array = group.create_array(
        "0",
        shape=shape,
        chunks=tuple(min(c, n) for c, n in zip(chunk_shape, shape, strict=True)),
        dtype=numpy_dtype,
        fill_value=0,
        dimension_names=axes,
    )
    array.attrs["_ARRAY_DIMENSIONS"] = [{"c": "channel"}.get(a, a) for a in axes]
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    scale = ([1.0] if channels > 1 else []) + [float(s) for s in spacing[::-1]]
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "name": "",
                "type": "voxelflow patch aggregation",
                "axes": [
                    {"name": "c", "type": "channel"}
                    if a == "c"
                    else {"name": a, "type": "space", "unit": "millimeter"}
                    for a in axes
                ],
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": scale},
                            {"type": "translation", "translation": [0.0] * len(axes)},
                        ],
                    }
                ],
                "coordinateTransformations": [{"type": "scale", "scale": [1.0] * len(axes)}],
            }
        ],
    }
    header = nifti_header((i, j, k), channels, numpy_dtype, affine, label=label)
    stream = io.BytesIO()
    header.write_to(stream)
    raw = np.frombuffer(stream.getvalue(), dtype=np.uint8)[:-4]  # no extension flag
    nifti = group.create_array(
        "nifti", shape=(raw.size,), chunks=(raw.size,), dtype="u1", compressors=None
    )
    nifti[:] = raw
    nifti.attrs.update(_jnifti_fields(header, affine))
    return array


class ZarrVolume:
    """A NIfTI-Zarr voxel array seen as ``(C, I, J, K)``, read region by region.

    Used as the lazy array of an :class:`~voxelflow.Image` over the aggregator's
    output (through :class:`~voxelflow.backends.ArrayLikeBackend`) when no
    NIfTI-Zarr backend is registered.

    Example:
        >>> import numpy as np, zarr
        >>> from voxelflow.patches._zarr_store import ZarrVolume
        >>> array = zarr.create_array(store={}, shape=(4, 3, 2), dtype="f4")  # (z, y, x)
        >>> array[:] = np.arange(24).reshape(4, 3, 2)
        >>> ZarrVolume(array).shape, float(ZarrVolume(array)[0, 1, 2, 3])
        ((1, 2, 3, 4), 23.0)
    """

    def __init__(self, array: Any) -> None:
        self.array = array
        self._three_d = array.ndim == 3
        self.dtype = array.dtype
        reversed_shape = tuple(int(n) for n in array.shape[::-1])
        self.shape = (
            (1, *reversed_shape) if self._three_d else (reversed_shape[-1], *reversed_shape[:3])
        )

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        c, i, j, k = key + (slice(None),) * (4 - len(key))
        if self._three_d:
            return np.asarray(self.array[k, j, i]).transpose()[None][c]
        return np.asarray(self.array[c, k, j, i]).transpose(0, 3, 2, 1)

"""A backend over a nibabel image object: its ``dataobj`` (proxy or array), read lazily."""

from __future__ import annotations

from typing import Any

import nibabel as nib
import numpy as np
import torch

from voxelflow._errors import VoxelflowValueError
from voxelflow._indexing import Box
from voxelflow.backends.base import Backend, scaled_dtype, torch_dtype


class NibabelImageBackend(Backend):
    """Region reads through a nibabel image's ``dataobj``, which is never read whole.

    For an image nibabel keeps as an ``ArrayProxy`` (``from_bytes``, a file
    object) only the sliced region is read, with ``scl_slope``/``scl_inter``
    applied; for an image built from an array, regions are copies of it. The
    nibabel layout ``(I, J, K[, T[, V]])`` is presented as ``(C, I, J, K)``, with
    time and vector components flattened into channels in nibabel's order.

    Example:
        >>> import numpy as np, nibabel as nib, voxelflow as tio
        >>> nifti = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4))
        >>> image = tio.LabelMap(nifti)
        >>> image.is_loaded, image.shape, image.dataobj[0, 1, 2, 3].item()
        (False, (1, 2, 3, 4), 23)
    """

    def __init__(self, image: nib.spatialimages.SpatialImage, affine: Any = None) -> None:
        dataobj: Any = image.dataobj
        file_shape = tuple(int(n) for n in dataobj.shape)
        if not 3 <= len(file_shape) <= 5:
            raise VoxelflowValueError(
                f"nibabel image: a {len(file_shape)}-D array (shape {file_shape}); voxelflow "
                "reads 3-D volumes with optional time or vector axes; add or split axes first"
            )
        raw = np.dtype(dataobj.dtype)
        if raw.fields is not None or raw.kind not in "biufc":
            raise VoxelflowValueError(
                f"nibabel image: voxel type {raw} (e.g. RGB) is not supported; convert it to "
                "separate channels of a numeric type"
            )
        self.dataobj = dataobj
        self.file_shape = file_shape
        self._stored = scaled_dtype(
            raw, getattr(dataobj, "slope", None), getattr(dataobj, "inter", None)
        )
        self.dtype = torch_dtype(self._stored)
        i, j, k = file_shape[:3]
        self.shape = (int(np.prod(file_shape[3:], dtype=np.int64)), i, j, k)
        self.affine = np.asarray(image.affine if affine is None else affine, dtype=np.float64)
        self.in_memory = isinstance(dataobj, np.ndarray)

    def read(self, box: Box | None = None) -> torch.Tensor:
        channels, i, j, k = box if box is not None else (slice(None),) * 4
        if len(self.file_shape) == 3:
            region = np.asarray(self.dataobj[i, j, k])[None]
            region = region[channels]
        elif len(self.file_shape) == 4:
            region = np.moveaxis(np.asarray(self.dataobj[i, j, k, channels]), -1, 0)
        else:  # (I, J, K, T, V): channels are T and V flattened in Fortran order
            block = np.asarray(self.dataobj[i, j, k])
            flat = block.reshape(*block.shape[:3], -1, order="F")
            region = np.moveaxis(flat, -1, 0)[channels]
        out = np.empty(region.shape, dtype=self._stored)
        out[...] = region  # a copy the caller owns, in the declared dtype
        return torch.from_numpy(out)

    def describe(self) -> dict[str, Any]:
        return {"format": f"nibabel image ({type(self.dataobj).__name__})"}

"""Backends for data already in memory: tensors, arrays, and lazy array-likes."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
import torch

from voxelflow._errors import VoxelflowTypeError, VoxelflowValueError
from voxelflow._indexing import Box
from voxelflow.backends.base import Backend, store_into, torch_dtype


def as_4d_tensor(data: Any, *, what: str = "data") -> torch.Tensor:
    """A tensor of shape ``(C, I, J, K)`` from a tensor or NumPy array (no copy when possible)."""
    if isinstance(data, np.ndarray):
        if data.dtype.byteorder not in ("=", "|"):
            data = data.astype(data.dtype.newbyteorder("="))
        tensor = torch.from_numpy(np.require(data, requirements="W"))
    elif isinstance(data, torch.Tensor):
        tensor = data
    else:
        raise VoxelflowTypeError(
            f"{what}: expected a torch.Tensor or numpy.ndarray, got {type(data).__name__}"
        )
    if tensor.ndim != 4:
        raise VoxelflowValueError(
            f"{what}: expected 4 dimensions (C, I, J, K), got {tensor.ndim} with shape "
            f"{tuple(tensor.shape)}; add a channel axis with tensor[None] for a 3-D volume"
        )
    return tensor


class TensorBackend(Backend):
    """A tensor in memory (any device, any dtype). Region reads are copies on the same device.

    Example:
        >>> import torch
        >>> from voxelflow.backends import TensorBackend
        >>> backend = TensorBackend(torch.zeros(1, 4, 4, 4))
        >>> backend[:, :2].shape
        torch.Size([1, 2, 4, 4])
    """

    in_memory = True

    def __init__(self, tensor: torch.Tensor, affine: np.ndarray | None = None) -> None:
        self.tensor = as_4d_tensor(tensor)
        self.affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)

    @property
    def shape(self) -> tuple[int, int, int, int]:  # type: ignore[override]
        return tuple(self.tensor.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> torch.dtype:  # type: ignore[override]
        return self.tensor.dtype

    @property
    def cache_key(self) -> Hashable:
        """The tensor's identity and version counter (bumped by every in-place change).

        Valid while this backend is alive: hold it weakly beside the key, as an id
        may be reused once the tensor is collected.
        """
        return ("tensor", id(self.tensor), self.tensor._version, tuple(self.tensor.shape))

    def read(self, box: Box | None = None) -> torch.Tensor:
        if box is None:
            return self.tensor
        return self.tensor[box].clone()

    def read_into(self, box: Box | None, out: torch.Tensor) -> None:
        box = self.check_out(box, out)
        out.copy_(self.tensor if box is None else self.tensor[box])

    def describe(self) -> dict[str, Any]:
        return {"format": "in-memory tensor", "device": str(self.tensor.device)}


class ArrayLikeBackend(Backend):
    """Any array-like with ``shape``, ``dtype`` and slicing, read lazily region by region.

    This is how a user's own reader stays lazy: a reader that returns an
    ``h5py.Dataset``, a ``zarr.Array``, a ``numpy.memmap`` or a nibabel
    ``ArrayProxy`` (3-D ``(I, J, K)`` or 4-D ``(C, I, J, K)``) is read only where
    it is sliced.

    Example:
        >>> import numpy as np
        >>> from voxelflow.backends import ArrayLikeBackend
        >>> backend = ArrayLikeBackend(np.arange(64.0).reshape(4, 4, 4), np.eye(4))
        >>> backend[:, 1, 2, 3].item()
        27.0
    """

    def __init__(self, array: Any, affine: np.ndarray, path: str | None = None) -> None:
        shape = tuple(int(n) for n in array.shape)
        if len(shape) not in (3, 4):
            raise VoxelflowValueError(
                f"{path or 'array'}: a reader must return a 3-D (I, J, K) or 4-D (C, I, J, K) "
                f"array, got shape {shape}"
            )
        self.array = array
        self._three_d = len(shape) == 3
        self.shape = (1, *shape) if self._three_d else shape  # type: ignore[assignment]
        self.dtype = torch_dtype(np.dtype(array.dtype))
        self.affine = np.asarray(affine, dtype=np.float64)
        self.path = path

    def _slice(self, box: Box | None) -> np.ndarray:
        key = (slice(None),) * 4 if box is None else box
        if self._three_d:
            return np.asarray(self.array[key[1:]])[None][key[0]]
        return np.asarray(self.array[key])

    def read(self, box: Box | None = None) -> torch.Tensor:
        data = self._slice(box)
        return torch.from_numpy(np.array(data, dtype=data.dtype.newbyteorder("="), copy=True))

    def read_into(self, box: Box | None, out: torch.Tensor) -> None:
        box = self.check_out(box, out)
        store_into(self._slice(box), out)

    def describe(self) -> dict[str, Any]:
        return {"format": f"array-like ({type(self.array).__name__})"}

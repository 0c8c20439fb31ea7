"""The backend contract, and a base class that implements the indexing around it.

A *backend* is the storage side of an :class:`~voxelflow.Image`: it knows a
volume's header and how to read regions of it. ``Image`` never looks at file
formats; the resolver (:mod:`voxelflow.backends.registry`) picks a backend by
source, and ``Image`` talks to it only through :class:`BackendProtocol`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from voxelflow._indexing import Box, box_shape, normalize_index, to_box


@runtime_checkable
class BackendProtocol(Protocol):
    """What every backend provides (see :class:`Backend` for an example). The contract:

    * ``shape`` is always ``(C, I, J, K)``: four axes, never dropped, channels
      first, then the three voxel axes in the file's index order.
    * ``dtype`` is the ``torch.dtype`` that reads return: the on-disk dtype,
      or the floating dtype the stored values become once ``scl_slope`` /
      ``scl_inter`` style scaling is applied. It never lies.
    * ``affine`` is the 4×4 ``float64`` voxel-to-world (RAS+, millimetres)
      matrix of voxel ``(i, j, k)``.
    * ``read(box)`` returns a ``torch.Tensor`` of ``dtype`` and of exactly the
      box's shape, which the caller owns (never a view into a cache or into
      another array). ``box`` is four ``slice(start, stop, step)`` with
      ``0 <= start < stop <= size`` and ``step >= 1``, already normalised by
      the core; ``read(None)`` reads everything. The one exception to "the
      caller owns it": an in-memory backend returns its own tensor for
      ``read(None)``, as ``np.asarray`` does for an array (no copy of a
      volume that is already in memory).
    * When ``region_reads`` is true a region read touches only the bytes or
      chunks it needs; when false (a full-read fallback) the backend says so,
      and the docs of that backend say what a region costs.
    * ``in_memory`` is true when the data already lives in memory (a tensor).
    * A backend pickles cleanly: open files, memory maps, locks and decoder
      handles are dropped on pickling and reopened lazily in the process that
      uses them.
    """

    @property
    def shape(self) -> tuple[int, int, int, int]: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def affine(self) -> np.ndarray: ...

    @property
    def path(self) -> str | None: ...

    @property
    def region_reads(self) -> bool: ...

    @property
    def in_memory(self) -> bool: ...

    def read(self, box: Box | None = None) -> torch.Tensor: ...


class Backend:
    """Base class for backends: indexing, ``np.asarray`` and a repr on top of ``read``.

    Subclasses set ``shape``, ``dtype``, ``affine`` (attributes or properties)
    and implement :meth:`read`. ``backend[...]`` accepts the same indices as
    ``Image[...]`` and returns a 4-D tensor; ``np.asarray(backend)`` reads the
    whole array without caching it anywhere.

    Example:
        >>> import torch, voxelflow as tio
        >>> image = tio.ScalarImage(torch.arange(24.0).reshape(1, 2, 3, 4))
        >>> image.dataobj[0, 1, :, ::2].shape
        torch.Size([1, 1, 3, 2])
    """

    region_reads: bool = True
    in_memory: bool = False
    path: str | None = None
    shape: tuple[int, int, int, int]
    dtype: torch.dtype
    affine: np.ndarray

    def read(self, box: Box | None = None) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Facts about the storage for ``voxelflow info`` (format, chunks, ...)."""
        return {"format": type(self).__name__}

    # ------------------------------------------------------------------ indexing
    @property
    def ndim(self) -> int:
        return 4

    @property
    def nbytes(self) -> int:
        """Bytes the whole array occupies in memory once read."""
        return int(np.prod(self.shape)) * _itemsize(self.dtype)

    def __getitem__(self, key: Any) -> torch.Tensor:
        ranges = normalize_index(key, self.shape, what=self._label())
        box, flips = to_box(ranges)
        whole = all(
            s.start == 0 and s.stop == n and s.step == 1
            for s, n in zip(box, self.shape, strict=True)
        )
        data = self.read(None if whole else box)
        return data.flip(flips) if flips else data

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = self.read(None).cpu().numpy()
        return array if dtype is None else array.astype(dtype, copy=False)

    def _label(self) -> str:
        return self.path or f"<{type(self).__name__}>"

    def __repr__(self) -> str:
        shape = "×".join(map(str, self.shape))
        where = f" {self.path!r}" if self.path else ""
        return f"{type(self).__name__}({shape}, {self.dtype}{where})"


def check_box_shape(box: Box, data: torch.Tensor) -> torch.Tensor:
    """Assert a backend honoured the box (debug aid for new backends)."""
    expected = box_shape(box)
    if tuple(data.shape) != expected:
        raise AssertionError(f"backend returned {tuple(data.shape)} for box {expected}")
    return data


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def torch_dtype(dtype: np.dtype | type) -> torch.dtype:
    """The torch dtype that ``torch.from_numpy`` gives for a NumPy dtype."""
    return torch.from_numpy(np.empty(0, dtype=np.dtype(dtype).newbyteorder("="))).dtype


def scaled_dtype(raw: np.dtype, slope: float | None, inter: float | None) -> np.dtype:
    """Dtype of stored values after scaling: raw if unscaled, else float32 (float64 stays)."""
    if not is_scaled(slope, inter):
        return np.dtype(raw).newbyteorder("=")
    return np.dtype(np.float64) if np.dtype(raw) == np.float64 else np.dtype(np.float32)


def is_scaled(slope: float | None, inter: float | None) -> bool:
    """Whether ``slope``/``inter`` change values (NIfTI: slope 0 or NaN means none)."""
    slope_ok = slope is not None and np.isfinite(slope) and slope != 0
    inter_ok = inter is not None and np.isfinite(inter)
    return (slope_ok and slope != 1) or (inter_ok and inter != 0)


def apply_scaling(
    raw: np.ndarray, slope: float | None, inter: float | None, dtype: np.dtype
) -> np.ndarray:
    """Return ``raw * slope + inter`` as ``dtype`` (a new array, layout kept).

    One implementation for every backend, so that all paths give bit-identical
    values: cast to ``dtype``, then multiply and add in ``dtype`` in place.

    Example:
        >>> import numpy as np
        >>> from voxelflow.backends import apply_scaling, scaled_dtype
        >>> raw = np.array([0, 10], dtype=np.int16)
        >>> dtype = scaled_dtype(raw.dtype, 0.5, 1.0)
        >>> apply_scaling(raw, 0.5, 1.0, dtype), dtype
        (array([1., 6.], dtype=float32), dtype('float32'))
    """
    out = raw.astype(dtype, order="K", copy=True)
    if not is_scaled(slope, inter):
        return out
    if slope is not None and np.isfinite(slope) and slope not in (0, 1):
        out *= dtype.type(slope)
    if inter is not None and np.isfinite(inter) and inter != 0:
        out += dtype.type(inter)
    return out

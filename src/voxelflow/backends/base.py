"""The backend contract, and a base class that implements the indexing around it.

A *backend* is the storage side of an :class:`~voxelflow.Image`: it knows a
volume's header and how to read regions of it. ``Image`` never looks at file
formats; the resolver (:mod:`voxelflow.backends.registry`) picks a backend by
source, and everything outside :mod:`voxelflow.backends` talks to it only
through :class:`BackendProtocol`. This module also holds the one place where
stored values become the values a read returns (:func:`store_into`: scaling
and dtype conversion into a caller-owned buffer).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from voxelflow._errors import VoxelflowValueError
from voxelflow._indexing import Box, box_shape, normalize_index, to_box

RegionCost = Literal["proportional", "stream", "whole"]
REGION_COSTS: tuple[str, ...] = ("proportional", "stream", "whole")


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
    * ``read_into(box, out)`` fills the caller-owned CPU tensor ``out`` (shape
      exactly the box's; it may be a non-contiguous view into a larger,
      padded buffer) with the region, scaling applied into it. ``out.dtype``
      may differ from ``dtype``: values are converted as ``tensor.to(out.dtype)``
      would convert them. ``box`` is four ``slice(start, stop, step)`` with
      ``0 <= start < stop <= size`` and ``step >= 1``, already normalised by
      the core (the built-in backends also take ``None`` for everything).
    * ``read(box)`` is "allocate + ``read_into``": a new tensor of ``dtype``,
      which the caller owns. The one exception: an in-memory backend returns
      its own tensor for ``read(None)``, as ``np.asarray`` does for an array.
    * ``region_cost`` says what a region read costs: ``"proportional"`` (about
      the bytes of the region: memory maps, chunked stores, ranged requests),
      ``"stream"`` (a decode from the nearest seek point or from the start:
      fine for a few patches; read the volume whole once to touch most of it)
      or ``"whole"`` (any read reads the whole volume once).
    * ``cache_key`` identifies the stored values and changes when they change
      (files: path, size, modification time, and a region view's window);
      ``None`` when there is no stable identity (cache per backend object).
    * ``release()`` drops caches, handles and mapped pages (``Image.unload()``).
    * ``describe()`` returns facts for ``voxelflow info`` (format, chunks...).
    * ``nbytes`` is what the whole volume occupies once read (``dtype``).
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
    def region_cost(self) -> RegionCost: ...

    @property
    def region_reads(self) -> bool: ...

    @property
    def in_memory(self) -> bool: ...

    @property
    def cache_key(self) -> Hashable | None: ...

    @property
    def nbytes(self) -> int: ...

    def read(self, box: Box | None = None) -> torch.Tensor: ...

    def read_into(self, box: Box, out: torch.Tensor) -> None: ...

    def release(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...


_DEFAULTS: dict[str, Any] = {"region_cost": "proportional", "cache_key": None}
#: Defaults derived from other members.
_DERIVED = {"region_reads": lambda backend: backend.region_cost != "whole"}


class Backend:
    """Base class for backends: the contract's defaults, indexing, ``np.asarray`` and a repr.

    Subclasses set ``shape``, ``dtype``, ``affine`` (attributes or properties),
    optionally ``region_cost`` and ``cache_key`` (default ``"proportional"`` and
    ``None``; attributes, properties, or set on the instance), and implement :meth:`read_into` (the fast path: fill a caller's buffer) or
    :meth:`read` (return a new tensor); the base class derives the other one.
    ``backend[...]`` accepts the same indices as ``Image[...]`` and returns a
    4-D tensor; ``np.asarray(backend)`` reads the whole array without caching it.

    Example:
        >>> import torch, voxelflow as tio
        >>> image = tio.ScalarImage(torch.arange(24.0).reshape(1, 2, 3, 4))
        >>> image.dataobj[0, 1, :, ::2].shape
        torch.Size([1, 1, 3, 2])
        >>> out = torch.full((1, 1, 5, 4), -1.0)  # a padded buffer; fill its middle
        >>> box = (slice(0, 1, 1), slice(1, 2, 1), slice(0, 3, 1), slice(0, 4, 2))
        >>> image.dataobj.read_into(box, out[:, :, 1:4, 1:3])
        >>> out[0, 0, :, 1:3].tolist()
        [[-1.0, -1.0], [12.0, 14.0], [16.0, 18.0], [20.0, 22.0], [-1.0, -1.0]]
    """

    in_memory: bool = False
    path: str | None = None
    shape: tuple[int, int, int, int]
    dtype: torch.dtype
    affine: np.ndarray

    def __getattr__(self, name: str) -> Any:
        """The contract's defaults, for members a subclass sets neither as a class attribute,
        a property, nor on the instance: ``region_cost`` is ``"proportional"``,
        ``cache_key`` is ``None`` (no stable identity), and ``region_reads`` (kept for
        older code) is ``region_cost != "whole"``."""
        if name in _DEFAULTS:
            return _DEFAULTS[name]
        if name in _DERIVED:
            return _DERIVED[name](self)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def read(self, box: Box | None = None) -> torch.Tensor:
        """A new tensor of ``dtype`` with the region (everything for ``None``)."""
        if type(self).read_into is Backend.read_into:
            raise NotImplementedError(
                f"{type(self).__name__} implements neither read nor read_into"
            )
        out = torch.empty(self.box_shape(box), dtype=self.dtype)
        self.read_into(self.whole_box() if box is None else box, out)
        return out

    def read_into(self, box: Box, out: torch.Tensor) -> None:
        """Fill ``out`` (exactly the box's shape, any strides, any dtype) with the region."""
        if type(self).read is Backend.read:
            raise NotImplementedError(
                f"{type(self).__name__} implements neither read nor read_into"
            )
        out.copy_(self.read(self.check_out(box, out)))

    def release(self) -> None:
        """Drop caches, handles and mapped pages (nothing to drop here)."""
        return None

    # ------------------------------------------------------------------ header facts
    @property
    def nifti_header(self) -> Any:
        """The stored NIfTI header (``nibabel`` header, scaling included) when the storage
        has one, for writers that keep its codes, units and intent; else ``None``."""
        return None

    @property
    def stored_dtype(self) -> np.dtype:
        """The dtype values are stored with (before any scaling)."""
        return numpy_dtype(self.dtype)

    def read_stored(self, box: Box | None = None) -> np.ndarray:
        """The stored (unscaled) values of ``box`` as a ``(C, I, J, K)`` array (possibly a
        read-only view of the storage: copy what you keep)."""
        return storable(self.read(box))

    def describe(self) -> dict[str, Any]:
        """Facts about the storage for ``voxelflow info`` (format, chunks, ...)."""
        return {"format": type(self).__name__}

    # ------------------------------------------------------------------ helpers
    def box_shape(self, box: Box | None) -> tuple[int, int, int, int]:
        """The shape of a read of ``box`` (the whole shape for ``None``)."""
        normal = self.normalise_box(box)
        return self.shape if normal is None else box_shape(normal)

    def normalise_box(self, box: Box | None) -> Box | None:
        """``box`` with every slice's start, stop and step explicit (``slice(2, 5)`` is
        ``slice(2, 5, 1)``), as the readers index with them."""
        if box is None:
            return None
        if all(s.step is not None and s.start is not None and s.stop is not None for s in box):
            return box
        c, i, j, k = (slice(*s.indices(n)) for s, n in zip(box, self.shape, strict=True))
        return (c, i, j, k)

    def whole_box(self) -> Box:
        """The box of the whole volume."""
        return whole_box(self.shape)

    def check_out(self, box: Box | None, out: torch.Tensor) -> Box | None:
        """Refuse an ``out`` that is not a tensor of exactly the box's shape; return the box
        with explicit starts, stops and steps (:meth:`normalise_box`)."""
        box = self.normalise_box(box)
        expected = self.box_shape(box)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise VoxelflowValueError(
                f"{self._label()}: read_into needs out of shape {expected} (the box's), got "
                f"{got}; allocate it with the box's shape or pass a view of that shape"
            )
        return box

    # ------------------------------------------------------------------ indexing
    @property
    def ndim(self) -> int:
        return 4

    @property
    def nbytes(self) -> int:
        """Bytes the whole array occupies in memory once read."""
        return int(np.prod(self.shape, dtype=np.int64)) * itemsize(self.dtype)

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


def whole_box(shape: tuple[int, int, int, int]) -> Box:
    """The box ``(0:C, 0:I, 0:J, 0:K)`` of a volume of ``shape``."""
    c, i, j, k = shape
    return (slice(0, c, 1), slice(0, i, 1), slice(0, j, 1), slice(0, k, 1))


def box_ranges(box: Box) -> tuple[range, range, range, range]:
    """A box as four ranges (for composing regions)."""
    c, i, j, k = (range(s.start, s.stop, s.step) for s in box)
    return c, i, j, k


# ---------------------------------------------------------------------- dtypes
def itemsize(dtype: torch.dtype) -> int:
    """Bytes per value of a torch dtype."""
    return torch.empty((), dtype=dtype).element_size()


def torch_dtype(dtype: np.dtype | type) -> torch.dtype:
    """The torch dtype that ``torch.from_numpy`` gives for a NumPy dtype."""
    return torch.from_numpy(np.empty(0, dtype=np.dtype(dtype).newbyteorder("="))).dtype


def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """The NumPy dtype of a torch dtype (``bfloat16`` has none: ``float32``)."""
    if dtype == torch.bfloat16:
        return np.dtype(np.float32)
    return torch.empty(0, dtype=dtype).numpy().dtype


def storable_dtype(dtype: torch.dtype | np.dtype) -> np.dtype:
    """The dtype a file stores for values of ``dtype``: half floats widen to float32,
    booleans become uint8 (NIfTI, Zarr readers and SimpleITK all read those)."""
    if isinstance(dtype, torch.dtype):
        if dtype in (torch.float16, torch.bfloat16):
            return np.dtype(np.float32)
        dtype = numpy_dtype(dtype)
    dtype = np.dtype(dtype).newbyteorder("=")
    if dtype == np.float16:
        return np.dtype(np.float32)
    return np.dtype(np.uint8) if dtype == np.bool_ else dtype


def storable(data: torch.Tensor | np.ndarray, dtype: np.dtype | None = None) -> np.ndarray:
    """``data`` as a NumPy array a writer can store: of ``dtype``, or of its
    :func:`storable_dtype` (no copy when it already is; detached, on the CPU).

    Example:
        >>> import torch
        >>> from voxelflow.backends.base import storable
        >>> storable(torch.tensor([True, False])).dtype, storable(torch.zeros(2).half()).dtype
        (dtype('uint8'), dtype('float32'))
    """
    if isinstance(data, torch.Tensor):
        tensor = data.detach().cpu()
        if tensor.dtype in (torch.float16, torch.bfloat16):
            tensor = tensor.float()
        array = tensor.numpy()
    else:
        array = np.asarray(data)
    target = storable_dtype(array.dtype) if dtype is None else np.dtype(dtype)
    return array if array.dtype == target else array.astype(target)


# ---------------------------------------------------------------------- scaling
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


def _scale_in_place(array: np.ndarray, slope: float | None, inter: float | None) -> None:
    dtype = array.dtype
    if slope is not None and np.isfinite(slope) and slope not in (0, 1):
        array *= dtype.type(slope)
    if inter is not None and np.isfinite(inter) and inter != 0:
        array += dtype.type(inter)


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
    if is_scaled(slope, inter):
        _scale_in_place(out, slope, inter)
    return out


def numpy_view(out: torch.Tensor) -> np.ndarray | None:
    """A writable NumPy view of a CPU tensor (any strides), or ``None`` when there is none."""
    if out.device.type != "cpu" or out.dtype == torch.bfloat16 or out.is_conj() or out.is_neg():
        return None
    try:
        return out.detach().numpy()
    except (RuntimeError, TypeError):
        return None


#: Edge of the tiles a transposing copy goes through (elements along each of two axes).
TILE = 16


def copy_values(dst: np.ndarray, src: np.ndarray) -> None:
    """``np.copyto(dst, src, casting="unsafe")``, in cache-sized tiles when the two arrays'
    fastest axes differ (a Fortran-ordered file region into a C-ordered tensor): a plain
    transposing copy misses the cache on every element and is 3-4× slower.

    Example:
        >>> import numpy as np
        >>> from voxelflow.backends.base import copy_values
        >>> src = np.asfortranarray(np.arange(40 * 40 * 3.0).reshape(40, 40, 3))
        >>> dst = np.empty((40, 40, 3), dtype=np.float32)
        >>> copy_values(dst, src); bool((dst == src).all())
        True
    """
    fast_src = int(np.argmin(np.abs(src.strides))) if src.ndim else 0
    fast_dst = int(np.argmin(np.abs(dst.strides))) if dst.ndim else 0
    if src.size < 4 * TILE**3 or fast_src == fast_dst or src.shape != dst.shape:
        np.copyto(dst, src, casting="unsafe")
        return
    index: list[slice] = [slice(None)] * dst.ndim
    for a in range(0, dst.shape[fast_src], TILE):
        index[fast_src] = slice(a, a + TILE)
        for b in range(0, dst.shape[fast_dst], TILE):
            index[fast_dst] = slice(b, b + TILE)
            tile = tuple(index)
            np.copyto(dst[tile], src[tile], casting="unsafe")


def store_into(
    raw: np.ndarray,
    out: torch.Tensor,
    slope: float | None = None,
    inter: float | None = None,
    scaled: np.dtype | None = None,
) -> None:
    """Write stored values ``raw`` (shaped like ``out``) into ``out``, scaling applied.

    The result equals ``torch.from_numpy(apply_scaling(raw, ...)).to(out.dtype)``
    bit for bit: when ``out`` has the scaled dtype (or the conversion is exact)
    the values go straight into ``out`` and are scaled there; otherwise through
    one temporary converted by torch.
    """
    scaled = scaled_dtype(raw.dtype, slope, inter) if scaled is None else np.dtype(scaled)
    view = numpy_view(out)
    if view is not None:
        straight = view.dtype == scaled or (
            not is_scaled(slope, inter) and np.can_cast(raw.dtype, view.dtype, "safe")
        )
        if straight:
            copy_values(view, raw)
            if is_scaled(slope, inter):
                _scale_in_place(view, slope, inter)
            return
    out.copy_(torch.from_numpy(apply_scaling(raw, slope, inter, scaled)))

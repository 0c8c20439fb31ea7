"""Lazy images: ``Image``, ``ScalarImage`` and ``LabelMap``.

An image is a handle on a backend (storage) plus an optional in-memory cache.
Opening reads nothing; header properties ask the backend; ``data`` loads and
caches; slicing an unloaded image gives a new unloaded image over the region.
All format knowledge lives in :mod:`voxelflow.backends`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import torch

from voxelflow import _dtype
from voxelflow._dtype import INTENSITY, LABEL, STORED, DtypeRequest
from voxelflow._errors import (
    VoxelflowFileNotFoundError,
    VoxelflowTypeError,
    VoxelflowValueError,
    check_choice,
)
from voxelflow._format import pretty_bytes
from voxelflow._indexing import Box, normalize_index, region_affine, to_box
from voxelflow.affine import AffineMatrix, as_affine
from voxelflow.backends import (
    ArrayLikeBackend,
    BackendProtocol,
    TensorBackend,
    WindowBackend,
    as_4d_tensor,
    find_writer,
    open_backend,
)
from voxelflow.backends.base import Backend
from voxelflow.backends.nibabel_image import NibabelImageBackend

__all__ = ["INTENSITY", "LABEL", "STORED", "Image", "LabelMap", "ScalarImage"]

Source = str | os.PathLike[str] | torch.Tensor | np.ndarray | nib.spatialimages.SpatialImage
Caching = Literal["fill", "unchanged"]


class Image:
    """A 3-D image with channels, ``(C, I, J, K)``, read lazily from its source.

    Args:
        source: a local path, a URI, a ``torch.Tensor`` or ``np.ndarray`` of shape
            ``(C, I, J, K)``, or a nibabel image (kept lazy through its ``dataobj``).
        affine: 4×4 voxel-to-world matrix; overrides the file's everywhere,
            ``image.dataobj.affine`` included (default for tensors: identity).
        reader: ``reader(path, **reader_kwargs) -> (array, affine)``. If ``array``
            is lazy (an ``h5py`` dataset, a ``zarr`` array, a memory map: anything
            with ``shape``, ``dtype`` and slicing) the image stays lazy. ``path`` is
            passed as given: it need not be a file that exists.
        reader_kwargs: keyword arguments for ``reader`` (only with ``reader=``;
            the built-in backends take ``backend_options=``).
        dtype: the dtype of ``data`` for values read from storage. By default
            intensity images give ``torch.float32`` and label maps integers (see
            ``voxelflow._dtype``); ``"stored"`` keeps the file's type; a
            ``torch.dtype`` converts to it (also for tensor sources).
        backend: force a registered backend by name (see
            :func:`voxelflow.backends.register_backend`).
        backend_options: keyword arguments for the backend's factory.
        level: pyramid level to open, for multi-resolution formats (``.nii.zarr``).
        storage_options: fsspec options for remote URIs (``endpoint_url``, ``key``...).
        **metadata: kept in ``image.metadata``.

    Example:
        >>> import voxelflow as tio
        >>> image = tio.ScalarImage(tio.datasets.nibabel_file("example4d.nii.gz"))
        >>> image.shape, image.stored_dtype, image.dtype  # header only
        ((2, 128, 96, 24), torch.int16, torch.float32)
        >>> patch = image[:, 10:20, 10:20, 5:10]
        >>> image.is_loaded, tuple(patch.data.shape), patch.data.dtype
        (False, (2, 10, 10, 5), torch.float32)
    """

    type: str = INTENSITY

    def __init__(
        self,
        source: Source | None = None,
        *,
        affine: np.ndarray | torch.Tensor | None = None,
        reader: Callable[..., tuple[Any, Any]] | None = None,
        reader_kwargs: Mapping[str, Any] | None = None,
        dtype: DtypeRequest = None,
        backend: str | None = None,
        backend_options: Mapping[str, Any] | None = None,
        tensor: torch.Tensor | np.ndarray | None = None,
        path: str | os.PathLike[str] | None = None,
        type: str | None = None,  # noqa: A002 (TorchIO's name)
        level: int | None = None,
        storage_options: Mapping[str, Any] | None = None,
        **metadata: Any,
    ) -> None:
        if sum(x is not None for x in (source, tensor, path)) != 1:
            raise VoxelflowTypeError(
                f"{self.__class__.__name__}: pass exactly one of a source, tensor= or path="
            )
        source = source if source is not None else (tensor if tensor is not None else path)
        if reader_kwargs and reader is None:
            raise VoxelflowTypeError(
                f"{self.__class__.__name__}({_describe(source)}): reader_kwargs= are passed to "
                "a custom reader=, and none was given; options of the built-in backends go in "
                "backend_options= (e.g. backend_options={'gz_access': 'index'})"
            )
        backend_options = dict(backend_options or {})
        if level is not None:
            backend_options["level"] = level
        if storage_options is not None:
            backend_options["storage_options"] = dict(storage_options)
        if type is not None:
            self.type = type
        self.metadata: dict[str, Any] = dict(metadata)
        self._dtype_request = _dtype.check_request(dtype, self.__class__.__name__)
        self._affine: AffineMatrix | None = None if affine is None else as_affine(affine, copy=True)
        self._data: torch.Tensor | None = None
        self._fdata: np.ndarray | None = None
        self._backend: BackendProtocol | None = None
        self._path: str | None = None
        self._open_args: tuple[Any, ...] | None = None

        if isinstance(source, torch.Tensor | np.ndarray):
            tensor_data = as_4d_tensor(source, what=self.__class__.__name__)
            if isinstance(self._dtype_request, torch.dtype):
                tensor_data = _dtype.convert(tensor_data, self._dtype_request, self._label)
            self._set_tensor(tensor_data)
        elif isinstance(source, nib.spatialimages.SpatialImage):
            self._init_nibabel(source)
        elif isinstance(source, str | os.PathLike):
            self._path = os.fspath(source)
            if reader is None and "://" not in self._path and not os.path.exists(self._path):
                raise VoxelflowFileNotFoundError(
                    f"{self._path}: no such file or directory; check the path "
                    f"(current directory: {os.getcwd()})"
                )
            self._open_args = (
                reader,
                dict(reader_kwargs or {}),
                backend,
                dict(backend_options or {}),
            )
        else:
            raise VoxelflowTypeError(
                f"{self.__class__.__name__}: unsupported source of type {source.__class__.__name__}; "
                "pass a path, a URI, a torch.Tensor or np.ndarray (C, I, J, K), or a nibabel image"
            )

    # ------------------------------------------------------------ construction
    def _set_tensor(self, tensor: torch.Tensor) -> None:
        """Make ``tensor`` the image's data and only source (the affine is kept)."""
        self._data = tensor
        self._fdata = None
        self._backend = TensorBackend(tensor, self._affine)

    def _init_nibabel(self, image: nib.spatialimages.SpatialImage) -> None:
        filename = image.get_filename()
        if not image.in_memory and filename and not isinstance(image.dataobj, np.ndarray):
            self._path = os.fspath(filename)
            self._open_args = (None, {}, None, {})
            if self._affine is None:
                self._affine = as_affine(image.affine, copy=True)
            return
        # In memory or without a file: read through its dataobj, region by region.
        self._backend = NibabelImageBackend(image, self._affine)

    @classmethod
    def _from_backend(cls, like: Image, backend: BackendProtocol, affine: np.ndarray) -> Image:
        new = cls.__new__(cls)
        new.__dict__.update(like.__dict__)
        new.metadata = dict(like.metadata)
        new._backend = backend
        new._affine = as_affine(affine)
        new._data = None
        new._fdata = None
        new._open_args = None
        return new

    def new_like(
        self,
        tensor: torch.Tensor | np.ndarray | None = None,
        affine: np.ndarray | torch.Tensor | None = None,
        *,
        data: torch.Tensor | np.ndarray | None = None,
    ) -> Image:
        """A new in-memory image of the same class, type and metadata holding ``data``.

        ``new_like(data=..., affine=...)`` (TorchIO 2.0) and ``new_like(tensor, affine)``
        both work; ``affine`` defaults to this image's.
        """
        if (tensor is None) == (data is None):
            raise VoxelflowTypeError(
                f"{self._label}: new_like takes the new data once, as new_like(data=tensor) "
                "or new_like(tensor)"
            )
        new = self.__class__.__new__(self.__class__)
        new.__dict__.update(self.__dict__)
        new.metadata = dict(self.metadata)
        new._affine = as_affine(self.affine if affine is None else affine, copy=True)
        new._open_args = None
        new._set_tensor(as_4d_tensor(tensor if tensor is not None else data))
        return new

    def lazy_like(self, backend: BackendProtocol) -> Image:
        """A new unloaded image of the same class, type and metadata over ``backend``,
        with the backend's affine; nothing is read (used by lazy transforms)."""
        new = self._from_backend(self, backend, np.asarray(backend.affine, dtype=np.float64))
        new._path = backend.path
        if isinstance(self._backend, TensorBackend):
            # Computed from a tensor: the values keep the dtype they are computed in, as
            # the tensor kept its own. From storage, the dtype policy applies as it did.
            new._dtype_request = STORED
        return new

    # ------------------------------------------------------------------ backend
    @property
    def dataobj(self) -> BackendProtocol:
        """The backend. ``dataobj[...]`` reads a region as a 4-D tensor of the stored
        dtype without caching; ``np.asarray(image.dataobj)`` reads the whole array."""
        if self._backend is None:
            assert self._path is not None and self._open_args is not None
            reader, reader_kwargs, backend, options = self._open_args
            if reader is not None:
                opened: BackendProtocol = _reader_backend(self._path, reader, reader_kwargs)
            else:
                opened = open_backend(self._path, backend=backend, **options)
            self._backend = opened if self._affine is None else _with_affine(opened, self._affine)
        return self._backend

    @property
    def path(self) -> Path | str | None:
        """The file this image reads from (a ``str`` for URIs), or ``None``."""
        if self._path is None:
            return None
        return self._path if "://" in self._path else Path(self._path)

    # ------------------------------------------------------------------ header
    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(C, I, J, K)``, from the header when not loaded."""
        if self._data is not None:
            return tuple(self._data.shape)  # type: ignore[return-value]
        return tuple(self.dataobj.shape)  # type: ignore[return-value]

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return self.shape[1:]  # type: ignore[return-value]

    @property
    def num_channels(self) -> int:
        return self.shape[0]

    @property
    def affine(self) -> AffineMatrix:
        """4×4 ``float64`` voxel-to-world (RAS+) matrix: an :class:`~voxelflow.AffineMatrix`."""
        if self._affine is not None:
            return self._affine
        return as_affine(self.dataobj.affine)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along I, J, K in world units (mm)."""
        return self.affine.spacing

    @property
    def origin(self) -> tuple[float, float, float]:
        """World position of voxel (0, 0, 0)."""
        return self.affine.origin

    @property
    def orientation(self) -> tuple[str, str, str]:
        """Axis codes, e.g. ``('R', 'A', 'S')``."""
        return self.affine.orientation

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of ``data``, known from the header (see the ``dtype=`` argument)."""
        if self._data is not None:
            return self._data.dtype
        return _dtype.target_dtype(self.type, self.dataobj.dtype, self._dtype_request)

    @property
    def stored_dtype(self) -> torch.dtype:
        """The dtype the storage holds (after ``scl_slope``/``scl_inter`` scaling)."""
        return self.dataobj.dtype

    @property
    def device(self) -> torch.device:
        """Where ``data`` lives (the CPU for an image read from storage)."""
        return self._data.device if self._data is not None else torch.device("cpu")

    @property
    def memory(self) -> int:
        """Bytes ``data`` occupies once loaded (known from the header)."""
        return int(np.prod(self.shape)) * torch.empty((), dtype=self.dtype).element_size()

    # ------------------------------------------------------------------ data
    @property
    def is_loaded(self) -> bool:
        """Whether the data is in memory (always true for tensor images)."""
        return self._data is not None or self._fdata is not None

    in_memory = is_loaded  # nibabel's name

    @property
    def data(self) -> torch.Tensor:
        """The whole ``(C, I, J, K)`` tensor; loads and caches it on first access."""
        self.load()
        assert self._data is not None
        return self._data

    @data.setter
    def data(self, tensor: torch.Tensor | np.ndarray) -> None:
        self.set_data(tensor)

    @property
    def tensor(self) -> torch.Tensor:
        return self.data

    def set_data(self, tensor: torch.Tensor | np.ndarray) -> None:
        """Replace the data by ``tensor``, kept as given; the affine is kept (read from the
        header if need be). The image becomes an in-memory image."""
        tensor = as_4d_tensor(tensor, what=self._label)
        self._affine = self.affine
        self._set_tensor(tensor)

    def read(self, key: Any = None) -> torch.Tensor:
        """The values at ``key`` (any index ``image[...]`` takes; ``None`` for all) as a
        tensor of :attr:`dtype`, read without caching: the image stays as it is.

        Only the region is read from storage, and only the region is converted.
        On a loaded image the result may share memory with ``data``: treat it as
        read-only.
        """
        box: Box | None = None
        flips: tuple[int, ...] = ()
        if key is not None:
            ranges = normalize_index(key, self.shape, what=self._label)
            box, flips = to_box(ranges)
            if all(
                s.start == 0 and s.stop == n and s.step == 1
                for s, n in zip(box, self.shape, strict=True)
            ):
                box = None
        if self._data is not None:
            region = self._data if box is None else self._data[box]
        else:
            stored = self.dataobj.read(box)
            region = _dtype.convert(stored, self.dtype, self._label)
        return region.flip(flips) if flips else region

    def load(self) -> None:
        """Read the whole volume into memory (no-op when already loaded)."""
        if self._data is None:
            self._data = self.read()

    def unload(self) -> None:
        """Drop the cache; an image with a file source goes back to lazy.

        In-memory (tensor) images keep their data: there is nothing to reload it from.
        """
        self._fdata = None
        if isinstance(self._backend, TensorBackend):
            return
        self._data = None
        release = getattr(self._backend, "release", None)
        if release is not None:
            release()

    uncache = unload  # nibabel's name

    def to(self, *args: Any, **kwargs: Any) -> Image:
        """Move or cast the data as ``torch.Tensor.to`` does, in place; returns ``self``.

        A dtype alone (``image.to(torch.float16)``) changes what reads give from
        now on, and converts the data if it is loaded; an unloaded image stays
        unloaded. Anything else (a device) loads the data and makes the image an
        in-memory image, keeping its affine (as TorchIO does).
        """
        dtype = args[0] if args else kwargs.get("dtype")
        if isinstance(dtype, torch.dtype) and len(args) + len(kwargs) == 1:
            self._dtype_request = dtype
            self._fdata = None
            if self._data is not None:
                converted = self._data.to(dtype)
                if isinstance(self._backend, TensorBackend):
                    self._set_tensor(converted)
                else:
                    self._data = converted
            return self
        moved = self.data.to(*args, **kwargs)
        if moved is not self._data:
            self.set_data(moved)
        return self

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (on the CPU)."""
        return self.data.detach().cpu().numpy()

    def get_fdata(self, caching: Caching = "fill", dtype: Any = np.float64) -> np.ndarray:
        """Floating-point ``(C, I, J, K)`` array of the stored values, with nibabel's
        caching rules.

        ``caching="fill"`` keeps the array, so the next call returns the same
        object; ``"unchanged"`` leaves an unloaded image unloaded.
        """
        check_choice("caching", caching, ("fill", "unchanged"))
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise VoxelflowValueError(f"get_fdata: dtype must be a floating type, got {dtype}")
        if self._fdata is not None and self._fdata.dtype == dtype:
            return self._fdata
        source = self._data if self._data is not None else self.dataobj.read(None)
        array = source.detach().cpu().numpy()
        array = array if array.dtype == dtype else array.astype(dtype)
        if caching == "fill":
            self._fdata = array
        return array

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = self.numpy()
        return array if dtype is None else array.astype(dtype, copy=False)

    # ------------------------------------------------------------------ slicing
    def __getitem__(self, key: Any) -> Image:
        """A new image of the region, affine moved to its first voxel; reads nothing if lazy."""
        ranges = normalize_index(key, self.shape, what=self._label)
        affine = region_affine(self.affine.numpy(), ranges)
        if self._data is not None:
            box, flips = to_box(ranges)
            region = self._data[box]
            return self.new_like(region.flip(flips) if flips else region.clone(), affine)
        return self._from_backend(self, WindowBackend(self.dataobj, ranges), affine)

    # ------------------------------------------------------------------ output
    def save(self, path: str | os.PathLike[str], **options: Any) -> None:
        """Write to ``path``; the format follows the extension (``.nii``, ``.nii.gz``,
        ``.nii.zarr``, or any format SimpleITK writes). Unknown options raise."""
        find_writer(path)(self, os.fspath(path), **options)

    # ------------------------------------------------------------------ misc
    @property
    def _label(self) -> str:
        return self._path or self.__class__.__name__

    def __repr__(self) -> str:
        try:
            shape = self.shape
            spacing = ", ".join(f"{s:.2f}" for s in self.spacing)
            details = (
                f"shape: {shape}; spacing: ({spacing}); orientation: {''.join(self.orientation)}+; "
                f"dtype: {str(self.dtype).replace('torch.', '')}; "
                f"memory: {pretty_bytes(self.memory)}"
            )
        except Exception as error:  # a repr must never raise
            details = f"unreadable: {error}"
        where = f'; path: "{self._path}"' if self._path else ""
        state = "" if self.is_loaded else "; lazy"
        return f"{self.__class__.__name__}({details}{where}{state})"


class ScalarImage(Image):
    """An intensity image (MRI, CT, probability maps): transforms may interpolate it.

    Example:
        >>> import torch, voxelflow as tio
        >>> tio.ScalarImage(torch.rand(1, 8, 8, 8)).type
        'intensity'
    """

    type = INTENSITY


class LabelMap(Image):
    """A label map (segmentation): never interpolated or noised by transforms.

    Example:
        >>> import torch, voxelflow as tio
        >>> tio.LabelMap(torch.zeros(1, 8, 8, 8, dtype=torch.uint8)).type
        'label'
    """

    type = LABEL


# ---------------------------------------------------------------------- helpers
def _describe(source: Any) -> str:
    if isinstance(source, str | os.PathLike):
        return repr(os.fspath(source))
    return type(source).__name__


def _reader_backend(path: str, reader: Callable[..., Any], kwargs: dict[str, Any]) -> Backend:
    result = reader(path, **kwargs)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise VoxelflowTypeError(
            f"{path}: a reader must return (array, affine), got {result.__class__.__name__}"
        )
    array, affine = result
    affine = np.eye(4) if affine is None else as_affine(affine).numpy()
    if isinstance(array, torch.Tensor | np.ndarray) and not isinstance(array, np.memmap):
        if array.ndim == 3:
            array = array[None]
        return TensorBackend(as_4d_tensor(array, what=path), affine)
    return ArrayLikeBackend(array, affine, path=path)


def _with_affine(backend: BackendProtocol, affine: AffineMatrix) -> BackendProtocol:
    """``backend`` reporting ``affine`` (an ``affine=`` override) instead of its file's."""
    try:
        backend.affine = affine.numpy()  # type: ignore[misc]
    except AttributeError:  # a read-only property: view it through a full window
        return _AffineOverride(backend, affine.numpy())
    return backend


class _AffineOverride(Backend):
    """``parent`` under another affine (for backends whose ``affine`` is read-only)."""

    def __init__(self, parent: BackendProtocol, affine: np.ndarray) -> None:
        self.parent = parent
        self.affine = affine
        self.shape = parent.shape
        self.path = parent.path
        self.region_reads = parent.region_reads
        self.in_memory = parent.in_memory

    @property
    def dtype(self) -> torch.dtype:  # type: ignore[override]
        return self.parent.dtype

    def read(self, box: Box | None = None) -> torch.Tensor:
        return self.parent.read(box)

    def release(self) -> None:
        release = getattr(self.parent, "release", None)
        if release is not None:
            release()

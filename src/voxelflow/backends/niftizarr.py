"""NIfTI-Zarr (``.nii.zarr``): chunked, multi-resolution NIfTI, local or on object storage.

The format (`neuroscales/nifti-zarr`_) is an OME-Zarr multiscale image (OME 0.4
on Zarr v2, OME 0.5 on Zarr v3) whose group also holds an array named
``nifti`` with the binary NIfTI-1 or NIfTI-2 header (its attributes hold a
JSON rendering for people). Arrays are stored in OME order ``(t, c, z, y, x)``:
the reverse of NIfTI's ``(i, j, k, t, c)``, so ``x`` is ``i`` and ``z`` is ``k``.

Reading goes straight through zarr-python 3, chunk by chunk: a region read
fetches and decodes only the chunks (or shard ranges) it overlaps, concurrently
on remote stores. The binary header is the truth for the affine, the dtype and
the intensity scaling (``scl_slope``/``scl_inter`` are applied; the reference
reader drops them). Any pyramid level can be opened; its affine is the header's
affine composed with the level's OME scale and translation, so averaged levels
get the half-voxel shift they need.

Writing (:func:`write_niftizarr`) streams slab by slab from any backend and
builds the pyramid on the fly (mean for intensities, majority vote for label
maps), so the volume never has to fit in memory.

.. _neuroscales/nifti-zarr: https://github.com/neuroscales/nifti-zarr
"""

from __future__ import annotations

import asyncio
import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import nibabel as nib
import numpy as np
import torch

from voxelflow._atomic import atomic_target
from voxelflow._errors import (
    VoxelflowConnectionError,
    VoxelflowError,
    VoxelflowFileNotFoundError,
    VoxelflowIndexError,
    VoxelflowPermissionError,
    VoxelflowValueError,
    check_choice,
    did_you_mean,
)
from voxelflow._indexing import Box
from voxelflow.backends.base import Backend, apply_scaling, scaled_dtype, torch_dtype

MissingChunks = Literal["auto", "error", "fill"]
Codec = Literal["blosc", "zstd", "gzip", "none"]
Method = Literal["mean", "majority", "nearest"]

MISSING_CHUNKS: tuple[str, ...] = ("auto", "error", "fill")
CODECS: tuple[str, ...] = ("blosc", "zstd", "gzip", "none")
METHODS: tuple[str, ...] = ("mean", "majority", "nearest")
ZARR_FORMATS = (2, 3)
_METADATA_NAMES = {".zarray", ".zattrs", ".zgroup", "zarr.json", ".zmetadata"}
#: Attribute a voxelflow-written store carries: every chunk was written, so a missing one is damage.
COMPLETE_ATTR = "voxelflow"


# ============================================================================ helpers
def is_remote(source: str) -> bool:
    """Whether ``source`` is a URI for a remote filesystem (``s3://``, ``gs://``, ``https://``...)."""
    return "://" in source and not source.startswith("file://")


def is_niftizarr_source(source: str) -> bool:
    name = source.rstrip("/").lower()
    return name.endswith((".nii.zarr", ".zarr"))


def is_niftizarr_output(path: str) -> bool:
    return path.rstrip("/").lower().endswith(".zarr")


def _strip_file(source: str) -> str:
    return source[len("file://") :] if source.startswith("file://") else source


_TRANSIENT_NAMES = {
    "ClientConnectionError",
    "ClientConnectorError",
    "ServerDisconnectedError",
    "ClientPayloadError",
    "ClientOSError",
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionClosedError",
    "ServerTimeoutError",
}


def is_transient(error: BaseException) -> bool:
    """Whether an I/O error is worth retrying (dropped connection, timeout), following causes."""
    seen: BaseException | None = error
    for _ in range(6):
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError):
            return False  # nothing listens there: retrying will not help
        if isinstance(seen, ConnectionError | TimeoutError | asyncio.TimeoutError):
            return True
        if type(seen).__name__ in _TRANSIENT_NAMES:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def describe_remote_error(where: str, error: BaseException, what: str = "open") -> VoxelflowError:
    """A clear library error for a failure talking to a store or remote file."""
    name = type(error).__name__
    text = f"{name}: {error}"
    chain: BaseException | None = error
    refused = False
    for _ in range(6):
        if chain is None:
            break
        if isinstance(chain, ConnectionRefusedError) or "Connect" in type(chain).__name__:
            refused = True
        chain = chain.__cause__ or chain.__context__
    if isinstance(error, PermissionError) or "AccessDenied" in text or "Forbidden" in text:
        return VoxelflowPermissionError(
            f"{where}: access denied while trying to {what} ({text}); check the credentials "
            "(storage_options key/secret, AWS_* variables) and the bucket policy"
        )
    if "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text:
        return VoxelflowPermissionError(
            f"{where}: the credentials were rejected while trying to {what} ({text}); pass the "
            "right key/secret in storage_options or the AWS_* environment variables"
        )
    if isinstance(error, FileNotFoundError) or "NoSuchBucket" in text or "NoSuchKey" in text:
        return VoxelflowFileNotFoundError(
            f"{where}: not found while trying to {what} ({text}); check the bucket and key"
        )
    if refused or is_transient(error) or isinstance(error, OSError):
        return VoxelflowConnectionError(
            f"{where}: cannot reach the storage while trying to {what} ({text}); check the URI, "
            "the endpoint_url in storage_options, and that the server is running"
        )
    return VoxelflowValueError(f"{where}: failed to {what} ({text})")


# ============================================================================ the store
class _MissingChunkError(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _guarded_store(store: Any, *, strict_prefixes: Sequence[str], retries: int) -> Any:
    """Wrap a zarr store: bounded retries of transient errors, missing chunks as errors."""
    from zarr.storage import WrapperStore

    class GuardedStore(WrapperStore):  # type: ignore[misc,type-arg]
        """Counts ``get`` calls (``requests``), retries transient errors, reports missing chunks."""

        def __init__(self, inner: Any) -> None:
            super().__init__(inner)
            self.requests = 0
            self.strict_prefixes = tuple(strict_prefixes)
            self.retries = retries

        def _with_store(self, inner: Any) -> Any:
            return _guarded_store(inner, strict_prefixes=self.strict_prefixes, retries=self.retries)

        async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
            self.requests += 1
            for attempt in range(self.retries + 1):
                try:
                    value = await self._store.get(key, prototype, byte_range)
                    break
                except Exception as error:
                    if attempt == self.retries or not is_transient(error):
                        raise
                    await asyncio.sleep(0.05 * 2**attempt)
            if value is None and self.strict_prefixes:
                base = key.rsplit("/", 1)[-1]
                if base not in _METADATA_NAMES and key.startswith(self.strict_prefixes):
                    raise _MissingChunkError(key)
            return value

        async def get_partial_values(self, prototype: Any, key_ranges: Iterable[Any]) -> list[Any]:
            return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    return GuardedStore(store)


def open_store(source: str, storage_options: dict[str, Any] | None, *, read_only: bool) -> Any:
    """A zarr store for a local path or a remote URI (fsspec, storage options passed through)."""
    from zarr.storage import FsspecStore, LocalStore

    if not is_remote(source):
        path = _strip_file(source)
        if read_only and not os.path.exists(path):
            raise VoxelflowFileNotFoundError(f"{path}: no such NIfTI-Zarr store; check the path")
        return LocalStore(path, read_only=read_only)
    from voxelflow.backends.remote import require_protocol

    require_protocol(source)
    options = dict(storage_options or {})
    options.setdefault("asynchronous", True)
    try:
        return FsspecStore.from_url(source, storage_options=options, read_only=read_only)
    except Exception as error:
        raise describe_remote_error(source, error) from error


# ============================================================================ header
def header_from_bytes(raw: bytes, where: str) -> nib.Nifti1Header | nib.Nifti2Header:
    """Parse a binary NIfTI-1/2 header (either byte order)."""
    if len(raw) < 4:
        raise VoxelflowValueError(
            f"{where}: the 'nifti' array holds {len(raw)} bytes, not a header"
        )
    size_le = int(np.frombuffer(raw[:4], "<i4")[0])
    size_be = int(np.frombuffer(raw[:4], ">i4")[0])
    sizes = {size_le, size_be}
    klass: type[nib.Nifti1Header] | type[nib.Nifti2Header]
    if 348 in sizes:
        klass, need = nib.Nifti1Header, 348
    elif 540 in sizes:
        klass, need = nib.Nifti2Header, 540
    else:
        raise VoxelflowValueError(
            f"{where}: the 'nifti' array does not hold a NIfTI header (sizeof_hdr={size_le}); "
            "the store is damaged or not NIfTI-Zarr; re-convert it with voxelflow convert"
        )
    if len(raw) < need:
        raise VoxelflowValueError(
            f"{where}: the 'nifti' array is truncated ({len(raw)} of {need} header bytes); "
            "re-convert the volume"
        )
    try:
        return klass.from_fileobj(io.BytesIO(raw), check=False)
    except Exception as error:
        raise VoxelflowValueError(
            f"{where}: unreadable NIfTI header in 'nifti' ({error})"
        ) from error


@dataclass(frozen=True)
class Layout:
    """How NIfTI dimensions map onto the OME axes of the zarr arrays.

    ``axes`` are the zarr axis names in storage order (a subsequence of
    ``t, c, z, y, x``); ``file_shape`` the NIfTI dims ``(I, J, K[, T[, C]])``.
    voxelflow channels are the NIfTI ``T × C`` values flattened in NIfTI
    (Fortran) order: channel ``t + T * c``.
    """

    axes: tuple[str, ...]
    file_shape: tuple[int, ...]

    @property
    def t(self) -> int:
        return self.file_shape[3] if len(self.file_shape) > 3 else 1

    @property
    def c(self) -> int:
        return self.file_shape[4] if len(self.file_shape) > 4 else 1

    @property
    def channels(self) -> int:
        return self.t * self.c

    def zarr_shape(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """Zarr shape for spatial size ``(I, J, K)``."""
        sizes = {"t": self.t, "c": self.c, "x": spatial[0], "y": spatial[1], "z": spatial[2]}
        return tuple(sizes[a] for a in self.axes)

    def to_zarr(self, data: np.ndarray) -> np.ndarray:
        """``(C, I, J, K)`` (any layout) → array in zarr axis order (a view when possible)."""
        channels, i, j, k = data.shape
        five = data.reshape(self.c, self.t, i, j, k).transpose(1, 0, 4, 3, 2)  # t c z y x
        drop = tuple(n for n, a in enumerate("tczyx") if a not in self.axes)
        return five.reshape([s for n, s in enumerate(five.shape) if n not in drop])

    def from_zarr(self, data: np.ndarray) -> np.ndarray:
        """Array in zarr axis order → ``(C, I, J, K)`` (a view when possible)."""
        shape = list(data.shape)
        full = []
        for name in "tczyx":
            full.append(shape.pop(0) if name in self.axes else 1)
        five = data.reshape(full)  # t c z y x
        t, c, z, y, x = five.shape
        return five.transpose(1, 0, 4, 3, 2).reshape(c * t, x, y, z)


def layout_for(axes: Sequence[str], file_shape: Sequence[int], where: str) -> Layout:
    axes = tuple(str(a).lower() for a in axes)
    if not set(axes) <= set("tczyx") or not {"x", "y", "z"} <= set(axes):
        raise VoxelflowValueError(
            f"{where}: OME axes {list(axes)} are not NIfTI-Zarr axes (a subsequence of "
            "t, c, z, y, x with all of z, y, x); the store is not NIfTI-Zarr"
        )
    if list(axes) != [a for a in "tczyx" if a in axes]:
        raise VoxelflowValueError(
            f"{where}: OME axes {list(axes)} are not in the order t, c, z, y, x; "
            "re-convert the volume"
        )
    shape = tuple(int(n) for n in file_shape)
    if len(shape) < 3:
        shape = shape + (1,) * (3 - len(shape))
    if len(shape) > 5:
        raise VoxelflowValueError(f"{where}: NIfTI header has {len(shape)} dims; at most 5")
    layout = Layout(axes, shape)
    for name, size in (("t", layout.t), ("c", layout.c)):
        if name not in axes and size != 1:
            raise VoxelflowValueError(
                f"{where}: the NIfTI header has {name}={size} but the arrays have no "
                f"{name!r} axis; the header disagrees with the arrays; re-convert the volume"
            )
    return layout


def _transforms(dataset: dict[str, Any], axes: Sequence[str]) -> np.ndarray:
    """A 4×4 (x, y, z) matrix from one OME dataset's scale and translation."""
    scale = [1.0] * len(axes)
    shift = [0.0] * len(axes)
    for transform in dataset.get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            scale = [float(s) for s in transform["scale"]]
        elif transform.get("type") == "translation":
            shift = [float(s) for s in transform["translation"]]
    matrix = np.eye(4)
    for row, name in enumerate("xyz"):
        n = list(axes).index(name)
        matrix[row, row] = scale[n]
        matrix[row, 3] = shift[n]
    return matrix


def level_affine(
    affine0: np.ndarray, datasets: list[dict[str, Any]], axes: Sequence[str], level: int
) -> np.ndarray:
    """Affine of pyramid ``level``: ``affine0 @ inv(P0) @ Pn`` with OME scale/translation ``P``."""
    if level == 0:
        return np.asarray(affine0, dtype=np.float64)
    p0 = _transforms(datasets[0], axes)
    pn = _transforms(datasets[level], axes)
    return np.asarray(affine0, dtype=np.float64) @ np.linalg.inv(p0) @ pn


# ============================================================================ the backend
class NiftiZarrBackend(Backend):
    """A NIfTI-Zarr store (``.nii.zarr`` directory or ``s3://``/``gs://``/``https://`` URI).

    Opening reads only metadata (group attributes, the ``nifti`` header array
    and the level's array metadata). A region read fetches and decodes only the
    chunks it overlaps, concurrently (zarr-python 3 with a local or fsspec store).

    Args:
        source: path or URI of the store.
        level: pyramid level to open (0 is full resolution; negative counts from
            the coarsest). Its affine accounts for the level's scale and shift.
        storage_options: passed to fsspec for remote stores (``endpoint_url``,
            ``key``, ``secret``, ``anon``...).
        missing_chunks: ``"error"`` raises on a chunk that is absent from the
            store, naming its key; ``"fill"`` reads it as the fill value (Zarr's
            rule for sparse arrays); ``"auto"`` (default) is ``"error"`` for
            stores voxelflow wrote (it writes every chunk) and ``"fill"`` otherwise.
        retries: times a transient remote error (dropped connection, timeout) is retried.

    Example:
        >>> import torch, voxelflow as tio, tempfile, os
        >>> folder = tempfile.mkdtemp()
        >>> tio.ScalarImage(torch.rand(1, 40, 30, 20)).save(f"{folder}/a.nii.zarr", chunk=16)
        >>> image = tio.ScalarImage(f"{folder}/a.nii.zarr")
        >>> image.dataobj[:, :16, :16, :16].shape
        torch.Size([1, 16, 16, 16])
        >>> tio.ScalarImage(f"{folder}/a.nii.zarr", level=1).shape
        (1, 20, 15, 10)
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        level: int = 0,
        storage_options: dict[str, Any] | None = None,
        missing_chunks: MissingChunks = "auto",
        retries: int = 3,
    ) -> None:
        check_choice("missing_chunks", missing_chunks, MISSING_CHUNKS)
        if int(retries) < 0:
            raise VoxelflowValueError(f"retries={retries} must be >= 0")
        self.path = os.fspath(source).rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.retries = int(retries)
        self._missing_option = missing_chunks
        self._group: Any = None
        self._array: Any = None
        self._store: Any = None
        self._open_metadata(level)

    # ------------------------------------------------------------------ opening
    def _open_group(self) -> Any:
        import zarr

        store = open_store(self.path, self.storage_options, read_only=True)
        try:
            return store, zarr.open_group(store, mode="r")
        except VoxelflowError:
            raise
        except (FileNotFoundError, KeyError) as error:
            raise VoxelflowFileNotFoundError(
                f"{self.path}: no Zarr group there ({type(error).__name__}: {error}); check the "
                "path, or convert the volume with: voxelflow convert IN.nii.gz OUT.nii.zarr"
            ) from error
        except Exception as error:
            if is_remote(self.path):
                raise describe_remote_error(self.path, error) from error
            raise VoxelflowValueError(
                f"{self.path}: not a readable Zarr group ({type(error).__name__}: {error}); "
                "re-convert the volume with voxelflow convert"
            ) from error

    def _open_metadata(self, level: int) -> None:
        store, group = self._open_group()
        attrs = dict(group.attrs)
        ome = attrs.get("ome", attrs)
        multiscales = ome.get("multiscales") if isinstance(ome, dict) else None
        if not multiscales:
            raise VoxelflowValueError(
                f"{self.path}: no OME 'multiscales' metadata in the group attributes; this is not "
                "a NIfTI-Zarr (nor OME-Zarr) image; convert the source with voxelflow convert"
            )
        self.ome_version = str(ome.get("version") or multiscales[0].get("version") or "?")
        self.zarr_format = int(group.metadata.zarr_format)
        multiscale = multiscales[0]
        axes = [a["name"] if isinstance(a, dict) else a for a in multiscale.get("axes", [])]
        datasets = list(multiscale.get("datasets", []))
        if not datasets:
            raise VoxelflowValueError(f"{self.path}: 'multiscales' lists no datasets (levels)")
        self.datasets = datasets
        self.levels = len(datasets)
        if not -self.levels <= int(level) < self.levels:
            raise VoxelflowIndexError(
                f"{self.path}: level={level} does not exist; the pyramid has {self.levels} "
                f"level(s): pass level between 0 and {self.levels - 1}"
            )
        self.level = int(level) % self.levels

        raw_header = self._read_header_bytes(group)
        header = header_from_bytes(raw_header, f"{self.path}/nifti")
        self.nifti_header = header
        self.layout = layout_for(axes, header.get_data_shape(), self.path)
        slope, inter = header.get_slope_inter()
        self.slope = None if slope is None else float(slope)
        self.inter = None if inter is None else float(inter)
        self.raw_dtype = np.dtype(header.get_data_dtype())
        self.scaled_dtype = scaled_dtype(self.raw_dtype, self.slope, self.inter)
        self.dtype = torch_dtype(self.scaled_dtype)
        self.affine0 = np.asarray(header.get_best_affine(), dtype=np.float64)

        self.level_shapes: list[tuple[int, ...]] = []
        self.level_chunks: list[tuple[int, ...]] = []
        self.level_shards: list[tuple[int, ...] | None] = []
        codecs = ""
        for n, dataset in enumerate(datasets):
            array = self._open_array(group, dataset["path"])
            self.level_shapes.append(tuple(int(s) for s in array.shape))
            self.level_chunks.append(tuple(int(s) for s in array.chunks))
            self.level_shards.append(
                None if array.shards is None else tuple(int(s) for s in array.shards)
            )
            if n == self.level:
                self._check_array(array, n)
                codecs = _codec_names(array)
        self.codecs = codecs
        complete = bool(attrs.get(COMPLETE_ATTR, {}).get("complete", False))
        self.missing_chunks = (
            ("error" if complete else "fill")
            if self._missing_option == "auto"
            else self._missing_option
        )
        zshape = self.level_shapes[self.level]
        spatial = [zshape[self.layout.axes.index(a)] for a in "xyz"]
        self.shape = (self.layout.channels, *spatial)  # type: ignore[assignment]
        self.affine = level_affine(self.affine0, datasets, self.layout.axes, self.level)
        self._store = store
        self._group = group

    def _read_header_bytes(self, group: Any) -> bytes:
        try:
            array = group["nifti"]
        except KeyError as error:
            raise VoxelflowValueError(
                f"{self.path}: the store has no 'nifti' array (the binary NIfTI header); it is a "
                "plain OME-Zarr, not NIfTI-Zarr; convert the source NIfTI with voxelflow convert, "
                "or add the header with niizarr.write_nifti_header"
            ) from error
        except Exception as error:
            raise self._metadata_error("nifti", error) from error
        try:
            return np.asarray(array[...], dtype=np.uint8).tobytes()
        except Exception as error:
            raise self._metadata_error("nifti", error) from error

    def _open_array(self, group: Any, path: str) -> Any:
        try:
            return group[path]
        except KeyError as error:
            raise VoxelflowValueError(
                f"{self.path}: the pyramid level array {path!r} listed in 'multiscales' is "
                "missing; the store is incomplete; re-convert the volume"
            ) from error
        except Exception as error:
            raise self._metadata_error(path, error) from error

    def _metadata_error(self, key: str, error: BaseException) -> VoxelflowError:
        text = f"{type(error).__name__}: {error}"
        if "codec" in text.lower() or "compressor" in text.lower() or "numcodecs" in text.lower():
            return VoxelflowValueError(
                f"{self.path}: array {key!r} uses a codec this installation cannot decode "
                f"({text}); install the package that provides it (e.g. pip install numcodecs "
                "imagecodecs), or re-convert with codec='blosc', 'zstd' or 'gzip'"
            )
        if is_remote(self.path):
            return describe_remote_error(f"{self.path}/{key}", error, "read metadata")
        return VoxelflowValueError(f"{self.path}: cannot open array {key!r} ({text})")

    def _check_array(self, array: Any, level: int) -> None:
        stored = np.dtype(array.dtype)
        header = self.raw_dtype
        if stored.newbyteorder("=") != header.newbyteorder("="):
            raise VoxelflowValueError(
                f"{self.path}: the NIfTI header says dtype {header} but array "
                f"{self.datasets[level]['path']!r} stores {stored}; the header disagrees with the "
                "array; re-convert the volume"
            )
        shape = tuple(int(s) for s in array.shape)
        if len(shape) != len(self.layout.axes):
            raise VoxelflowValueError(
                f"{self.path}: array {self.datasets[level]['path']!r} has {len(shape)} dims but "
                f"the OME axes are {list(self.layout.axes)}; re-convert the volume"
            )
        if level == 0:
            expected = self.layout.zarr_shape(self.layout.file_shape[:3])
            if shape != expected:
                raise VoxelflowValueError(
                    f"{self.path}: the NIfTI header describes dims {self.layout.file_shape} "
                    f"(zarr order {expected}) but array {self.datasets[0]['path']!r} has shape "
                    f"{shape}; the header disagrees with the array; re-convert the volume"
                )
        else:
            for name in "tc":
                if name in self.layout.axes:
                    n = self.layout.axes.index(name)
                    if shape[n] != self.level_shapes[0][n]:
                        raise VoxelflowValueError(
                            f"{self.path}: level {level} has {shape[n]} values on axis {name!r} "
                            f"but level 0 has {self.level_shapes[0][n]}; re-convert the volume"
                        )

    def _zarr_array(self) -> Any:
        if self._array is None:
            import zarr

            path = self.datasets[self.level]["path"]
            if self._store is None:
                self._store = open_store(self.path, self.storage_options, read_only=True)
            strict = (f"{path}/",) if self.missing_chunks == "error" else ()
            guarded = _guarded_store(self._store, strict_prefixes=strict, retries=self.retries)
            try:
                self._array = zarr.open_array(guarded, path=path, mode="r")
            except Exception as error:
                raise self._metadata_error(path, error) from error
        return self._array

    @property
    def store(self) -> Any:
        """The (guarded) zarr store reads go through; ``store.requests`` counts ``get`` calls."""
        return self._zarr_array().store_path.store

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_group"] = state["_array"] = state["_store"] = None  # reopened lazily
        return state

    def release(self) -> None:
        """Drop open store handles (they are reopened on the next read)."""
        self._array = None
        self._group = None

    # ------------------------------------------------------------------ reading
    def _selection(self, box: Box | None) -> tuple[tuple[slice, ...], slice | None]:
        """Zarr selection for ``box``, and a channel slice still to apply afterwards."""
        layout = self.layout
        if box is None:
            box = tuple(slice(0, n, 1) for n in self.shape)  # type: ignore[assignment]
        assert box is not None
        channels, i, j, k = box
        after: slice | None = None
        per_axis = {"x": i, "y": j, "z": k, "t": slice(None), "c": slice(None)}
        if layout.c == 1:
            per_axis["t"] = channels
        elif layout.t == 1:
            per_axis["c"] = channels
        else:
            after = channels
        return tuple(per_axis[a] for a in layout.axes), after

    def read_zarr(self, box: Box | None = None) -> np.ndarray:
        """The stored (unscaled) values of ``box`` in zarr axis order."""
        selection, _ = self._selection(box)
        array = self._zarr_array()
        try:
            return np.asarray(array.get_basic_selection(selection))
        except _MissingChunkError as error:
            raise VoxelflowValueError(
                f"{self.path}: chunk {error.key!r} is missing from the store (level "
                f"{self.level}); the store is incomplete or damaged: re-convert or re-upload it, "
                "or pass missing_chunks='fill' to read missing chunks as the fill value"
            ) from None
        except VoxelflowError:
            raise
        except Exception as error:
            raise self._read_error(selection, error) from error

    def _read_error(self, selection: tuple[slice, ...], error: BaseException) -> VoxelflowError:
        if is_remote(self.path) and (is_transient(error) or isinstance(error, OSError)):
            return describe_remote_error(self.path, error, f"read level {self.level}")
        key = self._find_bad_chunk(selection)
        where = f"chunk {key!r}" if key else f"level {self.level}"
        return VoxelflowValueError(
            f"{self.path}: {where} is corrupt or cannot be decoded ({type(error).__name__}: "
            f"{error}); re-convert or re-copy the store"
        )

    def _find_bad_chunk(self, selection: tuple[slice, ...]) -> str | None:
        """Decode the chunks of ``selection`` one by one to name the one that fails."""
        array = self._zarr_array()
        chunks = array.chunks
        shards = array.shards
        grid = [
            range(s.start // c, (s.stop - 1) // c + 1)
            for s, c in zip(
                (slice(*sl.indices(n)[:2]) for sl, n in zip(selection, array.shape, strict=True)),
                chunks,
                strict=True,
            )
        ]
        for coords in np.ndindex(*(len(g) for g in grid)):
            chunk = tuple(g[c] for g, c in zip(grid, coords, strict=True))
            region = tuple(
                slice(n * c, min((n + 1) * c, size))
                for n, c, size in zip(chunk, chunks, array.shape, strict=True)
            )
            try:
                array.get_basic_selection(region)
            except Exception:
                if shards is not None:
                    outer = tuple(n * c // s for n, c, s in zip(chunk, chunks, shards, strict=True))
                    return (
                        f"{self.datasets[self.level]['path']}/"
                        + array.metadata.encode_chunk_key(outer)
                    )
                return f"{self.datasets[self.level]['path']}/" + array.metadata.encode_chunk_key(
                    chunk
                )
        return None

    def read_raw(self, box: Box | None = None) -> np.ndarray:
        """Stored (unscaled) values of ``box`` as ``(I, J, K, C)`` (the NIfTI backend's layout)."""
        return np.moveaxis(self._read_cijk(box), 0, -1)

    def _read_cijk(self, box: Box | None) -> np.ndarray:
        data = self.read_zarr(box)
        out = self.layout.from_zarr(data)
        _, after = self._selection(box)
        return out[after] if after is not None else out

    def read(self, box: Box | None = None) -> torch.Tensor:
        raw = self._read_cijk(box)
        data = apply_scaling(raw, self.slope, self.inter, self.scaled_dtype)
        return torch.from_numpy(data)

    # ------------------------------------------------------------------ facts
    def describe(self) -> dict[str, Any]:
        def ijk(zarr_tuple: Sequence[int] | None) -> list[int] | None:
            if zarr_tuple is None:
                return None
            return [int(zarr_tuple[self.layout.axes.index(a)]) for a in "xyz"]

        facts: dict[str, Any] = {
            "format": f"NIfTI-Zarr (OME {self.ome_version}, Zarr v{self.zarr_format}, "
            f"NIfTI-{2 if isinstance(self.nifti_header, nib.Nifti2Header) else 1} header)",
            "stored dtype": str(self.raw_dtype),
            "scaling": (
                f"slope={self.slope}, inter={self.inter}"
                if self.scaled_dtype != self.raw_dtype.newbyteorder("=")
                else "none"
            ),
            "level": f"{self.level} of {self.levels}",
            "chunks (I, J, K)": ijk(self.level_chunks[self.level]),
            "shards (I, J, K)": ijk(self.level_shards[self.level]) or "none",
            "codecs": self.codecs,
            "pyramid levels (I, J, K)": [ijk(s) for s in self.level_shapes],
        }
        size = self.size_on_disk()
        if size is not None:
            facts["size on disk"] = size
        return facts

    def size_on_disk(self) -> int | None:
        """Total bytes of the store's objects (a listing, no data read)."""
        try:
            if not is_remote(self.path):
                total = 0
                for root, _, files in os.walk(_strip_file(self.path)):
                    total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
                return total
            from voxelflow.backends.remote import filesystem

            fs, path = filesystem(self.path, self.storage_options)
            return int(fs.du(path, total=True))
        except Exception:
            return None


def _codec_names(array: Any) -> str:
    try:
        metadata = array.metadata
        if getattr(metadata, "zarr_format", 3) == 2:
            compressor = metadata.compressor
            return "none" if compressor is None else str(compressor.get_config().get("id"))
        names = []
        for codec in metadata.codecs:
            name = type(codec).__name__.replace("Codec", "").lower()
            if name == "sharding":
                names.append(
                    "sharding["
                    + ", ".join(type(c).__name__.replace("Codec", "").lower() for c in codec.codecs)
                    + "]"
                )
            else:
                names.append(name)
        return ", ".join(names)
    except Exception:
        return "?"


# ============================================================================ JSON header
_DTYPE_NAMES = {
    2: "uint8", 4: "int16", 8: "int32", 16: "single", 32: "complex64", 64: "double",
    256: "int8", 512: "uint16", 768: "uint32", 1024: "int64", 1280: "uint64",
    1536: "double128", 1792: "complex128", 2048: "complex256",
}  # fmt: skip
_INTENT_NAMES = {
    0: "", 2: "corr", 3: "ttest", 4: "ftest", 5: "zscore", 6: "chi2", 7: "beta", 8: "binomial",
    9: "gamma", 10: "poisson", 11: "normal", 12: "ncftest", 13: "ncchi2", 14: "logistic",
    15: "laplace", 16: "uniform", 17: "ncttest", 18: "weibull", 19: "chi", 20: "invgauss",
    21: "extval", 22: "pvalue", 23: "logpvalue", 24: "log10pvalue", 1001: "estimate",
    1002: "label", 1003: "neuronames", 1004: "matrix", 1005: "symmatrix", 1006: "dispvec",
    1007: "vector", 1008: "point", 1009: "triangle", 1010: "quaternion", 1011: "unitless",
    2001: "tseries", 2002: "elem", 2003: "rgb", 2004: "rgba", 2005: "shape",
}  # fmt: skip
_INTENT_PARAMS = {
    "corr": 1, "ttest": 1, "ftest": 2, "chi2": 1, "beta": 2, "binomial": 2, "gamma": 2,
    "poisson": 1, "normal": 2, "ncftest": 3, "ncchi2": 2, "logistic": 2, "laplace": 2,
    "uniform": 2, "ncttest": 2, "weibull": 2, "chi": 1, "invgauss": 2, "extval": 2,
    "matrix": 2, "symmatrix": 1,
}  # fmt: skip
_UNITS = {
    0: "",
    1: "m",
    2: "mm",
    3: "um",
    8: "s",
    16: "ms",
    24: "us",
    32: "hz",
    40: "ppm",
    48: "rad/s",
}
_OME_UNITS = {"m": "meter", "mm": "millimeter", "um": "micrometer", "s": "second",
              "ms": "millisecond", "us": "microsecond", "": ""}  # fmt: skip
_SLICE_CODES = {0: "", 1: "seq+", 2: "seq-", 3: "alt+", 4: "alt-", 5: "alt2+", 6: "alt2-"}
_XFORMS = {0: "", 1: "scanner_anat", 2: "aligned_anat", 3: "talairach", 4: "mni_152",
           5: "template_other"}  # fmt: skip


def _text(value: Any) -> str:
    raw = np.asarray(value).tobytes().split(b"\x00", 1)[0]
    return "".join(ch for ch in raw.decode("latin-1") if ch.isprintable())


def _num(value: Any) -> float:
    number = float(value)
    return number if math.isfinite(number) else 0.0


def header_json(header: nib.Nifti1Header | nib.Nifti2Header) -> dict[str, Any]:
    """The JSON rendering of a NIfTI header that NIfTI-Zarr puts on the ``nifti`` array."""
    h = header.structarr
    ndim = int(h["dim"][0])
    intent = _INTENT_NAMES.get(int(h["intent_code"]), "")
    intent_p = [float(h["intent_p1"]), float(h["intent_p2"]), float(h["intent_p3"])]
    params = intent_p[: _INTENT_PARAMS.get(intent, 0)]
    units = int(h["xyzt_units"])
    version1 = int(h["sizeof_hdr"]) == 348
    dim_info = int(h["dim_info"])
    sform = np.asarray(h["srow_x"].tolist() + h["srow_y"].tolist() + h["srow_z"].tolist())
    out: dict[str, Any] = {
        "NIIHeaderSize": int(h["sizeof_hdr"]),
        "DimInfo": {
            "Freq": dim_info & 3,
            "Phase": (dim_info >> 2) & 3,
            "Slice": (dim_info >> 4) & 3,
        },
        "Dim": [int(d) for d in h["dim"][1 : 1 + ndim]],
        "Param1": params[0] if len(params) > 0 else None,
        "Param2": params[1] if len(params) > 1 else None,
        "Param3": params[2] if len(params) > 2 else None,
        "Intent": intent,
        "DataType": _DTYPE_NAMES.get(int(h["datatype"]), ""),
        "BitDepth": int(h["bitpix"]),
        "FirstSliceID": int(h["slice_start"]),
        "VoxelSize": [_num(p) for p in h["pixdim"][1 : 1 + ndim]],
        "Orientation": {"x": "r" if float(h["pixdim"][0]) == 0 else "l", "y": "a", "z": "s"},
        "NIIByteOffset": int(h["vox_offset"]),
        "ScaleSlope": _num(h["scl_slope"]),
        "ScaleOffset": _num(h["scl_inter"]),
        "LastSliceID": int(h["slice_end"]),
        "SliceType": _SLICE_CODES.get(int(h["slice_code"]), ""),
        "Unit": {"L": _UNITS.get(units & 0x07, ""), "T": _UNITS.get(units & 0x38, "")},
        "MaxIntensity": _num(h["cal_max"]),
        "MinIntensity": _num(h["cal_min"]),
        "SliceTime": _num(h["slice_duration"]),
        "TimeOffset": _num(h["toffset"]),
        "Description": _text(h["descrip"]),
        "AuxFile": _text(h["aux_file"]),
        "QForm": _XFORMS.get(int(h["qform_code"]), ""),
        "SForm": _XFORMS.get(int(h["sform_code"]), ""),
        "Quatern": {k: _num(h[f"quatern_{k}"]) for k in "bcd"},
        "QuaternOffset": {k: _num(h[f"qoffset_{k}"]) for k in "xyz"},
        "Affine": [[_num(v) for v in sform[r * 4 : r * 4 + 4]] for r in range(3)],
        "Name": _text(h["intent_name"]),
        "NIIFormat": _text(h["magic"]),
        "NIFTIExtension": [1 if len(header.extensions) else 0, 0, 0, 0],
        "A75DataTypeName": _text(h["data_type"]) if version1 else "",
        "A75DBName": _text(h["db_name"]) if version1 else "",
        "A75Extends": int(h["extents"]) if version1 else 0,
        "A75SessionError": int(h["session_error"]) if version1 else 0,
        "A75Regular": int(np.frombuffer(h["regular"].tobytes(), np.uint8)[0]) if version1 else 0,
        "A75GlobalMax": int(h["glmax"]) if version1 else 0,
        "A75GlobalMin": int(h["glmin"]) if version1 else 0,
    }
    return out


# ============================================================================ writing
@dataclass
class _Level:
    """One pyramid level being written: its array and the slices waiting to be written."""

    array: Any
    factors: tuple[int, int, int]  # (z, y, x) downsampling from the level above (1 or 2)
    slab: int  # slices written at once (the z chunk, or shard)
    pending: list[np.ndarray]
    written: int = 0
    carry: np.ndarray | None = None  # odd slice waiting for its pair (input to this level)


def _pyramid_shapes(spatial_zyx: Sequence[int], levels: int) -> list[tuple[int, int, int]]:
    shapes = [tuple(int(s) for s in spatial_zyx)]
    while len(shapes) < levels:
        prev = shapes[-1]
        if all(s == 1 for s in prev):
            break
        shapes.append(tuple((s + 1) // 2 if s > 1 else 1 for s in prev))
    return shapes  # type: ignore[return-value]


def default_levels(spatial: Sequence[int], chunk: Sequence[int]) -> int:
    """Levels until the coarsest fits in one chunk (the reference implementation's default)."""
    ratio = max(s / c for s, c in zip(spatial, chunk, strict=True))
    return max(1, int(math.ceil(math.log2(ratio))) + 1 if ratio > 1 else 1)


def _reduce(block: np.ndarray, factors: tuple[int, int, int], method: str) -> np.ndarray:
    """Downsample the last three axes by ``factors`` (1 or 2 each); sizes must divide."""
    *lead, z, y, x = block.shape
    fz, fy, fx = factors
    shaped = block.reshape(*lead, z // fz, fz, y // fy, fy, x // fx, fx)
    n = len(lead)
    axes = (n + 1, n + 3, n + 5)
    if method == "nearest":
        return shaped[(Ellipsis, slice(None), 0, slice(None), 0, slice(None), 0)].copy()
    if method == "mean":
        if block.dtype.kind == "f":
            return shaped.mean(axis=axes, dtype=np.float64).astype(block.dtype)
        mean = shaped.mean(axis=axes, dtype=np.float64)
        if block.dtype.kind in "iub":
            info = np.iinfo(block.dtype) if block.dtype.kind != "b" else None
            mean = np.rint(mean)
            if info is not None:
                mean = np.clip(mean, info.min, info.max)
        return mean.astype(block.dtype)
    # majority: the most frequent value of each block (ties: the smallest value)
    moved = np.moveaxis(shaped, axes, (-3, -2, -1))
    votes = moved.reshape(*moved.shape[:-3], fz * fy * fx)
    ordered = np.sort(votes, axis=-1)
    counts = (ordered[..., :, None] == ordered[..., None, :]).sum(-1)
    best = np.argmax(counts, axis=-1)
    return np.take_along_axis(ordered, best[..., None], axis=-1)[..., 0]


def _pad_even(block: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Replicate the last row/column where y or x is odd, so 2-blocks cover it.

    Replication makes every voxel of a border block count equally, so the mean
    and the majority over a padded block equal those over its real voxels.
    """
    pads = [(0, 0)] * (block.ndim - 3)
    for axis, f in zip((-3, -2, -1), factors, strict=True):
        size = block.shape[axis]
        pads.append((0, 1) if f == 2 and size % 2 else (0, 0))
    if any(p != (0, 0) for p in pads):
        return np.pad(block, pads, mode="edge")
    return block


def write_niftizarr(
    image: Any,
    path: str,
    *,
    chunk: int | Sequence[int] = 64,
    shard: int | Sequence[int] | None = None,
    codec: Codec = "blosc",
    compression_level: int | None = None,
    levels: int | None = None,
    method: Method | None = None,
    zarr_format: int = 3,
    label: bool | None = None,
    progress: bool | None = None,
) -> None:
    """Write ``image`` to a NIfTI-Zarr store, streaming slab by slab (atomic).

    Args:
        image: an :class:`~voxelflow.Image` (lazy or loaded).
        path: output ``.nii.zarr`` directory (replaced atomically if it exists).
        chunk: chunk size along ``(I, J, K)`` (one int for all three).
        shard: shard size along ``(I, J, K)`` (a multiple of ``chunk``; Zarr v3 only).
        codec: ``"blosc"`` (lz4 + shuffle), ``"zstd"``, ``"gzip"`` or ``"none"``.
        compression_level: codec level (default: the codec's own).
        levels: pyramid levels including full resolution (default: until the
            coarsest level fits in one chunk; 1 writes no pyramid).
        method: downsampling: ``"mean"`` (default for intensity images),
            ``"majority"`` (default for label maps) or ``"nearest"``. Label maps
            refuse ``"mean"``: labels are never smoothed.
        zarr_format: 3 (OME 0.5, default) or 2 (OME 0.4).
        label: treat the data as labels (default: ``image.type == "label"``).
        progress: show a progress bar (default: only on a terminal).

    The source is read in slabs of ``shard`` (or ``chunk``) slices along
    ``K``; each pyramid level keeps at most one slab of its own, so peak memory
    is about 1.5 slabs, whatever the volume size. Stored values are the file's
    raw values with its ``scl_slope``/``scl_inter`` when the source is a NIfTI
    or NIfTI-Zarr file opened directly; otherwise the values ``image`` reads.
    """
    writer = _Writer(
        image, path, chunk=chunk, shard=shard, codec=codec, compression_level=compression_level,
        levels=levels, method=method, zarr_format=zarr_format, label=label, progress=progress,
    )  # fmt: skip
    writer.run()


SAVE_OPTIONS = (
    "chunk", "shard", "codec", "compression_level", "levels", "method", "zarr_format", "label",
    "progress",
)  # fmt: skip


def save_niftizarr(image: Any, path: str, **options: Any) -> None:
    """Writer-registry entry: validates option names, then :func:`write_niftizarr`."""
    unknown = sorted(set(options) - set(SAVE_OPTIONS))
    if unknown:
        hint = did_you_mean(unknown[0], SAVE_OPTIONS)
        raise VoxelflowValueError(
            f"{path}: unknown NIfTI-Zarr save option(s) {unknown}; known: "
            f"{', '.join(SAVE_OPTIONS)}.{hint}"
        )
    write_niftizarr(image, path, **options)


def _triple(name: str, value: int | Sequence[int], path: str) -> tuple[int, int, int]:
    values = (value,) * 3 if isinstance(value, int | np.integer) else tuple(value)
    if len(values) != 3 or not all(isinstance(v, int | np.integer) and v >= 1 for v in values):
        raise VoxelflowValueError(
            f"{path}: {name}={value!r} must be a positive int or three positive ints (I, J, K)"
        )
    return tuple(int(v) for v in values)  # type: ignore[return-value]


class SlabSource:
    """Reads slabs of an image in zarr order, raw values + header when the file allows."""

    def __init__(self, image: Any, label: bool) -> None:
        self.image = image
        backend = None if image.is_loaded else image.dataobj
        self.backend = backend if backend is not None else None
        header = self._source_header(image, backend)
        if header is not None:
            self.header = header
            self.raw = True
        else:
            self.raw = False
            self.header = self._fresh_header(image, label)
        file_shape = tuple(int(n) for n in self.header.get_data_shape())
        axes = ["z", "y", "x"]
        if len(file_shape) > 4 and file_shape[4] > 1:
            axes.insert(0, "c")
        if len(file_shape) > 3 and file_shape[3] > 1:
            axes.insert(0, "t")
        self.layout = Layout(tuple(axes), file_shape)
        self.dtype = np.dtype(self.header.get_data_dtype()).newbyteorder("=")

    @staticmethod
    def _source_header(image: Any, backend: Any) -> Any:
        if backend is None or image._affine is not None:
            return None
        from voxelflow.backends.nifti import NiftiBackend

        if isinstance(backend, NiftiZarrBackend) and backend.level == 0:
            return backend.nifti_header.copy()
        if isinstance(backend, NiftiBackend):
            loaded = nib.load(backend.header.path)
            header = loaded.header.copy()
            slope, inter = loaded.dataobj.slope, loaded.dataobj.inter
            header.set_slope_inter(slope, inter)
            return header
        return None

    @staticmethod
    def _fresh_header(image: Any, label: bool) -> nib.Nifti1Header:
        dtype = image.dtype
        if dtype in (torch.float16, torch.bfloat16):
            numpy_dtype = np.dtype(np.float32)
        elif dtype == torch.bool:
            numpy_dtype = np.dtype(np.uint8)
        else:
            numpy_dtype = torch.empty(0, dtype=dtype).numpy().dtype
        channels, *spatial = image.shape
        shape = tuple(spatial) + ((channels,) if channels > 1 else ())
        klass = nib.Nifti2Header if max(shape) > 32767 else nib.Nifti1Header
        header = klass()
        header.set_data_shape(shape)
        header.set_data_dtype(numpy_dtype)
        affine = np.asarray(image.affine, dtype=np.float64)
        header.set_qform(affine, code=1)
        header.set_sform(affine, code=1)
        header.set_xyzt_units("mm", "sec")
        if label:
            header.set_intent("label")
        return header

    def read_cijk(self, k0: int, k1: int) -> np.ndarray:
        """Slices ``k0:k1`` (along K) as ``(C, I, J, k)`` values of the stored dtype."""
        channels, i, j, _ = self.image.shape
        box = (slice(0, channels, 1), slice(0, i, 1), slice(0, j, 1), slice(k0, k1, 1))
        if self.raw:
            data = np.moveaxis(np.asarray(self.backend.read_raw(box)), -1, 0)
        elif self.backend is not None:
            data = self.backend.read(box).cpu().numpy()
        else:
            tensor = self.image.data[box]
            if tensor.dtype in (torch.float16, torch.bfloat16, torch.bool):
                tensor = tensor.float() if tensor.dtype != torch.bool else tensor.to(torch.uint8)
            data = tensor.detach().cpu().numpy()
        return data if data.dtype == self.dtype else data.astype(self.dtype)

    def read(self, k0: int, k1: int) -> np.ndarray:
        """Slices ``k0:k1`` (along K) in zarr order, C-contiguous, as the stored dtype."""
        return np.ascontiguousarray(self.layout.to_zarr(self.read_cijk(k0, k1)))


class _Writer:
    def __init__(
        self, image: Any, path: str, *, chunk: Any, shard: Any, codec: str,
        compression_level: int | None, levels: int | None, method: str | None,
        zarr_format: int, label: bool | None, progress: bool | None,
    ) -> None:  # fmt: skip
        self.path = os.fspath(path).rstrip("/")
        if is_remote(self.path):
            raise VoxelflowValueError(
                f"{self.path}: writing NIfTI-Zarr to a remote URI is not supported (no atomic "
                "rename on object storage); write locally, then upload (e.g. aws s3 sync)"
            )
        check_choice("codec", codec, CODECS)
        if zarr_format not in ZARR_FORMATS:
            raise VoxelflowValueError(f"{self.path}: zarr_format={zarr_format!r} must be 2 or 3")
        self.label = image.type == "label" if label is None else bool(label)
        method = method or ("majority" if self.label else "mean")
        check_choice("method", method, METHODS)
        if self.label and method == "mean":
            raise VoxelflowValueError(
                f"{self.path}: method='mean' would invent labels in a label map's pyramid; use "
                "method='majority' or 'nearest' (or label=False if the data are not labels)"
            )
        self.chunk_ijk = _triple("chunk", chunk, self.path)
        self.shard_ijk = None if shard is None else _triple("shard", shard, self.path)
        if self.shard_ijk is not None:
            if zarr_format == 2:
                raise VoxelflowValueError(
                    f"{self.path}: shard= needs zarr_format=3 (Zarr v2 has no sharding)"
                )
            bad = [s for s, c in zip(self.shard_ijk, self.chunk_ijk, strict=True) if s % c]
            if bad:
                raise VoxelflowValueError(
                    f"{self.path}: shard={shard!r} must be a multiple of chunk={chunk!r} on each "
                    "axis"
                )
        if compression_level is not None and codec == "none":
            raise VoxelflowValueError(f"{self.path}: compression_level needs a codec, not 'none'")
        if levels is not None and (not isinstance(levels, int | np.integer) or levels < 1):
            raise VoxelflowValueError(f"{self.path}: levels={levels!r} must be an int >= 1")
        self.codec = codec
        self.compression_level = compression_level
        self.method = method
        self.zarr_format = int(zarr_format)
        self.progress = progress
        self.source = SlabSource(image, self.label)
        spatial = tuple(image.shape[1:])
        self.spatial_zyx = spatial[::-1]
        chunk_zyx = self.chunk_ijk[::-1]
        wanted = levels or default_levels(self.spatial_zyx, chunk_zyx)
        self.shapes = _pyramid_shapes(self.spatial_zyx, int(wanted))
        self.image = image

    # ------------------------------------------------------------------ codecs
    def _compressors(self) -> Any:
        level = self.compression_level
        if self.codec == "none":
            return None
        if self.zarr_format == 3:
            from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

            if self.codec == "blosc":
                return BloscCodec(
                    cname="lz4", clevel=5 if level is None else level, shuffle="shuffle"
                )
            if self.codec == "zstd":
                return ZstdCodec(level=3 if level is None else level)
            return GzipCodec(level=6 if level is None else level)
        import numcodecs

        if self.codec == "blosc":
            return numcodecs.Blosc(cname="lz4", clevel=5 if level is None else level, shuffle=1)
        if self.codec == "zstd":
            return numcodecs.Zstd(level=3 if level is None else level)
        return numcodecs.Zlib(level=6 if level is None else level)

    # ------------------------------------------------------------------ metadata
    def _multiscales(self, pixdim_zyx: Sequence[float], units: tuple[str, str]) -> dict[str, Any]:
        axes_meta = []
        space_unit = _OME_UNITS.get(units[0], "") or "millimeter"
        time_unit = _OME_UNITS.get(units[1], "") or "second"
        for name in self.source.layout.axes:
            if name in "zyx":
                axes_meta.append({"name": name, "type": "space", "unit": space_unit})
            elif name == "t":
                axes_meta.append({"name": name, "type": "time", "unit": time_unit})
            else:
                axes_meta.append({"name": name, "type": "channel"})
        lead = len(self.source.layout.axes) - 3
        datasets = []
        for n in range(len(self.shapes)):
            factor = self._cumulative_factors(n)
            scale = [1.0] * lead + [p * f for p, f in zip(pixdim_zyx, factor, strict=True)]
            shift = [0.0] * lead + [
                p * (f - 1) / 2 for p, f in zip(pixdim_zyx, factor, strict=True)
            ]
            datasets.append(
                {
                    "path": str(n),
                    "coordinateTransformations": [
                        {"type": "scale", "scale": scale},
                        {"type": "translation", "translation": shift},
                    ],
                }
            )
        time_scale = (
            float(self.source.header.get_zooms()[3]) if "t" in self.source.layout.axes else 1.0
        )
        global_scale = [time_scale if a == "t" else 1.0 for a in self.source.layout.axes]
        multiscale: dict[str, Any] = {
            "name": "",
            "type": f"{self.method} window 2x2x2",
            "axes": axes_meta,
            "datasets": datasets,
            "coordinateTransformations": [{"type": "scale", "scale": global_scale}],
        }
        return multiscale

    def _cumulative_factors(self, n: int) -> tuple[int, int, int]:
        factors = [1, 1, 1]
        for level in range(1, n + 1):
            for axis in range(3):
                if self.shapes[level - 1][axis] > 1:
                    factors[axis] *= 2
        return tuple(factors)  # type: ignore[return-value]

    # ------------------------------------------------------------------ run
    def run(self) -> None:
        import zarr
        from tqdm.auto import tqdm
        from zarr.storage import LocalStore

        source = self.source
        header = source.header
        layout = source.layout
        lead = layout.zarr_shape((1, 1, 1))[: len(layout.axes) - 3]
        chunk_zyx = self.chunk_ijk[::-1]
        shard_zyx = None if self.shard_ijk is None else self.shard_ijk[::-1]
        zooms = header.get_zooms()
        pixdim_zyx = [float(z) or 1.0 for z in zooms[:3]][::-1]
        units = header.get_xyzt_units()
        total = int(np.prod(self.spatial_zyx)) * layout.channels * source.dtype.itemsize
        with atomic_target(self.path) as tmp:
            store = LocalStore(tmp)
            group = zarr.open_group(store, mode="w", zarr_format=self.zarr_format)  # type: ignore[arg-type]
            levels: list[_Level] = []
            for n, shape in enumerate(self.shapes):
                chunks = tuple(min(c, s) for c, s in zip(chunk_zyx, shape, strict=True))
                shards = None
                if shard_zyx is not None:
                    shards = tuple(
                        min(sh, -(-s // c) * c)
                        for sh, s, c in zip(shard_zyx, shape, chunks, strict=True)
                    )
                    shards = tuple(
                        max(c, (sh // c) * c) for sh, c in zip(shards, chunks, strict=True)
                    )
                array = self._create(
                    group,
                    str(n),
                    (*lead, *shape),
                    (*lead_chunks(lead), *chunks),
                    shards and (*lead_chunks(lead), *shards),
                )
                factors = tuple(2 if s > 1 else 1 for s in self.shapes[n - 1]) if n else (1, 1, 1)
                slab = (shards or chunks)[0]
                levels.append(_Level(array, factors, slab, []))  # type: ignore[arg-type]
            step = levels[0].slab
            depth = self.spatial_zyx[0]
            bar = tqdm(
                total=total, unit="B", unit_scale=True, desc=f"writing {os.path.basename(self.path)}",
                disable=(None if self.progress is None else not self.progress), leave=False,
            )  # fmt: skip
            try:
                for k0 in range(0, depth, step):
                    k1 = min(depth, k0 + step)
                    slab = source.read(k0, k1)
                    self._push(levels, 0, slab, final=False)
                    bar.update(slab.nbytes)
                self._push(levels, 0, None, final=True)
            finally:
                bar.close()
            group.attrs.update(self._group_attrs(pixdim_zyx, units))
            self._write_header(group, header)

    def _group_attrs(self, pixdim_zyx: Sequence[float], units: tuple[str, str]) -> dict[str, Any]:
        multiscale = self._multiscales(pixdim_zyx, units)
        marker = {COMPLETE_ATTR: {"complete": True, "writer": "voxelflow"}}
        if self.zarr_format == 3:
            return {"ome": {"version": "0.5", "multiscales": [multiscale]}, **marker}
        multiscale["version"] = "0.4"
        return {"multiscales": [multiscale], **marker}

    def _create(
        self,
        group: Any,
        name: str,
        shape: tuple[int, ...],
        chunks: tuple[int, ...],
        shards: tuple[int, ...] | None,
    ) -> Any:
        from zarr.core.chunk_key_encodings import ChunkKeyEncodingParams

        axes = list(self.source.layout.axes)
        kwargs: dict[str, Any] = {
            "name": name, "shape": shape, "chunks": chunks, "dtype": self.source.dtype,
            "compressors": self._compressors(), "fill_value": 0,
            "attributes": {"_ARRAY_DIMENSIONS": axes},
            "config": {"write_empty_chunks": True},
        }  # fmt: skip
        if self.zarr_format == 3:
            kwargs["dimension_names"] = axes
            kwargs["chunk_key_encoding"] = ChunkKeyEncodingParams(name="default", separator="/")
            if shards is not None:
                kwargs["shards"] = shards
        else:
            kwargs["chunk_key_encoding"] = ChunkKeyEncodingParams(name="v2", separator="/")
        return group.create_array(**kwargs)

    def _write_header(self, group: Any, header: Any) -> None:
        from zarr.core.chunk_key_encodings import ChunkKeyEncodingParams

        stream = io.BytesIO()
        header.write_to(stream)
        raw = np.frombuffer(stream.getvalue(), dtype=np.uint8)
        if len(header.extensions) == 0:
            raw = raw[: int(header.sizeof_hdr)]
        encoding = ChunkKeyEncodingParams(
            name="default" if self.zarr_format == 3 else "v2", separator="/"
        )
        array = group.create_array(
            name="nifti", shape=raw.shape, chunks=raw.shape, dtype=np.uint8, compressors=None,
            fill_value=0, chunk_key_encoding=encoding, attributes=header_json(header),
        )  # fmt: skip
        array[...] = raw

    def _push(self, levels: list[_Level], n: int, slices: np.ndarray | None, final: bool) -> None:
        """Give ``slices`` (zarr order, z = axis -3) to level ``n``; write whole slabs."""
        level = levels[n]
        if slices is not None and slices.shape[-3]:
            level.pending.append(slices)
        buffered = sum(p.shape[-3] for p in level.pending)
        while buffered >= level.slab or (final and buffered):
            data = (
                np.concatenate(level.pending, axis=-3)
                if len(level.pending) > 1
                else level.pending[0]
            )
            take = min(level.slab, data.shape[-3])
            out, rest = data[..., :take, :, :], data[..., take:, :, :]
            z0 = level.written
            level.array[(Ellipsis, slice(z0, z0 + take), slice(None), slice(None))] = out
            level.written += take
            level.pending = [rest] if rest.shape[-3] else []
            buffered -= take
            if n + 1 < len(levels):
                self._push(
                    levels, n + 1, self._downsample(levels[n + 1], out, final=False), final=False
                )
        if final and n + 1 < len(levels):
            self._push(levels, n + 1, self._downsample(levels[n + 1], None, final=True), final=True)

    def _downsample(
        self, target: _Level, slices: np.ndarray | None, final: bool
    ) -> np.ndarray | None:
        """Downsample incoming slices for ``target``, keeping an odd z slice for its pair."""
        parts = [p for p in (target.carry, slices) if p is not None]
        target.carry = None
        if not parts:
            return None
        data = np.concatenate(parts, axis=-3) if len(parts) > 1 else parts[0]
        fz = target.factors[0]
        if fz == 2:
            usable = data.shape[-3] - data.shape[-3] % 2
            if not final and usable < data.shape[-3]:
                target.carry = data[..., usable:, :, :].copy()
                data = data[..., :usable, :, :]
            if data.shape[-3] == 0:
                return None
        data = _pad_even(data, target.factors)
        return _reduce(data, target.factors, self.method)


def lead_chunks(lead: Sequence[int]) -> tuple[int, ...]:
    """Non-spatial axes (t, c) are chunked one value at a time."""
    return tuple(1 for _ in lead)

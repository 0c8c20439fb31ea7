"""NIfTI-Zarr (``.nii.zarr``): chunked, multi-resolution NIfTI, local or on object storage.

The format (`neuroscales/nifti-zarr`_) is an OME-Zarr multiscale image (OME 0.4
on Zarr v2, OME 0.5 on Zarr v3) whose group also holds an array named
``nifti`` with the binary NIfTI-1 or NIfTI-2 header (its attributes hold a
JSON rendering for people). Arrays are stored in OME order ``(t, c, z, y, x)``:
the reverse of NIfTI's ``(i, j, k, t, c)``, so ``x`` is ``i`` and ``z`` is ``k``
(see :mod:`voxelflow.backends._niftizarr_layout`).

Reading goes straight through zarr-python 3, chunk by chunk: a region read
fetches and decodes only the chunks (or shard ranges) it overlaps, concurrently
on remote stores. The binary header is the truth for the affine, the dtype and
the intensity scaling (``scl_slope``/``scl_inter`` are applied; the reference
reader drops them). Any pyramid level can be opened; its affine is the header's
affine composed with the level's OME scale and translation, so averaged levels
get the half-voxel shift they need.

Writing lives in :mod:`voxelflow.backends.niftizarr_write`
(:func:`~voxelflow.backends.niftizarr_write.write_niftizarr`).

.. _neuroscales/nifti-zarr: https://github.com/neuroscales/nifti-zarr
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import nibabel as nib
import numpy as np
import torch

from voxelflow._errors import (
    VoxelflowConnectionError,
    VoxelflowError,
    VoxelflowFileNotFoundError,
    VoxelflowIndexError,
    VoxelflowPermissionError,
    VoxelflowValueError,
    check_choice,
)
from voxelflow._indexing import Box
from voxelflow.backends._niftizarr_layout import layout_for
from voxelflow.backends.base import Backend, apply_scaling, scaled_dtype, torch_dtype

MissingChunks = Literal["auto", "error", "fill"]

MISSING_CHUNKS: tuple[str, ...] = ("auto", "error", "fill")
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

    path: str  # always set: the store's location

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

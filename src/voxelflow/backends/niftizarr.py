"""NIfTI-Zarr (``.nii.zarr``): chunked, multi-resolution NIfTI, local or on object storage.

The format (`neuroscales/nifti-zarr`_) is an OME-Zarr multiscale image (OME 0.4
on Zarr v2, OME 0.5 on Zarr v3) whose group also holds an array named
``nifti`` with the binary NIfTI-1 or NIfTI-2 header (its attributes hold a
JSON rendering for people). This module owns the reader: opening (metadata
only, validated: header against arrays, every pyramid level against level 0)
and region reads, which go straight through zarr-python 3 into the caller's
buffer, fetching and decoding only the chunks (or shard ranges) they overlap,
concurrently on remote stores. The binary header is the truth for the affine,
the dtype and the intensity scaling (``scl_slope``/``scl_inter`` are
applied; the reference reader drops them). Any pyramid level can be opened;
its affine is the header's affine composed with the level's OME scale and
translation, so averaged levels get the half-voxel shift they need.

Layout and metadata: :mod:`voxelflow.backends.niftizarr_meta`; fetching
objects (bounded, guarded): :mod:`voxelflow.backends.niftizarr_store`;
writing: :mod:`voxelflow.backends.niftizarr_write`.

.. _neuroscales/nifti-zarr: https://github.com/neuroscales/nifti-zarr
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from typing import Any, Literal

import nibabel as nib
import numpy as np
import torch

from voxelflow._errors import (
    VoxelflowError,
    VoxelflowFileNotFoundError,
    VoxelflowIndexError,
    VoxelflowValueError,
    check_choice,
)
from voxelflow._indexing import Box
from voxelflow.backends._fsspec import (
    describe_remote_error,
    filesystem,
    is_remote,
    is_transient,
    strip_file,
)
from voxelflow.backends.base import (
    Backend,
    is_scaled,
    numpy_view,
    scaled_dtype,
    store_into,
    torch_dtype,
)
from voxelflow.backends.nifti_header import NiftiHeaderType, check_dims, parse_header_bytes
from voxelflow.backends.niftizarr_meta import (
    COMPLETE_ATTR,
    check_levels,
    layout_for,
    level_affine,
)
from voxelflow.backends.niftizarr_store import (
    ChunkError,
    StoreGuard,
    first_failure,
    open_store,
    recording_failures,
)

MissingChunks = Literal["auto", "error", "fill"]

MISSING_CHUNKS: tuple[str, ...] = ("auto", "error", "fill")


def is_niftizarr_source(source: str) -> bool:
    name = source.rstrip("/").lower()
    return name.endswith((".nii.zarr", ".zarr"))


def is_niftizarr_output(path: str) -> bool:
    return path.rstrip("/").lower().endswith(".zarr")


# ============================================================================ the backend
class NiftiZarrBackend(Backend):
    """A NIfTI-Zarr store (``.nii.zarr`` directory or ``s3://``/``gs://``/``https://`` URI).

    Opening reads only metadata (group attributes, the ``nifti`` header array
    and the levels' array metadata). A region read fetches and decodes only the
    chunks it overlaps, concurrently, straight into the caller's buffer.

    Args:
        source: path or URI of the store.
        level: pyramid level to open (0 is full resolution; negative counts from
            the coarsest). Its affine accounts for the level's scale and shift.
        storage_options: passed to fsspec for remote stores (``endpoint_url``,
            ``key``, ``secret``, ``anon``...), and ``connect_timeout`` /
            ``read_timeout`` (seconds) for every request.
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
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise VoxelflowValueError(f"retries={retries!r} must be an integer >= 0")
        self.path = os.fspath(source).rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.retries = int(retries)
        self._missing_option = missing_chunks
        self._group: Any = None
        self._array: Any = None
        self._store: Any = None
        self._guard = self._new_guard()
        self._open_metadata(level)

    def _new_guard(self) -> StoreGuard:
        root = None if is_remote(self.path) else strip_file(self.path)
        return StoreGuard(self.path, root, self.retries)

    # ------------------------------------------------------------------ opening
    def _open_group(self) -> Any:
        import zarr

        store = open_store(
            self.path, self.storage_options, read_only=True, retries=self.retries, guard=self._guard
        )
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
        marker = attrs.get(COMPLETE_ATTR)
        if isinstance(marker, dict) and marker.get("complete") is False:
            raise VoxelflowValueError(
                f"{self.path}: the store is incomplete: voxelflow was still writing it when the "
                "writer stopped (killed, or failed); it is not an image; delete it and write it "
                "again"
            )
        self.complete = isinstance(marker, dict) and marker.get("complete") is True
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
        header = parse_header_bytes(raw_header, f"{self.path}/nifti")
        check_dims(header, f"{self.path}/nifti")
        self.nifti_header_raw = header
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
            self._check_array(array, n)
            if n == self.level:
                codecs = _codec_names(array)
                chunk_bytes = _raw_chunk_bytes(array)
                if chunk_bytes is not None:
                    self._guard.chunk_bytes[str(dataset["path"])] = chunk_bytes
        check_levels(self.path, datasets, self.layout.axes, self.level_shapes)
        self.codecs = codecs
        self.missing_chunks = (
            ("error" if self.complete else "fill")
            if self._missing_option == "auto"
            else self._missing_option
        )
        if self.missing_chunks == "error":
            self._guard.strict_prefixes = (f"{self.datasets[self.level]['path']}/",)
        zshape = self.level_shapes[self.level]
        x, y, z = (zshape[self.layout.axes.index(a)] for a in "xyz")
        self.shape = (self.layout.channels, x, y, z)
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
        except VoxelflowError:
            raise
        except Exception as error:
            raise self._metadata_error("nifti", error) from error
        try:
            return np.asarray(array[...], dtype=np.uint8).tobytes()
        except VoxelflowError:
            raise
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
        except VoxelflowError:
            raise
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
        name = self.datasets[level]["path"]
        if stored.newbyteorder("=") != header.newbyteorder("="):
            raise VoxelflowValueError(
                f"{self.path}: the NIfTI header says dtype {header} but array {name!r} stores "
                f"{stored}; the header disagrees with the array; re-convert the volume"
            )
        shape = tuple(int(s) for s in array.shape)
        if len(shape) != len(self.layout.axes):
            raise VoxelflowValueError(
                f"{self.path}: array {name!r} has {len(shape)} dims but the OME axes are "
                f"{list(self.layout.axes)}; re-convert the volume"
            )
        if level == 0:
            expected = self.layout.zarr_shape(self.layout.file_shape[:3])
            if shape != expected:
                raise VoxelflowValueError(
                    f"{self.path}: the NIfTI header describes dims {self.layout.file_shape} "
                    f"(zarr order {expected}) but array {name!r} has shape {shape}; the header "
                    "disagrees with the array; re-convert the volume"
                )

    def _zarr_array(self) -> Any:
        if self._array is None:
            import zarr

            path = self.datasets[self.level]["path"]
            if self._store is None:
                self._store = open_store(
                    self.path,
                    self.storage_options,
                    read_only=True,
                    retries=self.retries,
                    guard=self._guard,
                )
            try:
                self._array = zarr.open_array(self._store, path=path, mode="r")
            except VoxelflowError:
                raise
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

    # ------------------------------------------------------------------ facts
    @property
    def cache_key(self) -> Hashable | None:
        """Local stores: path, level and the level's metadata file time; remote: ``None``."""
        if is_remote(self.path):
            return None
        root = strip_file(self.path)
        level = str(self.datasets[self.level]["path"])
        times = []
        for name in ("zarr.json", ".zarray"):
            meta = os.path.join(root, level, name)
            if os.path.exists(meta):
                times.append(os.stat(meta).st_mtime_ns)
        return ("nifti-zarr", os.path.realpath(root), level, tuple(times))

    @property
    def nifti_header(self) -> NiftiHeaderType | None:
        """The stored NIfTI header (level 0's dims), scaling included, for writers."""
        return self.nifti_header_raw.copy()

    @property
    def stored_dtype(self) -> np.dtype:
        return self.raw_dtype

    # ------------------------------------------------------------------ reading
    def _selection(self, box: Box | None) -> tuple[tuple[slice, ...], slice | None]:
        """Zarr selection for ``box``, and a channel slice still to apply afterwards."""
        layout = self.layout
        channels, i, j, k = self.whole_box() if box is None else box
        after: slice | None = None
        per_axis = {"x": i, "y": j, "z": k, "t": slice(None), "c": slice(None)}
        if layout.c == 1:
            per_axis["t"] = channels
        elif layout.t == 1:
            per_axis["c"] = channels
        else:
            after = channels
        return tuple(per_axis[a] for a in layout.axes), after

    def _zarr_view(self, out: np.ndarray) -> np.ndarray | None:
        """``out`` (``(C, I, J, K)``) seen in zarr axis order, or None when the layout has two
        non-spatial axes (then channels must be cut after the read)."""
        lead = [a for a in self.layout.axes if a in "tc"]
        if len(lead) > 1:
            return None
        view = out.transpose(0, 3, 2, 1)  # (C, z, y, x)
        return view if lead else view[0]

    def read_zarr(self, box: Box | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """The stored (unscaled) values of ``box`` in zarr axis order (into ``out`` if given)."""
        from zarr.core.buffer.cpu import NDBuffer

        selection, _ = self._selection(box)
        array = self._zarr_array()
        target = None if out is None else NDBuffer.from_numpy_array(out)
        try:
            with recording_failures() as failures:
                data = array.get_basic_selection(selection, out=target)
            failure = first_failure(failures)
            if failure is not None:
                raise failure
            return out if out is not None else np.asarray(data)
        except ChunkError as error:
            raise VoxelflowValueError(f"{error} (level {self.level})") from None
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
        prefix = f"{self.datasets[self.level]['path']}/"
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
                    return prefix + array.metadata.encode_chunk_key(outer)
                return prefix + array.metadata.encode_chunk_key(chunk)
        return None

    def read_stored(self, box: Box | None = None) -> np.ndarray:
        """Stored (unscaled) values of ``box`` as a new ``(C, I, J, K)`` array."""
        box = self.normalise_box(box)
        data = self.read_zarr(box)
        out = self.layout.from_zarr(data)
        _, after = self._selection(box)
        out = out[after] if after is not None else out
        return np.asarray(out, dtype=out.dtype.newbyteorder("="))

    def read(self, box: Box | None = None) -> torch.Tensor:
        """A new tensor laid out in memory as the chunks are (``(C, K, J, I)``), so that zarr
        decodes each chunk straight into it."""
        channels, i, j, k = self.box_shape(box)
        out = torch.empty((channels, k, j, i), dtype=self.dtype).permute(0, 3, 2, 1)
        self.read_into(box, out)
        return out

    def read_into(self, box: Box | None, out: torch.Tensor) -> None:
        box = self.check_out(box, out)
        view = numpy_view(out)
        slope, inter, scaled = self.slope, self.inter, self.scaled_dtype
        direct = view is not None and (
            view.dtype == scaled
            or (not is_scaled(slope, inter) and np.can_cast(self.raw_dtype, view.dtype, "safe"))
        )
        zarr_view = None if view is None or not direct else self._zarr_view(view)
        if zarr_view is not None and not zarr_view.flags.c_contiguous and zarr_view.size > 4096:
            zarr_view = None  # transposing inside zarr is slow: decode, then a tiled copy
        if view is not None and zarr_view is not None:
            self.read_zarr(box, zarr_view)  # zarr decodes each chunk into ``out``
            if is_scaled(slope, inter):  # ``out`` has the scaled dtype: scale it in place
                store_into(view, out, slope, inter, scaled)
            return
        store_into(self.read_stored(box), out, slope, inter, scaled)

    # ------------------------------------------------------------------ facts
    def describe(self) -> dict[str, Any]:
        def ijk(zarr_tuple: Sequence[int] | None) -> list[int] | None:
            if zarr_tuple is None:
                return None
            return [int(zarr_tuple[self.layout.axes.index(a)]) for a in "xyz"]

        facts: dict[str, Any] = {
            "format": f"NIfTI-Zarr (OME {self.ome_version}, Zarr v{self.zarr_format}, "
            f"NIfTI-{2 if isinstance(self.nifti_header_raw, nib.Nifti2Header) else 1} header)",
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
                for root, _, files in os.walk(strip_file(self.path)):
                    total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
                return total
            fs, path = filesystem(self.path, self.storage_options)
            return int(fs.du(path, total=True))
        except Exception:
            return None


def _raw_chunk_bytes(array: Any) -> int | None:
    """Bytes of every chunk of an uncompressed, unsharded array (its only codec is the
    byte layout), else None."""
    try:
        metadata = array.metadata
        if array.shards is not None:
            return None
        if getattr(metadata, "zarr_format", 3) == 2:
            if metadata.compressor is not None or metadata.filters:
                return None
        elif len(metadata.codecs) != 1 or type(metadata.codecs[0]).__name__ != "BytesCodec":
            return None
        return int(np.prod(array.chunks, dtype=np.int64)) * np.dtype(array.dtype).itemsize
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

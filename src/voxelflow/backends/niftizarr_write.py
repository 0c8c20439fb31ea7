"""The NIfTI-Zarr writer: creates and finalises ``.nii.zarr`` stores, atomically.

One writer for every producer of NIfTI-Zarr (``Image.save``, ``convert``, the
on-disk patch aggregator, argmax reductions): :class:`NiftiZarrWriter`.

* :meth:`~NiftiZarrWriter.create` makes the store under a hidden temporary
  name beside the target (``.NAME.partial-<id>.NAME``): the group, the
  ``nifti`` header array (binary header + its 39-field JSON rendering), level
  0, and the OME ``multiscales`` metadata, marked ``{"voxelflow":
  {"complete": false}}``. An existing output is refused unless
  ``overwrite=True``, and even then only a store that is recognisably an image
  is replaced.
* :meth:`~NiftiZarrWriter.write` / :meth:`~NiftiZarrWriter.read` put and get
  ``(C, I, J, K)`` boxes of level 0 (read-modify-write accumulation works).
* :meth:`~NiftiZarrWriter.finalize` builds the pyramid levels from level 0,
  slab by slab (mean for intensities, majority vote for labels, or
  nearest), marks the store complete, and publishes it: the old output (if
  any) is renamed aside, the new one renamed in, the old one deleted. A
  store whose marker says incomplete never opens as an image.
* :meth:`~NiftiZarrWriter.abort` removes the partial; ``with`` does either.

Stores are Zarr v3 (OME 0.5) by default, with a CRC-32C checksum on every
chunk (a flipped byte is an error naming the chunk, even without
compression), or Zarr v2 (OME 0.4). :func:`write_niftizarr` streams any image
into a writer slab by slab along ``K``, so the volume never has to fit in
memory. Reading is :class:`~voxelflow.backends.niftizarr.NiftiZarrBackend`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from voxelflow._atomic import check_target, hidden_sibling, publish, remove
from voxelflow._errors import VoxelflowError, VoxelflowValueError, check_choice, did_you_mean
from voxelflow._geometry import to_positive_triplet
from voxelflow.backends._fsspec import is_remote
from voxelflow.backends.base import storable, storable_dtype
from voxelflow.backends.nifti_header import NiftiHeaderType
from voxelflow.backends.nifti_write import write_error
from voxelflow.backends.niftizarr_meta import (
    COMPLETE_ATTR,
    Layout,
    default_levels,
    header_json,
    multiscales,
    pyramid_shapes,
)
from voxelflow.backends.niftizarr_store import recording_writes
from voxelflow.backends.write_source import WriteSource, fresh_header, header_affine, source_of

Codec = Literal["blosc", "zstd", "gzip", "none"]
Method = Literal["mean", "majority", "nearest"]

CODECS: tuple[str, ...] = ("blosc", "zstd", "gzip", "none")
METHODS: tuple[str, ...] = ("mean", "majority", "nearest")
ZARR_FORMATS = (2, 3)

Box4 = tuple[slice, slice, slice, slice]


def layout_of(header: NiftiHeaderType) -> Layout:
    """The axes a header's dims are stored on: ``z, y, x`` plus ``t`` and ``c`` when > 1."""
    file_shape = tuple(int(n) for n in header.get_data_shape())
    axes = ["z", "y", "x"]
    if len(file_shape) > 4 and file_shape[4] > 1:
        axes.insert(0, "c")
    if len(file_shape) > 3 and file_shape[3] > 1:
        axes.insert(0, "t")
    return Layout(tuple(axes), file_shape)


class NiftiZarrWriter:
    """Creates, fills and finalises one NIfTI-Zarr store (see the module's docs).

    Use :meth:`create`; ``with NiftiZarrWriter.create(...) as store:`` finalises
    on success and aborts on error.

    Example:
        >>> import numpy as np, os, tempfile, torch, voxelflow as tio
        >>> from voxelflow.backends import NiftiZarrWriter
        >>> path = os.path.join(tempfile.mkdtemp(), "out.nii.zarr")
        >>> with NiftiZarrWriter.create(path, shape=(2, 8, 8, 8), dtype=torch.float32,
        ...                             affine=np.eye(4), chunks=4, levels=2) as store:
        ...     box = (slice(0, 2), slice(0, 8), slice(0, 8), slice(0, 8))
        ...     store.write(box, torch.ones(2, 8, 8, 8))
        ...     store.write(box, store.read(box) + 1)  # read-modify-write
        >>> image = tio.ScalarImage(path)
        >>> image.shape, float(image.data.mean()), tio.ScalarImage(path, level=1).shape
        ((2, 8, 8, 8), 2.0, (2, 4, 4, 4))
    """

    def __init__(
        self,
        path: str,
        tmp: str,
        header: NiftiHeaderType,
        *,
        chunks: tuple[int, int, int],
        shards: tuple[int, int, int] | None,
        codec: str,
        compression_level: int | None,
        checksum: bool,
        levels: int,
        method: str,
        zarr_format: int,
        overwrite: bool,
    ) -> None:
        self.path = path
        self.tmp = tmp
        self.header = header
        self.layout = layout_of(header)
        self.dtype = np.dtype(header.get_data_dtype()).newbyteorder("=")
        self.chunks = chunks
        self.shards = shards
        self.codec = codec
        self.compression_level = compression_level
        self.checksum = checksum
        self.method = method
        self.zarr_format: Literal[2, 3] = 3 if zarr_format == 3 else 2
        self.overwrite = overwrite
        i, j, k = (int(n) for n in header.get_data_shape()[:3])
        self.shape = (self.layout.channels, i, j, k)
        self.shapes = pyramid_shapes((k, j, i), levels)
        self.state: Literal["open", "finalized", "aborted"] = "open"
        self._group: Any = None
        self._store: Any = None
        self._levels: list[Any] = []
        # The pyramid is built on the fly while level 0 arrives in whole slabs in K order
        # (streamed writes); any other write pattern rebuilds it from level 0 at the end.
        self._next_k: int | None = 0
        self._pending: list[list[np.ndarray]] = []
        self._carry: list[np.ndarray | None] = []
        self._written: list[int] = []

    # ------------------------------------------------------------------ creating
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        shape: Sequence[int],
        dtype: torch.dtype | np.dtype | type | None = None,
        affine: np.ndarray | None = None,
        *,
        chunks: int | Sequence[int] = 64,
        shards: int | Sequence[int] | None = None,
        codec: Codec = "blosc",
        compression_level: int | None = None,
        checksum: bool | None = None,
        label: bool = False,
        levels: int | None = 1,
        method: Method | None = None,
        zarr_format: int = 3,
        overwrite: bool = False,
        storage_options: dict[str, Any] | None = None,
        header: NiftiHeaderType | None = None,
    ) -> NiftiZarrWriter:
        """Create the store (hidden, marked incomplete) and return its writer.

        Args:
            path: the output ``.nii.zarr`` (a local directory).
            shape: ``(C, I, J, K)``.
            dtype: stored dtype (torch or NumPy; half floats are stored as float32,
                booleans as uint8); default: ``header``'s.
            affine: 4×4 voxel-to-world matrix; default: ``header``'s.
            chunks: chunk size along ``(I, J, K)`` (one int for all three).
            shards: shard size along ``(I, J, K)`` (a multiple of ``chunks``; Zarr v3).
            codec: ``"blosc"`` (lz4 + shuffle), ``"zstd"``, ``"gzip"`` or ``"none"``.
            compression_level: the codec's level (default: its own).
            checksum: a CRC-32C per chunk (default: on for Zarr v3; v2 has none).
            label: label map: intent "label", majority-vote pyramid.
            levels: pyramid levels including full resolution (``None``: until the
                coarsest fits in one chunk).
            method: ``"mean"``, ``"majority"`` or ``"nearest"`` (default: majority for
                labels, mean otherwise; labels refuse ``"mean"``).
            zarr_format: 3 (OME 0.5) or 2 (OME 0.4).
            overwrite: replace an existing output (only one that is an image).
            storage_options: for remote paths, which are refused (no atomic rename on
                object storage): write locally, then upload.
            header: a NIfTI header to store (its codes, units, intent, scaling and
                dims; dims must describe ``shape``).
        """
        from voxelflow.backends.registry import is_image

        path = os.fspath(path).rstrip("/")
        if is_remote(path):
            raise VoxelflowValueError(
                f"{path}: writing NIfTI-Zarr to a remote URI is not supported (no atomic "
                "rename on object storage); write locally, then upload (e.g. aws s3 sync)"
            )
        check_choice("codec", codec, CODECS)
        if zarr_format not in ZARR_FORMATS:
            raise VoxelflowValueError(f"{path}: zarr_format={zarr_format!r} must be 2 or 3")
        method = method or ("majority" if label else "mean")
        check_choice("method", method, METHODS)
        if label and method == "mean":
            raise VoxelflowValueError(
                f"{path}: method='mean' would invent labels in a label map's pyramid; use "
                "method='majority' or 'nearest' (or label=False if the data are not labels)"
            )
        chunk_ijk = to_positive_triplet(chunks, f"{path}: chunk")
        shard_ijk = None if shards is None else to_positive_triplet(shards, f"{path}: shard")
        if shard_ijk is not None:
            if zarr_format == 2:
                raise VoxelflowValueError(
                    f"{path}: shard= needs zarr_format=3 (Zarr v2 has no sharding)"
                )
            if any(s % c for s, c in zip(shard_ijk, chunk_ijk, strict=True)):
                raise VoxelflowValueError(
                    f"{path}: shard={shards!r} must be a multiple of chunk={chunks!r} on each axis"
                )
        if compression_level is not None and codec == "none":
            raise VoxelflowValueError(f"{path}: compression_level needs a codec, not 'none'")
        if checksum and zarr_format == 2:
            raise VoxelflowValueError(f"{path}: checksum=True needs zarr_format=3")
        if levels is not None and (
            isinstance(levels, bool) or not isinstance(levels, int | np.integer) or levels < 1
        ):
            raise VoxelflowValueError(f"{path}: levels={levels!r} must be an int >= 1")
        shape4 = tuple(int(n) for n in shape)
        if len(shape4) != 4 or min(shape4) < 1:
            raise VoxelflowValueError(
                f"{path}: shape={tuple(shape)!r} must be four sizes (C, I, J, K) >= 1"
            )
        if header is None:
            if dtype is None or affine is None:
                raise VoxelflowValueError(f"{path}: pass dtype= and affine= (or a header=)")
            header = fresh_header(
                shape4,
                storable_dtype(dtype if isinstance(dtype, torch.dtype) else np.dtype(dtype)),
                np.asarray(affine, dtype=np.float64),
                label=label,
                channels_on="c",
            )
        else:
            header = header.copy()
            if dtype is not None:
                header.set_data_dtype(
                    storable_dtype(dtype if isinstance(dtype, torch.dtype) else np.dtype(dtype))
                )
            if affine is not None and not np.allclose(header_affine(header), affine, atol=1e-6):
                from voxelflow.backends.write_source import set_affine

                set_affine(header, affine, int(header["qform_code"]), int(header["sform_code"]))
        layout = layout_of(header)
        if (layout.channels, *layout.file_shape[:3]) != shape4:
            raise VoxelflowValueError(
                f"{path}: header dims {layout.file_shape} do not describe shape {shape4}"
            )
        spatial_zyx = shape4[1:][::-1]
        count = int(levels) if levels is not None else default_levels(spatial_zyx, chunk_ijk[::-1])
        check_target(path, overwrite=overwrite, replaceable=is_image)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        writer = cls(
            path,
            hidden_sibling(path, "partial"),
            header,
            chunks=chunk_ijk,
            shards=shard_ijk,
            codec=codec,
            compression_level=compression_level,
            checksum=zarr_format == 3 if checksum is None else bool(checksum),
            levels=count,
            method=method,
            zarr_format=int(zarr_format),
            overwrite=overwrite,
        )
        try:
            writer._start()
        except BaseException as error:
            writer.abort()
            if isinstance(error, OSError) and not isinstance(error, VoxelflowError):
                raise write_error(path, error) from error
            raise
        return writer

    def _start(self) -> None:
        import zarr
        from zarr.storage import LocalStore

        self._store = recording_writes(LocalStore(self.tmp))
        self._group = zarr.open_group(self._store, mode="w", zarr_format=self.zarr_format)
        self._group.attrs.update(self._group_attrs(complete=False))
        self._write_header()
        self._levels = [self._create_level(n) for n in range(len(self.shapes))]
        self._raise_failure()
        self._pending = [[] for _ in self.shapes]
        self._carry = [None for _ in self.shapes]
        self._written = [0 for _ in self.shapes]

    def _raise_failure(self) -> None:
        """Raise the first write that failed (all of zarr's writes in flight have ended)."""
        failures = self._store.failures if self._store is not None else []
        if failures:
            raise failures[0]

    # ------------------------------------------------------------------ metadata
    def _group_attrs(self, *, complete: bool) -> dict[str, Any]:
        header = self.header
        zooms = header.get_zooms()
        pixdim_zyx = [float(z) or 1.0 for z in zooms[:3]][::-1]
        time_scale = float(zooms[3]) if "t" in self.layout.axes and len(zooms) > 3 else 1.0
        entry = multiscales(
            self.layout,
            self.shapes,
            pixdim_zyx,
            header.get_xyzt_units(),
            time_scale=time_scale or 1.0,
            method=self.method,
        )
        marker = {COMPLETE_ATTR: {"complete": complete, "writer": "voxelflow"}}
        if self.zarr_format == 3:
            return {"ome": {"version": "0.5", "multiscales": [entry]}, **marker}
        entry["version"] = "0.4"
        return {"multiscales": [entry], **marker}

    def _encoding(self) -> Any:
        from zarr.core.chunk_key_encodings import ChunkKeyEncodingParams

        if self.zarr_format == 3:
            return ChunkKeyEncodingParams(name="default", separator="/")
        return ChunkKeyEncodingParams(name="v2", separator="/")

    def _write_header(self) -> None:
        header = self.header
        stream = io.BytesIO()
        header.write_to(stream)
        raw = np.frombuffer(stream.getvalue(), dtype=np.uint8)
        if len(header.extensions) == 0:
            raw = raw[: int(header.sizeof_hdr)]
        array = self._group.create_array(
            name="nifti", shape=raw.shape, chunks=raw.shape, dtype=np.uint8, compressors=None,
            fill_value=0, chunk_key_encoding=self._encoding(), attributes=header_json(header),
        )  # fmt: skip
        array[...] = raw

    def _compressors(self) -> Any:
        level = self.compression_level
        if self.zarr_format == 3:
            from zarr.codecs import BloscCodec, Crc32cCodec, GzipCodec, ZstdCodec

            codecs: list[Any] = []
            if self.codec == "blosc":
                codecs.append(
                    BloscCodec(cname="lz4", clevel=5 if level is None else level, shuffle="shuffle")
                )
            elif self.codec == "zstd":
                codecs.append(ZstdCodec(level=3 if level is None else level))
            elif self.codec == "gzip":
                codecs.append(GzipCodec(level=6 if level is None else level))
            if self.checksum:
                codecs.append(Crc32cCodec())
            return codecs or None
        import numcodecs

        if self.codec == "none":
            return None
        if self.codec == "blosc":
            return numcodecs.Blosc(cname="lz4", clevel=5 if level is None else level, shuffle=1)
        if self.codec == "zstd":
            return numcodecs.Zstd(level=3 if level is None else level)
        return numcodecs.Zlib(level=6 if level is None else level)

    def _create_level(self, n: int) -> Any:
        lead = self.layout.zarr_shape((1, 1, 1))[: len(self.layout.axes) - 3]
        shape = self.shapes[n]
        chunk_zyx = tuple(min(c, s) for c, s in zip(self.chunks[::-1], shape, strict=True))
        shards = None
        if self.shards is not None:
            shards = tuple(
                max(c, (min(sh, -(-s // c) * c) // c) * c)
                for sh, s, c in zip(self.shards[::-1], shape, chunk_zyx, strict=True)
            )
        axes = list(self.layout.axes)
        ones = (1,) * len(lead)
        kwargs: dict[str, Any] = {
            "name": str(n), "shape": (*lead, *shape), "chunks": (*ones, *chunk_zyx),
            "dtype": self.dtype, "compressors": self._compressors(), "fill_value": 0,
            "attributes": {"_ARRAY_DIMENSIONS": axes}, "config": {"write_empty_chunks": True},
            "chunk_key_encoding": self._encoding(),
        }  # fmt: skip
        if self.zarr_format == 3:
            kwargs["dimension_names"] = axes
            if shards is not None:
                kwargs["shards"] = (*ones, *shards)
        return self._group.create_array(**kwargs)

    # ------------------------------------------------------------------ data
    def _selection(self, box: Sequence[slice]) -> tuple[slice, ...]:
        channels, i, j, k = (slice(*s.indices(n)) for s, n in zip(box, self.shape, strict=True))
        if any(s.step != 1 for s in (channels, i, j, k)):
            raise VoxelflowValueError(f"{self.path}: write/read boxes take steps of 1, got {box}")
        per_axis = {"x": i, "y": j, "z": k, "t": slice(None), "c": slice(None)}
        lead = [a for a in self.layout.axes if a in "tc"]
        if len(lead) == 1:
            per_axis[lead[0]] = channels
        elif (channels.start, channels.stop) != (0, self.shape[0]):
            raise VoxelflowValueError(
                f"{self.path}: with both time and vector dims, a box covers all channels"
            )
        return tuple(per_axis[a] for a in self.layout.axes)

    def _check_open(self) -> None:
        if self.state != "open":
            raise VoxelflowValueError(
                f"{self.path}: the writer is {self.state}; create a new one to write again"
            )

    def write(self, box: Sequence[slice], data: torch.Tensor | np.ndarray) -> None:
        """Store ``data`` (shaped like ``box``, four slices ``(C, I, J, K)``) in level 0."""
        self._check_open()
        values = storable(data, self.dtype)
        expected = tuple(len(range(*s.indices(n))) for s, n in zip(box, self.shape, strict=True))
        if tuple(values.shape) != expected:
            raise VoxelflowValueError(
                f"{self.path}: data of shape {tuple(values.shape)} for a box of shape {expected}"
            )
        selection = self._selection(box)
        # One C-ordered copy in zarr's axis order, shared by level 0 and the pyramid.
        zarr_values = np.ascontiguousarray(self.layout.to_zarr(values))
        try:
            self._levels[0][selection] = zarr_values
            self._follow(box, zarr_values)
            self._raise_failure()
        except OSError as error:
            if isinstance(error, VoxelflowError):
                raise
            raise write_error(self.path, error) from error

    def _follow(self, box: Sequence[slice], zarr_values: np.ndarray) -> None:
        """Feed the on-the-fly pyramid with a slab that continues level 0 in K order."""
        if len(self.shapes) == 1 or self._next_k is None:
            return
        bounds = [s.indices(n) for s, n in zip(box, self.shape, strict=True)]
        whole = all(b[:2] == (0, n) for b, n in zip(bounds[:3], self.shape[:3], strict=True))
        if not whole or bounds[3][0] != self._next_k:
            self._next_k = None  # not a stream: the pyramid is built at the end
            self._pending = [[] for _ in self.shapes]
            self._carry = [None for _ in self.shapes]
            return
        self._next_k = bounds[3][1]
        self._feed(1, zarr_values, final=False)

    def _feed(self, n: int, parent: np.ndarray | None, final: bool) -> None:
        """Downsample slices of level ``n - 1`` into level ``n``; write its whole slabs."""
        factors = tuple(2 if s > 1 else 1 for s in self.shapes[n - 1])
        parts = [p for p in (self._carry[n], parent) if p is not None]
        self._carry[n] = None
        if parts:
            data = np.concatenate(parts, axis=-3) if len(parts) > 1 else parts[0]
            if factors[0] == 2 and not final and data.shape[-3] % 2:
                self._carry[n] = data[..., -1:, :, :].copy()  # waits for its pair
                data = data[..., :-1, :, :]
            if data.shape[-3]:
                reduced = _reduce(_pad_even(data, factors), factors, self.method)
                self._pending[n].append(reduced)
        target = self._levels[n]
        depth = int((target.shards or target.chunks)[-3])
        buffered = sum(p.shape[-3] for p in self._pending[n])
        while buffered >= depth or (final and buffered):
            pending = self._pending[n]
            data = np.concatenate(pending, axis=-3) if len(pending) > 1 else pending[0]
            take = min(depth, data.shape[-3])
            out, rest = data[..., :take, :, :], data[..., take:, :, :]
            z0 = self._written[n]
            target[..., z0 : z0 + take, :, :] = out
            self._written[n] += take
            self._pending[n] = [rest] if rest.shape[-3] else []
            buffered -= take
            if n + 1 < len(self.shapes):
                self._feed(n + 1, out, final=False)
        if final and n + 1 < len(self.shapes):
            self._feed(n + 1, None, final=True)

    def read(self, box: Sequence[slice]) -> np.ndarray:
        """What level 0 holds in ``box``, as a ``(C, I, J, K)`` array of the stored dtype."""
        self._check_open()
        selection = self._selection(box)
        data = np.asarray(self._levels[0][selection])
        full = self.layout.from_zarr(data.reshape(self._selected_shape(selection)))
        return np.ascontiguousarray(full)

    def _selected_shape(self, selection: tuple[slice, ...]) -> tuple[int, ...]:
        return tuple(
            len(range(*s.indices(n))) for s, n in zip(selection, self._levels[0].shape, strict=True)
        )

    # ------------------------------------------------------------------ ending
    def finalize(self, progress: bool | None = None) -> str:
        """Build the pyramid, mark the store complete, publish it; return its path."""
        from voxelflow.backends.registry import is_image

        self._check_open()
        try:
            if len(self.shapes) > 1:
                if self._next_k == self.shape[3]:
                    self._feed(1, None, final=True)  # the stream is complete: flush the pyramid
                else:
                    for n in range(1, len(self.shapes)):
                        self._downsample_into(n, progress)
            self._group.attrs.update(self._group_attrs(complete=True))
            self._raise_failure()
            publish(self.tmp, self.path, overwrite=self.overwrite, replaceable=is_image)
        except BaseException as error:
            self.abort()
            if isinstance(error, OSError) and not isinstance(error, VoxelflowError):
                raise write_error(self.path, error) from error
            raise
        self.state = "finalized"
        return self.path

    def _downsample_into(self, n: int, progress: bool | None) -> None:
        """Level ``n`` from level ``n - 1``, one slab of level ``n``'s chunks (or shards) at a time."""
        from tqdm.auto import tqdm

        source, target = self._levels[n - 1], self._levels[n]
        factors = tuple(2 if s > 1 else 1 for s in self.shapes[n - 1])
        depth = int((target.shards or target.chunks)[-3])
        total = self.shapes[n][0]
        with tqdm(
            total=total, unit="slice", desc=f"level {n} of {os.path.basename(self.path)}",
            disable=None if progress is None else not progress, leave=False,
        ) as bar:  # fmt: skip
            for z0 in range(0, total, depth):
                z1 = min(total, z0 + depth)
                block = np.asarray(source[..., z0 * factors[0] : z1 * factors[0], :, :])
                block = _pad_even(block, factors)
                target[..., z0:z1, :, :] = _reduce(block, factors, self.method)
                bar.update(z1 - z0)

    def abort(self) -> None:
        """Remove the partial store (nothing is left at ``path`` by this writer)."""
        if self.state == "open":
            self.state = "aborted"
        remove(self.tmp)

    def __enter__(self) -> NiftiZarrWriter:
        return self

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        if kind is None:
            if self.state == "open":
                self.finalize()
        else:
            self.abort()


def _reduce(block: np.ndarray, factors: Sequence[int], method: str) -> np.ndarray:
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


def _pad_even(block: np.ndarray, factors: Sequence[int]) -> np.ndarray:
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


SAVE_OPTIONS = (
    "chunk", "shard", "codec", "compression_level", "checksum", "levels", "method",
    "zarr_format", "label", "progress", "overwrite",
)  # fmt: skip


def write_niftizarr(
    image: Any,
    path: str,
    *,
    chunk: int | Sequence[int] = 64,
    shard: int | Sequence[int] | None = None,
    codec: Codec = "blosc",
    compression_level: int | None = None,
    checksum: bool | None = None,
    levels: int | None = None,
    method: Method | None = None,
    zarr_format: int = 3,
    label: bool | None = None,
    progress: bool | None = None,
    overwrite: bool = True,
) -> None:
    """Write ``image`` to a NIfTI-Zarr store, streaming slab by slab (atomic).

    Args:
        image: an :class:`~voxelflow.Image` (lazy or loaded), or any
            :class:`~voxelflow.backends.write_source.WriteSource`.
        path: output ``.nii.zarr`` directory.
        chunk, shard, codec, compression_level, checksum, levels, method,
            zarr_format: see :meth:`NiftiZarrWriter.create` (``levels=None``:
            until the coarsest level fits in one chunk).
        label: treat the data as labels (default: ``image.type == "label"``).
        progress: show a progress bar (default: only on a terminal).
        overwrite: replace an existing image at ``path`` (default ``True``, as
            ``save`` does; ``convert`` passes ``False``). Never replaces a
            directory that is not an image.

    The source is read in slabs of ``shard`` (or ``chunk``) slices along ``K``.
    Stored values are the file's raw values with its header (scaling, codes,
    units) when the source is a NIfTI or NIfTI-Zarr file opened directly;
    otherwise the values ``image`` reads.
    """
    from tqdm.auto import tqdm

    source: WriteSource = image if isinstance(image, WriteSource) else source_of(image, label)
    label = source.label if label is None else bool(label)
    path = os.fspath(path).rstrip("/")
    writer = NiftiZarrWriter.create(
        path, source.shape, header=source.header("c"), chunks=chunk, shards=shard, codec=codec,
        compression_level=compression_level, checksum=checksum, label=label, levels=levels,
        method=method, zarr_format=zarr_format, overwrite=overwrite,
    )  # fmt: skip
    channels, i, j, k = source.shape
    step = (writer.shards or writer.chunks)[2]
    with writer, tqdm(
        total=k, unit="slice", desc=f"writing {os.path.basename(path)}",
        disable=(None if progress is None else not progress), leave=False,
    ) as bar:  # fmt: skip
        for k0 in range(0, k, step):
            k1 = min(k, k0 + step)
            box = (slice(0, channels, 1), slice(0, i, 1), slice(0, j, 1), slice(k0, k1, 1))
            writer.write(box, source.read_stored(box))
            bar.update(k1 - k0)
        writer.finalize(progress)


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


__all__ = [
    "CODECS",
    "METHODS",
    "SAVE_OPTIONS",
    "NiftiZarrWriter",
    "save_niftizarr",
    "write_niftizarr",
]

"""Remote NIfTI through fsspec: ranged reads of ``.nii``, streamed ``.nii.gz``.

``s3://``, ``gs://``, ``http(s)://`` (and any other fsspec protocol) URIs are
opened with :func:`filesystem`, with ``storage_options`` passed through
(``endpoint_url``, ``key``, ``secret``, ``anon``, ``client_kwargs``...). The
protocol's package (``s3fs``, ``gcsfs``, ``aiohttp``) is imported lazily and a
missing one fails with the exact ``pip install`` line.

* ``.nii``: opening fetches the header bytes only (one ranged request); a
  region read plans one byte range per row of the region along ``I``,
  coalesces rows whose gap is below ``max_gap`` and fetches the ranges
  concurrently. Nothing is downloaded whole, nothing is written to disk.
* ``.nii.gz``: gzip has no random access, so a region read *streams* the file
  from its start to the region's last byte, inflating on the fly (a full read
  streams it once). Nothing is written to disk. For repeated random access,
  convert once: ``voxelflow convert s3://b/x.nii.gz x.nii.zarr``.

NIfTI-Zarr stores on remote storage are read by
:class:`~voxelflow.backends.niftizarr.NiftiZarrBackend` through zarr's fsspec store.
"""

from __future__ import annotations

import gzip
import io
import time
import zlib
from typing import Any

import nibabel as nib
import numpy as np
import torch

from voxelflow._errors import VoxelflowError, VoxelflowValueError, require
from voxelflow._indexing import Box
from voxelflow.backends.base import Backend, apply_scaling, torch_dtype
from voxelflow.backends.nifti import NiftiHeader
from voxelflow.backends.niftizarr import describe_remote_error, is_remote, is_transient

#: Package that implements each protocol: (module to import, pip name).
PROTOCOL_PACKAGES: dict[str, tuple[str, str]] = {
    "s3": ("s3fs", "s3fs"),
    "s3a": ("s3fs", "s3fs"),
    "gs": ("gcsfs", "gcsfs"),
    "gcs": ("gcsfs", "gcsfs"),
    "http": ("aiohttp", "aiohttp"),
    "https": ("aiohttp", "aiohttp"),
    "az": ("adlfs", "adlfs"),
    "abfs": ("adlfs", "adlfs"),
}
_HEADER_PROBE = 544  # NIfTI-2 header (540) + extension flag: enough for either version


def require_protocol(uri: str) -> None:
    """Import the package behind ``uri``'s protocol, or fail with the pip line."""
    protocol = uri.split("://", 1)[0].lower()
    if protocol in PROTOCOL_PACKAGES:
        module, pip_name = PROTOCOL_PACKAGES[protocol]
        require(module, f"reading {protocol}:// URIs", pip_name)


def filesystem(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem and the path inside it for ``uri``."""
    import fsspec

    require_protocol(uri)
    try:
        return fsspec.core.url_to_fs(uri, **(storage_options or {}))
    except VoxelflowError:
        raise
    except Exception as error:
        raise describe_remote_error(uri, error) from error


_DATA_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


def _retrying(uri: str, what: str, retries: int, function: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``function``, retrying transient errors ``retries`` times; clear errors otherwise."""
    for attempt in range(retries + 1):
        try:
            return function(*args, **kwargs)
        except (VoxelflowError, *_DATA_ERRORS):
            raise
        except Exception as error:
            if attempt < retries and is_transient(error):
                time.sleep(0.05 * 2**attempt)
                continue
            raise describe_remote_error(uri, error, what) from error
    raise AssertionError("unreachable")  # pragma: no cover


def is_remote_nifti(source: str) -> bool:
    return is_remote(source) and source.lower().endswith((".nii", ".img"))


def is_remote_nifti_gz(source: str) -> bool:
    return is_remote(source) and source.lower().endswith(".nii.gz")


def _parse_header(uri: str, raw: bytes, data_path: str | None = None) -> NiftiHeader:
    if len(raw) < 348:
        raise VoxelflowValueError(
            f"{uri}: only {len(raw)} bytes, too short for a NIfTI header; the object is "
            "truncated or not NIfTI"
        )
    sizes = {int(np.frombuffer(raw[:4], "<i4")[0]), int(np.frombuffer(raw[:4], ">i4")[0])}
    klass = nib.Nifti1Header if 348 in sizes else nib.Nifti2Header if 540 in sizes else None
    if klass is None:
        raise VoxelflowValueError(
            f"{uri}: not a NIfTI header (sizeof_hdr is neither 348 nor 540); check the URI, "
            "or give the object its real extension"
        )
    try:
        header = klass.from_fileobj(io.BytesIO(raw[: 348 if klass is nib.Nifti1Header else 540]))
    except Exception as error:
        raise VoxelflowValueError(f"{uri}: unreadable NIfTI header ({error})") from error
    file_shape = tuple(int(n) for n in header.get_data_shape())
    if not 3 <= len(file_shape) <= 5:
        raise VoxelflowValueError(
            f"{uri}: a {len(file_shape)}-D image (shape {file_shape}); voxelflow reads 3-D to 5-D"
        )
    slope, inter = header.get_slope_inter()
    return NiftiHeader(
        path=uri,
        data_path=data_path or uri,
        file_shape=file_shape,
        raw_dtype=np.dtype(header.get_data_dtype()),
        offset=int(header.get_data_offset()),
        slope=None if slope is None else float(slope),
        inter=None if inter is None else float(inter),
        affine=np.asarray(header.get_best_affine(), dtype=np.float64),
        version=1 if klass is nib.Nifti1Header else 2,
    )


class _RemoteObject(Backend):
    """What the remote backends share: the URI, its fsspec filesystem (dropped on
    pickling, reopened lazily in the process that reads) and the retry budget."""

    path: str  # always set: the URI

    def __init__(self, uri: str, storage_options: dict[str, Any] | None, retries: int) -> None:
        self.path = uri
        self.storage_options = dict(storage_options or {})
        self.retries = int(retries)
        self._fs, self._key = filesystem(uri, self.storage_options)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fs"] = None
        return state

    def _filesystem(self) -> Any:
        if self._fs is None:
            self._fs, self._key = filesystem(self.path, self.storage_options)
        return self._fs


class RemoteNiftiBackend(_RemoteObject):
    """An uncompressed ``.nii`` on remote storage, read with ranged requests.

    Args:
        uri: ``s3://bucket/key.nii``, ``https://host/x.nii``, ...
        storage_options: passed to fsspec (``endpoint_url``, ``key``, ``secret``...).
        max_gap: rows of a region closer than this many bytes are fetched in one
            request (fewer round trips for a few wasted bytes).
        retries: times a transient error (dropped connection, timeout) is retried.

    Example:
        >>> from voxelflow.backends.remote import RemoteNiftiBackend
        >>> RemoteNiftiBackend.__name__  # e.g. RemoteNiftiBackend("s3://bucket/t1.nii")
        'RemoteNiftiBackend'
    """

    def __init__(
        self,
        uri: str,
        *,
        storage_options: dict[str, Any] | None = None,
        max_gap: int = 64 * 1024,
        retries: int = 3,
    ) -> None:
        super().__init__(uri, storage_options, retries)
        self.max_gap = int(max_gap)
        raw = _retrying(
            uri,
            "read the header",
            self.retries,
            self._fs.cat_file,
            self._key,
            start=0,
            end=_HEADER_PROBE,
        )
        self.header = _parse_header(uri, raw)
        self.shape = self.header.shape
        self.affine = self.header.affine
        self.dtype = torch_dtype(self.header.dtype)
        self.requests = 1  # ranged requests made so far (header included)
        size = _retrying(uri, "stat the object", self.retries, self._fs.size, self._key)
        needed = self.header.offset + self.header.data_nbytes
        if size is not None and int(size) < needed:
            raise VoxelflowValueError(
                f"{uri}: the object is truncated: the header describes {self.header.data_nbytes} "
                f"bytes of voxel data from byte {self.header.offset}, but it has {size} bytes; "
                "re-upload it"
            )
        self._size = None if size is None else int(size)

    def plan(self, box: Box) -> tuple[list[tuple[int, int]], np.ndarray, int]:
        """Byte ranges to fetch for ``box``: ``(requests, row_starts, row_length)``.

        One row per ``(j, k, c)`` of the box, spanning ``i`` from its first to
        last index; rows are coalesced into requests when the gap between them
        is at most ``max_gap`` bytes.
        """
        header = self.header
        size = header.raw_dtype.itemsize
        i_dim, j_dim, k_dim, _ = header.flat_shape
        channels, i, j, k = box
        i_last = range(i.start, i.stop, i.step)[-1]
        row = (i_last - i.start + 1) * size
        c_idx = np.arange(channels.start, channels.stop, channels.step, dtype=np.int64)
        k_idx = np.arange(k.start, k.stop, k.step, dtype=np.int64)
        j_idx = np.arange(j.start, j.stop, j.step, dtype=np.int64)
        linear = (c_idx[:, None, None] * k_dim + k_idx[None, :, None]) * j_dim + j_idx[
            None, None, :
        ]
        starts = (header.offset + (linear * i_dim + i.start) * size).ravel()
        gaps = starts[1:] - (starts[:-1] + row)
        breaks = np.flatnonzero(gaps > self.max_gap) + 1
        first = np.concatenate([[0], breaks])
        last = np.concatenate([breaks - 1, [len(starts) - 1]])
        requests = [
            (int(starts[a]), int(starts[b] + row)) for a, b in zip(first, last, strict=True)
        ]
        return requests, starts, row

    def read_raw(self, box: Box | None) -> np.ndarray:
        """Stored (unscaled) values of ``box`` as an ``(I, J, K, C)`` array."""
        if box is None:
            box = tuple(slice(0, n, 1) for n in self.shape)  # type: ignore[assignment]
        assert box is not None
        requests, starts, row = self.plan(box)
        fs = self._filesystem()
        blocks = _retrying(
            self.path, "read a region", self.retries, fs.cat_ranges,
            [self._key] * len(requests), [a for a, _ in requests], [b for _, b in requests],
        )  # fmt: skip
        for block, (a, b) in zip(blocks, requests, strict=True):
            if isinstance(block, BaseException):
                raise describe_remote_error(self.path, block, "read a region")
            if len(block) != b - a:
                raise VoxelflowValueError(
                    f"{self.path}: bytes {a}-{b} came back short ({len(block)} bytes); the object "
                    "changed or is truncated; re-upload it"
                )
        self.requests += len(requests)
        out = np.empty((len(starts), row), dtype=np.uint8)
        # rows live in the requests in order: copy one request (many rows) at a time
        request_starts = np.array([a for a, _ in requests], dtype=np.int64)
        owner = np.searchsorted(request_starts, starts, side="right") - 1
        bounds = np.flatnonzero(np.diff(owner)) + 1
        for rows in np.split(np.arange(len(starts)), bounds):
            block = np.frombuffer(blocks[owner[rows[0]]], dtype=np.uint8)
            local = starts[rows] - request_starts[owner[rows[0]]]
            steps = np.diff(local)
            if len(rows) > 1 and np.all(steps == steps[0]):
                view = np.lib.stride_tricks.as_strided(
                    block[local[0] :], shape=(len(rows), row), strides=(int(steps[0]), 1)
                )
                out[rows] = view
            else:
                for n, position in zip(rows, local, strict=True):
                    out[n] = block[position : position + row]
        channels, i, j, k = box
        shape = (len(range(channels.start, channels.stop, channels.step)),
                 len(range(k.start, k.stop, k.step)), len(range(j.start, j.stop, j.step)))  # fmt: skip
        values = out.view(self.header.raw_dtype).reshape(*shape, -1)[..., :: i.step]
        return values.transpose(3, 2, 1, 0)  # (c, k, j, i) -> (i, j, k, c)

    def read(self, box: Box | None = None) -> torch.Tensor:
        raw = self.read_raw(box)
        header = self.header
        data = apply_scaling(raw, header.slope, header.inter, header.dtype)
        return torch.from_numpy(data).permute(3, 0, 1, 2)

    def describe(self) -> dict[str, Any]:
        facts: dict[str, Any] = {
            "format": f"NIfTI-{self.header.version} (remote, ranged reads)",
            "stored dtype": str(self.header.raw_dtype),
        }
        if self._size is not None:
            facts["size on disk"] = self._size
        return facts


class RemoteNiftiGzBackend(_RemoteObject):
    """A ``.nii.gz`` on remote storage, *streamed*: no random access, no temp file.

    Opening fetches one small ranged request and inflates only the header. A
    region read streams the object from its start up to the region's last byte
    (a full read streams it once), inflating in memory; nothing is written to
    disk. Repeated random reads re-stream: convert to ``.nii.zarr`` for that.

    Example:
        >>> from voxelflow.backends.remote import RemoteNiftiGzBackend
        >>> RemoteNiftiGzBackend.region_reads
        False
    """

    region_reads = False  # a region costs a stream from the start of the file

    def __init__(
        self,
        uri: str,
        *,
        storage_options: dict[str, Any] | None = None,
        block_size: int = 8 * 1024 * 1024,
        retries: int = 3,
    ) -> None:
        super().__init__(uri, storage_options, retries)
        self.block_size = int(block_size)
        probe = _retrying(
            uri, "read the header", self.retries, self._fs.cat_file, self._key, start=0, end=65536
        )
        if probe[:2] != b"\x1f\x8b":
            raise VoxelflowValueError(
                f"{uri}: the name ends in .gz but the object is not gzip-compressed; "
                "rename it to .nii"
            )
        try:
            head = zlib.decompressobj(wbits=31).decompress(probe, _HEADER_PROBE)
        except zlib.error as error:
            raise VoxelflowValueError(
                f"{uri}: corrupt gzip stream ({error}); re-upload it"
            ) from error
        self.header = _parse_header(uri, head)
        self.shape = self.header.shape
        self.affine = self.header.affine
        self.dtype = torch_dtype(self.header.dtype)

    def read_raw(self, box: Box | None) -> np.ndarray:
        """Stored values of ``box`` as ``(I, J, K, C)``, streamed from the start of the object."""
        from nibabel.fileslice import fileslice

        self._filesystem()
        header = self.header
        key = (slice(None),) * 4 if box is None else (box[1], box[2], box[3], box[0])

        def stream() -> np.ndarray:
            with (
                self._fs.open(
                    self._key, "rb", block_size=self.block_size, cache_type="readahead"
                ) as raw,
                gzip.GzipFile(fileobj=raw, mode="rb") as inflated,
            ):
                return np.asarray(
                    fileslice(
                        inflated, key, header.flat_shape, header.raw_dtype, header.offset, "F"
                    )
                )

        try:
            return _retrying(self.path, "stream the object", self.retries, stream)
        except (EOFError, zlib.error, gzip.BadGzipFile) as error:
            raise VoxelflowValueError(
                f"{self.path}: the compressed data is truncated or corrupt ({error}); re-upload it"
            ) from error

    def read(self, box: Box | None = None) -> torch.Tensor:
        raw = self.read_raw(box)
        header = self.header
        data = apply_scaling(raw, header.slope, header.inter, header.dtype)
        return torch.from_numpy(data).permute(3, 0, 1, 2)

    def describe(self) -> dict[str, Any]:
        return {
            "format": f"NIfTI-{self.header.version} (gzip, remote, streamed)",
            "stored dtype": str(self.header.raw_dtype),
        }

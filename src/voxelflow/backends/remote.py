"""Remote NIfTI through fsspec: ranged reads of ``.nii``, streamed ``.nii.gz``.

``s3://``, ``gs://``, ``http(s)://`` (and any other fsspec protocol) URIs are
opened with :func:`voxelflow.backends._fsspec.filesystem`, with
``storage_options`` passed through (``endpoint_url``, ``key``, ``secret``,
``anon``, ``client_kwargs``...) and bounded time (``connect_timeout``,
``read_timeout``; transient failures retried ``retries`` times with backoff,
then one clear error naming the URI).

* ``.nii``: opening fetches the header bytes only (one ranged request); a
  region read is planned by :mod:`voxelflow.backends.segments` (a round trip
  is worth ``max_gap`` bytes), its byte ranges coalesced and fetched
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
import zlib
from collections.abc import Hashable
from typing import Any

import numpy as np
import torch

from voxelflow._errors import VoxelflowValueError
from voxelflow._indexing import Box
from voxelflow.backends._fsspec import (
    describe_remote_error,
    filesystem,
    is_remote,
    retrying,
    time_limits,
)
from voxelflow.backends.base import Backend, RegionCost, store_into, torch_dtype
from voxelflow.backends.nifti_header import (
    GZIP_MAGIC,
    HEADER_PROBE,
    NiftiHeader,
    NiftiHeaderType,
    parse_header_bytes,
)
from voxelflow.backends.segments import FileLayout, SegmentPlan, plan

_DATA_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


def is_remote_nifti(source: str) -> bool:
    return is_remote(source) and source.lower().endswith((".nii", ".img"))


def is_remote_nifti_gz(source: str) -> bool:
    return is_remote(source) and source.lower().endswith(".nii.gz")


def _parse_header(uri: str, raw: bytes) -> NiftiHeader:
    if len(raw) < 348:
        raise VoxelflowValueError(
            f"{uri}: only {len(raw)} bytes, too short for a NIfTI header; the object is "
            "truncated or not NIfTI"
        )
    return NiftiHeader.from_nibabel(parse_header_bytes(raw, uri), uri)


class _RemoteObject(Backend):
    """What the remote backends share: the URI, its fsspec filesystem (dropped on
    pickling, reopened lazily in the process that reads), the retry budget, and
    the header facts."""

    path: str  # always set: the URI
    header: NiftiHeader

    def __init__(self, uri: str, storage_options: dict[str, Any] | None, retries: int) -> None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise VoxelflowValueError(f"{uri}: retries={retries!r}; pass an integer >= 0")
        self.path = uri
        self.storage_options = dict(storage_options or {})
        time_limits(self.storage_options)  # refuse bad time limits now, not at the first read
        self.retries = int(retries)
        self._fs, self._key = filesystem(uri, self.storage_options)
        self._identity: Hashable | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fs"] = None
        return state

    def _filesystem(self) -> Any:
        if self._fs is None:
            self._fs, self._key = filesystem(self.path, self.storage_options)
        return self._fs

    def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        return retrying(
            self.path, what, self.retries, function, *args, passthrough=_DATA_ERRORS, **kwargs
        )

    def _remember_identity(self) -> None:
        """The object's identity at open: size and ETag/modification time when the store has them."""
        try:
            info = self._call("stat the object", self._filesystem().info, self._key)
        except Exception:
            return
        tag = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime")
        self._identity = ("remote", self.path, info.get("size"), str(tag) if tag else None)

    @property
    def cache_key(self) -> Hashable | None:
        """The URI with the size and ETag (or modification time) seen at open."""
        return self._identity

    @property
    def nifti_header(self) -> NiftiHeaderType | None:
        nifti = self.header.nifti
        if nifti is None:
            return None
        nifti = nifti.copy()
        nifti.set_slope_inter(self.header.slope, self.header.inter)
        return nifti

    @property
    def stored_dtype(self) -> np.dtype:
        return self.header.raw_dtype

    def read_into(self, box: Box | None, out: torch.Tensor) -> None:
        box = self.check_out(box, out)
        header = self.header
        raw = np.moveaxis(self._raw(box), -1, 0)
        store_into(raw, out, header.slope, header.inter, header.dtype)

    def read_stored(self, box: Box | None = None) -> np.ndarray:
        raw = np.moveaxis(self._raw(self.normalise_box(box)), -1, 0)
        return np.array(raw, dtype=raw.dtype.newbyteorder("="), copy=True)

    def _raw(self, box: Box | None) -> np.ndarray:
        raise NotImplementedError


class RemoteNiftiBackend(_RemoteObject):
    """An uncompressed ``.nii`` on remote storage, read with ranged requests.

    Args:
        uri: ``s3://bucket/key.nii``, ``https://host/x.nii``, ...
        storage_options: passed to fsspec (``endpoint_url``, ``key``, ``secret``...), and
            ``connect_timeout`` / ``read_timeout`` (seconds) for every request.
        max_gap: byte runs of a region closer than this are fetched in one request
            (fewer round trips for a few wasted bytes).
        retries: times a transient error (dropped connection, timeout) is retried.

    Example:
        >>> from voxelflow.backends.remote import RemoteNiftiBackend
        >>> RemoteNiftiBackend.region_cost  # e.g. RemoteNiftiBackend("s3://bucket/t1.nii")
        'proportional'
    """

    region_cost: RegionCost = "proportional"

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
        fs = self._filesystem()
        raw = self._call("read the header", fs.cat_file, self._key, start=0, end=HEADER_PROBE)
        self.header = _parse_header(uri, raw)
        self.shape = self.header.shape
        self.affine = self.header.affine
        self.dtype = torch_dtype(self.header.dtype)
        self.layout = FileLayout(self.header.flat_shape, self.header.raw_dtype, self.header.offset)
        self.requests = 1  # ranged requests made so far (header included)
        size = self._call("stat the object", fs.size, self._key)
        if size is not None:
            self.header.check_size(int(size), fix="re-upload it")
        self._size = None if size is None else int(size)
        self._identity = ("remote", uri, self._size, None)

    def plan(self, box: Box) -> SegmentPlan:
        """The byte runs of ``box`` (a round trip is worth ``max_gap`` bytes)."""
        channels, i, j, k = box
        return plan(self.layout, (i, j, k, channels), seek_cost=self.max_gap)

    def _raw(self, box: Box | None) -> np.ndarray:
        return self.plan(self.whole_box() if box is None else box).gather(
            self._fetch, max_gap=self.max_gap, max_block=64 << 20
        )

    def _fetch(self, ranges: list[tuple[int, int]]) -> list[np.ndarray]:
        fs = self._filesystem()
        blocks = self._call(
            "read a region", fs.cat_ranges,
            [self._key] * len(ranges), [a for a, _ in ranges], [b for _, b in ranges],
            on_error="return",
        )  # fmt: skip
        self.requests += len(ranges)
        out = []
        for block, (a, b) in zip(blocks, ranges, strict=True):
            if isinstance(block, BaseException):
                raise describe_remote_error(self.path, block, "read a region") from block
            if len(block) != b - a:
                raise VoxelflowValueError(
                    f"{self.path}: bytes {a}-{b} came back short ({len(block)} bytes); the object "
                    "changed or is truncated; re-upload it"
                )
            out.append(np.frombuffer(block, dtype=np.uint8))
        return out

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
        >>> RemoteNiftiGzBackend.region_cost
        'stream'
    """

    region_cost: RegionCost = "stream"

    @property
    def region_reads(self) -> bool:
        return False  # a region costs a stream from the start of the file

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
        fs = self._filesystem()
        probe = self._call("read the header", fs.cat_file, self._key, start=0, end=65536)
        if probe[:2] != GZIP_MAGIC:
            raise VoxelflowValueError(
                f"{uri}: the name ends in .gz but the object is not gzip-compressed; "
                "rename it to .nii"
            )
        try:
            head = zlib.decompressobj(wbits=31).decompress(probe, HEADER_PROBE)
        except zlib.error as error:
            raise VoxelflowValueError(
                f"{uri}: corrupt gzip stream ({error}); re-upload it"
            ) from error
        self.header = _parse_header(uri, head)
        self.shape = self.header.shape
        self.affine = self.header.affine
        self.dtype = torch_dtype(self.header.dtype)
        self._remember_identity()

    def _raw(self, box: Box | None) -> np.ndarray:
        """Stored values of ``box`` as ``(I, J, K, C)``, streamed from the start of the object."""
        from nibabel.fileslice import fileslice

        fs = self._filesystem()
        header = self.header
        key = (slice(None),) * 4 if box is None else (box[1], box[2], box[3], box[0])

        def stream() -> np.ndarray:
            with (
                fs.open(self._key, "rb", block_size=self.block_size, cache_type="readahead") as raw,
                gzip.GzipFile(fileobj=raw, mode="rb") as inflated,
            ):
                return np.asarray(
                    fileslice(
                        inflated, key, header.flat_shape, header.raw_dtype, header.offset, "F"
                    )
                )

        try:
            result: np.ndarray = self._call("stream the object", stream)
            return result
        except _DATA_ERRORS as error:
            raise VoxelflowValueError(
                f"{self.path}: the compressed data is truncated or corrupt ({error}); re-upload it"
            ) from error

    def describe(self) -> dict[str, Any]:
        return {
            "format": f"NIfTI-{self.header.version} (gzip, remote, streamed)",
            "stored dtype": str(self.header.raw_dtype),
        }

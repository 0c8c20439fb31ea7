"""Compressed NIfTI (``.nii.gz``): fast whole reads and indexed region reads.

This module owns the backend and its access policy; the decoding, the
seek-point index, the indexed reader and the decode cache live in
:mod:`voxelflow.backends.gzindex`. A region read through the index is planned
by :mod:`voxelflow.backends.segments` (a restart of the inflater is the seek
cost) and its runs inflated with the index's reader; without rapidgzip and
isal every read goes through nibabel's stream reader, with the same values.
"""

from __future__ import annotations

import functools
import os
import threading
import zlib
from typing import Any

import numpy as np
import torch

from voxelflow._errors import VoxelflowValueError, check_choice, require
from voxelflow._indexing import Box
from voxelflow.backends import gzindex as _gz
from voxelflow.backends.base import RegionCost, is_scaled, numpy_view, store_into
from voxelflow.backends.gzindex import (
    GZ_ACCESS,
    GzAccess,
    IndexedReader,
    StoredIndex,
    ensure_index,
    igzip_module,
    inflate_into,
    load_index,
    rapidgzip_module,
)
from voxelflow.backends.nifti import NiftiBackend
from voxelflow.backends.nifti_header import NiftiHeader
from voxelflow.backends.segments import plan


class NiftiGzBackend(NiftiBackend):
    """A gzip-compressed ``.nii.gz``: fast whole reads and indexed region reads.

    Whole reads inflate with a parallel (rapidgzip) or ISA-L decoder straight
    into one array. Region reads follow ``gz_access`` (see
    :mod:`voxelflow.backends.gzindex` for the policy): ``"auto"`` (default)
    decodes small volumes once and reads big ones through a seek-point index
    kept beside the file (or in the cache directory), switching to one cached
    decode once many regions were read; ``"index"`` always uses the index;
    ``"decode"`` always decodes once and slices. A cached decode is dropped by
    ``Image.unload()`` and on pickling. ``region_cost`` is ``"stream"``: fine
    for a few patches; read the volume whole to touch most of it.

    Args:
        path: the ``.nii.gz`` file.
        header: its parsed header, if already read.
        gz_access: ``"auto"``, ``"index"`` or ``"decode"``.
        gz_threads: decoder threads for whole reads and index builds (default:
            the usable cores, 1 inside a DataLoader worker).
        gz_index_spacing: compressed bytes between seek points of a newly built
            index (default 4 MiB; smaller gives cheaper seeks and a bigger index).

    Example:
        >>> import voxelflow as tio
        >>> image = tio.ScalarImage(tio.datasets.nibabel_file("example4d.nii.gz"),
        ...                         backend_options={"gz_access": "decode"})
        >>> image.dataobj[:, 10:12, 20:23, 5].shape, image.dataobj.region_cost
        (torch.Size([2, 2, 3, 1]), 'stream')
    """

    region_cost: RegionCost = "stream"

    def __init__(
        self,
        path: str | os.PathLike[str],
        header: NiftiHeader | None = None,
        *,
        gz_access: GzAccess = "auto",
        gz_threads: int | None = None,
        gz_index_spacing: int = _gz.CHUNK_SIZE,
    ) -> None:
        super().__init__(path, header)
        self.gz_access: GzAccess = check_choice("gz_access", gz_access, GZ_ACCESS)  # type: ignore[assignment]
        if gz_threads is not None and (not isinstance(gz_threads, int) or gz_threads < 1):
            raise VoxelflowValueError(
                f"{self.path}: gz_threads={gz_threads!r}; pass a positive integer or None"
            )
        self.gz_threads = gz_threads
        if not isinstance(gz_index_spacing, int) or gz_index_spacing < 4096:
            raise VoxelflowValueError(
                f"{self.path}: gz_index_spacing={gz_index_spacing!r}; pass a byte count >= 4096"
            )
        self.gz_index_spacing = gz_index_spacing
        self._decoded: np.ndarray | None = None  # stored values, (I, J, K, C) F-ordered
        self._reader: IndexedReader | None = None
        self._index: StoredIndex | None = None
        self._inflated = 0  # bytes inflated by indexed reads since the last decode
        self._lock = threading.RLock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_memmap=None, _decoded=None, _lock=None, _inflated=0)
        return state  # the index reader pickles its index bytes, never its decoder

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    # ---------------------------------------------------------------- public
    @property
    def is_decoded(self) -> bool:
        """Whether a whole decode of the volume is cached in this backend."""
        return self._decoded is not None

    @property
    def index(self) -> StoredIndex | None:
        """The seek-point index in use, once it was loaded or built."""
        return self._index

    def release(self) -> None:
        """Drop the cached decode and close the decoder (``Image.unload()`` calls this); the
        index stays in memory and the decoder reopens on the next indexed read."""
        with self._lock:
            self._decoded = None
            self._inflated = 0
            if self._reader is not None:
                self._reader.close()
        _gz.DECODE_CACHE.forget(self)

    @property
    def index_location(self) -> str | None:
        """Where this file's seek-point index is stored, once it was loaded or built."""
        return None if self._index is None else self._index.location

    def build_index(self, *, force: bool = False) -> StoredIndex:
        """Load, or build and store, the seek-point index now (``voxelflow index``).

        ``force`` rebuilds it even when a stored one looks valid.
        """
        with self._lock:
            if rapidgzip_module() is None:
                require("rapidgzip", "a seek-point index of a .nii.gz", "rapidgzip")
            header = self.header
            self._index = ensure_index(
                header.data_path,
                needed=header.offset + header.data_nbytes,
                threads=self.gz_threads,
                spacing=self.gz_index_spacing,
                force=force,
            )
            if self._reader is not None:
                self._reader.close()
            self._reader = IndexedReader(
                header.data_path, self._index.payload, self.gz_index_spacing
            )
            return self._index

    def describe(self) -> dict[str, Any]:
        facts = super().describe()
        facts["gzip access"] = self.gz_access if self._fast_whole() else "nibabel (fallback)"
        found = load_index(self.header.data_path) if rapidgzip_module() is not None else None
        facts["seek-point index"] = found[1] if found is not None else "not built"
        return facts

    # ---------------------------------------------------------------- reading
    def _after_read(self, box: Box | None) -> None:
        return None  # nothing is mapped

    def _whole_into(self, out: torch.Tensor) -> bool:
        """Inflate the whole volume straight into ``out`` when it has the file's layout and dtype."""
        header = self.header
        if self._decoded is not None or not self._fast_whole():
            return False
        view = numpy_view(out)
        if view is None or view.dtype != header.raw_dtype or view.dtype != header.dtype:
            return False
        flat = view.transpose(1, 2, 3, 0)
        if not (flat.flags.f_contiguous and header.raw_dtype.isnative):
            return False
        inflate_into(header.data_path, header.offset, flat.T, threads=self.gz_threads)
        if is_scaled(header.slope, header.inter):
            store_into(view, out, header.slope, header.inter, header.dtype)
        return True

    def _raw(self, box: Box | None) -> np.ndarray:
        with self._lock:
            decoded = self._decoded
            if decoded is None and box is not None and self._should_decode():
                decoded = self._decoded = self._inflate_whole()
        if decoded is not None:
            _gz.DECODE_CACHE.touch(self)
            if box is None:
                return decoded
            channels, i, j, k = box
            return decoded[i, j, k, channels]
        if box is None:
            return self._inflate_whole() if self._fast_whole() else self._read_nibabel(None)
        if self.gz_access != "decode" and rapidgzip_module() is not None:
            return self._read_indexed(box)
        return self._read_nibabel(box)

    # ---------------------------------------------------------------- policy
    def _fast_whole(self) -> bool:
        return rapidgzip_module() is not None or igzip_module() is not None

    def _should_decode(self) -> bool:
        if not self._fast_whole():
            return False
        nbytes = self.header.data_nbytes
        if self.gz_access == "decode":
            return _gz.DECODE_CACHE.admit(self, nbytes, force=True)
        if self.gz_access == "index" and rapidgzip_module() is not None:
            return False
        small = nbytes <= _gz.SMALL_VOLUME
        enough = self._inflated >= _gz.DECODE_AFTER * nbytes
        if small or enough or rapidgzip_module() is None:
            return _gz.DECODE_CACHE.admit(self, nbytes)
        return False

    # ---------------------------------------------------------------- paths
    def _inflate_whole(self) -> np.ndarray:
        header = self.header
        out = np.empty(header.flat_shape, dtype=header.raw_dtype, order="F")
        inflate_into(header.data_path, header.offset, out.T, threads=self.gz_threads)
        return out

    def _indexed_reader(self) -> IndexedReader:
        stale = self._index is not None and not self._index.fingerprint.same_stat(
            self.header.data_path
        )
        if self._reader is None or stale:
            self.build_index(force=False)
        assert self._reader is not None
        return self._reader

    def _read_indexed(self, box: Box) -> np.ndarray:
        header = self.header
        channels, i, j, k = box
        segment_plan = plan(
            self.layout, (i, j, k, channels), seek_cost=_gz.MERGE_GAP, max_run=_gz.MAX_SPAN
        )
        ratio = (header.offset + header.data_nbytes) / max(1, os.path.getsize(header.data_path))
        seek_cost = int(self.gz_index_spacing * ratio / 2)  # mean inflate from a seek point
        with self._lock:
            for attempt in (0, 1):
                fetch = functools.partial(self._inflate_ranges, self._indexed_reader(), seek_cost)
                try:
                    return segment_plan.gather(fetch, max_gap=_gz.MERGE_GAP, max_block=_gz.MAX_SPAN)
                except VoxelflowValueError:
                    if attempt:
                        raise
                    # An index that fails on the data it seeks into may be stale (the file
                    # was replaced keeping its size and time): rebuild it once (a full,
                    # checked pass: a really corrupt file fails there), then retry.
                    self.build_index(force=True)
        raise AssertionError("unreachable")  # pragma: no cover

    def _inflate_ranges(
        self, reader: IndexedReader, seek_cost: int, ranges: list[tuple[int, int]]
    ) -> list[np.ndarray]:
        """The executor of an indexed read: inflate each byte range from its seek point."""
        blocks = []
        for start, stop in ranges:
            block = np.empty(stop - start, dtype=np.uint8)
            reader.read_into(start, block)
            self._inflated += (stop - start) + seek_cost
            blocks.append(block)
        return blocks

    def _read_nibabel(self, box: Box | None) -> np.ndarray:
        import gzip

        from nibabel.fileslice import fileslice
        from nibabel.openers import ImageOpener

        header = self.header
        key = (slice(None),) * 4 if box is None else (box[1], box[2], box[3], box[0])
        try:
            with ImageOpener(header.data_path, "rb") as stream:
                raw = fileslice(
                    stream, key, header.flat_shape, header.raw_dtype, header.offset, "F"
                )
        except (EOFError, zlib.error, gzip.BadGzipFile, OSError, ValueError) as error:
            raise VoxelflowValueError(
                f"{header.data_path}: the compressed data is truncated or corrupt "
                f"({type(error).__name__}: {error}); re-copy or re-export the file"
            ) from error
        return np.asarray(raw)


def is_nifti_gz_path(source: str) -> bool:
    name = source.lower()
    return name.endswith((".nii.gz", ".img.gz", ".hdr.gz")) and "://" not in source

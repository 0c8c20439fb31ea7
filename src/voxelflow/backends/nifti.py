"""Uncompressed NIfTI-1 and NIfTI-2 (``.nii``, ``.hdr``/``.img``): memory-mapped reads.

The header is parsed once (:mod:`voxelflow.backends.nifti_header`). A region
read is one segment of :mod:`voxelflow.backends.segments` seen through a
NumPy memory map of the file (the OS pages in only the bytes the view
touches), copied and scaled straight into the caller's buffer; the pages are
then given back. The file's size is checked before every mapped read, so a
file truncated under an open image raises instead of killing the process
with ``SIGBUS``. A whole read goes through ``readinto`` instead (one copy, no
mapped pages).

Layouts: a 3-D file is one channel; a 4-D file ``(I, J, K, T)`` has ``T``
channels; a 5-D "vector" file ``(I, J, K, T, C)`` has ``T × C`` channels
(``T`` is almost always 1). Scaling (``scl_slope``, ``scl_inter``) is applied
on every read, and ``dtype`` reports the scaled dtype (float32, or float64 when
the file stores float64). Compressed files: :mod:`voxelflow.backends.nifti_gz`.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Hashable
from typing import Any

import numpy as np
import torch

from voxelflow._errors import VoxelflowValueError
from voxelflow._indexing import Box
from voxelflow.backends.base import Backend, is_scaled, numpy_view, store_into, torch_dtype
from voxelflow.backends.nifti_header import NiftiHeader, NiftiHeaderType
from voxelflow.backends.segments import FileLayout, SegmentPlan, plan


class NiftiBackend(Backend):
    """An uncompressed ``.nii`` file (or ``.hdr``/``.img`` pair), read through a memory map.

    Example:
        >>> import voxelflow as tio
        >>> image = tio.ScalarImage(tio.datasets.nibabel_file("anatomical.nii"))
        >>> image.dataobj[:, 10:12, 20:23, 5].shape
        torch.Size([1, 2, 3, 1])
    """

    path: str

    def __init__(self, path: str | os.PathLike[str], header: NiftiHeader | None = None) -> None:
        self.header = header or NiftiHeader.read(path)
        self.path = self.header.path
        self.shape = self.header.shape
        self.affine = self.header.affine
        self.dtype = torch_dtype(self.header.dtype)
        self.layout = FileLayout(self.header.flat_shape, self.header.raw_dtype, self.header.offset)
        self._memmap: np.memmap | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_memmap"] = None  # a memory map is per process; reopened on first read
        return state

    # ------------------------------------------------------------------ facts
    @property
    def cache_key(self) -> Hashable:
        stat = os.stat(self.header.data_path)
        return ("nifti", os.path.realpath(self.header.data_path), stat.st_size, stat.st_mtime_ns)

    @property
    def nifti_header(self) -> NiftiHeaderType | None:
        """The file's nibabel header, scaling included (for writers that keep it)."""
        nifti = self.header.nifti
        if nifti is None:
            return None
        nifti = nifti.copy()
        nifti.set_slope_inter(self.header.slope, self.header.inter)
        return nifti

    @property
    def stored_dtype(self) -> np.dtype:
        return self.header.raw_dtype

    def describe(self) -> dict[str, Any]:
        header = self.header
        return {
            "format": f"NIfTI-{header.version}" + (" (gzip)" if self.path.endswith(".gz") else ""),
            "stored dtype": str(header.raw_dtype),
            "scaling": (
                f"slope={header.slope}, inter={header.inter}"
                if header.dtype != header.raw_dtype.newbyteorder("=")
                else "none"
            ),
            "size on disk": os.path.getsize(self.path),
        }

    def release(self) -> None:
        """Unmap the file (its pages leave the process)."""
        self._memmap = None

    # ------------------------------------------------------------------ reading
    def read(self, box: Box | None = None) -> torch.Tensor:
        out = self._allocate(box)
        self.read_into(box, out)
        return out

    def _allocate(self, box: Box | None) -> torch.Tensor:
        """A tensor for ``box`` laid out as the file is (``(C, K, J, I)`` in memory), so that a
        whole read lands straight in it."""
        channels, i, j, k = self.box_shape(box)
        return torch.empty((channels, k, j, i), dtype=self.dtype).permute(0, 3, 2, 1)

    def read_into(self, box: Box | None, out: torch.Tensor) -> None:
        box = self.check_out(box, out)
        header = self.header
        if box is None and self._whole_into(out):
            return
        raw = self._raw(box)
        store_into(np.moveaxis(raw, -1, 0), out, header.slope, header.inter, header.dtype)
        self._after_read(box)

    def read_stored(self, box: Box | None = None) -> np.ndarray:
        """The stored (unscaled) values of ``box`` as ``(C, I, J, K)``, in the file's dtype and
        byte order: a view of the memory map where possible (writers copy what they keep, and
        the pages stay in the page cache for the kernel to reclaim)."""
        box = self.normalise_box(box)
        return np.moveaxis(self._raw(box), -1, 0)

    def _raw(self, box: Box | None) -> np.ndarray:
        """Stored values of ``box`` in the file's axis order ``(I, J, K, C)`` (may be a view)."""
        if box is None:
            out = np.empty(self.header.flat_shape, dtype=self.header.raw_dtype, order="F")
            self._read_file_into(out)
            return out
        segment_plan = self.plan(box)
        (segment,) = segment_plan.segments()
        mapped = self._map()
        self._check_size()  # the file may have shrunk since it was mapped: no SIGBUS
        start = segment.offset - self.header.offset
        return segment_plan.cut(mapped[start : start + segment.length])

    def plan(self, box: Box) -> SegmentPlan:
        """The byte run of ``box`` (one segment: a memory map reads only what the view touches)."""
        channels, i, j, k = box
        return plan(self.layout, (i, j, k, channels), seek_cost=float("inf"))

    def _whole_into(self, out: torch.Tensor) -> bool:
        """Read the whole file straight into ``out`` when it has the file's layout and dtype."""
        header = self.header
        view = numpy_view(out)
        if (
            view is None
            or not header.raw_dtype.isnative
            or view.dtype != header.raw_dtype
            or view.dtype != header.dtype
        ):
            return False
        flat = view.transpose(1, 2, 3, 0)  # (I, J, K, C)
        if not flat.flags.f_contiguous:
            return False
        self._read_file_into(flat)
        if is_scaled(header.slope, header.inter):
            store_into(view, out, header.slope, header.inter, header.dtype)
        return True

    def _read_file_into(self, out: np.ndarray) -> None:
        """All stored values, read with ``readinto`` into the F-ordered ``(I, J, K, C)`` ``out``."""
        header = self.header
        view = memoryview(out.reshape(-1, order="A").view(np.uint8))  # type: ignore[arg-type]
        with open(header.data_path, "rb", buffering=0) as file:  # straight into ``out``
            file.seek(header.offset)
            done = 0
            while done < len(view):
                count = file.readinto(view[done:])
                if not count:
                    raise VoxelflowValueError(
                        f"{header.data_path}: the file ended after {done} of "
                        f"{header.data_nbytes} bytes of voxel data; re-copy or re-export it"
                    )
                done += count

    def _check_size(self) -> None:
        try:
            size = os.stat(self.header.data_path).st_size
        except OSError as error:
            raise VoxelflowValueError(
                f"{self.header.data_path}: the file cannot be read any more ({error}); it was "
                "moved or deleted while the image was open; open it again"
            ) from error
        self.header.check_size(
            size, fix="it shrank while the image was open (rewritten?); open it again"
        )

    def _map(self) -> np.memmap:
        if self._memmap is None:
            self._check_size()
            self._memmap = np.memmap(
                self.header.data_path,
                dtype=np.uint8,
                mode="r",
                offset=self.header.offset,
                shape=(self.header.data_nbytes,),
            )
        return self._memmap

    def _after_read(self, box: Box | None) -> None:
        if box is not None and self._memmap is not None:
            self._drop_pages(self.plan(box))

    def _drop_pages(self, segment_plan: SegmentPlan) -> None:
        """Unmap the pages a region read touched (``MADV_DONTNEED`` over its byte run).

        The pages stay in the page cache, but leave the process's RSS, which would
        otherwise grow towards the file's size as random regions are read (the
        kernel maps whole folios around each fault, often megabytes per read).
        """
        advise = getattr(getattr(self._memmap, "_mmap", None), "madvise", None)
        if advise is None or not hasattr(mmap, "MADV_DONTNEED") or not len(segment_plan.offsets):
            return
        base = self.header.offset % mmap.ALLOCATIONGRANULARITY  # where np.memmap's data begins
        start = base + int(segment_plan.offsets[0]) - self.header.offset
        stop = start + segment_plan.length
        start -= start % mmap.PAGESIZE
        with contextlib.suppress(OSError, ValueError):  # advice only: never fail a read
            advise(mmap.MADV_DONTNEED, start, stop - start)


def is_nifti_path(source: str) -> bool:
    name = source.lower()
    return name.endswith((".nii", ".img", ".hdr")) and "://" not in source


# Former home of these names (kept importable; their modules are named in each import).
from voxelflow.backends.nifti_gz import NiftiGzBackend, is_nifti_gz_path  # noqa: E402
from voxelflow.backends.nifti_write import is_nifti_output, write_nifti  # noqa: E402

__all__ = [
    "NiftiBackend",
    "NiftiGzBackend",
    "NiftiHeader",
    "is_nifti_gz_path",
    "is_nifti_output",
    "is_nifti_path",
    "write_nifti",
]

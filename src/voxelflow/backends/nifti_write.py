"""Writing ``.nii`` and ``.nii.gz``: streamed slab by slab, atomic, safe on a full disk.

One writer for both (``Image.save`` and ``convert`` use it): the header (the
source's own when there is one, see :mod:`voxelflow.backends.write_source`),
then the voxel data in file order, one slab of ``K`` slices of one channel at
a time, so memory stays at a slab whatever the volume. The output is written
under a hidden temporary name and published only when complete
(:mod:`voxelflow._atomic`). For ``.nii`` the space is reserved first (a full
disk fails before anything is written) and the header is written *last*: a
partial left by a killed process is never a readable NIfTI file. Disk-full,
quota and permission failures are errors that name the output and the fix.
"""

from __future__ import annotations

import errno
import gzip
import io
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from voxelflow._atomic import atomic_target
from voxelflow._errors import VoxelflowError, VoxelflowPermissionError, VoxelflowValueError
from voxelflow.backends.nifti_header import NiftiHeaderType
from voxelflow.backends.write_source import WriteSource, source_of

SAVE_OPTIONS = ("dtype", "compresslevel", "overwrite", "progress", "label")
#: Bytes of one slab written at a time.
SLAB_BYTES = 64 << 20


def is_nifti_output(path: str) -> bool:
    return path.lower().endswith((".nii", ".nii.gz")) and "://" not in path


def write_error(path: str, error: OSError) -> VoxelflowError:
    """A library error for a failed write of ``path`` that says what to do."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return VoxelflowValueError(
            f"{path}: no space left on the device (or quota exceeded) while writing it; "
            "nothing was written there; free some space or write to another disk"
        )
    if isinstance(error, PermissionError) or error.errno in (
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
    ):
        return VoxelflowPermissionError(
            f"{path}: cannot write there ({error.strerror or error}); choose a writable "
            "directory or fix its permissions"
        )
    return VoxelflowValueError(f"{path}: writing it failed ({error}); nothing was written there")


def write_nifti(image: Any, path: str, **options: Any) -> None:
    """Write ``image`` to ``path`` (``.nii`` or ``.nii.gz``), streaming (writer registry entry).

    Options: ``dtype`` (a NumPy dtype to store; the values are converted),
    ``compresslevel`` for ``.nii.gz``, ``overwrite`` (default ``True``: an
    existing image file is replaced; a directory or non-image is never),
    ``progress`` (a progress bar), ``label``.
    """
    unknown = set(options) - set(SAVE_OPTIONS)
    if unknown:
        raise VoxelflowValueError(
            f"{path}: unknown NIfTI save option(s) {sorted(unknown)}; known: "
            f"{', '.join(SAVE_OPTIONS)}"
        )
    # A dtype to store means the values as the image reads them, converted (not raw + scaling).
    source = source_of(image, options.get("label"), keep_stored=options.get("dtype") is None)
    write_nifti_source(
        source,
        path,
        dtype=options.get("dtype"),
        compresslevel=int(options.get("compresslevel", 6)),
        overwrite=bool(options.get("overwrite", True)),
        progress=options.get("progress"),
    )


def write_nifti_source(
    source: WriteSource,
    path: str,
    *,
    dtype: Any = None,
    compresslevel: int = 6,
    overwrite: bool = False,
    progress: bool | None = None,
) -> None:
    """Stream ``source`` into a ``.nii`` or ``.nii.gz`` at ``path`` (atomic)."""
    from tqdm.auto import tqdm

    from voxelflow.backends.registry import is_image

    header = source.header("t").copy()
    if dtype is not None:
        header.set_data_dtype(np.dtype(dtype))
        header.set_slope_inter(np.nan, np.nan)
    magic = bytes(header["magic"])
    if magic.startswith(b"ni"):  # a .hdr/.img pair header: make it single-file (n+1 / n+2)
        header["magic"] = b"n+" + magic[2:]
    extensions = sum(e.get_sizeondisk() for e in header.extensions)
    offset = -(-(int(header.sizeof_hdr) + 4 + extensions) // 16) * 16
    header.set_data_offset(offset)
    stored = np.dtype(header.get_data_dtype())
    channels, i, j, k = source.shape
    slab = max(1, SLAB_BYTES // max(1, i * j * stored.itemsize))
    total = offset + math.prod((channels, i, j, k)) * stored.itemsize
    compressed = path.lower().endswith(".gz")
    bar = tqdm(
        total=channels * k, unit="slice", desc=f"writing {os.path.basename(path)}",
        disable=None if progress is None else not progress, leave=False,
    )  # fmt: skip
    try:
        with atomic_target(path, overwrite=overwrite, replaceable=is_image) as tmp:
            try:
                with open(tmp, "wb", buffering=0) as raw:
                    if compressed:
                        with gzip.GzipFile(
                            fileobj=raw, mode="wb", compresslevel=compresslevel
                        ) as gz:
                            gz.write(_header_bytes(header, offset))
                            _write_data(gz.write, source, stored, slab, bar)
                    else:
                        fd = raw.fileno()
                        _reserve(fd, total)
                        os.lseek(fd, offset, os.SEEK_SET)
                        _write_data(lambda data: _write_all(fd, data), source, stored, slab, bar)
                        os.fsync(fd)
                        os.lseek(fd, 0, os.SEEK_SET)
                        _write_all(
                            fd, _header_bytes(header, offset)
                        )  # last: a partial is never a NIfTI
            except OSError as error:
                raise write_error(path, error) from error
    except OSError as error:  # creating the directory, or publishing the file
        if isinstance(error, VoxelflowError):
            raise
        raise write_error(path, error) from error
    finally:
        bar.close()


def _reserve(fd: int, size: int) -> None:
    """Reserve ``size`` bytes on the disk now, so a full disk fails before any data is written."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as error:
        if error.errno in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", -1)):
            return  # the filesystem cannot reserve: the writes will report a full disk
        raise


def _header_bytes(header: NiftiHeaderType, offset: int) -> bytes:
    """The header, its extension flag and extensions, padded to the data ``offset``."""
    stream = io.BytesIO()
    header.write_to(stream)
    return stream.getvalue().ljust(offset, b"\x00")


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _write_data(
    write: Callable[[bytes], Any], source: WriteSource, stored: np.dtype, slab: int, bar: Any
) -> None:
    """Voxel data in file order: channel by channel, each in slabs of ``slab`` ``K`` slices."""
    channels, i, j, k = source.shape
    for channel in range(channels):
        for k0 in range(0, k, slab):
            k1 = min(k, k0 + slab)
            box = (slice(channel, channel + 1, 1), slice(0, i, 1), slice(0, j, 1), slice(k0, k1, 1))
            block = source.read_stored(box)[0]  # (I, J, k)
            if block.dtype != stored:
                block = block.astype(stored)
            write(np.asfortranarray(block).tobytes(order="F"))
            bar.update(k1 - k0)

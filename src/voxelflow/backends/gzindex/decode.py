"""Inflating a whole gzip stream into a caller's buffer, checked and bounded.

Owns the optional decoders (rapidgzip's parallel one, ISA-L's single-threaded
one), the threads they use, and the checks that make a short, corrupt or
oversized stream an error rather than wrong data: the gzip CRC-32 and length,
and :data:`MAX_TRAILING` (no inflating far past what the header declares, so
a decompression bomb costs a bounded amount of work and memory).
"""

from __future__ import annotations

import gzip
import importlib
import os
import struct
import zlib
from types import ModuleType
from typing import Any

import numpy as np

from voxelflow._errors import VoxelflowValueError

#: rapidgzip's chunk size (compressed bytes); its seek points are about this far apart.
CHUNK_SIZE = 4 << 20
#: Below this compressed size (or with one thread) a whole read uses ISA-L directly.
PARALLEL_ABOVE = 32 << 20
#: Bytes a stream may hold past the image its header declares (padding some writers
#: add); more is refused as not a plain NIfTI file (or a decompression bomb).
MAX_TRAILING = 16 << 20
_PIECE = 64 << 20
_SCRATCH = 1 << 20


def rapidgzip_module() -> ModuleType | None:
    """``rapidgzip`` if it imports, else ``None`` (checked on every call: tests patch it)."""
    try:
        return importlib.import_module("rapidgzip")
    except ImportError:
        return None


def igzip_module() -> ModuleType | None:
    """``isal.igzip`` if it imports, else ``None``."""
    try:
        return importlib.import_module("isal.igzip")
    except ImportError:
        return None


def decode_errors() -> tuple[type[Exception], ...]:
    """What a gzip decoder raises on a corrupt stream; isal's ``IsalError`` stopped deriving
    from ``OSError`` in isal 1.9."""
    errors: tuple[type[Exception], ...] = (ValueError, OSError, EOFError, zlib.error, RuntimeError)
    try:
        return (*errors, importlib.import_module("isal.igzip_lib").IsalError)
    except (ImportError, AttributeError):
        return errors


def default_threads() -> int:
    """Decoder threads: the cores this process may use (1 inside a DataLoader worker)."""
    try:
        from torch.utils.data import get_worker_info

        if get_worker_info() is not None:
            return 1  # the workers are already the parallelism
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def corrupt_error(path: str, error: BaseException | str, hint: str = "") -> VoxelflowValueError:
    """The error for a stream that cannot be inflated (``hint`` adds a remedy)."""
    detail = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return VoxelflowValueError(
        f"{path}: the compressed data is truncated or corrupt ({detail}); "
        f"re-copy or re-export the file{hint}"
    )


def oversized_error(path: str, declared: int) -> VoxelflowValueError:
    return VoxelflowValueError(
        f"{path}: the gzip stream holds more than {MAX_TRAILING} bytes past the "
        f"{declared} bytes its NIfTI header declares; it is not a plain NIfTI file (or is "
        "a decompression bomb); re-export it"
    )


def inflate_into(path: str, offset: int, out: np.ndarray, *, threads: int | None = None) -> None:
    """Inflate ``path`` from uncompressed byte ``offset`` into ``out`` (filled exactly).

    Uses rapidgzip with ``threads`` threads for big files, else ISA-L. The rest
    of the stream is inflated too (at most :data:`MAX_TRAILING` bytes) and its
    gzip CRC-32 and length checked, so a truncated, corrupt or oversized file
    raises instead of returning wrong data. ``out`` is contiguous; its bytes are
    filled in memory order.
    """
    threads = default_threads() if threads is None else threads
    buffer = out.reshape(-1, order="A").view(np.uint8)
    rapidgzip = rapidgzip_module()
    igzip = igzip_module()
    small = os.path.getsize(path) < PARALLEL_ABOVE or threads == 1
    if rapidgzip is not None and (igzip is None or not small):
        _inflate_rapidgzip(rapidgzip, path, offset, buffer, threads)
    elif igzip is not None:
        _inflate_isal(igzip, path, offset, buffer)
    else:
        raise ImportError("neither rapidgzip nor isal is installed")


def _inflate_rapidgzip(
    rapidgzip: ModuleType, path: str, offset: int, buffer: np.ndarray, threads: int
) -> None:
    declared = offset + buffer.nbytes
    try:
        with rapidgzip.RapidgzipFile(path, parallelization=threads, chunk_size=CHUNK_SIZE) as file:
            skip(file, offset, path)
            fill(file, buffer, path)
            total = declared + drain(file, path, declared)
    except decode_errors() as error:
        if isinstance(error, VoxelflowValueError):
            raise
        raise corrupt_error(path, error) from error
    # rapidgzip returns a short stream (no error) for a file cut before its trailer.
    check_trailer(path, total)


def _inflate_isal(igzip: ModuleType, path: str, offset: int, buffer: np.ndarray) -> None:
    declared = offset + buffer.nbytes
    try:
        with igzip.open(path, "rb") as file:
            skip(file, offset, path)
            fill(file, buffer, path)
            drain(file, path, declared)  # reaching EOF makes igzip check CRC-32 and length
    except decode_errors() as error:
        if isinstance(error, VoxelflowValueError):
            raise
        raise corrupt_error(path, error) from error


def skip(file: Any, count: int, path: str) -> None:
    """Read past the first ``count`` bytes (the header)."""
    if count and len(file.read(count)) != count:
        raise corrupt_error(path, "the stream ends inside the header")


def fill(file: Any, buffer: np.ndarray, path: str) -> None:
    """Fill ``buffer`` from ``file`` exactly, or raise naming how much the stream held."""
    view = memoryview(buffer)  # type: ignore[arg-type]
    done = 0
    while done < len(view):
        # Bounded pieces: some readers (isal's) inflate into a temporary of the size asked.
        got = file.readinto(view[done : done + _PIECE])
        if not got:
            raise corrupt_error(
                path,
                f"the stream holds {done} bytes of voxel data, the header describes {len(view)}",
            )
        done += got


def drain(file: Any, path: str, declared: int, limit: int = MAX_TRAILING) -> int:
    """Inflate what is left (at most ``limit`` bytes more); the bytes it held."""
    scratch = bytearray(_SCRATCH)
    total = 0
    while got := file.readinto(scratch):
        total += got
        if total > limit:
            raise oversized_error(path, declared)
    return total


def check_trailer(path: str, total: int) -> None:
    """A gzip stream ends with its length modulo 2³²; a truncated file almost never does."""
    with open(path, "rb") as file:
        file.seek(-4, os.SEEK_END)
        (isize,) = struct.unpack("<I", file.read(4))
    if isize == total % (1 << 32):
        return
    # Multi-member files (bgzip) end with their last member's length: check strictly.
    igzip = igzip_module()
    opener: Any = igzip.open if igzip is not None else gzip.open
    try:
        with opener(path, "rb") as stream:
            drain(stream, path, total, limit=total + MAX_TRAILING)
    except decode_errors() as error:
        if isinstance(error, VoxelflowValueError):
            raise
        raise corrupt_error(path, error) from error

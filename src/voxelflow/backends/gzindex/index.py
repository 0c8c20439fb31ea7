"""Seek-point index files: building, storing, finding and verifying them.

An index (rapidgzip's, in gztool's compact format) is built with one full,
checked pass over the stream and stored beside the file
(``brain.nii.gz.gzidx``) when its directory is writable, otherwise under
``$VOXELFLOW_CACHE_DIR`` (default ``~/.cache/voxelflow``). An index file
records the source's absolute path, size, modification time, a CRC-32 of its
first and last 64 KiB, CRC-32s of the compressed bytes at every seek point
(what the index seeks into) and a CRC-32 of its own payload. An index that
does not match the file in any of these, or is damaged, is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zlib
from dataclasses import dataclass

from voxelflow._atomic import atomic_target
from voxelflow._errors import VoxelflowValueError
from voxelflow.backends.gzindex.decode import (
    CHUNK_SIZE,
    MAX_TRAILING,
    check_trailer,
    corrupt_error,
    decode_errors,
    default_threads,
    drain,
    rapidgzip_module,
)

INDEX_SUFFIX = ".gzidx"
_MAGIC = b"VXGZIDX1"
_FINGERPRINT_BYTES = 64 << 10
_PROBE_BYTES = 64
_MAX_PROBES = 4096


@dataclass(frozen=True)
class Fingerprint:
    """What identifies one version of a file: a changed file never matches an old index."""

    path: str
    size: int
    mtime_ns: int
    ends_crc: int

    @classmethod
    def of(cls, path: str) -> Fingerprint:
        stat = os.stat(path)
        with open(path, "rb") as file:
            head = file.read(_FINGERPRINT_BYTES)
            file.seek(max(0, stat.st_size - _FINGERPRINT_BYTES))
            tail = file.read(_FINGERPRINT_BYTES)
        return cls(
            path=os.path.realpath(path),
            size=stat.st_size,
            mtime_ns=stat.st_mtime_ns,
            ends_crc=zlib.crc32(tail, zlib.crc32(head)),
        )

    def same_stat(self, path: str) -> bool:
        """Whether ``path`` still has this size and modification time (one ``stat``)."""
        try:
            stat = os.stat(path)
        except OSError:
            return False
        return stat.st_size == self.size and stat.st_mtime_ns == self.mtime_ns

    def as_meta(self) -> dict[str, object]:
        return {
            "path": self.path,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "ends_crc": self.ends_crc,
        }


def cache_dir() -> str:
    """Where indexes go when the file's directory is not writable."""
    root = os.environ.get("VOXELFLOW_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "voxelflow"
    )
    return os.path.join(root, "gzindex")


def index_locations(path: str) -> list[str]:
    """Candidate index files for ``path``, in the order they are tried."""
    real = os.path.realpath(path)
    beside = real + INDEX_SUFFIX
    digest = hashlib.sha1(real.encode()).hexdigest()[:16]
    cached = os.path.join(cache_dir(), f"{os.path.basename(real)}.{digest}{INDEX_SUFFIX}")
    return [beside, cached]


def probe_seek_points(path: str, byte_offsets: list[int]) -> list[list[int]]:
    """``[offset, crc]`` of the compressed bytes at each seek point (what the index seeks into)."""
    probes = []
    with open(path, "rb") as file:
        for offset in byte_offsets[:_MAX_PROBES]:
            file.seek(offset)
            probes.append([offset, zlib.crc32(file.read(_PROBE_BYTES))])
    return probes


def load_index(path: str) -> tuple[bytes, str] | None:
    """The stored index payload for the current version of ``path`` and where it is, or None.

    An index that is unreadable, damaged, made for another version of the
    file, or whose seek points no longer match the compressed bytes there is
    ignored (and overwritten by the next build).
    """
    fingerprint = Fingerprint.of(path)
    for location in index_locations(path):
        payload = _read_index_file(location, fingerprint, path)
        if payload is not None:
            return payload, location
    return None


def _read_index_file(location: str, fingerprint: Fingerprint, path: str) -> bytes | None:
    try:
        with open(location, "rb") as file:
            blob = file.read()
    except OSError:
        return None
    try:
        if not blob.startswith(_MAGIC):
            return None
        (length,) = struct.unpack_from("<I", blob, len(_MAGIC))
        start = len(_MAGIC) + 4
        meta = json.loads(blob[start : start + length].decode())
        payload = blob[start + length :]
        if any(meta.get(key) != value for key, value in fingerprint.as_meta().items()):
            return None  # stale: the file changed since the index was made
        if meta.get("payload_bytes") != len(payload) or meta.get("payload_crc") != zlib.crc32(
            payload
        ):
            return None  # damaged
        probes = meta.get("probes")
        if not isinstance(probes, list):
            return None  # written before seek points were verified: rebuild
        offsets = [int(offset) for offset, _ in probes]
        if probe_seek_points(path, offsets) != [[int(o), int(c)] for o, c in probes]:
            return None  # same size and time, other bytes at the seek points: stale
        return payload
    except (ValueError, TypeError, struct.error, UnicodeDecodeError, AttributeError, OSError):
        return None


def save_index(
    path: str, payload: bytes, fingerprint: Fingerprint, probes: list[list[int]]
) -> str | None:
    """Store ``payload`` for ``path`` beside it, else in the cache directory.

    Returns where it went, or None when no location is writable (the index then
    lives only in this process).
    """
    meta = json.dumps(
        {
            **fingerprint.as_meta(),
            "format": "rapidgzip-gztool",
            "payload_bytes": len(payload),
            "payload_crc": zlib.crc32(payload),
            "probes": probes,
        }
    ).encode()
    blob = _MAGIC + struct.pack("<I", len(meta)) + meta + payload
    for location in index_locations(path):
        directory = os.path.dirname(location)
        try:
            os.makedirs(directory, exist_ok=True)
            if not os.access(directory, os.W_OK):
                continue
            with atomic_target(location, overwrite=True) as tmp, open(tmp, "wb") as file:
                file.write(blob)
            return location
        except OSError:
            continue
    return None


def build_index(
    path: str, *, threads: int | None = None, spacing: int = CHUNK_SIZE, needed: int = 0
) -> tuple[bytes, int, list[int]]:
    """Inflate all of ``path`` (validating it): its index, length and seek-point byte offsets.

    Streams through a small buffer: memory stays flat whatever the file's size.
    ``spacing`` is the decoder's chunk size in compressed bytes: seek points are
    at least about this far apart (smaller: a bigger index, cheaper seeks). A
    stream that holds more than :data:`MAX_TRAILING` bytes past ``needed`` is
    refused before the rest is inflated.
    """
    rapidgzip = rapidgzip_module()
    if rapidgzip is None:
        raise ImportError("rapidgzip is not installed")
    threads = default_threads() if threads is None else threads
    sink = io.BytesIO()
    try:
        with rapidgzip.RapidgzipFile(path, parallelization=threads, chunk_size=spacing) as file:
            total = drain(file, path, needed, limit=needed + MAX_TRAILING)
            file.export_index(sink, rapidgzip.IndexFormat.GZTOOL)
            offsets = sorted({bits // 8 for bits in file.block_offsets()})
    except decode_errors() as error:
        if isinstance(error, VoxelflowValueError):
            raise
        raise corrupt_error(path, error) from error
    check_trailer(path, total)
    return sink.getvalue(), total, offsets


@dataclass(frozen=True)
class StoredIndex:
    """A seek-point index and where it came from."""

    payload: bytes
    location: str | None  # None: kept only in memory (no writable place)
    built: bool  # built now (else loaded)
    fingerprint: Fingerprint


def ensure_index(
    path: str,
    *,
    needed: int = 0,
    threads: int | None = None,
    spacing: int = CHUNK_SIZE,
    force: bool = False,
) -> StoredIndex:
    """The index of ``path``: loaded if a valid one is stored, else built and stored.

    ``needed`` is how many uncompressed bytes the stream must hold (header and
    voxel data); a shorter stream is reported as truncated. ``force`` rebuilds
    even when a stored index looks valid (``voxelflow index --force``).
    """
    fingerprint = Fingerprint.of(path)
    if not force:
        found = load_index(path)
        if found is not None:
            return StoredIndex(found[0], found[1], False, fingerprint)
    payload, total, offsets = build_index(path, threads=threads, spacing=spacing, needed=needed)
    if total < needed:
        raise corrupt_error(
            path, f"the stream holds {total} bytes, the header describes at least {needed}"
        )
    if Fingerprint.of(path) != fingerprint:
        raise VoxelflowValueError(
            f"{path}: the file changed while its gzip index was being built; try again"
        )
    probes = probe_seek_points(path, offsets)
    return StoredIndex(payload, save_index(path, payload, fingerprint, probes), True, fingerprint)

"""Fetching a NIfTI-Zarr store's objects: guarded, bounded, and honest about damage.

Owns the zarr store a :class:`~voxelflow.backends.niftizarr.NiftiZarrBackend`
reads through: a local directory, or a remote URI through fsspec with bounded
time (:mod:`voxelflow.backends._fsspec`), wrapped in a :class:`GuardedStore`
that

* retries transient remote errors a bounded number of times, with backoff;
* refuses objects of a local store that resolve outside it (a symbolic link
  to ``/etc/passwd`` is never read as a chunk);
* reports a chunk that is missing (when the store is known to be complete) or
  whose byte size cannot be right (uncompressed chunks), naming the chunk;
* during a read, records the first failure instead of raising it in every
  one of zarr's concurrent chunk tasks, so a dead server gives one clear error,
  not one traceback per chunk (:func:`recording_failures`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from voxelflow._errors import (
    VoxelflowError,
    VoxelflowFileNotFoundError,
    VoxelflowValueError,
)
from voxelflow.backends._fsspec import (
    backoff,
    describe_remote_error,
    filesystem,
    is_remote,
    is_transient,
    strip_file,
)

METADATA_NAMES = {".zarray", ".zattrs", ".zgroup", "zarr.json", ".zmetadata"}

_FAILURES: contextvars.ContextVar[list[BaseException] | None] = contextvars.ContextVar(
    "voxelflow_zarr_failures", default=None
)


class ChunkError(VoxelflowValueError):
    """A chunk of the store is missing, damaged, or outside the store."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


@contextlib.contextmanager
def recording_failures() -> Iterator[list[BaseException]]:
    """Within this block, a failing ``get`` records its error and returns nothing.

    The caller raises the first recorded failure after zarr's read returns: one
    error, whatever the number of chunks in flight.
    """
    failures: list[BaseException] = []
    token = _FAILURES.set(failures)
    try:
        yield failures
    finally:
        _FAILURES.reset(token)


class StoreGuard:
    """The rules a :class:`GuardedStore` applies (shared by its copies)."""

    def __init__(self, where: str, root: str | None, retries: int) -> None:
        self.where = where
        self.root = None if root is None else os.path.realpath(root)
        self.retries = retries
        self.requests = 0
        self.strict_prefixes: tuple[str, ...] = ()
        self.chunk_bytes: dict[str, int] = {}  # array path -> exact bytes of each raw chunk

    def check_inside(self, key: str) -> None:
        if self.root is None:
            return
        real = os.path.realpath(os.path.join(self.root, key))
        if real != self.root and not real.startswith(self.root + os.sep):
            raise ChunkError(
                f"{self.where}: object {key!r} is a symbolic link that leads outside the store "
                f"(to {real}); voxelflow never follows links out of a store; replace the link by "
                "the data itself (e.g. cp -rL), or re-convert the volume",
                key,
            )

    def check_value(self, key: str, value: Any) -> None:
        base = key.rsplit("/", 1)[-1]
        if base in METADATA_NAMES:
            return
        array = next((p for p in self.chunk_bytes if key.startswith(p + "/")), None)
        if value is None:
            if any(key.startswith(p) for p in self.strict_prefixes):
                raise ChunkError(
                    f"{self.where}: chunk {key!r} is missing from the store; the store is "
                    "incomplete or damaged: re-convert or re-upload it, or pass "
                    "missing_chunks='fill' to read missing chunks as the fill value",
                    key,
                )
            return
        if array is not None and len(value) != self.chunk_bytes[array]:
            raise ChunkError(
                f"{self.where}: chunk {key!r} holds {len(value)} bytes, but an uncompressed chunk "
                f"of this array holds exactly {self.chunk_bytes[array]}; the chunk is damaged; "
                "re-convert or re-copy the store",
                key,
            )


def guarded_store(store: Any, guard: StoreGuard) -> Any:
    """Wrap a zarr store with ``guard``'s rules (see the module's docs)."""
    from zarr.storage import WrapperStore

    class GuardedStore(WrapperStore):  # type: ignore[misc,type-arg]
        """A zarr store wrapper: bounded retries, containment, damage checks, one failure."""

        def __init__(self, inner: Any) -> None:
            super().__init__(inner)
            self.guard = guard

        @property
        def requests(self) -> int:
            """``get`` calls made so far (all copies of this store)."""
            return self.guard.requests

        def _with_store(self, inner: Any) -> Any:
            return guarded_store(inner, self.guard)

        async def _get_once(self, key: str, prototype: Any, byte_range: Any) -> Any:
            guard = self.guard
            guard.requests += 1
            guard.check_inside(key)
            for attempt in range(guard.retries + 1):
                try:
                    value = await self._store.get(key, prototype, byte_range)
                    break
                except Exception as error:
                    if attempt == guard.retries or not is_transient(error):
                        raise
                    await asyncio.sleep(backoff(attempt))
            if byte_range is None:
                guard.check_value(key, value)
            return value

        async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
            failures = _FAILURES.get()
            if failures is None:
                return await self._get_once(key, prototype, byte_range)
            if failures:
                return None  # the read already failed: fetch nothing more
            try:
                return await self._get_once(key, prototype, byte_range)
            except Exception as error:
                failures.append(error)
                return None

        async def get_partial_values(self, prototype: Any, key_ranges: Iterable[Any]) -> list[Any]:
            return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    return GuardedStore(store)


def open_store(
    source: str,
    storage_options: dict[str, Any] | None,
    *,
    read_only: bool,
    retries: int = 3,
    guard: StoreGuard | None = None,
) -> Any:
    """A guarded zarr store for a local path or a remote URI (bounded time for remote ones)."""
    from zarr.storage import FsspecStore, LocalStore

    if not is_remote(source):
        path = strip_file(source)
        if read_only and not os.path.exists(path):
            raise VoxelflowFileNotFoundError(f"{path}: no such NIfTI-Zarr store; check the path")
        inner: Any = LocalStore(path, read_only=read_only)
        root: str | None = path
    else:
        fs, path = filesystem(source, storage_options, asynchronous=True)
        try:
            inner = FsspecStore(fs=fs, path=path, read_only=read_only)
        except Exception as error:
            raise describe_remote_error(source, error) from error
        root = None
    return guarded_store(inner, guard or StoreGuard(source, root, retries))


def first_failure(failures: Sequence[BaseException]) -> BaseException | None:
    """The failure to report: a library error if any was recorded, else the first one."""
    for failure in failures:
        if isinstance(failure, VoxelflowError):
            return failure
    return failures[0] if failures else None


def recording_writes(store: Any) -> Any:
    """Wrap a zarr store being written: the first failing ``set`` records its error and every
    later one is skipped, so zarr's concurrent chunk writes all finish (none is left running
    after the caller sees the error and removes the partial store). The caller checks
    ``store.failures`` after each zarr operation."""
    from zarr.storage import WrapperStore

    class RecordingStore(WrapperStore):  # type: ignore[misc,type-arg]
        def __init__(self, inner: Any) -> None:
            super().__init__(inner)
            self.failures: list[BaseException] = []

        def _with_store(self, inner: Any) -> Any:
            return self  # one list of failures for every view of the store

        async def set(self, key: str, value: Any) -> None:
            if self.failures:
                return
            try:
                await self._store.set(key, value)
            except Exception as error:
                self.failures.append(error)

    return RecordingStore(store)

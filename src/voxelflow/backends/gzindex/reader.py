"""Random access to one gzip stream through its seek-point index, in one process.

Owns the rapidgzip decoder handles: opened lazily in the process that reads
(a forked child or an unpickled copy opens its own, and never touches its
parent's), closed by ``close()``, by garbage collection, or by an ``atexit``
hook (rapidgzip aborts the interpreter if a file is still open at exit).
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import threading
import weakref
from typing import Any

import numpy as np

from voxelflow._errors import VoxelflowValueError
from voxelflow.backends.gzindex.decode import CHUNK_SIZE, corrupt_error, rapidgzip_module

_OPEN: dict[int, Any] = {}  # id(reader) -> rapidgzip file, closed at exit in its own process
_OPEN_LOCK = threading.Lock()

#: The remedy named when an indexed read fails: the index may be stale.
REBUILD_HINT = (
    "; if the file was replaced, its index may be stale: rebuild it with: voxelflow index --force "
)


@atexit.register
def _close_all() -> None:  # rapidgzip aborts the interpreter if a file is open at exit
    with _OPEN_LOCK:
        readers = list(_OPEN.values())
        _OPEN.clear()
    for reader in readers:
        reader.close()


class IndexedReader:
    """Random access to one gzip file through a seek-point index, in one process.

    Thread-safe (one lock per reader).

    Example:
        >>> import gzip, numpy as np, os, tempfile
        >>> from voxelflow.backends.gzindex import IndexedReader, build_index
        >>> path = os.path.join(tempfile.mkdtemp(), "x.gz")
        >>> with gzip.open(path, "wb") as f:
        ...     _ = f.write(bytes(range(256)) * 4096)
        >>> reader = IndexedReader(path, build_index(path)[0])
        >>> bytes(reader.read_at(1000, 3))
        b'\\xe8\\xe9\\xea'
        >>> reader.close()
    """

    def __init__(self, path: str, index: bytes, spacing: int = CHUNK_SIZE) -> None:
        self.path = path
        self.index = index
        self.spacing = spacing
        self._file: Any = None
        self._pid = -1
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "index": self.index, "spacing": self.spacing}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["index"], state["spacing"])  # type: ignore[misc]

    @property
    def is_open(self) -> bool:
        """Whether this process holds an open decoder."""
        return self._file is not None and self._pid == os.getpid()

    def _handle(self) -> Any:
        if self.is_open:
            return self._file
        # A decoder inherited through fork belongs to the parent: never use or close it
        # here (its threads do not exist in this process); leave it to the parent.
        rapidgzip = rapidgzip_module()
        if rapidgzip is None:
            raise ImportError("rapidgzip is not installed")
        file = rapidgzip.RapidgzipFile(self.path, parallelization=1, chunk_size=self.spacing)
        try:
            file.import_index(io.BytesIO(self.index))
        except (ValueError, RuntimeError) as error:
            file.close()
            raise VoxelflowValueError(
                f"{self.path}: its gzip index does not fit the file ({error}); "
                "rebuild it with: voxelflow index --force " + self.path
            ) from error
        self._file, self._pid = file, os.getpid()
        with _OPEN_LOCK:
            _OPEN[id(self)] = file
        weakref.finalize(self, _forget, id(self), file, self._pid)
        return file

    def read_into(self, offset: int, out: np.ndarray) -> None:
        """Fill the contiguous ``out`` with the uncompressed stream's bytes from ``offset``."""
        view = memoryview(out.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
        size = len(view)
        with self._lock:
            file = self._handle()
            try:
                file.seek(offset)
                done = 0
                while done < size:
                    got = file.readinto(view[done:])
                    if not got:
                        raise corrupt_error(
                            self.path,
                            f"the stream ends before byte {offset + size}",
                            REBUILD_HINT + self.path,
                        )
                    done += got
            except (ValueError, RuntimeError, OSError) as error:
                if isinstance(error, VoxelflowValueError):
                    raise
                raise corrupt_error(self.path, error, REBUILD_HINT + self.path) from error

    def read_at(self, offset: int, size: int) -> np.ndarray:
        """``size`` bytes of the uncompressed stream from ``offset`` (a new array)."""
        out = np.empty(size, dtype=np.uint8)
        self.read_into(offset, out)
        return out

    def close(self) -> None:
        """Close the decoder if this process opened it."""
        with self._lock:
            file, pid = self._file, self._pid
            self._file, self._pid = None, -1
        if file is not None and pid == os.getpid():
            with _OPEN_LOCK:
                _OPEN.pop(id(self), None)
            file.close()


def _forget(key: int, file: Any, pid: int) -> None:
    if pid != os.getpid():
        return
    with _OPEN_LOCK:
        if _OPEN.get(key) is file:
            del _OPEN[key]
    with contextlib.suppress(Exception):
        file.close()

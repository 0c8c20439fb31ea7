"""Atomic output: write under a temporary name beside the target, rename on success."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    On any error (or ``KeyboardInterrupt``) the temporary file or directory is
    removed, so an interrupted write never leaves output that looks complete.
    The temporary name keeps the real suffixes after a ``.partial-<id>`` marker
    so that writers that look at the suffix (``.gz``, ``.zarr``) still work.
    """
    target = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{name}.partial-{uuid.uuid4().hex[:8]}.{name}")
    try:
        yield tmp
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)
        raise

"""Atomic output: write under a hidden temporary name beside the target, publish on success.

Owns the one procedure every writer follows, so that nothing is ever lost:

1. Before any work, an existing output is refused unless ``overwrite=True``,
   and even then only when it is recognisably something voxelflow would
   replace (``replaceable(path)``; by default a regular file, or a directory
   that holds only a Zarr store).
2. The output is written under ``.NAME.partial-<id>.NAME`` beside the target
   (the real suffixes kept, for writers that look at them); on any error, or
   ``KeyboardInterrupt``, the temporary is removed.
3. Publishing a file onto a file is one ``os.replace``. Anything else is
   renamed aside first (``.NAME.replaced-<id>``), the new output renamed in,
   and only then the old one deleted: a process killed at any point leaves
   the old output, or the new one, always one of them whole.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator

from voxelflow._errors import VoxelflowFileExistsError, VoxelflowValueError

_ZARR_ENTRIES = {"zarr.json", ".zgroup", ".zattrs", ".zarray", ".zmetadata"}


def holds_only_a_zarr_store(path: str) -> bool:
    """Whether directory ``path`` is a Zarr group and holds nothing a Zarr store would not."""
    try:
        names = set(os.listdir(path))
    except OSError:
        return False
    if not names & {"zarr.json", ".zgroup"}:
        return False
    for name in names - _ZARR_ENTRIES:
        inner = os.path.join(path, name)
        if os.path.islink(inner) or not os.path.isdir(inner):
            return False  # a Zarr group holds its arrays and groups as directories
        if not set(os.listdir(inner)) & {"zarr.json", ".zarray", ".zgroup"}:
            return False
    return True


def default_replaceable(path: str) -> bool:
    """A regular file, a symbolic link, or a directory that holds only a Zarr store."""
    if os.path.islink(path) or os.path.isfile(path):
        return True
    return os.path.isdir(path) and holds_only_a_zarr_store(path)


def check_target(
    target: str,
    *,
    overwrite: bool,
    replaceable: Callable[[str], bool] | None = None,
) -> None:
    """Refuse an existing ``target`` unless ``overwrite`` and it is ``replaceable``."""
    if not os.path.lexists(target):
        return
    if not overwrite:
        raise VoxelflowFileExistsError(
            f"{target}: the output already exists; pass overwrite=True (--overwrite) to "
            "replace it, or choose another output path"
        )
    if not (replaceable or default_replaceable)(target):
        kind = "a directory" if os.path.isdir(target) else "a file"
        raise VoxelflowValueError(
            f"{target}: the output exists and is {kind} that is not an image voxelflow wrote "
            "or can read, so it is never replaced, even with overwrite=True; move or delete it "
            "yourself, or choose another output path"
        )


def hidden_sibling(target: str, tag: str) -> str:
    """``.NAME.<tag>-<id>.NAME`` beside ``target`` (same filesystem: renames are atomic)."""
    directory, name = os.path.split(os.path.abspath(target))
    return os.path.join(directory, f".{name}.{tag}-{uuid.uuid4().hex[:8]}.{name}")


def remove(path: str) -> None:
    """Delete a file, a link or a directory tree, if it exists."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def publish(
    tmp: str,
    target: str,
    *,
    overwrite: bool,
    replaceable: Callable[[str], bool] | None = None,
) -> None:
    """Move the finished ``tmp`` onto ``target`` (see the module's procedure)."""
    check_target(target, overwrite=overwrite, replaceable=replaceable)
    both_files = not os.path.isdir(tmp) and (
        os.path.isfile(target) or os.path.islink(target) or not os.path.lexists(target)
    )
    if both_files:
        os.replace(tmp, target)  # atomic, also over an existing file
        return
    if not os.path.lexists(target):
        os.rename(tmp, target)
        return
    aside = hidden_sibling(target, "replaced")
    os.rename(target, aside)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(aside, target)  # put the old output back
        raise
    remove(aside)


@contextlib.contextmanager
def atomic_target(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = True,
    replaceable: Callable[[str], bool] | None = None,
) -> Iterator[str]:
    """Yield a hidden temporary path beside ``path``; publish it onto ``path`` on success.

    An existing ``path`` is refused up front unless ``overwrite`` and
    ``replaceable(path)`` (default: :func:`default_replaceable`). On any error
    (or ``KeyboardInterrupt``) the temporary is removed, so an interrupted write
    never leaves output that looks complete.

    Example:
        >>> import os, tempfile
        >>> from voxelflow._atomic import atomic_target
        >>> path = os.path.join(tempfile.mkdtemp(), "out.txt")
        >>> with atomic_target(path) as tmp:
        ...     _ = open(tmp, "w").write("done")
        >>> open(path).read(), sorted(os.listdir(os.path.dirname(path)))
        ('done', ['out.txt'])
    """
    target = os.fspath(path)
    check_target(target, overwrite=overwrite, replaceable=replaceable)
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    tmp = hidden_sibling(target, "partial")
    try:
        yield tmp
        publish(tmp, target, overwrite=overwrite, replaceable=replaceable)
    except BaseException:
        remove(tmp)
        raise

"""The library's exception family.

Every error voxelflow raises derives from :class:`VoxelflowError` *and* from the
builtin that matches it, so callers' existing ``except FileNotFoundError`` or
``except ValueError`` clauses keep working.

Messages follow one pattern: the file (or object), what was wrong, and the fix.
"""

from __future__ import annotations


class VoxelflowError(Exception):
    """Root of every exception raised by voxelflow."""


class VoxelflowFileNotFoundError(VoxelflowError, FileNotFoundError):
    """A path or URI does not exist."""


class VoxelflowValueError(VoxelflowError, ValueError):
    """A value (file contents, option, shape) is not acceptable."""


class VoxelflowTypeError(VoxelflowError, TypeError):
    """An argument has a type voxelflow does not support."""


class VoxelflowFileExistsError(VoxelflowError, FileExistsError):
    """An output already exists and was not to be replaced."""


class VoxelflowIndexError(VoxelflowError, IndexError):
    """An index falls outside an image or selects nothing."""


class VoxelflowKeyError(VoxelflowError, KeyError):
    """A name (image, output, backend) is unknown."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class VoxelflowPermissionError(VoxelflowError, PermissionError):
    """Access to a file or remote object was refused (credentials, policy)."""


class VoxelflowConnectionError(VoxelflowError, ConnectionError):
    """A remote store could not be reached (after the bounded retries)."""


class VoxelflowRuntimeError(VoxelflowError, RuntimeError):
    """Something failed while running (a worker, a conversion)."""


class MissingDependencyError(VoxelflowError, ImportError):
    """An optional dependency is needed for this feature and is not installed."""


def did_you_mean(value: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or ``""``."""
    import difflib

    close = difflib.get_close_matches(value, list(choices), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """Validate a ``Literal`` option once, with a did-you-mean message."""
    if value not in choices:
        raise VoxelflowValueError(
            f"{name}={value!r} is not one of {', '.join(map(repr, choices))}."
            + did_you_mean(str(value), choices)
        )
    return value


def require(module: str, feature: str, pip_name: str | None = None):  # type: ignore[no-untyped-def]
    """Import an optional dependency, or fail with the exact ``pip install`` line."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(
            f"{feature} needs the package {pip_name or module!r}, which is not installed; "
            f"run: pip install {pip_name or module}"
        ) from error

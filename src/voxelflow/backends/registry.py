"""The named registries of backends (readers) and writers, and the resolver.

A backend is found by asking each registered *matcher*, highest priority
first, whether it takes a source (a local path or a URI, as a string); the
first that does builds the backend with its *factory*. Writers work the same
way on output paths. A new format is added here, never in ``Image``:

    >>> from voxelflow.backends import register_backend, unregister_backend
    >>> from voxelflow.backends import ArrayLikeBackend
    >>> import numpy as np
    >>> register_backend(
    ...     "npy",
    ...     matcher=lambda source: source.endswith(".npy"),
    ...     factory=lambda source, **options: ArrayLikeBackend(
    ...         np.load(source, mmap_mode="r"), np.eye(4), path=source),
    ...     priority=50,
    ... )
    >>> unregister_backend("npy")
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voxelflow._errors import (
    VoxelflowKeyError,
    VoxelflowTypeError,
    VoxelflowValueError,
    did_you_mean,
)
from voxelflow.backends.base import BackendProtocol

Matcher = Callable[[str], bool]
Factory = Callable[..., BackendProtocol]
Writer = Callable[..., None]


@dataclass(frozen=True)
class Registration:
    """One entry of a registry."""

    name: str
    matcher: Matcher
    target: Callable[..., Any]
    priority: int


_BACKENDS: dict[str, Registration] = {}
_WRITERS: dict[str, Registration] = {}


def register_backend(
    name: str, matcher: Matcher, factory: Factory, *, priority: int = 0, replace: bool = False
) -> None:
    """Register a backend: ``factory(source, **options)`` for sources where ``matcher(source)``.

    Higher ``priority`` is asked first (built-ins: NIfTI-Zarr 30, NIfTI 20,
    SimpleITK -100 as the fallback). Registering an existing name raises
    unless ``replace=True``.

    Example:
        >>> import numpy as np
        >>> from voxelflow.backends import ArrayLikeBackend, register_backend, unregister_backend
        >>> register_backend("ones", lambda s: s.startswith("ones://"),
        ...                  lambda s: ArrayLikeBackend(np.ones((4, 4, 4)), np.eye(4), path=s))
        >>> import voxelflow as tio
        >>> tio.ScalarImage("ones://demo").dataobj[:, 0, 0, 0].item()
        1.0
        >>> unregister_backend("ones")
    """
    _register(_BACKENDS, "backend", name, matcher, factory, priority, replace)


def unregister_backend(name: str) -> None:
    """Remove a backend by name.

    Example:
        >>> from voxelflow.backends import unregister_backend
        >>> unregister_backend("no-such-backend")
        Traceback (most recent call last):
        ...
        voxelflow._errors.VoxelflowKeyError: no backend named 'no-such-backend' is registered; ...
    """
    _unregister(_BACKENDS, "backend", name)


def register_writer(
    name: str, matcher: Matcher, writer: Writer, *, priority: int = 0, replace: bool = False
) -> None:
    """Register a writer: ``writer(image, path, **options)`` for paths where ``matcher(path)``.

    Example:
        >>> import os, tempfile, numpy as np, torch, voxelflow as tio
        >>> from voxelflow.backends import register_writer, unregister_writer
        >>> register_writer("npy", lambda p: p.endswith(".npy"),
        ...                 lambda image, path: np.save(path, image.numpy()), priority=50)
        >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
        >>> tio.ScalarImage(torch.zeros(1, 2, 2, 2)).save(path)
        >>> np.load(path).shape
        (1, 2, 2, 2)
        >>> unregister_writer("npy")
    """
    _register(_WRITERS, "writer", name, matcher, writer, priority, replace)


def unregister_writer(name: str) -> None:
    """Remove a writer by name (see :func:`register_writer`)."""
    _unregister(_WRITERS, "writer", name)


def backends() -> list[Registration]:
    """Registered backends, in the order the resolver asks them."""
    return sorted(_BACKENDS.values(), key=lambda r: -r.priority)


def writers() -> list[Registration]:
    """Registered writers, in the order they are asked."""
    return sorted(_WRITERS.values(), key=lambda r: -r.priority)


def open_backend(
    source: str | os.PathLike[str], *, backend: str | None = None, **options: Any
) -> BackendProtocol:
    """Resolve ``source`` to a backend and open it (reads the header only).

    ``backend`` forces a registered backend by name; ``options`` go to its factory.

    Example:
        >>> import voxelflow as tio
        >>> from voxelflow.backends import open_backend
        >>> backend = open_backend(tio.datasets.nibabel_file("anatomical.nii"))
        >>> type(backend).__name__, backend.shape
        ('NiftiBackend', (1, 33, 41, 25))
    """
    text = os.fspath(source)
    if backend is not None:
        if backend not in _BACKENDS:
            raise VoxelflowKeyError(
                f"{text}: backend={backend!r} is not registered; registered: "
                f"{', '.join(sorted(_BACKENDS))}." + did_you_mean(backend, tuple(_BACKENDS))
            )
        return _build(_BACKENDS[backend], text, options)
    for registration in backends():
        if registration.matcher(text):
            return _build(registration, text, options)
    raise VoxelflowValueError(
        f"{text}: no backend can read this source; registered: {', '.join(sorted(_BACKENDS))}. "
        "Check the extension or URI scheme, or register a backend for it"
    )


def _build(registration: Registration, source: str, options: dict[str, Any]) -> BackendProtocol:
    """Call a factory, refusing options it does not take with a message that says so."""
    try:
        inspect.signature(registration.target).bind(source, **options)
    except TypeError:
        raise VoxelflowTypeError(
            f"{source}: the {registration.name!r} backend does not take option(s) "
            f"{', '.join(sorted(options))}; remove them (level= and storage_options= apply "
            "to .nii.zarr and remote sources)"
        ) from None
    except ValueError:  # no signature (a builtin or C factory): let the call decide
        pass
    return registration.target(source, **options)


def is_image(path: str) -> bool:
    """Whether ``path`` is an image voxelflow may replace when asked to overwrite it.

    A symbolic link (the link is replaced, never what it points to); a file that
    opens as an image (its header is read); a directory that holds only a Zarr
    store, which opens as an image or is a partial store voxelflow was writing.
    """
    from voxelflow._atomic import holds_only_a_zarr_store

    if os.path.islink(path):
        return True
    if os.path.isdir(path):
        if not holds_only_a_zarr_store(path):
            return False
        if _voxelflow_marker(path):
            return True
    try:
        open_backend(path)
    except Exception:
        return False
    return True


def _voxelflow_marker(path: str) -> bool:
    """Whether a Zarr group's attributes carry voxelflow's completeness marker."""
    import json

    for name, key in (("zarr.json", "attributes"), (".zattrs", None)):
        try:
            with open(os.path.join(path, name), encoding="utf-8") as file:
                meta = json.load(file)
        except (OSError, ValueError):
            continue
        attrs = meta.get(key, {}) if key else meta
        if isinstance(attrs, dict) and isinstance(attrs.get("voxelflow"), dict):
            return True
    return False


def find_writer(path: str | os.PathLike[str]) -> Writer:
    """The writer for an output path."""
    text = os.fspath(path)
    for registration in writers():
        if registration.matcher(text):
            return registration.target
    raise VoxelflowValueError(
        f"{text}: no writer for this extension; use .nii, .nii.gz, .nii.zarr, .nrrd, .mha "
        "or another format SimpleITK writes"
    )


def _register(
    table: dict[str, Registration],
    kind: str,
    name: str,
    matcher: Matcher,
    target: Callable[..., Any],
    priority: int,
    replace: bool,
) -> None:
    if name in table and not replace:
        raise VoxelflowValueError(
            f"a {kind} named {name!r} is already registered; pass replace=True to replace it"
        )
    table[name] = Registration(name, matcher, target, priority)


def _unregister(table: dict[str, Registration], kind: str, name: str) -> None:
    if name not in table:
        raise VoxelflowKeyError(
            f"no {kind} named {name!r} is registered; registered: {', '.join(sorted(table))}."
            + did_you_mean(name, tuple(table))
        )
    del table[name]

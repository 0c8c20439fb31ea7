"""Remote storage through fsspec, shared by the remote NIfTI and the NIfTI-Zarr backends.

This module owns: which URIs are remote, the protocol's optional package (a
missing one fails with the exact ``pip install`` line), the filesystem with
bounded time (connect and read timeouts, the protocol's own retries turned
off so that ours, bounded and with backoff, are the only ones), and the one
translation of a failure into a library error that names the URI.

Time limits come from ``storage_options`` (popped before fsspec sees them):
``connect_timeout`` (seconds, default :data:`CONNECT_TIMEOUT`) and
``read_timeout`` (seconds without a byte from the server, default
:data:`READ_TIMEOUT`). A read then takes at most about
``(retries + 1) × (connect_timeout + read_timeout)`` plus the backoff.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from voxelflow._errors import (
    VoxelflowConnectionError,
    VoxelflowError,
    VoxelflowFileNotFoundError,
    VoxelflowPermissionError,
    VoxelflowValueError,
    require,
)

T = TypeVar("T")

#: Seconds to establish a connection before the attempt fails.
CONNECT_TIMEOUT = 10.0
#: Seconds without data from the server before the attempt fails.
READ_TIMEOUT = 30.0
#: Options voxelflow reads from ``storage_options`` (never passed to fsspec).
TIME_OPTIONS = ("connect_timeout", "read_timeout")

#: Package that implements each protocol: (module to import, pip name).
PROTOCOL_PACKAGES: dict[str, tuple[str, str]] = {
    "s3": ("s3fs", "s3fs"),
    "s3a": ("s3fs", "s3fs"),
    "gs": ("gcsfs", "gcsfs"),
    "gcs": ("gcsfs", "gcsfs"),
    "http": ("aiohttp", "aiohttp"),
    "https": ("aiohttp", "aiohttp"),
    "az": ("adlfs", "adlfs"),
    "abfs": ("adlfs", "adlfs"),
}


def is_remote(source: str) -> bool:
    """Whether ``source`` is a URI for a remote filesystem (``s3://``, ``gs://``, ``https://``...)."""
    return "://" in source and not source.startswith("file://")


def strip_file(source: str) -> str:
    """A local path from a path or a ``file://`` URI."""
    return source[len("file://") :] if source.startswith("file://") else source


def protocol_of(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else "file"


def require_protocol(uri: str) -> None:
    """Import the package behind ``uri``'s protocol, or fail with the pip line."""
    protocol = protocol_of(uri)
    if protocol in PROTOCOL_PACKAGES:
        module, pip_name = PROTOCOL_PACKAGES[protocol]
        require(module, f"reading {protocol}:// URIs", pip_name)


def time_limits(storage_options: dict[str, Any] | None) -> tuple[float, float]:
    """``(connect_timeout, read_timeout)`` from ``storage_options`` (validated)."""
    options = storage_options or {}
    limits = []
    for name, default in zip(TIME_OPTIONS, (CONNECT_TIMEOUT, READ_TIMEOUT), strict=True):
        value = options.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise VoxelflowValueError(
                f"storage_options[{name!r}]={value!r}: pass a number of seconds > 0"
            )
        limits.append(float(value))
    return limits[0], limits[1]


def fsspec_options(uri: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """The options fsspec gets for ``uri``: the user's, plus bounded time where the
    protocol has a setting for it (the user's own settings win)."""
    connect, read = time_limits(storage_options)
    options = {k: v for k, v in (storage_options or {}).items() if k not in TIME_OPTIONS}
    protocol = protocol_of(uri)
    if protocol in ("http", "https"):
        import aiohttp

        client = dict(options.get("client_kwargs") or {})
        client.setdefault(
            "timeout",
            aiohttp.ClientTimeout(
                total=None, connect=connect, sock_connect=connect, sock_read=read
            ),
        )
        options["client_kwargs"] = client
    elif protocol in ("s3", "s3a"):
        config = dict(options.get("config_kwargs") or {})
        config.setdefault("connect_timeout", connect)
        config.setdefault("read_timeout", read)
        config.setdefault("retries", {"total_max_attempts": 1})  # ours are the retries
        options["config_kwargs"] = config
    return options


def filesystem(
    uri: str, storage_options: dict[str, Any] | None = None, *, asynchronous: bool = False
) -> tuple[Any, str]:
    """The fsspec filesystem and the path inside it for ``uri`` (bounded time)."""
    import fsspec

    require_protocol(uri)
    options = fsspec_options(uri, storage_options)
    if asynchronous:
        options["asynchronous"] = True
    try:
        fs, path = fsspec.core.url_to_fs(uri, **options)
    except VoxelflowError:
        raise
    except Exception as error:
        raise describe_remote_error(uri, error) from error
    if getattr(fs, "retries", None) is not None and protocol_of(uri) in ("s3", "s3a"):
        fs.retries = 1  # s3fs retries up to 5 times with its own backoff: ours are bounded
    return fs, path


_TRANSIENT_NAMES = {
    "ClientConnectionError",
    "ClientConnectorError",
    "ServerDisconnectedError",
    "ClientPayloadError",
    "ClientOSError",
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionClosedError",
    "ServerTimeoutError",
    "FSTimeoutError",
    "IncompleteRead",
}
_TIMEOUT_NAMES = {"ConnectTimeoutError", "ReadTimeoutError", "ServerTimeoutError", "FSTimeoutError"}


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and len(seen) < 8 and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def is_refused(error: BaseException) -> bool:
    """Whether nothing listens at the address (retrying will not help)."""
    return any(
        isinstance(e, ConnectionRefusedError)
        or "Connection refused" in str(e)
        or "Connect call failed" in str(e)
        for e in _chain(error)
    )


def is_timeout(error: BaseException) -> bool:
    return any(
        isinstance(e, TimeoutError | asyncio.TimeoutError) or type(e).__name__ in _TIMEOUT_NAMES
        for e in _chain(error)
    )


def is_transient(error: BaseException) -> bool:
    """Whether an I/O error is worth retrying (dropped connection, timeout), following causes."""
    if is_refused(error):
        return False
    return any(
        isinstance(e, ConnectionError | TimeoutError | asyncio.TimeoutError)
        or type(e).__name__ in _TRANSIENT_NAMES
        for e in _chain(error)
    )


def describe_remote_error(where: str, error: BaseException, what: str = "open") -> VoxelflowError:
    """A clear library error for a failure talking to a store or remote file."""
    name = type(error).__name__
    text = f"{name}: {error}"
    if isinstance(error, PermissionError) or "AccessDenied" in text or "Forbidden" in text:
        return VoxelflowPermissionError(
            f"{where}: access denied while trying to {what} ({text}); check the credentials "
            "(storage_options key/secret, AWS_* variables) and the bucket policy"
        )
    if "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text:
        return VoxelflowPermissionError(
            f"{where}: the credentials were rejected while trying to {what} ({text}); pass the "
            "right key/secret in storage_options or the AWS_* environment variables"
        )
    if isinstance(error, FileNotFoundError) or "NoSuchBucket" in text or "NoSuchKey" in text:
        return VoxelflowFileNotFoundError(
            f"{where}: not found while trying to {what} ({text}); check the bucket and key"
        )
    if is_refused(error):
        return VoxelflowConnectionError(
            f"{where}: cannot reach the storage while trying to {what}: the connection was "
            f"refused ({text}); check the URI, the endpoint_url in storage_options, and that "
            "the server is running"
        )
    if is_timeout(error):
        return VoxelflowConnectionError(
            f"{where}: the storage did not answer in time while trying to {what} ({text}); "
            "check that the server is up, or raise storage_options['connect_timeout'] / "
            "['read_timeout'] (seconds) for a slow link"
        )
    if is_transient(error) or isinstance(error, OSError):
        return VoxelflowConnectionError(
            f"{where}: cannot reach the storage while trying to {what} ({text}); check the URI, "
            "the endpoint_url in storage_options, and that the server is running"
        )
    return VoxelflowValueError(f"{where}: failed to {what} ({text})")


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt + 1`` (0.1 s, doubling, at most 2 s)."""
    return float(min(2.0, 0.1 * 2**attempt))


def retrying(
    uri: str,
    what: str,
    retries: int,
    function: Callable[..., T],
    *args: Any,
    passthrough: tuple[type[BaseException], ...] = (),
    **kwargs: Any,
) -> T:
    """Call ``function``, retrying transient errors ``retries`` times with backoff.

    Library errors and ``passthrough`` errors propagate unchanged; every other
    failure becomes one :func:`describe_remote_error` naming ``uri``.
    """
    unchanged: tuple[type[BaseException], ...] = (VoxelflowError, *passthrough)
    for attempt in range(retries + 1):
        try:
            return function(*args, **kwargs)
        except unchanged:
            raise
        except Exception as error:
            if attempt < retries and is_transient(error):
                time.sleep(backoff(attempt))
                continue
            raise describe_remote_error(uri, error, what) from error
    raise AssertionError("unreachable")  # pragma: no cover

"""Remote reads never hang and fail with one clear error: a blackhole server (accepts, never
answers) at open and mid-read, a refused port, and a server that dies mid-read, for ``.nii``,
``.nii.gz`` and ``.nii.zarr`` over ``http://`` and ``s3://``, each bounded by a timeout."""

from __future__ import annotations

import http.server
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

import voxelflow as tio
from voxelflow._errors import VoxelflowConnectionError
from voxelflow.backends._fsspec import fsspec_options

pytest.importorskip("aiohttp")
pytest.importorskip("s3fs")

FAST = {"connect_timeout": 1, "read_timeout": 1}
SHAPE = (32, 24, 20)


class Blackhole:
    """A TCP server on 127.0.0.1 that accepts connections and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = int(self.sock.getsockname()[1])
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(connection)

    def close(self) -> None:
        self.sock.close()
        for connection in self.held:
            connection.close()


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    server = Blackhole()
    yield server
    server.close()


def _refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again: nothing listens there


def _uris(port: int, name: str) -> list[tuple[str, dict[str, Any]]]:
    endpoint = f"http://127.0.0.1:{port}"
    s3 = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    return [(f"{endpoint}/{name}", {}), (f"s3://bucket/{name}", s3)]


NAMES = ["x.nii", "x.nii.gz", "x.nii.zarr"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("protocol", ["http", "s3"])
def test_blackhole_at_open_fails_in_bounded_time(
    blackhole: Blackhole, name: str, protocol: str
) -> None:
    uri, options = _uris(blackhole.port, name)[0 if protocol == "http" else 1]
    start = time.perf_counter()
    with pytest.raises(VoxelflowConnectionError, match=rf"{uri}.*did not answer in time") as info:
        _ = tio.ScalarImage(
            uri, storage_options={**options, **FAST}, backend_options={"retries": 1}
        ).shape
    elapsed = time.perf_counter() - start
    assert elapsed < 15, elapsed  # 2 attempts × (1 s + 1 s) + backoff, with margin
    assert "read_timeout" in str(info.value)  # the setting to change is named


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("protocol", ["http", "s3"])
def test_refused_port_fails_fast_with_default_settings(name: str, protocol: str) -> None:
    uri, options = _uris(_refused_port(), name)[0 if protocol == "http" else 1]
    start = time.perf_counter()
    with pytest.raises(VoxelflowConnectionError, match=rf"{uri}.*connection was refused"):
        _ = tio.ScalarImage(uri, storage_options=options).shape
    assert time.perf_counter() - start < 5  # was 32-39 s: no retries of a refused port


def test_default_time_limits_are_finite() -> None:
    s3 = fsspec_options("s3://b/x.nii", {})
    assert s3["config_kwargs"]["connect_timeout"] == 10.0
    assert s3["config_kwargs"]["read_timeout"] == 30.0
    http = fsspec_options("https://host/x.nii", {"read_timeout": 5})["client_kwargs"]["timeout"]
    assert (http.sock_read, http.connect) == (5, 10.0)
    mine = fsspec_options("s3://b/x.nii", {"config_kwargs": {"read_timeout": 99}})
    assert mine["config_kwargs"]["read_timeout"] == 99  # the user's own setting wins
    with pytest.raises(ValueError, match=r"storage_options\['read_timeout'\]=-1"):
        fsspec_options("s3://b/x.nii", {"read_timeout": -1})


# ---------------------------------------------------------------- faults after opening
class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves files with Range requests; ``server.fault`` ("hang", "die") applies to voxel data
    requests (ranges past the header, or zarr chunks) once set."""

    def log_message(self, *args: Any) -> None:
        return None

    def _faulty(self) -> bool:
        fault = self.server.fault  # type: ignore[attr-defined]
        if fault is None:
            return False
        chunk = "/c/" in self.path or self.path.rstrip("/").split("/")[-1].isdigit()
        ranged = self.headers.get("Range", "bytes=0-").split("=")[1].split("-")[0] not in ("", "0")
        if not (chunk or ranged or self.path.endswith(".gz")):
            return False
        if fault == "hang":
            time.sleep(30)
        self.connection.shutdown(socket.SHUT_RDWR)  # the server dies mid-response
        return True

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's name)
        self._serve(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        path = Path(self.server.root) / self.path.lstrip("/")  # type: ignore[attr-defined]
        if not path.is_file():
            self.send_error(404)
            return
        if body and self._faulty():
            return
        data = path.read_bytes()
        ranged = self.headers.get("Range")
        if ranged:
            first, last = ranged.split("=")[1].split("-")
            start, stop = int(first), min(len(data), int(last) + 1 if last else len(data))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(data)}")
            data = data[start:stop]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if body:
            self.wfile.write(data)


@pytest.fixture(scope="module")
def http_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("served")
    data = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), folder / "x.nii")
    nib.save(nib.Nifti1Image(data, np.eye(4)), folder / "x.nii.gz")
    tio.ScalarImage(folder / "x.nii").save(folder / "x.nii.zarr", chunk=4, levels=1)  # 240 chunks
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    server.root = str(folder)  # type: ignore[attr-defined]
    server.fault = None  # type: ignore[attr-defined]
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"server": server, "url": f"http://127.0.0.1:{server.server_address[1]}", "data": data}
    server.shutdown()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("fault", ["hang", "die"])
@pytest.mark.parametrize("name", NAMES)
def test_server_fault_mid_read_gives_one_clear_error(
    http_files: dict[str, Any],
    name: str,
    fault: str,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = http_files["server"]
    uri = f"{http_files['url']}/{name}"
    image = tio.ScalarImage(uri, storage_options=FAST, backend_options={"retries": 1})
    region = (slice(0, 1), slice(0, 32), slice(0, 24), slice(0, 8))  # 96 zarr chunks
    assert torch.equal(image.dataobj[region][0], torch.from_numpy(http_files["data"][:, :, :8]))
    server.fault = fault
    try:
        start = time.perf_counter()
        with caplog.at_level(logging.WARNING), pytest.raises(VoxelflowConnectionError, match=uri):
            image.dataobj[region]
        assert time.perf_counter() - start < 30  # bounded, whatever the fault
    finally:
        server.fault = None
    time.sleep(0.5)  # let any stray task report itself before the output is read
    output = capfd.readouterr()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    noise = output.err + output.out + logged
    assert "Task exception was never retrieved" not in noise
    assert len(noise) < 2000, noise[:3000]  # no flood of tracebacks
    assert torch.equal(image.dataobj[region][0], torch.from_numpy(http_files["data"][:, :, :8]))


def test_remote_pickles_without_its_filesystem(http_files: dict[str, Any]) -> None:
    import pickle

    image = tio.ScalarImage(f"{http_files['url']}/x.nii", storage_options=FAST)
    backend = pickle.loads(pickle.dumps(image.dataobj))
    assert torch.equal(backend.read(None)[0], torch.from_numpy(http_files["data"]))

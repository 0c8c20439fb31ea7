"""Remote volumes on a real S3-compatible server (moto's server mode on 127.0.0.1)."""

from __future__ import annotations

import gzip
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import voxelflow as tio
from voxelflow._errors import VoxelflowConnectionError
from voxelflow.cli import app

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

BUCKET = "volumes"
SHAPE = (48, 40, 36)
AFFINE = np.diag([0.8, 0.9, 1.2, 1.0])
AFFINE[:3, 3] = [-20, 5, 3]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A moto S3 server with ``x.nii``, ``x.nii.gz`` and ``x.nii.zarr`` uploaded by boto3."""
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ["AWS_ACCESS_KEY_ID"] = os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    folder = tmp_path_factory.mktemp("s3data")
    rng = np.random.default_rng(0)
    data = rng.integers(0, 3000, size=SHAPE).astype(np.int16)
    image = nib.Nifti1Image(data, AFFINE)
    image.header.set_slope_inter(0.25, -3.0)
    nib.save(image, folder / "x.nii")
    nib.save(image, folder / "x.nii.gz")
    tio.ScalarImage(folder / "x.nii").save(folder / "x.nii.zarr", chunk=16, levels=2)
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=BUCKET)
    for root, _, files in os.walk(folder):
        for name in files:
            local = Path(root) / name
            client.upload_file(str(local), BUCKET, str(local.relative_to(folder)))
    options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    expected = data.astype(np.float32) * np.float32(0.25) + np.float32(-3.0)
    yield {"endpoint": endpoint, "options": options, "expected": expected, "folder": folder}
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any, Any]]:
    """Every object GET that s3fs makes: (path, start, end)."""
    import s3fs

    log: list[tuple[str, Any, Any]] = []
    original = s3fs.S3FileSystem._cat_file

    async def recording(self, path, version_id=None, start=None, end=None, **kwargs):  # type: ignore[no-untyped-def]
        log.append((path, start, end))
        return await original(self, path, version_id=version_id, start=start, end=end, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_cat_file", recording)
    return log


def test_zarr_open_reads_metadata_then_only_needed_chunks(s3: dict, fetched: list) -> None:
    image = tio.ScalarImage(f"s3://{BUCKET}/x.nii.zarr", storage_options=s3["options"])
    assert image.shape == (1, *SHAPE)
    np.testing.assert_allclose(image.affine, AFFINE)
    opened = [p for p, *_ in fetched]
    metadata = ("zarr.json", ".zgroup", ".zattrs", ".zmetadata", ".zarray", "/nifti/c/0")
    assert all(p.endswith(metadata) for p in opened), opened  # no voxel chunk yet
    fetched.clear()
    region = image.dataobj[:, 16:32, 0:20, 30:36]  # chunks i 1, j 0-1, k 1-2: 4 of 27
    np.testing.assert_allclose(region.numpy()[0], s3["expected"][16:32, 0:20, 30:36])
    chunks = sorted(p.split("x.nii.zarr/")[1] for p, *_ in fetched if "/c/" in p)
    assert chunks == ["0/c/1/0/1", "0/c/1/1/1", "0/c/2/0/1", "0/c/2/1/1"]  # (k, j, i) keys
    level1 = tio.ScalarImage(f"s3://{BUCKET}/x.nii.zarr", level=1, storage_options=s3["options"])
    assert level1.spatial_shape == (24, 20, 18)


def test_transient_errors_are_retried(s3: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import s3fs

    original = s3fs.S3FileSystem._cat_file
    failures = {"left": 2}

    async def flaky(self, path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if "/0/c/" in path and failures["left"] > 0:
            failures["left"] -= 1
            raise ConnectionResetError("connection reset by peer")
        return await original(self, path, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_cat_file", flaky)
    uri = f"s3://{BUCKET}/x.nii.zarr"
    image = tio.ScalarImage(uri, storage_options=s3["options"])
    np.testing.assert_allclose(image.dataobj[:, :8, :8, :8].numpy()[0], s3["expected"][:8, :8, :8])
    assert failures["left"] == 0
    failures["left"] = 5  # more failures than retries: a clear error, not a hang
    strict = tio.ScalarImage(uri, backend_options={"retries": 1}, storage_options=s3["options"])
    with pytest.raises(VoxelflowConnectionError, match=r"x\.nii\.zarr: cannot reach"):
        strict.dataobj[:, :8, :8, :8]


def test_remote_nii_uses_ranged_requests(s3: dict, fetched: list) -> None:
    image = tio.ScalarImage(f"s3://{BUCKET}/x.nii", storage_options=s3["options"])
    assert image.shape == (1, *SHAPE)
    assert image.dtype == torch.float32
    assert all(end is not None and end <= 1024 for _, _, end in fetched)  # header only
    fetched.clear()
    region = image.dataobj[:, 5:21, 10:14, 7:9]
    np.testing.assert_allclose(region.numpy()[0], s3["expected"][5:21, 10:14, 7:9])
    fetched_bytes = sum(end - start for _, start, end in fetched)
    file_bytes = int(np.prod(SHAPE)) * 2
    assert len(fetched) == 1 and fetched_bytes < file_bytes / 10  # rows coalesced, not the file
    backend = tio.ScalarImage(f"s3://{BUCKET}/x.nii", storage_options=s3["options"]).dataobj
    backend.max_gap = 0  # no coalescing: one range per (j, k) row of the region
    fetched.clear()
    np.testing.assert_allclose(
        backend[:, 5:21, 10:14, 7:9].numpy()[0], s3["expected"][5:21, 10:14, 7:9]
    )
    assert len(fetched) == 4 * 2 and all(end - start == 16 * 2 for _, start, end in fetched)
    np.testing.assert_allclose(backend[:, ::5, 3, ::-4].numpy()[0], s3["expected"][::5, 3:4, ::-4])


def test_remote_nii_gz_streams_without_temp_files(s3: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # fmt: skip
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    image = tio.ScalarImage(f"s3://{BUCKET}/x.nii.gz", storage_options=s3["options"])
    assert image.shape == (1, *SHAPE)
    np.testing.assert_allclose(image.dataobj[:, 3:9, :, 2].numpy()[0], s3["expected"][3:9, :, 2:3])
    np.testing.assert_allclose(image.data.numpy()[0], s3["expected"])
    assert list(scratch.iterdir()) == []


def test_remote_convert_and_info(s3: dict, tmp_path: Path) -> None:
    from voxelflow.convert import convert

    out = tmp_path / "local.nii.zarr"
    convert(f"s3://{BUCKET}/x.nii", out, storage_options=s3["options"], chunk=16, levels=1)
    np.testing.assert_allclose(tio.ScalarImage(out).data.numpy()[0], s3["expected"])
    result = CliRunner().invoke(
        app,
        ["info", f"s3://{BUCKET}/x.nii.zarr", "-s", f"endpoint_url={s3['endpoint']}"]
        + ["-s", "key=testing", "-s", "secret=testing"],
    )
    assert result.exit_code == 0, result.output
    assert "chunks (I, J, K)          [16, 16, 16]" in result.output
    assert "pyramid levels (I, J, K)  [[48, 40, 36], [24, 20, 18]]" in result.output


def test_missing_bucket_and_unreachable_server(s3: dict) -> None:
    with pytest.raises(FileNotFoundError, match=r"s3://nobucket/x\.nii\.zarr"):
        _ = tio.ScalarImage("s3://nobucket/x.nii.zarr", storage_options=s3["options"]).shape
    with pytest.raises(FileNotFoundError, match=r"s3://volumes/absent\.nii"):
        _ = tio.ScalarImage(f"s3://{BUCKET}/absent.nii", storage_options=s3["options"]).shape
    dead = {
        "endpoint_url": f"http://127.0.0.1:{_free_port()}",
        "key": "testing",
        "secret": "testing",
        "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}},
    }
    with pytest.raises(VoxelflowConnectionError, match=r"cannot reach.*endpoint_url"):
        _ = tio.ScalarImage(f"s3://{BUCKET}/x.nii", storage_options=dead).shape


def test_gzip_stream_corruption_is_clear(s3: dict) -> None:
    client = boto3.client("s3", endpoint_url=s3["endpoint"], region_name="us-east-1")
    noise = np.random.default_rng(1).normal(size=(16, 16, 16)).astype(np.float32)
    raw = gzip.compress(nib.Nifti1Image(noise, np.eye(4)).to_bytes())
    client.put_object(Bucket=BUCKET, Key="cut.nii.gz", Body=raw[: len(raw) // 2])
    image = tio.ScalarImage(f"s3://{BUCKET}/cut.nii.gz", storage_options=s3["options"])
    with pytest.raises(ValueError, match=r"cut\.nii\.gz: the compressed data is truncated"):
        _ = image.data

"""NIfTI backends (``.nii`` memory map, ``.nii.gz`` stream) against nibabel."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from nibabel.testing import data_path

import voxelflow as tio
from conftest import nifti_to_cijk, random_affine
from voxelflow.backends import NiftiBackend, NiftiGzBackend, NiftiHeader, open_backend

REAL_FILES = [
    "anatomical.nii",  # big-endian int16
    "functional.nii",  # 4-D int16 with scl_slope / scl_inter
    "example4d.nii.gz",
    "example_nifti2.nii.gz",
    "standard.nii.gz",
]


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_files_equal_nibabel(name: str) -> None:
    path = os.path.join(data_path, name)
    reference = nib.load(path)
    expected = nifti_to_cijk(np.asarray(reference.dataobj))
    image = tio.ScalarImage(path, dtype="stored")  # the backend's values, not float32
    assert image.shape == expected.shape
    np.testing.assert_array_equal(image.affine, reference.affine)
    if name == "functional.nii":  # scaled: nibabel gives float64, voxelflow float32
        assert expected.dtype == np.float64 and image.dtype == torch.float32
        rtol = 2.4e-7  # within float32 rounding (2**-22) of nibabel's float64
    else:
        assert (
            image.dtype == torch.from_numpy(expected.astype(expected.dtype.newbyteorder("="))).dtype
        )
        rtol = 0.0  # bit-identical
    np.testing.assert_allclose(image.numpy(), expected, rtol=rtol, atol=0)
    # A region read equals the same region of nibabel's array.
    region = image.dataobj[:, 1:-1:2, ::-3, 1:]
    np.testing.assert_allclose(region.numpy(), expected[:, 1:-1:2, ::-3, 1:], rtol=rtol, atol=0)


def test_real_scaled_file_matches_get_fdata() -> None:
    path = os.path.join(data_path, "functional.nii")
    image = tio.ScalarImage(path)
    assert image.dtype == torch.float32
    reference = nifti_to_cijk(nib.load(path).get_fdata())
    np.testing.assert_allclose(image.numpy(), reference, rtol=1e-6, atol=1e-3)
    assert image.data.dtype == image.dtype


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("cls", [nib.Nifti1Image, nib.Nifti2Image])
def test_scaled_int16(tmp_path: Path, rng: np.random.Generator, suffix: str, cls: type) -> None:
    raw = rng.integers(-3000, 3000, size=(6, 7, 8)).astype(np.int16)
    image = cls(raw, random_affine(rng))
    image.header.set_slope_inter(0.37, -12.5)
    path = tmp_path / f"scaled{suffix}"
    nib.save(image, path)
    reference = nib.load(path)
    assert reference.dataobj.slope == pytest.approx(0.37)  # nibabel kept the scaling
    expected = reference.get_fdata()[None]

    lazy = tio.ScalarImage(path)
    assert lazy.dtype == torch.float32  # reported before reading, and what reads return
    np.testing.assert_allclose(lazy.numpy(), expected, rtol=1e-6, atol=1e-3)
    assert lazy.data.dtype == lazy.dtype
    region = tio.ScalarImage(path)[:, 1:4, ::-2, 5]
    assert region.dtype == torch.float32
    np.testing.assert_allclose(region.numpy(), expected[:, 1:4, ::-2, 5:6], rtol=1e-6, atol=1e-3)
    # Scaled values are not integral: the test would fail if scaling were skipped.
    assert not np.allclose(lazy.numpy(), np.round(lazy.numpy()))


def test_scaled_float64_stays_float64(tmp_path: Path) -> None:
    raw = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    image = nib.Nifti1Image(raw, np.eye(4))
    image.header.set_slope_inter(2.0, 1.0)
    nib.save(image, tmp_path / "f64.nii")
    loaded = tio.ScalarImage(tmp_path / "f64.nii", dtype="stored")
    assert loaded.dtype == loaded.stored_dtype == torch.float64
    np.testing.assert_array_equal(loaded.numpy()[0], raw * 2 + 1)


def test_unscaled_slope_one_keeps_raw_dtype(tmp_path: Path) -> None:
    raw = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    image = nib.Nifti1Image(raw, np.eye(4))
    image.header.set_slope_inter(1.0, 0.0)
    nib.save(image, tmp_path / "u8.nii")
    assert tio.LabelMap(tmp_path / "u8.nii").dtype == torch.uint8


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("cls", [nib.Nifti1Image, nib.Nifti2Image])
@pytest.mark.parametrize(
    "file_shape",
    [(5, 6, 7), (5, 6, 7, 4), (5, 6, 7, 1, 3), (5, 6, 7, 2, 3)],
    ids=["3d", "4d", "5d-vector", "5d-time-vector"],
)
def test_layouts_and_versions(
    tmp_path: Path,
    rng: np.random.Generator,
    suffix: str,
    cls: type,
    file_shape: tuple[int, ...],
) -> None:
    array = rng.normal(size=file_shape).astype(np.float32)
    affine = random_affine(rng)
    path = tmp_path / f"layout{suffix}"
    nib.save(cls(array, affine), path)
    image = tio.ScalarImage(path)
    expected = nifti_to_cijk(array)
    channels = int(np.prod(file_shape[3:]))
    assert image.shape == (channels, 5, 6, 7)
    np.testing.assert_allclose(image.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(image.numpy(), expected)
    np.testing.assert_array_equal(
        image.dataobj[-1, 1:3, 2, ::-1].numpy(), expected[-1:, 1:3, 2:3, ::-1]
    )
    backend = image.dataobj
    assert isinstance(backend, NiftiGzBackend if suffix == ".nii.gz" else NiftiBackend)
    assert backend.header.version == (2 if cls is nib.Nifti2Image else 1)  # type: ignore[attr-defined]
    assert backend.describe()["format"].startswith(f"NIfTI-{backend.header.version}")  # type: ignore[attr-defined]


@pytest.mark.parametrize("dtype", [">i2", ">f4", ">f8", ">u2", "<i4"])
def test_byte_orders(tmp_path: Path, rng: np.random.Generator, dtype: str) -> None:
    array = (rng.normal(size=(4, 5, 6)) * 100).astype(dtype)
    image = nib.Nifti1Image(array, np.eye(4))
    image.header.set_data_dtype(np.dtype(dtype))
    path = tmp_path / "endian.nii"
    nib.save(image, path)
    assert nib.load(path).get_data_dtype().byteorder in ("<", ">", "=", "|")
    loaded = tio.ScalarImage(path, dtype="stored")
    assert loaded.dtype == torch.from_numpy(array.astype(np.dtype(dtype).newbyteorder("="))).dtype
    np.testing.assert_array_equal(loaded.numpy()[0], np.asarray(nib.load(path).dataobj))
    np.testing.assert_array_equal(loaded[:, 1:3, ::-1].numpy()[0], array[1:3, ::-1])


def test_big_endian_file_from_nibabel_header(tmp_path: Path, rng: np.random.Generator) -> None:
    """A header whose whole byte order is big-endian (as anatomical.nii is)."""
    array = rng.integers(-500, 500, size=(4, 5, 6)).astype(np.int16)
    header = nib.Nifti1Header(endianness=">")
    header.set_data_dtype(np.int16)
    nib.save(nib.Nifti1Image(array, np.eye(4), header), tmp_path / "be.nii")
    assert nib.load(tmp_path / "be.nii").header.endianness == ">"
    np.testing.assert_array_equal(tio.ScalarImage(tmp_path / "be.nii").numpy()[0], array)


@pytest.mark.parametrize("cls", [nib.Nifti1Pair, nib.Nifti2Pair])
def test_hdr_img_pairs(tmp_path: Path, rng: np.random.Generator, cls: type) -> None:
    array = rng.normal(size=(5, 6, 7, 2)).astype(np.float32)
    affine = random_affine(rng)
    nib.save(cls(array, affine), tmp_path / "pair.img")
    assert (tmp_path / "pair.hdr").exists()
    for name in ("pair.hdr", "pair.img"):
        image = tio.ScalarImage(tmp_path / name)
        assert isinstance(image.dataobj, NiftiBackend)
        np.testing.assert_array_equal(image.numpy(), nifti_to_cijk(array))
        np.testing.assert_allclose(image.affine, affine, atol=1e-6)
        np.testing.assert_array_equal(image[:, 2].numpy(), nifti_to_cijk(array)[:, 2:3])


def test_header_values(tmp_path: Path) -> None:
    raw = np.zeros((3, 4, 5, 2), dtype=np.int16)
    image = nib.Nifti1Image(raw, np.diag([2.0, 3.0, 4.0, 1.0]))
    image.header.set_slope_inter(0.5, 3.0)
    nib.save(image, tmp_path / "h.nii")
    header = NiftiHeader.read(tmp_path / "h.nii")
    assert header.file_shape == (3, 4, 5, 2)
    assert header.shape == (2, 3, 4, 5) and header.flat_shape == (3, 4, 5, 2)
    assert header.raw_dtype == np.int16 and header.dtype == np.float32
    assert (header.slope, header.inter) == (0.5, 3.0)
    assert header.offset == nib.load(tmp_path / "h.nii").dataobj.offset
    assert header.data_nbytes == raw.nbytes
    assert header.version == 1
    np.testing.assert_array_equal(header.affine, np.diag([2.0, 3.0, 4.0, 1.0]))


def test_region_read_returns_owned_contiguous_copy(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    array = rng.integers(-100, 100, size=(6, 7, 8)).astype(np.float32)
    nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / "o.nii")
    backend = open_backend(tmp_path / "o.nii")
    box = (slice(0, 1, 1), slice(1, 5, 2), slice(0, 7, 1), slice(2, 3, 1))
    region = backend.read(box)
    assert region.shape == (1, 2, 7, 1)
    region += 1  # writable, and the file is untouched
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "o.nii").dataobj), array)
    np.testing.assert_array_equal(region.numpy()[0] - 1, array[1:5:2, :, 2:3])


def test_gz_backend_pickles_and_reads_regions(tmp_path: Path, rng: np.random.Generator) -> None:
    import pickle

    array = rng.normal(size=(9, 8, 7, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / "g.nii.gz")
    backend: Any = open_backend(tmp_path / "g.nii.gz")
    assert isinstance(backend, NiftiGzBackend)
    copy = pickle.loads(pickle.dumps(backend))
    np.testing.assert_array_equal(
        copy[1, 3:, :2, -1].numpy(), nifti_to_cijk(array)[1:2, 3:, :2, -1:]
    )
    assert backend.describe()["format"] == "NIfTI-1 (gzip)"


# ------------------------------------------------------------ memory behaviour
def _rss_file() -> int:
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith("RssFile:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no RssFile in /proc/self/status")


def test_whole_read_does_not_leave_the_file_mapped(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    array = rng.integers(-9, 9, size=(20, 21, 22, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / "w.nii")
    image = tio.ScalarImage(tmp_path / "w.nii")
    data = image.data
    assert image.dataobj._memmap is None  # type: ignore[attr-defined]
    np.testing.assert_array_equal(data.numpy(), nifti_to_cijk(array))
    data += 1  # owned and writable; the file is untouched
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "w.nii").dataobj), array)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_region_reads_give_mapped_pages_back(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random region reads of a 16 MiB file leave no file pages mapped; without the
    page release (the control) the mapped pages grow with the regions read."""
    shape = (128, 128, 256)
    nib.save(
        nib.Nifti1Image(rng.normal(size=shape).astype(np.float32), np.eye(4)), tmp_path / "m.nii"
    )
    corners = rng.integers(0, 128 - 32, size=(60, 3))

    def growth() -> int:
        backend = tio.ScalarImage(tmp_path / "m.nii").dataobj
        before = _rss_file()
        for i, j, k in corners:
            backend[:, i : i + 32, j : j + 32, 2 * k : 2 * k + 32]
        grown = _rss_file() - before
        del backend
        return grown

    released = growth()
    monkeypatch.setattr(NiftiBackend, "_drop_pages", lambda self, box: None)
    kept = growth()
    assert kept > 8 << 20, kept  # the control: pages do accumulate
    assert released < 2 << 20, released


def test_file_truncated_after_opening(tmp_path: Path, rng: np.random.Generator) -> None:
    array = rng.normal(size=(10, 11, 12)).astype(np.float32)
    nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / "t.nii")
    for read in (lambda image: image.data, lambda image: image[:, 1:3].data):
        nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / "t.nii")
        image = tio.ScalarImage(tmp_path / "t.nii")
        assert image.shape == (1, 10, 11, 12)  # header read while the file was whole
        with open(tmp_path / "t.nii", "r+b") as file:
            file.truncate(1000)
        with pytest.raises(
            tio.VoxelflowValueError, match=r"t\.nii: the file (is truncated|ended after)"
        ):
            read(image)


TRUNCATE_UNDER_OPEN_IMAGE = """
import sys, numpy as np, nibabel as nib, voxelflow as tio
path = sys.argv[1]
nib.save(nib.Nifti1Image(np.ones((64, 64, 64), np.float32), np.eye(4)), path)
image = tio.ScalarImage(path)
assert float(image.dataobj[:, :8, :8, :8].sum()) == 512  # mapped and read
with open(path, "r+b") as file:
    file.truncate(4096)  # the map now reaches past the end of the file
try:
    image.dataobj[:, :, :, 60:]
except tio.VoxelflowValueError as error:
    print("refused:", error)
    sys.exit(0)
sys.exit(3)
"""


def test_file_shrunk_under_an_open_mapped_image_raises_not_sigbus(tmp_path: Path) -> None:
    """Reading a page past the end of a truncated mapped file is SIGBUS; each mapped read
    checks the size first (in a child process, so a SIGBUS shows as a signal exit)."""
    import subprocess
    import sys

    path = tmp_path / "shrinks.nii"
    result = subprocess.run(
        [sys.executable, "-c", TRUNCATE_UNDER_OPEN_IMAGE, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])  # -7 is SIGBUS
    assert "shrinks.nii: the file is truncated" in result.stdout
    assert "open it again" in result.stdout


def _crafted(path: Path, dims: list[int], *, version: int = 2, payload: int = 4096) -> Path:
    header = nib.Nifti2Header() if version == 2 else nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    raw = bytearray(header.binaryblock)
    dim = np.zeros(8, dtype="<i8" if version == 2 else "<i2")
    dim[: len(dims)] = dims
    start = 16 if version == 2 else 40  # offset of dim[8] in each header
    raw[start : start + dim.nbytes] = dim.tobytes()
    offset = len(raw) + 4
    if version == 2:
        raw[168:176] = np.int64(offset).tobytes()  # vox_offset
    else:
        raw[108:112] = np.float32(offset).tobytes()
    path.write_bytes(bytes(raw) + b"\0" * 4 + b"\1" * payload)
    return path


@pytest.mark.parametrize(
    ("dims", "message"),
    [
        ([3, 2**31, 2**31, 2**31], "describe 1980704062856608439838"),  # wraps int64 to 0
        ([3, 2**31, 4, 1], "the file is truncated: the header describes 17179869184 bytes"),
        ([3, 10, -4, 5], r"dims \(10, -4, 5\) include -4"),
        ([3, 10, 0, 5], r"dims \(10, 0, 5\) include 0"),
        ([9, 1, 1, 1], r"dim\[0\] is \d+, not a number of dimensions"),
    ],
)
def test_impossible_header_dims_are_refused_with_the_file_named(
    tmp_path: Path, dims: list[int], message: str
) -> None:
    path = _crafted(tmp_path / "lies.nii", dims)
    with pytest.raises(tio.VoxelflowValueError, match=rf"lies\.nii: .*{message}") as info:
        _ = tio.ScalarImage(path).shape
    assert "re-copy or re-export" in str(info.value) or "dims" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_gz_header_claiming_more_than_the_stream_can_hold_is_refused(tmp_path: Path) -> None:
    import gzip

    plain = _crafted(tmp_path / "plain.nii", [3, 4096, 4096, 4096], payload=1 << 16)  # 128 GiB
    path = tmp_path / "lies.nii.gz"
    path.write_bytes(gzip.compress(plain.read_bytes()))
    with pytest.raises(
        tio.VoxelflowValueError,
        match=r"lies\.nii\.gz: the header describes 137438953472 bytes .* more than a \d+-byte gzip stream can hold",
    ):
        _ = tio.ScalarImage(path).shape

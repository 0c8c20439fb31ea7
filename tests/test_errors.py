"""Bad input: each case raises a member of voxelflow's exception family that is also the
matching builtin, with a message that names the file; nothing hangs or crashes."""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

import voxelflow as tio
from voxelflow._errors import check_choice, did_you_mean, require

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def good(tmp_path: Path, rng: np.random.Generator) -> Path:
    path = tmp_path / "good.nii"
    nib.save(nib.Nifti1Image(rng.normal(size=(8, 9, 10)).astype(np.float32), np.eye(4)), path)
    return path


def open_and_read(path: Path) -> None:
    """What a user does: open, ask for the header, read the data."""
    image = tio.ScalarImage(path)
    image.shape  # noqa: B018
    image.data  # noqa: B018


def _check(path: Path, family: type, builtin: type, *fragments: str) -> None:
    with pytest.raises(family) as info:
        open_and_read(path)
    assert isinstance(info.value, tio.VoxelflowError) and isinstance(info.value, builtin)
    message = str(info.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_file(tmp_path: Path) -> None:
    _check(
        tmp_path / "nope.nii.gz", tio.VoxelflowFileNotFoundError, FileNotFoundError, "no such file"
    )
    _check(
        tmp_path / "nope.nrrd", tio.VoxelflowFileNotFoundError, FileNotFoundError, "no such file"
    )


@pytest.mark.parametrize("name", ["empty.nii", "empty.nii.gz", "empty.nrrd"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    (tmp_path / name).touch()
    _check(tmp_path / name, tio.VoxelflowValueError, ValueError, "empty (0 bytes)")


def test_truncated_nii_fails_at_open(good: Path, tmp_path: Path) -> None:
    data = good.read_bytes()
    path = tmp_path / "cut.nii"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(tio.VoxelflowValueError, match=r"cut\.nii: the file is truncated") as info:
        tio.ScalarImage(path).shape  # noqa: B018  (the header tells the size: caught at open)
    assert isinstance(info.value, ValueError)


def test_truncated_header(good: Path, tmp_path: Path) -> None:
    path = tmp_path / "header_cut.nii"
    path.write_bytes(good.read_bytes()[:100])
    _check(path, tio.VoxelflowValueError, ValueError)


def test_truncated_nii_gz(good: Path, tmp_path: Path) -> None:
    compressed = gzip.compress(good.read_bytes())
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    _check(path, tio.VoxelflowValueError, ValueError, "truncated or corrupt")
    # A region past the cut fails the same way (the header alone cannot tell).
    image = tio.ScalarImage(path)
    assert image.shape == (1, 8, 9, 10)
    with pytest.raises(tio.VoxelflowValueError, match=r"cut\.nii\.gz: .*truncated or corrupt"):
        image[:, :, :, -1].data  # noqa: B018


def test_gzip_data_named_nii(good: Path, tmp_path: Path) -> None:
    path = tmp_path / "zipped.nii"
    path.write_bytes(gzip.compress(good.read_bytes()))
    _check(path, tio.VoxelflowValueError, ValueError, "gzip-compressed", "rename it to .nii.gz")


def test_plain_data_named_nii_gz(good: Path, tmp_path: Path) -> None:
    path = tmp_path / "plain.nii.gz"
    shutil.copy(good, path)
    _check(path, tio.VoxelflowValueError, ValueError, "not gzip-compressed")


@pytest.mark.parametrize("name", ["notes.nii", "notes.nii.gz", "notes.mha", "notes.nrrd"])
def test_text_file_with_an_image_extension(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    text = b"subject,age\nsub-01,42\n" * 40
    path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    _check(path, tio.VoxelflowValueError, ValueError)


@pytest.mark.parametrize(
    ("written", "named"), [(".nrrd", ".mha"), (".mha", ".nrrd"), (".nii", ".mha")]
)
def test_extension_lies_between_sitk_formats(tmp_path: Path, written: str, named: str) -> None:
    source = tmp_path / f"real{written}"
    image = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.float32))
    sitk.WriteImage(image, str(source))
    path = tmp_path / f"liar{named}"
    source.rename(path)
    _check(path, tio.VoxelflowValueError, ValueError, "SimpleITK cannot read this file's header")


def test_directory_without_images(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "readme.txt").write_text("no images here")
    _check(folder, tio.VoxelflowValueError, ValueError, "no DICOM series")


def test_directory_named_like_nifti(tmp_path: Path) -> None:
    folder = tmp_path / "looks.nii"
    folder.mkdir()
    _check(folder, tio.VoxelflowValueError, ValueError, "is a directory")


def test_2d_image(tmp_path: Path) -> None:
    path = tmp_path / "flat.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 5), np.float32), np.eye(4)), path)
    _check(path, tio.VoxelflowValueError, ValueError, "2-D image", "third axis of size 1")
    png_like = tmp_path / "flat.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5), np.float32)), str(png_like))
    _check(png_like, tio.VoxelflowValueError, ValueError, "2-D image")


def test_6d_image(tmp_path: Path) -> None:
    path = tmp_path / "six.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 1, 2, 2), np.float32), np.eye(4)), path)
    _check(path, tio.VoxelflowValueError, ValueError, "6-D image")


def test_rgb_nifti(tmp_path: Path) -> None:
    rgb = np.zeros((3, 4, 5), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    path = tmp_path / "rgb.nii"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), path)
    _check(path, tio.VoxelflowValueError, ValueError, "not supported")


@pytest.mark.parametrize("shape", [(4, 5, 6), (1, 1, 4, 5, 6), (4,)])
def test_tensor_of_the_wrong_rank(shape: tuple[int, ...]) -> None:
    for data in (torch.zeros(shape), np.zeros(shape)):
        with pytest.raises(
            tio.VoxelflowValueError, match=r"LabelMap: expected 4 dimensions \(C, I, J, K\)"
        ):
            tio.LabelMap(data)
    with pytest.raises(ValueError, match=r"add a channel axis with tensor\[None\]"):
        tio.ScalarImage(torch.zeros(shape))


def test_bad_affine_shape() -> None:
    with pytest.raises(tio.VoxelflowValueError, match="4×4"):
        tio.ScalarImage(torch.zeros(1, 2, 2, 2), affine=np.eye(3))


def test_backend_errors_propagate_through_slices(tmp_path: Path, good: Path) -> None:
    """A file replaced by garbage after opening fails on read, naming the file."""
    image = tio.ScalarImage(good)
    region = image[:, 1:3]
    good.write_bytes(b"")  # the file is now empty
    fresh = tio.ScalarImage(good)
    with pytest.raises(tio.VoxelflowValueError, match="good.nii: the file is empty"):
        fresh[:, 1:3].data  # noqa: B018
    assert region.shape == (1, 2, 9, 10)  # known from the header read before


# ------------------------------------------------------------------ helpers
def test_family_matches_builtins() -> None:
    pairs: list[tuple[type, type]] = [
        (tio.VoxelflowFileNotFoundError, FileNotFoundError),
        (tio.VoxelflowValueError, ValueError),
        (tio.VoxelflowTypeError, TypeError),
        (tio.VoxelflowIndexError, IndexError),
        (tio.VoxelflowKeyError, KeyError),
        (tio.VoxelflowRuntimeError, RuntimeError),
        (tio.MissingDependencyError, ImportError),
    ]
    for ours, builtin in pairs:
        assert issubclass(ours, tio.VoxelflowError) and issubclass(ours, builtin)
    assert str(tio.VoxelflowKeyError("no entry 'x'")) == "no entry 'x'"  # not quoted twice


def test_check_choice_and_require() -> None:
    assert check_choice("mode", "crop", ("crop", "average")) == "crop"
    with pytest.raises(
        ValueError,
        match=r"mode='avrage' is not one of 'crop', 'average'\. Did you mean 'average'\?",
    ):
        check_choice("mode", "avrage", ("crop", "average"))
    assert did_you_mean("zzz", ["crop"]) == ""
    with pytest.raises(ImportError, match="run: pip install not-a-real-package"):
        require("not_a_real_module_xyz", "This feature", "not-a-real-package")
    assert require("json", "JSON").dumps([1]) == "[1]"


@pytest.mark.parametrize(
    "make",
    [lambda p: tio.ScalarImage(p).dataobj, lambda p: tio.Subject(a=tio.ScalarImage(p))[0:1].a.data],
    ids=["dataobj", "subject-slice"],
)
def test_errors_raise_from_every_entry_point(
    tmp_path: Path, make: Callable[[Path], object]
) -> None:
    path = tmp_path / "bad.nii"
    path.write_bytes(b"\x00" * 400)
    with pytest.raises(tio.VoxelflowValueError, match=r"bad\.nii"):
        make(path)


def test_nii_gz_cut_inside_its_header_says_truncated(good: Path, tmp_path: Path) -> None:
    path = tmp_path / "head_cut.nii.gz"
    path.write_bytes(gzip.compress(good.read_bytes())[:40])
    _check(path, tio.VoxelflowValueError, ValueError, "head_cut.nii.gz", "truncated or corrupt")

"""The backend and writer registries, custom backends and readers, and the laziness probe."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

import voxelflow as tio
from conftest import WholeReadError, nifti_to_cijk
from voxelflow.backends import (
    ArrayLikeBackend,
    BackendProtocol,
    NiftiBackend,
    SimpleITKBackend,
    backends,
    find_writer,
    open_backend,
    register_backend,
    register_writer,
    unregister_backend,
    unregister_writer,
    writers,
)


@pytest.fixture
def npy_backend() -> Iterator[list[str]]:
    """A ``.npy`` backend over ``np.load(mmap_mode="r")``; yields the list of opened paths."""
    opened: list[str] = []

    def factory(source: str, **options: Any) -> ArrayLikeBackend:
        opened.append(source)
        return ArrayLikeBackend(
            np.load(source, mmap_mode="r"), options.get("affine", np.eye(4)), path=source
        )

    register_backend("npy-test", lambda s: s.endswith(".npy"), factory, priority=50)
    yield opened
    unregister_backend("npy-test")


def test_builtin_order() -> None:
    names = [r.name for r in backends()]
    assert names.index("nifti") < names.index("simpleitk") and names[-1] == "simpleitk"
    assert [r.name for r in writers()][-1] == "simpleitk"


def test_custom_backend_is_found_and_lazy(
    tmp_path: Path, rng: np.random.Generator, npy_backend: list[str]
) -> None:
    data = rng.normal(size=(2, 4, 5, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", data)
    image = tio.ScalarImage(tmp_path / "x.npy", backend_options={"affine": np.diag([2, 2, 2, 1.0])})
    assert npy_backend == []  # opening the image opens nothing
    assert image.shape == (2, 4, 5, 6) and image.spacing == (2.0, 2.0, 2.0)
    assert npy_backend == [str(tmp_path / "x.npy")]
    assert isinstance(image.dataobj, BackendProtocol)
    np.testing.assert_array_equal(image[1, ::-1, 2].numpy(), data[1:2, ::-1, 2:3])
    assert not image.is_loaded
    np.testing.assert_array_equal(image.numpy(), data)


def test_registering_twice_needs_replace(npy_backend: list[str]) -> None:
    with pytest.raises(
        tio.VoxelflowValueError, match="'npy-test' is already registered; pass replace=True"
    ):
        register_backend("npy-test", lambda s: False, NiftiBackend)
    register_backend(
        "npy-test", lambda s: s.endswith(".npy"), NiftiBackend, priority=50, replace=True
    )
    assert [r for r in backends() if r.name == "npy-test"][0].target is NiftiBackend


def test_unregister_unknown_name_suggests() -> None:
    with pytest.raises(
        KeyError, match="no backend named 'nifty' is registered.*Did you mean 'nifti'"
    ):
        unregister_backend("nifty")
    with pytest.raises(tio.VoxelflowKeyError):
        unregister_writer("nrd")


def test_priority_decides(tmp_path: Path, strict_backend: Any) -> None:
    nib.save(nib.Nifti1Image(np.zeros((2, 3, 4), np.float32), np.eye(4)), tmp_path / "a.strict.nii")
    assert type(open_backend(tmp_path / "a.strict.nii")).__name__ == "StrictBackend"
    register_backend("nifti-low", lambda s: s.endswith(".strict.nii"), NiftiBackend, priority=-1)
    try:
        assert type(open_backend(tmp_path / "a.strict.nii")).__name__ == "StrictBackend"
    finally:
        unregister_backend("nifti-low")
    unregister_backend("strict-test")  # the fixture's: nifti (20) takes over
    try:
        assert type(open_backend(tmp_path / "a.strict.nii")) is NiftiBackend
    finally:
        register_backend("strict-test", lambda s: False, NiftiBackend)


def test_forced_backend(tmp_path: Path) -> None:
    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "f.nii")
    image = tio.ScalarImage(tmp_path / "f.nii", backend="simpleitk")
    assert isinstance(image.dataobj, SimpleITKBackend)
    np.testing.assert_array_equal(image.numpy()[0], data)
    with pytest.raises(
        KeyError, match=r"backend='simpleitx' is not registered.*Did you mean 'simpleitk'"
    ):
        tio.ScalarImage(tmp_path / "f.nii", backend="simpleitx").shape  # noqa: B018


def test_no_backend_for_a_uri() -> None:
    image = tio.ScalarImage("unknown://bucket/x.nrrd")  # URIs are not checked on disk
    with pytest.raises(
        tio.VoxelflowValueError, match="unknown://bucket/x.nrrd: no backend can read"
    ):
        image.shape  # noqa: B018


def test_custom_writer(tmp_path: Path) -> None:
    written: list[tuple[str, dict[str, Any]]] = []

    def writer(image: tio.Image, path: str, **options: Any) -> None:
        written.append((path, options))
        np.save(path, image.numpy())

    register_writer("npy-writer", lambda p: p.endswith(".npy"), writer, priority=10)
    try:
        image = tio.ScalarImage(torch.arange(8.0).reshape(1, 2, 2, 2))
        image.save(tmp_path / "w.npy", level=3)
        assert written == [(str(tmp_path / "w.npy"), {"level": 3})]
        np.testing.assert_array_equal(np.load(tmp_path / "w.npy"), image.numpy())
        assert find_writer("a.npy") is writer
    finally:
        unregister_writer("npy-writer")
    with pytest.raises(tio.VoxelflowValueError, match="s3://b/a.npy: no writer for this extension"):
        find_writer("s3://b/a.npy")


def test_reader_returning_a_lazy_array_stays_lazy(tmp_path: Path, rng: np.random.Generator) -> None:
    data = rng.normal(size=(5, 6, 7)).astype(np.float32)
    np.save(tmp_path / "r.npy", data)
    calls: list[str] = []

    def reader(path: str, **kwargs: Any) -> tuple[Any, Any]:
        calls.append(path)
        return np.load(path, mmap_mode=kwargs["mode"]), np.diag([1.0, 2.0, 3.0, 1.0])

    image = tio.ScalarImage(tmp_path / "r.npy", reader=reader, reader_kwargs={"mode": "r"})
    assert calls == []
    assert image.shape == (1, 5, 6, 7) and image.spacing == (1.0, 2.0, 3.0)
    assert isinstance(image.dataobj, ArrayLikeBackend)
    np.testing.assert_array_equal(image[0, 1:3, ::-2].numpy()[0], data[1:3, ::-2])
    assert not image.is_loaded


def test_reader_returning_an_array_and_a_bad_reader(tmp_path: Path) -> None:
    (tmp_path / "r.bin").write_bytes(b"x")
    image = tio.ScalarImage(tmp_path / "r.bin", reader=lambda p: (np.ones((2, 3, 4)), None))
    assert image.shape == (1, 2, 3, 4) and float(image.data.sum()) == 24
    bad = tio.ScalarImage(tmp_path / "r.bin", reader=lambda p: np.ones((2, 3, 4)))
    with pytest.raises(TypeError, match=r"r\.bin: a reader must return \(array, affine\)"):
        bad.shape  # noqa: B018


def test_strict_backend_catches_whole_reads(strict_file: Any, strict_backend: Any) -> None:
    """The probe itself: whole reads raise, region reads are logged and correct."""
    path, expected, _ = strict_file
    image = tio.ScalarImage(path)
    assert type(image.dataobj).__name__ == "StrictBackend"
    with pytest.raises(WholeReadError):
        np.asarray(image.dataobj)
    with pytest.raises(WholeReadError):
        image.get_fdata(caching="unchanged")
    np.testing.assert_array_equal(image.dataobj[1].numpy(), expected[1:])
    assert strict_backend.log == [
        (slice(1, 2, 1), slice(0, 9, 1), slice(0, 10, 1), slice(0, 11, 1))
    ]
    np.testing.assert_array_equal(nifti_to_cijk(np.asarray(nib.load(path).dataobj)), expected)


def test_option_a_backend_does_not_take_is_refused_by_name():
    from nibabel.testing import data_path

    image = tio.ScalarImage(f"{data_path}/anatomical.nii", level=2)
    with pytest.raises(TypeError, match="'nifti' backend does not take option\\(s\\) level"):
        image.shape  # noqa: B018


def test_unloading_a_slice_releases_the_parent_backend_cache(tmp_path):
    import numpy as np
    import SimpleITK as sitk

    path = tmp_path / "volume.mha"
    sitk.WriteImage(
        sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.int16).reshape(6, 5, 4)), str(path)
    )
    image = tio.ScalarImage(path)
    region = image[:, 1:3]
    assert region.data.shape == (1, 2, 5, 6)
    assert image.dataobj._volume is not None  # SimpleITK loaded the volume once
    region.unload()
    assert image.dataobj._volume is None

"""``voxelflow.datasets``: example data that needs nothing beyond voxelflow's dependencies."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import voxelflow as tio
from conftest import docs_python, user_env


def test_nibabel_files_are_real_and_found_by_package_path() -> None:
    names = tio.datasets.nibabel_files()
    assert {"example4d.nii.gz", "anatomical.nii", "functional.nii"} <= set(names)
    path = tio.datasets.nibabel_file("functional.nii")
    reference = nib.load(path)
    image = tio.ScalarImage(path)
    assert image.shape == (20, 17, 21, 3)
    np.testing.assert_allclose(image.numpy()[3], reference.get_fdata()[..., 3], rtol=1e-6)
    with pytest.raises(KeyError, match=r"ships no file 'example4.nii.gz'.*Did you mean"):
        tio.datasets.nibabel_file("example4.nii.gz")


def test_examples_run_without_pytest_or_nilearn() -> None:
    """In a user's environment (voxelflow alone): nibabel's files are found without
    importing pytest, and the MNI template asks for nilearn with the pip line."""
    probe = """
import json, sys
import voxelflow as tio
image = tio.ScalarImage(tio.datasets.nibabel_file("example4d.nii.gz"))
result = {"shape": image.shape, "pytest": "pytest" in sys.modules,
          "testing": "nibabel.testing" in sys.modules}
try:
    tio.datasets.mni152()
except tio.MissingDependencyError as error:
    result["error"] = str(error)
    result["import_error"] = isinstance(error, ImportError)
print(json.dumps(result))
"""
    done = subprocess.run(
        [docs_python(), "-c", probe],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=user_env(),
        check=True,
    )
    result = json.loads(done.stdout)
    assert result["shape"] == [2, 128, 96, 24]
    assert not result["pytest"] and not result["testing"]
    assert "run: pip install nilearn" in result["error"] and result["import_error"]


def test_mni152_when_nilearn_is_installed() -> None:
    pytest.importorskip("nilearn")
    subject = tio.datasets.mni152()
    assert list(subject) == ["t1", "gm", "wm"]
    assert subject.spatial_shape == (197, 233, 189) and subject.spacing == (1.0, 1.0, 1.0)
    assert not subject.t1.is_loaded and subject.t1.stored_dtype == torch.uint8
    centre = subject.gm[:, 90:100, 110:120, 90:100].data
    assert centre.dtype == torch.float32 and centre.min() >= 0 and centre.max() <= 255
    assert set(tio.datasets.mni152_paths()) == {"t1", "gm", "wm"}


@pytest.mark.parametrize("shape", [(17, 24, 31), (32, 32, 32), 8])
def test_phantom_is_seeded_and_labelled(shape) -> None:
    first = tio.datasets.phantom(shape, seed=3)
    again = tio.datasets.phantom(shape, seed=3)
    other = tio.datasets.phantom(shape, seed=4)
    expected = (shape,) * 3 if isinstance(shape, int) else shape
    assert first.spatial_shape == expected
    assert torch.equal(first.t1.data, again.t1.data) and torch.equal(first.seg.data, again.seg.data)
    assert not torch.equal(first.t1.data, other.t1.data)
    seg = first.seg.data[0]
    t1 = first.t1.data[0]
    assert seg.dtype == torch.uint8 and set(seg.unique().tolist()) <= set(
        tio.datasets.PHANTOM_LABELS
    )
    assert {0, 1, 2} <= set(seg.unique().tolist())
    assert seg[0, 0, 0] == 0 and t1[seg == 0].abs().max() == 0  # background is empty
    assert t1[seg == 2].mean() > t1[seg == 1].mean() > 0.2  # brain brighter than skull
    if (seg == 3).any():
        assert t1[seg == 3].mean() > t1[seg == 2].mean()  # lesions brighter still
    centre = first.t1.affine @ [*((n - 1) / 2 for n in expected), 1]
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-12)  # world origin at the centre


@pytest.mark.parametrize(
    ("suffix", "t1_dtype"), [(".nii", "uint8"), (".nii.gz", "int16"), (".nii.zarr", "float32")]
)
def test_phantom_written_to_files(tmp_path: Path, suffix: str, t1_dtype: str) -> None:
    in_memory = tio.datasets.phantom((20, 24, 16), seed=1, t1_dtype=t1_dtype)
    on_disk = tio.datasets.phantom(
        (20, 24, 16), seed=1, t1_dtype=t1_dtype, directory=tmp_path / "x", suffix=suffix
    )
    assert on_disk.t1.path == tmp_path / "x" / f"t1{suffix}" and not on_disk.t1.is_loaded
    assert on_disk.t1.stored_dtype == in_memory.t1.stored_dtype == getattr(torch, t1_dtype)
    assert on_disk.t1.dtype == torch.float32
    assert torch.equal(on_disk.t1.data, in_memory.t1.data)
    assert torch.equal(on_disk.seg.data, in_memory.seg.data)
    np.testing.assert_allclose(on_disk.t1.affine, in_memory.t1.affine)
    if t1_dtype != "float32":
        top = float(on_disk.t1.data.max())
        assert 150 < top <= (255 if t1_dtype == "uint8" else 4095)


def test_phantom_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least 8"):
        tio.datasets.phantom((4, 32, 32))
    with pytest.raises(ValueError, match="t1_dtype='complex64'"):
        tio.datasets.phantom(16, t1_dtype="complex64")

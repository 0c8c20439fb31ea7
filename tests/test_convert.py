"""Streaming conversion: bounded memory, raw values and scaling kept, atomic output."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import voxelflow as tio
from voxelflow._errors import VoxelflowValueError
from voxelflow.convert import convert

niizarr = pytest.importorskip("niizarr")


def test_conversion_memory_stays_near_the_slab(tmp_path: Path) -> None:
    shape = (128, 128, 160)  # 10 MiB of float32; slabs of 16 slices are 1 MiB
    data = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "big.nii")
    del data
    volume_bytes = int(np.prod(shape)) * 4
    slab_bytes = 128 * 128 * 16 * 4
    tracemalloc.start()
    convert(tmp_path / "big.nii", tmp_path / "big.nii.zarr", chunk=16, levels=3, progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < volume_bytes / 3, (peak, volume_bytes)
    assert peak < 4 * slab_bytes, (peak, slab_bytes)
    back = tio.ScalarImage(tmp_path / "big.nii.zarr")
    reference = np.asarray(nib.load(tmp_path / "big.nii").dataobj)
    np.testing.assert_array_equal(
        back.dataobj[:, 60:70, :, 150:].numpy()[0], reference[60:70, :, 150:]
    )


def test_nii_to_zarr_to_nii_keeps_raw_values_and_scaling(tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(-500, 500, size=(20, 17, 13, 2)).astype(np.int16)
    affine = np.diag([0.7, 0.8, 2.0, 1.0])
    image = nib.Nifti1Image(data, affine)
    image.header.set_slope_inter(2.0, -1.0)
    image.header["descrip"] = b"round trip"
    nib.save(image, tmp_path / "a.nii")
    convert(tmp_path / "a.nii", tmp_path / "a.nii.zarr", chunk=(8, 8, 4), zarr_format=2)
    convert(tmp_path / "a.nii.zarr", tmp_path / "b.nii")
    back = nib.load(tmp_path / "b.nii")
    np.testing.assert_array_equal(np.asanyarray(back.dataobj.get_unscaled()), data)
    assert (back.dataobj.slope, back.dataobj.inter) == (2.0, -1.0)
    assert back.header["descrip"].item() == b"round trip"
    np.testing.assert_allclose(back.affine, affine)
    reference = niizarr.zarr2nii(str(tmp_path / "a.nii.zarr"))
    np.testing.assert_array_equal(np.asarray(reference.dataobj), data)


def test_label_intent_selects_majority_pyramid(tmp_path: Path) -> None:
    labels = np.zeros((16, 16, 16), dtype=np.uint8)
    labels[4:12, 4:12, 4:12] = 3
    labels[::2, ::2, ::2] = 9
    image = nib.Nifti1Image(labels, np.eye(4))
    image.header.set_intent("label")
    nib.save(image, tmp_path / "seg.nii.gz")
    convert(tmp_path / "seg.nii.gz", tmp_path / "seg.nii.zarr", chunk=4, levels=2)
    level1 = tio.LabelMap(tmp_path / "seg.nii.zarr", level=1).data.numpy()
    assert set(np.unique(level1)) == {0, 3}
    with pytest.raises(VoxelflowValueError, match="majority"):
        convert(tmp_path / "seg.nii.gz", tmp_path / "x.nii.zarr", method="mean")


def test_options_are_validated(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), tmp_path / "a.nii")
    with pytest.raises(VoxelflowValueError, match="do not apply to NIfTI"):
        convert(tmp_path / "a.nii", tmp_path / "b.nii", chunk=4)
    with pytest.raises(VoxelflowValueError, match="Did you mean 'levels'"):
        convert(tmp_path / "a.nii", tmp_path / "b.nii.zarr", lvels=4)
    with pytest.raises(VoxelflowValueError, match="same path"):
        convert(tmp_path / "a.nii", tmp_path / "a.nii")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii"]


# ---------------------------------------------------------------- header facts
@pytest.mark.parametrize("out", ["b.nii.gz", "b.nii", "b.nii.zarr"])
def test_qform_sform_codes_and_units_survive_conversion(tmp_path: Path, out: str) -> None:
    """nibabel writes qform/sform codes 0/2; converting used to store 1/1."""
    affine = np.diag([0.7, 0.8, 2.0, 1.0])
    image = nib.Nifti1Image(np.arange(120, dtype=np.float32).reshape(4, 5, 6), affine)
    image.header.set_xyzt_units("mm", "msec")
    nib.save(image, tmp_path / "a.nii.gz")
    source = nib.load(tmp_path / "a.nii.gz").header
    assert (int(source["qform_code"]), int(source["sform_code"])) == (0, 2)
    convert(tmp_path / "a.nii.gz", tmp_path / out)
    if out.endswith(".zarr"):
        convert(tmp_path / out, tmp_path / "c.nii")  # and back
        out = "c.nii"
    header = nib.load(tmp_path / out).header
    assert (int(header["qform_code"]), int(header["sform_code"])) == (0, 2)
    assert header.get_xyzt_units() == ("mm", "msec")
    np.testing.assert_allclose(nib.load(tmp_path / out).affine, affine)
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / out).dataobj), image.get_fdata())


# ---------------------------------------------------------------- existing outputs
def _source(tmp_path: Path, value: float = 1.0) -> Path:
    path = tmp_path / f"src{value:g}.nii"
    nib.save(nib.Nifti1Image(np.full((6, 5, 4), value, np.float32), np.eye(4)), path)
    return path


@pytest.mark.parametrize("name", ["x.nii", "x.nii.zarr", "x.nii.gz"])
def test_existing_directory_of_other_files_is_never_deleted(tmp_path: Path, name: str) -> None:
    target = tmp_path / name
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    with pytest.raises(
        FileExistsError, match=rf"{name}: the output already exists; pass overwrite=True"
    ):
        convert(_source(tmp_path), target)
    with pytest.raises(
        VoxelflowValueError,
        match=rf"{name}: the output exists and is a directory that is not an image",
    ):
        convert(_source(tmp_path), target, overwrite=True)
    assert (target / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src1.nii", name]  # no temporaries


@pytest.mark.parametrize("name", ["x.nii", "x.nii.gz", "x.nii.zarr"])
def test_overwrite_replaces_an_existing_image(tmp_path: Path, name: str) -> None:
    target = tmp_path / name
    convert(_source(tmp_path, 1.0), target)
    with pytest.raises(FileExistsError):
        convert(_source(tmp_path, 2.0), target)
    assert float(tio.ScalarImage(target).data.mean()) == 1.0
    convert(_source(tmp_path, 2.0), target, overwrite=True)
    assert float(tio.ScalarImage(target).data.mean()) == 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["src1.nii", "src2.nii", name])
    not_an_image = tmp_path / "notes.nii"
    not_an_image.write_text("not an image")
    with pytest.raises(VoxelflowValueError, match="a file that is not an image"):
        convert(_source(tmp_path, 3.0), not_an_image, overwrite=True)
    assert not_an_image.read_text() == "not an image"


KILLED_DURING_SWAP = """
import os, sys, time
import voxelflow._atomic as atomic
from voxelflow.convert import convert
real_rename = os.rename
def slow_rename(src, dst):
    real_rename(src, dst)
    if ".replaced-" in os.path.basename(dst):  # the old output was just moved aside
        print("ASIDE", flush=True)
        time.sleep(60)
atomic.os.rename = slow_rename
convert(sys.argv[1], sys.argv[2], overwrite=True, chunk=4)
"""


def test_kill_during_the_swap_loses_nothing(tmp_path: Path) -> None:
    """kill -9 after the old store was renamed aside and before the new one is renamed in:
    both are still on disk, whole (the old one under its aside name)."""
    import signal
    import subprocess
    import sys

    target = tmp_path / "out.nii.zarr"
    convert(_source(tmp_path, 1.0), target, chunk=4)
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_DURING_SWAP, str(_source(tmp_path, 2.0)), str(target)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ASIDE"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    aside = [p for p in tmp_path.iterdir() if ".replaced-" in p.name]
    partial = [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert not target.exists() and len(aside) == 1 and len(partial) == 1
    assert float(tio.ScalarImage(aside[0]).data.mean()) == 1.0  # the old output, whole
    assert float(tio.ScalarImage(partial[0]).data.mean()) == 2.0  # the new one, complete


# ---------------------------------------------------------------- full disks
def test_disk_full_at_the_write_call_names_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    source = _source(tmp_path)
    # The disk fills for the output only: the lossless probe (written to the temporary
    # directory, another disk in practice) is not what is tested here.
    monkeypatch.setattr("voxelflow.convert.check_lossless", lambda image, path: None)
    monkeypatch.setattr(os, "posix_fallocate", full)  # .nii: the space is reserved first
    with pytest.raises(
        VoxelflowValueError, match=r"out\.nii: no space left on the device.*free some space"
    ):
        convert(source, tmp_path / "out.nii")
    monkeypatch.undo()
    monkeypatch.setattr("voxelflow.convert.check_lossless", lambda image, path: None)
    real_write = os.write
    written = {"bytes": 0}

    def fills_up(fd: int, data: bytes) -> int:  # the disk fills in the middle of the data
        if written["bytes"] > 200:
            raise OSError(errno.ENOSPC, "No space left on device")
        written["bytes"] += len(data)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", fills_up)
    monkeypatch.setattr("voxelflow.backends.nifti_write.SLAB_BYTES", 6 * 5 * 4)  # a slab per k
    with pytest.raises(VoxelflowValueError, match=r"out\.nii: no space left"):
        convert(source, tmp_path / "out.nii")
    monkeypatch.undo()
    monkeypatch.setattr("voxelflow.convert.check_lossless", lambda image, path: None)
    from zarr.storage import LocalStore

    async def store_full(self: object, key: str, value: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(LocalStore, "set", store_full)
    with pytest.raises(VoxelflowValueError, match=r"out\.nii\.zarr: no space left"):
        convert(source, tmp_path / "out.nii.zarr", chunk=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src1.nii"]  # no partials left


def test_unwritable_output_directory_names_the_output(tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(PermissionError, match=r"out\.nii: cannot write there"):
        convert(_source(tmp_path), locked / "out.nii")


FILL_A_SMALL_DISK = """
set -e
mount -t tmpfs -o size=1m voxelflow-full "$1"
mkdir -p "$1.ro"
mount -t tmpfs -o ro voxelflow-ro "$1.ro"
trap 'umount "$1"; umount "$1.ro"' EXIT
"$2" -c '
import sys, os, voxelflow as tio
from voxelflow.convert import convert
for folder in sys.argv[2:]:
    for out in ("out.nii", "out.nii.zarr", "out.nii.gz"):
        try:
            options = {"codec": "none"} if out.endswith(".zarr") else {}
            convert(sys.argv[1], os.path.join(folder, out), **options)
            print(out, "written")
        except tio.VoxelflowError as error:
            print(out, type(error).__name__, str(error).splitlines()[0])
    print("left:", sorted(os.listdir(folder)))
' "$3" "$1" "$1.ro"
"""


def test_a_real_full_filesystem(tmp_path: Path) -> None:
    """A 1 MiB tmpfs and a 2.4 MiB image, and a read-only tmpfs: each writer refuses with the
    output named and the fix, and leaves nothing behind (skipped where mounting is not
    permitted)."""
    import shutil
    import subprocess
    import sys

    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    source = tmp_path / "big.nii"
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.normal(size=(100, 80, 80)).astype(np.float32), np.eye(4)), source)
    disk = tmp_path / "disk"
    disk.mkdir()
    command = ["sh", "-c", FILL_A_SMALL_DISK, "sh", str(disk), sys.executable, str(source)]
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "probe", str(disk)], capture_output=True
    ).returncode:
        command = ["unshare", "--user", "--map-root-user", "--mount", *command]
        probe = subprocess.run(
            [
                "unshare",
                "--user",
                "--map-root-user",
                "--mount",
                "sh",
                "-c",
                f"mount -t tmpfs -o size=1m p {disk}",
            ],
            capture_output=True,
        )
        if probe.returncode:
            pytest.skip("mounting a tmpfs is not permitted here")
    else:
        subprocess.run(["umount", str(disk)], check=True)
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for out in ("out.nii", "out.nii.zarr", "out.nii.gz"):
        full, read_only = (line for line in lines if line.startswith(out + " "))
        assert f"{out}: no space left on the device" in full, result.stdout
        assert "VoxelflowPermissionError" in read_only, result.stdout
        assert f"{out}: cannot write there (Read-only file system)" in read_only, result.stdout
    assert result.stdout.count("left: []") == 2, result.stdout
    assert len(result.stderr) < 2000, result.stderr  # one clear error each, no flood

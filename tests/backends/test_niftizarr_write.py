"""The NIfTI-Zarr writer: its API (create/write/read/finalize/abort, ``with``), atomic
publication with a completeness marker, the reference reader on its output, header facts
kept, and the damage a reader must catch (checksums, chunk sizes, links out of the store,
inconsistent pyramids)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import voxelflow as tio
from voxelflow._errors import VoxelflowFileExistsError, VoxelflowValueError
from voxelflow.backends import NiftiZarrWriter
from voxelflow.backends.niftizarr_meta import header_json

niizarr = pytest.importorskip("niizarr")

AFFINE = np.array(
    [[0.0, -1.2, 0.0, 30.0], [0.9, 0.0, 0.0, -4.0], [0.0, 0.0, 1.5, 2.0], [0, 0, 0, 1]]
)


def full(shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(0, n) for n in shape)


def test_create_write_finalize_is_read_by_both_readers(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(3, 17, 12, 10)).astype(np.float32)
    path = tmp_path / "out.nii.zarr"
    with NiftiZarrWriter.create(
        path, shape=volume.shape, dtype=torch.float32, affine=AFFINE, chunks=4, levels=2
    ) as store:
        assert not path.exists() and os.path.isdir(store.tmp)  # hidden until finalised
        for k0 in (6, 0):  # out of order: the pyramid is then built from level 0 at the end
            box = (slice(0, 3), slice(0, 17), slice(0, 12), slice(k0, min(10, k0 + 6)))
            store.write(box, torch.from_numpy(volume[box]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.zarr"]
    ours = tio.ScalarImage(path)
    np.testing.assert_array_equal(ours.data.numpy(), volume)
    np.testing.assert_allclose(ours.affine, AFFINE, atol=1e-6)
    reference = niizarr.zarr2nii(str(path))
    assert reference.header.get_data_shape() == (17, 12, 10, 1, 3)  # channels: NIfTI's 5th dim
    np.testing.assert_array_equal(
        np.asarray(reference.dataobj)[:, :, :, 0], np.moveaxis(volume, 0, -1)
    )
    np.testing.assert_allclose(reference.header.get_best_affine(), AFFINE, atol=1e-6)
    level1 = tio.ScalarImage(path, level=1)
    expected = np.pad(volume, [(0, 0), (0, 1), (0, 0), (0, 0)], mode="edge")  # odd I: replicate
    expected = expected.reshape(3, 9, 2, 6, 2, 5, 2).mean(axis=(2, 4, 6), dtype=np.float64)
    np.testing.assert_allclose(level1.data.numpy(), expected.astype(np.float32), rtol=1e-6)
    group = json.loads((path / "zarr.json").read_text())["attributes"]
    assert group["voxelflow"]["complete"] is True
    assert len(json.loads((path / "nifti" / "zarr.json").read_text())["attributes"]) == 39


def test_streamed_pyramid_equals_the_rebuilt_one(tmp_path: Path) -> None:
    labels = np.random.default_rng(1).integers(0, 4, size=(1, 19, 14, 23)).astype(np.uint8)
    stores = []
    for name, order in [("stream", range(0, 23, 4)), ("random", [8, 0, 20, 4, 16, 12])]:
        path = tmp_path / f"{name}.nii.zarr"
        with NiftiZarrWriter.create(
            path, labels.shape, dtype=np.uint8, affine=np.eye(4), chunks=4, levels=4, label=True
        ) as store:
            for k0 in order:
                box = (slice(0, 1), slice(0, 19), slice(0, 14), slice(k0, min(23, k0 + 4)))
                store.write(box, labels[box])
        stores.append(path)
    for level in range(4):
        a, b = (tio.LabelMap(p, level=level).data for p in stores)
        assert torch.equal(a, b), level
        assert set(torch.unique(a).tolist()) <= {0, 1, 2, 3}  # majority votes, never averages


def test_read_modify_write_accumulates(tmp_path: Path) -> None:
    path = tmp_path / "acc.nii.zarr"
    with NiftiZarrWriter.create(path, (1, 8, 8, 8), torch.float32, np.eye(4), chunks=4) as store:
        box = (slice(0, 1), slice(2, 7), slice(0, 8), slice(3, 5))
        for _ in range(3):
            store.write(box, store.read(box) + 1.5)
        assert store.read(box).dtype == np.float32
    data = tio.ScalarImage(path).data
    assert float(data[box].min()) == 4.5 and float(data.sum()) == 4.5 * 5 * 8 * 2


def test_an_unfinished_store_never_opens_as_an_image(tmp_path: Path) -> None:
    path = tmp_path / "out.nii.zarr"
    store = NiftiZarrWriter.create(path, (1, 8, 8, 8), torch.float32, np.eye(4), chunks=4)
    store.write(full((1, 8, 8, 4)), torch.ones(1, 8, 8, 4))  # half of it
    with pytest.raises(VoxelflowValueError, match="incomplete: voxelflow was still writing it"):
        _ = tio.ScalarImage(store.tmp).shape
    store.abort()
    assert list(tmp_path.iterdir()) == []


def test_an_error_inside_with_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "out.nii.zarr"
    with (
        pytest.raises(RuntimeError, match="model failed"),
        NiftiZarrWriter.create(path, (1, 8, 8, 8), torch.float32, np.eye(4)) as store,
    ):
        store.write(full((1, 8, 8, 8)), torch.zeros(1, 8, 8, 8))
        raise RuntimeError("model failed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(VoxelflowValueError, match="aborted"):
        store.write(full((1, 8, 8, 8)), torch.zeros(1, 8, 8, 8))


def test_existing_outputs(tmp_path: Path) -> None:
    path = tmp_path / "out.nii.zarr"

    def write(value: float, **options: object) -> None:
        with NiftiZarrWriter.create(path, (1, 4, 4, 4), torch.float32, np.eye(4), **options) as s:  # type: ignore[arg-type]
            s.write(full((1, 4, 4, 4)), torch.full((1, 4, 4, 4), value))

    write(1.0)
    with pytest.raises(
        VoxelflowFileExistsError, match=r"out\.nii\.zarr: the output already exists"
    ):
        write(2.0)
    write(3.0, overwrite=True)
    assert float(tio.ScalarImage(path).data.mean()) == 3.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.zarr"]  # nothing aside left
    (path / "notes.txt").write_text("mine")  # no longer a store voxelflow may replace
    with pytest.raises(VoxelflowValueError, match="not an image voxelflow wrote"):
        write(4.0, overwrite=True)
    assert (path / "notes.txt").read_text() == "mine"


def test_header_facts_are_kept(tmp_path: Path) -> None:
    source = nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), AFFINE)
    source.header.set_qform(AFFINE, code=0)
    source.header.set_sform(AFFINE, code=2)
    source.header.set_xyzt_units("mm", "msec")
    source.header["descrip"] = b"kept"
    source.header.set_slope_inter(0.5, 10.0)
    nib.save(source, tmp_path / "a.nii")
    tio.ScalarImage(tmp_path / "a.nii").save(tmp_path / "a.nii.zarr")
    header = niizarr.zarr2nii(str(tmp_path / "a.nii.zarr")).header
    assert (int(header["qform_code"]), int(header["sform_code"])) == (0, 2)
    assert header.get_xyzt_units() == ("mm", "msec") and header["descrip"].item() == b"kept"
    fields = header_json(header)
    assert fields["QForm"] == "" and fields["SForm"] == "aligned_anat" and len(fields) == 39


# ---------------------------------------------------------------- damage a reader catches
def _chunk_files(store: Path, level: str = "0") -> list[Path]:
    return sorted(
        p
        for p in (store / level).rglob("*")
        if p.is_file() and "zarr" not in p.name and not p.name.startswith(".")
    )


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_corrupt_uncompressed_chunk_is_named(tmp_path: Path, zarr_format: int) -> None:
    path = tmp_path / "raw.nii.zarr"
    tio.ScalarImage(torch.rand(1, 8, 8, 8)).save(
        path, chunk=4, codec="none", zarr_format=zarr_format
    )
    chunk = _chunk_files(path)[3]
    key = chunk.relative_to(path).as_posix()
    blob = bytearray(chunk.read_bytes())
    if zarr_format == 3:  # same size, flipped bits: only the CRC-32C can tell
        blob[10] ^= 0xFF
        match = rf"chunk '{key}'.*(corrupt|checksum)"
    else:  # v2 has no checksum: a chunk of the wrong size is refused by its size
        blob = blob[:-4]
        match = rf"chunk '{key}' holds 252 bytes, but an uncompressed chunk of this array holds exactly 256"
    chunk.write_bytes(bytes(blob))
    image = tio.ScalarImage(path)
    with pytest.raises(VoxelflowValueError, match=match):
        _ = image.data


def test_symlinked_chunk_outside_the_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.nii.zarr"
    tio.ScalarImage(torch.rand(1, 8, 8, 8)).save(path, chunk=4, codec="none", checksum=False)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(64, dtype=np.float32).tobytes())  # a chunk-sized file
    chunk = _chunk_files(path)[0]
    chunk.unlink()
    chunk.symlink_to(secret)
    with pytest.raises(VoxelflowValueError, match="symbolic link that leads outside the store"):
        _ = tio.ScalarImage(path).data
    inside = _chunk_files(path)[1]  # a link inside the store is fine
    chunk.unlink()
    chunk.symlink_to(inside)
    assert tio.ScalarImage(path).data.shape == (1, 8, 8, 8)


def test_pyramid_level_that_disagrees_with_level_0_is_refused(tmp_path: Path) -> None:
    import zarr

    path = tmp_path / "p.nii.zarr"
    tio.ScalarImage(torch.rand(1, 16, 16, 16)).save(path, chunk=4, levels=2)
    group = zarr.open_group(str(path), mode="a")
    del group["1"]
    group.create_array("1", shape=(5, 8, 8), chunks=(4, 4, 4), dtype="f4", fill_value=0)
    with pytest.raises(VoxelflowValueError, match="pyramid level 1 .* has 5 values on axis 'z'"):
        _ = tio.ScalarImage(path).shape

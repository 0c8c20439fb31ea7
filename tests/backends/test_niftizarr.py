"""NIfTI-Zarr: reading, writing, pyramids, interop with the reference ``niizarr``, bad input."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
from pathlib import Path

import jsonschema
import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import voxelflow as tio
from voxelflow._errors import VoxelflowError, VoxelflowIndexError, VoxelflowValueError
from voxelflow.backends.niftizarr import NiftiZarrBackend
from voxelflow.backends.niftizarr_meta import header_json

niizarr = pytest.importorskip("niizarr")

AFFINE = np.array(
    [[0.0, -2.0, 0.0, 10.0], [1.5, 0.0, 0.0, -5.0], [0.0, 0.0, 3.0, 7.0], [0, 0, 0, 1]]
)

# The NIfTI-Zarr JSON header schema (neuroscales/nifti-zarr, nifti-zarr-schema-1.0.rc1.json),
# condensed by hand: the installed `nifti-zarr` package does not ship the schema file.
NUMBER, INTEGER, STRING = {"type": "number"}, {"type": "integer"}, {"type": "string"}
HEADER_SCHEMA = {
    "type": "object",
    "required": ["NIIHeaderSize", "Dim", "DataType", "VoxelSize", "Affine", "NIIFormat", "Unit"],
    "properties": {
        "NIIHeaderSize": {"enum": [348, 540]},
        "Dim": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 3, "maxItems": 5},
        "VoxelSize": {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 3, "maxItems": 5},
        "DataType": STRING,
        "BitDepth": INTEGER,
        "Intent": STRING,
        "ScaleSlope": NUMBER,
        "ScaleOffset": NUMBER,
        "Unit": {"type": "object", "properties": {"L": {"enum": ["", "m", "mm", "um"]}, "T": {"enum": ["", "s", "ms", "us"]}}},
        "QForm": {"enum": ["", "scanner_anat", "aligned_anat", "talairach", "mni_152", "template_other"]},
        "SForm": {"enum": ["", "scanner_anat", "aligned_anat", "talairach", "mni_152", "template_other"]},
        "Affine": {"type": "array", "minItems": 3, "maxItems": 3, "items": {"type": "array", "minItems": 4, "maxItems": 4, "items": NUMBER}},
        "NIIFormat": {"enum": ["ni1", "n+1", "ni2", "n+2"]},
        "Description": {"type": "string", "maxLength": 80},
        "NIFTIExtension": {"type": "array", "minItems": 4, "maxItems": 4},
    },
}  # fmt: skip
# OME-NGFF multiscales (0.4 / 0.5), the parts NIfTI-Zarr relies on.
TRANSFORMS = {
    "type": "array",
    "minItems": 1,
    "prefixItems": [{"type": "object", "properties": {"type": {"const": "scale"}}}],
    "items": {"type": "object", "required": ["type"]},
}
MULTISCALE_SCHEMA = {
    "type": "object",
    "required": ["axes", "datasets"],
    "properties": {
        "axes": {
            "type": "array",
            "minItems": 3,
            "maxItems": 5,
            "items": {
                "type": "object",
                "required": ["name", "type"],
                "properties": {"type": {"enum": ["space", "time", "channel"]}},
            },
        },
        "datasets": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["path", "coordinateTransformations"],
                "properties": {"coordinateTransformations": TRANSFORMS},
            },
        },
    },
}


def make_nifti(tmp_path: Path, shape=(37, 30, 26), scaled: bool = True, dtype=np.int16) -> Path:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 1000, size=shape).astype(dtype)
    image = nib.Nifti1Image(data, AFFINE)
    image.set_qform(AFFINE, code=1)
    if scaled:
        image.header.set_slope_inter(0.5, 10.0)
    path = tmp_path / "x.nii"
    nib.save(image, path)
    return path


def scaled_reference(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).get_fdata(dtype=np.float32))


# ------------------------------------------------------------------ reading what niizarr writes
@pytest.mark.parametrize("zarr_version", [2, 3])
@pytest.mark.parametrize("shape", [(37, 30, 26), (20, 18, 16, 3)])
def test_reads_reference_writer(tmp_path: Path, zarr_version: int, shape: tuple[int, ...]) -> None:
    source = make_nifti(tmp_path, shape)
    out = tmp_path / "ref.nii.zarr"
    niizarr.nii2zarr(nib.load(source), str(out), chunk=8, zarr_version=zarr_version)
    image = tio.ScalarImage(out)
    reference = scaled_reference(source)
    expected = reference[None] if reference.ndim == 3 else np.moveaxis(reference, -1, 0)
    assert image.dtype == torch.float32  # scaled: the header's slope/inter are applied
    assert image.shape == expected.shape
    np.testing.assert_allclose(image.data.numpy(), expected)
    np.testing.assert_allclose(image.affine, AFFINE)
    np.testing.assert_allclose(
        image.dataobj[:, 3:11, 2:29:3, 5].numpy(), expected[:, 3:11, 2:29:3, 5:6]
    )
    version = "0.5" if zarr_version == 3 else "0.4"
    assert f"OME {version}" in image.dataobj.describe()["format"]


@pytest.mark.parametrize("level", [1, 2])
def test_level_affine_matches_reference(tmp_path: Path, level: int) -> None:
    source = make_nifti(tmp_path)
    out = tmp_path / "ref.nii.zarr"
    niizarr.nii2zarr(nib.load(source), str(out), chunk=8)
    reference = niizarr.zarr2nii(str(out), level=level)
    image = tio.ScalarImage(out, level=level)
    np.testing.assert_allclose(image.affine, reference.header.get_best_affine(), atol=1e-5)
    assert image.spatial_shape == reference.shape
    raw = np.asarray(reference.dataobj).astype(np.float32) * 0.5 + 10  # niizarr drops scaling
    np.testing.assert_allclose(image.data.numpy()[0], raw, rtol=1e-6)
    # half-voxel shift: level voxel 0 sits between level-0 voxels 0 and 2^level - 1
    centre = AFFINE @ np.array([(2**level - 1) / 2] * 3 + [1])
    assert np.allclose(image.affine[:, 3], centre, atol=0.5)


# ------------------------------------------------------------------ writing, read by niizarr
@pytest.mark.parametrize(
    "options",
    [
        {"zarr_format": 2, "codec": "blosc"},
        {"zarr_format": 2, "codec": "zstd", "chunk": (8, 16, 4)},
        {"zarr_format": 3, "codec": "gzip", "compression_level": 1},
        {"zarr_format": 3, "codec": "none", "levels": 1},
        {"zarr_format": 3, "shard": 16, "chunk": 8, "levels": 2},
    ],
)
def test_written_store_is_read_by_reference(tmp_path: Path, options: dict) -> None:
    source = make_nifti(tmp_path)
    out = tmp_path / "w.nii.zarr"
    tio.ScalarImage(source).save(out, **options)
    reference = niizarr.zarr2nii(str(out))
    raw = np.asanyarray(nib.load(source).dataobj.get_unscaled())
    np.testing.assert_array_equal(np.asarray(reference.dataobj), raw)  # stored values kept
    np.testing.assert_allclose(reference.header.get_best_affine(), AFFINE, atol=1e-6)
    back = tio.ScalarImage(out)
    np.testing.assert_allclose(back.data.numpy()[0], scaled_reference(source))
    describe = back.dataobj.describe()
    chunk = options.get("chunk", 8 if "shard" in options else 64)
    chunk = (chunk,) * 3 if isinstance(chunk, int) else chunk
    assert describe["chunks (I, J, K)"] == [
        min(c, s) for c, s in zip(chunk, back.spatial_shape, strict=True)
    ]
    if "shard" in options:
        assert describe["shards (I, J, K)"] == [16, 16, 16]
        assert "sharding" in describe["codecs"]
    if "levels" in options:
        assert back.dataobj.levels == options["levels"]
    for level in range(1, back.dataobj.levels):
        ours = tio.ScalarImage(out, level=level)
        theirs = niizarr.zarr2nii(str(out), level=level)
        np.testing.assert_allclose(ours.affine, theirs.header.get_best_affine(), atol=1e-5)
        np.testing.assert_array_equal(ours.dataobj.read_stored()[0], np.asarray(theirs.dataobj))


def test_written_metadata_validates(tmp_path: Path) -> None:
    source = make_nifti(tmp_path)
    for zarr_format in (2, 3):
        out = tmp_path / f"w{zarr_format}.nii.zarr"
        tio.ScalarImage(source).save(out, chunk=8, zarr_format=zarr_format)
        import zarr

        group = zarr.open_group(str(out), mode="r")
        attrs = dict(group.attrs)
        ome = attrs["ome"] if zarr_format == 3 else attrs
        assert (ome["version"] if zarr_format == 3 else ome["multiscales"][0]["version"]) == (
            "0.5" if zarr_format == 3 else "0.4"
        )
        jsonschema.validate(ome["multiscales"][0], MULTISCALE_SCHEMA)
        header_attrs = dict(group["nifti"].attrs)
        jsonschema.validate(header_attrs, HEADER_SCHEMA)
        # the JSON header is the one the reference implementation derives from the binary one
        binary = np.asarray(group["nifti"][...]).tobytes()
        expected = niizarr.nii2json(nib.Nifti1Header.from_fileobj(io.BytesIO(binary)))
        # (niizarr fills A75DataTypeName from the `datatype` code's bytes, e.g. "\x04": a quirk;
        # we render the unused `data_type` field itself, which is empty)
        expected.pop("A75DataTypeName")
        assert header_attrs.pop("A75DataTypeName") == ""
        assert json.loads(json.dumps(header_attrs)) == json.loads(json.dumps(expected))
        assert len(binary) == 348


def test_header_json_matches_reference_for_nifti2() -> None:
    header = nib.Nifti2Header()
    header.set_data_shape((4, 5, 6, 2))
    header.set_data_dtype(np.float32)
    header.set_intent("label")
    assert header_json(header) == niizarr.nii2json(header)  # NIfTI-2: no data_type field


# ------------------------------------------------------------------ region reads
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_region_reads_equal_numpy(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    folder = tmp_path_factory.getbasetemp() / "region"
    out = folder / "r.nii.zarr"
    rng = np.random.default_rng(1)
    volume = rng.normal(size=(3, 19, 14, 11)).astype(np.float32)
    if not out.exists():
        folder.mkdir(exist_ok=True)
        tio.ScalarImage(torch.from_numpy(volume)).save(out, chunk=(4, 5, 3), levels=1)
    backend = tio.ScalarImage(out).dataobj
    key = []
    for size in volume.shape:
        start = data.draw(st.integers(0, size - 1))
        stop = data.draw(st.integers(start + 1, size))
        step = data.draw(st.integers(1, 3))
        key.append(slice(start, stop, step))
    np.testing.assert_array_equal(backend[tuple(key)].numpy(), volume[tuple(key)])


def test_region_read_touches_only_overlapping_chunks(tmp_path: Path) -> None:
    volume = np.arange(32 * 32 * 32, dtype=np.float32).reshape(1, 32, 32, 32)
    out = tmp_path / "c.nii.zarr"
    tio.ScalarImage(torch.from_numpy(volume)).save(out, chunk=8, levels=1)
    backend = NiftiZarrBackend(out)
    store = backend.store
    before = store.requests
    region = backend[:, 8:16, 0:16, 24:32]  # 1 × 2 × 1 chunks
    assert store.requests - before == 2
    np.testing.assert_array_equal(region.numpy(), volume[:, 8:16, 0:16, 24:32])
    # a chunk that is not read may even be gone: zarr order is (z, y, x) = (k, j, i)
    os.remove(out / "0" / "c" / "0" / "0" / "0")  # chunk k0, j0, i0
    np.testing.assert_array_equal(
        NiftiZarrBackend(out)[:, 8:16, 0:16, 24:32].numpy(), volume[:, 8:16, 0:16, 24:32]
    )
    with pytest.raises(VoxelflowValueError, match=r"chunk '0/c/0/0/0' is missing.*missing_chunks"):
        NiftiZarrBackend(out)[:, 0:4, 0:4, 0:4]
    filled = NiftiZarrBackend(out, missing_chunks="fill")[:, 0:4, 0:4, 0:4]
    assert torch.all(filled == 0)


def test_pickles_and_reads_in_another_process_state(tmp_path: Path) -> None:
    source = make_nifti(tmp_path)
    tio.ScalarImage(source).save(tmp_path / "p.nii.zarr", chunk=8)
    backend = tio.ScalarImage(tmp_path / "p.nii.zarr").dataobj
    backend[:, :2, :2, :2]
    clone = pickle.loads(pickle.dumps(backend))
    assert clone._array is None
    np.testing.assert_array_equal(clone[:, 5:9, 1:4, 2].numpy(), backend[:, 5:9, 1:4, 2].numpy())


# ------------------------------------------------------------------ pyramids
def _mean_reference(volume: np.ndarray) -> np.ndarray:
    """2×2×2 mean over real voxels (odd borders: the last voxel alone), by plain loops over blocks."""
    i, j, k = volume.shape
    out = np.empty(((i + 1) // 2, (j + 1) // 2, (k + 1) // 2))
    for a in range(out.shape[0]):
        for b in range(out.shape[1]):
            for c in range(out.shape[2]):
                out[a, b, c] = volume[
                    2 * a : 2 * a + 2, 2 * b : 2 * b + 2, 2 * c : 2 * c + 2
                ].mean()
    return out


def test_intensity_pyramid_is_block_mean(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    volume = rng.normal(size=(13, 10, 9)).astype(np.float32)
    out = tmp_path / "m.nii.zarr"
    tio.ScalarImage(torch.from_numpy(volume[None])).save(out, chunk=(4, 3, 2), levels=3)
    level1 = tio.ScalarImage(out, level=1).data.numpy()[0]
    np.testing.assert_allclose(level1, _mean_reference(volume), rtol=1e-5, atol=1e-6)
    level2 = tio.ScalarImage(out, level=2).data.numpy()[0]
    np.testing.assert_allclose(level2, _mean_reference(level1), rtol=1e-5, atol=1e-6)


def test_label_pyramid_keeps_labels(tmp_path: Path) -> None:
    labels = np.zeros((16, 16, 12), dtype=np.uint8)
    labels[:, :, 6:] = 5
    labels[2:9, 3:12, 1:5] = 2
    labels[::2, ::2, ::2] = 7  # 1 voxel in 8: must never win a block, nor blend into 3 or 4
    out = tmp_path / "seg.nii.zarr"
    tio.LabelMap(torch.from_numpy(labels[None])).save(out, chunk=4, levels=3)
    for level in (1, 2):
        data = tio.LabelMap(out, level=level).data.numpy()[0]
        assert set(np.unique(data)) <= {0, 2, 5}
    level1 = tio.LabelMap(out, level=1).data.numpy()[0]
    assert np.all(level1[:, :, 3:] == 5) and np.all(level1[1:4, 2:5, 1:2] == 2)
    assert niizarr.zarr2nii(str(out)).header.get_intent()[0] == "label"
    with pytest.raises(VoxelflowValueError, match="majority"):
        tio.LabelMap(torch.from_numpy(labels[None])).save(tmp_path / "bad.nii.zarr", method="mean")


def test_multichannel_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    volume = rng.integers(0, 50, size=(3, 12, 10, 9)).astype(np.int32)
    out = tmp_path / "mc.nii.zarr"
    tio.ScalarImage(torch.from_numpy(volume)).save(out, chunk=4)
    back = tio.ScalarImage(out)
    np.testing.assert_array_equal(back.data.numpy(), volume)
    np.testing.assert_array_equal(back.dataobj[1:3, 2:5, :, 8].numpy(), volume[1:3, 2:5, :, 8:9])
    # Channels are NIfTI's 5th dim (vector components, the OME "c" axis), never time points.
    reference = niizarr.zarr2nii(str(out))
    assert reference.header.get_data_shape() == (12, 10, 9, 1, 3)
    np.testing.assert_array_equal(
        np.asarray(reference.dataobj)[:, :, :, 0, :], np.moveaxis(volume, 0, -1)
    )


# ------------------------------------------------------------------ bad input and options
def test_unknown_option_and_bad_values(tmp_path: Path) -> None:
    image = tio.ScalarImage(torch.rand(1, 8, 8, 8))
    with pytest.raises(VoxelflowValueError, match="Did you mean 'chunk'"):
        image.save(tmp_path / "a.nii.zarr", chunks=4)
    with pytest.raises(VoxelflowValueError, match="Did you mean 'zstd'"):
        image.save(tmp_path / "a.nii.zarr", codec="zstdd")
    with pytest.raises(VoxelflowValueError, match="multiple of chunk"):
        image.save(tmp_path / "a.nii.zarr", chunk=4, shard=6)
    with pytest.raises(VoxelflowValueError, match="zarr_format=3"):
        image.save(tmp_path / "a.nii.zarr", shard=8, zarr_format=2)
    assert not (tmp_path / "a.nii.zarr").exists()


def test_interrupted_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = make_nifti(tmp_path, shape=(16, 16, 40))
    image = tio.ScalarImage(source)
    from voxelflow.backends import write_source

    calls = {"n": 0}
    original = write_source.ImageSource.read_stored

    def failing(self, box):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, box)

    monkeypatch.setattr(write_source.ImageSource, "read_stored", failing)
    with pytest.raises(KeyboardInterrupt):
        image.save(tmp_path / "out.nii.zarr", chunk=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.nii"]


def _store(tmp_path: Path) -> Path:
    out = tmp_path / "s.nii.zarr"
    tio.ScalarImage(make_nifti(tmp_path)).save(out, chunk=8, zarr_format=2)
    return out


def test_store_without_header(tmp_path: Path) -> None:
    out = _store(tmp_path)
    shutil.rmtree(out / "nifti")
    with pytest.raises(VoxelflowValueError, match=r"s\.nii\.zarr: the store has no 'nifti' array"):
        _ = tio.ScalarImage(out).shape


def test_header_disagrees_with_array(tmp_path: Path) -> None:
    out = _store(tmp_path)
    header = nib.Nifti1Header()
    header.set_data_shape((37, 30, 26))
    header.set_data_dtype(np.float64)
    raw = header.binaryblock
    (out / "nifti" / "0").write_bytes(raw)
    with pytest.raises(VoxelflowValueError, match="header says dtype float64.*stores int16"):
        _ = tio.ScalarImage(out).shape
    header.set_data_dtype(np.int16)
    header.set_data_shape((37, 30, 25))
    (out / "nifti" / "0").write_bytes(header.binaryblock)
    with pytest.raises(VoxelflowValueError, match="header disagrees with the array"):
        _ = tio.ScalarImage(out).shape


def test_corrupt_chunk_is_named(tmp_path: Path) -> None:
    out = _store(tmp_path)
    (out / "0" / "1" / "0" / "2").write_bytes(b"not blosc at all" * 4)
    image = tio.ScalarImage(out)
    image.dataobj[:, :8, :8, :8]  # other chunks read fine
    with pytest.raises(VoxelflowValueError, match=r"chunk '0/1/0/2' is corrupt"):
        image.dataobj[:, 10:20, 0:4, 9:12]


def test_unsupported_codec(tmp_path: Path) -> None:
    out = _store(tmp_path)
    meta = json.loads((out / "0" / ".zarray").read_text())
    meta["compressor"] = {"id": "fancy-codec-9000"}
    (out / "0" / ".zarray").write_text(json.dumps(meta))
    with pytest.raises(VoxelflowError, match=r"codec.*pip install"):
        _ = tio.ScalarImage(out).shape


def test_missing_level_and_store(tmp_path: Path) -> None:
    out = _store(tmp_path)
    with pytest.raises(VoxelflowIndexError, match="level=7 does not exist"):
        _ = tio.ScalarImage(out, level=7).shape
    with pytest.raises(FileNotFoundError):
        NiftiZarrBackend(tmp_path / "nothing.nii.zarr")
    shutil.rmtree(out / "1")
    with pytest.raises(VoxelflowValueError, match="'1' listed in 'multiscales' is missing"):
        _ = tio.ScalarImage(out).shape

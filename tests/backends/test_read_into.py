"""``read_into`` fast paths equal the simple path: NumPy slicing of nibabel's values, scaled,
then ``torch.Tensor.to(out.dtype)``, on random boxes, stored dtypes, byte orders, ``out``
dtypes and ``out`` views into larger (padded, permuted) buffers; and the contract's other
members (region cost, cache key, release, describe) for every built-in backend."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import voxelflow as tio
from voxelflow.backends import (
    REGION_COSTS,
    ArrayLikeBackend,
    Backend,
    BackendProtocol,
    RegionBackend,
    TensorBackend,
    WindowBackend,
    open_backend,
)
from voxelflow.backends.base import store_into

SHAPE = (13, 11, 9, 2)  # (I, J, K, C): odd sizes, two channels
SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def stored_values(dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kind = np.dtype(dtype).kind
    if kind == "f":
        return rng.normal(0, 100, SHAPE).astype(dtype)
    if kind == "u":
        return rng.integers(0, 250, SHAPE).astype(dtype)
    return rng.integers(-300, 300, SHAPE).astype(dtype)


def expected_cijk(raw: np.ndarray, slope: float, inter: float) -> np.ndarray:
    """The oracle, written independently: ``raw * slope + inter`` computed in the scaled
    dtype (float32 here), as (C, I, J, K); unscaled files keep their values."""
    if (slope, inter) == (1.0, 0.0):
        scaled = raw.astype(raw.dtype.newbyteorder("="))
    else:
        dtype = np.float32
        scaled = raw.astype(dtype) * dtype(slope) + dtype(inter)
    return np.ascontiguousarray(np.moveaxis(scaled, -1, 0))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same stored values as .nii, .nii.gz and .nii.zarr (v2, v3, sharded), per dtype."""
    folder = tmp_path_factory.mktemp("read_into")
    made: dict[str, Any] = {}
    for dtype, slope, inter in [(">i2", 0.5, 3.0), ("<u1", 1.0, 0.0), ("<f4", 2.0, -1.0)]:
        raw = stored_values(dtype)
        image = nib.Nifti1Image(raw, np.diag([1.0, 1.5, 2.0, 1.0]))
        image.header.set_slope_inter(slope, inter)
        stem = folder / f"v{np.dtype(dtype).str.replace('<', 'l').replace('>', 'b')}"
        nib.save(image, f"{stem}.nii")
        nib.save(image, f"{stem}.nii.gz")
        tio.ScalarImage(f"{stem}.nii").save(f"{stem}.v3.nii.zarr", chunk=4, levels=1)
        tio.ScalarImage(f"{stem}.nii").save(f"{stem}.v2.nii.zarr", chunk=(5, 4, 3), zarr_format=2)
        tio.ScalarImage(f"{stem}.nii").save(f"{stem}.sh.nii.zarr", chunk=2, shard=4, levels=1)
        made[dtype] = {"stem": str(stem), "expected": expected_cijk(raw, slope, inter)}
    return made


OPENERS: dict[str, Callable[[str], BackendProtocol]] = {
    "nii": lambda stem: open_backend(f"{stem}.nii"),
    "gz-index": lambda stem: open_backend(
        f"{stem}.nii.gz", gz_access="index", gz_index_spacing=4096
    ),
    "gz-decode": lambda stem: open_backend(f"{stem}.nii.gz", gz_access="decode"),
    "zarr-v3": lambda stem: open_backend(f"{stem}.v3.nii.zarr"),
    "zarr-v2": lambda stem: open_backend(f"{stem}.v2.nii.zarr"),
    "zarr-sharded": lambda stem: open_backend(f"{stem}.sh.nii.zarr"),
}

OUT_DTYPES = [torch.float32, torch.float64, torch.int32, torch.int16, torch.float16, torch.uint8]


@st.composite
def boxes(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[slice, ...]:
    box = []
    for n in shape:
        start = draw(st.integers(0, n - 1))
        stop = draw(st.integers(start + 1, n))
        box.append(slice(start, stop, draw(st.sampled_from([1, 1, 2, 3]))))
    return tuple(box)


def padded_view(shape: tuple[int, ...], dtype: torch.dtype, layout: str) -> tuple[Any, Any]:
    """``(buffer, out)``: ``out`` of ``shape`` inside a larger buffer filled with a sentinel."""
    sentinel = 7
    if layout == "contiguous":
        buffer = torch.full(shape, sentinel, dtype=dtype)
        return buffer, buffer
    if layout == "padded":
        big = tuple(n + 3 for n in shape)
        buffer = torch.full(big, sentinel, dtype=dtype)
        return buffer, buffer[1 : 1 + shape[0], 2 : 2 + shape[1], : shape[2], 1 : 1 + shape[3]]
    # permuted: a (K, J, I, C) buffer seen as (C, I, J, K), padded too
    c, i, j, k = shape
    buffer = torch.full((k + 2, j + 1, i + 2, c + 1), sentinel, dtype=dtype)
    return buffer, buffer[1 : 1 + k, :j, 2 : 2 + i, :c].permute(3, 2, 1, 0)


@pytest.mark.parametrize("opener", sorted(OPENERS))
@pytest.mark.parametrize("stored", [">i2", "<u1", "<f4"])
def test_read_into_equals_numpy(files: dict[str, Any], opener: str, stored: str) -> None:
    backend = OPENERS[opener](files[stored]["stem"])
    expected = torch.from_numpy(files[stored]["expected"])
    assert backend.dtype == expected.dtype

    @SETTINGS
    @given(
        box=boxes(backend.shape),
        dtype=st.sampled_from(OUT_DTYPES),
        layout=st.sampled_from(["contiguous", "padded", "permuted"]),
    )
    def check(box: tuple[slice, ...], dtype: torch.dtype, layout: str) -> None:
        want = expected[box].to(dtype)
        buffer, out = padded_view(tuple(want.shape), dtype, layout)
        untouched = buffer.clone()
        backend.read_into(box, out)
        assert torch.equal(out, want)
        if layout != "contiguous":
            mask, inner = padded_view(tuple(want.shape), torch.bool, layout)  # all True
            inner.fill_(False)
            assert torch.equal(buffer[mask], untouched[mask])  # nothing written outside ``out``
        assert torch.equal(backend.read(box), expected[box])  # read = allocate + read_into

    check()
    whole = torch.empty(backend.shape, dtype=torch.float64)
    backend.read_into(None, whole)
    assert torch.equal(whole, expected.to(torch.float64))
    assert torch.equal(backend.read(None), expected)


@pytest.mark.parametrize("opener", ["nii", "gz-decode", "zarr-v3"])
def test_whole_read_lands_in_a_file_layout_buffer(files: dict[str, Any], opener: str) -> None:
    """A whole read into a buffer with the file's layout (what read(None) allocates)."""
    for stored in files:
        backend = OPENERS[opener](files[stored]["stem"])
        expected = torch.from_numpy(files[stored]["expected"])
        c, i, j, k = backend.shape
        out = torch.empty((c, k, j, i), dtype=backend.dtype).permute(0, 3, 2, 1)
        backend.read_into(None, out)
        assert torch.equal(out, expected)


def test_in_memory_backends_and_region_views(rng: np.random.Generator) -> None:
    volume = torch.from_numpy(rng.normal(size=(2, 9, 8, 7)).astype(np.float32))
    tensor = TensorBackend(volume)
    arraylike = ArrayLikeBackend(volume.numpy()[0], np.eye(4))  # 3-D array-like: one channel
    region = RegionBackend(tensor, (range(2), range(8, 0, -2), range(8), range(1, 7)))
    flipped = volume[:, 2:9:2].flip(1)[:, :, :, 1:7]
    for backend, values in [(tensor, volume), (arraylike, volume[:1]), (region, flipped)]:
        for box in [None, (slice(0, 1, 1), slice(1, 4, 2), slice(0, 8, 3), slice(2, 6, 1))]:
            want = values if box is None else values[box]
            _, out = padded_view(tuple(want.shape), torch.float64, "padded")
            backend.read_into(box, out)
            assert torch.equal(out, want.double())
    assert WindowBackend is RegionBackend


def test_read_into_refuses_the_wrong_shape(files: dict[str, Any]) -> None:
    backend = OPENERS["nii"](files[">i2"]["stem"])
    box = (slice(0, 2, 1), slice(0, 4, 1), slice(0, 4, 1), slice(0, 4, 1))
    with pytest.raises(ValueError, match=r"\.nii: read_into needs out of shape \(2, 4, 4, 4\)"):
        backend.read_into(box, torch.empty(2, 4, 4, 5))


def test_store_into_matches_torch_conversion() -> None:
    """The one conversion rule, on values where casts differ (negative floats to uint8,
    overflow to int16, rounding to float16)."""
    raw = np.array([[-3.7, 0.5, 250.9, 70000.2, -1e-3]], dtype=np.float32)
    for dtype in OUT_DTYPES:
        out = torch.empty(1, 5, dtype=dtype)
        store_into(raw, out)
        want = torch.from_numpy(raw).to(dtype)
        if dtype in (torch.uint8, torch.int16, torch.int32):  # out of range: only compare in range
            info = torch.iinfo(dtype)
            keep = (torch.from_numpy(raw) > info.min) & (torch.from_numpy(raw) < info.max)
            assert torch.equal(out[keep], want[keep])
        else:
            assert torch.equal(out, want)


# ---------------------------------------------------------------- the rest of the contract
def test_every_backend_declares_the_contract(files: dict[str, Any], tmp_path: Path) -> None:
    stem = files[">i2"]["stem"]
    nrrd = tmp_path / "x.nrrd"
    tio.ScalarImage(torch.rand(1, 5, 4, 3)).save(nrrd)
    cases = {
        "nii": (open_backend(f"{stem}.nii"), "proportional"),
        "gz": (open_backend(f"{stem}.nii.gz"), "stream"),
        "zarr": (open_backend(f"{stem}.v3.nii.zarr"), "proportional"),
        "sitk": (open_backend(str(nrrd)), "whole"),
        "tensor": (TensorBackend(torch.zeros(1, 2, 2, 2)), "proportional"),
    }
    for name, (backend, cost) in cases.items():
        assert isinstance(backend, BackendProtocol), name
        assert backend.region_cost == cost and cost in REGION_COSTS, name
        assert backend.nbytes == int(np.prod(backend.shape)) * backend.read(None).element_size()
        assert isinstance(backend.describe(), dict) and backend.describe()["format"], name
        key = backend.cache_key
        assert key is not None and hash(key) == hash(backend.cache_key), name
        backend.release()  # always callable; the backend still reads afterwards
        assert backend.read(None).shape == backend.shape
    region = RegionBackend(cases["gz"][0], (range(1), range(3), range(4), range(5)))
    assert region.region_cost == "stream"
    assert region.cache_key == (
        cases["gz"][0].cache_key,
        ((0, 1, 1), (0, 3, 1), (0, 4, 1), (0, 5, 1)),
    )


def test_cache_keys_change_with_the_values(tmp_path: Path) -> None:
    path = tmp_path / "a.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), path)
    backend = open_backend(str(path))
    before = backend.cache_key
    stat = os.stat(path)
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert backend.cache_key != before
    tensor = TensorBackend(torch.zeros(1, 2, 2, 2))
    key = tensor.cache_key
    tensor.tensor.add_(1)  # an in-place change bumps the version in the key
    assert tensor.cache_key != key


def test_third_party_backend_gets_the_contract_from_the_base_class() -> None:
    class Ones(Backend):
        shape = (1, 3, 3, 3)
        dtype = torch.float32
        affine = np.eye(4)

        def read(self, box: Any = None) -> torch.Tensor:
            return torch.ones(self.box_shape(box))

    backend = Ones()
    out = torch.zeros(1, 2, 3, 1, dtype=torch.float64)
    backend.read_into((slice(0, 1, 1), slice(0, 2, 1), slice(0, 3, 1), slice(1, 2, 1)), out)
    assert out.sum() == 6 and backend.region_cost == "proportional" and backend.cache_key is None
    backend.release()

    class Nothing(Backend):
        shape = (1, 1, 1, 1)
        dtype = torch.float32
        affine = np.eye(4)

    with pytest.raises(NotImplementedError, match="neither read nor read_into"):
        Nothing().read(None)


@pytest.mark.parametrize("seed", range(6))
def test_tiled_transposing_copy_equals_copyto(seed: int) -> None:
    """Big regions whose memory orders differ go through cache-sized tiles: same values."""
    from voxelflow.backends.base import copy_values

    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(17, 70, size=4))
    shape = (int(rng.integers(1, 4)), *shape[1:])
    src_order, dst_order = rng.permutation(4), rng.permutation(4)
    src = np.transpose(
        rng.normal(size=[shape[a] for a in src_order]).astype(rng.choice(["<f4", ">f8", "<i2"])),
        np.argsort(src_order),
    )[:, :: 2 if seed % 2 else 1]
    dst_buffer = np.zeros([src.shape[a] for a in dst_order], dtype=np.float32)
    dst = np.transpose(dst_buffer, np.argsort(dst_order))
    copy_values(dst, src)
    expected = np.empty(src.shape, dtype=np.float32)
    np.copyto(expected, src, casting="unsafe")
    np.testing.assert_array_equal(dst, expected)


def test_a_big_region_into_a_c_ordered_buffer(tmp_path: Path) -> None:
    raw = np.random.default_rng(5).normal(size=(70, 60, 50, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(raw, np.eye(4)), tmp_path / "big.nii")
    backend = open_backend(str(tmp_path / "big.nii"))
    box = (slice(0, 2, 1), slice(3, 67, 1), slice(1, 60, 2), slice(0, 49, 1))
    out = torch.zeros(backend.box_shape(box))
    backend.read_into(box, out)
    expected = np.moveaxis(raw, -1, 0)[box]
    np.testing.assert_array_equal(out.numpy(), expected)

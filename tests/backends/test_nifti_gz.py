"""Fast ``.nii.gz`` reads: every fast path equals nibabel's reader, the index is real,
persistent and never stale, workers work, and bad input fails clearly."""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import voxelflow as tio
from voxelflow._errors import VoxelflowValueError
from voxelflow.backends import apply_scaling, gzindex, scaled_dtype
from voxelflow.backends.nifti_gz import NiftiGzBackend
from voxelflow.backends.nifti_header import NiftiHeader

SPACING = 16 << 10  # small seek-point spacing so small files get many seek points


def smooth_volume(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """MRI-like: a noisy smooth blob on a zero background (compresses about 2-3×)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape[:3]], indexing="ij")
    blob = sum(g**2 for g in grids) < 0.8
    field = 100 * (1 + 0.3 * np.sin(4 * grids[0]) * np.cos(3 * grids[1]))
    data = np.where(blob, field, 0.0)
    if len(shape) == 4:
        data = np.stack([data * (c + 1) for c in range(shape[3])], axis=-1)
    return (data + rng.normal(0, 3, data.shape) * (data != 0)).astype(np.float32)


def write_gz(path: str, array: np.ndarray, *, slope: float = 1.0, inter: float = 0.0) -> str:
    image = nib.Nifti1Image(array, np.diag([1.0, 1.2, 1.5, 1.0]))
    if slope != 1.0 or inter != 0.0:
        image.header.set_slope_inter(slope, inter)
    nib.save(image, path)
    return path


@pytest.fixture(params=["float32-3d", "int16-scaled-3d", "float32-4d"])
def volume(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    kind = request.param
    if kind == "float32-3d":
        return write_gz(str(tmp_path / "f.nii.gz"), smooth_volume((72, 80, 96)))
    if kind == "int16-scaled-3d":
        data = (smooth_volume((64, 72, 90), seed=1) * 50).astype(np.int16)
        return write_gz(str(tmp_path / "s.nii.gz"), data, slope=0.37, inter=-12.5)
    return write_gz(str(tmp_path / "c.nii.gz"), smooth_volume((40, 48, 56, 3), seed=2))


def nibabel_region(path: str, box: tuple[slice, ...] | None) -> np.ndarray:
    """nibabel's stored values of ``box``, scaled as voxelflow scales, as (C, I, J, K).

    (nibabel's own scaled proxy computes in float64; voxelflow scales in the
    image's float32 on every path, so the oracle is nibabel's unscaled read.)
    """
    proxy = nib.load(path).dataobj
    raw = np.asarray(proxy.get_unscaled())
    raw = raw if raw.ndim == 4 else raw[..., None]
    if box is not None:
        channels, i, j, k = box
        raw = raw[i, j, k, channels]
    scaled = apply_scaling(
        raw, proxy.slope, proxy.inter, scaled_dtype(raw.dtype, proxy.slope, proxy.inter)
    )
    nibabel_scaled = raw * proxy.slope + proxy.inter
    np.testing.assert_allclose(scaled, nibabel_scaled, rtol=1e-6)
    return np.moveaxis(scaled, -1, 0)


def random_boxes(shape: tuple[int, int, int, int], count: int, seed: int) -> list[tuple]:
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(count):
        box = []
        for n in shape:
            start = int(rng.integers(0, n))
            stop = int(rng.integers(start + 1, n + 1))
            box.append(slice(start, stop, int(rng.choice([1, 1, 2, 3]))))
        boxes.append(tuple(box))
    return boxes


@pytest.fixture
def no_fast_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rapidgzip", None)  # makes `import rapidgzip` fail
    monkeypatch.setitem(sys.modules, "isal.igzip", None)


# ---------------------------------------------------------------- equivalence
@pytest.mark.parametrize("access", ["index", "decode", "auto"])
def test_every_path_equals_nibabel(volume: str, access: str) -> None:
    backend = NiftiGzBackend(volume, gz_access=access, gz_index_spacing=SPACING)  # type: ignore[arg-type]
    for box in random_boxes(backend.shape, 12, seed=hash(access) % 1000):
        got = backend.read(box)
        expected = nibabel_region(volume, box)
        assert got.dtype == backend.dtype
        np.testing.assert_array_equal(got.numpy(), expected)
    np.testing.assert_array_equal(backend.read(None).numpy(), nibabel_region(volume, None))


def test_fallback_without_packages_gives_the_same_values(volume: str, no_fast_packages) -> None:  # type: ignore[no-untyped-def]
    assert gzindex.rapidgzip_module() is None and gzindex.igzip_module() is None
    slow = NiftiGzBackend(volume)
    assert slow.describe()["gzip access"] == "nibabel (fallback)"
    boxes = random_boxes(slow.shape, 6, seed=3)
    slow_reads = [slow.read(box) for box in boxes] + [slow.read(None)]
    assert slow._decoded is None and slow._reader is None
    sys.modules.pop("rapidgzip")
    sys.modules.pop("isal.igzip")
    fast = NiftiGzBackend(volume, gz_access="index", gz_index_spacing=SPACING)
    for box, expected in zip(boxes + [None], slow_reads, strict=True):
        assert torch.equal(fast.read(box), expected)
    assert fast._reader is not None


def test_isal_alone_still_decodes(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    path = write_gz(str(tmp_path / "a.nii.gz"), smooth_volume((30, 31, 32)))
    monkeypatch.setitem(sys.modules, "rapidgzip", None)
    backend = NiftiGzBackend(path)  # auto: small volume, decoded once with ISA-L
    box = (slice(0, 1, 1), slice(3, 20, 1), slice(0, 31, 2), slice(5, 6, 1))
    assert torch.equal(backend.read(box), torch.from_numpy(nibabel_region(path, box)))
    assert backend._decoded is not None


# ---------------------------------------------------------------- the index is real
def test_region_reads_do_not_inflate_from_the_start(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Damage the start of the stream (keeping size and mtime): an indexed read near the
    end still works, which it could not if it inflated from the start."""
    path = write_gz(str(tmp_path / "v.nii.gz"), smooth_volume((96, 96, 120)))
    backend = NiftiGzBackend(path, gz_access="index", gz_index_spacing=SPACING)
    box = (slice(0, 1, 1), slice(10, 40, 1), slice(20, 50, 1), slice(100, 118, 1))
    expected = backend.read(box).clone()
    file = backend._reader._handle()  # type: ignore[union-attr]
    assert len(file.block_offsets()) > 8, "the index should hold many seek points"
    stat = os.stat(path)
    with open(path, "r+b") as handle:
        handle.seek(4096)
        handle.write(os.urandom(8192))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    backend._reader.close()  # type: ignore[union-attr]  # a fresh decoder on the damaged file
    assert torch.equal(backend.read(box), expected)
    with pytest.raises(VoxelflowValueError, match="v.nii.gz"):
        NiftiGzBackend(path).read(None)  # a whole read does see the damage


def test_index_is_stored_beside_the_file_and_reused(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = write_gz(str(tmp_path / "v.nii.gz"), smooth_volume((50, 60, 70)))
    first = NiftiGzBackend(path, gz_access="index", gz_index_spacing=SPACING)
    box = (slice(0, 1, 1), slice(5, 25, 1), slice(5, 25, 1), slice(50, 60, 1))
    expected = first.read(box)
    assert first.index_location == path + ".gzidx" and os.path.exists(path + ".gzidx")

    def no_build(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the stored index should have been reused")

    monkeypatch.setattr(gzindex, "build_index", no_build)
    second = NiftiGzBackend(path, gz_access="index")
    assert torch.equal(second.read(box), expected)
    assert second._index is not None and not second._index.built


def test_index_goes_to_the_cache_dir_when_the_directory_is_read_only(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "readonly"
    data_dir.mkdir()
    path = write_gz(str(data_dir / "v.nii.gz"), smooth_volume((40, 40, 40)))
    cache = tmp_path / "cache"
    monkeypatch.setenv("VOXELFLOW_CACHE_DIR", str(cache))
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if str(p) == str(data_dir) else real_access(p, mode)
    )
    backend = NiftiGzBackend(path, gz_access="index", gz_index_spacing=SPACING)
    backend.read((slice(0, 1, 1), slice(0, 5, 1), slice(0, 5, 1), slice(30, 35, 1)))
    assert backend.index_location is not None
    assert backend.index_location.startswith(str(cache))
    assert not os.path.exists(path + ".gzidx")
    assert gzindex.load_index(path) is not None


def test_changed_file_rebuilds_the_index(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "v.nii.gz")
    write_gz(path, smooth_volume((48, 50, 52), seed=0))
    box = (slice(0, 1, 1), slice(10, 30, 1), slice(10, 30, 1), slice(30, 50, 1))
    old = NiftiGzBackend(path, gz_access="index", gz_index_spacing=SPACING)
    old.read(box)
    assert old._index is not None and old._index.built

    os.utime(path)  # touched only: same bytes, new mtime → not trusted, rebuilt
    touched = NiftiGzBackend(path, gz_access="index", gz_index_spacing=SPACING)
    touched.read(box)
    assert touched._index is not None and touched._index.built

    write_gz(path, smooth_volume((48, 50, 52), seed=7))  # new contents, same shape
    fresh = NiftiGzBackend(path, gz_access="index", gz_index_spacing=SPACING)
    got = fresh.read(box)
    assert fresh._index is not None and fresh._index.built
    assert torch.equal(got, torch.from_numpy(nibabel_region(path, box)))
    # A backend opened before the change notices it (size/mtime) and rebuilds too.
    assert torch.equal(old.read(box), got)


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_corrupt_index_is_rebuilt(tmp_path, damage: str) -> None:  # type: ignore[no-untyped-def]
    path = write_gz(str(tmp_path / "v.nii.gz"), smooth_volume((48, 50, 52)))
    box = (slice(0, 1, 1), slice(3, 40, 2), slice(10, 30, 1), slice(40, 50, 1))
    NiftiGzBackend(path, gz_access="index", gz_index_spacing=SPACING).read(box)
    index_file = path + ".gzidx"
    blob = bytearray(Path(index_file).read_bytes())
    if damage == "flip":
        blob[-10] ^= 0xFF
    elif damage == "truncate":
        blob = blob[: len(blob) // 2]
    else:
        blob = bytearray(os.urandom(len(blob)))
    Path(index_file).write_bytes(bytes(blob))
    assert gzindex.load_index(path) is None
    backend = NiftiGzBackend(path, gz_access="index", gz_index_spacing=SPACING)
    assert torch.equal(backend.read(box), torch.from_numpy(nibabel_region(path, box)))
    assert backend._index is not None and backend._index.built
    assert gzindex.load_index(path) is not None  # the rebuilt one was stored


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("access", ["index", "decode"])
def test_truncated_file_is_a_clear_error(tmp_path, access: str) -> None:  # type: ignore[no-untyped-def]
    good = write_gz(str(tmp_path / "good.nii.gz"), smooth_volume((48, 50, 52)))
    blob = Path(good).read_bytes()
    for name, cut in [("half.nii.gz", len(blob) // 2), ("trailer.nii.gz", len(blob) - 4)]:
        path = str(tmp_path / name)
        Path(path).write_bytes(blob[:cut])
        # (nibabel itself may refuse the header of a cut file; bypass it to test our reads)
        header = dataclasses.replace(NiftiHeader.read(good), path=path, data_path=path)
        backend = NiftiGzBackend(path, header, gz_access=access, gz_index_spacing=SPACING)  # type: ignore[arg-type]
        box = (slice(0, 1, 1), slice(0, 4, 1), slice(0, 4, 1), slice(0, 4, 1))
        with pytest.raises(VoxelflowValueError, match=f"{name}.*truncated or corrupt"):
            backend.read(box)
        with pytest.raises(VoxelflowValueError, match=name):
            backend.read(None)
        assert not os.path.exists(path + ".gzidx")


def test_corrupt_stream_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = write_gz(str(tmp_path / "bad.nii.gz"), smooth_volume((48, 50, 52)))
    header = NiftiHeader.read(path)  # (nibabel may refuse the header once the stream is bad)
    blob = bytearray(Path(path).read_bytes())
    middle = len(blob) // 2
    blob[middle : middle + 64] = bytes(b ^ 0x5A for b in blob[middle : middle + 64])
    Path(path).write_bytes(bytes(blob))
    for access in ("index", "decode"):
        backend = NiftiGzBackend(path, header, gz_access=access, gz_index_spacing=SPACING)  # type: ignore[arg-type]
        with pytest.raises(VoxelflowValueError, match="bad.nii.gz.*re-copy"):
            backend.read((slice(0, 1, 1), slice(0, 4, 1), slice(0, 4, 1), slice(0, 4, 1)))
    assert not os.path.exists(path + ".gzidx")


def test_options_are_validated(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = write_gz(str(tmp_path / "v.nii.gz"), smooth_volume((8, 8, 8)))
    with pytest.raises(VoxelflowValueError, match="Did you mean 'index'"):
        NiftiGzBackend(path, gz_access="indx")  # type: ignore[arg-type]
    with pytest.raises(VoxelflowValueError, match="gz_threads"):
        NiftiGzBackend(path, gz_threads=0)


# ---------------------------------------------------------------- policy and memory
def test_auto_switches_to_one_decode_after_enough_reads(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = write_gz(str(tmp_path / "v.nii.gz"), smooth_volume((64, 64, 64)))
    monkeypatch.setattr(gzindex, "SMALL_VOLUME", 0)  # treat it as huge
    image = tio.ScalarImage(path, backend_options={"gz_index_spacing": SPACING})
    backend = image.dataobj
    reference = nibabel_region(path, None)
    seen_index = False
    for box in random_boxes(backend.shape, 30, seed=5):
        np.testing.assert_array_equal(image.dataobj.read(box).numpy(), reference[box])
        seen_index |= backend._reader is not None and backend._decoded is None
        if backend._decoded is not None:
            break
    assert seen_index and backend._decoded is not None
    image.unload()  # releases the decoded copy
    assert backend._decoded is None and backend._inflated == 0


def test_decode_cache_respects_its_budget_and_pickling(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    paths = [
        write_gz(str(tmp_path / f"{n}.nii.gz"), smooth_volume((40, 40, 40), n)) for n in (0, 1)
    ]
    nbytes = 40 * 40 * 40 * 4
    monkeypatch.setenv("VOXELFLOW_GZ_CACHE_BYTES", str(int(nbytes * 1.5)))
    a, b = (NiftiGzBackend(p) for p in paths)
    box = (slice(0, 1, 1), slice(0, 10, 1), slice(0, 10, 1), slice(0, 10, 1))
    a.read(box)
    assert a._decoded is not None
    b.read(box)  # the budget holds one volume: a's is dropped
    assert b._decoded is not None and a._decoded is None
    clone = pickle.loads(pickle.dumps(b))
    assert clone._decoded is None and torch.equal(clone.read(box), b.read(box))
    assert len(pickle.dumps(b)) < nbytes // 4


# ---------------------------------------------------------------- worker processes
class RegionDataset(torch.utils.data.Dataset):
    def __init__(self, image: tio.ScalarImage, boxes: list[tuple]) -> None:
        self.image = image
        self.boxes = boxes

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, n: int) -> torch.Tensor:
        return self.image.dataobj.read(self.boxes[n]).clone()


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers(tmp_path, context: str) -> None:  # type: ignore[no-untyped-def]
    path = write_gz(str(tmp_path / "v.nii.gz"), smooth_volume((48, 56, 64)))
    image = tio.ScalarImage(
        path, backend_options={"gz_access": "index", "gz_index_spacing": SPACING}
    )
    size = (slice(0, 1, 1),)
    boxes = [size + tuple(slice(s, s + 8, 1) for s in (n, 2 * n, 3 * n)) for n in range(12)]
    expected = [torch.from_numpy(nibabel_region(path, box)) for box in boxes]
    assert torch.equal(image.dataobj.read(boxes[0]), expected[0])  # the parent used its decoder
    assert image.dataobj._reader._file is not None  # type: ignore[attr-defined]
    loader = torch.utils.data.DataLoader(
        RegionDataset(image, boxes),
        batch_size=None,
        num_workers=2,
        multiprocessing_context=context,
        timeout=60,
    )
    got = list(loader)
    assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))
    assert torch.equal(image.dataobj.read(boxes[-1]), expected[-1])  # parent still works


# ---------------------------------------------------------------- command line
def test_index_command(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from voxelflow.cli import app

    path = write_gz(str(tmp_path / "v.nii.gz"), smooth_volume((40, 40, 40)))
    runner = CliRunner()
    result = runner.invoke(app, ["index", path, "--spacing", str(SPACING)])
    assert result.exit_code == 0, result.output
    assert "index built" in result.output and os.path.exists(path + ".gzidx")
    result = runner.invoke(app, ["index", path])
    assert result.exit_code == 0 and "up to date" in result.output
    result = runner.invoke(app, ["index", str(tmp_path / "missing.nii.gz")])
    assert result.exit_code == 1 and "missing.nii.gz" in result.output


# ---------------------------------------------------------------- hardening
def _same_size_variant(raw: bytes, seed: int = 0) -> tuple[bytes, bytes]:
    """Two multi-member gzip streams of one NIfTI file's bytes and of a variant whose middle
    third differs in a few bits, of identical compressed size and identical first and last
    members (so the first and last 64 KiB, the size and the time can all match)."""
    rng = np.random.default_rng(seed)
    third = len(raw) // 3
    head, middle, tail = raw[:third], raw[third : 2 * third], raw[2 * third :]
    first, last = gzip.compress(head, 6, mtime=0), gzip.compress(tail, 6, mtime=0)
    size = len(gzip.compress(middle, 6, mtime=0))
    for _ in range(10_000):
        changed = bytearray(middle)
        for position in rng.integers(0, len(changed), 4):
            changed[position] ^= 1
        other = gzip.compress(bytes(changed), 6, mtime=0)
        if len(other) == size:
            return (
                first + gzip.compress(middle, 6, mtime=0) + last,
                first + other + last,
            )
    raise AssertionError("no same-size variant found")


def test_file_replaced_with_same_size_and_time_gets_a_fresh_index(tmp_path: Path) -> None:
    """The stored index matches the file's size, time and ends, but not the data it seeks
    into: it is not used; a new process reads the new values (never 'corrupt')."""
    volume = smooth_volume((64, 64, 64), seed=4)
    original, replaced = _same_size_variant(nib.Nifti1Image(volume, np.eye(4)).to_bytes())
    path = tmp_path / "v.nii.gz"
    path.write_bytes(original)
    box = (slice(0, 1, 1), slice(0, 64, 1), slice(0, 64, 1), slice(20, 44, 1))  # the middle
    first = NiftiGzBackend(str(path), gz_access="index", gz_index_spacing=SPACING)
    np.testing.assert_array_equal(first.read(box).numpy(), nibabel_region(str(path), box))
    stat = os.stat(path)
    path.write_bytes(replaced)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(path).st_size == stat.st_size
    fresh = NiftiGzBackend(str(path), gz_access="index", gz_index_spacing=SPACING)
    got = fresh.read(box).numpy()
    np.testing.assert_array_equal(got, nibabel_region(str(path), box))
    assert fresh.index is not None and fresh.index.built  # rebuilt, not trusted
    # The backend opened before the change sees its index fail, rebuilds it once, reads on.
    np.testing.assert_array_equal(first.read(box).numpy(), got)


def test_an_indexed_read_that_fails_rebuilds_the_index_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_gz(str(tmp_path / "v.nii.gz"), smooth_volume((40, 40, 40)))
    NiftiGzBackend(path, gz_access="index", gz_index_spacing=SPACING).build_index()  # stored
    box = (slice(0, 1, 1), slice(3, 30, 1), slice(5, 9, 1), slice(30, 38, 1))
    original = gzindex.IndexedReader.read_into
    failures = {"left": 1}

    def stale_once(self, offset, out):  # type: ignore[no-untyped-def]
        if failures["left"]:
            failures["left"] -= 1
            hint = gzindex.reader.REBUILD_HINT + self.path  # as the real reader says it
            raise gzindex.corrupt_error(self.path, "seek point does not fit", hint)
        return original(self, offset, out)

    monkeypatch.setattr(gzindex.IndexedReader, "read_into", stale_once)
    backend = NiftiGzBackend(path, gz_access="index", gz_index_spacing=SPACING)
    np.testing.assert_array_equal(backend.read(box).numpy(), nibabel_region(path, box))
    assert backend.index is not None and backend.index.built and failures["left"] == 0
    failures["left"] = 2  # fails again after the rebuild: a real error, naming the remedy
    other = NiftiGzBackend(path, gz_access="index", gz_index_spacing=SPACING)
    with pytest.raises(VoxelflowValueError, match=r"v\.nii\.gz: .*voxelflow index --force"):
        other.read(box)
    assert failures["left"] == 0  # it was retried once, after one rebuild


def _bomb(path: Path, image_bytes: int, zeros: int) -> Path:
    """A ``.nii.gz`` of a small image followed by ``zeros`` bytes of zeros, written as
    concatenated gzip members (a few MiB on disk, never the zeros themselves)."""
    side = round((image_bytes // 4) ** (1 / 3))
    image = nib.Nifti1Image(np.ones((side, side, side), np.float32), np.eye(4)).to_bytes()
    piece = 64 << 20
    member = gzip.compress(bytes(piece), 9, mtime=0)
    with open(path, "wb") as file:
        file.write(gzip.compress(image, 6, mtime=0))
        for _ in range(zeros // piece):
            file.write(member)
    return path


@pytest.mark.timeout(120)
@pytest.mark.parametrize("read", ["whole", "index", "decode"])
def test_decompression_bomb_stops_at_the_declared_image(tmp_path: Path, read: str) -> None:
    """1 MiB of image and 8 GiB of zeros: reading inflates at most a few MiB past the image
    (memory and time stay flat) and refuses the file, naming it."""
    import resource
    import subprocess

    path = _bomb(tmp_path / "bomb.nii.gz", 1 << 20, 8 << 30)
    assert path.stat().st_size < 16 << 20
    script = f"""
import resource, sys, time, voxelflow as tio
image = tio.ScalarImage(sys.argv[1], backend_options={{"gz_access": "{"index" if read == "index" else "decode"}"}})
start = time.perf_counter()
try:
    image.data if "{read}" == "whole" else image.dataobj[:, :4, :4, :4]
except tio.VoxelflowValueError as error:
    print("refused:", error)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
print(f"peak_mib={{peak}} seconds={{time.perf_counter() - start:.1f}}")
"""
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=110
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "bomb.nii.gz: the gzip stream holds more than" in result.stdout, result.stdout
    assert "decompression bomb" in result.stdout
    peak = int(result.stdout.split("peak_mib=")[1].split()[0])
    assert peak < 1024, result.stdout  # was 2.3 GiB while building the index
    del resource

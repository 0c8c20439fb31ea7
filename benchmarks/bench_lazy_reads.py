"""Lazy reads of a large volume: voxelflow beside plain nibabel and a raw NumPy memmap.

Makes a float32 volume of ``--size`` voxels (default 640³ = 1.05 GB) as ``.nii``,
written slab by slab through a memory map so it is never held whole, and a
smaller ``.nii.gz`` (``--gz-size``, default 384³ = 216 MiB; compressing 1 GiB with gzip
takes minutes on this machine). Then prints:

* the time to open a file and read its shape;
* the median time of random 10³ and 64³ region reads (``--repeats`` each, the
  readers taking turns on each region), for voxelflow (``image.dataobj[...]``, a new
  tensor per read, and ``read_into`` a caller-owned padded buffer), nibabel
  (``nib.load(p).dataobj[...]``) and, for ``.nii``, a NumPy memmap of the same bytes
  (``np.array(mm[...])``);
* one full load (voxelflow ``.data``, nibabel ``get_fdata(dtype=float32)``);
* the peak memory (RSS) of fresh processes that read 200 random 64³ regions,
  or the whole volume, beside the volume's size.

Figures are warm-cache: the files were just written, and dropping the page cache
needs root. Run: ``.venv/bin/python benchmarks/bench_lazy_reads.py [--quick]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

SLAB_BYTES = 64 * 2**20  # write ~64 MiB at a time


# ------------------------------------------------------------------ volumes
def _header(shape: tuple[int, int, int]) -> nib.Nifti1Header:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header.set_sform(np.diag([0.5, 0.5, 0.5, 1.0]), code=1)
    header.set_qform(np.diag([0.5, 0.5, 0.5, 1.0]), code=1)
    header.set_xyzt_units("mm", "sec")
    header["vox_offset"] = 352
    return header


def _slabs(shape: tuple[int, int, int]) -> Any:
    """(k0, k1, float32 slab (I, J, k1-k0)) of a deterministic, realistic-ish volume."""
    i, j, k = shape
    per = max(1, SLAB_BYTES // (i * j * 4))
    rng = np.random.default_rng(0)
    ii = np.arange(i, dtype=np.float32)[:, None, None]
    jj = np.arange(j, dtype=np.float32)[None, :, None]
    for k0 in range(0, k, per):
        k1 = min(k, k0 + per)
        kk = np.arange(k0, k1, dtype=np.float32)[None, None, :]
        smooth = 500 + 200 * np.sin(ii / 37) * np.cos(jj / 23) + kk
        noise = rng.integers(0, 64, size=(i, j, k1 - k0), dtype=np.int16)
        yield k0, k1, np.round(smooth + noise).astype(np.float32)


def make_nii(path: Path, shape: tuple[int, int, int]) -> None:
    """Header, then the voxels through a memory map, one slab of K planes at a time."""
    with open(path, "wb") as file:
        _header(shape).write_to(file)
        file.write(b"\0" * (352 - file.tell()))
    nbytes = int(np.prod(shape)) * 4
    with open(path, "r+b") as file:
        file.truncate(352 + nbytes)
    mapped = np.memmap(path, dtype=np.float32, mode="r+", offset=352, shape=shape, order="F")
    for k0, k1, slab in _slabs(shape):
        mapped[:, :, k0:k1] = slab
    mapped.flush()
    del mapped


def make_nii_gz(path: Path, shape: tuple[int, int, int]) -> None:
    """Header and voxels streamed into gzip (level 6, as nibabel writes), slab by slab."""
    with gzip.open(path, "wb", compresslevel=6) as stream:
        _header(shape).write_to(stream)
        stream.write(b"\0" * (352 - 348))
        for _, _, slab in _slabs(shape):
            stream.write(slab.tobytes(order="F"))


def ensure(path: Path, shape: tuple[int, int, int], make: Callable[..., None]) -> float:
    """Make ``path`` unless a file of that shape exists; returns seconds spent writing."""
    if path.exists():
        try:
            if nib.load(path).shape == shape:
                return 0.0
        except Exception:  # noqa: S110 (an unreadable leftover: rewrite it)
            pass
    start = time.perf_counter()
    tmp = path.with_name("tmp-" + path.name)
    make(tmp, shape)
    tmp.rename(path)
    return time.perf_counter() - start


# ------------------------------------------------------------------ timing
def warm_page_cache(path: Path) -> float:
    """Read the file once (64 MiB at a time) so every tool starts from the page cache."""
    start = time.perf_counter()
    buffer = bytearray(SLAB_BYTES)
    with open(path, "rb", buffering=0) as file:
        while file.readinto(buffer):
            pass
    return time.perf_counter() - start


def corners(shape: tuple[int, ...], edge: int, count: int, seed: int) -> list[tuple[int, ...]]:
    rng = np.random.default_rng(seed)
    return [tuple(int(rng.integers(0, n - edge + 1)) for n in shape) for _ in range(count)]


def median_time(read: Callable[[tuple[int, ...]], Any], points: list[tuple[int, ...]]) -> float:
    times = []
    for point in points:
        start = time.perf_counter()
        read(point)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(
    readers: dict[str, Callable[[tuple[int, ...]], Any]], points: list[tuple[int, ...]]
) -> dict[str, float]:
    """Median time of each reader, the readers taking turns on every point (rotating who
    goes first), so that machine load and page cache hit them alike."""
    names = list(readers)
    times: dict[str, list[float]] = {name: [] for name in names}
    for n, point in enumerate(points):
        for name in names[n % len(names) :] + names[: n % len(names)]:
            start = time.perf_counter()
            readers[name](point)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def region_readers(path: Path, edge: int) -> dict[str, Callable[[tuple[int, ...]], Any]]:
    import voxelflow as tio

    image = tio.ScalarImage(path)
    proxy = nib.load(path).dataobj

    def vf(p: tuple[int, ...]) -> Any:
        i, j, k = p
        return image.dataobj[:, i : i + edge, j : j + edge, k : k + edge]

    # read_into: one caller-owned buffer (with a 2-voxel margin, as a padded patch has),
    # filled in place on every read: no allocation per read.
    buffer = torch.zeros((1, edge + 4, edge + 4, edge + 4), dtype=image.dataobj.dtype)
    inner = buffer[:, 2 : 2 + edge, 2 : 2 + edge, 2 : 2 + edge]

    def vf_into(p: tuple[int, ...]) -> Any:
        i, j, k = p
        box = (slice(0, 1, 1), slice(i, i + edge, 1), slice(j, j + edge, 1), slice(k, k + edge, 1))
        image.dataobj.read_into(box, inner)
        return inner

    def nb(p: tuple[int, ...]) -> Any:
        i, j, k = p
        return proxy[i : i + edge, j : j + edge, k : k + edge]

    readers = {"voxelflow": vf, "voxelflow read_into": vf_into, "nibabel": nb}
    if not str(path).endswith(".gz"):
        shape = nib.load(path).shape
        mm = np.memmap(path, dtype=np.float32, mode="r", offset=352, shape=shape, order="F")

        def raw(p: tuple[int, ...]) -> Any:
            i, j, k = p
            return np.array(mm[i : i + edge, j : j + edge, k : k + edge])

        readers["numpy memmap"] = raw
    return readers


def check_equal(path: Path, shape: tuple[int, ...]) -> None:
    """voxelflow, nibabel and the memmap agree on a few regions (a benchmark that lies is worse than none)."""
    for edge in (10, 64):
        readers = region_readers(path, edge)
        for point in corners(shape, edge, 3, seed=99):
            values = [np.asarray(r(point)).reshape(edge, edge, edge) for r in readers.values()]
            for other in values[1:]:
                np.testing.assert_array_equal(values[0], other)


# ------------------------------------------------------------------ memory
def child(mode: str, path: str, count: int, edge: int) -> None:
    """Run in a fresh process: do ``mode``, print peak and final memory as JSON."""
    import voxelflow as tio

    def status() -> dict[str, int]:
        fields = {}
        with open("/proc/self/status") as file:
            for line in file:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    fields[name] = int(value.split()[0]) * 1024
        return fields

    # Reset the peak (VmHWM) so that it measures the work, not the imports (Linux >= 4.0).
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
        reset = True
    except OSError:
        reset = False
    before = status()
    start = time.perf_counter()
    if mode == "voxelflow-regions":
        image = tio.ScalarImage(path)
        for i, j, k in corners(image.spatial_shape, edge, count, seed=1):
            region = image.dataobj[:, i : i + edge, j : j + edge, k : k + edge]
            del region
    elif mode == "nibabel-regions":
        proxy = nib.load(path).dataobj
        for i, j, k in corners(proxy.shape, edge, count, seed=1):
            region = proxy[i : i + edge, j : j + edge, k : k + edge]
            del region
    elif mode == "voxelflow-full":
        tio.ScalarImage(path).data  # noqa: B018
    elif mode == "nibabel-full":  # mmap=False: a real read (else float32 comes back as a memmap)
        nib.load(path, mmap=False).get_fdata(dtype=np.float32)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    elapsed = time.perf_counter() - start
    after = status()
    peak = after["VmHWM"] if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"before": before, "after": after, "peak": peak, "seconds": elapsed}))


def measure_memory(mode: str, path: Path, count: int, edge: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", mode, str(path), str(count), str(edge)]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ report
def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(
        c.ljust(w) if n == 0 else c.rjust(w)
        for n, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[n]) for r in [header, *rows]) for n in range(len(header))]
    print(f"\n{title}")
    print(row(header, widths))
    print(row(["-" * w for w in widths], widths))
    for r in rows:
        print(row(r, widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size",
        type=int,
        nargs=3,
        default=(640, 640, 640),
        metavar=("I", "J", "K"),
        help="shape of the .nii volume (default 640 640 640: 1.05 GB float32)",
    )
    parser.add_argument(
        "--gz-size",
        type=int,
        nargs=3,
        default=(384, 384, 384),
        metavar=("I", "J", "K"),
        help="shape of the .nii.gz volume (default 384³ = 216 MiB: gzip of 1 GiB takes minutes)",
    )
    parser.add_argument("--repeats", type=int, default=30, help="region reads per size and tool")
    parser.add_argument(
        "--regions", type=int, default=200, help="64³ regions read by the memory probe"
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/issue2"), help="scratch directory")
    parser.add_argument("--keep", action="store_true", help="keep the volumes for a later run")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 256³ .nii, 128³ .nii.gz, 10 repeats, 50 regions",
    )
    args = parser.parse_args()
    if args.quick:
        args.size, args.gz_size, args.repeats, args.regions = (256,) * 3, (128,) * 3, 10, 50
    if args.child:
        mode, path, count, edge = args.child
        child(mode, path, int(count), int(edge))
        return

    args.out.mkdir(parents=True, exist_ok=True)
    nii = args.out / "bench_volume.nii"
    gz = args.out / "bench_volume.nii.gz"
    volumes = {nii: tuple(args.size), gz: tuple(args.gz_size)}
    print(
        f"python {sys.version.split()[0]}, nibabel {nib.__version__}, numpy {np.__version__}, "
        f"{os.cpu_count()} cores; warm page cache (files just written; dropping it needs root)"
    )
    for path, shape in volumes.items():
        seconds = ensure(path, shape, make_nii_gz if path.suffix == ".gz" else make_nii)
        size = int(np.prod(shape)) * 4
        made = f"written in {seconds:.1f} s" if seconds else "reused"
        warm = warm_page_cache(path)
        print(
            f"{path.name}: {'×'.join(map(str, shape))} float32 = {mib(size)} of voxels, "
            f"{mib(path.stat().st_size)} on disk ({made}; page cache warmed in {warm:.1f} s)"
        )
    if tuple(args.gz_size) != tuple(args.size):
        print("note: the .nii.gz volume is smaller than the .nii one (see --gz-size)")

    import voxelflow as tio

    # Open and read the shape.
    rows = []
    for path in volumes:
        vf = median_time(lambda _, p=path: tio.ScalarImage(p).shape, [()] * args.repeats)
        nb = median_time(lambda _, p=path: nib.load(p).shape, [()] * args.repeats)
        rows.append([path.name, ms(vf), ms(nb), f"{nb / vf:.1f}×"])
    table("Open + shape (median)", ["file", "voxelflow", "nibabel", "nibabel / voxelflow"], rows)

    # Random region reads.
    rows = []
    for path, shape in volumes.items():
        check_equal(path, shape)
        for edge in (10, 64):
            points = corners(shape, edge, args.repeats + 1, seed=edge)
            start = time.perf_counter()
            readers = region_readers(path, edge)
            first = {}
            for name, reader in readers.items():  # open, map, build indexes: the first read
                start = time.perf_counter()
                reader(points[0])
                first[name] = time.perf_counter() - start
            times = interleaved_medians(readers, points[1:])
            base = times["voxelflow"]
            cells = [
                f"{ms(t)} ({t / base:.2f}×)" if name != "voxelflow" else ms(t)
                for name, t in times.items()
            ]
            if len(cells) == 3:
                cells.append("n/a")
            rows.append(
                [path.name, f"{edge}³", *cells, ms(first["voxelflow"]), ms(first["nibabel"])]
            )
    table(
        f"Random region reads, median of {args.repeats} (in brackets: time relative to voxelflow); "
        "first read of a freshly opened image apart",
        [
            "file",
            "region",
            "voxelflow read",
            "read_into",
            "nibabel",
            "numpy memmap",
            "1st voxelflow",
            "1st nibabel",
        ],
        rows,
    )

    # Memory: fresh processes.
    rows = []
    for path, shape in volumes.items():
        size = int(np.prod(shape)) * 4
        for mode in ("voxelflow-regions", "nibabel-regions", "voxelflow-full", "nibabel-full"):
            what = f"{args.regions} × 64³" if mode.endswith("regions") else "whole volume"
            result = measure_memory(mode, path, args.regions, 64)
            grown = result["peak"] - result["before"]["VmRSS"]
            rows.append(
                [
                    path.name,
                    mode.split("-")[0],
                    what,
                    ms(result["seconds"]),
                    mib(result["peak"]),
                    mib(grown),
                    f"{grown / size:.1%}",
                    mib(result["after"]["RssFile"]),
                    mib(result["after"]["RssAnon"]),
                    mib(size),
                ]
            )
    table(
        "Peak memory of a fresh process (RSS high-water mark reset after imports; 'growth' = peak - RSS after imports)",
        [
            "file",
            "tool",
            "reads",
            "time",
            "peak RSS",
            "growth",
            "growth/volume",
            "file-backed at end",
            "anonymous at end",
            "volume",
        ],
        rows,
    )

    if not args.keep:
        for path in volumes:
            path.unlink(missing_ok=True)
        print(f"\nremoved the volumes from {args.out} (pass --keep to reuse them)")


if __name__ == "__main__":
    main()

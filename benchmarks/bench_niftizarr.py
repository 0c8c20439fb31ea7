"""NIfTI-Zarr: region reads, open time, conversion throughput and peak memory.

Prints, from one run on this machine:

* median time per 64³ region read (random, unaligned: 8 chunks of 64³ each) from a
  ``.nii.zarr`` through voxelflow, beside the reference ``niizarr.zarr2nii`` (dask),
  a raw zarr-python read of the same chunks, and the ``.nii`` memory-map floor;
* time to open (metadata only) for voxelflow and niizarr;
* conversion ``.nii`` → ``.nii.zarr`` (64³ chunks, pyramid) throughput and the
  conversion process's peak RSS, beside the naive way (load the volume, write it).

Region reads go through ``image.dataobj[...]`` (a new tensor) and ``read_into`` (a
caller-owned padded buffer); all readers take turns on every region.

Usage: ``python benchmarks/bench_niftizarr.py [--quick] [--size-gib 1.0] [--folder /tmp/bench]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

CHILD = r"""
import json, sys, time
import numpy as np


def status(field):  # from /proc/self/status, in bytes (VmHWM resets on exec; ru_maxrss does not)
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024


def hwm():
    return status("VmHWM")


import threading
anon = {"peak": 0, "run": True}


def poll():  # peak anonymous RSS: memory the process owns, not page cache of memory-mapped files
    while anon["run"]:
        anon["peak"] = max(anon["peak"], status("RssAnon"))
        time.sleep(0.02)

mode, src, dst = sys.argv[1:4]
import nibabel, zarr, voxelflow  # same imports in both modes: RSS before any data
imported = hwm()
imported_anon = status("RssAnon")
threading.Thread(target=poll, daemon=True).start()
start = time.perf_counter()
if mode == "voxelflow":
    from voxelflow.convert import convert
    convert(src, dst, chunk=64, progress=False)
else:  # the naive way: read the whole volume, write it (no pyramid)
    import nibabel as nib, zarr
    data = np.array(nib.load(src).dataobj)  # in memory, as TorchIO loads it
    zarr.create_array(dst, data=np.ascontiguousarray(data.T), chunks=(64, 64, 64))
seconds = time.perf_counter() - start
peak = hwm()
anon["run"] = False
print(json.dumps({"seconds": seconds, "peak": peak, "imported": imported,
                  "anon": max(anon["peak"], status("RssAnon")), "imported_anon": imported_anon}))
"""


def make_volume(path: Path, shape: tuple[int, int, int]) -> None:
    """A smooth uint16 volume with noise, written slab by slab (never whole in memory)."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint16)
    header.set_sform(np.diag([0.5, 0.5, 0.5, 1.0]), code=1)
    header.set_qform(np.diag([0.5, 0.5, 0.5, 1.0]), code=1)
    header.set_data_offset(352)
    with open(path, "wb") as stream:
        header.write_to(stream)
        stream.truncate(352 + int(np.prod(shape)) * 2)
    mapped = np.memmap(path, dtype=np.uint16, mode="r+", offset=352, shape=shape, order="F")
    rng = np.random.default_rng(0)
    i = np.arange(shape[0])[:, None, None]
    j = np.arange(shape[1])[None, :, None]
    for k0 in range(0, shape[2], 32):
        k = np.arange(k0, min(shape[2], k0 + 32))[None, None, :]
        smooth = 1000 + 800 * np.sin(i / 37.0) * np.cos(j / 53.0) * np.sin(k / 29.0)
        noise = rng.normal(0, 20, size=smooth.shape)
        mapped[:, :, k0 : k0 + k.shape[2]] = np.clip(smooth + noise, 0, 65535).astype(np.uint16)
    mapped.flush()
    del mapped


def median_ms(function, corners) -> float:  # type: ignore[no-untyped-def]
    times = []
    for corner in corners:
        start = time.perf_counter()
        function(*corner)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--folder", default="/tmp/issue3/bench")
    parser.add_argument("--reads", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 0.1 GiB, 20 reads")
    args = parser.parse_args()
    if args.quick:
        args.size_gib, args.reads = 0.1, 20

    import zarr

    import voxelflow as tio

    try:
        import niizarr
    except ImportError:  # a test dependency, not one of voxelflow's
        niizarr = None
        print(
            "niizarr (the reference NIfTI-Zarr implementation) is not installed: its baseline "
            "is skipped; pip install nifti-zarr, or use the test venv (.venv-test)"
        )

    folder = Path(args.folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    side = int(
        round((args.size_gib * 2**30 / 2 / 2) ** (1 / 3))
    )  # I = J = side, K = 2 side... uint16
    shape = (side, side, 2 * side)
    shape = tuple(-(-s // 64) * 64 for s in shape)
    nii, out, naive = folder / "vol.nii", folder / "vol.nii.zarr", folder / "naive.zarr"
    make_volume(nii, shape)  # type: ignore[arg-type]
    nbytes = int(np.prod(shape)) * 2
    print(f"volume {shape} uint16 = {nbytes / 2**30:.2f} GiB; machine: {os.cpu_count()} cores")

    results = {}
    for mode, target in (("voxelflow", out), ("naive", naive)):
        run = subprocess.run(
            [sys.executable, "-c", CHILD, mode, str(nii), str(target)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        results[mode] = json.loads(run.stdout.strip().splitlines()[-1])
    slab = shape[0] * shape[1] * 64 * 2
    vf, nv = results["voxelflow"], results["naive"]
    print("\nconversion .nii -> .nii.zarr (64³ chunks, blosc-lz4)")
    print(
        f"  voxelflow convert (+ pyramid): {nbytes / 2**20 / vf['seconds']:7.1f} MB/s, "
        f"peak RSS {vf['peak'] / 2**20:7.0f} MiB (slab {slab / 2**20:.0f} MiB, "
        f"volume {nbytes / 2**20:.0f} MiB)"
    )
    print(
        f"  naive load + zarr write (no pyramid): {nbytes / 2**20 / nv['seconds']:7.1f} MB/s, "
        f"peak RSS {nv['peak'] / 2**20:7.0f} MiB"
    )
    print(
        f"  RSS after imports (both): {vf['imported'] / 2**20:.0f} MiB; above that: voxelflow "
        f"{(vf['peak'] - vf['imported']) / 2**20:.0f} MiB, naive {(nv['peak'] - nv['imported']) / 2**20:.0f} MiB "
        f"({(nv['peak'] - nv['imported']) / max(1, vf['peak'] - vf['imported']):.1f}×)"
    )
    vf_anon = (vf["anon"] - vf["imported_anon"]) / 2**20
    nv_anon = (nv["anon"] - nv["imported_anon"]) / 2**20
    print(
        "  peak anonymous RSS above imports (memory the process owns; plain RSS also counts "
        f"the source's memory-mapped page cache): voxelflow {vf_anon:.0f} MiB, naive "
        f"{nv_anon:.0f} MiB ({nv_anon / max(1.0, vf_anon):.1f}×)"
    )

    # ---------------------------------------------------------------- open time
    def time_open(function) -> float:  # type: ignore[no-untyped-def]
        times = []
        for _ in range(5):
            start = time.perf_counter()
            function()
            times.append(time.perf_counter() - start)
        return 1000 * statistics.median(times)

    open_vf = time_open(lambda: tio.ScalarImage(out).shape)
    open_zarr = time_open(lambda: zarr.open_array(str(out), path="0", mode="r"))
    print("\ntime to open (metadata only), median of 5")
    print(f"  voxelflow ScalarImage(...).shape {open_vf:7.1f} ms")
    if niizarr is not None:
        open_ref = time_open(lambda: niizarr.zarr2nii(str(out)))
        print(
            f"  niizarr.zarr2nii (dask)          {open_ref:7.1f} ms  ({open_ref / open_vf:.1f}× voxelflow)"
        )
    print(f"  zarr.open_array (level 0 only)   {open_zarr:7.1f} ms")

    # ---------------------------------------------------------------- region reads
    rng = np.random.default_rng(1)
    corners = [tuple(int(rng.integers(0, s - 64)) for s in shape) for _ in range(args.reads)]
    image = tio.ScalarImage(out)
    backend = image.dataobj
    raw = zarr.open_array(str(out), path="0", mode="r")
    mapped = np.memmap(nii, dtype=np.uint16, mode="r", offset=352, shape=shape, order="F")
    check = corners[0]
    a = backend[:, check[0] : check[0] + 64, check[1] : check[1] + 64, check[2] : check[2] + 64]
    b = np.array(
        mapped[check[0] : check[0] + 64, check[1] : check[1] + 64, check[2] : check[2] + 64]
    )
    assert np.array_equal(a.numpy()[0], b)
    import torch

    padded = torch.zeros((1, 68, 68, 68), dtype=backend.dtype)
    inner = padded[:, 2:66, 2:66, 2:66]

    def into(i: int, j: int, k: int) -> torch.Tensor:
        box = (slice(0, 1, 1), slice(i, i + 64, 1), slice(j, j + 64, 1), slice(k, k + 64, 1))
        backend.read_into(box, inner)
        return inner

    into(*check)
    assert np.array_equal(inner.numpy()[0], b)
    readers = {
        "voxelflow image.dataobj[...]": lambda i, j, k: backend[
            :, i : i + 64, j : j + 64, k : k + 64
        ],
        "voxelflow read_into (padded)": into,
        "raw zarr-python array[...]": lambda i, j, k: raw[k : k + 64, j : j + 64, i : i + 64],
        ".nii memmap (floor)": lambda i, j, k: np.array(mapped[i : i + 64, j : j + 64, k : k + 64]),
    }
    if niizarr is not None:
        reference = niizarr.zarr2nii(str(out))
        assert np.array_equal(
            a.numpy()[0],
            np.asarray(
                reference.dataobj[
                    check[0] : check[0] + 64, check[1] : check[1] + 64, check[2] : check[2] + 64
                ]
            ),
        )
        readers["niizarr.zarr2nii (dask)"] = lambda i, j, k: np.asarray(
            reference.dataobj[i : i + 64, j : j + 64, k : k + 64]
        )
    print(
        f"\n64³ region reads from the .nii.zarr (64³ chunks; random corners, 8 chunks each), median of {args.reads}"
    )
    for corner in corners:  # same page cache for everyone: the first reader is not penalised
        readers["raw zarr-python array[...]"](*corner)
        readers[".nii memmap (floor)"](*corner)
    names = list(readers)
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        readers[name](*corners[0])  # warm
    for n, corner in enumerate(corners[1:]):  # the readers take turns, rotating who goes first
        for name in names[n % len(names) :] + names[: n % len(names)]:
            start = time.perf_counter()
            readers[name](*corner)
            times[name].append(time.perf_counter() - start)
    for name in names:
        results[name] = 1000 * statistics.median(times[name])
        print(f"  {name:32s} {results[name]:7.2f} ms")
    vf_ms = results["voxelflow image.dataobj[...]"]
    versus_reference = (
        f"vs niizarr: {results['niizarr.zarr2nii (dask)'] / vf_ms:.1f}× faster; "
        if niizarr is not None
        else ""
    )
    print(
        f"  voxelflow {versus_reference}"
        f"vs raw zarr: {results['raw zarr-python array[...]'] / vf_ms:.2f}×; "
        f"vs memmap floor: {vf_ms / results['.nii memmap (floor)']:.1f}× slower; read_into / "
        f"read: {results['voxelflow read_into (padded)'] / vf_ms:.2f}"
    )
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

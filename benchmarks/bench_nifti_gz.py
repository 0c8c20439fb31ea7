"""Benchmark: fast ``.nii.gz`` whole reads and indexed region reads, beside nibabel.

Writes an MRI-like float32 volume (a noisy smooth blob on a zero background,
which gzip compresses about as well as real MRI) as ``.nii.gz`` (ISA-L, level 1,
slab by slab: the volume is never held whole) and as ``.nii``, then measures:

* whole read: voxelflow (rapidgzip with all cores, and ISA-L on one thread)
  beside ``nibabel.load(p).get_fdata()`` and ``np.asarray(nibabel.load(p).dataobj)``,
  each in its own subprocess (time and peak RSS);
* the seek-point index: build time and size;
* a 64³ region at the start, middle and end of the stream: the first read
  (which builds the index) and the median after the index exists, through
  ``read`` (a new tensor) and ``read_into`` (a caller-owned padded buffer, the two
  taking turns), beside nibabel's proxy (``dataobj[...]``) and the ``.nii``
  memory-map floor.

Usage::

    python benchmarks/bench_nifti_gz.py                  # 724×868×724 (the seed's size)
    python benchmarks/bench_nifti_gz.py --shape 256x256x256
    python benchmarks/bench_nifti_gz.py --quick          # 256×256×192, 3 repeats
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

import nibabel as nib
import numpy as np

CHILD = r"""
import json, resource, sys, time
import numpy as np
import nibabel as nib
from voxelflow.backends.nifti_gz import NiftiGzBackend  # imports (torch...) are not timed
mode, path = sys.argv[1], sys.argv[2]
start = time.perf_counter()
if mode == "nibabel-get_fdata":
    data = nib.load(path).get_fdata()
elif mode == "nibabel-asarray":
    data = np.asarray(nib.load(path).dataobj)
else:
    threads = None if mode == "voxelflow-parallel" else 1
    data = NiftiGzBackend(path, gz_threads=threads).read(None)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "peak": peak, "checksum": float(data[::97].sum())}))
"""


def write_volume(gz_path: str, nii_path: str, shape: tuple[int, int, int]) -> None:
    """Stream the volume slab by slab into both files."""
    from isal import igzip

    size_i, size_j, size_k = shape
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header.set_qform(np.eye(4), 1)
    header.set_sform(np.eye(4), 1)
    rng = np.random.default_rng(0)
    x = np.linspace(-1, 1, size_i, dtype=np.float32)[:, None]
    y = np.linspace(-1, 1, size_j, dtype=np.float32)[None, :]
    with igzip.open(gz_path, "wb", compresslevel=1) as gz, open(nii_path, "wb") as raw:
        for stream in (gz, raw):
            header.write_to(stream)
            stream.write(b"\0" * (int(header["vox_offset"]) - header.sizeof_hdr))
        for k in range(size_k):
            z = -1 + 2 * k / max(1, size_k - 1)
            inside = x**2 / 0.8 + y**2 / 0.9 + z**2 / 0.85 < 1
            field = 100 * (1 + 0.3 * np.sin(4 * x + 2 * z) * np.cos(3 * y))
            noise = rng.normal(0, 3, (size_i, size_j)).astype(np.float32)
            slab = np.where(inside, field + noise, 0).astype(np.float32).tobytes(order="F")
            gz.write(slab)
            raw.write(slab)


def child(mode: str, path: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, path], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def timed(function, *args):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="724x868x724", help="I×J×K, e.g. 256x256x256")
    parser.add_argument("--dir", default="/tmp/voxelflow-bench-gz", help="scratch directory")
    parser.add_argument("--repeats", type=int, default=5, help="region reads per depth")
    parser.add_argument("--keep", action="store_true", help="keep the scratch files")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 256×256×192, 3 repeats")
    args = parser.parse_args()
    if args.quick:
        args.shape, args.repeats = "256x256x192", 3
    shape = tuple(int(n) for n in args.shape.lower().split("x"))
    assert len(shape) == 3
    os.makedirs(args.dir, exist_ok=True)
    gz_path = os.path.join(args.dir, "volume.nii.gz")
    nii_path = os.path.join(args.dir, "volume.nii")

    import torch

    from voxelflow.backends import NiftiBackend, NiftiGzBackend, gzindex

    try:
        seconds, _ = timed(write_volume, gz_path, nii_path, shape)
        raw_bytes = int(np.prod(shape)) * 4
        gz_bytes = os.path.getsize(gz_path)
        print(f"volume {'×'.join(map(str, shape))} float32: {raw_bytes / 1e9:.2f} GB raw, ")
        print(
            f"  .nii.gz {gz_bytes / 1e9:.2f} GB (ratio {raw_bytes / gz_bytes:.2f}), "
            f"written in {seconds:.1f} s; cores usable: {gzindex.default_threads()}"
        )

        print("\nwhole read (each in a fresh process)")
        whole = {}
        for mode in (
            "nibabel-get_fdata",
            "nibabel-asarray",
            "voxelflow-isal-1-thread",
            "voxelflow-parallel",
        ):
            whole[mode] = child(mode, gz_path)
        base = whole["nibabel-get_fdata"]["seconds"]
        for mode, facts in whole.items():
            print(
                f"  {mode:<26} {facts['seconds']:7.2f} s   peak RSS "
                f"{facts['peak'] / 2**30:5.2f} GiB   {base / facts['seconds']:5.2f}× vs get_fdata"
            )

        for location in gzindex.index_locations(gz_path):
            if os.path.exists(location):
                os.remove(location)
        size_i, size_j, size_k = shape
        side = min(64, *shape)
        depths = {"start": 0, "middle": size_k // 2 - side // 2, "end": size_k - side}
        rng = np.random.default_rng(1)

        def box(k0: int) -> tuple[slice, ...]:
            i0 = int(rng.integers(0, size_i - side + 1))
            j0 = int(rng.integers(0, size_j - side + 1))
            return (
                slice(0, 1, 1),
                slice(i0, i0 + side, 1),
                slice(j0, j0 + side, 1),
                slice(k0, k0 + side, 1),
            )

        print(f"\nregion {side}³ reads (median of {args.repeats}; seconds)")
        first_box = box(depths["end"])
        backend = NiftiGzBackend(gz_path, gz_access="index")
        first, _ = timed(backend.read, first_box)
        index = backend.index
        assert index is not None and index.built
        print(f"  first read (end of stream; builds the index): {first:.2f} s")
        backend.release()
        build, stored = timed(
            lambda: NiftiGzBackend(gz_path, gz_access="index").build_index(force=True)
        )
        print(
            f"  index build alone: {build:.2f} s, {len(stored.payload) / 1e3:.1f} kB "
            f"({len(stored.payload) / gz_bytes * 100:.3f}% of the .nii.gz) at {stored.location}"
        )

        mmap = NiftiBackend(nii_path)
        print(
            f"  {'depth':<8}{'index read':>12}{'read_into':>11}{'(fresh open)':>14}"
            f"{'nibabel proxy':>15}{'.nii memmap':>13}{'nibabel/index':>15}"
        )
        padded = torch.zeros((1, side + 4, side + 4, side + 4))
        inner = padded[:, 2 : 2 + side, 2 : 2 + side, 2 : 2 + side]
        for name, k0 in depths.items():
            boxes = [box(k0) for _ in range(args.repeats)]
            warm = NiftiGzBackend(gz_path, gz_access="index")
            warm.read(box(k0))  # opens the decoder and loads the index
            read_times, into_times = [], []
            for n, b in enumerate(boxes):  # the two paths take turns
                pair = [
                    (read_times, lambda b=b, w=warm: w.read(b)),
                    (into_times, lambda b=b, w=warm: w.read_into(b, inner)),
                ]
                for times, call in pair if n % 2 else pair[::-1]:
                    times.append(timed(call)[0])
            indexed, into = statistics.median(read_times), statistics.median(into_times)
            fresh = statistics.median(
                timed(NiftiGzBackend(gz_path, gz_access="index").read, b)[0] for b in boxes
            )
            nib_times = []
            for b in boxes[: max(1, min(3, args.repeats))]:
                key = (b[1], b[2], b[3])
                nib_times.append(timed(lambda key=key: nib.load(gz_path).dataobj[key])[0])
            nibabel_time = statistics.median(nib_times)
            floor = statistics.median(timed(mmap.read, b)[0] for b in boxes)
            got = warm.read(boxes[0]).numpy()[0]
            np.testing.assert_array_equal(got, np.asarray(nib.load(nii_path).dataobj[boxes[0][1:]]))
            warm.read_into(boxes[0], inner)
            np.testing.assert_array_equal(inner.numpy()[0], got)
            warm.release()
            print(
                f"  {name:<8}{indexed:>12.4f}{into:>11.4f}{fresh:>14.4f}{nibabel_time:>15.3f}"
                f"{floor:>13.4f}{nibabel_time / indexed:>14.0f}×"
            )

        decode = whole["voxelflow-parallel"]["seconds"]
        print(
            "\npolicy: one full decode costs about "
            f"{decode / indexed:.0f} indexed {side}³ reads (middle of the stream); "
            f"'auto' switches after indexed reads inflate {gzindex.DECODE_AFTER}× the volume"
        )
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()

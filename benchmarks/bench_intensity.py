"""Patch-first intensity augmentation beside the naive way (load, transform whole, crop).

Pipeline: ``ZNormalization`` (statistics of the whole volume), ``Gamma``,
``BiasField`` (polynomial, order 3), ``Blur`` (1 mm) and ``Noise``, on int16
``.nii`` volumes of 256×256×176 (``--quick``: 128×128×88), 64³ patches at random
places, ``--patches`` per subject.

* **patch-first** (voxelflow): the transform is applied to the lazy subject; its
  statistics are streamed over the file slab by slab (cached per file), then each
  patch computes only its region (plus the blur's halo) from the bytes it needs.
* **naive**: ``nibabel.load(path).get_fdata(dtype=float32)``, the same transform on
  the whole tensor (the same code, so the same values), then crop the patches.

Both run in fresh processes, interleaved, ``--repeats`` times each (medians
reported), with the peak anonymous memory (RssAnon, sampled every 2 ms) above
the process's level before the first subject. The parent first checks that
patches from both ways are equal bit for bit. The load average is printed
beside the figures: the machine may be shared.

Run: ``python benchmarks/bench_intensity.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

PATCH = 64


def anon_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakMemory:
    """Peak anonymous resident memory above the level at entry, sampled in a thread."""

    def __enter__(self) -> PeakMemory:
        self.baseline = anon_bytes()
        self.peak = self.baseline
        self._done = False
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._done:
            self.peak = max(self.peak, anon_bytes())
            time.sleep(0.002)

    def __exit__(self, *args: Any) -> None:
        self._done = True
        self._thread.join()
        self.peak = max(self.peak, anon_bytes())

    @property
    def extra_mib(self) -> float:
        return (self.peak - self.baseline) / 2**20


def make_volumes(folder: Path, count: int, shape: tuple[int, int, int]) -> list[Path]:
    """int16 MRI-like volumes: a smooth bright ellipsoid, texture, background zeros."""
    paths = []
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    inside = (x**2 + y**2 + z**2) < 0.8
    for n in range(count):
        rng = np.random.default_rng(n)
        array = np.where(inside, 600 + 300 * x + 150 * y * z, 0).astype(np.float32)
        array += rng.normal(0, 25, size=shape).astype(np.float32) * inside
        path = folder / f"t1_{n}.nii"
        nib.save(nib.Nifti1Image(array.astype(np.int16), np.diag([1.0, 1.0, 1.0, 1.0])), path)
        paths.append(path)
    return paths


def pipeline(seed: int) -> Any:
    import voxelflow as tio

    return tio.Compose(
        [
            tio.ZNormalization(),
            tio.Gamma(log_gamma=(-0.2, 0.2)),
            tio.BiasField(coefficients=(-0.3, 0.3), order=3),
            tio.Blur(std=1.0),
            tio.Noise(std=(0.05, 0.15)),
        ],
        seed=seed,
    )


def locations(shape: tuple[int, ...], count: int, seed: int) -> list[tuple[slice, ...]]:
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(count):
        start = [int(rng.integers(0, n - PATCH + 1)) for n in shape]
        boxes.append((slice(None), *(slice(a, a + PATCH) for a in start)))
    return boxes


def patch_first(path: Path, seed: int, count: int) -> tuple[list[torch.Tensor], dict[str, float]]:
    import voxelflow as tio

    start = time.perf_counter()
    subject = pipeline(seed)(tio.Subject(t1=tio.ScalarImage(path)))
    prepared = time.perf_counter()
    patches, times = [], []
    for box in locations(subject.spatial_shape, count, seed):
        t0 = time.perf_counter()
        patches.append(subject.t1[box].data)
        times.append(time.perf_counter() - t0)
    return patches, {
        "statistics_s": prepared - start,
        "per_patch_s": statistics.median(times),
        "subject_s": time.perf_counter() - start,
    }


def naive(path: Path, seed: int, count: int) -> tuple[list[torch.Tensor], dict[str, float]]:
    import voxelflow as tio

    start = time.perf_counter()
    data = torch.from_numpy(nib.load(path).get_fdata(dtype=np.float32))[None]
    loaded = time.perf_counter()
    transformed = pipeline(seed)(tio.Subject(t1=tio.ScalarImage(data))).t1.data
    done = time.perf_counter()
    patches = [transformed[box].clone() for box in locations(tuple(data.shape[1:]), count, seed)]
    del transformed, data
    return patches, {
        "load_s": loaded - start,
        "transform_s": done - loaded,
        "subject_s": time.perf_counter() - start,
    }


def child(mode: str, paths: list[str], count: int) -> None:
    torch.set_num_threads(1)
    run = patch_first if mode == "patch-first" else naive
    figures: list[dict[str, float]] = []
    with PeakMemory() as memory:
        for number, path in enumerate(paths):
            patches, numbers = run(Path(path), number, count)
            figures.append(numbers)
            del patches
    summary = {key: statistics.mean(f[key] for f in figures) for key in figures[0]}
    summary["peak_extra_mib"] = memory.extra_mib
    print(json.dumps(summary))


def measure(mode: str, paths: list[Path], count: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", mode, "--patches", str(count)]
    output = subprocess.run(
        [*command, *map(str, paths)], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])  # type: ignore[no-any-return]


def check_equal(path: Path, count: int) -> None:
    ours, _ = patch_first(path, 0, count)
    theirs, _ = naive(path, 0, count)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b), "patch-first and naive patches differ"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128×128×88 volumes, 2 subjects")
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--patches", type=int, default=10, help="patches per subject")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        child(args.child, rest, args.patches)
        return
    shape = (128, 128, 88) if args.quick else (256, 256, 176)
    subjects = 2 if args.quick else args.subjects
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        paths = make_volumes(Path(folder), subjects, shape)
        check_equal(paths[0], 3)
        load_before = os.getloadavg()
        results: dict[str, list[dict[str, float]]] = {"patch-first": [], "naive": []}
        for _ in range(args.repeats):  # interleaved, so both see the same load
            for mode in results:
                results[mode].append(measure(mode, paths, args.patches))
        load_after = os.getloadavg()
    median = {
        mode: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for mode, runs in results.items()
    }
    ours, theirs = median["patch-first"], median["naive"]
    volume_mib = np.prod(shape) * 4 / 2**20
    print(
        f"{subjects} subjects of {'×'.join(map(str, shape))} int16 .nii, {args.patches} patches "
        f"of {PATCH}³ each; ZNormalization + Gamma + BiasField + Blur(1 mm) + Noise; "
        f"median of {args.repeats} interleaved runs, one torch thread; patches equal bit for bit"
    )
    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} (1 min)")
    per_patch_naive = theirs["subject_s"] / args.patches
    rows = [
        (
            "patch-first",
            ours["subject_s"],
            ours["subject_s"] / args.patches,
            ours["peak_extra_mib"],
        ),
        ("naive", theirs["subject_s"], per_patch_naive, theirs["peak_extra_mib"]),
    ]
    print(f"{'':14}{'per subject':>14}{'per patch':>12}{'peak extra memory':>20}")
    for name, subject_s, patch_s, mib in rows:
        print(f"{name:14}{subject_s:>12.2f} s{patch_s * 1000:>9.0f} ms{mib:>16.0f} MiB")
    print(
        f"patch-first: statistics pass {ours['statistics_s']:.2f} s per subject (cached per "
        f"file afterwards), then {ours['per_patch_s'] * 1000:.0f} ms per patch"
    )
    print(
        f"naive: load {theirs['load_s']:.2f} s + whole transform {theirs['transform_s']:.2f} s "
        f"per subject; one float32 volume is {volume_mib:.0f} MiB"
    )
    print(
        f"patch-first vs naive: {theirs['subject_s'] / ours['subject_s']:.2f}× faster per "
        f"subject, {theirs['peak_extra_mib'] / max(ours['peak_extra_mib'], 1):.1f}× less memory"
    )


if __name__ == "__main__":
    main()

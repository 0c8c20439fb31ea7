"""Patch-based inference: ``voxelflow.inference.sliding_window`` beside the plain loop, in one run.

Part 1. A 256×256×176 float32 ``.nii.gz`` (MRI-like: smooth anatomy plus noise), patch 64,
overlap 16 and 8, batch 4, a small 3-D conv net on the CPU (one torch thread), every blending
mode. Each run is a fresh process (so peak memory is its own), and voxelflow and the plain
loop alternate, ``--repeats`` times:

* **voxelflow**: ``sliding_window(model, tio.ScalarImage(path), 64, overlap, mode, 4)``;
* **plain loop** (what a user writes): ``nib.load(path).get_fdata(dtype=float32)``, the grid
  of corners, ``torch.stack`` of each batch of slices, the model, ``out[box] += y * w`` and
  ``norm[box] += w`` in torch with the same (unfloored) window, ``out / norm``.

Figures: total time, time inside the model (summed forward calls), **outside the model** (the
rest: reading, cutting, blending), and the peak PSS of the process (sampled every 20 ms).
The table shows each figure's best run (time) and highest peak (memory).

Part 2. Many classes: a 100-class 1×1×1 head over a volume, patch 64, overlap 16, batch 2,
Hann: ``reduce="argmax"`` (slabs reduced as the grid passes) beside the full aggregation
followed by ``argmax``: time and peak PSS, and the labels compared.

Part 3 (``--add-paths-only``): the aggregator's two ways of adding one batch (per patch,
whole batch through ``index_add_``) beside the plain NumPy loop, 8³ and 64³ patches.

Usage: ``python benchmarks/bench_inference.py [--quick] [--repeats N] [--classes-shape I J K]
[--add-paths-only]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import psutil
import torch
from torch import nn

MODES = ("crop", "average", "hann", "gaussian")


# ---------------------------------------------------------------------- data and model
def make_volume(path: Path, shape: tuple[int, int, int]) -> None:
    i, j, k = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    anatomy = 800 * np.exp(-(i**2 + j**2 + k**2) * 2) + 200 * np.cos(6 * i) * np.sin(5 * j)
    noise = np.random.default_rng(0).normal(0, 20, size=shape).astype(np.float32)
    volume = ((anatomy + noise) / 1000).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.diag([1.0, 1.0, 1.2, 1.0])), path)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv3d(8, 2, 3, padding=1)
    ).eval()


class Timed(nn.Module):
    """The model, with the wall time of its forward calls summed."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seconds = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = self.model(x)
        self.seconds += time.perf_counter() - start
        return out  # type: ignore[no-any-return]


def window_1d(mode: str, n: int) -> torch.Tensor:
    x = torch.arange(n, dtype=torch.float64) + 0.5
    if mode == "hann":
        w = torch.sin(torch.pi * x / n) ** 2
    elif mode == "gaussian":
        w = torch.exp(-((x - n / 2) ** 2) / (2 * (n / 8) ** 2))
    else:
        w = torch.ones(n, dtype=torch.float64)
    return w / w.max()


def starts(n: int, patch: int, overlap: int) -> list[int]:
    out = list(range(0, n - patch + 1, patch - overlap))
    return out if out[-1] == n - patch else [*out, n - patch]


# ---------------------------------------------------------------------- runs (child side)
def run_plain(path: str, patch: int, overlap: int, mode: str, batch_size: int) -> dict[str, Any]:
    model = Timed(small_net())
    start = time.perf_counter()
    volume = torch.from_numpy(nib.load(path).get_fdata(dtype=np.float32))[None]
    shape = tuple(volume.shape[1:])
    w1 = window_1d(mode, patch).float()
    window = w1[:, None, None] * w1[None, :, None] * w1[None, None, :]
    out = norm = None
    corners = [
        (i, j, k)
        for k in starts(shape[2], patch, overlap)
        for j in starts(shape[1], patch, overlap)
        for i in starts(shape[0], patch, overlap)
    ]

    def add(batch: list[tuple[int, int, int]]) -> None:
        nonlocal out, norm
        x = torch.stack(
            [volume[:, i : i + patch, j : j + patch, k : k + patch] for i, j, k in batch]
        )
        with torch.inference_mode():
            y = model(x)
        if out is None:
            out = torch.zeros((y.shape[1], *shape))
            norm = torch.zeros(shape)
        for (i, j, k), yy in zip(batch, y, strict=True):
            if mode == "crop":  # keep the centre: half the overlap trimmed on inner sides
                keep, inner = [], []
                for c, n in zip((i, j, k), shape, strict=True):
                    lo = overlap // 2 if c > 0 else 0
                    hi = overlap - overlap // 2 if c + patch < n else 0
                    keep.append(slice(c + lo, c + patch - hi))
                    inner.append(slice(lo, patch - hi))
                out[(slice(None), *keep)] += yy[(slice(None), *inner)]
                norm[tuple(keep)] += 1
            else:
                box = (slice(i, i + patch), slice(j, j + patch), slice(k, k + patch))
                out[(slice(None), *box)] += yy * window
                norm[box] += window

    for n in range(0, len(corners), batch_size):
        add(corners[n : n + batch_size])
    result = out / norm  # type: ignore[operator]
    total = time.perf_counter() - start
    return {"total": total, "model": model.seconds, "checksum": float(result.double().sum())}


def run_voxelflow(
    path: str, patch: int, overlap: int, mode: str, batch_size: int
) -> dict[str, Any]:
    import voxelflow as tio
    from voxelflow.inference import sliding_window

    model = Timed(small_net())
    start = time.perf_counter()
    image = sliding_window(
        model, tio.ScalarImage(path), patch, overlap, mode, batch_size, progress=False
    )
    result = image.data
    total = time.perf_counter() - start
    return {"total": total, "model": model.seconds, "checksum": float(result.double().sum())}


def run_classes(shape: list[int], reduce: bool, classes: int) -> dict[str, Any]:
    import voxelflow as tio
    from voxelflow.inference import sliding_window

    torch.manual_seed(0)
    head = nn.Conv3d(1, classes, 1).eval()
    volume = torch.rand(1, *shape, generator=torch.Generator().manual_seed(0))
    image = tio.ScalarImage(volume)
    start = time.perf_counter()
    if reduce:
        labels = sliding_window(
            head, image, 64, 16, "hann", 2, reduce="argmax", progress=False
        ).data
    else:
        scores = sliding_window(head, image, 64, 16, "hann", 2, progress=False).data
        labels = scores.argmax(0, keepdim=True).to(torch.uint8)
        del scores
    total = time.perf_counter() - start
    counts = torch.bincount(labels.flatten().long(), minlength=classes)
    return {"total": total, "counts": counts.tolist()}


def plain_add(
    sums: np.ndarray,
    weights: np.ndarray,
    patches: np.ndarray,
    locations: list[Any],
    window: np.ndarray,
) -> None:
    """The plain way for one batch: each patch times its window into NumPy buffers."""
    for patch, location in zip(patches, locations, strict=True):
        box = (slice(None), *location.to_slices())
        sums[box] += patch * window
        weights[box] += window


def best_of(repeats: int, function: Callable[[], Any]) -> float:
    function()  # warm: allocate, build the window and the index template
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def run_add_paths(shape: tuple[int, int, int], repeats: int = 15) -> list[str]:
    """Milliseconds per ``add_batch`` of 4 patches on each path, best of ``repeats``."""
    import voxelflow as tio
    from voxelflow.patches.blending import window_3d

    lines = [
        "add one batch (4 patches, hann), ms, best of "
        f"{repeats}: per patch | whole batch (index_add_) | plain NumPy loop"
    ]
    generator = torch.Generator().manual_seed(0)
    for size in (8, 64):
        for channels in (1, 4):
            outputs = torch.rand((4, channels, size, size, size), generator=generator)
            corners = [(0, 0, 0), (size // 2, 0, 0), (size, size // 2, 0), (0, size, size // 4)]
            locations = [tio.PatchLocation(c, (size,) * 3) for c in corners]
            times = {}
            for name, limit in (("per patch", 0), ("whole batch", 10**9)):
                aggregator = tio.PatchAggregator(shape, "hann")
                aggregator._vectorised_max_voxels = limit
                times[name] = best_of(repeats, partial(aggregator.add_batch, outputs, locations))
                del aggregator
            window = window_3d("hann", (size,) * 3).numpy()
            buffers = [np.zeros((channels, *shape), dtype=np.float32) for _ in range(2)]
            plain = partial(plain_add, *buffers, outputs.numpy(), locations, window)
            plain_time = best_of(repeats, plain)
            del buffers, plain
            per_patch, whole = times["per patch"], times["whole batch"]
            lines.append(
                f"  {size}³ C={channels}: {per_patch * 1e3:7.3f} | {whole * 1e3:7.3f} "
                f"({per_patch / whole:.2f}× per patch) | {plain_time * 1e3:7.3f} "
                f"(plain / best path {plain_time / min(per_patch, whole):.1f}×)"
            )
    return lines


# ---------------------------------------------------------------------- parent side
def tree_pss(process: psutil.Process) -> int:
    total = 0
    try:
        tree = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0
    for proc in tree:
        try:
            total += proc.memory_full_info().pss
        except (psutil.Error, FileNotFoundError):
            continue
    return total


def measure(args: list[str]) -> dict[str, Any]:
    """Run this script with ``--child ...`` and sample its process tree's PSS."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE, text=True
    )
    process = psutil.Process(child.pid)
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_pss(process))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, _ = child.communicate()
    done.set()
    watcher.join()
    if child.returncode != 0:
        raise SystemExit(f"child {args} failed with {child.returncode}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["peak_mib"] = peak[0] / 2**20
    return result


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128×128×96, one repeat, 20 classes")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--classes-shape", type=int, nargs=3, default=[192, 192, 320])
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--skip-classes", action="store_true", help="only part 1")
    parser.add_argument("--modes", nargs="+", default=list(MODES))
    parser.add_argument(
        "--add-paths-only",
        action="store_true",
        help="only time the aggregator's two ways of adding a batch beside the plain loop",
    )
    args = parser.parse_args()
    if args.add_paths_only:
        torch.set_num_threads(1)
        for line in run_add_paths((128, 128, 96)):
            print(line, flush=True)
        return
    if args.child:
        torch.set_num_threads(1)  # one intra-op thread: a shared machine, and a fair baseline
        kind, *rest = args.child
        if kind == "classes":
            result = run_classes([int(v) for v in rest[:3]], rest[3] == "reduce", int(rest[4]))
        else:
            runner = run_plain if kind == "plain" else run_voxelflow
            result = runner(rest[0], int(rest[1]), int(rest[2]), rest[3], int(rest[4]))
        print(json.dumps(result))
        return

    shape = (128, 128, 96) if args.quick else (256, 256, 176)
    repeats = 1 if args.quick else args.repeats
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, one torch thread per run; {load()}")
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as folder:
        path = Path(folder) / "volume.nii.gz"
        make_volume(path, shape)
        print(
            f"\n## {'×'.join(map(str, shape))} float32 .nii.gz ({path.stat().st_size / 2**20:.0f} MiB), "
            "patch 64, batch 4, small Conv3d; best of "
            f"{repeats} interleaved runs (time), highest peak (memory)"
        )
        print(
            f"{'overlap':>7} {'mode':9} {'method':10} {'total s':>8} {'model s':>8} "
            f"{'outside s':>9} {'outside ×':>9} {'peak PSS MiB':>12}"
        )
        for overlap in (16, 8):
            for mode in args.modes:
                rows: dict[str, dict[str, Any]] = {}
                for _ in range(repeats):
                    for method in ("voxelflow", "plain"):
                        r = measure([method, str(path), "64", str(overlap), mode, "4"])
                        r["outside"] = r["total"] - r["model"]
                        best = rows.get(method)
                        if best is None:
                            rows[method] = r
                        else:
                            best["peak_mib"] = max(best["peak_mib"], r["peak_mib"])
                            for key in ("outside", "total", "model"):
                                best[key] = min(best[key], r[key])
                ours, plain = rows["voxelflow"], rows["plain"]
                relative = abs(ours["checksum"] - plain["checksum"]) / abs(plain["checksum"])
                assert relative < 1e-4, f"{mode}: the outputs differ ({relative:.2e})"
                for method, r in rows.items():
                    ratio = r["outside"] / plain["outside"]
                    print(
                        f"{overlap:>7} {mode:9} {method:10} {r['total']:8.2f} {r['model']:8.2f} "
                        f"{r['outside']:9.2f} {ratio:9.2f} {r['peak_mib']:12.0f}",
                        flush=True,
                    )
        print(f"({load()})")
    if args.skip_classes:
        return
    classes_shape = [96, 96, 160] if args.quick else args.classes_shape
    classes = 20 if args.quick else 100
    full_gib = classes * np.prod(classes_shape) * 4 / 2**30
    print(
        f"\n## {classes} classes on {'×'.join(map(str, classes_shape))} (the full float32 scores: "
        f"{full_gib:.1f} GiB), patch 64, overlap 16, batch 2, hann; {load()}"
    )
    results = {}
    for name, mode in (
        ("reduce='argmax' (streamed)", "reduce"),
        ("full aggregation + argmax", "full"),
    ):
        r = measure(["classes", *map(str, classes_shape), mode, str(classes)])
        results[mode] = r
        print(f"{name:28} {r['total']:7.2f} s, peak PSS {r['peak_mib']:7.0f} MiB", flush=True)
    agree = results["reduce"]["counts"] == results["full"]["counts"]
    print(
        f"memory ×{results['reduce']['peak_mib'] / results['full']['peak_mib']:.2f}, "
        f"time ×{results['reduce']['total'] / results['full']['total']:.2f}; label counts agree: {agree}"
    )


if __name__ == "__main__":
    main()

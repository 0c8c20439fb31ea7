"""Patch-based inference: grid sampling + aggregation, against the plain way, in one run.

A 256×256×176 volume (a .nii file, read lazily), patches of 64, overlap 16 and 8, batch 4,
a small 3-D conv net on the CPU. For each overlap:

* the model's time over the whole grid (measured once; identical for every mode),
* per mode, the time outside the model: reading patches (GridSampler + SubjectsLoader)
  and aggregating (``add_batch`` for every batch + ``get_output``), with the model's
  outputs replayed from a cache so the model runs once per overlap,
* the plain reference: a Python loop that adds each patch, times its window, into a
  NumPy buffer with a C-channel weight buffer (TorchIO 2.0's way),
* the full-volume forward pass,
* peak extra anonymous memory (RssAnon, sampled every 2 ms).

Then the two ways the aggregator adds one batch, forced in turn (it picks by patch size,
see :mod:`voxelflow.patches.aggregator`): per patch (fused slice-adds) and whole batch (one
``index_add_`` through cached flat indices), beside the plain NumPy loop, for patches of 8³
and 64³, batch 4, 1 and 4 channels, Hann; milliseconds per batch.

Then the on-disk mode on a 384×384×256 two-channel output larger than the memory it is
allowed. Usage: ``python benchmarks/bench_inference.py [--quick] [--threads N]
[--add-paths-only]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import nibabel as nib
import numpy as np
import torch
from torch import nn

import voxelflow as tio
from voxelflow.loader import SubjectsLoader
from voxelflow.patches.blending import window_3d

MODES = ("crop", "average", "hann", "gaussian")


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


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv3d(8, 2, 3, padding=1)
    ).eval()


def reference_aggregate(
    shape: tuple[int, int, int],
    outputs: list[torch.Tensor],
    locations: list[tio.PatchLocation],
    mode: str,
    overlap: int,
) -> np.ndarray:
    """The plain way: one patch at a time into NumPy buffers, weights with C channels."""
    channels = outputs[0].shape[1]
    sums = np.zeros((channels, *shape), dtype=np.float32)
    weights = np.zeros((channels, *shape), dtype=np.float32)
    window = None
    if mode not in ("average", "crop"):
        window = window_3d(mode, locations[0].size).numpy()
    n = 0
    for batch in outputs:
        for patch in batch.numpy():
            location = locations[n]
            n += 1
            box = (slice(None), *location.to_slices())
            if mode == "crop":  # keep the centre: trim half the overlap on inner sides
                keep, inner = [slice(None)], [slice(None)]
                for i, f, size in zip(location.index_ini, location.index_fin, shape, strict=True):
                    lo = overlap // 2 if i > 0 else 0
                    hi = overlap - overlap // 2 if f < size else 0
                    keep.append(slice(i + lo, f - hi))
                    inner.append(slice(lo, f - i - hi))
                sums[tuple(keep)] += patch[tuple(inner)]
                weights[tuple(keep)] += 1
            elif window is None:
                sums[box] += patch
                weights[box] += 1
            else:
                sums[box] += patch * window
                weights[box] += window
    return sums / weights


def run_overlap(path: str, model: nn.Module, overlap: int, batch_size: int) -> list[str]:
    lines = []
    subject = tio.Subject(t1=tio.ScalarImage(path))
    sampler = tio.GridSampler(subject, 64, overlap)
    loader = SubjectsLoader(sampler, batch_size=batch_size)

    # reading patches alone, then the model on every batch (its outputs cached for replay)
    start = time.perf_counter()
    inputs = [batch.t1.data for batch in loader]
    read_time = time.perf_counter() - start
    with torch.inference_mode():
        start = time.perf_counter()
        outputs = [model(x) for x in inputs]
        model_time = time.perf_counter() - start
    del inputs
    lines.append(
        f"overlap {overlap}: {len(sampler)} patches; model {model_time:.2f} s over the grid; "
        f"reading patches {read_time:.2f} s"
    )
    lines.append(
        f"  {'mode':<9} {'outside model':>14} {'(aggregate)':>12} {'total':>8} "
        f"{'plain loop':>11} {'speed-up':>9} {'peak MiB':>9} {'plain MiB':>10}"
    )
    for mode in MODES:

        def ours(aggregator: tio.PatchAggregator, replay: Any) -> torch.Tensor:
            aggregate = 0.0
            for batch in loader:
                _ = batch.t1.data  # the patches the model would read
                output = next(replay)
                start = time.perf_counter()
                aggregator.add_batch(output, batch)
                aggregate += time.perf_counter() - start
            start = time.perf_counter()
            result = aggregator.get_output()
            ours.aggregate = aggregate + time.perf_counter() - start  # type: ignore[attr-defined]
            return result

        # best of three: the machine is shared, the minimum is the least disturbed run
        runs = []
        for _ in range(3):
            aggregator = tio.PatchAggregator.from_sampler(sampler, overlap_mode=mode)
            replay = iter(outputs)
            with PeakMemory() as ours_memory:
                start = time.perf_counter()
                result = ours(aggregator, replay)
                outside = time.perf_counter() - start
            runs.append((outside, ours.aggregate, ours_memory.extra_mib))  # type: ignore[attr-defined]
            del aggregator
        outside, aggregate_time, ours_mib = min(runs)
        locations = sampler.locations
        plain_runs = []
        for _ in range(3):
            with PeakMemory() as plain_memory:
                start = time.perf_counter()
                plain = reference_aggregate(
                    sampler.spatial_shape, outputs, locations, mode, overlap
                )
                plain_runs.append((time.perf_counter() - start, plain_memory.extra_mib))
        plain_time, plain_mib = min(plain_runs)
        error = float(np.abs(result.numpy() - plain).max())
        assert error < 1e-4, f"{mode}: differs from the plain loop by {error}"
        del result, plain
        lines.append(
            f"  {mode:<9} {outside:>12.2f} s {aggregate_time:>10.2f} s {outside + model_time:>6.2f} s "
            f"{plain_time:>9.2f} s {plain_time / aggregate_time:>8.1f}× "
            f"{ours_mib:>9.0f} {plain_mib:>10.0f}"
        )
    return lines


def plain_add(
    sums: np.ndarray,
    weights: np.ndarray,
    patches: np.ndarray,
    locations: list[tio.PatchLocation],
    window: np.ndarray,
) -> None:
    """The plain way for one batch: each patch times its window into NumPy buffers."""
    for patch, location in zip(patches, locations, strict=True):
        box = (slice(None), *location.to_slices())
        sums[box] += patch * window
        weights[box] += window


def best_of(repeats: int, function: Callable[[], Any]) -> float:
    function()  # warm: allocate, build the window and the index template
    return min(timed(function)[0] for _ in range(repeats))


def run_add_paths(shape: tuple[int, int, int], repeats: int = 15) -> list[str]:
    """Milliseconds per ``add_batch`` of 4 patches on each path, best of ``repeats``."""
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


def run_on_disk(folder: str, quick: bool) -> list[str]:
    shape = (192, 192, 128) if quick else (384, 384, 256)
    channels = 2
    volume = np.random.default_rng(1).random(shape, dtype=np.float32)
    path = os.path.join(folder, "big.nii")
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    del volume
    subject = tio.Subject(t1=tio.ScalarImage(path))
    sampler = tio.GridSampler(subject, 64, 16)
    out = os.path.join(folder, "big-out.nii.zarr")
    aggregator = tio.PatchAggregator.from_sampler(
        sampler, overlap_mode="hann", on_disk=out, chunks=(64, 64, 32)
    )
    output_mib = channels * 4 * np.prod(shape) / 2**20
    in_memory_mib = output_mib * 1.5  # sums and one-channel weights
    with PeakMemory() as memory, torch.inference_mode():
        start = time.perf_counter()
        for batch in SubjectsLoader(sampler, batch_size=4):
            x = batch.t1.data
            aggregator.add_batch(torch.cat([x, 1 - x], 1), batch)
        aggregator.finish()
        elapsed = time.perf_counter() - start
    bound_mib = aggregator.memory_bound / 2**20
    check = aggregator.get_image()[:, 100:102, 50:52, 60:62].data
    expected = subject.t1.data[:, 100:102, 50:52, 60:62]
    assert torch.allclose(check[0:1], expected, atol=1e-5)
    size = sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(out)
        for name in names
    )
    return [
        f"on disk: {'×'.join(map(str, shape))}, {channels} channels, hann, {len(sampler)} patches "
        f"(identity-like model): {elapsed:.2f} s",
        f"  output {output_mib:.0f} MiB (in memory: {in_memory_mib:.0f} MiB with weights); "
        f"allowed {bound_mib:.0f} MiB; peak extra {memory.extra_mib:.0f} MiB "
        f"({memory.extra_mib / in_memory_mib:.0%} of in-memory); file {size / 2**20:.0f} MiB",
    ]


def main() -> None:
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        # glibc keeps freed blocks for reuse, which hides later allocations from RSS: hand
        # blocks over 64 KiB back to the system so that each phase's peak is its own
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_ARENA_MAX": "1"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 128×128×96 volume, for a smoke run")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1 by default: on a shared, oversubscribed machine "
        "OpenMP barriers in every parallel kernel stall whenever a thread is descheduled)",
    )
    parser.add_argument(
        "--add-paths-only",
        action="store_true",
        help="only time the two ways of adding one batch (per patch, whole batch) and the plain loop",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = (128, 128, 96) if args.quick else (256, 256, 176)
    if args.add_paths_only:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, volume {shape}")
        for line in run_add_paths(shape):
            print(line, flush=True)
        return
    model = small_net()
    lines = [
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, volume {'×'.join(map(str, shape))}"
    ]
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as folder:
        path = os.path.join(folder, "volume.nii")
        volume = np.random.default_rng(0).random(shape, dtype=np.float32)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
        tensor = torch.from_numpy(volume)[None, None]
        with PeakMemory() as full_memory, torch.inference_mode():
            full_time, full = timed(lambda: model(tensor))
        del full
        lines.append(
            f"full-volume forward: {full_time:.2f} s, peak extra {full_memory.extra_mib:.0f} MiB"
        )
        print(lines[-1], flush=True)
        for overlap in (16, 8):
            for line in run_overlap(path, model, overlap, batch_size=4):
                lines.append(line)
                print(line, flush=True)
        for line in run_add_paths(shape):
            print(line, flush=True)
        for line in run_on_disk(folder, args.quick):
            print(line, flush=True)


if __name__ == "__main__":
    main()

"""Patch-based training: the Queue beside a plain nibabel loop, and label sampling at scale.

Part 1: one epoch over 16 subjects of 256×256×176 (int16), ``.nii`` and
``.nii.gz``; patch 64, 10 patches per volume, batch 16, flip + noise; with 0
and 2 workers. Baseline: load each subject whole with nibabel, cut 10 random
patches, flip + noise, collate (the same work, done the plain way; run inline
and with 2 threads). Figures: patches per second, time to first batch, peak
memory of the process tree (PSS, which counts shared pages once, and anonymous
RSS, which leaves out memory-mapped file pages), sampled every 5 ms with psutil
over the process and its children. Each configuration runs in a fresh process, ``REPEATS`` times
(interleaved): the table shows the fastest epoch and the highest peak.

Part 2: ``LabelSampler`` on a 724×868×724 uint8 label map (455 M voxels, past
torch.multinomial's 2^24), ``{0: 0.5, 1: 0.5}``, 100 patches of 64³: time of
the first call (builds the tables), of a second call (tables cached), and peak
memory; baseline: the loop a user writes with NumPy: count each class slab by
slab (16 planes along ``k`` through nibabel's proxy), then for each patch draw
a class, a slab in proportion to its count, and a voxel of that class in it.

Every child process uses one torch intra-op thread (see ``main``).

Run: ``python benchmarks/bench_training.py [--quick] [--folder /tmp/bench_training]``
(``--quick``: 4 subjects of 128×128×96, patch 32, a 256×256×200 map).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import psutil
import torch

QUICK = os.environ.get("VOXELFLOW_BENCH_QUICK") == "1"  # set by --quick, seen by the children
SHAPE = (128, 128, 96) if QUICK else (256, 256, 176)
SUBJECTS = 4 if QUICK else 16
PATCH = 32 if QUICK else 64
PER_VOLUME = 10
BATCH = 16
BIG = (256, 256, 200) if QUICK else (724, 868, 724)
REPEATS = 1 if QUICK else 2  # runs per configuration: fastest epoch, highest peak memory


# ---------------------------------------------------------------------- data
def make_subjects(folder: Path) -> None:
    """16 MRI-like int16 volumes (smooth anatomy + noise) as .nii and .nii.gz."""
    from tqdm import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    i, j, k = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in SHAPE], indexing="ij")
    anatomy = 800 * np.exp(-(i**2 + j**2 + k**2) * 2) + 200 * np.cos(6 * i) * np.sin(5 * j)
    rng = np.random.default_rng(0)
    for n in tqdm(range(SUBJECTS), desc="writing subjects"):
        path = folder / f"sub{n:02d}.nii"
        if path.exists() and (folder / f"sub{n:02d}.nii.gz").exists():
            continue
        noise = rng.normal(0, 20, size=SHAPE).astype(np.float32)
        volume = (np.roll(anatomy, 3 * n, axis=0) + noise).astype(np.int16)
        image = nib.Nifti1Image(volume, np.diag([1.0, 1.0, 1.2, 1.0]))
        nib.save(image, path)
        nib.save(image, folder / f"sub{n:02d}.nii.gz")


def make_label_map(path: Path) -> None:
    """A 724×868×724 uint8 label map written slab by slab through a memory map:
    background 0, a ball of label 1 (radius 10, ~4 k voxels), a slab of label 2."""
    if path.exists():
        return
    header = nib.Nifti1Header()
    header.set_data_shape(BIG)
    header.set_data_dtype(np.uint8)
    header.set_qform(np.eye(4), code=1)
    header.set_sform(np.eye(4), code=1)
    offset = 352
    header["vox_offset"] = offset
    with open(path, "wb") as file:
        header.write_to(file)
        file.write(b"\0" * (offset - file.tell()))
    size = offset + int(np.prod(BIG))
    with open(path, "r+b") as file:
        file.truncate(size)
    data = np.memmap(path, dtype=np.uint8, mode="r+", offset=offset, shape=BIG, order="F")
    centre = (np.asarray(BIG) * [0.55, 0.58, 0.41]).astype(int)  # (400, 500, 300) at full size
    ii, jj = np.meshgrid(np.arange(BIG[0]), np.arange(BIG[1]), indexing="ij")
    for k in range(BIG[2]):  # one k-plane at a time: contiguous in Fortran order
        plane = np.zeros(BIG[:2], dtype=np.uint8)
        plane[:, 100:110] = 2
        dk = k - centre[2]
        if abs(dk) <= 10:
            plane[(ii - centre[0]) ** 2 + (jj - centre[1]) ** 2 + dk**2 <= 100] = 1
        data[:, :, k] = plane
    data.flush()
    del data


# ---------------------------------------------------------------------- runs (child side)
def run_queue(folder: str, suffix: str, workers: int, max_length: int) -> dict[str, float]:
    import voxelflow as tio
    from voxelflow.loader import SubjectsLoader

    paths = sorted(Path(folder).glob(f"sub*{suffix}"))
    paths = [
        p
        for p in paths
        if p.name.endswith(suffix) and (suffix == ".nii.gz" or not p.name.endswith(".gz"))
    ]
    subjects = [tio.Subject(t1=tio.ScalarImage(p)) for p in paths]
    transform = tio.Compose([tio.Flip(axes=(0,), p=0.5), tio.Noise(std=0.1)])
    queue = tio.Queue(
        subjects,
        tio.UniformSampler(patch_size=PATCH),
        max_length=max_length,
        patches_per_volume=PER_VOLUME,
        num_workers=workers,
        transform=transform,
        seed=0,
    )
    start = time.perf_counter()
    first = None
    count = 0
    for batch in SubjectsLoader(queue, batch_size=BATCH):
        if first is None:
            first = time.perf_counter() - start
        count += batch.batch_size
        assert batch.t1.data.shape[1:] == (1, PATCH, PATCH, PATCH)
    total = time.perf_counter() - start
    assert count == len(queue) == len(subjects) * PER_VOLUME
    return {"patches": count, "seconds": total, "first_batch": first or 0.0}


def run_baseline(folder: str, suffix: str, workers: int) -> dict[str, float]:
    """Load each subject whole with nibabel, crop 10 patches, flip + noise, collate."""
    paths = sorted(Path(folder).glob(f"sub*{suffix}"))
    paths = [
        p
        for p in paths
        if p.name.endswith(suffix) and (suffix == ".nii.gz" or not p.name.endswith(".gz"))
    ]
    generator = torch.Generator().manual_seed(0)

    def patches_of(path: Path) -> list[torch.Tensor]:
        volume = np.asarray(nib.load(path).dataobj)  # the whole subject
        rng = np.random.default_rng(int(path.name[3:5]))
        out = []
        for _ in range(PER_VOLUME):
            i, j, k = (int(rng.integers(0, s - PATCH + 1)) for s in SHAPE)
            patch = torch.from_numpy(volume[i : i + PATCH, j : j + PATCH, k : k + PATCH].copy())
            out.append(patch[None])
        return out

    start = time.perf_counter()
    first = None
    count = 0
    pending: list[torch.Tensor] = []
    executor = ThreadPoolExecutor(workers) if workers else None
    results = executor.map(patches_of, paths) if executor else map(patches_of, paths)
    for patches in results:
        for patch in patches:
            data = patch.float()
            if torch.rand((), generator=generator) < 0.5:
                data = data.flip(1)
            pending.append(data + 0.1 * torch.randn(data.shape, generator=generator))
            if len(pending) == BATCH:
                batch = torch.stack(pending)
                pending = []
                count += batch.shape[0]
                if first is None:
                    first = time.perf_counter() - start
    if pending:
        count += len(pending)
    total = time.perf_counter() - start
    if executor:
        executor.shutdown()
    return {"patches": count, "seconds": total, "first_batch": first or 0.0}


def run_labels(path: str, baseline: bool) -> dict[str, float]:
    import voxelflow as tio

    if baseline:  # count labels slab by slab with NumPy, then draw class, slab, voxel
        start = time.perf_counter()
        proxy = nib.load(path).dataobj
        half = PATCH // 2
        lo = [half] * 3
        hi = [s - PATCH + half + 1 for s in BIG]  # valid centres: lo <= c < hi
        slabs = list(range(lo[2], hi[2], 16))
        counts = np.zeros((2, len(slabs)))
        for n, k0 in enumerate(slabs):
            slab = np.asarray(proxy[lo[0] : hi[0], lo[1] : hi[1], k0 : min(k0 + 16, hi[2])])
            counts[:, n] = (slab == 0).sum(), (slab == 1).sum()
        rng = np.random.default_rng(0)
        patches = []
        for _ in range(100):
            cls = int(rng.random() < 0.5)
            n = rng.choice(len(slabs), p=counts[cls] / counts[cls].sum())
            k0 = slabs[n]
            slab = np.asarray(proxy[lo[0] : hi[0], lo[1] : hi[1], k0 : min(k0 + 16, hi[2])])
            flat = np.flatnonzero(slab == cls)
            i, j, k = np.unravel_index(flat[rng.integers(len(flat))], slab.shape)
            c = (i + lo[0] - half, j + lo[1] - half, k + k0 - half)
            patches.append(
                np.asarray(proxy[c[0] : c[0] + PATCH, c[1] : c[1] + PATCH, c[2] : c[2] + PATCH])
            )
        elapsed = time.perf_counter() - start
        return {"first_call": elapsed, "second_call": float("nan"), "patches": len(patches)}
    subject = tio.Subject(seg=tio.LabelMap(path))
    sampler = tio.LabelSampler(
        patch_size=PATCH, label_name="seg", label_probabilities={0: 0.5, 1: 0.5}
    )
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    patches = list(sampler(subject, 100, generator))
    first = time.perf_counter() - start
    on_label = np.mean(
        [p.seg.data[0, PATCH // 2, PATCH // 2, PATCH // 2].item() == 1 for p in patches]
    )
    start = time.perf_counter()
    again = list(sampler(subject, 100, generator))
    second = time.perf_counter() - start
    assert len(again) == 100
    return {
        "first_call": first,
        "second_call": second,
        "patches": len(patches),
        "on_label_1": float(on_label),
    }


# ---------------------------------------------------------------------- parent side
def _tree_memory(process: psutil.Process) -> tuple[int, int]:
    """``(PSS, anonymous RSS)`` summed over the process and its children."""
    rss = anon = 0
    try:
        tree = [process, *process.children(recursive=True)]
    except psutil.Error:  # the process ended between two samples
        return 0, 0
    for proc in tree:
        try:
            rss += proc.memory_full_info().pss
            with open(f"/proc/{proc.pid}/status") as status:
                for line in status:
                    if line.startswith("RssAnon:"):
                        anon += int(line.split()[1]) * 1024
        except (psutil.Error, FileNotFoundError, ProcessLookupError):
            continue
    return rss, anon


def measure(args: list[str]) -> dict[str, float]:
    """Run ``bench_training.py --child ...`` and sample its process tree's memory."""
    command = [sys.executable, __file__, "--child", *args]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    process = psutil.Process(child.pid)
    peak = [0, 0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            rss, anon = _tree_memory(process)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], anon)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, _ = child.communicate()
    done.set()
    watcher.join()
    if child.returncode != 0:
        raise SystemExit(f"child {args} failed with {child.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mib"] = peak[0] / 2**20  # PSS of the tree
    result["peak_anon_mib"] = peak[1] / 2**20
    return result


def baseline_process_mib() -> float:
    """RSS of a process that only imported torch, nibabel and voxelflow (subtract mentally)."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import torch, nibabel, psutil, voxelflow; print(psutil.Process().memory_info().rss)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default="/tmp/bench_training")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument(
        "--quick", action="store_true", help="4 subjects of 128×128×96, patch 32, a 256×256×200 map"
    )
    parser.add_argument("--skip-labels", action="store_true", help="only part 1 (the epochs)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        # One intra-op thread everywhere: on a small shared machine, torch's OpenMP threads
        # spin against each other and make main-thread tensor maths 10x slower or more.
        torch.set_num_threads(1)
        kind, *rest = args.child
        if kind == "queue":
            result = run_queue(rest[0], rest[1], int(rest[2]), int(rest[3]))
        elif kind == "baseline":
            result = run_baseline(rest[0], rest[1], int(rest[2]))
        else:
            result = run_labels(rest[0], rest[1] == "baseline")
        print(json.dumps(result))
        return

    if args.quick and not QUICK:
        os.environ["VOXELFLOW_BENCH_QUICK"] = "1"
        os.execv(sys.executable, [sys.executable, __file__, *sys.argv[1:]])
    folder = Path(args.folder)
    torch.set_num_threads(1)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    make_subjects(folder)
    print(
        f"machine: {os.cpu_count()} cores; a bare process (torch+nibabel+voxelflow) holds "
        f"{baseline_process_mib():.0f} MiB RSS"
    )
    print(
        f"\n## One epoch: {SUBJECTS} subjects of {'×'.join(map(str, SHAPE))} int16, patch {PATCH}, "
        f"{PER_VOLUME} patches/volume, batch {BATCH}, flip + noise"
    )
    header = f"{'format':8} {'method':34} {'patches/s':>10} {'1st batch s':>12} {'epoch s':>8} {'peak PSS MiB':>13} {'peak anon MiB':>14}"
    print(header)
    rows = {}
    for suffix in (".nii", ".nii.gz"):
        configs = [
            ("voxelflow Queue, 0 workers", ["queue", str(folder), suffix, "0", "300"]),
            ("voxelflow Queue, 2 workers", ["queue", str(folder), suffix, "2", "300"]),
            ("voxelflow Queue, 2 workers, max 48", ["queue", str(folder), suffix, "2", "48"]),
            ("nibabel whole + crop, inline", ["baseline", str(folder), suffix, "0"]),
            ("nibabel whole + crop, 2 threads", ["baseline", str(folder), suffix, "2"]),
        ]
        for _ in range(REPEATS):  # interleaved, so that load from other processes hits all
            for name, child in configs:
                r = measure(child)
                best = rows.get((suffix, name))
                if best is None or r["seconds"] < best["seconds"]:
                    if best is not None:
                        r["peak_rss_mib"] = max(r["peak_rss_mib"], best["peak_rss_mib"])
                        r["peak_anon_mib"] = max(r["peak_anon_mib"], best["peak_anon_mib"])
                    rows[(suffix, name)] = r
                else:
                    best["peak_rss_mib"] = max(r["peak_rss_mib"], best["peak_rss_mib"])
                    best["peak_anon_mib"] = max(r["peak_anon_mib"], best["peak_anon_mib"])
        for name, _ in configs:
            r = rows[(suffix, name)]
            print(
                f"{suffix:8} {name:34} {r['patches'] / r['seconds']:10.1f} {r['first_batch']:12.2f} "
                f"{r['seconds']:8.2f} {r['peak_rss_mib']:13.0f} {r['peak_anon_mib']:14.0f}",
                flush=True,
            )
        for workers in ("0", "2"):
            vf = rows[(suffix, f"voxelflow Queue, {workers} workers")]
            base = rows[
                (suffix, "nibabel whole + crop, " + ("inline" if workers == "0" else "2 threads"))
            ]
            print(
                f"  {suffix} {workers} workers: throughput ×{base['seconds'] / vf['seconds']:.2f} vs baseline, "
                f"peak anon ×{vf['peak_anon_mib'] / base['peak_anon_mib']:.2f}"
            )

    if args.skip_labels:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        return
    label_path = folder / "labels_724x868x724.nii"
    print(
        f"\n## LabelSampler on {'×'.join(map(str, BIG))} uint8 ({np.prod(BIG) / 1e6:.0f} M voxels), "
        f"{{0: 0.5, 1: 0.5}}, 100 patches of {PATCH}³"
    )
    t = time.perf_counter()
    make_label_map(label_path)
    print(f"(label map written slab by slab in {time.perf_counter() - t:.1f} s)")
    for name, mode in (
        ("voxelflow LabelSampler (block tables)", "voxelflow"),
        ("NumPy slab-by-slab counting loop", "baseline"),
    ):
        r = measure(["labels", str(label_path), mode])
        extra = f", on label 1: {r['on_label_1']:.2f}" if "on_label_1" in r else ""
        print(
            f"{name:40} first call {r['first_call']:6.2f} s, cached call {r['second_call']:6.2f} s, "
            f"peak PSS {r['peak_rss_mib']:6.0f} MiB, peak anon {r['peak_anon_mib']:6.0f} MiB{extra}",
            flush=True,
        )
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The command line's start and its safety checks, beside their baselines in one run.

* Start: ``python -m voxelflow --version`` and ``infer --help`` in fresh processes, beside
  ``python -c "import torch"`` (what ``--version`` cost when it imported torch) and the
  bare interpreter, interleaved, median of N.
* Model check: :func:`voxelflow.cli._model.check_exported_archive` on a ``.pt2`` of a
  3-D conv net, beside ``torch.export.load`` of the same bytes (the load it guards).
* Lossless check: :func:`voxelflow.convert.check_lossless` per output format, beside
  converting a volume to that format.

Usage: ``python benchmarks/bench_cli.py [--quick] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _fresh(args: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=SRC)
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def _median_ms(function: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def bench_start(repeats: int) -> None:
    cases = {
        "python -m voxelflow --version": ["-m", "voxelflow", "--version"],
        "python -m voxelflow infer --help": ["-m", "voxelflow", "infer", "--help"],
        'baseline: python -c "import torch"': ["-c", "import torch"],
        'floor: python -c "pass"': ["-c", "pass"],
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):  # interleaved: load changes hit every case alike
        for name, args in cases.items():
            times[name].append(_fresh(args))
    baseline = statistics.median(times['baseline: python -c "import torch"'])
    print("\n## Start (fresh process, median of", repeats, ")")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<40} {median * 1000:8.0f} ms   {median / baseline:5.2f}× import torch")


class Net(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(1, width, 3, padding=1),
            nn.BatchNorm3d(width),
            nn.ReLU(),
            nn.Conv3d(width, width, 3, padding=1),
            nn.BatchNorm3d(width),
            nn.ReLU(),
            nn.Conv3d(width, 3, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).softmax(dim=1)


def bench_model_check(width: int, repeats: int) -> None:
    from voxelflow.cli._model import check_exported_archive

    model = Net(width).eval()
    axes = {0: torch.export.Dim("batch", max=64)} | {a: torch.export.Dim.AUTO for a in (2, 3, 4)}
    program = torch.export.export(model, (torch.rand(2, 1, 16, 16, 16),), dynamic_shapes=(axes,))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    data = buffer.getvalue()
    check = _median_ms(lambda: check_exported_archive("model.pt2", data), repeats)
    load = _median_ms(lambda: torch.export.load(io.BytesIO(data)).module(), repeats)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"\n## Exported-program check ({params / 1e6:.2f} M parameters, {len(data) / 2**20:.1f} MiB)"
    )
    print(f"check_exported_archive            {check:8.1f} ms")
    print(
        f"baseline: torch.export.load + .module() {load:8.1f} ms   (check = {check / load:.0%} of it)"
    )


def bench_lossless(side: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as scratch:
        _lossless_in(Path(scratch), side, repeats)


def _lossless_in(folder: Path, side: int, repeats: int) -> None:
    import voxelflow as tio
    from voxelflow.convert import check_lossless, convert

    source = folder / "source.nii"
    tio.ScalarImage(torch.rand(1, side, side, side), affine=np.diag([0.9, 1.1, 1.3, 1])).save(
        source
    )
    image = tio.ScalarImage(source)
    print(f"\n## Lossless check (a {side}³ float32 volume, median of {repeats})")
    for suffix in (".nii.gz", ".nii.zarr", ".nrrd", ".mha"):
        check = _median_ms(lambda s=suffix: check_lossless(image, folder / f"x{s}"), repeats)
        target = folder / f"out{suffix}"
        whole = _median_ms(
            lambda t=target: convert(source, t, progress=False), max(1, repeats // 2)
        )
        print(f"{suffix:<10} check {check:7.1f} ms   baseline: the conversion {whole:8.1f} ms "
              f"(check = {check / whole:.1%} of it)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller model and volume")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print("load average:", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    bench_start(args.repeats)
    bench_model_check(16 if args.quick else 64, args.repeats)
    bench_lossless(64 if args.quick else 160, args.repeats)


if __name__ == "__main__":
    main()

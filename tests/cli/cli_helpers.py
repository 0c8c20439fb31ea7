"""Helpers for the command-line tests: run ``python -m voxelflow`` as a user would, and
small model files (TorchScript and exported programs) made on the fly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

SRC = Path(__file__).resolve().parents[2] / "src"


def run_cli(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``python -m voxelflow ARGS`` in a fresh process, with this checkout's sources first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [sys.executable, "-m", "voxelflow", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        encoding="utf-8",  # not the locale's: SimpleITK may set it to C mid-session
        timeout=timeout,
        check=False,
    )


_MANY = """
import contextlib, io, json, sys, traceback
from voxelflow.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    out, err, code = io.StringIO(), io.StringIO(), 0
    sys.argv = ["voxelflow", *argv]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        except BaseException:  # what a fresh process would print before dying
            traceback.print_exc()
            code = 1
    results.append([code, out.getvalue(), err.getvalue()])
print("RESULTS" + json.dumps(results))
"""


def run_cli_many(
    argvs: list[list[str]], *, cwd: Path, timeout: float = 300
) -> list[subprocess.CompletedProcess[str]]:
    """Several command lines through ``voxelflow.cli.main`` in one fresh process.

    The entry point, stdout, stderr and exit codes are the real ones; torch is
    imported once instead of once per case (the suite runs on two cores).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    done = subprocess.run(
        [sys.executable, "-c", _MANY, json.dumps(argvs)],
        cwd=cwd,
        env=env,
        capture_output=True,
        encoding="utf-8",  # not the locale's: SimpleITK may set it to C mid-session
        timeout=timeout,
        check=False,
    )
    line = next((line for line in done.stdout.splitlines() if line.startswith("RESULTS")), None)
    assert line is not None, done.stderr
    return [
        subprocess.CompletedProcess(["voxelflow", *argv], code, out, err)
        for argv, (code, out, err) in zip(argvs, json.loads(line[len("RESULTS") :]), strict=True)
    ]


def assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> str:
    """Exit code 1, exactly one line on stderr starting with ``error:``, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    assert fragment in lines[0], lines[0]
    return lines[0]


class Net(nn.Module):
    """A 3-D convolution and a softmax: fully convolutional, any patch size."""

    def __init__(self, in_channels: int = 1, out_channels: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).softmax(dim=1)


@dataclass(frozen=True)
class Files:
    """Files of a small inference problem in one folder."""

    folder: Path
    model: Net  # the eager model behind every file
    torchscript: Path  # 1 input channel
    two_channels: Path  # a TorchScript model taking 2 input channels
    static: Path  # exported program, fixed input (2, 1, 8, 8, 8)
    dynamic: Path  # exported program, dynamic batch and spatial sizes
    image: Path  # 1-channel float32 volume, 20×18×14 (odd and even sides)
    affine: np.ndarray


_FILES: list[Files] = []


def make_files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    """The files, made once per test session (each test module's fixture calls this)."""
    if _FILES:
        return _FILES[0]
    folder = tmp_path_factory.mktemp("cli-files")
    model = Net().eval()
    torch.jit.save(torch.jit.script(model), folder / "model.pt")
    torch.jit.save(torch.jit.script(Net(in_channels=2).eval()), folder / "two.pt")
    example = torch.rand(2, 1, 8, 8, 8)
    torch.export.save(torch.export.export(model, (example,)), folder / "static.pt2")
    dims = {0: torch.export.Dim("batch", min=1, max=64)} | {
        axis: torch.export.Dim.AUTO for axis in (2, 3, 4)
    }
    program = torch.export.export(model, (example,), dynamic_shapes=(dims,))
    torch.export.save(program, folder / "dynamic.pt2")
    volume = np.random.default_rng(0).random((20, 18, 14)).astype(np.float32)
    affine = np.diag([0.9, 1.1, 1.3, 1.0])
    affine[:3, 3] = (5, -3, 2)
    nib.save(nib.Nifti1Image(volume, affine), folder / "input.nii.gz")
    _FILES.append(
        Files(
            folder,
            model,
            folder / "model.pt",
            folder / "two.pt",
            folder / "static.pt2",
            folder / "dynamic.pt2",
            folder / "input.nii.gz",
            affine,
        )
    )
    return _FILES[0]

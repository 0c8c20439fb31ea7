"""Every bad input exits 1 with one line on stderr and no traceback; bad usage exits 2;
``--debug`` shows the traceback. Each case runs ``python -m voxelflow`` in a subprocess."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from cli_helpers import Files, assert_one_line_error, make_files, run_cli, run_cli_many


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return make_files(tmp_path_factory)


@pytest.fixture(scope="module")
def bad(files: Files) -> Path:
    """Impossible headers (built with nibabel, then edited), an Analyze pair, a plain .nii."""
    folder = files.folder / "bad"
    folder.mkdir(exist_ok=True)
    data = np.zeros((4, 5, 6), np.float32)
    for name, dims in (("zero", [3, 4, 0, 6]), ("negative", [3, 4, -5, 6])):
        header = nib.Nifti1Image(data, np.eye(4)).header.copy()
        dim = header["dim"].copy()
        dim[:4] = dims
        header["dim"] = dim
        with open(folder / f"{name}.nii", "wb") as stream:
            stream.write(header.binaryblock + b"\0" * 4 + data.tobytes())
    nib.save(nib.AnalyzeImage(data + 1, np.diag([2.0, 2.0, 2.0, 1.0])), folder / "analyze.hdr")
    nib.save(nib.Nifti1Image(data, np.eye(4)), folder / "plain.nii")
    (folder / "taken.nii.gz").mkdir(exist_ok=True)
    (folder / "taken.nii.gz" / "keep.txt").write_text("not the library's")
    return folder


CUDA = torch.cuda.is_available()

#: case: (what the one line must say, extra options, which model / output / input)
INFER_CASES: dict[str, tuple[str, list[str], dict[str, str]]] = {
    "workers": ("--workers -1: must be 0 or more", ["--workers", "-1"], {}),
    "batch": ("--batch 0: must be 1 or more", ["--batch", "0"], {}),
    "overlap": ("--overlap 8 must be smaller than the patch", ["--overlap", "8"], {}),
    "mode": ("Did you mean 'hann'?", ["--mode", "han"], {}),
    "cuda": ("CUDA is not available on this machine", ["--device", "cuda"], {}),
    "device-name": ("--device 'gpu0' is not a device name", ["--device", "gpu0"], {}),
    "channels": ("takes 2 input channel(s) but", [], {"model": "two_channels"}),
    "foo": ("x.foo: .foo cannot hold", [], {"out": "x.foo"}),
    "png": ("keeps a 2-D image", ["--argmax"], {"out": "x.png"}),
    "no-folder": ("does not exist; create it first", [], {"out": "no/such/out.nii.gz"}),
    "directory": ("already exists and is a directory", [], {"out": "bad/taken.nii.gz"}),
    "static-batch": ("fixed input shape (2, 1, 8, 8, 8)", ["--batch", "3"], {"model": "static"}),
    "static-patch": ("or pass --patch 8", ["--patch", "12"], {"model": "static"}),
    "not-a-model": ("not a TorchScript model", [], {"model": "image"}),
    "missing-model": ("missing.pt: no such model file", [], {"model": "missing"}),
    "missing-input": ("nope.nii.gz: no such file", [], {"image": "nope.nii.gz"}),
    "backend": ("--backend nifti-gzz is not registered", ["--backend", "nifti-gzz"], {}),
}
#: case: (what the one line must say, the command line)
FILE_CASES: dict[str, tuple[str, list[str]]] = {
    "info zero dims": ("zero.nii", ["info", "bad/zero.nii"]),
    "info negative dims": ("negative.nii", ["info", "bad/negative.nii"]),
    "convert zero dims": ("zero.nii", ["convert", "bad/zero.nii", "z.nii.zarr"]),
    "convert negative dims": ("negative.nii", ["convert", "bad/negative.nii", "n.nii"]),
    "convert to png": ("out.png: .png cannot hold", ["convert", "input.nii.gz", "out.png"]),
    "convert to jpg": ("out.jpg: .jpg cannot hold", ["convert", "input.nii.gz", "out.jpg"]),
    "index missing": ("missing.nii: no such file", ["index", "missing.nii"]),
    "index a .nii": ("not a .nii.gz file", ["index", "bad/plain.nii"]),
    "info analyze": ("--backend simpleitk", ["info", "bad/analyze.hdr"]),
    "info bad backend": (
        "Did you mean 'simpleitk'?",
        ["info", "bad/analyze.hdr", "--backend", "simpleitkk"],
    ),
    "info missing": ("nope.nii.zarr", ["info", "nope.nii.zarr"]),
}


def _infer_argv(
    files: Files,
    extra: list[str],
    model: str = "torchscript",
    out: str = "o.nii.gz",
    image: str = "",
) -> list[str]:
    model_path = {"missing": "missing.pt"}.get(model) or str(getattr(files, model))
    return [
        "infer",
        model_path,
        image or str(files.image),
        out,
        *("--patch", "8", "--overlap", "2", "--quiet"),
        *extra,
    ]


@pytest.fixture(scope="module")
def results(files: Files, bad: Path) -> dict[str, Any]:
    """Every case once, in one fresh process (see ``run_cli_many``), from the files' folder."""
    before = set(os.listdir(files.folder))
    argvs = [_infer_argv(files, extra, **where) for _, extra, where in INFER_CASES.values()]
    argvs += [argv for _, argv in FILE_CASES.values()]
    argvs += [["info", "bad/analyze.hdr", "--backend", "simpleitk", "--json"]]
    names = [*INFER_CASES, *FILE_CASES, "analyze with --backend"]
    found: dict[str, Any] = dict(zip(names, run_cli_many(argvs, cwd=files.folder), strict=True))
    found["written"] = sorted(set(os.listdir(files.folder)) - before)
    return found


@pytest.mark.parametrize("case", list(INFER_CASES))
def test_infer_bad_inputs(results: dict[str, Any], bad: Path, case: str) -> None:
    if case == "cuda" and CUDA:
        pytest.skip("CUDA is available here")
    assert_one_line_error(results[case], INFER_CASES[case][0])
    assert results["written"] == []  # no output, no partial, no probe file
    assert (bad / "taken.nii.gz" / "keep.txt").read_text() == "not the library's"


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_file_commands_bad_inputs(results: dict[str, Any], case: str) -> None:
    assert_one_line_error(results[case], FILE_CASES[case][0])
    assert results["written"] == []


def test_a_bad_input_in_its_own_process(files: Files, tmp_path: Path) -> None:
    """The same contract without the shared process: the console entry point end to end."""
    result = run_cli(*_infer_argv(files, ["--workers", "-1"]), cwd=tmp_path)
    assert_one_line_error(result, "--workers -1: must be 0 or more")
    result = run_cli("convert", str(files.image), "out.png", cwd=tmp_path)
    assert_one_line_error(result, "out.png: .png cannot hold")
    assert os.listdir(tmp_path) == []


def test_impossible_header_is_not_printed_as_facts(results: dict[str, Any]) -> None:
    """``info`` used to print a negative memory size and exit 0."""
    assert results["info negative dims"].stdout == results["info zero dims"].stdout == ""


def test_analyze_with_backend_option_reads(results: dict[str, Any]) -> None:
    result = results["analyze with --backend"]
    assert result.returncode == 0, result.stderr
    assert '"spacing": [\n    2.0,\n    2.0,\n    2.0\n  ]' in result.stdout
    assert '"shape (C, I, J, K)": [\n    1,\n    4,\n    5,\n    6\n  ]' in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["convert", "input.nii.gz"], "Missing argument"),
        (["infer", "model.pt", "input.nii.gz", "o.nii.gz", "--patchsize", "8"], "No such option"),
        (["infer", "model.pt", "input.nii.gz", "o.nii.gz", "--workers", "many"], "--workers"),
        (["frobnicate"], "No such command"),
    ],
)
def test_bad_usage_exits_2(files: Files, args: list[str], fragment: str) -> None:
    result = run_cli(*args, cwd=files.folder)
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr and "Traceback" not in result.stderr


def test_debug_shows_the_traceback(files: Files) -> None:
    quiet = run_cli("index", "missing.nii", cwd=files.folder)
    loud = run_cli("--debug", "index", "missing.nii", cwd=files.folder)
    assert quiet.returncode == loud.returncode == 1
    assert "Traceback" not in quiet.stderr
    assert "Traceback (most recent call last)" in loud.stderr
    assert "VoxelflowFileNotFoundError: missing.nii: no such file" in loud.stderr

"""The command line starts fast: ``--version`` and ``--help`` import no torch, and
``import voxelflow`` imports its public names lazily (PEP 562) yet exposes them all."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import SRC, Files, make_files, run_cli

import voxelflow


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return make_files(tmp_path_factory)


HEAVY = ("torch", "numpy", "nibabel", "zarr", "SimpleITK", "scipy")


def _modules_after(argv: list[str]) -> set[str]:
    """Top-level modules imported by ``python -m voxelflow ARGV`` (run in a fresh process)."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['voxelflow', *{argv!r}]\n"
        "try:\n"
        "    runpy.run_module('voxelflow', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exit:\n"
        "    assert exit.code in (0, None), exit.code\n"
        "print('MODULES', ' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        encoding="utf-8",  # not the locale's: SimpleITK may set it to C mid-session
        timeout=60,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("MODULES"))
    return set(line.split()[1:])


@pytest.mark.parametrize(
    "argv",
    [["--version"], ["--help"], ["info", "--help"], ["convert", "--help"], ["infer", "--help"]],
    ids=" ".join,
)
def test_version_and_help_import_no_torch(argv: list[str]) -> None:
    imported = _modules_after(argv)
    assert "voxelflow" in imported and "typer" in imported  # the command did run
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_version_is_fast_beside_importing_torch(tmp_path: Path) -> None:
    """Measured beside its baseline in the same run, interleaved: the machine may be loaded."""
    version, torch_import = [], []
    for _ in range(3):
        start = time.perf_counter()
        result = run_cli("--version", cwd=tmp_path)
        version.append(time.perf_counter() - start)
        assert (
            result.returncode == 0 and result.stdout.strip() == f"voxelflow {voxelflow.__version__}"
        )
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], check=True, timeout=120)
        torch_import.append(time.perf_counter() - start)
    # Before: --version imported torch, so it took longer than importing torch alone.
    assert min(version) < 0.5 * min(torch_import), (version, torch_import)


def test_python_m_voxelflow_runs_a_command(tmp_path: Path, files: Files) -> None:
    result = run_cli("info", str(files.image), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"shape (C, I, J, K)": [\n    1,\n    20,\n    18,\n    14\n  ]' in result.stdout


def test_import_voxelflow_imports_no_torch() -> None:
    code = "import sys, voxelflow; print('torch' in sys.modules, voxelflow.__version__)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        encoding="utf-8",  # not the locale's: SimpleITK may set it to C mid-session
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == ["False", voxelflow.__version__]


def test_lazy_public_names_agree_with_all_and_type_checking_block() -> None:
    source = Path(voxelflow.__file__).read_text()
    tree = ast.parse(source)
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
    )
    typed = {
        alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert typed == voxelflow._PUBLIC
    assert set(voxelflow._PUBLIC) == set(voxelflow.__all__)
    for name, module in voxelflow._PUBLIC.items():
        assert getattr(voxelflow, name) is getattr(importlib.import_module(module), name)
    assert set(voxelflow.__all__) <= set(dir(voxelflow))
    namespace: dict[str, object] = {}
    exec("from voxelflow import *", namespace)
    assert set(voxelflow.__all__) <= set(namespace)


def test_submodules_and_unknown_names() -> None:
    assert voxelflow.loader.SubjectsLoader.__name__ == "SubjectsLoader"  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        voxelflow.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018


def test_backend_names_in_help_are_the_registered_ones() -> None:
    from voxelflow.backends import backends
    from voxelflow.cli._app import BACKEND_HELP, BUILTIN_BACKENDS

    assert sorted(BUILTIN_BACKENDS) == sorted(registration.name for registration in backends())
    assert all(name in BACKEND_HELP for name in BUILTIN_BACKENDS)

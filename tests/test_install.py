"""The install: a lock that covers every extra and agrees with itself, and the CPU-torch check."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "scripts" / "constraints-py311.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")


def _lock() -> dict[str, Version]:
    pins = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"{LOCK.name}: {line!r} is not a plain name==version pin"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{LOCK.name}: {name} pinned twice"
        pins[name] = Version(match.group(2))
    return pins


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    found = [Requirement(text) for text in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        found += [Requirement(text) for text in extra]
    return [r for r in found if canonicalize_name(r.name) != "voxelflow"]


def test_lock_pins_every_requirement_of_every_extra() -> None:
    pins = _lock()
    environment = default_environment()
    for requirement in _requirements():
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} (pyproject.toml) is not in the lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"the lock pins {name}=={pins[name]}, outside pyproject.toml's {requirement}"
        )
    assert str(pins["torch"]) == "2.13.0+cpu"  # the CPU build, held in every pip call
    assert not any(name.startswith("nvidia-") for name in pins)
    for name in ("s3fs", "aiobotocore", "botocore", "boto3", "fsspec", "moto", "pip"):
        assert name in pins


def test_locked_packages_agree_with_each_other() -> None:
    """``pip check`` over the lock: for every installed distribution at its locked version,
    each requirement on another locked package admits the locked version (the S3 stack:
    s3fs → fsspec and aiobotocore → botocore, boto3 → botocore...)."""
    pins = _lock()
    environment = default_environment()
    checked = 0
    for dist in importlib.metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"] or "")
        if name not in pins or Version(dist.version) != pins[name]:
            continue
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate(
                {**environment, "extra": ""}
            ):
                continue
            other = canonicalize_name(requirement.name)
            if other in pins:
                checked += 1
                assert requirement.specifier.contains(pins[other], prereleases=True), (
                    f"{name}=={pins[name]} needs {requirement}, the lock pins {other}=={pins[other]}"
                )
    assert checked > 20  # the check really ran over the installed stack


def test_venv_script_holds_torch_and_stamps_the_lock() -> None:
    script = (ROOT / "scripts" / "_venv.sh").read_text(encoding="utf-8")
    assert 'VOXELFLOW_LOCK="scripts/constraints-py311.txt"' in script
    assert 'cat pyproject.toml scripts/_venv.sh "$VOXELFLOW_LOCK"' in script  # in the stamp
    installs = [line for line in script.splitlines() if '"${install[@]}"' in line]
    assert len(installs) == 2 and all('-c "$constraints"' in line for line in installs)
    assert installs[0].rstrip().endswith("pip torch")  # torch first, from the lock


def _check(env_path: Path | None) -> subprocess.CompletedProcess[str]:
    env = None if env_path is None else {"PYTHONPATH": str(env_path), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_cpu_torch.py")],
        capture_output=True,
        text=True,
        env=env,
    )


def test_cpu_torch_check_passes_here() -> None:
    import torch

    if torch.version.cuda is not None:  # pragma: no cover - a GPU machine's own venv
        pytest.skip("this environment has a CUDA build of torch")
    done = _check(None)
    assert done.returncode == 0, done.stderr


def _fake_torch(root: Path, version: str, cuda: str | None) -> None:
    package = root / "torch"
    (package / "version").mkdir(parents=True)
    (package / "__init__.py").write_text(f"__version__ = {version!r}\nfrom torch import version\n")
    (package / "version" / "__init__.py").write_text(f"cuda = {cuda!r}\n")


@pytest.mark.parametrize(
    ("version", "cuda", "nvidia", "message"),
    [
        ("2.14.1+cu126", "12.6", False, "is a CUDA 12.6 build"),
        ("2.13.0", None, False, "is not a '+cpu' build"),
        ("2.13.0+cpu", None, True, "CUDA packages are installed: nvidia-cublas-cu12"),
    ],
)
def test_cpu_torch_check_fails_on_a_cuda_build(
    tmp_path: Path, version: str, cuda: str | None, nvidia: bool, message: str
) -> None:
    _fake_torch(tmp_path, version, cuda)
    if nvidia:
        info = tmp_path / "nvidia_cublas_cu12-12.6.4.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: nvidia-cublas-cu12\nVersion: 12.6.4.1\n"
        )
    done = _check(tmp_path)
    assert done.returncode == 1
    assert message in done.stderr and "fix: delete the environment" in done.stderr

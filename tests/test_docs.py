"""The README's and docs/'s Python code blocks run as written, as a user would run them.

Every ```python block runs in an environment with voxelflow and its dependencies
alone (no pytest, no test packages): the ``.venv-docs`` that ``scripts/test.sh``
makes with ``pip install -e .`` at the lock's versions (``$VOXELFLOW_DOCS_PYTHON``),
or, when pytest is run directly, the one this module makes or reuses the same
way. Each block runs in a fresh namespace with a fresh temporary directory as its
working directory, so a block cannot lean on another's variables or files: a
reader can copy any one of them. A page's blocks run in one process, in order.
A block preceded by ``<!-- no-test -->`` is skipped (only for code that needs a
GPU or a cloud account).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from conftest import docs_python, user_env

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- no-test -->\s*)?```python\n(.*?)```", re.S)

# Runs in the docs environment: each block in a fresh namespace and a fresh directory.
RUNNER = r"""
import contextlib, io, json, os, sys, tempfile, traceback
blocks = json.loads(sys.stdin.buffer.read().decode("utf-8"))
results = []
for name, code in blocks:
    with tempfile.TemporaryDirectory() as where:
        os.chdir(where)
        output = io.StringIO()
        try:
            with contextlib.redirect_stdout(output):
                exec(compile(code, name, "exec"), {"__name__": "__main__"})
            error = None
        except BaseException:
            error = traceback.format_exc()
        os.chdir("/")
    results.append({"name": name, "output": output.getvalue(), "error": error})
json.dump(results, sys.stdout)
"""


def _blocks(page: Path) -> list[tuple[str, str]]:
    found = []
    for number, match in enumerate(BLOCK.finditer(page.read_text(encoding="utf-8"))):
        if not match.group(1):
            found.append((f"{page.name}[block {number}]", match.group(2)))
    return found


def _cases() -> list[tuple[str, int]]:
    return [(page.name, n) for page in PAGES for n in range(len(_blocks(page)))]


@cache
def _run_page(name: str) -> dict[int, dict[str, str | None]]:
    page = next(p for p in PAGES if p.name == name)
    blocks = _blocks(page)
    done = subprocess.run(
        [docs_python(), "-c", RUNNER],
        input=json.dumps(blocks),
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=user_env(),
        cwd="/",
        timeout=280,
    )
    if done.returncode != 0:
        pytest.fail(f"{name}: the docs runner failed:\n{done.stderr[-4000:]}")
    return dict(enumerate(json.loads(done.stdout)))


@pytest.mark.parametrize(("page", "number"), _cases(), ids=lambda v: str(v))
def test_code_block_runs(page: str, number: int) -> None:
    result = _run_page(page)[number]
    assert result["error"] is None, f"{result['name']} failed:\n{result['error']}"


def test_docs_environment_is_a_users() -> None:
    """The blocks run where pytest and the test packages are not installed, with torch
    as the install scripts pin it, and with this checkout's voxelflow."""
    probe = (
        "import importlib.util, json, torch, voxelflow; print(json.dumps({"
        "'test_packages': [m for m in ('pytest', 'hypothesis', 'moto', 'niizarr', 'nilearn')"
        " if importlib.util.find_spec(m)],"
        "'torch': torch.__version__, 'voxelflow': voxelflow.__file__, 'prefix': __import__('sys').prefix}))"
    )
    done = subprocess.run(
        [docs_python(), "-c", probe],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=user_env(),
        check=True,
    )
    facts = json.loads(done.stdout)
    assert facts["test_packages"] == []
    assert facts["torch"] == "2.13.0+cpu"
    assert Path(facts["voxelflow"]).is_relative_to(ROOT / "src")
    assert Path(facts["prefix"]).resolve() != Path(sys.prefix).resolve()


def test_a_failing_block_is_reported(tmp_path: Path) -> None:
    """The runner reports a block's error and keeps going (a test that can fail)."""
    blocks = [("bad", "import pytest"), ("good", "print(open('x', 'w').write('1'))")]
    done = subprocess.run(
        [docs_python(), "-c", RUNNER],
        input=json.dumps(blocks),
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=user_env(),
        check=True,
    )
    bad, good = json.loads(done.stdout)
    assert "ModuleNotFoundError: No module named 'pytest'" in bad["error"]
    assert good["error"] is None and good["output"] == "1\n"


# TorchIO 2.0.0a2's top-level public names (its ``__all__``), as facts to compare with.
TORCHIO_NAMES = [
    "PCA",
    "Affine",
    "AffineMatrix",
    "Anisotropy",
    "AppliedTransform",
    "BiasField",
    "Blur",
    "BoundingBoxFormat",
    "BoundingBoxes",
    "Choice",
    "Clamp",
    "Compose",
    "Contour",
    "CopyAffine",
    "CornucopiaAdapter",
    "Crop",
    "CropOrPad",
    "ElasticDeformation",
    "EnsureShapeMultiple",
    "Flip",
    "Gamma",
    "Ghosting",
    "GridSampler",
    "HistogramStandardization",
    "Image",
    "ImagesBatch",
    "ImagesLoader",
    "IntensityTransform",
    "KeepLargestComponent",
    "LabelMap",
    "LabelSampler",
    "LabelsToImage",
    "Lambda",
    "Mask",
    "MonaiAdapter",
    "Motion",
    "Noise",
    "Normalize",
    "OneHot",
    "OneOf",
    "Pad",
    "PatchAggregator",
    "PatchLocation",
    "PatchSampler",
    "Points",
    "Queue",
    "RemapLabels",
    "RemoveLabels",
    "Reorient",
    "Representation",
    "Resample",
    "RescaleIntensity",
    "Resize",
    "ScalarImage",
    "SequentialLabels",
    "SomeOf",
    "Spatial",
    "SpatialTransform",
    "Spike",
    "Standardize",
    "StudiesBatch",
    "StudiesLoader",
    "Study",
    "Subject",
    "SubjectsBatch",
    "SubjectsLoader",
    "Swap",
    "To",
    "ToReferenceSpace",
    "Transform",
    "Transpose",
    "TypeAffineMatrix",
    "TypeDirection",
    "TypeImageData",
    "TypeOrientationCodes",
    "TypeOrigin",
    "TypePath",
    "TypeSpacing",
    "TypeSpatialShape",
    "TypeTensorShape",
    "TypeWorldPoints",
    "UniformSampler",
    "WeightedSampler",
    "ZNormalization",
    "apply_inverse_transform",
    "collate_images",
    "collate_studies",
    "collate_subjects",
    "datasets",
    "enable_logging",
    "read_matrix",
    "write_matrix",
]


def test_migrating_lists_what_is_missing() -> None:
    """docs/migrating.md's "still missing" list is exactly TorchIO's names voxelflow lacks."""
    import voxelflow as tio

    text = (ROOT / "docs" / "migrating.md").read_text(encoding="utf-8")
    section = text.split("## What is still missing compared with TorchIO 2.0", 1)[1]
    listed = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", section))
    missing = {name for name in TORCHIO_NAMES if not hasattr(tio, name)}
    assert not missing - listed, f"missing from voxelflow, not listed: {sorted(missing - listed)}"
    present = {name for name in listed & set(TORCHIO_NAMES) if hasattr(tio, name)}
    assert not present, f"listed as missing but now in voxelflow: {sorted(present)}"

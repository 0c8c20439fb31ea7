"""Fail unless the torch of this interpreter is PyTorch's CPU build (a CI step).

Run with the venv's python: ``.venv-test/bin/python scripts/check_cpu_torch.py``.
A CUDA build is gigabytes of nvidia-* packages the tests never use, and the sign
that an unpinned requirement replaced the CPU build.
"""

from __future__ import annotations

import importlib.metadata
import sys


def problems() -> list[str]:
    """What is wrong with this environment's torch (empty when it is the CPU build)."""
    found = []
    try:
        import torch
    except ImportError as error:
        return [f"torch does not import: {error}"]
    if torch.version.cuda is not None:
        found.append(f"torch {torch.__version__} is a CUDA {torch.version.cuda} build")
    if not torch.__version__.endswith("+cpu"):
        found.append(f"torch {torch.__version__} is not a '+cpu' build")
    nvidia = sorted(
        name
        for name in (dist.metadata["Name"] for dist in importlib.metadata.distributions())
        if name and name.lower().startswith("nvidia-")
    )
    if nvidia:
        found.append(f"CUDA packages are installed: {', '.join(nvidia)}")
    return found


def main() -> int:
    found = problems()
    if not found:
        return 0
    print(f"{sys.prefix}: torch is not the CPU build:", file=sys.stderr)
    for problem in found:
        print(f"  - {problem}", file=sys.stderr)
    print(
        "  fix: delete the environment and rerun the script, which installs "
        "torch from scripts/constraints-py311.txt first",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())

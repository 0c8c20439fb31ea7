#!/usr/bin/env bash
# Regenerate scripts/constraints-py311.txt from a real resolution in a fresh Python 3.11
# venv: PyTorch's CPU build first, then voxelflow with every extra, held to that torch.
# Run after changing a dependency in pyproject.toml; commit the new lock with it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
torch="$(grep -E '^torch==' "$VOXELFLOW_LOCK")"
pip_pin="$(grep -E '^pip==' "$VOXELFLOW_LOCK")"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
_say "resolving in $scratch with $torch"
"$(_base_python)" -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install --quiet "$pip_pin" "$torch"
"$scratch/venv/bin/python" -m pip install --quiet -c <(echo "$torch") -e ".[test,demo,dev]"
{
  sed -n '/^#/p' "$VOXELFLOW_LOCK"
  { echo "$pip_pin"; "$scratch/venv/bin/python" -m pip freeze --exclude-editable; } |
    sort --ignore-case --field-separator='=' --key=1,1
} > "$scratch/lock.txt"
mv "$scratch/lock.txt" "$VOXELFLOW_LOCK"
_say "wrote $VOXELFLOW_LOCK ($(grep -cv '^#' "$VOXELFLOW_LOCK") packages)"

#!/usr/bin/env bash
# The main job: set up .venv (made or reused) and run `voxelflow demo` on real data
# that ships inside installed packages. Extra arguments go to `voxelflow demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
setup_venv "${VOXELFLOW_VENV:-.venv}" demo
exec "${VOXELFLOW_VENV:-.venv}/bin/voxelflow" demo "$@"

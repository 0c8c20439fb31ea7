#!/usr/bin/env bash
# The tests: set up .venv-test (made or reused) with the test dependencies and run pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k nifti -x).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
setup_venv "${VOXELFLOW_TEST_VENV:-.venv-test}" test
exec "${VOXELFLOW_TEST_VENV:-.venv-test}/bin/python" -m pytest "$@"

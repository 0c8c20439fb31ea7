#!/usr/bin/env bash
# The tests: set up .venv-test (made or reused) with the test dependencies, and .venv-docs
# with voxelflow alone (the README and docs/ examples run there, as in a user's
# environment: no pytest), then run pytest. Extra arguments go to pytest
# (e.g. scripts/test.sh -k nifti -x).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
test_venv="${VOXELFLOW_TEST_VENV:-.venv-test}"
docs_venv="${VOXELFLOW_DOCS_VENV:-.venv-docs}"
setup_venv "$test_venv" test
setup_venv "$docs_venv" ""
export VOXELFLOW_DOCS_PYTHON="$PWD/$docs_venv/bin/python"
[[ "$docs_venv" = /* ]] && export VOXELFLOW_DOCS_PYTHON="$docs_venv/bin/python"
exec "$test_venv/bin/python" -m pytest "$@"

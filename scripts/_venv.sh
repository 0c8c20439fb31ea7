# Shared by scripts/demo.sh, scripts/test.sh and .ci/run: make or reuse a virtual
# environment and install voxelflow into it, at the versions of the lock.
# Usage: setup_venv DIR EXTRAS   (EXTRAS like "test" or "demo"; empty for voxelflow alone)

# Every package of the test, demo and dev extras at one version (Python 3.11).
VOXELFLOW_LOCK="scripts/constraints-py311.txt"

_say() { echo "voxelflow setup: $*" >&2; }

_base_python() {
  if command -v python3.11 >/dev/null 2>&1; then echo python3.11; else echo python3; fi
}

setup_venv() {
  local venv="$1" extras="$2"
  local spec="."
  [ -n "$extras" ] && spec=".[$extras]"
  # Skip the install when nothing it depends on changed since the last one.
  local stamp="$venv/.voxelflow-installed"
  local want
  want="$(cat pyproject.toml scripts/_venv.sh "$VOXELFLOW_LOCK" | sha256sum | cut -d' ' -f1) $extras"
  if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  local started=$SECONDS python
  if [ ! -x "$venv/bin/python" ]; then
    python="$(_base_python)"
    _say "[1/4] creating $venv ($($python --version 2>&1))"
    "$python" -m venv "$venv"
  else
    _say "[1/4] updating $venv (pyproject.toml, the lock or this script changed)"
  fi
  rm -f "$stamp"
  # --no-compile: no .pyc for the thousands of files never imported (most of the time).
  local install=("$venv/bin/python" -m pip install --quiet --no-compile)
  local version constraints
  version="$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if [ "$version" = "3.11" ]; then
    constraints="$VOXELFLOW_LOCK"
  else
    _say "the lock is for Python 3.11, this is $version: only torch and pip are pinned," \
      "other versions may differ from run to run"
    constraints="$venv/.voxelflow-constraints.txt"
    grep -E '^(torch|pip)==' "$VOXELFLOW_LOCK" > "$constraints"
  fi
  _say "[2/4] installing $(grep -E '^pip==' "$constraints") and" \
    "PyTorch $(grep -E '^torch==' "$constraints" | cut -d= -f3) (CPU build, about 200 MB)"
  # The CPU build of PyTorch first, held by the lock in every later call: an unpinned
  # torch requirement would pull a CUDA build and gigabytes of nvidia-* packages.
  "${install[@]}" -c "$constraints" pip torch
  _say "[3/4] installing voxelflow$([ -n "$extras" ] && echo "[$extras]") and its" \
    "dependencies, pinned by $constraints"
  "${install[@]}" -c "$constraints" -e "$spec"
  _say "[4/4] checking that torch is the CPU build"
  "$venv/bin/python" scripts/check_cpu_torch.py
  echo "$want" > "$stamp"
  _say "$venv ready in $((SECONDS - started)) s ($(du -sh "$venv" | cut -f1))"
}

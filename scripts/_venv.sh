# Shared by scripts/demo.sh and scripts/test.sh: make or reuse a virtual environment
# and install voxelflow into it with the given extras. Usage: setup_venv DIR EXTRAS
setup_venv() {
  local venv="$1" extras="$2"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  # Skip the install when nothing it depends on changed since the last one.
  local stamp="$venv/.voxelflow-installed"
  local want
  want="$(cat pyproject.toml scripts/_venv.sh | sha256sum | cut -d' ' -f1) $extras"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    # The local CPU build of PyTorch first: any other torch requirement pulls CUDA packages.
    "$venv/bin/python" -m pip install --quiet "torch==2.13.0"
    "$venv/bin/python" -m pip install --quiet -e ".[$extras]"
    echo "$want" > "$stamp"
  fi
}

#!/usr/bin/env bash
# Run every benchmark once, in sequence, printing each one's figures and its time.
# --quick is a smoke run on small volumes (see benchmarks/README.md for the measured time);
# the full sizes take much longer. Scratch data goes to ${BENCH_DIR:-/tmp/voxelflow-bench}
# and is removed by each script. Uses the test environment (.venv-test, made by
# scripts/test.sh, which has every baseline's package), or set PYTHON; a baseline whose
# package is missing is skipped with a message.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv-test/bin/python}
if [ ! -x "$PYTHON" ]; then
  echo "run_all.sh: $PYTHON not found; run 'bash scripts/test.sh --co -q' once to make" \
    ".venv-test, or set PYTHON=/path/to/python" >&2
  exit 1
fi
DIR=${BENCH_DIR:-/tmp/voxelflow-bench}
mkdir -p "$DIR"
if [ "${1:-}" = "--quick" ]; then
  lazy=(--quick)
  gz=(--quick)
  zarr=(--quick)
  training=(--quick)
  infer=(--quick)
  cli=(--quick --repeats 3)
  intensity=(--quick)
else
  lazy=()
  gz=(--repeats 3)  # nibabel's proxy takes up to 14 s per region at the end of the stream
  zarr=(--size-gib 1.0)
  training=()
  infer=()
  cli=()
  intensity=()
fi
run() {
  echo; echo "===== $*"
  local start=$SECONDS
  "$PYTHON" "$@"
  echo "(took $((SECONDS - start)) s)"
}
run benchmarks/bench_lazy_reads.py --out "$DIR/lazy" "${lazy[@]}"
run benchmarks/bench_nifti_gz.py --dir "$DIR/gz" "${gz[@]}"
run benchmarks/bench_niftizarr.py --folder "$DIR/zarr" "${zarr[@]}"
run benchmarks/bench_training.py --folder "$DIR/training" "${training[@]}"
run benchmarks/bench_inference.py "${infer[@]}"
run benchmarks/bench_cli.py "${cli[@]}"
run benchmarks/bench_intensity.py --folder "$DIR" "${intensity[@]}"
echo; echo "all benchmarks took $SECONDS s; $(uptime)"

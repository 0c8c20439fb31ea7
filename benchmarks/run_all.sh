#!/usr/bin/env bash
# Run every benchmark once, in sequence, printing each one's figures.
# --quick takes about 2 minutes on 2 cores (measured); the full sizes were measured script by
# script (training 81 s; the others a few minutes each), not yet timed as one sequence. Scratch data goes to ${BENCH_DIR:-/tmp/voxelflow-bench} and is
# removed by each script. Uses the demo's environment (.venv): run scripts/demo.sh once first,
# or set PYTHON. Pass --quick for a smoke run of a minute or two on small volumes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DIR=${BENCH_DIR:-/tmp/voxelflow-bench}
mkdir -p "$DIR"
if [ "${1:-}" = "--quick" ]; then
  lazy=(--size 256 256 256 --gz-size 128 128 128 --repeats 10 --regions 50)
  gz=(--shape 256x256x192 --repeats 3)
  zarr=(--size-gib 0.1 --reads 20)
  infer=(--quick)
  cli=(--quick --repeats 3)
  intensity=(--quick)
else
  lazy=()
  gz=(--repeats 3)  # nibabel's proxy takes up to 14 s per region at the end of the stream
  zarr=(--size-gib 1.0)
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
run benchmarks/bench_training.py --folder "$DIR/training"
run benchmarks/bench_inference.py "${infer[@]}"
run benchmarks/bench_cli.py "${cli[@]}"
run benchmarks/bench_intensity.py --folder "$DIR" "${intensity[@]}"

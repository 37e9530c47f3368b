#!/usr/bin/env bash
# The CPU benchmark set (TensorFlow backend), as recorded in README.md.
#
#   bash benchmarks/run_cpu.sh [OUTPUT_DIR]
#
# One JSON record per benchmark goes to OUTPUT_DIR/cpu.jsonl (default
# benchmarks/results), logs to OUTPUT_DIR/*.log. On 2 cores the whole set
# takes about an hour (VGG16 train steps at batch 8 take 5-15 s each), more
# on a loaded machine. Run one benchmark at a time: they time the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-benchmarks/results}"
mkdir -p "$OUT_DIR"
export KERAS_BACKEND=tensorflow
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
PY="${PYTHON:-.venv/bin/python}"
JSONL="$OUT_DIR/cpu.jsonl"
run() {
  local name="$1"; shift
  "$PY" "$@" --out "$JSONL" 2>&1 | tee "$OUT_DIR/$name.log"
}

# (a) train-step ratio, VGG16 at 224, batch 8, XLA on and off.
for jit in on off; do
  run "step_time_jit_$jit" benchmarks/step_time.py --backend tensorflow \
    --batch 8 --size 224 --jit "$jit" --reps 7 --warmup 1
done
# The same on the layers after the backbone only (low-noise absolute cost).
run step_time_head benchmarks/step_time.py --backend tensorflow --model head \
  --batch 8 --jit off --reps 9 --steps 3 \
  --variants plain,interp,labelfree,maskonly,interp_nolayerjit
# (b) peak memory ratio, one process per measurement.
for jit in off on; do
  run "memory_jit_$jit" benchmarks/memory.py --backend tensorflow \
    --batch 8 --size 224 --jit "$jit" --reps 3
done
# (c) the loss alone vs the naive (B, C, n^2, n^2) product, B=64, C=512, n=14.
for jit in on off; do
  run "loss_alone_jit_$jit" benchmarks/loss_alone.py --backend tensorflow \
    --batch 64 --jit "$jit" --reps 7
done
# (d) the CUB tf.data pipeline on a generated folder of full-size JPEGs.
run input_pipeline benchmarks/input_pipeline.py \
  --variants library,crop_decode,decode_only
# (e) location instability, 2,000 images x 512 filters.
run location_instability benchmarks/location_instability.py \
  --collect-images 32
echo "done: $JSONL"

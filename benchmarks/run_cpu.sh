#!/usr/bin/env bash
# The CPU benchmark set (TensorFlow backend, plus JAX on the CPU for XLA's
# memory analysis), the commands recorded in README.md.
#
#   bash benchmarks/run_cpu.sh [OUTPUT_DIR]
#
# One JSON record per benchmark is appended to OUTPUT_DIR/cpu.jsonl (default
# benchmarks/results); `python benchmarks/summarize.py OUTPUT_DIR/cpu.jsonl`
# prints them as tables. On 2 idle cores the set takes about 20 minutes (a
# VGG16 train step at batch 8 takes about 4 s; interp_take's jit-on step
# ~15 s because it recompiles), more on a loaded machine. Run one benchmark
# at a time: they time the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-benchmarks/results}"
mkdir -p "$OUT_DIR"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
PY="${PYTHON:-.venv/bin/python}"
JSONL="$OUT_DIR/cpu.jsonl"
run() {
  local name="$1"; shift
  "$PY" "$@" --out "$JSONL" 2>&1 | tee "$OUT_DIR/$name.log"
}
STEP=(benchmarks/step_time.py --backend tensorflow --batch 8 --size 224)

# The alternatives in _prototypes.py must not change the loss or its gradient.
"$PY" benchmarks/check_prototypes.py
KERAS_BACKEND=jax "$PY" benchmarks/check_prototypes.py

# (a) train-step ratio, VGG16 at 224, batch 8, XLA off and on; the library
# (interp), its loss differentiated from outside the layers' compiled block
# (interp_unfused) and the first round's gather (interp_take).
run step_jit_off "${STEP[@]}" --jit off --reps 7 --warmup 1 \
  --variants plain,interp,interp_unfused
run step_jit_on "${STEP[@]}" --jit on --reps 7 --warmup 1 \
  --variants plain,interp
run step_jit_on_take "${STEP[@]}" --jit on --reps 3 --warmup 1 \
  --variants plain,interp_take
# The layers after the backbone only: the absolute cost, with little noise.
for jit in off on; do
  run "step_head_jit_$jit" benchmarks/step_time.py --backend tensorflow \
    --model head --batch 8 --jit "$jit" --reps 9 --steps 3 \
    --variants plain,interp,interp_unfused,maskonly
done
# (b) peak memory, a fresh process per measurement; batch 16 too, since
# what the layers keep grows with the batch.
for batch in 8 16; do
  run "memory_jit_off_$batch" benchmarks/memory.py --backend tensorflow \
    --batch "$batch" --size 224 --jit off --reps 2 \
    --variants plain,interp,interp_unfused
done
run memory_jit_on benchmarks/memory.py --backend tensorflow --batch 8 \
  --size 224 --jit on --reps 2 --variants plain,interp
run memory_head benchmarks/memory.py --backend tensorflow --model head \
  --batch 16 --jit off --reps 2 \
  --variants plain,interp,interp_unfused,interp_remat,maskonly,authors
# XLA's static memory analysis of the JAX train step (GPU-sized batch).
for precision in float32 mixed_bfloat16; do
  KERAS_BACKEND=jax run "xla_memory_$precision" benchmarks/step_time.py \
    --backend jax --batch 64 --size 224 --compile-only \
    --precision "$precision" --variants plain,interp
done
# (c) the loss alone vs the naive (B, C, n^2, n^2) product, B=64, C=512, n=14.
for jit in on off; do
  run "loss_alone_jit_$jit" benchmarks/loss_alone.py --backend tensorflow \
    --batch 64 --jit "$jit" --reps 5
done
# (d) the CUB tf.data pipeline on a generated folder of full-size JPEGs.
run input_pipeline benchmarks/input_pipeline.py \
  --variants library,crop_decode,decode_only --reps 5
# (e) location instability, 2,000 images x 512 filters.
run location_instability benchmarks/location_instability.py \
  --collect-images 32
run location_instability_cub benchmarks/location_instability.py \
  --landmarks 15 --categories 200
echo "done: $JSONL"

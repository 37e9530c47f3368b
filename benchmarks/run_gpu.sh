#!/usr/bin/env bash
# The GPU benchmark set (issue targets: step ratio <= 1.02, memory <= 1.05),
# JAX backend, batch 64 at 224, float32 and mixed_bfloat16. It needs JAX
# with CUDA, Keras 3 and numpy; it does not import TensorFlow.
#
#   bash benchmarks/run_gpu.sh [OUTPUT_DIR]
#
# Results: one JSON record per benchmark in OUTPUT_DIR/gpu.jsonl (default
# $OUT if set, else benchmarks/results), full logs in OUTPUT_DIR/*.log.
# Ordered by importance: the step ratios first, then the loss alone, then
# the subprocess memory peaks (slow: one compile per process). SMOKE=1 runs
# the same commands at toy sizes (batch 2, 32 px; tiny_vgg), e.g. on a CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-benchmarks/results}}"
mkdir -p "$OUT_DIR"
export KERAS_BACKEND=jax
export XLA_PYTHON_CLIENT_PREALLOCATE=false
PY="${PYTHON:-python}"
JSONL="$OUT_DIR/gpu.jsonl"

if [[ "${SMOKE:-0}" == 1 ]]; then
  SIZE=(--batch 2 --size 32 --backbone tiny_vgg)
  REPS=(--reps 2 --warmup 1 --steps 1)
  LOSS=(--batch 4 --channels 16 --reps 2)
else
  SIZE=(--batch 64 --size 224 --backbone vgg16)
  REPS=(--reps 7 --warmup 2 --steps 5)
  LOSS=(--batch 64 --channels 512 --reps 7)
fi

"$PY" -c 'import jax, keras; print(jax.devices(), keras.__version__)' \
  | tee "$OUT_DIR/devices.log"
nvidia-smi > "$OUT_DIR/nvidia-smi.log" 2>&1 || true

for precision in float32 mixed_bfloat16; do
  # (a) train-step ratio, interpretable vs plain, interleaved.
  "$PY" benchmarks/step_time.py --backend jax "${SIZE[@]}" "${REPS[@]}" \
    --precision "$precision" --out "$JSONL" 2>&1 \
    | tee "$OUT_DIR/step_time_$precision.log"
done

# (c) the loss alone vs the naive (B, C, n^2, n^2) product, f32 and bf16 maps.
for dtype in float32 bfloat16; do
  "$PY" benchmarks/loss_alone.py --backend jax "${LOSS[@]}" --dtype "$dtype" \
    --out "$JSONL" 2>&1 | tee "$OUT_DIR/loss_alone_$dtype.log"
done

# (b) device peak memory, one process per variant (deterministic: 1 rep).
for precision in float32 mixed_bfloat16; do
  "$PY" benchmarks/memory.py --backend jax "${SIZE[@]}" --reps 1 \
    --warmup 1 --steps 1 --precision "$precision" --out "$JSONL" 2>&1 \
    | tee "$OUT_DIR/memory_$precision.log"
done
echo "done: $JSONL"

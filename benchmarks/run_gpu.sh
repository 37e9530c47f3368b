#!/usr/bin/env bash
# The GPU benchmark set (issue targets: step ratio <= 1.02, memory <= 1.05),
# JAX backend, batch 64 at 224, float32 and mixed_bfloat16. It needs JAX
# with CUDA, Keras 3 and numpy; it never imports TensorFlow.
#
#   bash benchmarks/run_gpu.sh [OUTPUT_DIR] [PART...]
#
# PART: step (a), loss (c), memory (b), or all (default: step loss memory).
# Each part takes about 2-5 minutes on an H200 (mostly XLA compiles, one
# per model variant and precision), so on a machine with a 10-minute limit
# per command run the parts as separate commands, `step` first:
#
#   bash benchmarks/run_gpu.sh "$OUT" step
#   bash benchmarks/run_gpu.sh "$OUT" loss memory
#
# Results: one JSON record per benchmark appended to OUTPUT_DIR/gpu.jsonl
# (default: $OUT if set, else benchmarks/results), logs in OUTPUT_DIR/*.log.
# VARIANTS overrides the step-time and memory variants (default
# plain,interp; add interp_take to time the first round's gather-based
# template selection). SMOKE=1 runs the
# same commands at toy sizes (batch 2, 32 px, tiny_vgg), e.g. on a CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-benchmarks/results}}"
shift || true
PARTS=("$@")
if [[ ${#PARTS[@]} -eq 0 || "${PARTS[0]}" == all ]]; then
  PARTS=(step loss memory)
fi
mkdir -p "$OUT_DIR"
export KERAS_BACKEND=jax
export XLA_PYTHON_CLIENT_PREALLOCATE=false
PY="${PYTHON:-python}"
JSONL="$OUT_DIR/gpu.jsonl"
VARIANTS="${VARIANTS:-plain,interp}"

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
  | tee -a "$OUT_DIR/devices.log"
nvidia-smi >> "$OUT_DIR/devices.log" 2>&1 || true

for part in "${PARTS[@]}"; do
  case "$part" in
    step)  # (a) train-step ratio, interpretable vs plain, interleaved.
      for precision in float32 mixed_bfloat16; do
        "$PY" benchmarks/step_time.py --backend jax "${SIZE[@]}" \
          "${REPS[@]}" --precision "$precision" --variants "$VARIANTS" \
          --out "$JSONL" 2>&1 | tee "$OUT_DIR/step_time_$precision.log"
      done ;;
    loss)  # (c) the loss alone vs the naive (B, C, n^2, n^2) product.
      for dtype in float32 bfloat16; do
        "$PY" benchmarks/loss_alone.py --backend jax "${LOSS[@]}" \
          --dtype "$dtype" --out "$JSONL" 2>&1 \
          | tee "$OUT_DIR/loss_alone_$dtype.log"
      done ;;
    memory)  # (b) device peak memory, a process per variant (1 rep).
      for precision in float32 mixed_bfloat16; do
        "$PY" benchmarks/memory.py --backend jax "${SIZE[@]}" --reps 1 \
          --warmup 1 --steps 1 --precision "$precision" \
          --variants "$VARIANTS" --out "$JSONL" 2>&1 \
          | tee "$OUT_DIR/memory_$precision.log"
      done ;;
    *) echo "unknown part: $part (step, loss, memory, all)" >&2; exit 2 ;;
  esac
done
echo "done: $JSONL"

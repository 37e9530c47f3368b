#!/usr/bin/env bash
# Ordinary vs interpretable CNN, setting (a): VGG-16 with ImageNet weights
# (torchvision's, converted offline), block 5 fine-tuned, 160 px input
# (10x10 maps; the paper's 224 px / 14x14 is too slow on 2 CPU cores), on
# the single-category task (one object category vs background photos) of the
# embedded scenes data, un-cropped.
#
# Runs examples/train_cub.py once per (arm, learning rate, seed), ONE AT A
# TIME. Idempotent: a run whose results.json exists is skipped.
#
#   python experiments/make_study_data.py runs/study_data    # the data
#   bash experiments/run_study.sh grid     # lr grid per arm, on single_val
#   bash experiments/run_study.sh main     # 3 seeds per arm at its best lr
#   bash experiments/run_study.sh controls # lambda = 0, loss without mask
#   python experiments/summarize.py        # the tables of RESULTS.md
#
# Environment: CODE_DIR (a snapshot of the code, see above), WEIGHTS (the converted VGG-16 file; see
# docs/pretrained_weights.md), PYTHON (default .venv/bin/python), EPOCHS
# (default 5), SEEDS (default "0 1 2").
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
WEIGHTS=${WEIGHTS:-$HOME/.keras/models/vgg16_torchvision_notop.weights.h5}
EPOCHS=${EPOCHS:-5}
SEEDS=${SEEDS:-0 1 2}
DATA=$ROOT/runs/study_data
OUT=$ROOT/runs/study
GRID_LRS=${GRID_LRS:-0.001 0.003 0.01 0.03}
# The code under test: a `git archive` snapshot keeps it fixed while the
# tree is edited (default: the repository itself).
CODE_DIR=${CODE_DIR:-$ROOT}
mkdir -p "$OUT"

COMMON=(--task=single --nocrop_to_box --backbone=vgg16 --weights="$WEIGHTS"
        --trainable_from=block5_conv1 --image_size=160 --batch_size=16
        --epochs="$EPOCHS" --lr_schedule=cosine --verbose=2)
declare -A ARM_FLAGS=(
  [ordinary]="--nointerpretable"
  [interpretable]=""
  [lambda0]="--loss_weight=0"
  [nomask]="--noapply_mask"
)

run() {  # run NAME DATA_DIR SEED LR ARM
  local name=$1 data=$2 seed=$3 lr=$4 arm=$5
  local dir=$OUT/$name
  if [[ -f $dir/results.json ]]; then
    echo "skip $name (done)"
    return 0
  fi
  mkdir -p "$dir"
  echo "$(date -u +%FT%TZ) start $name"
  # shellcheck disable=SC2086
  PYTHONPATH=$CODE_DIR "$PYTHON" "$CODE_DIR/examples/train_cub.py" "${COMMON[@]}" --data_dir="$data" \
    --seed="$seed" --learning_rate="$lr" --model_dir="$dir" \
    ${ARM_FLAGS[$arm]} >"$dir/train.log" 2>&1
  echo "$(date -u +%FT%TZ) end   $name rc=$?: $(grep '^results: {' "$dir/train.log" | tail -1)"
}

best_lr() {  # best_lr ARM: the grid's learning rate with the best val accuracy
  "$PYTHON" - "$OUT" "$1" <<'PY'
import glob, json, sys
out, arm = sys.argv[1:]
scores = []
for path in glob.glob(f"{out}/grid_{arm}_lr*/results.json"):
    r = json.load(open(path))
    scores.append((r["accuracy"], -r["config"]["learning_rate"], r["config"]["learning_rate"]))
if not scores:
    sys.exit(f"no grid runs for {arm}: run the grid step first")
print(max(scores)[2])
PY
}

step=${1:-all}
if [[ $step == all || $step == grid ]]; then
  for arm in ${GRID_ARMS:-ordinary interpretable}; do
    for lr in $GRID_LRS; do
      run "grid_${arm}_lr$lr" "$DATA/single_val" 0 "$lr" "$arm"
    done
  done
fi
if [[ $step == all || $step == main ]]; then
  for seed in $SEEDS; do
    for arm in ordinary interpretable; do
      run "${arm}_s$seed" "$DATA/single" "$seed" "$(best_lr "$arm")" "$arm"
    done
  done
fi
if [[ $step == all || $step == controls ]]; then
  for seed in ${CONTROL_SEEDS:-0}; do
    for arm in lambda0 nomask; do
      run "${arm}_s$seed" "$DATA/single" "$seed" "$(best_lr interpretable)" "$arm"
    done
  done
fi

#!/usr/bin/env bash
# Ordinary vs interpretable CNN on the embedded scenes data, un-cropped.
#
# SETTING=a (default): VGG-16 with ImageNet weights (torchvision's, converted
#   offline), block 5 fine-tuned, 160 px input (10x10 maps; the paper's
#   224 px / 14x14 is too slow on 2 CPU cores), 5 epochs.
# SETTING=b: tiny_vgg from scratch, 96 px input (12x12 maps), 15 epochs.
# TASK=single (default): one object category vs background photos (the
#   paper's Table 5); TASK=multi: classify 3 object categories.
#
# Results go to runs/study (setting a, single) or runs/study_<SETTING>_<TASK>.
#
# The multi-category tiny_vgg study uses 40 epochs for both arms (at 15 the
# ordinary CNN did not fit its training set) and a grid per arm:
#   export SETTING=b TASK=multi EPOCHS=40 OUT=runs/study_b_multi40
#   GRID_ARMS=ordinary GRID_LRS="0.003 0.01 0.03" bash experiments/run_study.sh grid
#   GRID_ARMS=interpretable GRID_LRS="0.01 0.03 0.1 0.3" bash experiments/run_study.sh grid
#   bash experiments/run_study.sh main
#
# Runs examples/train_cub.py once per (arm, learning rate, seed), ONE AT A
# TIME. Idempotent: a run whose results.json exists is skipped.
#
#   python experiments/make_study_data.py runs/study_data    # the data
#   bash experiments/run_study.sh grid     # lr grid per arm, on single_val
#   bash experiments/run_study.sh main     # 3 seeds per arm at its best lr
#   bash experiments/run_study.sh controls # lambda = 0, loss without mask
#   bash experiments/run_study.sh center   # the interpretable arm, --center=argmax
#   bash experiments/run_study.sh nomask_own_lr  # no mask, at the ordinary arm's lr
#   python experiments/summarize.py        # the tables of RESULTS.md
#
# Environment: SETTING, TASK (above), CODE_DIR (a snapshot of the code, see above), WEIGHTS (the converted VGG-16 file; see
# docs/pretrained_weights.md), PYTHON (default .venv/bin/python), EPOCHS
# (default 5), SEEDS (default "0 1 2"), MAIN_ARMS (default "ordinary interpretable").
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
WEIGHTS=${WEIGHTS:-$HOME/.keras/models/vgg16_torchvision_notop.weights.h5}
SETTING=${SETTING:-a}
TASK=${TASK:-single}
SEEDS=${SEEDS:-0 1 2}
DATA=$ROOT/runs/study_data
if [[ $SETTING == a && $TASK == single ]]; then
  OUT=${OUT:-$ROOT/runs/study}
else
  OUT=${OUT:-$ROOT/runs/study_${SETTING}_${TASK}}
fi
case $SETTING in
  a) EPOCHS=${EPOCHS:-5}
     GRID_LRS=${GRID_LRS:-0.001 0.003 0.01 0.03}
     SETTING_FLAGS=(--backbone=vgg16 --weights="$WEIGHTS"
                    --trainable_from=block5_conv1 --image_size=160) ;;
  b) EPOCHS=${EPOCHS:-15}
     GRID_LRS=${GRID_LRS:-0.01 0.03 0.1}
     SETTING_FLAGS=(--backbone=tiny_vgg --image_size=96) ;;
  *) echo "SETTING must be a or b, got $SETTING" >&2; exit 2 ;;
esac
# The code under test: a `git archive` snapshot keeps it fixed while the
# tree is edited (default: the repository itself).
CODE_DIR=${CODE_DIR:-$ROOT}
mkdir -p "$OUT"

COMMON=(--task="$TASK" --nocrop_to_box "${SETTING_FLAGS[@]}" --batch_size=16
        --epochs="$EPOCHS" --lr_schedule=cosine --verbose=2)
declare -A ARM_FLAGS=(
  [ordinary]="--nointerpretable"
  [interpretable]=""
  [lambda0]="--loss_weight=0"
  [nomask]="--noapply_mask"
  [argmax]="--center=argmax"
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
      run "grid_${arm}_lr$lr" "$DATA/${TASK}_val" 0 "$lr" "$arm"
    done
  done
fi
if [[ $step == all || $step == main ]]; then
  for seed in $SEEDS; do
    for arm in ${MAIN_ARMS:-ordinary interpretable}; do
      run "${arm}_s$seed" "$DATA/$TASK" "$seed" "$(best_lr "$arm")" "$arm"
    done
  done
fi
if [[ $step == all || $step == controls ]]; then
  for seed in ${CONTROL_SEEDS:-0}; do
    for arm in lambda0 nomask; do
      run "${arm}_s$seed" "$DATA/$TASK" "$seed" "$(best_lr interpretable)" "$arm"
    done
  done
fi
if [[ $step == center ]]; then
  for seed in ${CENTER_SEEDS:-0}; do
    run "argmax_s$seed" "$DATA/$TASK" "$seed" "$(best_lr interpretable)" argmax
  done
fi
if [[ $step == nomask_own_lr ]]; then
  for seed in ${CONTROL_SEEDS:-0}; do
    run "nomask_ordlr_s$seed" "$DATA/$TASK" "$seed" "$(best_lr ordinary)" nomask
  done
fi

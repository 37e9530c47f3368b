#!/usr/bin/env bash
# Ordinary vs interpretable study on the embedded synthetic part dataset.
#
# Runs examples/train_cub.py once per (variant, seed), ONE AT A TIME, in the
# priority order of the study. Idempotent: a run whose
# runs/study/<name>_s<seed>/results.json exists is skipped, so the script can
# be re-run after an interruption (a half-finished run resumes from its
# epoch backup).
#
#   bash experiments/run_study.sh            # everything, in order
#   bash experiments/run_study.sh baseline   # only step 1 (also: scan,
#                                            #   variants, labelfree, variants2,
#                                            #   scan_extra, seeds, evaluate)
#
# Environment:
#   CODE_DIR  where keras_interp/ and examples/ are imported from (default:
#             the repo root). The study used a `git archive` snapshot of a
#             fixed commit so that concurrent edits could not change the code
#             mid-study (see RESULTS.md).
#   PYTHON    interpreter (default: .venv/bin/python).
# Outputs: runs/study/<name>_s<seed>/{results.json,model.keras,train.log}.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
CODE_DIR=${CODE_DIR:-$ROOT}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
OUT=$ROOT/runs/study
unset KERAS_INTERP_CACHE
mkdir -p "$OUT"

run() {  # run NAME SEED [FLAGS...]
  local name=$1 seed=$2
  shift 2
  local dir=$OUT/${name}_s${seed}
  if [[ -f $dir/results.json ]]; then
    echo "skip $name seed $seed (done)"
    return 0
  fi
  mkdir -p "$dir"
  echo "$(date -u +%FT%TZ) start $name seed $seed: $*"
  (cd "$ROOT" && PYTHONPATH=$CODE_DIR "$PYTHON" "$CODE_DIR/examples/train_cub.py" \
      --verbose=2 --seed="$seed" --model_dir="$dir" "$@") >"$dir/train.log" 2>&1
  local rc=$?
  echo "$(date -u +%FT%TZ) end   $name seed $seed rc=$rc: $(grep '^results:' "$dir/train.log" | tail -1)"
}

step=${1:-all}

# 1. Baseline: ordinary vs interpretable with library defaults
#    (category-aware exact MI, lambda 0.02 per filter), 3 seeds.
if [[ $step == all || $step == baseline ]]; then
  for seed in 0 1 2; do
    run ordinary "$seed" --nointerpretable
    run interp_default "$seed"
  done
fi

# 2. Loss-weight scan, seed 0 (category-aware exact MI). lambda 20 was
#    moved up from "if time": experiments/grad_probe.py showed that the
#    filter-loss gradient only matches the cross-entropy's at lambda ~ 50.
if [[ $step == all || $step == scan ]]; then
  run interp_lw0.2 0 --loss_weight=0.2
  run interp_lw2 0 --loss_weight=2.0
  run interp_lw20 0 --loss_weight=20.0
  # Control: the masks without any filter loss (lambda = 0).
  run interp_lw0 0 --loss_weight=0.0
fi

# 3. Variants, seed 0. The label-free run takes the best lambda of step 2
#    (LABEL_FREE_LW, default 0.2), so it is a step of its own.
if [[ $step == all || $step == variants ]]; then
  run authors 0 --loss=authors
  run interp_beta2 0 --beta=2
fi
LABEL_FREE_LW=${LABEL_FREE_LW:-0.2}
if [[ $step == all || $step == labelfree ]]; then
  run labelfree_lw${LABEL_FREE_LW} 0 --nocategory_aware --loss_weight="$LABEL_FREE_LW"
fi
if [[ $step == all || $step == variants2 ]]; then
  run authors_centroid 0 --loss=authors --center=centroid
fi

# 2b. Beyond the scan (after the variants: lower priority).
if [[ $step == all || $step == scan_extra ]]; then
  run interp_lw100 0 --loss_weight=100.0
fi

# 4. A variant that beat the default, on seeds 1 and 2 (set VARIANT and
#    VARIANT_FLAGS, e.g. VARIANT=interp_lw2 VARIANT_FLAGS=--loss_weight=2.0).
if [[ $step == seeds ]]; then
  for seed in 1 2; do
    # shellcheck disable=SC2086
    run "$VARIANT" "$seed" $VARIANT_FLAGS
  done
fi

# 5. Saved models through `python -m keras_interp.evaluate` (needs
#    keras_interp/evaluate.py; EVAL_CODE_DIR, default the repo root):
#    part interpretability and instability on part_conv's masked map
#    (evaluate_masked.json), instability on the authors' raw map
#    (evaluate_raw.json) and on the backbone's top conv
#    (evaluate_top_masked.json; top_mask or block4_conv2_relu).
EVAL_CODE_DIR=${EVAL_CODE_DIR:-$ROOT}
evaluate() {  # evaluate RUN_DIR_NAME OUT_NAME [FLAGS...]
  local name=$1 dir=$OUT/$1 out=$2
  shift 2
  [[ -f $dir/model.keras ]] || return 0
  if [[ -s $dir/$out ]]; then
    echo "skip evaluate $name $out (done)"
    return 0
  fi
  # cd: `python -m` puts the working directory first on sys.path.
  (cd "$EVAL_CODE_DIR" && PYTHONPATH=$EVAL_CODE_DIR "$PYTHON" -m keras_interp.evaluate \
      --model "$dir/model.keras" "$@") >"$dir/$out.tmp" 2>"$dir/${out%.json}.log"
  local rc=$?
  [[ $rc == 0 ]] && mv "$dir/$out.tmp" "$dir/$out"
  echo "$(date -u +%FT%TZ) evaluated $name -> $out (rc=$rc)"
}
if [[ $step == evaluate ]]; then
  for seed in 0 1 2; do
    for name in ordinary interp_default; do
      evaluate "${name}_s$seed" evaluate_masked.json
    done
  done
  # The authors' raw map for every run (ordinary part_conv maps are mostly
  # dead after ReLU, where the masked/post-ReLU argmax is a tie: RESULTS.md).
  for dir in "$OUT"/*_s[0-9]*/; do
    evaluate "$(basename "$dir")" evaluate_raw.json --map=raw --no_part_interpretability
  done
  evaluate ordinary_s0 evaluate_top_masked.json --layer=block4_conv2_relu --no_part_interpretability
  evaluate interp_default_s0 evaluate_top_masked.json --layer=top_mask --no_part_interpretability
  for run in "${@:2}"; do  # further runs: bash run_study.sh evaluate NAME_sS ...
    evaluate "$run" evaluate_masked.json
  done
fi

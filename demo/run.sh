#!/usr/bin/env bash
# End-to-end demo on real data (scikit-learn's handwritten digits): old model -> teacher cache ->
# new model trained with plain CE, with cached focal distillation and with cached LDI, three seeds
# each -> regression report. Usage: bash demo/run.sh OUT_DIR   (make demo runs it into demo-out/)
# Why label noise: with clean 16 px digits a new model makes only a handful of negative flips,
# too few to measure a reduction; 35% symmetric noise on the *training* labels (validation stays
# clean) makes the new model's own mistakes diverse, which is where PCT helps. See README.md.
set -euo pipefail
OUT=${1:-demo-out}
PCT=${PCT:-.venv/bin/pct}
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-"1 2 3"}
EPOCHS=${EPOCHS:-15}
RES=16
COMMON="--batch-size 32 --lr 0.1 --lr-schedule cosine --workers 2 --resolution $RES --print-freq 0 --epochs $EPOCHS"
FD="--kd-loss-mode kl --kd-alpha 0.3 --kd-temperature 4 --kd-filter old_correct --filter-base 1 --filter-scale 5"
LDI="--kd-loss-mode li --kd-alpha 0.3 --li-p 2 --li-margin 0.5"
mkdir -p "$OUT"
step() { printf '\n== %s\n' "$*"; }

step "1/6 digits data set ($RES px, 35% training-label noise, clean validation)"
[ -f "$OUT/digits/digits.json" ] || $PY data/build_digits.py "$OUT/digits" --size $RES --label-noise 0.35 --seed 0
for split in train val; do
  [ -f "$OUT/$split.beton" ] || $PCT write-dataset "$OUT/digits/$split" "$OUT/$split.beton" --max-resolution 64 -j 2
done

step "2/6 old model: cnn_small, plain CE"
[ -f "$OUT/old/predictions.zarr/zarr.json" ] || $PCT train --data "$OUT/train.beton" --val "$OUT/val.beton" \
  --out "$OUT/old" --arch cnn_small --seed 0 $COMMON

step "3/6 teacher cache: $EPOCHS training views, and the old model's validation predictions"
$PCT precompute-teachers --data "$OUT/train.beton" --teacher "cnn_small=$OUT/old/checkpoint.pt" \
  --views $EPOCHS --view-seed 0 --out "$OUT/teacher_cache.zarr" --resolution $RES --batch-size 128 -j 2
$PCT precompute-teachers --data "$OUT/val.beton" --teacher "cnn_small=$OUT/old/checkpoint.pt" \
  --eval-view --out "$OUT/old.zarr" --resolution $RES --batch-size 128 -j 2

step "4/6 new model: cnn_wide, seeds $SEEDS, plain CE / cached focal distillation / cached LDI"
for seed in $SEEDS; do
  for method in ce fd ldi; do
    run="$OUT/new_${method}_s$seed"
    [ -f "$run/predictions.zarr/zarr.json" ] && continue
    case $method in ce) extra="" ;; fd) extra="--teacher-cache $OUT/teacher_cache.zarr $FD" ;;
                    ldi) extra="--teacher-cache $OUT/teacher_cache.zarr $LDI" ;; esac
    echo "-- $method seed $seed"
    rm -rf "$run"
    $PCT train --data "$OUT/train.beton" --val "$OUT/val.beton" --out "$run" --arch cnn_wide \
      --seed "$seed" $COMMON $extra | tail -n 1
  done
done

step "5/6 pct analyze: old vs the seed-1 models (all seeds: $OUT/report.{txt,json,png})"
preds=()
for method in ce fd ldi; do for seed in $SEEDS; do preds+=("$OUT/new_${method}_s$seed/predictions.zarr"); done; done
$PCT analyze "$OUT/old.zarr" "${preds[@]}" --json "$OUT/report.json" --plot "$OUT/report.png" > "$OUT/report.txt"
first=${SEEDS%% *}
$PCT analyze "$OUT/old.zarr" "$OUT/new_ce_s$first/predictions.zarr" "$OUT/new_fd_s$first/predictions.zarr" \
  "$OUT/new_ldi_s$first/predictions.zarr"

step "6/6 pooled over seeds, with a paired bootstrap of the flip reduction"
$PY demo/summarize.py "$OUT" --seeds $SEEDS

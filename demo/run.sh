#!/usr/bin/env bash
# End-to-end demo on real data (scikit-learn's handwritten digits): old model -> teacher cache ->
# new model trained with plain CE, with cached focal distillation and with cached LDI, several
# seeds each -> regression report, pooled over the seeds with paired bootstraps against CE.
#
#   bash demo/run.sh OUT_DIR                          (make demo runs it into demo-out/)
#   SEEDS="6 7 8 9 10" WORKERS=1 bash demo/run.sh OUT_DIR
#
# SEEDS: the new models' seeds; WORKERS: loader workers of every stage, which is also the torch
# thread count (the FFCV loader sets it). Exact flip counts depend on the thread count and the
# CPU's kernels; the conclusion should not (README: What `make demo` shows).
# Recipe and why: README.md. In short: 16 px digits with NOISE of the *training* labels replaced
# by a wrong class (validation stays clean) so that the new model makes diverse mistakes; digit-
# preserving augmentation (crops keeping >= half the image, no mirroring); a deliberately small
# old model (cnn_small at width 2, ~87% top-1) so that there are old-right images to regress on.
set -euo pipefail
OUT=${1:-demo-out}
PCT=${PCT:-.venv/bin/pct}
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-"1 2 3 4 5"}
WORKERS=${WORKERS:-2}
EPOCHS=15
RES=16
NOISE=0.5
AUG="--scale 0.5 1 --flip 0"
COMMON="--batch-size 32 --lr 0.1 --lr-schedule cosine --workers $WORKERS --resolution $RES --print-freq 0 --epochs $EPOCHS"
OLD="--arch cnn_small --model-kwargs width=2 --seed 0"
FD="--kd-loss-mode kl --kd-alpha 0.3 --kd-temperature 4 --kd-filter old_correct --filter-base 1 --filter-scale 5"
LDI="--kd-loss-mode li --kd-alpha 0.3 --li-p 2 --li-margin 0.5"
RECIPE="noise $NOISE | res $RES | epochs $EPOCHS | workers $WORKERS | $AUG | old $OLD | fd $FD | ldi $LDI"
mkdir -p "$OUT"
# A folder resumes only with the same recipe (seeds may be added): never mix two recipes' runs.
if [ -f "$OUT/recipe.txt" ] && [ "$(cat "$OUT/recipe.txt")" != "$RECIPE" ]; then
  echo "demo: $OUT was made with another recipe or WORKERS: $(cat "$OUT/recipe.txt")" >&2; exit 2
fi
echo "$RECIPE" > "$OUT/recipe.txt"
start=$SECONDS
step() { printf '\n== %s  (%d s)\n' "$*" $((SECONDS - start)); }

step "1/6 digits data set ($RES px, $NOISE of the training labels replaced, clean validation)"
[ -f "$OUT/digits/digits.json" ] || $PY data/build_digits.py "$OUT/digits" --size $RES --label-noise $NOISE --seed 0
for split in train val; do
  [ -f "$OUT/$split.beton" ] || $PCT write-dataset "$OUT/digits/$split" "$OUT/$split.beton" --max-resolution 64 -j "$WORKERS"
done

step "2/6 old model: cnn_small at width 2, plain CE"
[ -f "$OUT/old/predictions.zarr/zarr.json" ] || $PCT train --data "$OUT/train.beton" --val "$OUT/val.beton" \
  --out "$OUT/old" $OLD $COMMON $AUG | tail -n 1

step "3/6 teacher cache: $EPOCHS training views, and the old model's validation predictions"
# (precompute-teachers resumes a store: done shards are skipped)
$PCT precompute-teachers --data "$OUT/train.beton" \
  --teacher "cnn_small=$OUT/old/checkpoint.pt" --views $EPOCHS --view-seed 0 $AUG \
  --out "$OUT/teacher_cache.zarr" --resolution $RES --batch-size 128 -j "$WORKERS"
$PCT precompute-teachers --data "$OUT/val.beton" \
  --teacher "cnn_small=$OUT/old/checkpoint.pt" --eval-view --out "$OUT/old.zarr" --resolution $RES \
  --batch-size 128 -j "$WORKERS"

step "4/6 new model: cnn_wide, seeds $SEEDS, plain CE / cached focal distillation / cached LDI"
for seed in $SEEDS; do
  for method in ce fd ldi; do
    run="$OUT/new_${method}_s$seed"
    [ -f "$run/predictions.zarr/zarr.json" ] && continue
    # The cached runs take scale, ratio and flip from the cache (same views as the teacher saw).
    case $method in ce) extra="$AUG" ;; fd) extra="--teacher-cache $OUT/teacher_cache.zarr $FD" ;;
                    ldi) extra="--teacher-cache $OUT/teacher_cache.zarr $LDI" ;; esac
    echo "-- $method seed $seed"
    rm -rf "$run"
    $PCT train --data "$OUT/train.beton" --val "$OUT/val.beton" --out "$run" --arch cnn_wide \
      --seed "$seed" --old-predictions "$OUT/old.zarr" $COMMON $extra | tail -n 1
  done
done

first=${SEEDS%% *}
step "5/6 pct analyze: old vs the seed-$first models, their flips in $OUT/flips.png (all seeds: $OUT/report.{txt,json,png})"
preds=()
for method in ce fd ldi; do for seed in $SEEDS; do preds+=("$OUT/new_${method}_s$seed/predictions.zarr"); done; done
$PCT analyze "$OUT/old.zarr" "${preds[@]}" --json "$OUT/report.json" --plot "$OUT/report.png" --overwrite \
  > "$OUT/report.txt"
$PCT analyze "$OUT/old.zarr" "$OUT/new_ce_s$first/predictions.zarr" "$OUT/new_fd_s$first/predictions.zarr" \
  "$OUT/new_ldi_s$first/predictions.zarr" --images "$OUT/val.beton" --gallery "$OUT/flips.png" --overwrite

step "6/6 pooled over seeds $SEEDS, with paired bootstraps against plain CE"
$PY demo/summarize.py "$OUT" --seeds $SEEDS --plot "$OUT/summary.png"
$PY demo/flips_per_epoch.py "$OUT" --seed "$first" --plot "$OUT/flips_per_epoch.png"
printf '\ndemo finished in %d s (WORKERS=%s, seeds %s)\n' $((SECONDS - start)) "$WORKERS" "$SEEDS"

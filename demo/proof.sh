#!/usr/bin/env bash
# The PCT result on Fashion-MNIST, end to end through the real `pct` commands (`make proof` runs
# it into proof-out/): all 60,000 training and 10,000 test images, clean labels; the old model
# (resnet18, a few epochs) -> its teacher cache over the new model's training views and its
# test-set predictions -> the new model (cnn_wide) per seed with plain CE, cached focal
# distillation and cached LDI -> pct analyze -> pooled over the seeds with paired bootstraps.
# One more FD student trains with the old model run in the step (--online-teacher) instead of
# the cache, to measure what the cache saves (demo/proof_timing.py).
#
#   bash demo/proof.sh OUT                    (make proof runs it into proof-out/)
#   SEEDS="4 5 6" bash demo/proof.sh OUT      seeds that did not choose the recipe
#
# The recipe was chosen by demo/proof_grid.sh's stage 1 on seed 1 (docs/proof.md: the grid, the
# rule, and the targets this recipe does not meet).
set -euo pipefail
OUT=${1:-proof-out}
source "$(dirname "$0")/proof_common.sh"
SEEDS=${SEEDS:-"1 2 3"}
FD=${FD:-"--kd-loss-mode kl --kd-alpha 0.3 --kd-temperature 1 --kd-filter old_correct --filter-base 0 --filter-scale 1"}
LDI=${LDI:-"--kd-loss-mode li --kd-alpha 0.3 --li-p 2 --li-margin 0.5"}
RECIPE="seeds from 1 | epochs $EPOCHS | old $OLD | new $NEW | views $VIEWS | fd $FD | ldi $LDI"
mkdir -p "$OUT"
# A folder resumes only with the same recipe (seeds may differ): never mix two recipes' runs.
if [ -f "$OUT/recipe.txt" ] && [ "$(cat "$OUT/recipe.txt")" != "$RECIPE" ]; then
  echo "proof: $OUT was made with another recipe: $(cat "$OUT/recipe.txt")" >&2; exit 2
fi
echo "$RECIPE" > "$OUT/recipe.txt"

build_data
train_old
precompute
step "new model: cnn_wide (width $NEW_WIDTH), seeds $SEEDS: plain CE / cached FD / cached LDI"
first=${SEEDS%% *}
for seed in $SEEDS; do
  student ce "$seed" $(ce_flags)
  student fd "$seed" $(cached_flags $FD)
  student ldi "$seed" $(cached_flags $LDI)
done
step "FD with the old model run in the step (seed $first): what the cache saves"
student fd_online "$first" $VIEWS --view-seed 0 --online-teacher "resnet18=$OUT/old/checkpoint.pt" $FD

step "pct analyze: the old model against the seed-$first models, a gallery of FD's negative flips"
timed analyze $PCT analyze "$OUT/old.zarr" "$OUT/new_ce_s$first/predictions.zarr" \
  "$OUT/new_fd_s$first/predictions.zarr" "$OUT/new_ldi_s$first/predictions.zarr" \
  --json "$OUT/report.json" --plot "$OUT/report.png" --images "$OUT/val.beton" \
  --gallery "$OUT/flips.png" --overwrite > "$OUT/report.txt"
head -n 12 "$OUT/report.txt"

step "pooled over seeds $SEEDS, with paired bootstraps against plain CE"
$PY demo/summarize.py "$OUT" --seeds $SEEDS --aims 0.25 0.005 --plot "$OUT/summary.png"
$PY demo/proof_timing.py "$OUT" --seeds $SEEDS
printf '\nproof finished in %d s (WORKERS=%s, seeds %s)\n' $((SECONDS - start)) "$WORKERS" "$SEEDS"

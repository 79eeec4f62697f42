#!/usr/bin/env bash
# The recipe search of the Fashion-MNIST proof, on seeds 1-3 only (demo/proof.sh reports the
# chosen recipe on other seeds too). Shares demo/proof_common.sh's data, old model and teacher
# cache; the new model's architecture and length are those of proof_common.sh.
#
#   bash demo/proof_grid.sh OUT          stage 1: every variant on seed 1 (GRID_SEEDS)
#   STAGE=2 bash demo/proof_grid.sh OUT  stage 2: the shortlist on seeds 1 2 3
#
# Rule, fixed before the runs: a variant qualifies when its mean top-1 is at most 0.5 points
# below plain CE's; the shortlist is the qualifying FD and LDI variants with the most pooled
# negative flips removed on seed 1 (two FD, one LDI); the recipe is the shortlisted one with the
# largest pooled reduction on seeds 1-3 whose paired 95% interval excludes zero.
set -euo pipefail
OUT=${1:?usage: demo/proof_grid.sh OUT}
source "$(dirname "$0")/proof_common.sh"
mkdir -p "$OUT"

declare -A GRID=(
  [fd_a03_t4_b1s5]="--kd-loss-mode kl --kd-alpha 0.3 --kd-temperature 4 --kd-filter old_correct --filter-base 1 --filter-scale 5"
  [fd_a05_t4_b1s5]="--kd-loss-mode kl --kd-alpha 0.5 --kd-temperature 4 --kd-filter old_correct --filter-base 1 --filter-scale 5"
  [fd_a03_t1_b0s1]="--kd-loss-mode kl --kd-alpha 0.3 --kd-temperature 1 --kd-filter old_correct --filter-base 0 --filter-scale 1"
  [fd_a05_t1_b0s1]="--kd-loss-mode kl --kd-alpha 0.5 --kd-temperature 1 --kd-filter old_correct --filter-base 0 --filter-scale 1"
  [fd_a05_t4_b0s1]="--kd-loss-mode kl --kd-alpha 0.5 --kd-temperature 4 --kd-filter old_correct --filter-base 0 --filter-scale 1"
  [fd_a09_t100_b1s5]="--kd-loss-mode kl --kd-alpha 0.9 --kd-temperature 100 --kd-filter old_correct --filter-base 1 --filter-scale 5"
  [fd_a05_t1_nf_b0s1]="--kd-loss-mode kl --kd-alpha 0.5 --kd-temperature 1 --kd-filter neg_flip --filter-base 0 --filter-scale 1"
  [fd_a05_t4_nf_b0s1]="--kd-loss-mode kl --kd-alpha 0.5 --kd-temperature 4 --kd-filter neg_flip --filter-base 0 --filter-scale 1"
  [fd_a02_l5_t1_nf_b0s1]="--kd-loss-mode kl --kd-alpha 0.2 --kd-loss-weight 5 --kd-temperature 1 --kd-filter neg_flip --filter-base 0 --filter-scale 1"
  [fd_a02_l5_t4_b1s5]="--kd-loss-mode kl --kd-alpha 0.2 --kd-loss-weight 5 --kd-temperature 4 --kd-filter old_correct --filter-base 1 --filter-scale 5"
  [ldi_a02_l5_m05]="--kd-loss-mode li --kd-alpha 0.2 --kd-loss-weight 5 --li-p 2 --li-margin 0.5"
  [ldi_a03_m05]="--kd-loss-mode li --kd-alpha 0.3 --li-p 2 --li-margin 0.5"
  [ldi_a05_m05]="--kd-loss-mode li --kd-alpha 0.5 --li-p 2 --li-margin 0.5"
  [ldi_a05_m1]="--kd-loss-mode li --kd-alpha 0.5 --li-p 2 --li-margin 1"
)
STAGE=${STAGE:-1}
if [ "$STAGE" = 1 ]; then
  SEEDS=${GRID_SEEDS:-1}
  NAMES=$(printf '%s\n' "${!GRID[@]}" | sort)
else
  SEEDS="1 2 3"
  NAMES=${SHORTLIST:?STAGE=2 needs SHORTLIST, the variants kept from stage 1}
fi

build_data
train_old
precompute
step "students: plain CE and the variants ($NAMES) on seeds $SEEDS"
for seed in $SEEDS; do
  student ce "$seed" $(ce_flags)
  for name in $NAMES; do
    student "$name" "$seed" $(cached_flags ${GRID[$name]})
  done
done
step "pooled over seeds $SEEDS against plain CE"
$PY demo/summarize.py "$OUT" --seeds $SEEDS --methods ce $NAMES --json "$OUT/grid_stage$STAGE.json"
printf '\ngrid stage %s finished in %d s\n' "$STAGE" $((SECONDS - start))

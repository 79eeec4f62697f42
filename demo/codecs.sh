#!/usr/bin/env bash
# Compact teacher caches on the demo: does cached focal distillation (FD) from an int8 or a top-k
# cache keep what FD from the float16 cache gives? Runs on a finished demo folder (demo/run.sh):
# precomputes the same views of the same old model with --codec int8 and --codec topk:K, reports
# each cache's fidelity against the float16 cache, trains FD from each for the folder's seeds,
# and pools negative flips and top-1 over the seeds with paired bootstraps (demo/summarize.py):
# ce / fd / fd_int8 / fd_topkK against ce, then fd_int8 / fd_topkK against fd.
#
#   bash demo/codecs.sh OUT_DIR                 (after: bash demo/run.sh OUT_DIR)
#   SEEDS="1 2" TOPK=3 bash demo/codecs.sh OUT_DIR
#
# SEEDS: default the seeds of OUT_DIR's fd runs. TOPK: default 10. The digits have 10 classes,
# so topk:10 keeps every class (a check of the format, not of the truncation); TOPK=3 shows
# what dropping classes does. The recipe (resolution, epochs, workers, views, FD options) is
# read from OUT_DIR/recipe.txt, so these runs differ from the folder's fd runs in the cache only.
set -euo pipefail
OUT=${1:-demo-out}
PCT=${PCT:-.venv/bin/pct}
PY=${PY:-.venv/bin/python}
TOPK=${TOPK:-10}
for need in recipe.txt train.beton val.beton old/checkpoint.pt old.zarr teacher_cache.zarr; do
  [ -e "$OUT/$need" ] || { echo "demo: $OUT/$need is missing: run bash demo/run.sh $OUT first" >&2; exit 2; }
done
RECIPE=$(cat "$OUT/recipe.txt")
part() { printf '%s\n' "$RECIPE" | awk -F ' [|] ' -v i="$1" '{print $i}'; }
RES=$(part 2); RES=${RES#res }
EPOCHS=$(part 3); EPOCHS=${EPOCHS#epochs }
WORKERS=$(part 4); WORKERS=${WORKERS#workers }
AUG=$(part 5)
FD=$(part 7); FD=${FD#fd }
T=$(printf '%s\n' "$FD" | sed -n 's/.*--kd-temperature \([^ ]*\).*/\1/p')
# as demo/run.sh
COMMON="--batch-size 32 --lr 0.1 --lr-schedule cosine --workers $WORKERS --resolution $RES --print-freq 0 --epochs $EPOCHS"
if [ -z "${SEEDS:-}" ]; then
  SEEDS=$(for d in "$OUT"/new_fd_s*/predictions.zarr; do [ -e "$d" ] && basename "$(dirname "$d")"; done \
          | sed 's/^new_fd_s//' | sort -n | tr '\n' ' ')
  SEEDS=${SEEDS% }
fi
[ -n "$SEEDS" ] || { echo "demo: no finished fd runs in $OUT (new_fd_s*/predictions.zarr)" >&2; exit 2; }
for seed in $SEEDS; do
  for method in ce fd; do
    [ -f "$OUT/new_${method}_s$seed/predictions.zarr/zarr.json" ] || {
      echo "demo: $OUT/new_${method}_s$seed is not finished: run SEEDS=\"$SEEDS\" bash demo/run.sh $OUT" >&2; exit 2; }
  done
done
start=$SECONDS
step() { printf '\n== %s  (%d s)\n' "$*" $((SECONDS - start)); }

step "1/3 int8 and topk:$TOPK caches of the demo's $EPOCHS views, and their fidelity against the float16 cache"
for codec in int8 "topk:$TOPK"; do
  name=${codec/:/}
  $PCT precompute-teachers --data "$OUT/train.beton" \
    --teacher "cnn_small=$OUT/old/checkpoint.pt" --views "$EPOCHS" --view-seed 0 $AUG \
    --out "$OUT/teacher_cache_$name.zarr" --resolution "$RES" --batch-size 128 -j "$WORKERS" --codec "$codec"
  $PCT cache-fidelity "$OUT/teacher_cache_$name.zarr" --exact "$OUT/teacher_cache.zarr" --temperature "$T"
done
du -sh "$OUT/teacher_cache.zarr" "$OUT/teacher_cache_int8.zarr" "$OUT/teacher_cache_topk$TOPK.zarr"

step "2/3 cached FD from each cache, seeds $SEEDS"
for seed in $SEEDS; do
  for name in int8 "topk$TOPK"; do
    run="$OUT/new_fd_${name}_s$seed"
    [ -f "$run/predictions.zarr/zarr.json" ] && continue
    echo "-- fd_$name seed $seed"
    rm -rf "$run"
    $PCT train --data "$OUT/train.beton" --val "$OUT/val.beton" --out "$run" --arch cnn_wide \
      --seed "$seed" $COMMON --teacher-cache "$OUT/teacher_cache_$name.zarr" $FD | tail -n 1
  done
done

step "3/3 pooled over seeds $SEEDS: against plain CE, then against FD from the float16 cache"
$PY demo/summarize.py "$OUT" --seeds $SEEDS --methods ce fd fd_int8 "fd_topk$TOPK" \
  --json "$OUT/codecs_summary.json"
$PY demo/summarize.py "$OUT" --seeds $SEEDS --methods fd fd_int8 "fd_topk$TOPK" \
  --json "$OUT/codecs_vs_fd.json"
printf '\ncodec demo finished in %d s (seeds %s)\n' $((SECONDS - start)) "$SEEDS"

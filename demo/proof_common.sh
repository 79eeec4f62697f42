# The Fashion-MNIST proof's shared stages, sourced by demo/proof.sh (the result) and
# demo/proof_grid.sh (the recipe search). Every stage goes through the real `pct` commands and
# is timed by GNU time (wall seconds and peak resident memory into $OUT/times/STAGE.txt).
# A stage whose output is complete is skipped, so a folder resumes where it stopped.
#
# The recipe (why each value: docs/proof.md):
#   data   all 60,000 training and 10,000 test images, their 28 x 28 px stored as they are
#          (raw pixels, no JPEG), clean labels
#   views  random square crops of 73-100% of the image area (sides 24-28 px: shifts of up to
#          4 px and zooms of up to 1.17) resized to 28 px, and horizontal flips (p = 0.5)
#   old    resnet18 (torchvision's ImageNet layout), OLD_EPOCHS epochs of plain CE
#   new    cnn_wide at width NEW_WIDTH, EPOCHS epochs; the cache holds EPOCHS views (one per epoch)
PCT=${PCT:-.venv/bin/pct}
PY=${PY:-.venv/bin/python}
WORKERS=${WORKERS:-2}
EPOCHS=${EPOCHS:-6}
OLD_EPOCHS=${OLD_EPOCHS:-2}
NEW_WIDTH=${NEW_WIDTH:-32}
VIEWS="--resolution 28 --scale 0.73 1 --ratio 1 1 --flip 0.5"
COMMON="--batch-size 128 --lr 0.05 --lr-schedule cosine --wd 5e-4 --crop-ratio 1 --workers $WORKERS --print-freq 0"
OLD="--arch resnet18 --seed 0 --epochs $OLD_EPOCHS"
NEW="--arch cnn_wide --model-kwargs width=$NEW_WIDTH --epochs $EPOCHS"

start=$SECONDS
step() { printf '\n== %s  (%d s)\n' "$*" $((SECONDS - start)); }

# timed NAME COMMAND...: run COMMAND, its wall time and peak memory into $OUT/times/NAME.txt
timed() {
  local name=$1; shift
  mkdir -p "$OUT/times"
  # recorded only when the command succeeds (an interrupted stage leaves no time behind)
  /usr/bin/time -f "%e %M" -o "$OUT/times/$name.part" "$@" && mv "$OUT/times/$name.part" "$OUT/times/$name.txt"
}

untimed() { shift; "$@"; }

build_data() {
  step "data: Fashion-MNIST as ImageFolder trees, then .beton files (pct write-dataset)"
  [ -f "$OUT/fashion/fashion_mnist.json" ] || timed data_tree $PY data/build_fashion_mnist.py "$OUT/fashion"
  for split in train val; do
    [ -f "$OUT/$split.beton" ] || timed "write_$split" $PCT write-dataset "$OUT/fashion/$split" \
      "$OUT/$split.beton" --max-resolution 32 --image-format raw -j "$WORKERS"
  done
}

train_old() {
  step "old model: resnet18, $OLD_EPOCHS epochs of plain CE"
  [ -f "$OUT/old/predictions.zarr/zarr.json" ] || timed train_old $PCT train \
    --data "$OUT/train.beton" --val "$OUT/val.beton" --out "$OUT/old" $OLD $COMMON $VIEWS
}

precompute() {
  step "teacher cache: the old model on the $EPOCHS training views; its test-set predictions"
  # A complete cache answers "already complete" at once; its first run's time stays recorded.
  local t=timed; [ -f "$OUT/times/precompute.txt" ] && t=untimed
  $t precompute $PCT precompute-teachers --data "$OUT/train.beton" \
    --teacher "resnet18=$OUT/old/checkpoint.pt" --views "$EPOCHS" --view-seed 0 $VIEWS \
    --out "$OUT/teacher_cache.zarr" --batch-size 256 -j "$WORKERS"
  $t precompute_old $PCT precompute-teachers --data "$OUT/val.beton" \
    --teacher "resnet18=$OUT/old/checkpoint.pt" --eval-view --crop-ratio 1 --resolution 28 \
    --out "$OUT/old.zarr" --batch-size 256 -j "$WORKERS"
}

# student NAME SEED FLAGS...: the new model trained with FLAGS into $OUT/new_NAME_sSEED
student() {
  local name=$1 seed=$2; shift 2
  local run="$OUT/new_${name}_s$seed"
  [ -f "$run/predictions.zarr/zarr.json" ] && return 0
  echo "-- $name seed $seed"
  rm -rf "$run"
  timed "student_${name}_s$seed" $PCT train --data "$OUT/train.beton" --val "$OUT/val.beton" \
    --out "$run" --seed "$seed" --old-predictions "$OUT/old.zarr" $NEW $COMMON "$@"
}

# The methods: plain CE (it takes the views' options itself), and the cached ones (the cache
# gives them their views).
ce_flags() { echo "$VIEWS"; }
cached_flags() { echo "--teacher-cache $OUT/teacher_cache.zarr $*"; }

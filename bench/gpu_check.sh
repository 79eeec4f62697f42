#!/usr/bin/env bash
# The §Performance training ratios on one NVIDIA GPU, in one command (about 5 minutes):
# a synthetic 224 px ImageNet-like .beton (3,072 JPEGs of ~256 px, 1000 classes), a ResNet-18
# teacher cache (`pct precompute-teachers`), then images/s of ResNet-50 training (bf16 autocast,
# channels_last, DDP under `torchrun --nproc-per-node 1`, nccl) with CE only, cached FD, online
# FD with a ResNet-18 and with an 8 x ResNet-18 ensemble. Prints the table and the GPU's name and
# writes the figures as JSON.
#
#   bash bench/gpu_check.sh [--wheels DIR] [--out FILE] [--workdir DIR] [--dry-run] [-- SIZES]
#
# --wheels DIR  install missing Python packages from this folder of wheels (no network needed);
#               without it, missing packages are named and the script stops.
# --out FILE    result JSON (default bench/gpu_results.json).
# --workdir DIR keep data, checkpoints and cache there (default: a temporary folder, removed).
# --dry-run     the same steps on the CPU with tiny sizes and gloo (64 images, 32 px, ResNet-18
#               student, 2 teachers, 2 steps per run), so that this script cannot rot.
# SIZES         extra options for bench/gpu_train.py prepare, e.g. -- --teacher resnet50
#               (an equal-size teacher, which the online-teacher bar is stated for).
# Python: $PYTHON, else the repository's .venv/bin/python when present, else python3.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"
else PY=python3; fi
WHEELS="" OUT="$ROOT/bench/gpu_results.json" WORK="" DRY=0 EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --workdir) WORK="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # the package itself need not be installed
cd "$ROOT"
START=$SECONDS

# Import name -> pip name of everything the pipeline imports; ffcv's native library is loaded
# too, so a missing libturbojpeg / OpenCV shows up here rather than mid-run.
missing_packages() {
  "$PY" - <<'EOF'
import importlib
need = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "numba": "numba",
        "cv2": "opencv-python", "ffcv.libffcv": "ffcv", "zarr": "zarr", "numcodecs": "numcodecs",
        "click": "click", "tqdm": "tqdm", "PIL": "pillow"}
for module, package in need.items():
    try:
        importlib.import_module(module)
    except Exception as exc:  # ImportError, or OSError from a missing shared library
        print(f"{package}\t{type(exc).__name__}: {exc}")
EOF
}

MISSING="$(missing_packages)"
if [ -n "$MISSING" ] && [ -n "$WHEELS" ]; then
  echo "installing from $WHEELS: $(cut -f1 <<<"$MISSING" | tr '\n' ' ')"
  # shellcheck disable=SC2046
  "$PY" -m pip install -q --no-index --find-links "$WHEELS" $(cut -f1 <<<"$MISSING")
  MISSING="$(missing_packages)"
fi
if [ -n "$MISSING" ]; then
  echo "gpu_check: missing or broken Python packages (give a wheel folder with --wheels DIR;" \
       "ffcv also needs the libturbojpeg and OpenCV shared libraries):" >&2
  sed 's/^/  /' <<<"$MISSING" >&2
  exit 3
fi

if [ "$DRY" = 1 ]; then
  SIZES=(--images 64 --size 40 --classes 4 --resolution 32 --student resnet18
         --teacher resnet18 --ensemble 2 --batch-size 16 --steps 2 --repeats 2 --workers 2
         --device cpu)
else
  if ! "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_check: torch sees no CUDA GPU (use --dry-run to check the script on a CPU)" >&2
    exit 3
  fi
  nvidia-smi -L 2>/dev/null || true
  CORES="$(nproc)"
  SIZES=(--workers "$(( CORES < 12 ? CORES : 12 ))" --device cuda)
fi

if [ -z "$WORK" ]; then
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
fi
mkdir -p "$WORK" "$(dirname "$OUT")"
echo "== prepare: data, teachers, teacher cache in $WORK"
"$PY" bench/gpu_train.py prepare --dir "$WORK" "${SIZES[@]}" "${EXTRA[@]}"
echo "== measure under torchrun ($(( SECONDS - START )) s so far)"
"$PY" -m torch.distributed.run --standalone --nproc-per-node 1 \
  bench/gpu_train.py measure --dir "$WORK" --out "$OUT"
echo "== done in $(( SECONDS - START )) s: $OUT"

"""The training benchmark of bench/train.py at GPU sizes, in two phases (bench/gpu_check.sh runs
both):

    python bench/gpu_train.py prepare --dir WORK [sizes]   synthetic .beton, teacher checkpoints,
                                                           the teacher cache (`pct precompute-teachers`)
    torchrun --nproc-per-node 1 bench/gpu_train.py measure --dir WORK --out RESULT.json

`prepare` saves the sizes in WORK/spec.json; `measure` reads them, joins the process group
torchrun describes (nccl on CUDA, gloo on CPU), wraps the student in DDP, times the variants
(bf16 autocast and channels_last on CUDA, as `pct train`), prints the table and the GPU's name
and writes the figures with the machine's description to --out (rank 0).
"""
import argparse
import json
import os
import sys
import warnings
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import train  # noqa: E402

# ImageNet-like: ~256 px JPEGs, 1000 classes, RandomResizedCrop 224; ResNet-50 student.
GPU_SPEC = train.Spec(student="resnet50", teacher="resnet18", ensemble=8, images=3072,
                      classes=1000, size=256, resolution=224, batch_size=128, workers=12,
                      repeats=5, views=2, device="cuda", null=False)


def prepare(args):
    spec = spec_from(args)
    work = Path(args.dir)
    beton, ckpts = train.prepare(work, spec)
    cache = train.make_cache(beton, ckpts[0], work / "cache.zarr", spec)
    layout = {"beton": str(beton), "cache": str(cache), "ckpts": [str(c) for c in ckpts]}
    (work / "spec.json").write_text(json.dumps({"spec": asdict(spec), **layout}, indent=1))
    print(f"prepared {work}: {spec.images} images, teacher cache {cache}", flush=True)


def measure(args):
    import torch
    import torch.distributed as dist

    from pct_pipeline import distributed

    saved = json.loads((Path(args.dir) / "spec.json").read_text())
    spec = train.Spec(**saved["spec"])
    d = distributed.setup(spec.device)
    if d.device.type == "cpu":  # oneDNN's weight-gradient layout makes DDP warn once; harmless
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    if "RANK" in os.environ and not dist.is_initialized():  # torchrun, even with one process
        cuda = d.device.type == "cuda"
        dist.init_process_group("nccl" if cuda else "gloo", device_id=d.device if cuda else None)
    try:
        gpu = torch.cuda.get_device_name(d.device) if d.device.type == "cuda" else "none (CPU)"
        backend = dist.get_backend() if dist.is_initialized() else "none"
        print(f"device: {d.device}, GPU: {gpu}, process group: {backend}", flush=True)
        bench = train.Bench(saved["beton"], saved["cache"], saved["ckpts"], spec, args.dir)
        result = train.report(bench, train.measure(bench),
                              {"process_group": backend, "gpu_name": gpu})
        if d.is_main:
            result["machine"] = common.machine()
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=1))
            print(f"wrote {args.out}", flush=True)
    finally:
        distributed.cleanup()


def spec_from(args):
    """GPU_SPEC with the sizes given on the command line."""
    sizes = {k: v for k, v in vars(args).items() if k in asdict(GPU_SPEC) and v is not None}
    return train.Spec(**{**asdict(GPU_SPEC), **sizes})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phase", choices=("prepare", "measure"))
    parser.add_argument("--dir", required=True, help="working folder (data, cache, spec.json)")
    parser.add_argument("--out", default="bench/gpu_results.json", help="result JSON (measure)")
    for name in ("student", "teacher", "device"):
        parser.add_argument(f"--{name}")
    for name in ("ensemble", "images", "classes", "size", "resolution", "batch_size", "workers",
                 "steps", "repeats", "views"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int)
    args = parser.parse_args(argv)
    prepare(args) if args.phase == "prepare" else measure(args)


if __name__ == "__main__":
    main()

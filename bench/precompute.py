"""Precompute throughput vs pure teacher inference over the same loader (§Performance: >= 0.9x).

Both sides iterate one ViewLoader (same rows, same batches, same view decoder); side A is the
precompute loop (teacher forward, finiteness check, shard buffers, casts, Zarr writes, done
markers), side B only runs the teacher on each batch. Repeats alternate A/B (ABBA...) so drift on
a shared machine hits both sides; each A repeat writes one more view of the store. Prints the
median and range of each side's images/s, the ratio, and the store's bytes per (sample, view).

    python bench/precompute.py [--data TRAIN.beton] [--arch resnet18] [--resolution 64]
                               [--repeats 4] [--batch-size 128] [--workers 2] [--json OUT]
Without --data, the digits training set (1,257 images) is built at 64 px in a temporary folder.
"""
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import click
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import common  # noqa: E402


def digits_beton(folder):
    sys.path.insert(0, str(ROOT / "data"))
    import build_digits

    from pct_pipeline.dataset import write_beton

    build_digits.build(folder / "digits", size=64)
    write_beton(folder / "digits" / "train", folder / "train.beton", max_resolution=64, workers=2)
    return folder / "train.beton"


def setup(args, folder):
    """(job, loader) for a store of `repeats` views, with the store created empty."""
    from pct_pipeline import models
    from pct_pipeline.dataset import BetonInfo
    from pct_pipeline.precompute import run as pre
    from pct_pipeline.precompute.config import PrecomputeConfig
    from pct_pipeline.precompute.prepare import prepare_store
    from pct_pipeline import store
    from pct_pipeline.views import ViewSpec

    data = Path(args.data) if args.data else digits_beton(folder)
    info = BetonInfo(data)
    torch.manual_seed(0)
    ckpt = folder / "teacher.pt"
    models.save_atomic({"model": models.build_model(args.arch, info.num_classes).state_dict(),
                        "classes": info.classes}, ckpt)
    cfg = PrecomputeConfig(data=str(data), teachers=((args.arch, str(ckpt)),),
                           out=str(folder / "cache.zarr"), views=args.repeats,
                           spec=ViewSpec(resolution=args.resolution), batch_size=args.batch_size,
                           workers=args.workers, device="cpu", overwrite=True)
    teachers = pre.load_teachers(cfg, info, torch.device("cpu"))
    out = store.Location(cfg.out)
    prepare_store(cfg, info, teachers, out)
    job = pre.Job(cfg, out, store.existing_attrs(out), tuple(teachers), info.heights,
                  info.widths, torch.device("cpu"))
    loader = pre.make_loader(job, np.arange(info.num_samples))
    return job, loader, info.num_samples


def precompute_pass(job, loader, view):
    from pct_pipeline.precompute import run as pre

    pre.compute_view(job, loader, view, list(range(int(job.attrs["num_shards"]))))


def inference_pass(job, loader, view):
    model = job.teachers[0].model
    loader.set_view(view)
    with torch.inference_mode():
        for images, _, _ in loader:
            model(images)


def timed(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--data", default=None)
@click.option("--arch", default="resnet18", show_default=True)
@click.option("--resolution", default=64, show_default=True)
@click.option("--repeats", default=4, show_default=True)
@click.option("--batch-size", default=128, show_default=True)
@click.option("--workers", default=2, show_default=True)
@click.option("--json", default=None, help="Also write the result dict here.")
def main(**options):
    args = SimpleNamespace(**options)
    with tempfile.TemporaryDirectory() as tmp:
        job, loader, n = setup(args, Path(tmp))
        inference_pass(job, loader, 0)  # warm-up: numba JIT of the loader, allocator, caches
        rates = {"precompute": [], "inference": []}
        for r in range(args.repeats):
            order = ("precompute", "inference") if r % 2 == 0 else ("inference", "precompute")
            for side in order:
                fn = precompute_pass if side == "precompute" else inference_pass
                rates[side].append(n / timed(fn, job, loader, r))
        result = report(args, rates, job, n)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


def report(args, rates, job, n):
    for side, values in rates.items():
        print(f"{side:>10}: {statistics.median(values):7.1f} images/s median "
              f"(range {min(values):.1f}-{max(values):.1f}, {len(values)} repeats)")
    check = common.ratio_check("precompute: precompute / pure teacher inference",
                               rates["precompute"], rates["inference"], ">=", 0.9)
    common.print_checks([check])
    size = job.out.size()
    logits = type(job.out)(job.out.path / "logits").size()  # a local store.Location
    views = int(job.attrs["views"])
    print(f"store: {size} bytes for {n} samples x {views} views = "
          f"{size / (n * views):.1f} bytes per (sample, view) ({logits / (n * views):.1f} of them "
          f"logits; {job.attrs['num_classes']} classes, float16 raw = "
          f"{2 * job.attrs['num_classes']} bytes)")
    print(f"setup: {args.arch} at {args.resolution} px, batch {args.batch_size}, "
          f"{args.workers} workers, {torch.get_num_threads()} torch threads, cpu")
    setup = {k: v for k, v in vars(args).items() if k != "json"}
    setup.update(samples=n, store_bytes_per_sample_view=size / (n * views), data=args.data or
                 "digits train set at 64 px")
    return {"name": "precompute", "setup": setup,
            "figures": {f"{side}_images_per_s": common.figure(v) for side, v in rates.items()},
            "checks": [check]}


if __name__ == "__main__":
    main()

"""Images/s of our FFCV ViewLoader vs torchvision's ImageFolder + PIL DataLoader (§Performance:
>= 3x at equal workers).

Both sides read the same synthetic ImageNet-like images (JPEGs of about SIZE px, varied aspect;
ours from a .beton written by `write_dataset`'s writer, torchvision's from the ImageFolder it was
written from), in random order, and do the same work with the same number of workers: decode,
RandomResizedCrop(R) (scale 0.08-1, ratio 3/4-4/3) + horizontal flip, normalisation to float32
batches [B, 3, R, R] (ffcv: in the loader's WORKERS threads; torchvision: in its WORKERS
processes), every image of the epoch delivered (checked). Each side's first epoch (ffcv's JIT
compile, torchvision's worker start) is reported apart; then full epochs alternate A B B A ...
and the median and range of each side's images/s and of the per-repeat ratio are printed, with
the load average before and after (other work on the machine slows both sides, not equally).

    python bench/loader.py [--images 2048] [--size 160] [--resolution 128] [--batch-size 64]
                           [--workers 2] [--repeats 6] [--json OUT]
"""
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def torchvision_loader(tree, resolution, batch_size, workers, seed=0):
    """The torchvision reference recipe's training loader (PIL decode and augmentation)."""
    from torchvision import datasets, transforms

    from pct_pipeline import views

    transform = transforms.Compose([
        transforms.RandomResizedCrop(resolution), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),  # [0, 1]: our constants are on the 0-255 scale
        transforms.Normalize([m / 255 for m in views.IMAGENET_MEAN],
                             [s / 255 for s in views.IMAGENET_STD])])
    dataset = datasets.ImageFolder(str(tree), transform)
    # persistent workers: steady state excludes forking them, as ffcv's excludes its JIT
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                       num_workers=workers, persistent_workers=True,
                                       generator=torch.Generator().manual_seed(seed))


def ffcv_loader(beton, resolution, batch_size, workers, seed=0):
    from pct_pipeline.dataset import Shuffle, ViewLoader
    from pct_pipeline.views import ViewSpec

    return ViewLoader(beton, ViewSpec(resolution=resolution), batch_size, workers,
                      shuffle=Shuffle(seed, drop_last=False))


def epoch_seconds(loader, epoch, images, resolution):
    """Wall seconds of one full pass; ffcv gets a fresh epoch (order) and view each time."""
    if hasattr(loader, "set_view"):
        loader.set_epoch(epoch)
        loader.set_view(epoch)
    seen, start = 0, time.perf_counter()
    for batch, labels, *_ in loader:
        assert batch.dtype == torch.float32 and batch.shape[1:] == (3, resolution, resolution)
        seen += len(batch)
    seconds = time.perf_counter() - start
    if seen != images:
        raise RuntimeError(f"an epoch delivered {seen} images, expected {images}")
    return seconds


def measure(tree, beton, images, args):
    """{'first_epoch_s': {...}, 'images_per_s': {'ffcv': [...], 'torchvision': [...]}}."""
    sides = {"torchvision": torchvision_loader(tree, args.resolution, args.batch_size, args.workers),
             "ffcv": ffcv_loader(beton, args.resolution, args.batch_size, args.workers)}
    # torchvision first: its workers fork before ffcv starts any thread in this process
    first = {name: epoch_seconds(loader, 0, images, args.resolution)
             for name, loader in sides.items()}
    rates = {"ffcv": [], "torchvision": []}
    for r in range(args.repeats):
        order = ("ffcv", "torchvision") if r % 2 == 0 else ("torchvision", "ffcv")
        for name in order:
            rates[name].append(images / epoch_seconds(sides[name], r + 1, images, args.resolution))
    return first, rates


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--images", default=2048, show_default=True)
@click.option("--size", default=160, show_default=True)
@click.option("--classes", default=100, show_default=True)
@click.option("--resolution", default=128, show_default=True)
@click.option("--batch-size", default=64, show_default=True)
@click.option("--workers", default=2, show_default=True)
@click.option("--repeats", default=6, show_default=True)
@click.option("--json", default=None, help="Also write the result dict here.")
def main(**options):
    # size: the mean source image side, px
    args = SimpleNamespace(**options)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        tree, beton = common.synthetic_beton(tmp, args.images, args.size, args.classes,
                                             args.workers)
        build_s = time.perf_counter() - start
        load_before = os.getloadavg()[0]
        first, rates = measure(tree, beton, args.images, args)
        load = [load_before, os.getloadavg()[0]]
    result = report(args, first, rates, build_s, load)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


def report(args, first, rates, build_s, load):
    figures = {f"{name}_images_per_s": common.figure(v) for name, v in rates.items()}
    checks = [common.ratio_check("loader: ffcv ViewLoader / torchvision ImageFolder+PIL",
                                 rates["ffcv"], rates["torchvision"], ">=", 3.0)]
    setup = {"images": args.images, "source_px": args.size, "resolution": args.resolution,
             "batch_size": args.batch_size, "workers": args.workers, "repeats": args.repeats,
             "data_build_s": build_s, "first_epoch_s": first, "load_average": load,
             "cores": os.cpu_count()}
    print(f"loader: {args.images} synthetic JPEGs of ~{args.size} px -> RandomResizedCrop "
          f"{args.resolution} + flip, batch {args.batch_size}, {args.workers} workers each")
    print(f"  load average {load[0]:.2f} before, {load[1]:.2f} after; {os.cpu_count()} cores")
    print(f"  first epoch (not counted): ffcv {first['ffcv']:.2f} s (JIT compile), "
          f"torchvision {first['torchvision']:.2f} s (worker start)")
    common.print_figures(figures)
    common.print_checks(checks)
    return {"name": "loader", "setup": setup, "figures": figures, "checks": checks}


if __name__ == "__main__":
    main()

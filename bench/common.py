"""What the benchmarks share: a synthetic ImageNet-like ImageFolder, spread
statistics, ratio checks against the §Performance bars, and a description of the machine.

A figure is {"median", "min", "max", "values"} over repeats. A check is a measured value against
a bar: {"name", "value", "bar", "pass", "spread"}, where `spread` is [min, max] of the same
quantity computed per repeat (A and B of one repeat ran back to back); a ratio's value is the
median of its per-repeat ratios.
"""
import os
import platform
import statistics
import sys
from importlib import metadata
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VERSIONED = ("torch", "torchvision", "ffcv", "zarr", "numpy", "numba", "numcodecs", "pillow",
             "opencv-python")


def _synthetic_jpeg(job):
    """Write one smooth colour field + sensor-like noise as a JPEG (~0.5 bits per pixel, like
    photographs; pure noise would be far costlier to decode than real images)."""
    from PIL import Image

    path, seed, size = job
    rng = np.random.default_rng(seed)
    w, h = (size * rng.uniform(0.75, 1.25, 2)).astype(int)  # varied aspect, as in ImageNet
    base = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    pixels = np.asarray(base.resize((w, h), Image.BICUBIC), np.float32)
    pixels += rng.normal(0, 10, (h, w, 1)) + rng.normal(0, 4, (h, w, 3))
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)


def synthetic_imagefolder(out, images, size, classes, seed=0, workers=2):
    """ImageFolder OUT/<class>/<i>.jpg of `images` JPEGs whose sides are `size` x U(0.75, 1.25);
    image i has class i mod `classes` (so every class folder is non-empty). Returns OUT."""
    if images < classes:
        raise ValueError(f"{images} images cannot fill {classes} class folders")
    out = Path(out)
    for c in range(classes):
        (out / f"c{c:04d}").mkdir(parents=True, exist_ok=True)
    jobs = [(out / f"c{i % classes:04d}" / f"{i:06d}.jpg", seed * 1_000_003 + i, size)
            for i in range(images)]
    with Pool(max(1, workers)) as pool:
        pool.map(_synthetic_jpeg, jobs, chunksize=64)
    return out


def synthetic_beton(folder, images, size, classes, workers=2):
    """(ImageFolder, .beton written by our writer) of a synthetic data set in `folder`."""
    from pct_pipeline.dataset import write_beton

    folder = Path(folder)
    tree = synthetic_imagefolder(folder / "images", images, size, classes, workers=workers)
    beton = folder / "data.beton"
    write_beton(tree, beton, max_resolution=int(size * 1.25) + 1, workers=workers)
    return tree, beton


def figure(values):
    """Median, range and all values of a list of measurements."""
    values = [float(v) for v in values]
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "values": values}


def check(name, value, per_repeat, op, bar, unit=""):
    """A measured value against its bar; `per_repeat` gives the spread. op: '>=', '<=' or '<'."""
    ok = {">=": value >= bar, "<=": value <= bar, "<": value < bar}[op]
    spread = [min(per_repeat), max(per_repeat)] if per_repeat else [value, value]
    return {"name": name, "value": float(value), "bar": f"{op} {bar:g}{unit}", "pass": bool(ok),
            "spread": [float(s) for s in spread]}


def ratio_check(name, a, b, op, bar):
    """The median of the per-repeat ratios a[r] / b[r] against a bar, with their range.

    a[r] and b[r] ran next to each other in repeat r, so a slow drift of the machine's speed
    (on a shared 2-core machine, epochs of equal work took 1.05-1.42 s in one run) cancels
    in each ratio; median(a) / median(b) would compare runs minutes apart."""
    per_repeat = [x / y for x, y in zip(a, b)]
    return check(name, statistics.median(per_repeat), per_repeat, op, bar, "x")


def print_figures(figures, unit="images/s"):
    for name, fig in figures.items():
        print(f"  {name:>28}: {fig['median']:9.1f} {unit} median "
              f"(range {fig['min']:.1f}-{fig['max']:.1f}, {len(fig['values'])} repeats)")


def print_checks(checks):
    for c in checks:
        print(f"  {c['name']}: {c['value']:.3f} (per repeat {c['spread'][0]:.3f}-"
              f"{c['spread'][1]:.3f}); bar {c['bar']}: {'PASS' if c['pass'] else 'FAIL'}")


def machine():
    """CPU model, cores, memory, load average, GPU (if any) and library versions."""
    cpu = platform.processor()
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = None
    if Path("/proc/meminfo").is_file():
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory = round(kib / 2**20, 1)
    versions = {"python": sys.version.split()[0]}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory,
            "load_average": list(os.getloadavg()), "gpu": gpu_name(), "platform": platform.platform(),
            "versions": versions}


def gpu_name():
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None

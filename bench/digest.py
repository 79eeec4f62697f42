"""What the .beton fingerprint of the stored image bytes costs: `pct write-dataset` reads every
image once more after writing to hash it (dataset/reader.image_digests).

Measures the digest of (1) the digits training set and (2) a synthetic ImageNet-like data set
(photograph-like JPEGs stored at --max-resolution 256, quality 90), each over several repeats
with the file in the page cache, and extrapolates (2) to ImageNet-1k's 1,281,167 images:
time = images x (time per image) + bytes / (bytes per second), from the two measured rates.
"""
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

IMAGENET_IMAGES = 1_281_167


def timed_digest(beton, repeats):
    """(median seconds, every repeat) of image_digests(beton)."""
    from pct_pipeline.dataset.reader import image_digests

    image_digests(beton)  # page cache and imports warm
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        image_digests(beton)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), runs


def image_bytes(beton):
    """(images, stored image bytes) of a .beton."""
    from ffcv.reader import Reader

    from pct_pipeline.dataset.reader import _image_table

    sizes = _image_table(Reader(str(beton)))[3]
    return len(sizes), int(sizes.sum())


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--images", default=2000, show_default=True, help="Synthetic images.")
@click.option("--repeats", default=5, show_default=True)
@click.option("--json", "json_out", default=None, help="Also write the result dict here.")
def main(images, repeats, json_out):
    result = {"machine": common.machine(), "sets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        from precompute import digits_beton  # bench/precompute.py: the digits at 64 px

        sets = {"digits (1,257 images, 64 px JPEG)": digits_beton(Path(tmp) / "digits"),
                f"synthetic ImageNet-like ({images} images, 256 px JPEG q90)":
                    common.synthetic_beton(Path(tmp) / "synthetic", images, 320, 10)[1]}
        for name, beton in sets.items():
            seconds, runs = timed_digest(beton, repeats)
            count, size = image_bytes(beton)
            result["sets"][name] = {"images": count, "bytes": size, "seconds": seconds,
                                    "runs": runs, "bytes_per_s": size / seconds}
            print(f"{name}: {count} images, {size / 2**20:.1f} MiB: {1e3 * seconds:.1f} ms "
                  f"(median of {repeats}; {min(runs) * 1e3:.1f}-{max(runs) * 1e3:.1f}), "
                  f"{size / seconds / 2**30:.2f} GiB/s")
    synthetic = result["sets"][name]
    per_image = synthetic["bytes"] / synthetic["images"]
    estimate = IMAGENET_IMAGES * per_image / synthetic["bytes_per_s"]
    result["imagenet_estimate"] = {"images": IMAGENET_IMAGES, "bytes_per_image": per_image,
                                   "seconds": estimate}
    print(f"ImageNet-1k at {per_image / 1024:.0f} KiB per image: "
          f"{IMAGENET_IMAGES * per_image / 2**30:.0f} GiB, about {estimate:.0f} s at the "
          f"synthetic set's rate (page cache; from disk the read itself bounds it)")
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()

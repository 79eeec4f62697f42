"""`pct write-dataset SRC_DIR OUT.beton`."""
import time
from dataclasses import asdict, dataclass

import click


@dataclass(frozen=True)
class WriteConfig:
    """What `pct write-dataset` does. workers: None means the cores this process may use
    (distributed.usable_cores). overwrite: replace an existing OUT (refused otherwise)."""

    src: str
    out: str
    max_resolution: int = 256
    image_format: str = "jpg"
    jpeg_quality: int = 90
    workers: int | None = None
    skip_bad: bool = False
    overwrite: bool = False


@click.command("write-dataset")
@click.argument("src", type=click.Path())
@click.argument("out", type=click.Path())
@click.option("--max-resolution", type=click.IntRange(8, 65535),
              default=WriteConfig.max_resolution, show_default=True,
              help="Images whose longer side exceeds this many pixels are resized down to it "
              "(aspect ratio kept); smaller ones are stored as they are.")
@click.option("--image-format", type=click.Choice(["jpg", "raw"]),
              default=WriteConfig.image_format, show_default=True,
              help="How images are stored: jpg (JPEG at --jpeg-quality), or raw (the pixels "
              "themselves, 3 bytes each: lossless, for small images).")
@click.option("--jpeg-quality", type=click.IntRange(1, 100), default=WriteConfig.jpeg_quality,
              show_default=True, help="JPEG quality of the stored images (1-100).")
@click.option("-j", "--workers", type=click.IntRange(min=1), default=WriteConfig.workers,
              help="Processes that read and encode images [default: the cores this process "
              "may use].")
@click.option("--skip-bad", is_flag=True, help="Leave out (and count) images that cannot be "
              "stored: unreadable or undecodable files, decompression bombs, images too thin "
              "for --max-resolution, pixel values of no known range; without it the first "
              "one stops the command.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT (and OUT.json); it is "
              "replaced only once the new file is complete.")
def write_dataset(**options):
    """Convert an ImageFolder tree SRC (one sub-folder per class) into an FFCV .beton OUT, with
    OUT.json beside it (class names, fingerprint)."""
    from .writer import write_beton

    cfg = WriteConfig(**options)
    start = time.perf_counter()
    info = write_beton(**asdict(cfg))
    click.echo(f"wrote {cfg.out}: {info['num_samples']} images, {info['num_classes']} classes, "
               f"{info['skipped']} skipped, {info['fingerprint']['size'] / 2**20:.1f} MiB, "
               f"{time.perf_counter() - start:.1f} s")

"""`pct precompute-teachers --data TRAIN.beton --teacher ARCH=CKPT … --views V --out C.zarr`."""
import click

from ..errors import PctError
from .config import DTYPES, PrecomputeConfig as C


def parse_teacher(ctx, param, values):
    """('ARCH=CKPT', ...) -> ((arch, ckpt), ...)."""
    teachers = []
    for value in values:
        arch, sep, path = value.partition("=")
        if not sep or not arch or not path:
            raise PctError(f"--teacher expects ARCH=CHECKPOINT, got {value!r}")
        teachers.append((arch.strip(), path.strip()))
    return tuple(teachers)


@click.command("precompute-teachers")
@click.option("--data", required=True, type=click.Path(), help="Training .beton (or the "
              "validation .beton with --eval-view).")
@click.option("--teacher", "teachers", multiple=True, required=True, callback=parse_teacher,
              metavar="ARCH=CKPT", help="Old model; repeat for an ensemble (mean of logits).")
@click.option("--views", type=int, default=C.views, help="Number of augmentation views "
              "(required unless --eval-view).")
@click.option("--view-seed", type=int, default=C.view_seed, show_default=True)
@click.option("--out", required=True, type=click.Path(), help="The store to write, NAME.zarr.")
@click.option("--resolution", type=click.IntRange(min=8), default=C.resolution, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=C.batch_size, show_default=True)
@click.option("-j", "--workers", type=click.IntRange(min=1), default=C.workers, show_default=True)
@click.option("--dtype", type=click.Choice(DTYPES), default=C.dtype, show_default=True)
@click.option("--store-features", is_flag=True, help="Also store penultimate features "
              "(the input of the final classifier), needed by --kd-loss-mode cna.")
@click.option("--keep-members", is_flag=True, help="Also store each ensemble member's logits.")
@click.option("--eval-view", is_flag=True, help="One centre-crop view: the model's validation "
              "predictions, written as a `predictions` store that `pct analyze` reads.")
@click.option("--crop-ratio", type=float, default=C.crop_ratio, show_default=True,
              help="Eval view: crop side / shorter image side.")
@click.option("--scale", type=(float, float), default=C.scale, show_default=True,
              help="RandomResizedCrop area range.")
@click.option("--ratio", type=(float, float), default=C.ratio, show_default=True,
              help="RandomResizedCrop aspect-ratio range.")
@click.option("--split", default=C.split, help="Split name recorded in the store "
              "[default: train, or val with --eval-view].")
@click.option("--overwrite", is_flag=True, help="Replace whatever is at --out.")
@click.option("--device", default=C.device, help="Default: this process's GPU if any, else cpu.")
@click.option("--chunks-per-shard", type=click.IntRange(min=1), default=C.chunks_per_shard,
              hidden=True)
@click.option("--rows-per-chunk", type=click.IntRange(min=1), default=C.rows_per_chunk, hidden=True)
def precompute_teachers(**options):
    """Run the old model(s) once over V deterministic views of a dataset and store their logits
    (Zarr, §Store). Resumable; runs as one process or under torchrun (each rank owns whole
    shards; the result does not depend on the number of processes)."""
    from .run import run

    summary = run(C(**options))
    if summary is not None:
        click.echo(f"wrote {summary['out']}: {summary['samples']} samples x {summary['views']} "
                   f"views, {summary['computed_images']} images computed in "
                   f"{summary['seconds']:.1f} s ({summary['images_per_s']:.0f} images/s), "
                   f"{summary['bytes'] / 2**20:.2f} MiB on disk "
                   f"({summary['bytes_per_sample_view']:.0f} bytes per sample and view)")

"""`pct evaluate --checkpoint CKPT --data VAL.beton --out PRED.zarr`."""
import click

from ..options import Finite, allow_unnamed_classes, check_input
from .config import EvaluateConfig


@click.command("evaluate")
@click.option("--checkpoint", required=True, type=click.Path(),
              help="Checkpoint to evaluate: one written by `pct train`, one that names its "
              "architecture (the original research code's), or a state dict with --arch.")
@click.option("--arch", default=EvaluateConfig.arch,
              help="Architecture of the checkpoint's model (`pct models` lists them) [default: "
              "the one the checkpoint names; needed for a bare state dict].")
@click.option("--data", required=True, type=click.Path(),
              help="Validation .beton (from `pct write-dataset`).")
@click.option("--out", required=True, type=click.Path(),
              help="Predictions store to write, NAME.zarr: a path or a URL (s3://…, gs://…); "
              "refused if it exists, unless --overwrite.")
@click.option("--resolution", type=click.IntRange(min=8), default=EvaluateConfig.resolution,
              help="Side of the centre crop fed to the model, in pixels [default: the "
              "checkpoint's validation resolution from `pct train`, else 224].")
@click.option("--crop-ratio", type=Finite(0, 1, min_open=True),
              default=EvaluateConfig.crop_ratio,
              help="Crop side / shorter image side of the centre crop [default: the "
              "checkpoint's from `pct train`, else 0.875 = 224/256].")
@click.option("--batch-size", "-b", type=click.IntRange(min=1),
              default=EvaluateConfig.batch_size, show_default=True,
              help="Images per batch, per process.")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=EvaluateConfig.workers,
              help="Loader threads per process [default: the cores this process may use, "
              "divided among the processes of the node].")
@click.option("--device", default=EvaluateConfig.device,
              help="Where the model runs: cpu, cuda (this process's GPU) or cuda:N [default: "
              "this process's GPU if any, else cpu].")
@click.option("--overwrite", is_flag=True, help="Replace whatever is at --out.")
@click.option("--trust-checkpoint", is_flag=True, help="Unpickle --checkpoint fully instead of "
              "reading it as data: this runs whatever code the file holds. Only for a file from "
              "a source you trust.")
@allow_unnamed_classes
@click.option("--rows-per-chunk", type=click.IntRange(min=1), default=EvaluateConfig.rows_per_chunk,
              hidden=True)
def evaluate(**options):
    """Write the eval-view predictions of a checkpoint as a store for `pct analyze`. Runs as one
    process or under torchrun (each process writes its own rows)."""
    check_input("checkpoint", options["checkpoint"])  # before torch and ffcv are imported
    check_input("dataset", options["data"])
    from .run import run

    result = run(EvaluateConfig(**options))
    used = result["config"]
    click.echo(f"top1 {result['top1']:.4f} top5 {result['top5']:.4f} at {used['resolution']} px, "
               f"crop ratio {used['crop_ratio']:.4g} -> {used['out']}")

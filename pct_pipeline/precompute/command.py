"""`pct precompute-teachers --data TRAIN.beton --teacher ARCH=CKPT … --views V --out C.zarr`."""
import click

from ..errors import PctError
from ..options import Finite, allow_unnamed_classes, check_input, parse_arch_path
from ..views import ViewSpec, given_views, view_options
from .config import DTYPES, PrecomputeConfig as C


class CodecName(click.ParamType):
    """A --codec value checked by store.codecs.parse and kept as its canonical name
    ("sample:32@4.0" -> "sample:32@4"): the command (and --print-config) sees a name, the
    config its codec."""

    name = "codec"

    def convert(self, value, param, ctx):
        from ..store.codecs import parse

        try:
            return parse(value).name
        except PctError as exc:
            self.fail(str(exc), param, ctx)


@click.command("precompute-teachers")
@click.option("--data", required=True, type=click.Path(), help="Training .beton (or the "
              "validation .beton with --eval-view), from `pct write-dataset`.")
@click.option("--teacher", "teachers", multiple=True, required=True, metavar="ARCH=CKPT",
              help="Old model: its architecture (`pct models` lists them) "
              "and checkpoint; split at the first '='. Repeat for an ensemble (mean of logits).")
@click.option("--trust-checkpoint", is_flag=True, help="Unpickle the --teacher files fully "
              "instead of reading them as data: this runs whatever code a file holds. Only for "
              "files from a source you trust.")
@allow_unnamed_classes
@click.option("--views", type=click.IntRange(min=1), default=None, help="Number of augmentation "
              "views V: epoch e of `pct train` uses view e mod V (required unless --eval-view).")
@click.option("--out", required=True, type=click.Path(), help="The store to write, NAME.zarr: "
              "a path or a URL (s3://bucket/prefix/NAME.zarr, gs://…; credentials and endpoint "
              "from the environment, e.g. AWS_*); an unfinished store of the same command is "
              "resumed.")
@view_options(ViewSpec())
@click.option("--batch-size", type=click.IntRange(min=1), default=C.batch_size,
              show_default=True, help="Images per batch, per process.")
@click.option("-j", "--workers", type=click.IntRange(min=1), default=C.workers,
              help="Loader threads per process [default: the cores this process may use, "
              "divided among the processes of the node].")
@click.option("--dtype", type=click.Choice(DTYPES), default=C.dtype,
              help="Logits dtype in the store [default: float16, float32 with --eval-view].")
@click.option("--codec", type=CodecName(), default="float16", show_default=True, metavar="NAME",
              help="How the (mean) logits are stored: float16 (plain logits, 2C bytes per "
              "sample and view), int8 (C + 8 B), topk:K (the K most probable classes, 4K + 4 B) "
              "or sample:K@T (K classes drawn from the softened teacher, 2K + 4 B: kl at T "
              "only). Compact codecs also record their measured fidelity (docs/codecs.md).")
@click.option("--store-features", is_flag=True, help="Also store penultimate features "
              "(the input of the final classifier), needed by --kd-loss-mode cna.")
@click.option("--keep-members", is_flag=True, help="Also store each ensemble member's logits "
              "(plain logits in --dtype, whatever --codec).")
@click.option("--eval-view", is_flag=True, help="One centre-crop view: the model's validation "
              "predictions, written as a `predictions` store that `pct analyze` reads.")
@click.option("--crop-ratio", type=Finite(0, 1, min_open=True), default=ViewSpec.crop_ratio,
              show_default=True, help="Eval view: crop side / shorter image side.")
@click.option("--split", default=C.split, help="Split name recorded in the store "
              "[default: train, or val with --eval-view].")
@click.option("--overwrite", is_flag=True, help="Replace whatever is at --out (instead of "
              "resuming a store of the same command, or refusing anything else).")
@click.option("--device", default=C.device, help="Where the teachers run: cpu, cuda (this "
              "process's GPU) or cuda:N [default: this process's GPU if any, else cpu].")
@click.option("--chunks-per-shard", type=click.IntRange(min=1), default=C.chunks_per_shard,
              hidden=True)
@click.option("--rows-per-chunk", type=click.IntRange(min=1), default=C.rows_per_chunk, hidden=True)
def precompute_teachers(**options):
    """Run the old model(s) once over V deterministic views of a dataset and store their logits
    (Zarr, §Store). Resumable; runs as one process or under torchrun (each rank owns whole
    shards; the result does not depend on the number of processes)."""
    options["teachers"] = tuple(parse_arch_path(v, "--teacher") for v in options["teachers"])
    preflight(options)
    from ..store.codecs import parse
    from .report import top1_line
    from .run import run

    options["codec"] = parse(options["codec"])
    eval_view, crop_ratio = options.pop("eval_view"), options.pop("crop_ratio")
    spec = ViewSpec(eval_view=eval_view, crop_ratio=crop_ratio, **given_views(options))
    views = options.pop("views")
    if views is None and not eval_view:
        raise PctError("missing --views: how many augmentation views to precompute")
    summary = run(C(spec=spec, views=views or 1, **options))
    if summary is not None:
        written, units = summary["done_before"]
        if written == units:
            click.echo(f"{summary['out']} was already complete ({summary['samples']} samples x "
                       f"{summary['views']} views): nothing to compute")
        else:
            click.echo(f"wrote {summary['out']}: {summary['samples']} samples x "
                       f"{summary['views']} views, {summary['computed_images']} images computed "
                       f"in {summary['seconds']:.1f} s ({summary['images_per_s']:.0f} images/s), "
                       f"{summary['bytes'] / 2**20:.2f} MiB on disk "
                       f"({summary['bytes_per_sample_view']:.0f} bytes per sample and view)")
        line = summary["teacher_top1"] and top1_line(summary["teacher_top1"], eval_view)
        if line:
            click.echo(line)
        recorded = summary.get("fidelity")
        if recorded:
            from ..codec_fidelity import table

            click.echo(f"codec {recorded['codec']} against the exact logits of {recorded['rows']} "
                       f"reference rows (student: {recorded['student']}), stored as attribute "
                       f"'fidelity':")
            click.echo("\n".join(table(recorded["settings"])))


def preflight(options):
    """The refusals that need neither torch nor ffcv, before they are imported: a missing
    --data or teacher checkpoint, a store another process is writing (its lock, only
    probed: a refused command writes nothing)."""
    from ..store import Location

    check_input("dataset", options["data"])
    for _, path in options["teachers"]:
        check_input("checkpoint", path)
    location = Location(options["out"])
    if location.local and location.lock_held():
        location.lock().release()  # raises the refusal naming the holder (if still held)

"""`pct train` and `pct evaluate`. Option names follow the original research code's README
with dashes; its underscore spellings (e.g. --kd_alpha) are accepted as aliases."""
from dataclasses import fields

import click

from ..errors import PctError
from .config import TrainConfig
from .losses import FILTERS, MODES, LossConfig

T, L = TrainConfig, LossConfig


def opt(name, *more, **kw):
    """A click option that also accepts the underscore spelling (--kd-alpha and --kd_alpha)."""
    alias = "--" + name[2:].replace("-", "_")
    names = [name, *more] + ([alias] if alias != name else [])
    return click.option(*names, show_default=kw.get("default") is not None, **kw)


def parse_teacher(value):
    arch, sep, path = value.partition("=")
    if not sep or not arch or not path:
        raise PctError(f"--online-teacher expects ARCH=CHECKPOINT, got {value!r}")
    return arch, path


def parse_kwargs(values):
    out = []
    for value in values:
        key, sep, raw = value.partition("=")
        if not sep or not key:
            raise PctError(f"--model-kwargs expects KEY=VALUE, got {value!r}")
        for cast in (int, float):
            try:
                raw = cast(raw)
                break
            except ValueError:
                continue
        else:
            raw = {"true": True, "false": False}.get(raw.lower(), raw)
        out.append((key, raw))
    return tuple(out)


@click.command("train")
@opt("--data", required=True, type=click.Path(), help="Training .beton (from pct write-dataset).")
@opt("--val", required=True, type=click.Path(), help="Validation .beton.")
@opt("--out", "-w", "--work-dir", required=True, type=click.Path(),
     help="Run folder: checkpoints, metrics.jsonl, predictions.zarr.")
@opt("--arch", "-a", default=T.arch, help="Architecture name; `pct models` lists them.")
@opt("--num-classes", type=click.IntRange(min=2), default=None, help="Default: the data's class count.")
@opt("--model-kwargs", multiple=True, metavar="KEY=VAL", help="Extra constructor arguments.")
@opt("--pretrained", is_flag=True, help="Start from torchvision's published weights (read from "
     "the torch hub cache, never downloaded); another class count gets a new classifier.")
@opt("--teacher-cache", type=click.Path(), default=None, help="Teacher cache from precompute-teachers.")
@opt("--online-teacher", multiple=True, metavar="ARCH=CKPT",
     help="Run teacher(s) in the step instead of a cache (parity checks, benchmarks).")
@opt("--kd-loss-mode", type=click.Choice(MODES), default=None, help="Distillation loss (none: CE only).")
@opt("--kd-alpha", type=click.FloatRange(0, 1), default=L.kd_alpha)
@opt("--kd-loss-weight", type=click.FloatRange(min=0), default=L.kd_loss_weight)
@opt("--kd-temperature", type=click.FloatRange(min=0, min_open=True), default=L.kd_temperature)
@opt("--kd-filter", type=click.Choice(FILTERS), default=L.kd_filter)
@opt("--filter-base", type=float, default=L.filter_base, help="Focal weight alpha.")
@opt("--filter-scale", type=float, default=L.filter_scale, help="Focal weight beta.")
@opt("--cna-temperature", type=click.FloatRange(min=0, min_open=True), default=L.cna_temperature)
@opt("--li-p", type=click.FloatRange(min=0, min_open=True), default=L.li_p)
@opt("--li-margin", type=click.FloatRange(min=0), default=L.li_margin)
@opt("--li-compute-topk", type=click.IntRange(min=1), default=L.li_compute_topk)
@click.option("--li-exclude-gt/--no-li-exclude-gt", "--li_exclude_gt/--no_li_exclude_gt",
              default=L.li_exclude_gt, show_default=True)
@opt("--bct-loss-weight", type=click.FloatRange(min=0), default=L.bct_loss_weight)
@opt("--bct-old-model", default=None, metavar="[ARCH=]CKPT", help="Old checkpoint for BCT.")
@opt("--epochs", type=click.IntRange(min=1), default=T.epochs)
@opt("--batch-size", "-b", type=click.IntRange(min=1), default=T.batch_size, help="Per process.")
@opt("--lr", "--learning-rate", type=click.FloatRange(min=0, min_open=True), default=T.lr)
@opt("--lr-schedule", type=click.Choice(["step", "cosine"]), default=T.lr_schedule)
@opt("--lr-step", type=click.IntRange(min=1), default=T.lr_step)
@opt("--momentum", type=click.FloatRange(0, 1), default=T.momentum)
@opt("--wd", "--weight-decay", type=click.FloatRange(min=0), default=T.wd)
@opt("--auto-scale", is_flag=True, help="lr = lr * global batch / 256.")
@opt("--resolution", type=click.IntRange(min=8), default=None, help="Default: the cache's, else 224.")
@opt("--val-resolution", type=click.IntRange(min=8), default=None)
@opt("--crop-ratio", type=click.FloatRange(0, 1, min_open=True), default=T.crop_ratio)
@opt("--view-seed", type=int, default=T.view_seed, help="Views without a cache (a cache has its own).")
@opt("--workers", "-j", type=click.IntRange(min=1), default=T.workers)
@opt("--seed", type=int, default=T.seed)
@opt("--save-init-checkpoint", is_flag=True)
@opt("--epochs-per-save", type=click.IntRange(min=0), default=T.epochs_per_save)
@opt("--resume", type=click.Path(), default=None, help="Continue from a checkpoint.pt.")
@opt("--evaluate", "-e", is_flag=True, help="Only evaluate (--resume CKPT) and write predictions.")
@click.option("--amp/--no-amp", default=T.amp, show_default=True, help="bf16 autocast on CUDA.")
@opt("--print-freq", "-p", type=click.IntRange(min=0), default=T.print_freq)
@opt("--device", default=None, help="Default: cuda:LOCAL_RANK if available, else cpu.")
@opt("--max-steps-per-epoch", type=click.IntRange(min=1), default=None, hidden=True)
def train(**o):
    """Train a new model, optionally distilling from a teacher cache (PCT)."""
    from .run import run

    loss_names = {f.name for f in fields(LossConfig)} - {"mode"}
    loss = LossConfig(mode=o.pop("kd_loss_mode"), **{k: o.pop(k) for k in loss_names})
    bct = o.pop("bct_old_model")
    bct_arch, _, bct_path = bct.rpartition("=") if bct else (None, None, None)
    cfg = TrainConfig(loss=loss, online_teachers=tuple(map(parse_teacher, o.pop("online_teacher"))),
                      model_kwargs=parse_kwargs(o.pop("model_kwargs")), bct_old_model=bct_path or None,
                      bct_old_arch=bct_arch or None, **o)
    run(cfg)


@click.command("evaluate")
@click.option("--checkpoint", required=True, type=click.Path(), help="A checkpoint written by pct train.")
@click.option("--data", required=True, type=click.Path(), help="Validation .beton.")
@click.option("--out", required=True, type=click.Path(), help="Predictions store to write (NAME.zarr).")
@click.option("--resolution", type=click.IntRange(min=8), default=224, show_default=True)
@click.option("--crop-ratio", type=click.FloatRange(0, 1, min_open=True), default=224 / 256, show_default=True)
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--workers", "-j", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--device", default=None)
@click.option("--overwrite", is_flag=True, help="Replace whatever is at --out.")
def evaluate(**o):
    """Write the eval-view predictions of a checkpoint as a store for `pct analyze`."""
    from .run import evaluate_checkpoint

    result = evaluate_checkpoint(**o)
    click.echo(f"top1 {result['top1']:.4f} top5 {result['top5']:.4f} -> {o['out']}")

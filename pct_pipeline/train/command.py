"""`pct train`. Option names follow the original research code's README with dashes; its
underscore spellings (e.g. --kd_alpha) are read as the same options (the `pct` group's
options.option_name)."""
from dataclasses import fields
from pathlib import Path

import click

from ..losses import FILTERS, MODES, LossConfig
from ..options import (Choice, Finite, allow_unnamed_classes, check_input, parse_arch_path,
                       parse_kwargs)
from ..views import given_views, view_options
from .config import TrainConfig

T, L = TrainConfig, LossConfig


def opt(name, *more, **kw):
    """A click option with its default shown. The underscore spelling (--kd_alpha) needs no
    alias: the group reads it as --kd-alpha. A click.Choice becomes an options.Choice, whose
    values keep their exact spelling (all_pass) under that reading."""
    kind = kw.get("type")
    if type(kind) is click.Choice:
        kw["type"] = Choice(kind.choices, kind.case_sensitive)
    return click.option(name, *more, show_default=kw.get("default") is not None, **kw)


@click.command("train")
# data, model, teachers
@opt("--data", required=True, type=click.Path(), help="Training .beton (from pct write-dataset).")
@opt("--val", required=True, type=click.Path(), help="Validation .beton (eval view: centre crop).")
@opt("--out", "-w", "--work-dir", required=True, type=click.Path(),
     help="Run folder: checkpoint.pt, metrics.jsonl, config.json, predictions.zarr. A folder "
     "holding a run is resumed (see --resume), never silently replaced.")
@opt("--arch", "-a", default=T.arch, help="Architecture name; `pct models` lists them.")
@opt("--num-classes", type=click.IntRange(min=2), default=None,
     help="Outputs of the classifier [default: the training data's class count].")
@opt("--model-kwargs", multiple=True, metavar="KEY=VAL",
     help="Extra constructor argument of the architecture (repeatable), e.g. width=16.")
@opt("--pretrained", is_flag=True, help="Start from torchvision's published weights (read from "
     "the torch hub cache, never downloaded); another class count gets a new classifier.")
@opt("--teacher-cache", type=click.Path(), default=None,
     help="Teacher cache from precompute-teachers (a path or a URL: s3://…, gs://…): "
     "distillation targets joined by sample index; epoch e uses its view e mod V, and its views' definition (resolution, view seed, "
     "scale, ratio, flip).")
@opt("--online-teacher", multiple=True, metavar="ARCH=CKPT",
     help="Run this teacher in the step instead of a cache (repeatable: an ensemble, mean of "
     "logits); for parity checks and benchmarks.")
@opt("--trust-checkpoint", is_flag=True, help="Unpickle the --resume, --online-teacher and "
     "--bct-old-model files fully instead of reading them as data: this runs whatever code a "
     "file holds. Only for files from a source you trust.")
@allow_unnamed_classes
# loss
@opt("--kd-loss-mode", type=click.Choice(MODES), default=None,
     help="Distillation distance d_i: kl (KL at --kd-temperature), l2 (mean squared logit "
     "difference), li (logit difference inhibition, LDI/ELODI), cna (contrastive neighbourhood "
     "alignment on penultimate features) [default: none, plain CE].")
@opt("--kd-alpha", type=Finite(0, 1), default=L.kd_alpha,
     help="a in total = (1 - a)(CE + b BCT) + a lambda FD: the distillation share.")
@opt("--kd-loss-weight", type=Finite(min=0), default=L.kd_loss_weight,
     help="lambda: multiplies the distillation term.")
@opt("--kd-temperature", type=Finite(min=0, min_open=True), default=L.kd_temperature,
     help="T of the kl distance (softmax of logits / T, scaled by T^2).")
@opt("--kd-filter", type=click.Choice(FILTERS), default=L.kd_filter,
     help="Which samples get the extra focal weight beta: all_pass (every sample weight 1), "
     "old_correct (the teacher is right), neg_flip (the teacher is right and the student is "
     "wrong: a negative flip in the making), new_incorrect (the student is wrong).")
@opt("--filter-base", type=Finite(min=0), default=L.filter_base,
     help="Focal weight alpha: w_i = alpha + beta [filter holds for sample i].")
@opt("--filter-scale", type=Finite(min=0), default=L.filter_scale,
     help="Focal weight beta (see --filter-base).")
@opt("--cna-temperature", type=Finite(min=0, min_open=True), default=L.cna_temperature,
     help="tau of cna: cosine similarities are divided by it.")
@opt("--li-p", type=Finite(min=1), default=L.li_p,
     help="Exponent p of li: mean over classes of max(|new - old| - margin, 0)^p.")
@opt("--li-margin", type=Finite(min=0), default=L.li_margin,
     help="Margin of li, in logit units: differences within it cost nothing.")
@opt("--li-compute-topk", type=click.IntRange(min=1), default=L.li_compute_topk,
     help="li over the k classes of highest student logit per sample [default: all classes].")
@click.option("--li-exclude-gt/--no-li-exclude-gt", default=L.li_exclude_gt, show_default=True,
              help="Leave the label's class out of li.")
@opt("--label-smoothing", type=Finite(0, 1, max_open=True), default=L.label_smoothing,
     help="Label smoothing of the CE term (as torchvision's --label-smoothing).")
@opt("--bct-loss-weight", type=Finite(min=0), default=L.bct_loss_weight,
     help="b: weight of BCT, the CE of the old classifier on the new model's features "
     "(needs --bct-old-model).")
@opt("--bct-old-model", default=None, metavar="[ARCH=]CKPT",
     help="Old checkpoint whose classifier BCT applies (ARCH default: the teacher's, else --arch).")
# optimisation
@opt("--epochs", type=click.IntRange(min=1), default=T.epochs, help="Epochs to train in all.")
@opt("--batch-size", "-b", type=click.IntRange(min=1), default=T.batch_size,
     help="Images per loader batch, per process.")
@opt("--accum-steps", type=click.IntRange(min=1), default=T.accum_steps,
     help="Loader batches per optimizer step (gradient accumulation: the global batch of more "
     "GPUs on fewer).")
@opt("--lr", "--learning-rate", type=Finite(min=0, min_open=True), default=T.lr,
     help="Base learning rate (see --auto-scale).")
@opt("--auto-scale", is_flag=True,
     help="lr = lr x global batch / 256, global batch = batch size x accum steps x processes.")
@opt("--lr-schedule", type=click.Choice(["step", "cosine"]), default=T.lr_schedule,
     help="After warm-up, per epoch: step (x0.1 every --lr-step epochs) or cosine to 0.")
@opt("--lr-step", type=click.IntRange(min=1), default=T.lr_step,
     help="Epochs between the x0.1 decays of the step schedule.")
@opt("--warmup-epochs", type=Finite(min=0), default=T.warmup_epochs,
     help="Linear learning-rate warm-up from ~0 to lr over this many epochs, per step.")
@opt("--momentum", type=Finite(0, 1), default=T.momentum, help="SGD momentum.")
@opt("--wd", "--weight-decay", type=Finite(min=0), default=T.wd,
     help="Weight decay (L2) of SGD.")
@opt("--norm-weight-decay", type=Finite(min=0), default=None,
     help="Weight decay of normalisation layers and of every bias, e.g. 0 [default: --wd].")
@opt("--ema-decay", type=Finite(0, 1, min_open=True, max_open=True), default=None,
     help="Keep an exponential moving average of the weights (ema = d ema + (1 - d) w after "
     "every optimizer step), evaluated each epoch and saved [default: none].")
@opt("--predictions-of", type=click.Choice(["model", "ema"]), default=T.predictions_of,
     help="Whose predictions RUN_DIR/predictions.zarr holds (ema needs --ema-decay).")
@opt("--sync-bn", is_flag=True, help="Synchronise BatchNorm statistics across processes (CUDA).")
@click.option("--amp/--no-amp", default=T.amp, show_default=True,
              help="Mixed precision: autocast in --amp-dtype (on CUDA; on the CPU only when "
              "--amp-dtype is given).")
@opt("--amp-dtype", type=click.Choice(["bf16", "fp16"]), default=None,
     help="Autocast dtype; fp16 scales the loss with a GradScaler (GPUs without bf16) "
     "[default: bf16 on CUDA, none on the CPU].")
# views
@view_options()
@opt("--val-resolution", type=click.IntRange(min=8), default=None,
     help="Validation image side in px [default: --resolution].")
@opt("--crop-ratio", type=Finite(0, 1, min_open=True), default=T.crop_ratio,
     help="Validation centre crop: crop side / shorter image side.")
# running
@opt("--workers", "-j", type=click.IntRange(min=1), default=None,
     help="Loader threads per process (also torch's thread count on CPU) [default: the cores "
     "this process may use, divided among the processes of the node].")
@opt("--seed", type=click.IntRange(0, 2**63 - 1), default=T.seed,
     help="Seed of the initial weights and the data order (0 to 2**63 - 1).")
@opt("--resume", type=click.Path(), default=T.resume,
     help="auto: continue from RUN_DIR/checkpoint.pt when there is one; or a checkpoint to "
     "continue from. The schedule follows this command's options from the saved epoch.")
@opt("--overwrite", is_flag=True,
     help="Start afresh in a run folder that holds a run, replacing its files.")
@opt("--evaluate", "-e", is_flag=True,
     help="Only write the predictions of the checkpoint (--resume, else RUN_DIR's), at the "
     "resolution its run validated at unless --resolution / --val-resolution say otherwise.")
@opt("--save-init-checkpoint", is_flag=True, help="Also save the initial weights as RUN_DIR/init.pt.")
@opt("--epochs-per-save", type=click.IntRange(min=0), default=T.epochs_per_save,
     help="Also keep checkpoint_epoch_K.pt every K epochs (0: never).")
@opt("--print-freq", "-p", type=click.IntRange(min=0), default=T.print_freq,
     help="Print the loss every N steps (0: only the per-epoch lines).")
@click.option("--tensorboard/--no-tensorboard", default=T.tensorboard, show_default=True,
              help="Write TensorBoard event files into the run folder: losses, lr, train and "
              "validation top-1, img/s, step time, negative flips (docs/training.md).")
@opt("--old-predictions", type=click.Path(), default=T.old_predictions, metavar="OLD.zarr",
     help="The old model's predictions on the validation data (precompute-teachers "
     "--eval-view, or pct evaluate): count negative and positive flips against it at every "
     "validation (log line, metrics.jsonl, TensorBoard).")
@opt("--device", default=None,
     help="cpu, cuda (this process's GPU) or cuda:N [default: cuda if available, else cpu].")
@opt("--max-steps-per-epoch", type=click.IntRange(min=1), default=None, hidden=True)
def train(**o):
    """Train a new model, optionally distilling from a teacher cache (PCT)."""
    preflight(o)
    from .run import run

    view_given = tuple(given_views(o).items())
    loss_names = {f.name for f in fields(LossConfig)} - {"mode"}
    loss = LossConfig(mode=o.pop("kd_loss_mode"), **{k: o.pop(k) for k in loss_names})
    bct = o.pop("bct_old_model")
    bct_arch, bct_path = parse_arch_path(bct, "--bct-old-model", False) if bct else (None, None)
    teachers = tuple(parse_arch_path(v, "--online-teacher") for v in o.pop("online_teacher"))
    cfg = TrainConfig(loss=loss, online_teachers=teachers, bct_old_model=bct_path,
                      bct_old_arch=bct_arch, model_kwargs=parse_kwargs(o.pop("model_kwargs")),
                      view_options=view_given, **o)
    run(cfg)


def preflight(o):
    """The refusals that need neither torch nor ffcv, before they are imported: a missing
    --data or --val, a run folder another `pct train` is writing (its lock, as run.py takes
    it, only probed here)."""
    check_input("dataset", o["data"])
    check_input("dataset", o["val"])
    if not o["evaluate"] and Path(o["out"]).is_dir():
        refuse_if_locked(Path(o["out"]) / "checkpoint.pt")


def refuse_if_locked(where):
    """Refuse, as taking it would, the lock of `where` (a local store or run file) when a
    writer holds it now; probing writes nothing."""
    from ..store import Location

    location = Location(where)
    if location.local and location.lock_held():
        location.lock().release()  # raises the refusal naming the holder (if still held)

"""What `pct train` shows while it runs: each validation's counts (top-1, top-5 and, against
the old model's predictions, negative and positive flips), the epoch's log line and its
TensorBoard event file.

Negative flips come from counts every process already has: at the start each process reads
the old model's predictions of its own validation rows once (`OldPredictions`, a [rows] int64
array of top-1 classes), and each validation compares its own rows' top-1 with them; one
all_reduce sums top-1, top-5, sample, negative-flip and positive-flip counts. No logits are
gathered. Top-1 is the argmax with ties to the lowest class index, the rule of `pct analyze`,
so the numbers equal what `pct analyze OLD.zarr RUN/predictions.zarr` reports for the same
weights.
"""

import numpy as np
import torch

from .. import distributed, store
from ..errors import PctError, first_nonfinite_row, writing
from ..predictions import topk_correct

FLIPS = ("negative_flips", "positive_flips", "nfr", "pfr")


class OldPredictions:
    """The old model's top-1 class of this process's validation rows: `top1` int64 [rows]
    (on `device`), row `lo + k` at k, from a predictions store of the validation data."""

    def __init__(self, path, val_info, num_classes, rows, device):
        old = store.open_store(path, kind="predictions")
        if old.views != 1:
            raise PctError(f"--old-predictions {path} holds {old.views} views; a predictions "
                           f"store (precompute-teachers --eval-view, pct evaluate) holds one")
        if old.num_classes != num_classes:
            raise PctError(f"--old-predictions {path} has {old.num_classes} classes, the model "
                           f"{num_classes}")
        old.check_data(val_info.identity(), f"the validation data {val_info.path}")
        self.lo = int(rows[0]) if len(rows) else 0
        logits = old.read_rows("logits", 0, self.lo, self.lo + len(rows))
        bad = first_nonfinite_row(logits)
        if bad is not None:
            raise PctError(f"--old-predictions {path}: NaN/inf logits for sample {self.lo + bad}")
        self.top1 = torch.from_numpy(np.asarray(logits, np.float32).argmax(axis=1)).to(device)

    def of(self, indices):
        """int64 [B]: the old model's top-1 class of validation samples `indices` ([B])."""
        return self.top1[indices.to(self.top1.device) - self.lo]


def load_old_predictions(cfg, val_info, num_classes, rows, d):
    """OldPredictions of --old-predictions (None without it); a problem on any process stops
    every process with the same line."""
    if cfg.old_predictions is None:
        return None
    box = []
    distributed.agree(lambda: box.append(
        OldPredictions(cfg.old_predictions, val_info, num_classes, rows, d.device)))
    return box[0]


def validate(batches, d, old=None):
    """{'val_top1', 'val_top5'} over every process's rows, plus {'negative_flips',
    'positive_flips', 'nfr', 'pfr'} against `old` (OldPredictions) when given: counts summed by
    one all_reduce.

    batches: (logits float32 [B, C], labels int64 [B], indices int64 [B]) of this process's
    rows, as predictions.predict yields them."""
    counts = torch.zeros(5, dtype=torch.float64, device=d.device)  # top1 top5 seen nf pf
    for logits, labels, indices in batches:
        new_right = logits.argmax(dim=1) == labels  # ties: the lowest class, as analyze
        counts[0] += new_right.sum()
        counts[1] += topk_correct(logits, labels)[1].to(counts.device)
        counts[2] += len(labels)
        if old is not None:
            old_right = old.of(indices) == labels
            counts[3] += (old_right & ~new_right).sum()
            counts[4] += (~old_right & new_right).sum()
    top1, top5, seen, nf, pf = distributed.all_sum(counts.tolist(), d.device)
    seen = max(seen, 1)
    out = {"val_top1": top1 / seen, "val_top5": top5 / seen}
    if old is not None:
        out.update(negative_flips=int(nf), positive_flips=int(pf), nfr=nf / seen, pfr=pf / seen)
    return out


def epoch_line(stats, epochs, eta):
    """The log line of an epoch: losses, train and validation top-1 (and the EMA's), negative
    flips against the old model when counted, steady images/s, ETA (`eta`, a string)."""
    ema = f" ema_val_top1 {stats['ema_val_top1']:.4f}" if "ema_val_top1" in stats else ""
    flips = ""
    if "negative_flips" in stats:
        flips = (f" nf {stats['negative_flips']} nfr {stats['nfr']:.4f} "
                 f"pf {stats['positive_flips']} pfr {stats['pfr']:.4f}")
    return (f"epoch {stats['epoch']}/{epochs}: loss {stats['loss']:.4f} ce {stats['ce']:.4f} "
            f"fd {stats['fd']:.4f} train_top1 {stats['train_top1']:.4f} "
            f"val_top1 {stats['val_top1']:.4f} val_top5 {stats['val_top5']:.4f}{ema}{flips} "
            f"{stats['steady_images_per_s']:.0f} img/s, ETA {eta}")


# metrics key: TensorBoard tag (one point per epoch, at step = epoch)
TAGS = {"loss": "loss/total", "ce": "loss/ce", "fd": "loss/fd", "bct": "loss/bct",
        "focal_weight": "loss/focal_weight", "lr": "lr", "train_top1": "top1/train",
        "val_top1": "top1/val", "val_top5": "top5/val", "ema_val_top1": "top1/val_ema",
        "ema_val_top5": "top5/val_ema", "negative_flips": "flips/negative",
        "positive_flips": "flips/positive", "nfr": "flips/nfr", "pfr": "flips/pfr",
        "ema_negative_flips": "flips/negative_ema", "ema_nfr": "flips/nfr_ema",
        "steady_images_per_s": "speed/images_per_s", "steady_step_s": "speed/step_s",
        "images_per_s": "speed/images_per_s_whole_epoch"}


class Board:
    """Process 0's TensorBoard event file, in the run folder (`tensorboard --logdir RUNS`
    shows each run by its folder's name). The writer is opened at the first epoch's end, so a
    run that fails in its first epoch leaves no event file. `start_epoch`: the epoch a run
    resumes from; TensorBoard then drops the points of later epochs an interrupted run had
    written (SummaryWriter's purge_step)."""

    def __init__(self, out, start_epoch):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise PctError(f"TensorBoard event files need the tensorboard package ({exc}): "
                           f"pip install tensorboard, or pass --no-tensorboard") from None
        self.make = lambda: SummaryWriter(str(out), purge_step=start_epoch + 1)
        self.out, self.writer = out, None

    def log(self, stats):
        """Add the epoch's scalars (TAGS; the step-time account as time/PHASE_s) at
        step = stats['epoch'], and write them to disk."""
        with writing(self.out):
            if self.writer is None:
                self.writer = self.make()
            epoch = stats["epoch"]
            for key, tag in TAGS.items():
                if key in stats:
                    self.writer.add_scalar(tag, stats[key], epoch)
            for phase, seconds in stats.get("step_time_s", {}).items():
                self.writer.add_scalar(f"time/{phase}_s", seconds, epoch)
            self.writer.flush()

    def close(self):
        if self.writer is not None:
            with writing(self.out):
                self.writer.close()


def open_board(cfg, out, start_epoch, d):
    """A Board on process 0 when --tensorboard (the default), else None."""
    if not (cfg.tensorboard and d.is_main):
        return None
    return Board(out, start_epoch)

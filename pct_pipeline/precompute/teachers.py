"""The old model(s) of a precompute run: loaded and checked against the data, run on a batch
(`forward`: each member's logits and features, float32 on the CPU), their outputs checked for
NaN/inf, and their top-1 on the data counted (`Top1`: the labels are in the .beton, so a wrong
checkpoint or class order shows at once)."""
from dataclasses import dataclass

import numpy as np
import torch

from .. import models
from ..errors import PctError, first_nonfinite_row


@dataclass
class Teacher:
    """One ensemble member: its architecture, checkpoint path and model (eval mode)."""
    arch: str
    path: str
    model: torch.nn.Module

    @property
    def name(self):
        return f"{self.arch}={self.path}"


def load_teachers(cfg, info, device):
    """[Teacher] in eval mode on `device` (channels_last on GPU); their class counts and
    names checked against the data's (`info`, a dataset.BetonInfo)."""
    teachers = []
    for arch, path in cfg.teachers:
        model, _ = models.load_model(arch, path, info.num_classes, trust=cfg.trust_checkpoint)
        models.check_classes(path, info.classes, f"the data {info.path}",
                             cfg.allow_unnamed_classes, cfg.trust_checkpoint)
        if device.type == "cuda":
            model = model.to(device, memory_format=torch.channels_last)
        teachers.append(Teacher(arch, str(path), model.eval()))
    if cfg.store_features:
        models.shared_feature_dim([t.model for t in teachers], "ensemble members",
                                  "features cannot be averaged (drop --store-features)")
    return teachers


def forward(teachers, images, with_features, device, exact=False):
    """{'members': float32 [M, B, C], 'features': float32 [M, B, D] (if asked)}, on the CPU.

    channels_last on GPU; bf16 autocast on GPU for training targets, float32 everywhere when
    `exact` (the eval view's predictions: bf16 would tie near-equal classes). Means are
    taken in float32.
    """
    cuda = device.type == "cuda"
    images = images.to(device, non_blocking=True)
    if cuda:
        images = images.contiguous(memory_format=torch.channels_last)
    logits, features = [], []
    with torch.inference_mode(), models.autocast(device, torch.bfloat16 if cuda and not exact
                                                                   else None):
        for teacher in teachers:
            with models.FeatureTap(teacher.model) as tap:
                logits.append(models.main_logits(teacher.model(images)).float())
            if with_features:
                features.append(tap.features.float())
    outputs = {"members": torch.stack(logits).cpu()}
    if with_features:
        outputs["features"] = torch.stack(features).cpu()
    return outputs


def check_finite(job, outputs, indices, view):
    """PctError naming the sample, view and teacher of the first NaN/inf output."""
    for m, teacher in enumerate(job.teachers):
        rows = [first_nonfinite_row(outputs[name][m]) for name in ("members", "features")
                if name in outputs]
        rows = [row for row in rows if row is not None]
        if rows:
            row = min(rows)
            raise PctError(f"teacher {teacher.name} produced NaN/inf for sample {indices[row]} "
                           f"in view {view}")


class Top1:
    """Hits of the teacher targets as stored (the argmax of each row of the store's logits, or
    of a dense codec's decoded rows; ties to the lowest class), against the labels, per view:
    `hits` and `images`, float64 [V] each. Counted from the stored values, so that units
    written by an earlier, interrupted command count alike when read back (`count`), and a
    resumed store records what one written in one go records. A codec whose rows do not
    decode to logits (sample:K@T) gives no count."""

    def __init__(self, views):
        self.hits = np.zeros(views)
        self.images = np.zeros(views)

    def count(self, view, codec, values, labels, num_classes):
        """Add one unit of `view`: values {array name: [n, width]} as written (or read back),
        labels int64 [n]."""
        if not codec.dense:
            return
        if codec.name == "float16":  # plain logits, in the store's dtype
            top = np.asarray(values["logits"]).argmax(axis=1)
        else:
            names = codec.arrays(num_classes)
            top = codec.decode({name: values[name] for name in names}, num_classes).argmax(axis=1)
        self.hits[view] += int((top == labels).sum())
        self.images[view] += len(labels)

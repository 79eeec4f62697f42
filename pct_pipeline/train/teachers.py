"""Where distillation targets come from: the teacher cache, or teachers run in the step.

Both give, for a batch, (old_logits [B, C] float32, old_features [B, D] float32 or None), so the
training step does not care which one it has. `OnlineTeachers` exists to prove that the cache
changes nothing and to measure what it saves.
"""
from contextlib import nullcontext

import torch

from .. import codec_fidelity, distributed, models
from ..errors import PctError, first_nonfinite_row
from ..store import codecs, open_store
from .join import EpochTargets, check_finite_rows

MIN_COSINE = 0.99  # below it, train warns that a compact cache's targets are off


def open_cache(path, beton, num_classes, need_features):
    """Open a teacher cache and check it against the training data; returns the Store."""
    cache = open_store(path, kind="teacher-cache")
    cache.check_data(beton.identity(), beton.path)
    if cache.num_classes != num_classes:
        raise PctError(f"teacher cache {path} has {cache.num_classes} classes, the model "
                       f"has {num_classes}")
    if cache.attrs.get("eval_view"):
        raise PctError(f"teacher cache {path} holds the eval view only; training needs a cache "
                       f"made without --eval-view")
    if need_features and not cache.has_features:
        raise PctError(f"--kd-loss-mode cna needs teacher features, but {path} has none "
                       f"(make it with precompute-teachers --store-features)")
    return cache


def verify_cache(cache, d):
    """Read every unit of the cache once before training, split among the processes: data
    that does not match its write records, or NaN/inf logits, stop every process with the same
    line before any step (each epoch's read checks its view again)."""
    distributed.agree(lambda: cache.verify(d.rank, d.world,
                                           lambda *rows: check_finite_rows(cache, *rows)))


def check_codec(cache, loss):
    """Refuse, before training, loss settings that the cache's codec cannot serve.

    int8 serves every mode from its decoded logits; topk serves kl (any T) and the focal
    filters (its kept classes include the argmax) but not l2 / li, which need every class's
    logit; sample serves kl at its own temperature only, and no filter that needs the
    teacher's argmax. cna reads features, which every codec stores in float16.
    """
    codec = codecs.from_attrs(cache.attrs)
    if loss.mode is None or (codec.dense and not isinstance(codec, codecs.TopK)):
        return
    where = f"teacher cache {cache.path} stores {codec.name}"
    if isinstance(codec, codecs.TopK) and loss.mode in ("l2", "li"):
        raise PctError(f"{where} (the top {codec.k} classes and a uniform rest): --kd-loss-mode "
                       f"{loss.mode} needs every class's logit; use kl, or an int8 or float16 cache")
    if codec.dense:
        return
    if loss.mode != "cna":
        codec.require(loss.mode, loss.kd_temperature)
    if loss.kd_filter in ("old_correct", "neg_flip"):
        raise PctError(f"{where} (sampled classes): --kd-filter {loss.kd_filter} needs the "
                       f"teacher's argmax; use all_pass or new_incorrect, or a dense cache")


def fidelity_warning(cache, loss):
    """A one-line warning when the cache's codec serves `loss` with a median per-sample
    gradient cosine below MIN_COSINE, or None. The figure is the cache's recorded `fidelity`
    for the setting, else measured now on its reference rows (the same stand-in student)."""
    codec = codecs.from_attrs(cache.attrs)
    if loss.mode not in ("kl", "l2", "li") or codec.name == "float16":
        return None
    recorded = cache.attrs.get("fidelity") or {}
    key = codec_fidelity.setting_key(loss.mode, loss.kd_temperature)
    entry = (recorded.get("settings") or {}).get(key)
    if loss.mode == "li" and recorded.get("li") != {"p": loss.li_p, "margin": loss.li_margin}:
        entry = None
    if entry is None:
        if "reference_logits" not in cache.group:
            return None
        rows, exact, stored = cache.reference()
        setting = codec_fidelity.Setting(loss.mode, loss.kd_temperature, loss.li_p,
                                         loss.li_margin)
        entry = codec_fidelity.against_stand_in(codec, stored, exact, cache.labels[rows], setting)
    cosine = entry["gradient"]["cosine"]["median"]
    if cosine is None or cosine >= MIN_COSINE:
        return None
    at = f" at T={loss.kd_temperature:g}" if loss.mode == "kl" else ""
    return (f"teacher cache {cache.path} ({codec.name}) gives {loss.mode}{at} gradients with a "
            f"median cosine of {cosine:.3f} to the exact ones over {entry['rows']} reference "
            f"rows (< {MIN_COSINE}); `pct cache-fidelity {cache.path}` has the details")


class CachedTeachers:
    """Targets from the cache: view = epoch mod V, prefetched one epoch ahead."""

    def __init__(self, cache, loader, with_features, node):
        self.cache, self.loader, self.with_features = cache, loader, with_features
        self.node = node  # the distributed.Dist: node-local sharing of the view
        self.pending = {}

    def view_of(self, epoch):
        return epoch % self.cache.views

    def _start(self, epoch):
        if epoch not in self.pending:
            self.pending[epoch] = EpochTargets(self.cache, self.view_of(epoch),
                                               self.loader.order(epoch),
                                               self.loader.loader.batch_size, self.node, epoch,
                                               self.with_features,
                                               pin_memory=self.loader.device.type == "cuda")

    def begin_epoch(self, epoch, last_epoch):
        self._start(epoch)
        current = self.pending.pop(epoch).wait()
        if epoch + 1 < last_epoch:
            self._start(epoch + 1)  # read the next view while this epoch trains
        self.current = current

    def targets(self, step, images, indices):
        return self.current.batch(step, indices, images.device)


class OnlineTeachers:
    """Targets computed by running the teacher(s) on the batch: the mean of their outputs."""

    def __init__(self, specs, num_classes, device, channels_last, with_features, amp=True,
                 trust=False):
        # bf16 on GPU, as precompute-teachers runs them, so online and cached targets agree
        cuda = torch.device(device).type == "cuda"
        self.autocast = models.autocast(device, torch.bfloat16 if amp and cuda else None)
        self.members = []
        for arch, path in specs:
            model, _ = models.load_model(arch, path, num_classes, trust=trust)
            model = model.to(device)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            self.members.append(model)
        if with_features:
            models.shared_feature_dim(self.members, "online teachers",
                                      "their features cannot be averaged for cna")
        self.with_features = with_features
        self.view_of = lambda epoch: epoch

    def begin_epoch(self, epoch, last_epoch):
        pass

    @torch.inference_mode()
    def targets(self, step, images, indices):
        logits, features = [], []
        for model in self.members:
            tap = models.FeatureTap(model) if self.with_features else nullcontext()
            with self.autocast, tap:
                logits.append(models.main_logits(model(images)).float())
            if self.with_features:
                features.append(tap.features.float())
        mean_logits = torch.stack(logits).mean(0)
        check_finite(mean_logits, indices, "the online teacher")
        mean_features = torch.stack(features).mean(0) if self.with_features else None
        return mean_logits.clone(), (None if mean_features is None else mean_features.clone())


def bct_head(path, arch, feature_dim, num_classes, device, trust=False):
    """(weight [C, D], bias [C]) of the old model's classifier, frozen, for the BCT loss: it
    must take the new model's feature width and score every one of the data's `num_classes`
    labels. `trust`: see models.load_file."""
    weight, bias = models.classifier_weights(arch, models.read_state_dict(path, trust))
    if weight.shape[1] != feature_dim:
        raise PctError(f"BCT needs equal feature widths: the old classifier takes "
                       f"{weight.shape[1]}, the new model's features have {feature_dim}")
    if weight.shape[0] < num_classes:
        raise PctError(f"BCT: the old classifier of {path} has {weight.shape[0]} classes, the "
                       f"data has {num_classes}")
    return weight.to(device), bias.to(device)


def check_finite(logits, indices, source):
    row = first_nonfinite_row(logits)
    if row is not None:
        raise PctError(f"{source} produced NaN/inf logits for sample {int(indices[row])}")

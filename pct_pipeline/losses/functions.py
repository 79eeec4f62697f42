"""Positive-congruent training losses (SPEC §Train, "Loss"), usable in any training loop.

Every per-sample function returns float32 [N] whatever the input dtype (fp16 cached teacher
logits, bf16 activations): inputs are cast to float32 and autocast is switched off where a
matmul happens, so the focal weights w_i apply to each sample's own distance d_i:

    total = (1 - a) * (CE + b * BCT) + a * lambda * FD,    FD = (1/N) * sum_i w_i * d_i

with a = kd_alpha (0 without a distillation mode), lambda = kd_loss_weight,
b = bct_loss_weight. The research code this replaces multiplied mean(w) by mean(d), which
removes the per-sample focus; here the product is taken per sample.

Teacher ("old") inputs never receive gradients: every function detaches them. A teacher cache
stored with the sampled codec gives `SampledTargets` in place of teacher logits: they serve
the kl distance at the codec's temperature only (train refuses other settings at start).
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import models
from ..errors import PctError
from .config import FILTERS, choice


@dataclass(frozen=True)
class SampledTargets:
    """Teacher targets of a `sample:K@T` cache for a batch: codec (codecs.Sample) and its
    encoded rows {'indices': int16 [B, K], 'neg_entropy': float32 [B, 1]} (torch tensors).
    Not logits: they give the kl distance at the codec's temperature, nothing else."""

    codec: object
    encoded: dict

    def kl(self, new_logits, temperature):
        """Unbiased estimate of kl_distill(new_logits, teacher, T): float32 [N]."""
        return self.codec.kl_loss(new_logits, self.encoded, temperature)


def _logit_pair(new_logits, old_logits):
    """Float32 (student [N, C] with gradient, detached teacher [N, C]); shapes must agree."""
    if new_logits.dim() != 2 or new_logits.shape != old_logits.shape:
        raise PctError(f"teacher logits of shape {tuple(old_logits.shape)} do not match "
                       f"student logits of shape {tuple(new_logits.shape)}")
    return new_logits.float(), old_logits.detach().float()


def kl_distill(new_logits, old_logits, temperature):
    """d_i = T^2 * sum_c p_old,c * (log p_old,c - log p_new,c), p = softmax(logits / T).

    new_logits, old_logits: [N, C] any float dtype; returns float32 [N] (0 for equal rows).
    The T^2 factor keeps gradient magnitudes comparable across temperatures (Hinton et al.).
    """
    if not temperature > 0:
        raise PctError(f"kd temperature must be positive, got {temperature}")
    new, old = _logit_pair(new_logits, old_logits)
    log_p_new = F.log_softmax(new / temperature, dim=1)
    log_p_old = F.log_softmax(old / temperature, dim=1)
    return temperature ** 2 * (log_p_old.exp() * (log_p_old - log_p_new)).sum(dim=1)


def l2_distill(new_logits, old_logits):
    """d_i = (1/C) * sum_c (new_ic - old_ic)^2. [N, C] -> float32 [N]."""
    new, old = _logit_pair(new_logits, old_logits)
    return (new - old).pow(2).mean(dim=1)


def ldi_classes(new_logits, labels, exclude_gt=True, topk=None):
    """Bool [N, C]: the classes logit difference inhibition averages over, per sample.

    topk=None: all C classes. topk=k: the k classes of highest *student* logit (ties broken
    by torch.topk). exclude_gt then removes the label's class, so a sample whose label is
    among its top k uses k - 1 classes, any other sample k (C - 1 without topk).
    """
    n, c = new_logits.shape
    if topk is None:
        used = torch.ones(n, c, dtype=torch.bool, device=new_logits.device)
    else:
        if not 1 <= topk <= c:
            raise PctError(f"li top-k must be between 1 and the {c} classes, got {topk}")
        used = torch.zeros(n, c, dtype=torch.bool, device=new_logits.device)
        used.scatter_(1, new_logits.detach().topk(topk, dim=1).indices, True)
    if exclude_gt:
        used[torch.arange(n, device=labels.device), labels] = False
    return used


def ldi(new_logits, old_logits, labels, p=2, margin=0.5, exclude_gt=True, topk=None):
    """Logit difference inhibition (LDI; ELODI with an ensemble teacher's mean logits).

    d_i = mean over the used classes c (see `ldi_classes`) of max(|new_ic - old_ic| - m, 0)^p.
    new_logits, old_logits: [N, C]; labels: int64 [N]; returns float32 [N].
    Differences within the margin cost exactly 0 (no 1e-7 floor). The mean is over the used
    classes only (the excluded label column is not counted, unlike the research code, which
    divided by C); a sample with no used class (topk=1 and its label on top) gets d_i = 0.
    Defaults: p = 2 and m = 0.5, the original README's values; p must be >= 1 because
    x^p with p < 1 has an infinite derivative at the margin.
    """
    if not p >= 1:
        raise PctError(f"li p must be at least 1, got {p}")
    if not margin >= 0:
        raise PctError(f"li margin must be non-negative, got {margin}")
    new, old = _logit_pair(new_logits, old_logits)
    used = ldi_classes(new, labels, exclude_gt, topk)
    excess = ((new - old).abs() - margin).clamp(min=0).pow(p)
    count = used.sum(dim=1).clamp(min=1)
    return (excess * used).sum(dim=1) / count


def cna(new_features, old_features, temperature=0.01, anchors=None):
    """Contrastive neighbourhood alignment over the batch it is given.

    new_features: [M, D] student penultimate features (gradient flows); old_features:
    [M, D'] teacher features (detached; widths may differ). Both are L2-normalised. The
    positive of anchor i is pos(i) = argmax_{j != i} of the teacher cosine similarity
    (first index on ties); with s_ij = cos(new_i, new_j) / tau,
        d_i = logsumexp_{j != i} s_ij - s_i,pos(i).
    anchors: None (every row) or a slice / index tensor of the rows to compute d for. Under
    DDP pass the all-gathered global batch (`distributed.all_gather_with_grad`) and this
    rank's own rows as anchors: negatives then come from every rank. Returns float32
    [len(anchors)]. Default tau = 0.01, the original README's value.
    """
    m = new_features.shape[0]
    if new_features.dim() != 2 or old_features.dim() != 2 or old_features.shape[0] != m:
        raise PctError(f"cna needs [M, D] student and teacher features with equal M, got "
                       f"{tuple(new_features.shape)} and {tuple(old_features.shape)}")
    if m < 2:
        raise PctError(f"cna needs at least 2 samples in the batch to find neighbours, got {m}")
    if not temperature > 0:
        raise PctError(f"cna temperature must be positive, got {temperature}")
    rows = torch.arange(m, device=new_features.device)
    rows = rows if anchors is None else rows[anchors]
    self_mask = rows[:, None] == torch.arange(m, device=rows.device)[None, :]
    # Similarities divided by tau ~ 0.01 amplify bf16 rounding 100-fold: keep fp32 matmuls.
    with models.autocast(new_features.device):
        old = F.normalize(old_features.detach().float(), dim=1)
        new = F.normalize(new_features.float(), dim=1)
        positive = (old[rows] @ old.T).masked_fill(self_mask, -torch.inf).argmax(dim=1)
        sims = (new[rows] @ new.T / temperature).masked_fill(self_mask, -torch.inf)
    return torch.logsumexp(sims, dim=1) - sims.gather(1, positive[:, None]).squeeze(1)


def focal_weights(new_logits, old_logits, labels, filter="all_pass", alpha=0.0, beta=1.0):
    """Per-sample weights w_i = alpha + beta * [cond_i], float32 [N], without gradient.

    cond: old_correct (teacher argmax = label), neg_flip (teacher right and current student
    argmax wrong), new_incorrect (student argmax != label). all_pass gives w_i = 1 for every
    sample whatever alpha and beta (SPEC). new_logits, old_logits: [N, C]; old_logits may be
    None for all_pass and new_incorrect. Defaults alpha = 0, beta = 1 are the research code's.
    """
    choice(filter, FILTERS, "kd filter")
    if filter == "all_pass":
        return torch.ones(labels.shape[0], dtype=torch.float32, device=labels.device)
    if filter != "old_correct":  # the student's argmax is needed
        new_wrong = new_logits.detach().argmax(dim=1) != labels
    if filter == "new_incorrect":
        cond = new_wrong
    else:
        if old_logits is None:
            raise PctError(f"kd filter {filter} needs teacher logits")
        if isinstance(old_logits, SampledTargets):
            raise PctError(f"kd filter {filter} needs the teacher's argmax, which sampled "
                           f"targets ({old_logits.codec.name}) do not give")
        old_correct = _logit_pair(new_logits, old_logits)[1].argmax(dim=1) == labels
        cond = old_correct if filter == "old_correct" else old_correct & new_wrong
    return alpha + beta * cond.float()


def bct(new_features, old_classifier_weight, old_classifier_bias, labels):
    """Backward-compatible training: CE of the frozen old classifier on the new features.

    new_features: [N, D]; old_classifier_weight: [C_old, D]; old_classifier_bias: [C_old]
    or None; labels: int64 [N]. Returns float32 [N]; the old classifier gets no gradient.
    """
    width, old_width = new_features.shape[1], old_classifier_weight.shape[1]
    if width != old_width:
        raise PctError(f"BCT: the new model's features have width {width} but the old "
                       f"classifier takes width {old_width}")
    bias = None if old_classifier_bias is None else old_classifier_bias.detach().float()
    with models.autocast(new_features.device):
        logits = F.linear(new_features.float(), old_classifier_weight.detach().float(), bias)
    return F.cross_entropy(logits, labels, reduction="none")


def _distances(cfg, new_logits, labels, old_logits, new_features, old_features, anchors):
    """d_i of cfg.mode, float32 [N]."""
    if cfg.mode == "cna":
        if new_features is None or old_features is None:
            raise PctError("kd loss mode cna needs student and teacher penultimate features")
        if old_logits is None and cfg.kd_filter != "all_pass":
            raise PctError(f"kd filter {cfg.kd_filter} needs teacher logits, which cna was not "
                           f"given; use all_pass")
        return cna(new_features, old_features, cfg.cna_temperature, anchors)
    if old_logits is None:
        raise PctError(f"kd loss mode {cfg.mode} needs teacher logits")
    if isinstance(old_logits, SampledTargets):
        if cfg.mode != "kl":
            raise PctError(f"kd loss mode {cfg.mode} needs teacher logits; sampled targets "
                           f"({old_logits.codec.name}) serve kl only")
        return old_logits.kl(new_logits, cfg.kd_temperature)
    if cfg.mode == "kl":
        return kl_distill(new_logits, old_logits, cfg.kd_temperature)
    if cfg.mode == "l2":
        return l2_distill(new_logits, old_logits)
    return ldi(new_logits, old_logits, labels, cfg.li_p, cfg.li_margin, cfg.li_exclude_gt,
               cfg.li_compute_topk)


def pct_loss(cfg, new_logits, labels, old_logits=None, new_features=None, old_features=None,
             bct_head=None, cna_anchors=None):
    """total = (1 - a) * (CE + b * BCT) + a * lambda * FD, FD = mean_i w_i * d_i (SPEC §Train).

    new_logits: [N, C] student logits; labels: int64 [N]; old_logits: [N, C] teacher logits
    (any float dtype), `SampledTargets` (kl only) or None; new_features / old_features: [N, D] / [N, D'] penultimate
    features, or the all-gathered [M, D] / [M, D'] under DDP with cna_anchors naming this
    rank's N rows (then BCT uses new_features[cna_anchors]); bct_head: (weight [C_old, D],
    bias [C_old] or None) of the frozen old classifier, needed when cfg.bct_loss_weight > 0.
    Returns (total: float32 scalar with gradient, parts: dict of detached float32 scalars
    loss, ce, bct, fd, focal_weight (mean w_i); fd and focal_weight are 0 without a mode).
    No host synchronisation happens here: call float() on the parts when logging.
    """
    ce = F.cross_entropy(new_logits.float(), labels, label_smoothing=cfg.label_smoothing)
    zero = ce.new_zeros(())
    bct_term, fd, mean_weight, a = zero, zero, zero, 0.0
    if cfg.bct_loss_weight > 0:
        if bct_head is None or new_features is None:
            raise PctError(f"bct loss weight {cfg.bct_loss_weight} needs the old classifier "
                           f"and the new model's features")
        local = new_features if cna_anchors is None else new_features[cna_anchors]
        bct_term = bct(local, *bct_head, labels).mean()
    if cfg.mode is not None:
        d = _distances(cfg, new_logits, labels, old_logits, new_features, old_features,
                       cna_anchors)
        if d.shape[0] != labels.shape[0]:
            raise ValueError(f"{d.shape[0]} distances for {labels.shape[0]} labels: pass "
                             f"cna_anchors with all-gathered features")
        w = focal_weights(new_logits, old_logits, labels, cfg.kd_filter, cfg.filter_base,
                          cfg.filter_scale)
        fd, mean_weight, a = (w * d).mean(), w.mean(), cfg.kd_alpha
    total = (1 - a) * (ce + cfg.bct_loss_weight * bct_term) + a * cfg.kd_loss_weight * fd
    parts = {"loss": total, "ce": ce, "bct": bct_term, "fd": fd, "focal_weight": mean_weight}
    return total, {name: value.detach() for name, value in parts.items()}

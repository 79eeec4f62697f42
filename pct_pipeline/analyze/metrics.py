"""Accuracy and regression metrics as pure functions over numpy arrays.

Conventions: logits are [N, C] (any float dtype; computed on in float32 row blocks, 8 MiB of
scratch whatever N, C and the model count), labels int64 [N]. NaN or infinite logits are
refused. Argmax ties: the lowest class index wins (numpy's argmax rule). Top-k uses the same
order: class a ranks above class b when its logit is larger, or equal and a < b; so a sample
is top-1 correct iff ``np.argmax(logits) == label`` and top-k correct iff fewer than k classes
rank above its label. Ensembles are the float32 mean of the members' logits, ranked by the
same rule. A ratio whose denominator is 0 is None (JSON null).
"""
from typing import NamedTuple

import numpy as np

BLOCK_ELEMENTS = 1 << 21  # float32 scratch (8 MiB, for all models): small enough for the cache


class NonFiniteLogits(ValueError):
    """A NaN or infinite logit: `model` is the index into the models list, `row` the sample."""

    def __init__(self, model, row):
        super().__init__(f"NaN or infinite logit in sample {row} of model {model}")
        self.model, self.row = model, row


def _blocks(n, c, arrays):
    """Row spans (lo, hi) such that `arrays` float32 blocks of [rows, c] fit BLOCK_ELEMENTS."""
    step = max(1, BLOCK_ELEMENTS // max(1, c * arrays))
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def _float32(logits, lo, hi, model, out, mask):
    """Rows lo:hi of `logits` as float32 in `out` [hi - lo, C]; `mask` bool scratch, same shape."""
    np.copyto(out, logits[lo:hi])
    if not np.isfinite(out, out=mask).all():
        raise NonFiniteLogits(model, lo + int(np.argwhere(~mask)[0, 0]))
    return out


def rank_block(logits, labels, mask=None):
    """Number of classes ranked above the label, int64 [n], for float logits [n, C].

    mask: optional bool scratch [n, C], to spare a fresh allocation per call."""
    rows, c = np.arange(len(labels)), logits.shape[1]
    own = logits[rows, labels][:, None]
    # Summing the mask as uint8 into uint16 is ~4x faster than np.count_nonzero(axis=1).
    count = np.uint16 if c < 1 << 16 else np.int64
    above = np.greater(logits, own, out=mask).view(np.uint8).sum(axis=1, dtype=count)
    above = above.astype(np.int64)
    same = np.equal(logits, own, out=mask)
    same[rows, labels] = False
    tied = np.flatnonzero(same.any(axis=1))
    if tied.size:  # equal logits rank above the label only at a lower class index
        lower = same[tied] & (np.arange(c) < labels[tied, None])
        above[tied] += np.count_nonzero(lower, axis=1)
    return above


def softmax_block(block, labels):
    """(p_label, p_max) float32 [n] of float32 logits [n, C]; overwrites `block`."""
    block -= block.max(axis=1, keepdims=True)  # the maximum becomes exp(0) = 1
    own = block[np.arange(len(labels)), labels]
    total = np.exp(block, out=block).sum(axis=1)
    return np.exp(own) / total, 1.0 / total


class Scores(NamedTuple):
    """Per-sample scores of one model: label rank int64 [N]; softmax at the label and at the
    maximum, float32 [N] each, defined (else NaN) where the scored models disagree about top-1
    correctness: the flip metrics need them only there, and elsewhere they would cost most of
    the pass."""
    rank: np.ndarray
    p_label: np.ndarray
    p_max: np.ndarray


def score(models, labels, ensembles=()):
    """Scores of each model and label ranks of each logit-mean ensemble, in one pass.

    models: list of logits [N, C]; labels int64 [N]; ensembles: tuples of model indices whose
    float32 mean of logits is ranked. Returns (a Scores per model, an int64 [N] rank per
    ensemble). Each model's row block is converted to float32 once, into scratch reused from
    block to block (fresh big arrays cost page faults), and shared by everything that uses it.
    Raises NonFiniteLogits for the first bad row.
    """
    n, c = models[0].shape
    out = [Scores(np.empty(n, np.int64), np.full(n, np.nan, np.float32),
                  np.full(n, np.nan, np.float32)) for _ in models]
    ranks = [np.empty(n, np.int64) for _ in ensembles]
    spans = _blocks(n, c, len(models) + 1)
    scratch = np.empty((len(models) + 1, spans[0][1] if spans else 0, c), np.float32)
    mask = np.empty(scratch.shape[1:], bool)
    for lo, hi in spans:
        f32, y = scratch[:, :hi - lo], labels[lo:hi]
        blocks = [_float32(x, lo, hi, i, f32[i], mask[:hi - lo]) for i, x in enumerate(models)]
        for rank, members in zip(ranks, ensembles):
            total = np.add(blocks[members[0]], blocks[members[1]], out=f32[-1])
            for i in members[2:]:
                total += blocks[i]
            total /= len(members)
            rank[lo:hi] = rank_block(total, y, mask[:hi - lo])
        for scores, logits in zip(out, blocks):
            scores.rank[lo:hi] = rank_block(logits, y, mask[:hi - lo])
        right = np.array([scores.rank[lo:hi] == 0 for scores in out])
        rows = np.flatnonzero(right.any(axis=0) & ~right.all(axis=0))
        for scores, logits in zip(out, blocks):
            some = np.take(logits, rows, axis=0, out=f32[-1, :len(rows)], mode="clip")
            p_label, p_max = softmax_block(some, y[rows])
            scores.p_label[lo + rows], scores.p_max[lo + rows] = p_label, p_max
    return out, ranks


def ratio(numerator, denominator):
    """numerator / denominator as a float, or None when the denominator is 0."""
    return float(numerator / denominator) if denominator else None


def flips(old_correct, new_correct):
    """(negative, positive) flip masks, bool [N]: old right and new wrong; old wrong, new right."""
    return old_correct & ~new_correct, ~old_correct & new_correct


def compare(old, new, type1=0.1, type2=0.5):
    """Regression metrics of a new model against an old one, from their Scores (of one `score`
    call, so that the softmax is defined on every flip).

    Fractions of N unless noted: nfi = NF / #new errors, pfi = PF / #new correct,
    relative_nfr = NFR / ((1 - err_old) * err_new); nfr_frac = (1/N) * sum over negative flips
    of (p_max - p_label) of the new model, pfr_frac likewise over positive flips with the old
    model's probabilities; type1/type2 flips: negative flips whose label probability changed by
    at most type1 / at least type2 (|p_new(label) - p_old(label)|).
    """
    n = len(old.rank)
    nf, pf = flips(old.rank == 0, new.rank == 0)
    change = np.abs(new.p_label[nf] - old.p_label[nf])
    if np.isnan(change).any() or np.isnan(old.p_max[pf]).any():
        raise ValueError("compare needs the Scores of one score() call over both models")
    num_nf, num_pf, new_errors = int(nf.sum()), int(pf.sum()), int(np.count_nonzero(new.rank))
    acc_old = float(np.mean(old.rank == 0))
    return {
        "negative_flips": num_nf, "positive_flips": num_pf,
        "nfr": num_nf / n, "pfr": num_pf / n,
        "nfi": ratio(num_nf, new_errors), "pfi": ratio(num_pf, n - new_errors),
        "relative_nfr": ratio(num_nf / n, acc_old * (new_errors / n)),
        "nfr_frac": float((new.p_max - new.p_label)[nf].sum(dtype=np.float64) / n),
        "pfr_frac": float((old.p_max - old.p_label)[pf].sum(dtype=np.float64) / n),
        "type1_flips": int(np.count_nonzero(change <= type1)),
        "type2_flips": int(np.count_nonzero(change >= type2)),
    }


def bootstrap_sums(indicators, resamples, seed):
    """Column sums of bool `indicators` [N, K] over `resamples` bootstrap resamples, int64 [B, K].

    A resample draws N rows with replacement, jointly for all columns (so differences of
    columns are paired). It is fully described by how often it drew each distinct row pattern,
    and those counts are multinomial(N, pattern frequencies): drawing them directly gives exactly
    the bootstrap distribution at O(B * patterns) cost instead of O(B * N); with K columns that
    are functions of M models' correctness there are at most 2^M patterns.
    """
    x = np.asarray(indicators, dtype=bool)
    packed = np.ascontiguousarray(np.packbits(x, axis=1))
    keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(x), counts / len(x), size=resamples)
    return draws @ x[first].astype(np.int64)


def percentile_ci(values, level=0.95):
    """[lo, hi] percentile interval of bootstrap replicates `values` [B], as floats."""
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def per_class(labels, old_correct, new_correct, num_classes):
    """Per-class counts, each int64 [C] indexed by label: samples, old and new top-1 correct,
    negative and positive flips. labels int64 [N]; old/new_correct bool [N]."""
    negative, positive = flips(old_correct, new_correct)

    def count(mask=None):
        return np.bincount(labels if mask is None else labels[mask], minlength=num_classes)
    return {"count": count(), "old_correct": count(old_correct), "new_correct": count(new_correct),
            "negative_flips": count(negative), "positive_flips": count(positive)}


def argmax_rows(logits, rows):
    """Top-1 class (int64 [k], ties to the lowest index) of `rows` (int64 [k]) of logits [N, C]:
    the few rows a report names, without a pass over all of them. Row blocks are converted to
    float32 in one reused scratch (argmax on float16 is several times slower)."""
    rows = np.asarray(rows, np.int64)
    out = np.empty(len(rows), np.int64)
    step = max(1, BLOCK_ELEMENTS // max(1, logits.shape[1]))
    scratch = np.empty((min(step, len(rows)), logits.shape[1]), np.float32)
    for lo in range(0, len(rows), step):
        block = scratch[:len(rows[lo:lo + step])]
        np.copyto(block, logits[rows[lo:lo + step]])
        out[lo:lo + step] = block.argmax(axis=1)
    return out


def transitions(true, predicted, k):
    """The k most frequent (true, predicted, count) pairs of int64 [n] class arrays, most
    frequent first, then by true and predicted class."""
    if len(true) == 0:
        return []
    pairs, counts = np.unique(np.stack([true, predicted], axis=1), axis=0, return_counts=True)
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -counts))[:k]
    return [(int(pairs[i, 0]), int(pairs[i, 1]), int(counts[i])) for i in order]

"""The report of `pct analyze` as a JSON-shaped dict (fractions in [0, 1]; None where a ratio's
denominator is 0 or an interval was not computed), and the legend of every number in it."""
import numpy as np

from . import metrics

LEGEND = {
    "top1": "fraction of samples whose highest logit is at the label (argmax ties go to the "
            "lowest class index)",
    "top5": "fraction of samples whose label is among the 5 highest logits",
    "ci95": "95% percentile bootstrap interval: B resamples of the N samples with replacement "
            "(seeded), the 2.5th and 97.5th percentiles of the metric over them; null when B = 0",
    "negative_flips (NF)": "samples OLD classifies right (top-1) and NEW wrong: the regressions",
    "positive_flips (PF)": "samples OLD classifies wrong and NEW right",
    "nfr": "negative flip rate, NF / N",
    "pfr": "positive flip rate, PF / N",
    "nfi": "negative flip impact, NF / (samples NEW gets wrong): the share of NEW's errors "
           "that OLD got right",
    "pfi": "positive flip impact, PF / (samples NEW gets right)",
    "relative_nfr": "NFR / ((1 - err_old) * err_new): NFR over what two models erring "
                    "independently would give (1: as many; below 1: fewer)",
    "nfr_frac": "(1/N) * sum over negative flips of (p_max - p_label) of NEW's softmax: how "
                "far NEW is from being right on its regressions",
    "pfr_frac": "(1/N) * sum over positive flips of (p_max - p_label) of OLD's softmax",
    "type1_flips": "negative flips whose label probability changed by at most {type1_max} "
                   "(|p_new(label) - p_old(label)|): near-ties that tipped over",
    "type2_flips": "negative flips whose label probability changed by at least {type2_min}: "
                   "confident regressions",
    "per class": "per true class: its sample count, OLD's and NEW's top-1 within the class, its "
                 "NF and PF, and nfr / pfr = NF / count and PF / count (the class's own rates)",
    "transitions": "the most frequent negative flips by (true class -> NEW's prediction); OLD's "
                   "prediction is the true class on every negative flip",
    "ensemble": "the float32 mean of the members' logits, ranked like a model; NF against OLD",
    "paired": "NF of NEW a minus NF of NEW b, with a paired bootstrap interval (both counted "
              "on the same resamples), far tighter than comparing two marginal intervals",
    "gates": "each --gate bound on each NEW model: its value, the bound, PASS or FAIL; exit "
             "status 0 when every gate passes, 1 when one fails, 2 for a usage error",
}


def legend(type1_max, type2_min):
    """LEGEND with the type-I/II thresholds in use written in."""
    return {k: v.format(type1_max=type1_max, type2_min=type2_min) for k, v in LEGEND.items()}


def build_report(models, names, resamples, seed, top_k, thresholds=(0.1, 0.5)):
    """The report of models[1:] against models[0] (run.Predictions, checked by checks.py).

    names: the class names in label order, or None; top_k: transitions listed per NEW model;
    thresholds: (type1_max, type2_min) of the label-probability change of a negative flip.
    Returns (report, Scores per model): the scores also serve the gallery.
    """
    labels, n, c = models[0].labels, *models[0].logits.shape
    ensembles = [(0, j) for j in range(1, len(models))]
    ensembles += [tuple(range(len(models)))] if len(models) > 2 else []
    scores, ranks = metrics.score([m.logits for m in models], labels, ensembles)
    correct = [s.rank == 0 for s in scores]
    report = {
        "models": [{"path": m.path, "n": n, "top1": float(np.mean(s.rank == 0)),
                    "top5": float(np.mean(s.rank < 5)), "images_sha256": m.images_sha256}
                   for m, s in zip(models, scores)],
        "comparisons": [_comparison(models, scores, j, names, top_k, thresholds)
                        for j in range(1, len(models))],
        "ensembles": [{"members": [models[i].path for i in group],
                       "top1": float(np.mean(rank == 0)), "top5": float(np.mean(rank < 5)),
                       "negative_flips": int(np.count_nonzero(correct[0] & (rank != 0)))}
                      for group, rank in zip(ensembles, ranks)],
        "paired": [],
        "num_samples": n, "num_classes": c, "classes": names, "bootstrap": resamples,
        "seed": seed, "top_classes": top_k, "type1_max": thresholds[0],
        "type2_min": thresholds[1],
        "tie_rule": "argmax ties go to the lowest class index",
        "legend": legend(*thresholds),
    }
    negatives = [metrics.flips(correct[0], right)[0] for right in correct[1:]]
    _add_bootstrap(report, correct, negatives, resamples, seed)
    return report, scores


def _comparison(models, scores, j, names, top_k, thresholds):
    """Metrics of models[j] against models[0], per class, and its frequent transitions."""
    old, new = models[0], models[j]
    row = {"old": old.path, "new": new.path,
           **metrics.compare(scores[0], scores[j], *thresholds)}
    old_right, new_right = scores[0].rank == 0, scores[j].rank == 0
    counts = metrics.per_class(old.labels, old_right, new_right, old.logits.shape[1])
    row["per_class"] = per_class_rows(counts, names)
    rows = np.flatnonzero(old_right & ~new_right)
    top = metrics.transitions(old.labels[rows], metrics.argmax_rows(new.logits, rows), top_k)
    row["transitions"] = [{"true": t, "true_name": name(names, t), "new": p,
                           "new_name": name(names, p), "negative_flips": k} for t, p, k in top]
    return row


def name(names, label):
    return None if names is None else names[label]


def per_class_rows(counts, names):
    """One dict per class from metrics.per_class counts, most negative flips first (then the
    lower label)."""
    c = len(counts["count"])
    order = np.lexsort((np.arange(c), -counts["negative_flips"]))
    out = []
    for k in order.tolist():
        size = int(counts["count"][k])
        out.append({"class": k, "name": name(names, k), "count": size,
                    "old_top1": metrics.ratio(counts["old_correct"][k], size),
                    "top1": metrics.ratio(counts["new_correct"][k], size),
                    "negative_flips": int(counts["negative_flips"][k]),
                    "positive_flips": int(counts["positive_flips"][k]),
                    "nfr": metrics.ratio(counts["negative_flips"][k], size),
                    "pfr": metrics.ratio(counts["positive_flips"][k], size)})
    return out


def _add_bootstrap(report, correct, negatives, resamples, seed):
    """95% percentile intervals of top-1, NF and NFR, and the paired NF differences of new
    models."""
    n, m = len(correct[0]), len(correct)
    sums = (metrics.bootstrap_sums(np.column_stack(correct + negatives), resamples, seed)
            if resamples else None)

    def ci(column, scale=1.0):
        return None if sums is None else metrics.percentile_ci(sums[:, column] * scale)

    for i, row in enumerate(report["models"]):
        row["top1_ci95"] = ci(i, 1 / n)
    for j, row in enumerate(report["comparisons"]):
        row["nfr_ci95"] = ci(m + j, 1 / n)
        row["negative_flips_ci95"] = ci(m + j)
    comps = report["comparisons"]
    for a in range(len(comps)):
        for b in range(a + 1, len(comps)):
            diff = None if sums is None else sums[:, m + a] - sums[:, m + b]
            report["paired"].append({
                "old": comps[a]["old"], "new_a": comps[a]["new"], "new_b": comps[b]["new"],
                "negative_flips_a": comps[a]["negative_flips"],
                "negative_flips_b": comps[b]["negative_flips"],
                "difference": comps[a]["negative_flips"] - comps[b]["negative_flips"],
                "difference_ci95": None if diff is None else metrics.percentile_ci(diff),
                "bootstrap": resamples})

"""`pct analyze`: load prediction stores (or upstream `.result` files), compute, report.

Inputs are §Stores, local directories or URLs (a `predictions` store, or a `teacher-cache` made
with `--eval-view`: one eval view) read as `logits[0]` and `labels`, or the research code's `.result`
files (torch-saved dicts with `gt` and `outputs` logits; `pred` is ignored and recomputed from
`outputs` with our tie rule). The first input is the old model; every input must have the same
labels in the same order. torch is imported only for a `.result` file.
"""
import json
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from ..errors import PctError
from ..files import write_text_atomic
from ..store import Location, open_store
from . import metrics

TORCH_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save: a zip archive, or a legacy pickle


@dataclass(frozen=True)
class Predictions:
    """One model's validation outputs: logits [N, C] (float16/float32), labels int64 [N]."""
    path: str
    logits: np.ndarray
    labels: np.ndarray
    classes: list | None


def run(cfg):
    """Analyze cfg.old against each of cfg.new; print the table, write JSON / plot if asked."""
    if cfg.plot_out:
        _require_matplotlib()
    for option, out in (("--json", cfg.json_out), ("--plot", cfg.plot_out)):
        if out and not Path(out).resolve().parent.is_dir():
            raise PctError(f"output folder does not exist: {Path(out).parent}")
        if out and Path(out).exists() and not cfg.overwrite:
            raise PctError(f"{option} {out} exists (use --overwrite to replace it)")
    models = [load(path) for path in (cfg.old, *cfg.new)]
    check_aligned(models)
    report = build_report(models, cfg.bootstrap, cfg.seed, cfg.top_classes)
    click.echo(format_report(report))
    if cfg.json_out:
        write_json_atomic(cfg.json_out, report)
    if cfg.plot_out:
        from .plot import plot
        plot(report, cfg.plot_out)
    return report


def load(path):
    """Predictions from a store (a directory or a URL) or a local `.result` file; PctError for
    anything else."""
    p = Location(path).path
    if p is None or p.is_dir():
        return _load_store(path)
    if not p.exists():
        raise PctError(f"not found: {path}")
    with open(p, "rb") as f:
        head = f.read(4)
    if not head.startswith(TORCH_MAGIC):
        raise PctError(f"neither a pct store (a Zarr directory) nor a .result file: {path}")
    return _load_result(path)


def _load_store(path):
    store = open_store(path)
    eval_view = bool(store.attrs.get("eval_view"))
    if store.views != 1 or (store.kind == "teacher-cache" and not eval_view):
        raise PctError(f"{path} is a {store.kind} store with {store.views} views "
                       f"(eval_view={eval_view}); analyze needs predictions or a teacher cache "
                       f"made with --eval-view (1 view)")
    logits = store.logits(0)
    classes = (store.attrs.get("dataset") or {}).get("classes")
    if not isinstance(classes, list) or len(classes) != store.num_classes:
        classes = None
    return Predictions(str(path), logits, np.asarray(store.labels, np.int64), classes)


def _load_result(path):
    import pickle
    import zipfile

    import torch

    try:
        result = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError,
            zipfile.BadZipFile) as exc:
        raise PctError(f"unreadable .result file {path} ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(result, dict) or not {"gt", "outputs"} <= set(result):
        keys = sorted(result) if isinstance(result, dict) else type(result).__name__
        raise PctError(f"{path} is not a .result file: expected a dict with 'gt' and "
                       f"'outputs', got {keys}")
    outputs, gt = result["outputs"], result["gt"]
    if not (torch.is_tensor(outputs) and torch.is_tensor(gt) and outputs.ndim == 2
            and gt.ndim == 1 and len(gt) == len(outputs)):
        raise PctError(f"{path}: 'outputs' must be a [N, C] tensor and 'gt' a [N] tensor")
    logits = outputs.detach().float().numpy()
    return Predictions(str(path), logits, gt.detach().long().numpy(), None)


def check_aligned(models):
    """Refuse inputs that cannot be compared sample by sample."""
    first = models[0]
    n, c = first.logits.shape
    if n == 0:
        raise PctError(f"{first.path} holds no samples")
    bad = np.flatnonzero((first.labels < 0) | (first.labels >= c))
    if bad.size:
        raise PctError(f"{first.path}: label {first.labels[bad[0]]} of sample {bad[0]} is "
                       f"outside [0, {c})")
    for m in models[1:]:
        if len(m.labels) != n:
            raise PctError(f"sample counts differ: {first.path} has {n}, {m.path} has "
                           f"{len(m.labels)}")
        if m.logits.shape[1] != c:
            raise PctError(f"class counts differ: {first.path} has {c}, {m.path} has "
                           f"{m.logits.shape[1]}")
        differ = np.flatnonzero(m.labels != first.labels)
        if differ.size:
            i = differ[0]
            raise PctError(f"labels differ: {first.path} and {m.path} first differ at sample "
                           f"{i} ({first.labels[i]} vs {m.labels[i]})")


def build_report(models, resamples, seed, top_k):
    """The JSON-shaped report (fractions in [0, 1]; None where undefined)."""
    labels, n, c = models[0].labels, *models[0].logits.shape
    ensembles = [(0, j) for j in range(1, len(models))]
    ensembles += [tuple(range(len(models)))] if len(models) > 2 else []
    try:
        scores, ranks = metrics.score([m.logits for m in models], labels, ensembles)
    except metrics.NonFiniteLogits as exc:
        raise PctError(f"{models[exc.model].path}: NaN or infinite logit in sample "
                       f"{exc.row}") from None
    correct = [s.rank == 0 for s in scores]
    report = {
        "models": [{"path": m.path, "n": n, "top1": float(np.mean(s.rank == 0)),
                    "top5": float(np.mean(s.rank < 5))} for m, s in zip(models, scores)],
        "comparisons": [_comparison(models, scores, j, top_k) for j in range(1, len(models))],
        "ensembles": [{"members": [models[i].path for i in group],
                       "top1": float(np.mean(rank == 0)), "top5": float(np.mean(rank < 5)),
                       "negative_flips": int(np.count_nonzero(correct[0] & (rank != 0)))}
                      for group, rank in zip(ensembles, ranks)],
        "paired": [],
        "num_samples": n, "num_classes": c, "bootstrap": resamples, "seed": seed,
        "tie_rule": "argmax ties go to the lowest class index",
    }
    negatives = [metrics.flips(correct[0], right)[0] for right in correct[1:]]
    _add_bootstrap(report, correct, negatives, resamples, seed)
    return report


def _comparison(models, scores, j, top_k):
    """Metrics of models[j] against models[0], with the classes of most negative flips."""
    old, new = models[0], models[j]
    names = next((m.classes for m in models if m.classes), None)
    row = {"old": old.path, "new": new.path, **metrics.compare(scores[0], scores[j])}
    negative = metrics.flips(scores[0].rank == 0, scores[j].rank == 0)[0]
    per_class, top = metrics.top_flip_classes(negative, old.labels, old.logits.shape[1], top_k)
    row["top_flip_classes"] = [{"class": k, "name": names[k] if names else None,
                                "negative_flips": count} for k, count in top]
    row["negative_flips_per_class"] = per_class.tolist()
    return row


def _add_bootstrap(report, correct, negatives, resamples, seed):
    """95% percentile intervals of top-1 and NFR, and the paired NF differences of new models."""
    n, m = len(correct[0]), len(correct)
    sums = (metrics.bootstrap_sums(np.column_stack(correct + negatives), resamples, seed)
            if resamples else None)

    def ci(column, scale=1.0):
        return None if sums is None else metrics.percentile_ci(sums[:, column] * scale)

    for i, row in enumerate(report["models"]):
        row["top1_ci95"] = ci(i, 1 / n)
    for j, row in enumerate(report["comparisons"]):
        row["nfr_ci95"] = ci(m + j, 1 / n)
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


def write_json_atomic(path, report):
    """Write to a temporary file beside `path`, then rename: `path` is whole or untouched."""
    write_text_atomic(path, json.dumps(report, indent=1, allow_nan=False) + "\n")


def _require_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PctError("--plot needs the matplotlib package: pip install "
                       "'pct_pipeline[plot]'") from None


def _pct(x):
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _ci(v, scale=100.0, digits=2):
    return "n/a" if v is None else f"[{scale * v[0]:.{digits}f}, {scale * v[1]:.{digits}f}]"


def _table(header, rows):
    """Aligned text table: first column left-aligned, the others right-aligned."""
    cells = [[str(x) for x in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(x.ljust(w) if i == 0 else x.rjust(w)
                       for i, (x, w) in enumerate(zip(row, widths))) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def format_report(r):
    """The human-readable tables of a report (percentages of N; CIs are 95% bootstrap)."""
    parts = [_table(["model", "n", "top-1", "top-1 95% CI", "top-5"],
                    [[m["path"], m["n"], _pct(m["top1"]), _ci(m["top1_ci95"]), _pct(m["top5"])]
                     for m in r["models"]])]
    comps = r["comparisons"]
    rows = [("negative flips (NF)", "negative_flips", str), ("positive flips (PF)",
             "positive_flips", str), ("NFR = NF / N", "nfr", _pct), ("NFR 95% CI", "nfr_ci95", _ci),
            ("PFR = PF / N", "pfr", _pct), ("NFI = NF / new errors", "nfi", _pct),
            ("PFI = PF / new correct", "pfi", _pct),
            ("relative NFR", "relative_nfr", lambda x: "n/a" if x is None else f"{x:.3f}"),
            ("NFR_frac", "nfr_frac", _pct), ("PFR_frac", "pfr_frac", _pct),
            ("type-I NF (|dp| <= 0.1)", "type1_flips", str),
            ("type-II NF (|dp| >= 0.5)", "type2_flips", str)]
    parts.append(_table([f"against {r['models'][0]['path']}", *(c["new"] for c in comps)],
                        [[label, *(fmt(c[key]) for c in comps)] for label, key, fmt in rows]))
    lines = []
    for c in comps:
        top = ", ".join(f"{t['class']}" + (f" {t['name']}" if t["name"] is not None else "")
                        + f" ({t['negative_flips']})" for t in c["top_flip_classes"])
        lines.append(f"classes with most negative flips, {c['new']}: {top or 'none'}")
    parts.append("\n".join(lines))
    parts.append(_table(["logit-mean ensemble", "top-1", "top-5", "NF vs old"],
                        [[" + ".join(e["members"]), _pct(e["top1"]), _pct(e["top5"]),
                          e["negative_flips"]] for e in r["ensembles"]]))
    if r["paired"]:
        parts.append(_table([f"paired bootstrap of NF (B={r['bootstrap']})", "NF a", "NF b",
                             "a - b", "95% CI"],
                            [[f"a={p['new_a']} b={p['new_b']}", p["negative_flips_a"],
                              p["negative_flips_b"], p["difference"],
                              _ci(p["difference_ci95"], 1.0, 1)] for p in r["paired"]]))
    return "\n\n".join(parts)

"""The `--plot` figure of `pct analyze`: top-1 vs NFR of new models, negative flips per class.

Models are labelled by their paths, shortened: the common folder and a trailing
`/predictions.zarr` or `.zarr` dropped. Runs named `NAME_sSEED` (as the demo names them) share
one colour per NAME and one marker per SEED.
"""
import re
from pathlib import PurePath

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..files import atomic_file  # noqa: E402

MARKERS = "osD^vP*Xph<>"


def plot(report, out):
    """Write a PNG to `out` (atomically) from a report of run.build_report."""
    comps = report["comparisons"]
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(14, max(5.0, 2.0 + 0.35 * len(comps))), width_ratios=(1, 1.1))
    labels = short_names([report["models"][0]["path"], *(c["new"] for c in comps)])
    _accuracy_vs_nfr(left, report, labels)
    _flip_classes(right, report, labels[1:])
    save_png(fig, out)


def save_png(fig, out):
    """Write the laid-out figure to `out` as a PNG (atomically), then close it."""
    fig.tight_layout()
    try:
        with atomic_file(out) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)


def short_names(paths):
    """Paths without their common folder and a trailing /predictions.zarr or .zarr."""
    names = [re.sub(r"(/predictions)?\.zarr/?$", "", str(p)) for p in paths]
    parts = [PurePath(n).parts for n in names]
    common = 0
    while (all(len(p) > common + 1 for p in parts)
           and len({p[common] for p in parts}) == 1):
        common += 1
    return ["/".join(p[common:]) for p in parts]


def _styles(labels):
    """(colour, marker) per label: one colour per NAME and one marker per SEED of NAME_sSEED."""
    groups = [re.sub(r"[_-]s(eed)?\d+$", "", x) for x in labels]
    seeds = [m.group(1) if (m := re.search(r"[_-]s(?:eed)?(\d+)$", x)) else None for x in labels]
    colour = {g: f"C{i % 10}" for i, g in enumerate(dict.fromkeys(groups))}
    seed_marker = {s: MARKERS[i % len(MARKERS)] for i, s in enumerate(dict.fromkeys(seeds))}
    return [(colour[g], seed_marker[s]) for g, s in zip(groups, seeds)]


def _error(value, ci):
    return [[0], [0]] if ci is None else [[100 * (value - ci[0])], [100 * (ci[1] - value)]]


def _accuracy_vs_nfr(ax, report, labels):
    models = {m["path"]: m for m in report["models"]}
    old = report["models"][0]
    ax.axhline(100 * old["top1"], color="grey", linestyle="--",
               label=f"old: {labels[0]} ({100 * old['top1']:.1f}%)")
    for c, label, (colour, marker) in zip(report["comparisons"], labels[1:],
                                          _styles(labels[1:])):
        new = models[c["new"]]
        ax.errorbar(100 * c["nfr"], 100 * new["top1"], xerr=_error(c["nfr"], c["nfr_ci95"]),
                    yerr=_error(new["top1"], new["top1_ci95"]), fmt=marker, color=colour,
                    capsize=3, alpha=0.8, label=label)
    ax.set_xlabel("negative flip rate (%), 95% CI")
    ax.set_ylabel("top-1 accuracy (%), 95% CI")
    ax.set_title(f"new models against the old one (N = {report['num_samples']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=2 if len(labels) > 8 else 1)


def _flip_classes(ax, report, labels):
    """Negative flips per class (columns: the union of each model's top flip classes) of each
    new model (rows), counts written in."""
    comps = report["comparisons"]
    names = {t["class"]: t["name"] for c in comps for t in c["top_flip_classes"]}
    classes = sorted(names)
    if not classes:
        ax.text(0.5, 0.5, "no negative flips", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    counts = [[c["negative_flips_per_class"][k] for k in classes] for c in comps]
    top = max(max(row) for row in counts)
    image = ax.imshow(counts, cmap="Reds", aspect="auto", vmin=0, vmax=max(2, 1.5 * top))
    for i, row in enumerate(counts):
        for j, v in enumerate(row):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize="small",
                        color="black")
    ticks = [str(k) if names[k] is None else str(names[k]) for k in classes]  # each once
    tilt = max(len(t) for t in ticks) * len(ticks) > 60  # long rows of labels overlap
    ax.set_xticks(range(len(classes)), ticks, rotation=45 if tilt else 0,
                  ha="right" if tilt else "center")
    ax.set_yticks(range(len(comps)), [f"{x} ({c['negative_flips']})"
                                      for x, c in zip(labels, comps)])
    ax.set_xlabel("class (true label)")
    ax.set_title("negative flips per class (row total in brackets)")
    ax.figure.colorbar(image, ax=ax, label="negative flips", fraction=0.04,
                      ticks=MaxNLocator(integer=True))

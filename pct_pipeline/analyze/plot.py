"""The `--plot` figure of `pct analyze`: top-1 vs NFR of new models, negative flips per class.

Models are labelled by their paths, shortened: the common folder and a trailing
`/predictions.zarr` or `.zarr` dropped. Runs named `NAME_sSEED` (as the demo names them) share
one colour per NAME and one marker per SEED. The axes cover the data (values and intervals)
with a margin, never beyond [0, 100]%; models whose points coincide are drawn slightly apart
around their common point, so that none hides another. Figures are written in the format
their file's extension names (.png, .pdf, .svg; SVG keeps its text as text).
"""
import math
import re
from pathlib import Path, PurePath

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..files import atomic_file  # noqa: E402

MARKERS = "osD^vP*Xph<>"
FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}
# No creation dates in the files: the same report draws the same bytes.
METADATA = {"png": {}, "pdf": {"CreationDate": None}, "svg": {"Date": None}}
MAX_CLASS_COLUMNS = 30


def plot(report, out):
    """Write the figure of a report (run.run) to `out` (atomically)."""
    comps = report["comparisons"]
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(14, max(5.0, 2.0 + 0.35 * len(comps))), width_ratios=(1, 1.1))
    labels = short_names([report["models"][0]["path"], *(c["new"] for c in comps)])
    _accuracy_vs_nfr(left, report, labels)
    _flip_classes(right, report, labels[1:])
    save_figure(fig, out)


def save_figure(fig, out, tight=True, dpi=110):
    """Write `fig` to `out` (atomically) in the format of its extension, then close it;
    `tight`: lay it out first (a figure placed by hand is not)."""
    fmt = FORMATS[Path(out).suffix.lower()]
    if tight:
        fig.tight_layout()
    try:
        with plt.rc_context({"svg.fonttype": "none"}), atomic_file(out) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=METADATA[fmt])
    finally:
        plt.close(fig)


def save_png(fig, out):
    """save_figure for a .png `out` (the demo's summary plot)."""
    save_figure(fig, out)


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


def axis_range(values, pad=0.06, min_span=1.0, low=0.0, high=100.0):
    """(lo, hi) covering `values` (percentages) with a margin of `pad` of their span (at least
    `min_span` wide), clipped to [low, high]."""
    lo, hi = min(values), max(values)
    margin = pad * max(hi - lo, min_span) + max(0.0, min_span - (hi - lo)) / 2
    return max(low, lo - margin), min(high, hi + margin)


def spread(points, spans, radius=0.015):
    """(dx, dy) per point [(x, y), ...]: 0 for a point alone; points within 1% of the axis
    `spans` (x span, y span) of each other are placed on a circle of `radius` spans around
    their first one, so that each stays visible."""
    offsets = [(0.0, 0.0)] * len(points)
    groups = []
    for i, (x, y) in enumerate(points):
        for group in groups:
            gx, gy = points[group[0]]
            if abs(x - gx) < 0.01 * spans[0] and abs(y - gy) < 0.01 * spans[1]:
                group.append(i)
                break
        else:
            groups.append([i])
    for group in (g for g in groups if len(g) > 1):
        for k, i in enumerate(group):
            angle = 2 * math.pi * k / len(group)
            offsets[i] = (radius * spans[0] * math.cos(angle),
                          radius * spans[1] * math.sin(angle))
    return offsets


def _error(value, ci):
    return [[0], [0]] if ci is None else [[100 * (value - ci[0])], [100 * (ci[1] - value)]]


def _interval(value, ci):
    return [100 * value] if ci is None else [100 * ci[0], 100 * ci[1], 100 * value]


def _accuracy_vs_nfr(ax, report, labels):
    models = {m["path"]: m for m in report["models"]}
    old, comps = report["models"][0], report["comparisons"]
    news = [models[c["new"]] for c in comps]
    xs = [v for c in comps for v in _interval(c["nfr"], c["nfr_ci95"])]
    ys = [100 * old["top1"]] + [v for m in news for v in _interval(m["top1"], m["top1_ci95"])]
    (x0, x1), (y0, y1) = axis_range(xs), axis_range(ys)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.axhline(100 * old["top1"], color="grey", linestyle="--",
               label=f"old: {labels[0]} ({100 * old['top1']:.1f}%)")
    points = [(100 * c["nfr"], 100 * m["top1"]) for c, m in zip(comps, news)]
    offsets = spread(points, (x1 - x0, y1 - y0))
    for c, new, label, (colour, marker), (x, y), (dx, dy) in zip(
            comps, news, labels[1:], _styles(labels[1:]), points, offsets):
        ax.errorbar(x + dx, y + dy, xerr=_error(c["nfr"], c["nfr_ci95"]),
                    yerr=_error(new["top1"], new["top1_ci95"]), fmt=marker, color=colour,
                    capsize=3, alpha=0.8, label=label)
    moved = " (coinciding models drawn slightly apart)" if any(any(o) for o in offsets) else ""
    ax.set_xlabel("negative flip rate (%), 95% CI" + moved)
    ax.set_ylabel("top-1 accuracy (%), 95% CI")
    ax.set_title(f"new models against the old one (N = {report['num_samples']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=2 if len(labels) > 8 else 1)


def _flip_classes(ax, report, labels):
    """Negative flips per class (columns: the union of each model's classes with most
    negative flips, at most MAX_CLASS_COLUMNS) of each new model (rows), counts written in."""
    comps = report["comparisons"]
    k = max(1, report["top_classes"])
    names = {}
    for c in comps:
        for row in c["per_class"][:k]:
            if row["negative_flips"] and len(names) < MAX_CLASS_COLUMNS:
                names.setdefault(row["class"], row["name"])
    classes = sorted(names)
    if not classes:
        ax.text(0.5, 0.5, "no negative flips", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    per_class = [{row["class"]: row["negative_flips"] for row in c["per_class"]} for c in comps]
    counts = [[flips[label] for label in classes] for flips in per_class]
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

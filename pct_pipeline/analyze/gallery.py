"""--gallery: the flips of each NEW model drawn as thumbnails of the validation images.

One section per NEW model and kind of flip (negative, positive or both: --gallery-flips), at
most --gallery-max thumbnails each: negative flips most confident old-right first (OLD's
softmax at the label, descending), positive flips most confident new-right first; ties by
sample index. Each thumbnail is labelled with its sample index and its true, OLD and NEW
classes (names where known); a red frame marks a negative flip, a green one a positive flip.

The pictures come from the .beton (--images) through the dataset package, imported here only;
run.py imports this module only when --gallery is given. The .beton must hold the stores'
samples: the same count and labels, and the same image digest and class names where the
stores record them (checks.py).
"""
from typing import NamedTuple

import numpy as np

from . import metrics
from .checks import Record

COLUMNS = 8  # thumbnails per row
CELL_W, CELL_H, PICTURE = 1.5, 1.95, 1.2  # inches: a cell, the picture in it
TITLE_H, DPI = 0.45, 100
FRAME = {"negative": "tab:red", "positive": "tab:green"}
SUBTITLE = ("each picture: sample index, true class, OLD's and NEW's predictions; in brackets "
            "each model's probability of the true class")


class Images(NamedTuple):
    """The --images .beton: what it says about its data, and its labels int64 [N]."""
    record: Record
    labels: np.ndarray


def open_images(path):
    """The Images of the .beton at `path` (PctError if it is not a readable .beton)."""
    from ..dataset import BetonInfo

    info = BetonInfo(path)
    return Images(Record(str(path), info.fingerprint.get("images_sha256"), info.classes),
                  info.labels)


def select(report, models, scores, cfg):
    """The gallery's content (JSON-shaped): per NEW model and kind of flip, the samples drawn
    with their classes and label probabilities. models: run.Predictions; scores: the
    metrics.Scores of the same models (label probabilities are defined on every flip)."""
    names = report["classes"]
    kinds = ("negative", "positive") if cfg.gallery_flips == "both" else (cfg.gallery_flips,)
    old_right = scores[0].rank == 0
    sections = []
    for j in range(1, len(models)):
        new_right = scores[j].rank == 0
        for kind in kinds:
            negative = kind == "negative"
            rows = np.flatnonzero(old_right & ~new_right if negative else ~old_right & new_right)
            sure = (scores[0] if negative else scores[j]).p_label[rows]
            shown = rows[np.lexsort((rows, -sure))][:cfg.gallery_max]
            sections.append({"new": models[j].path, "flips": kind, "total": int(rows.size),
                             "shown": _entries(models, scores, j, shown, names)})
    return {"path": cfg.gallery, "images": cfg.images, "max": cfg.gallery_max,
            "sections": sections}


def _entries(models, scores, j, rows, names):
    old = metrics.argmax_rows(models[0].logits, rows)
    new = metrics.argmax_rows(models[j].logits, rows)
    labels = models[0].labels[rows]

    def name(k):
        return str(k) if names is None else names[k]
    return [{"index": int(i), "true": name(t), "old": name(o), "new": name(n),
             "p_old_label": float(scores[0].p_label[i]), "p_new_label": float(scores[j].p_label[i])}
            for i, t, o, n in zip(rows.tolist(), labels.tolist(), old.tolist(), new.tolist())]


def read(images, gallery):
    """{sample index: uint8 [H, W, 3]} of every sample the gallery shows."""
    from ..dataset.images import read_images

    rows = sorted({e["index"] for s in gallery["sections"] for e in s["shown"]})
    return dict(zip(rows, read_images(images.record.path, rows)))


def draw(report, pictures, out):
    """Write the gallery figure to `out` (its extension names the format), atomically.

    Fixed sizes: COLUMNS cells of CELL_W x CELL_H inches per row (fewer when no section has
    that many), TITLE_H inches above each section, at DPI: so a PNG is
    columns * CELL_W * DPI pixels wide and sum(TITLE_H + rows * CELL_H) * DPI high."""
    import matplotlib.pyplot as plt

    from .plot import save_figure

    sections = report["gallery"]["sections"]
    columns = max(4, min(COLUMNS, max(len(s["shown"]) for s in sections)))
    heights = [TITLE_H + -(-len(s["shown"]) // columns) * CELL_H for s in sections]
    width, height = columns * CELL_W, sum(heights)
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    top = height
    for section, h in zip(sections, heights):
        fig.text(0.1 / width, (top - 0.08) / height, _fit(_title(section), width, 9),
                 va="top", fontsize=9, fontweight="bold")
        fig.text(0.1 / width, (top - 0.25) / height, _fit(SUBTITLE, width, 8), va="top",
                 fontsize=8)
        for k, entry in enumerate(section["shown"]):
            row, col = divmod(k, columns)
            x = col * CELL_W + (CELL_W - PICTURE) / 2
            y = top - TITLE_H - row * CELL_H - 0.05 - PICTURE
            ax = fig.add_axes((x / width, y / height, PICTURE / width, PICTURE / height))
            _thumbnail(ax, pictures[entry["index"]], entry, FRAME[section["flips"]])
        top -= h
    save_figure(fig, out, tight=False, dpi=DPI)


def _title(section):
    first = "old" if section["flips"] == "negative" else "new"
    return (f"{section['new']}: {section['flips']} flips, {len(section['shown'])} of "
            f"{section['total']}, most confident {first}-right first")


def _fit(text, inches, points):
    """`text` cut from the left (paths end in what tells them apart) to about fit `inches` at
    a font of `points` (an average character is ~0.55 em wide)."""
    room = int(inches * 72 / (0.55 * points))
    return text if len(text) <= room else "\u2026" + text[len(text) - room + 1:]


def _short(text, width=18):
    return text if len(text) <= width else text[:width - 1] + "\u2026"


def _thumbnail(ax, picture, entry, colour):
    ax.imshow(picture, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(2)
    ax.text(0.5, -0.04, f"#{entry['index']}  true: {_short(entry['true'])}\n"
            f"old: {_short(entry['old'])} ({entry['p_old_label']:.2f})\n"
            f"new: {_short(entry['new'])} ({entry['p_new_label']:.2f})",
            transform=ax.transAxes, ha="center", va="top", fontsize=7, linespacing=1.2)

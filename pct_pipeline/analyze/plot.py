"""The `--plot` figure of `pct analyze`: top-1 vs NFR of new models, negative flips per class."""
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402


def plot(report, out):
    """Write a PNG to `out` (atomically) from a report of run.build_report."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), width_ratios=(1, 1.3))
    _accuracy_vs_nfr(left, report)
    _flip_classes(right, report)
    fig.tight_layout()
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    os.replace(tmp, out)


def _error(value, ci):
    return [[0], [0]] if ci is None else [[100 * (value - ci[0])], [100 * (ci[1] - value)]]


def _accuracy_vs_nfr(ax, report):
    models = {m["path"]: m for m in report["models"]}
    old = report["models"][0]
    ax.axhline(100 * old["top1"], color="grey", linestyle="--", label=f"old: {old['path']}")
    for c in report["comparisons"]:
        new = models[c["new"]]
        ax.errorbar(100 * c["nfr"], 100 * new["top1"], xerr=_error(c["nfr"], c["nfr_ci95"]),
                    yerr=_error(new["top1"], new["top1_ci95"]), fmt="o", capsize=4,
                    label=c["new"])
    ax.set_xlabel("negative flip rate (%), 95% CI")
    ax.set_ylabel("top-1 accuracy (%), 95% CI")
    ax.set_title(f"new models against the old one (N = {report['num_samples']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def _flip_classes(ax, report):
    """Grouped bars over the union of each comparison's top flip classes."""
    comps = report["comparisons"]
    names = {t["class"]: t["name"] for c in comps for t in c["top_flip_classes"]}
    classes = sorted(names)
    if not classes:
        ax.text(0.5, 0.5, "no negative flips", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    width = 0.8 / len(comps)
    for j, c in enumerate(comps):
        counts = c["negative_flips_per_class"]
        ax.bar([i + j * width for i in range(len(classes))], [counts[k] for k in classes],
               width, label=c["new"])
    tilt = len(classes) > 8  # long rows of labels overlap unless tilted
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(classes))],
                  [str(k) if names[k] is None else f"{k} {names[k]}" for k in classes],
                  rotation=45 if tilt else 0, ha="right" if tilt else "center")
    ax.set_xlabel("class (label)")
    ax.set_ylabel("negative flips")
    ax.set_title("negative flips per class: each new model's top classes")
    ax.legend(fontsize="small")

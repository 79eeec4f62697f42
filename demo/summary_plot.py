"""The demo's figure, from demo/summarize.py's summary dict.

Left: every run as (negative flips, top-1), one colour per method and one marker per seed, with
each method's pooled estimate (mean over seeds) and its 95% bootstrap intervals. Right: the
paired differences against plain CE of the same seed, with the pooled (mean per seed) estimate
and its interval, and the region of the summary's aims (e.g. >= 30% fewer flips, <= 1 point of
top-1).
"""

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402

from pct_pipeline.analyze.plot import save_png  # noqa: E402

COLOURS = {"ce": "tab:grey", "fd": "tab:blue", "ldi": "tab:orange"}
NAMES = {"ce": "plain CE", "fd": "cached focal distillation (FD)", "ldi": "cached LDI"}
MARKERS = "osD^vP*Xph<>"


def plot(summary, out):
    """Write the PNG to `out` (atomically)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 7.5))
    _runs(left, summary)
    _differences(right, summary)
    save_png(fig, out)


def _legend_below(ax, seeds):
    """The axis' labelled artists, then one hollow marker per seed, under the axes."""
    handles, _ = ax.get_legend_handles_labels()
    handles += [ax.scatter([], [], marker=MARKERS[j % len(MARKERS)], facecolor="none",
                           edgecolor="black", label=f"seed {s}") for j, s in enumerate(seeds)]
    ax.legend(handles=handles, fontsize="small", loc="upper center", ncol=2,
              bbox_to_anchor=(0.5, -0.13), frameon=False)


def _runs(ax, s):
    seeds, k = s["seeds"], len(s["seeds"])
    for m, e in s["methods"].items():
        c = COLOURS.get(m, None)
        for j, (nf, top1) in enumerate(zip(e["negative_flips_per_seed"], e["top1_per_seed"])):
            ax.scatter(nf, 100 * top1, marker=MARKERS[j % len(MARKERS)], color=c, alpha=0.45,
                       s=36)
        x, y = e["negative_flips_pooled"] / k, 100 * e["top1_mean"]
        xci = [v / k for v in e["negative_flips_pooled_ci95"]]
        yci = [100 * v for v in e["top1_mean_ci95"]]
        ax.errorbar(x, y, xerr=[[x - xci[0]], [xci[1] - x]], yerr=[[y - yci[0]], [yci[1] - y]],
                    fmt="o", color=c, markersize=9, capsize=5, linewidth=2,
                    label=f"{NAMES.get(m, m)}: mean of {k} seeds")
    _legend_below(ax, seeds)
    ax.set_xlabel(f"negative flips against the old model (top-1 {100 * s['old_top1']:.1f}%)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"each run, and the mean over seeds with 95% intervals (N = {s['n']})")
    ax.grid(alpha=0.3)


def _differences(ax, s):
    seeds, k = s["seeds"], len(s["seeds"])
    ce = s["methods"]["ce"]
    for m, e in s["methods"].items():
        if m == "ce":
            continue
        c = COLOURS.get(m, None)
        per_seed = e["top1_difference"]["per_seed"]
        for j, (d, nf, nf_ce) in enumerate(zip(per_seed, e["negative_flips_per_seed"],
                                              ce["negative_flips_per_seed"])):
            ax.scatter(nf - nf_ce, 100 * d["difference"], marker=MARKERS[j % len(MARKERS)],
                       color=c, alpha=0.45, s=36)
        x = -e["reduction"] / k
        xci = [-v / k for v in reversed(e["reduction_ci95"])]
        pooled = e["top1_difference"]["pooled"]
        y, yci = 100 * pooled["difference"], [100 * v for v in pooled["ci95"]]
        ax.errorbar(x, y, xerr=[[x - xci[0]], [xci[1] - x]], yerr=[[y - yci[0]], [yci[1] - y]],
                    fmt="o", color=c, markersize=9, capsize=5, linewidth=2,
                    label=f"{NAMES.get(m, m)}: {-100 * (e['relative_reduction'] or 0):+.0f}% "
                          f"flips, {y:+.2f} pt top-1")
    aims = s.get("aims", {"reduction": 0.30, "top1_drop": 0.01})
    aim_x = -aims["reduction"] * ce["negative_flips_pooled"] / k
    ax.axvline(0, color="black", linewidth=0.8)
    ax.axhline(0, color="black", linewidth=0.8)
    xmin, xmax = ax.get_xlim()
    left = min(xmin, aim_x - 0.1 * (xmax - aim_x))  # the aim's region is always in view
    ax.axvspan(left, aim_x, ymin=0, ymax=1, color="tab:green", alpha=0.12)
    drop = 100 * aims["top1_drop"]
    ax.axhline(-drop, color="tab:green", linestyle="--", linewidth=1,
               label=f"aim: >= {100 * aims['reduction']:.0f}% fewer flips (shaded), top-1 above "
                     f"-{drop:g} pt (dashed)")
    ax.set_xlim(left=left)
    _legend_below(ax, seeds)
    ax.set_xlabel("change in negative flips vs plain CE of the same seed (mean per seed)")
    ax.set_ylabel("top-1 difference vs plain CE of the same seed (points)")
    ax.set_title("paired differences against plain CE, 95% intervals")
    ax.grid(alpha=0.3)

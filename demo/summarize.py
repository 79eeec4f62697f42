"""Pool the demo's negative flips over seeds, with paired bootstraps against plain CE.

    python demo/summarize.py OUT --seeds 1 2 3 [--plot OUT/summary.png]
    python demo/summarize.py OUT --seeds 1 2 3 --methods fd fd_int8 --json OUT/codecs.json

Reads OUT/old.zarr and OUT/new_{method}_s{seed}/predictions.zarr for each method (default ce,
fd, ldi; the first is the baseline). Prints per method the top-1 (mean over seeds) and the
negative flips (per seed and pooled); for the others the top-1 difference against the baseline
of the same seed (and its mean over seeds) and the pooled change in negative flips, each with a
95% interval from one paired bootstrap: the validation images are resampled jointly for all
models, so every difference is taken on the same resampled images. Writes OUT/summary.json
(or --json) and the plot of demo/summary_plot.py with --plot.
"""
import argparse
import json
from pathlib import Path

import numpy as np

from pct_pipeline.analyze.metrics import bootstrap_sums, percentile_ci, score
from pct_pipeline.analyze.run import load

METHODS = ("ce", "fd", "ldi")
AIMS = {"reduction": 0.30, "top1_drop": 0.01}  # digits: fd >= 30% fewer flips, <= 1 pt of top-1


def summarize(old, runs, seeds, resamples=2000, seed=0, methods=METHODS, aims=AIMS):
    """The summary dict. old: Predictions; runs: {method: [Predictions, one per seed]};
    methods: the order of the table, the first the baseline of every difference."""
    n, k, base = len(old.labels), len(seeds), methods[0]
    scores, _ = score([old.logits] + [p.logits for m in methods for p in runs[m]], old.labels)
    old_right = scores[0].rank == 0
    right = np.stack([s.rank == 0 for s in scores[1:]], axis=1)  # bool [N, methods * seeds]
    negative = old_right[:, None] & ~right
    # One joint resample for every column: all differences below are paired.
    boot = bootstrap_sums(np.concatenate([negative, right], axis=1), resamples, seed)
    nf, correct = negative.sum(axis=0), right.sum(axis=0)  # [methods * seeds]
    boot_nf, boot_correct = boot[:, :len(methods) * k], boot[:, len(methods) * k:]

    def of(x, i):  # method i's seeds
        return x[..., i * k:(i + 1) * k]

    summary = {"n": n, "old_top1": float(old_right.mean()), "seeds": list(seeds),
               "bootstrap": resamples, "baseline": base, "aims": dict(aims), "methods": {}}
    for i, m in enumerate(methods):
        entry = {"top1_mean": float(of(correct, i).mean() / n),
                 "top1_per_seed": (of(correct, i) / n).tolist(),
                 "top1_mean_ci95": percentile_ci(of(boot_correct, i).mean(axis=1) / n),
                 "negative_flips_per_seed": of(nf, i).tolist(),
                 "negative_flips_pooled": int(of(nf, i).sum()),
                 "negative_flips_pooled_ci95": percentile_ci(of(boot_nf, i).sum(axis=1))}
        if m != base:
            base_pooled = int(of(nf, 0).sum())
            reduction = base_pooled - entry["negative_flips_pooled"]
            diff = (of(correct, i) - of(correct, 0)) / n  # [seeds]
            diff_boot = (of(boot_correct, i) - of(boot_correct, 0)) / n  # [B, seeds]
            entry.update(
                reduction=reduction,
                reduction_ci95=percentile_ci(of(boot_nf, 0).sum(axis=1)
                                             - of(boot_nf, i).sum(axis=1)),
                relative_reduction=reduction / base_pooled if base_pooled else None,
                top1_difference={
                    "per_seed": [{"seed": s, "difference": float(d),
                                  "ci95": percentile_ci(diff_boot[:, j])}
                                 for j, (s, d) in enumerate(zip(seeds, diff))],
                    "pooled": {"difference": float(diff.mean()),
                               "ci95": percentile_ci(diff_boot.mean(axis=1))}})
        summary["methods"][m] = entry
    return summary


def _signed(x, digits=0, scale=1.0):
    return f"{scale * x:+.{digits}f}"


def _interval(ci, digits=0, scale=1.0):
    return f"[{_signed(ci[0], digits, scale)}, {_signed(ci[1], digits, scale)}]"


def format_summary(s):
    """The tables printed by the demo (top-1 in %, differences in points, flips in counts)."""
    methods, base = s["methods"], s.get("baseline", "ce")
    w = max(6, *map(len, methods))
    lines = [f"old model top-1 {100 * s['old_top1']:.2f}%  ({s['n']} validation images, "
             f"seeds {' '.join(map(str, s['seeds']))}, paired bootstrap B={s['bootstrap']})",
             f"{'method':<{w}} {'top-1 (mean)':>12} {f'top-1 vs {base} [95% CI]':>24} "
             f"{'NF per seed':>20} {'NF pooled':>9} {f'NF change vs {base}':>16} {'95% CI':>10}"]
    for m, e in methods.items():
        row = (f"{m:<{w}} {100 * e['top1_mean']:>11.2f}% ")
        if m == base:
            row += f"{'':>24} {str(e['negative_flips_per_seed']):>20} " \
                   f"{e['negative_flips_pooled']:>9}"
        else:
            d = e["top1_difference"]["pooled"]
            change = f"{-e['reduction']:+d} ({-100 * (e['relative_reduction'] or 0):+.0f}%)"
            row += (f"{_signed(d['difference'], 2, 100) + ' ' + _interval(d['ci95'], 2, 100):>24} "
                    f"{str(e['negative_flips_per_seed']):>20} {e['negative_flips_pooled']:>9} "
                    f"{change:>16} {_interval([-e['reduction_ci95'][1], -e['reduction_ci95'][0]]):>10}")
        lines.append(row)
    lines.append(f"top-1 difference vs {base} of the same seed, points [paired 95% CI]:")
    for m, e in methods.items():
        if m != base:
            cells = [f"s{d['seed']} {_signed(d['difference'], 2, 100)} "
                     f"{_interval(d['ci95'], 1, 100)}" for d in e["top1_difference"]["per_seed"]]
            lines.append(f"  {m:<{w - 2}} " + "  ".join(cells))
    if base == "ce" and {"fd", "ldi"} <= set(methods):
        lines.extend(_verdicts(methods, s.get("aims", AIMS)))
    return "\n".join(lines)


def _verdicts(methods, aims):
    """One line per method on the aims (README: the digits demo's, the Fashion-MNIST proof's)."""
    fd, ldi = methods["fd"], methods["ldi"]
    fd_cut = (fd["relative_reduction"] or 0) >= aims["reduction"] and fd["reduction_ci95"][0] > 0
    fd_top1 = fd["top1_difference"]["pooled"]["difference"] >= -aims["top1_drop"]
    return [f"fd : >= {100 * aims['reduction']:.0f}% fewer pooled flips with the interval "
            f"excluding 0: {'yes' if fd_cut else 'no'}; mean top-1 at most "
            f"{100 * aims['top1_drop']:g} point below ce: {'yes' if fd_top1 else 'no'}",
            f"ldi: fewer pooled flips than ce: {'yes' if ldi['reduction'] > 0 else 'no'}"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--methods", nargs="+", default=list(METHODS),
                        help="run names new_METHOD_sSEED to compare; the first is the baseline")
    parser.add_argument("--json", help="where to write the summary [default: OUT/summary.json]")
    parser.add_argument("--plot", help="also draw the summary figure (PNG) here")
    parser.add_argument("--aims", nargs=2, type=float, metavar=("REDUCTION", "TOP1_DROP"),
                        default=(AIMS["reduction"], AIMS["top1_drop"]),
                        help="fd's aims: the relative reduction of pooled flips and the largest "
                        "drop of mean top-1 (fractions) [default: the digits demo's]")
    args = parser.parse_args()
    out = Path(args.out)
    runs = {m: [load(out / f"new_{m}_s{s}" / "predictions.zarr") for s in args.seeds]
            for m in args.methods}
    summary = summarize(load(out / "old.zarr"), runs, args.seeds, args.bootstrap,
                        methods=tuple(args.methods),
                        aims={"reduction": args.aims[0], "top1_drop": args.aims[1]})
    print(format_summary(summary))
    json_out = Path(args.json or out / "summary.json")
    json_out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {json_out}")
    if args.plot:
        from summary_plot import plot  # demo/summary_plot.py, beside this file
        plot(summary, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()

"""Pool the demo's negative flips over seeds, with a paired bootstrap of the reduction.

    python demo/summarize.py OUT --seeds 1 2 3

Reads OUT/old.zarr and OUT/new_{ce,fd,ldi}_s{seed}/predictions.zarr, prints per-method top-1
(mean over seeds) and negative flips (per seed and pooled), and for fd and ldi the pooled
reduction against ce with a 95% interval from resampling the validation set jointly for all
models (paired). Writes OUT/summary.json.
"""
import argparse
import json
from pathlib import Path

import numpy as np

from pct_pipeline.analyze.metrics import bootstrap_sums, flips, percentile_ci, score
from pct_pipeline.analyze.run import load

METHODS = ("ce", "fd", "ldi")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args()
    out = Path(args.out)
    old = load(out / "old.zarr")
    runs = [(m, s) for m in METHODS for s in args.seeds]
    news = [load(out / f"new_{m}_s{s}" / "predictions.zarr") for m, s in runs]
    scores, _ = score([old.logits] + [p.logits for p in news], old.labels)
    old_right = scores[0].rank == 0
    negative = np.stack([flips(old_right, s.rank == 0)[0] for s in scores[1:]], axis=1)
    top1 = np.array([np.mean(s.rank == 0) for s in scores[1:]])
    sums = bootstrap_sums(negative, args.bootstrap, seed=0)  # [B, methods * seeds]
    k = len(args.seeds)
    pooled = {m: negative[:, i * k:(i + 1) * k].sum() for i, m in enumerate(METHODS)}
    boot = {m: sums[:, i * k:(i + 1) * k].sum(axis=1) for i, m in enumerate(METHODS)}
    summary = {"n": len(old.labels), "old_top1": float(old_right.mean()), "seeds": args.seeds,
               "methods": {}}
    print(f"old model top-1 {100 * old_right.mean():.2f}%  ({len(old.labels)} validation images)")
    print(f"{'method':<6} {'top-1 (mean)':>12} {'NF per seed':>16} {'NF pooled':>10} "
          f"{'NF change vs ce':>16} {'95% CI (paired)':>18}")
    for i, m in enumerate(METHODS):
        per_seed = negative[:, i * k:(i + 1) * k].sum(axis=0).tolist()
        entry = {"top1_mean": float(top1[i * k:(i + 1) * k].mean()),
                 "top1_per_seed": top1[i * k:(i + 1) * k].tolist(),
                 "negative_flips_per_seed": per_seed, "negative_flips_pooled": int(pooled[m])}
        change = ""
        if m != "ce":
            reduction = pooled["ce"] - pooled[m]
            ci = percentile_ci(boot["ce"] - boot[m])
            entry.update(reduction=int(reduction), reduction_ci95=ci,
                         relative_reduction=float(reduction / pooled["ce"]) if pooled["ce"] else None)
            change = f"{-reduction:+d} ({-100 * reduction / max(pooled['ce'], 1):+.0f}%)"
            change = f"{change:>16} [{-ci[1]:+.0f}, {-ci[0]:+.0f}]"
        summary["methods"][m] = entry
        print(f"{m:<6} {100 * entry['top1_mean']:>11.2f}% {str(per_seed):>16} {pooled[m]:>10} {change}")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {out / 'summary.json'}")


if __name__ == "__main__":
    main()

"""The negative flips of each method's seed-S run against the old model, epoch by epoch, from
the runs' metrics.jsonl (`pct train --old-predictions` counts them at every validation).

    python demo/flips_per_epoch.py OUT --seed 1 --methods ce fd ldi --plot OUT/flips_per_epoch.png
"""
import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402

from pct_pipeline.analyze.plot import save_png  # noqa: E402
from summary_plot import COLOURS, NAMES  # noqa: E402  (demo/summary_plot.py, beside this file)


def curves(out, seed, methods):
    """{method: [(epoch, negative flips, validation top-1)]} of the runs new_METHOD_sSEED."""
    found = {}
    for method in methods:
        lines = (Path(out) / f"new_{method}_s{seed}" / "metrics.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
        found[method] = [(r["epoch"], r["negative_flips"], r.get("val_top1", r.get("top1")))
                         for r in rows]
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--methods", nargs="+", default=["ce", "fd", "ldi"])
    parser.add_argument("--plot", required=True)
    args = parser.parse_args()
    found = curves(args.out, args.seed, args.methods)
    fig, (flips, top1) = plt.subplots(1, 2, figsize=(11, 4))
    for method, rows in found.items():
        epochs, nf, acc = zip(*rows)
        style = dict(color=COLOURS.get(method), marker="o", label=NAMES.get(method, method))
        flips.plot(epochs, nf, **style)
        top1.plot(epochs, [100 * a for a in acc], **style)
        print(f"{method}: negative flips per epoch {list(nf)}")
    flips.set(xlabel="epoch", ylabel="negative flips vs the old model", yscale="log",
              title=f"negative flips at every validation (seed {args.seed})")
    top1.set(xlabel="epoch", ylabel="validation top-1 (%)", title="validation top-1")
    for ax in (flips, top1):
        ax.grid(alpha=0.3)
        ax.legend()
    save_png(fig, args.plot)
    print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()

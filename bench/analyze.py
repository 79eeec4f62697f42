"""Benchmark `pct analyze`: the real run(cfg) path on real stores against merely loading them.

    .venv/bin/python bench/analyze.py [--samples 50000] [--classes 1000] [--models 3] [--json OUT]

Writes MODELS float16 prediction stores of SAMPLES x CLASSES logits (labels random; logits =
standard normal noise + 4 on the label for ~75% of the samples, so top-1 is about 75%) to a
temporary folder, then times (best of --repeats) opening the stores and reading their logits and
labels, and `run(cfg)` end to end (load, check, metrics, per-class tables, 1000-resample
bootstrap, four release gates, table, JSON).
The bar (SPEC §Performance) is run(cfg) < 2 s at 50,000 x 1,000 with three models.
"""
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import click
import numpy as np

from pct_pipeline.analyze.config import AnalyzeConfig
from pct_pipeline.analyze.run import load as load_predictions
from pct_pipeline.analyze.run import run
from pct_pipeline.store import Contents, create_store, shard_bounds, write_unit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


# What a release gate asks (the stores record no class names: a class is its label number).
GATES = ("top1>=old-1%", "class:7.nf<=50", "nfr<=20%", "nfr.ci95_high<=25%")


def write_model(path, labels, classes, seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((len(labels), classes), dtype=np.float32)
    logits[np.arange(len(labels)), labels] += 4.0 * (rng.random(len(labels)) < 0.75)
    layout = create_store(path, "predictions", labels, Contents(views=1, num_classes=classes),
                          {"split": "val", "eval_view": True})
    for shard in range(layout["num_shards"]):
        lo, hi = shard_bounds(layout, shard)
        write_unit(path, 0, shard, {"logits": logits[lo:hi].astype(np.float16),
                                    "crops": np.zeros((hi - lo, 5), np.int32)})
    return str(path)


def timed(fn, repeats):
    """(best wall s, median wall s, CPU s of the best run, every run's wall s)."""
    runs = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    best = min(runs)
    return best[0], float(np.median([w for w, _ in runs])), best[1], [w for w, _ in runs]


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--samples", default=50_000, show_default=True)
@click.option("--classes", default=1_000, show_default=True)
@click.option("--models", default=3, show_default=True)
@click.option("--bootstrap", default=1_000, show_default=True)
@click.option("--repeats", default=3, show_default=True)
@click.option("--json", default=None, help="Also write the result dict here.")
def main(**options):
    args = SimpleNamespace(**options)
    with tempfile.TemporaryDirectory() as tmp:
        labels = np.random.default_rng(0).integers(0, args.classes, args.samples)
        paths = [write_model(Path(tmp) / f"model{i}.zarr", labels, args.classes, seed=i + 1)
                 for i in range(args.models)]
        cfg = AnalyzeConfig(old=paths[0], new=tuple(paths[1:]), bootstrap=args.bootstrap,
                            json_out=str(Path(tmp) / "report.json"), overwrite=True,
                            gates=GATES if args.bootstrap else GATES[:2])
        load = timed(lambda: [load_predictions(p) for p in paths], args.repeats)
        with contextlib.redirect_stdout(io.StringIO()):  # the table itself is not the point
            end_to_end = timed(lambda: run(cfg), args.repeats)
    print(f"pct analyze, {args.models} float16 stores of {args.samples} x {args.classes} logits, "
          f"bootstrap {args.bootstrap}; best of {args.repeats} (median; CPU s of the best run):")
    print(f"  load only (open stores, read logits + labels): {load[0]:.3f} s "
          f"({load[1]:.3f}; cpu {load[2]:.3f})")
    print(f"  run(cfg) end to end:                           {end_to_end[0]:.3f} s "
          f"({end_to_end[1]:.3f}; cpu {end_to_end[2]:.3f})")
    print(f"  analysis beyond loading {end_to_end[0] - load[0]:.3f} s; run / load = "
          f"{end_to_end[0] / load[0]:.2f}; bar run < 2 s: "
          f"{'met' if end_to_end[0] < 2 else 'NOT met'} (load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores: other work slows every number)")
    result = {"name": "analyze", "setup": {k: v for k, v in vars(args).items() if k != "json"},
              "figures": {"load_s": common.figure(load[3]), "run_s": common.figure(end_to_end[3])},
              "checks": [common.check(f"analyze: run(cfg), {args.models} stores of {args.samples} x "
                                      f"{args.classes} (best of {args.repeats})", end_to_end[0],
                                      end_to_end[3], "<", 2.0, " s")]}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()

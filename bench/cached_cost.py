"""What cached-KD training costs beyond CE-only, part by part, in bench/train.py's tiny setting.

    .venv/bin/python bench/cached_cost.py [--repeats 30] [--calls 200] [--json OUT]

  loss      `pct_loss` forward + backward on [B, C] logits: focal distillation (KL, T = 4,
            old_correct, alpha 1, beta 5, as bench/train.py) against CE alone; each repeat is the
            mean of CALLS calls, the two sides alternating
  read      one view of the teacher cache read by the join as `pct train` reads it
            (`EpochTargets`: zarr, the NaN/inf check, the rows put in this process's order) with
            nothing else running, and `Store.read_rows` of the same rows alone
  prefetch  a cached epoch as `pct train` runs it (the next epoch's view read in the background)
            against the same epoch with that read done before the clock starts: the two run next
            to each other, forwards and backwards in turn; the ratio is the median of the
            per-repeat ratios (with the read / without it)

The step itself, phase by phase, is bench/train.py's account.
"""
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import click
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import train  # noqa: E402


def loss_costs(spec, calls, repeats):
    """{'ce': [us], 'fd': [us]}: mean microseconds of one forward + backward, per repeat."""
    from pct_pipeline.losses import pct_loss

    cfgs = train.variant_configs("data", "cache", ["t.pt"], spec, ".", None)
    generator = torch.Generator().manual_seed(0)
    new = torch.randn(spec.batch_size, spec.classes, generator=generator, requires_grad=True)
    old = torch.randn(spec.batch_size, spec.classes, generator=generator)
    labels = torch.randint(0, spec.classes, (spec.batch_size,), generator=generator)

    def timed(loss_cfg, teacher):
        start = time.perf_counter()
        for _ in range(calls):
            pct_loss(loss_cfg, new, labels, teacher)[0].backward()
        return 1e6 * (time.perf_counter() - start) / calls

    return interleaved({"ce": lambda: timed(cfgs["ce"].loss, None),
                        "fd": lambda: timed(cfgs["cached"].loss, old)}, repeats)


def read_costs(bench, repeats):
    """{'view_read_ms': [...], 'zarr_read_ms': [...]} of view 0 with nothing else running."""
    from pct_pipeline.train.join import EpochTargets

    store = bench.teachers["cached"].inner.cache
    order = np.random.default_rng(0).permutation(store.num_samples)
    out = {"view_read_ms": [], "zarr_read_ms": []}
    for _ in range(repeats):
        start = time.perf_counter()
        EpochTargets(store, 0, order, bench.spec.batch_size, bench.d, 0).wait()
        out["view_read_ms"].append(1e3 * (time.perf_counter() - start))
        start = time.perf_counter()
        store.read_rows("logits", 0, 0, store.num_samples)
        out["zarr_read_ms"].append(1e3 * (time.perf_counter() - start))
    return out


def prefetch_costs(bench, repeats):
    """{'with_read': [s], 'without_read': [s]}: cached epochs with the next view read in the
    background, and with every view read before the clock starts (its own teacher source)."""
    from pct_pipeline.train.prepare import make_teachers
    from pct_pipeline.train.run import OldModel, train_one_epoch

    inner = bench.teachers["cached"].inner
    quiet = train.TimedTeachers(make_teachers(bench.configs["cached"], inner.cache, bench.loader,
                                              bench.num_classes, bench.d, False), bench.sync)
    epochs = iter(range(100_000, 200_000))

    def without_read():
        epoch = next(epochs)
        quiet.begin_epoch(epoch, epoch + 1)  # this epoch's view; none read behind it
        bench.loader.set_epoch(epoch)
        bench.loader.set_view(quiet.view_of(epoch))
        cfg = replace(bench.configs["cached"], max_steps_per_epoch=bench.steps)
        state, net = bench._student(cfg)
        return bench._timed(lambda: train_one_epoch(cfg, state, net, bench.loader,
                                                    OldModel(quiet, None), epoch, bench.d))

    return interleaved({"with_read": lambda: bench.run("cached"), "without_read": without_read},
                       repeats)


def interleaved(sides, repeats):
    """{name: [result of each repeat]}: every side once per repeat, in the given order in even
    repeats and the other way round in odd ones, after one warm-up call of each."""
    for side in sides.values():
        side()
    out = {name: [] for name in sides}
    for r in range(repeats):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            out[name].append(sides[name]())
    return out


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--repeats", default=30, show_default=True)
@click.option("--calls", default=200, show_default=True)
@click.option("--json", default=None, help="Also write the result dict here.")
def main(**options):
    args = SimpleNamespace(**options)
    from pct_pipeline import allocator

    allocator.keep_freed_memory()  # as every pct command does
    spec = replace(train.SETTINGS["tiny"], ensemble=1)
    loss = loss_costs(spec, args.calls, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        beton, ckpts = train.prepare(tmp, spec)
        cache = train.make_cache(beton, ckpts[0], Path(tmp) / "cache.zarr", spec)
        bench = train.Bench(beton, cache, ckpts, spec, tmp)
        bench.run("loader")  # ffcv compiles its pipeline in its first epoch
        read = read_costs(bench, args.repeats)
        prefetch = prefetch_costs(bench, args.repeats)
    figures = {f"loss_{k}_us": common.figure(v) for k, v in loss.items()}
    figures.update({k: common.figure(v) for k, v in read.items()})
    figures.update({f"epoch_{k}_s": common.figure(v) for k, v in prefetch.items()})
    figures["with_read_over_without_per_repeat"] = common.figure(
        [a / b for a, b in zip(prefetch["with_read"], prefetch["without_read"])])
    extra = [f - c for f, c in zip(loss["fd"], loss["ce"])]
    print(f"tiny setting: {spec.batch_size} x {spec.classes} logits, {bench.steps} steps per "
          f"epoch, {torch.get_num_threads()} torch threads; {args.repeats} repeats")
    print(f"  loss forward + backward: CE {figures['loss_ce_us']['median']:.0f} us, with focal "
          f"distillation {figures['loss_fd_us']['median']:.0f} us (+{statistics.median(extra):.0f})")
    print(f"  view read alone: {figures['view_read_ms']['median']:.1f} ms as the join reads "
          f"it, {figures['zarr_read_ms']['median']:.1f} ms of it zarr")
    print(f"  cached epoch: {figures['epoch_with_read_s']['median']:.3f} s with the next view read "
          f"in the background, {figures['epoch_without_read_s']['median']:.3f} s without")
    ratio = figures["with_read_over_without_per_repeat"]
    print(f"  cached epoch time with the next view read / without it: {ratio['median']:.3f} "
          f"(per repeat {ratio['min']:.3f}-{ratio['max']:.3f})")
    result = {"name": "cached_cost", "setup": {**vars(args), "batch_size": spec.batch_size,
                                               "classes": spec.classes, "steps": bench.steps},
              "figures": figures, "checks": []}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()

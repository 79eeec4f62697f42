"""Training images/s with CE only, cached KD and online KD, measured in one run (§Performance).

Drives the project's own code: one `ViewLoader` (random order, the teacher cache's crops),
`train.prepare.make_teachers` and `train.run.train_one_epoch`, the student re-initialised (same
seed) for every run, SGD as in `pct train`. Variants, interleaved over repeats (`run_order`: the
two sides of each close ratio next to each other, forwards and backwards in turn, so that a
drift of the machine's speed cancels in each repeat's ratio):

  loader   iterate the loader only (the join's bar is relative to loader time)
  ce       cross-entropy only
  ce_again the same CE-only run a second time (CPU): CE-only / CE-only again shows how far a
           ratio of two equal runs strays on this machine, the noise floor of the ratios below
  cached   focal distillation (KL, old_correct, alpha 1, beta 5) from a teacher cache made by
           `pct precompute-teachers` with a teacher of the student's size
  online1  the same loss, the same teacher run inside the step
  onlineM  the same loss, an M-member ensemble of such teachers run inside the step

Each timed run is one epoch of STEPS batches (by default the whole data set, so the cache's
per-epoch read of a view is charged to as many images as it serves). As in `pct train`, a cached
run trains while the next cached run's view is read into its join buffer in the background, and
its clock stops only once that read is done: the read is charged to the run it overlaps, never
to another variant (the cached runs number their epochs on their own, so the next one's is
known). The time spent in `teachers.targets` (the join in the step; median call x calls, as a
call now and then waits for the GIL or a core held by the loader's threads) is reported against
the loader's time for the same batches (bar: <= 2%) and against the cached step time.

    python bench/train.py [--setting tiny|step] [--student ARCH] [--teacher ARCH] [--ensemble M]
                          [--images N] [--classes C] [--size PX] [--resolution PX]
                          [--batch-size B] [--steps S] [--repeats R] [--json OUT]

Each option defaults to the setting's value (SETTINGS below; tiny: 2,048 images, 24 repeats).
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


@dataclass(frozen=True)
class Spec:
    """Sizes of one benchmark run (CPU defaults; bench/gpu_train.py passes GPU ones)."""
    student: str = "cnn_wide"
    teacher: str = "cnn_wide"
    ensemble: int = 8
    images: int = 1024
    classes: int = 1000
    size: int = 64              # mean source image side, px
    resolution: int = 32
    batch_size: int = 64
    workers: int = 2
    steps: int | None = None    # None: a whole epoch
    repeats: int = 5
    views: int = 2
    device: str = "cpu"
    amp: bool = True            # bf16 autocast on CUDA only, as in pct train
    channels_last: bool = True  # on CUDA only
    null: bool = True           # also time CE-only a second time (the noise floor)
    online_bars: bool = True    # check cached / online against its bars (a step-dominated student)

    @property
    def variants(self):
        return ("loader", "ce") + (("ce_again",) if self.null else ()) + \
            ("cached", "online1", f"online{self.ensemble}")


def prepare(folder, spec):
    """(beton, [teacher checkpoints]) in `folder`: synthetic data, randomly initialised
    teachers of `spec.teacher` (distinct seeds), saved as `pct train` saves models."""
    from pct_pipeline import models

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _, beton = common.synthetic_beton(folder, spec.images, spec.size, spec.classes,
                                      max(spec.workers, 2))
    from pct_pipeline.dataset import BetonInfo

    classes = BetonInfo(beton).classes  # the teachers' labels are the data's classes
    paths = []
    for m in range(spec.ensemble):
        torch.manual_seed(1000 + m)
        model = models.build_model(spec.teacher, spec.classes)
        paths.append(folder / f"teacher{m}.pt")
        models.save_atomic({"model": model.state_dict(), "arch": spec.teacher,
                            "num_classes": spec.classes, "classes": classes}, paths[-1])
    return beton, paths


def make_cache(beton, ckpt, out, spec, python=sys.executable):
    """Run the real `pct precompute-teachers` for the first teacher; returns the store path."""
    command = [python, "-m", "pct_pipeline", "precompute-teachers", "--data", str(beton),
               "--teacher", f"{spec.teacher}={ckpt}", "--views", str(spec.views),
               "--out", str(out), "--resolution", str(spec.resolution),
               "--batch-size", str(spec.batch_size), "--workers", str(spec.workers),
               "--device", spec.device, "--overwrite"]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return out


class TimedTeachers:
    """Delegates to CachedTeachers / OnlineTeachers and adds up the seconds of each call.

    `autocast` runs online teachers under bf16 autocast (train_one_epoch calls `targets`
    outside its autocast block, so on CUDA they would otherwise run in fp32, unlike precompute).
    """

    def __init__(self, inner, sync, autocast=False):
        self.inner, self.sync, self.autocast = inner, sync, autocast
        self.reset()

    def view_of(self, epoch):
        return self.inner.view_of(epoch)

    def begin_epoch(self, epoch, last_epoch):
        start = time.perf_counter()
        self.inner.begin_epoch(epoch, last_epoch)
        self.wait_s += time.perf_counter() - start

    def finish_prefetch(self):
        """Wait for the next epoch's view being read (the cache's), count the wait and the
        read's own seconds (in its thread)."""
        start = time.perf_counter()
        for pending in getattr(self.inner, "pending", {}).values():
            self.fill_s += pending.wait().seconds
        self.wait_s += time.perf_counter() - start

    def targets(self, step, images, indices):
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            out = self.inner.targets(step, images, indices)
        self.sync()
        self.calls.append(time.perf_counter() - start)
        return out

    def reset(self):
        self.fill_s, self.wait_s, self.calls = 0.0, 0.0, []


class Bench:
    """One loader, one config and one teacher source per variant, built once; `run` times one
    epoch of a variant with a freshly initialised student."""

    def __init__(self, beton, cache, ckpts, spec, folder):
        from pct_pipeline import allocator, distributed
        from pct_pipeline.dataset import BetonInfo, Shuffle, ViewLoader
        from pct_pipeline.views import ViewSpec
        from pct_pipeline.train.prepare import make_teachers
        from pct_pipeline.train.teachers import open_cache

        self.spec, self.d = spec, distributed.setup(spec.device)
        self.cuda = self.d.device.type == "cuda"
        self.sync = torch.cuda.synchronize if self.cuda else (lambda: None)
        info = BetonInfo(beton)
        self.num_classes = info.num_classes
        store = open_cache(cache, info, self.num_classes, False)
        views = ViewSpec.from_attrs(store.attrs)  # the teacher cache's crops
        self.loader = ViewLoader(beton, views, spec.batch_size, spec.workers,
                                 shuffle=Shuffle(0, distributed=self.d.world > 1),
                                 device=self.d.device)
        self.steps = min(spec.steps or len(self.loader), len(self.loader))
        self.configs = variant_configs(beton, cache, ckpts, spec, folder, self.steps)
        self.teachers = {"loader": None, "ce": None, "ce_again": None}
        for name in spec.variants:
            if name in self.teachers:
                continue
            inner = make_teachers(self.configs[name], store if name == "cached" else None,
                                  self.loader, self.num_classes, self.d, False)
            online = name != "cached" and self.cuda and spec.amp
            self.teachers[name] = TimedTeachers(inner, self.sync, autocast=online)
        self.epochs = {v: 1000 * k for k, v in enumerate(spec.variants)}  # each its own
        allocator.freeze_built_objects()  # as pct train does before its first epoch
        self.accounts = {}  # variant -> the last run's step time account (seconds per phase)

    @property
    def images_per_run(self):
        return self.steps * self.spec.batch_size * self.d.world

    def run(self, variant, steps=None):
        """Wall seconds of one epoch of `steps` batches (a new epoch number, order and view)."""
        from pct_pipeline.train.run import OldModel, train_one_epoch

        epoch = self.epochs[variant]
        self.epochs[variant] += 1
        steps = steps or self.steps
        teachers = self.teachers[variant]
        self.loader.set_epoch(epoch)
        self.loader.set_view(teachers.view_of(epoch) if teachers else epoch)
        if variant == "loader":
            return self._timed(lambda: self._iterate(steps))
        cfg = replace(self.configs[variant], max_steps_per_epoch=steps)
        state, net = self._student(cfg)

        def epoch_of_training():
            if teachers:
                teachers.begin_epoch(epoch, epoch + 2)  # starts reading epoch + 1's view
            stats = train_one_epoch(cfg, state, net, self.loader, OldModel(teachers, None),
                                    epoch, self.d)
            if teachers:
                teachers.finish_prefetch()
            seen = round(stats["images_per_s"] * stats["train_time_s"])
            if seen != steps * self.spec.batch_size * self.d.world:
                raise RuntimeError(f"{variant}: trained on {seen} images, expected "
                                   f"{steps} steps of {self.spec.batch_size}")
            self.accounts[variant] = stats["step_time_s"] | {"wall": stats["train_time_s"]}
        return self._timed(epoch_of_training)

    def _iterate(self, steps):
        for step, _ in enumerate(self.loader):  # the same stop rule as train_one_epoch
            if step >= steps:
                break

    def _student(self, cfg):
        """(TrainState, net) as `pct train` builds them: same seed every time."""
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        from pct_pipeline import models
        from pct_pipeline.train import recipe
        from pct_pipeline.train.state import TrainState

        torch.manual_seed(cfg.seed)
        model = models.build_model(cfg.arch, self.num_classes).to(self.d.device)
        if self.cuda and cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = recipe.make_optimizer(cfg, model, recipe.base_lr(cfg, self.d.world))
        net = model
        if dist.is_initialized():  # under torchrun: DDP even with one process, as in multi-GPU
            net = DistributedDataParallel(model, device_ids=[self.d.device] if self.cuda else None)
        return TrainState(model, optimizer, recipe.Precision(cfg, self.d.device)), net

    def _timed(self, work):
        self.sync()
        start = time.perf_counter()
        work()
        self.sync()
        return time.perf_counter() - start


def variant_configs(beton, cache, ckpts, spec, folder, steps):
    """{variant: TrainConfig}: the same run, differing only in the teacher source and loss."""
    from pct_pipeline.losses import LossConfig
    from pct_pipeline.train.config import TrainConfig

    base = TrainConfig(data=str(beton), val=str(beton), out=str(folder), arch=spec.student,
                       batch_size=spec.batch_size, workers=spec.workers, auto_scale=True,
                       amp=spec.amp, channels_last=spec.channels_last, print_freq=0,
                       device=spec.device, view_options=(("resolution", spec.resolution),),
                       max_steps_per_epoch=steps)
    fd = LossConfig(mode="kl", kd_alpha=0.3, kd_temperature=4.0, kd_filter="old_correct",
                    filter_base=1.0, filter_scale=5.0)
    teachers = tuple((spec.teacher, str(c)) for c in ckpts)
    return {"ce": base, "ce_again": base,
            "cached": replace(base, teacher_cache=str(cache), loss=fd),
            "online1": replace(base, online_teachers=teachers[:1], loss=fd),
            f"online{spec.ensemble}": replace(base, online_teachers=teachers, loss=fd)}


def run_order(spec, repeat):
    """The variants in the order repeat `repeat` runs them. The two sides of each close ratio
    run next to each other: CE-only between its second run and the cached run, the cached run
    between CE-only and the equal-size online teacher. Even repeats run forwards, odd ones
    backwards, so each side of a pair runs first as often as second, and CE-only again / CE-only
    is measured with the same placement as cached / CE-only."""
    order = ["loader", f"online{spec.ensemble}"] + (["ce_again"] if spec.null else []) + \
        ["ce", "cached", "online1"]
    order = list(dict.fromkeys(order))  # --ensemble 1: one online variant
    return order if repeat % 2 == 0 else order[::-1]


def measure(bench):
    """Warm up, then time every variant once per repeat in the order of `run_order`.

    Returns {'first_epoch_s', 'seconds': {variant: [s]}, 'join_s': [s], 'join_wall_s': [s],
    'fill_s': [s], 'wait_s': [s], 'accounts'}. join_s is the median `targets` call times the
    calls of the run: a call sometimes waits several ms for the GIL or a core held by the
    loader's threads (or other processes), a wait the step would meet elsewhere without the
    join; join_wall_s is the sum. fill_s: seconds of the cached run's background read of the
    next view (in its thread); wait_s: how long the run waited for reads of views.
    """
    variants = bench.spec.variants
    first = bench.run("loader")  # ffcv compiles its pipeline during its first epoch
    for variant in variants[1:]:
        bench.run(variant, steps=max(1, min(2, bench.steps // 2)))  # allocator, kernels
    seconds = {v: [] for v in variants}
    accounts = {v: [] for v in variants[1:]}
    join, wall, fill, wait = [], [], [], []
    cached = bench.teachers["cached"]
    for r in range(bench.spec.repeats):
        for variant in run_order(bench.spec, r):
            cached.reset()
            seconds[variant].append(bench.run(variant))
            if variant in accounts:
                accounts[variant].append(bench.accounts[variant])
            if variant == "cached":
                join.append(statistics.median(cached.calls) * len(cached.calls))
                wall.append(sum(cached.calls))
                fill.append(cached.fill_s)
                wait.append(cached.wait_s)
    return {"first_epoch_s": first, "seconds": seconds, "join_s": join, "join_wall_s": wall,
            "fill_s": fill, "wait_s": wait, "accounts": accounts}


def report(bench, measured, extra_setup=None):
    """Print the table; return {'name', 'setup', 'figures', 'ratios', 'checks'}."""
    spec, images = bench.spec, bench.images_per_run
    secs = measured["seconds"]
    rates = {v: [images / s for s in secs[v]] for v in spec.variants}
    ens = f"online{spec.ensemble}"
    join_of_step = [j / s for j, s in zip(measured["join_s"], secs["cached"])]
    account, unexplained = step_account(measured["accounts"], bench.steps)
    figures = {f"{v}_images_per_s": common.figure(r) for v, r in rates.items()}
    figures["join_ms_per_batch"] = common.figure(
        [1e3 * j / bench.steps for j in measured["join_s"]])
    figures["cache_view_read_ms_per_epoch"] = common.figure([1e3 * f for f in measured["fill_s"]])
    figures["cache_view_wait_ms_per_epoch"] = common.figure([1e3 * w for w in measured["wait_s"]])
    if spec.null:
        figures["ce_again_over_ce_per_repeat"] = common.figure(
            [a / b for a, b in zip(rates["ce_again"], rates["ce"])])
    # The online bars are set for a step-dominated student (the step setting, the GPU check);
    # a tiny student's ratios are reported beside them.
    online = [common.ratio_check("train: cached KD / online KD, equal-size teacher",
                                 rates["cached"], rates["online1"], ">=", 1.2),
              common.ratio_check(f"train: cached KD / online KD, {spec.ensemble}-member "
                                 f"ensemble", rates["cached"], rates[ens], ">=", 3.0)]
    checks = [
        common.ratio_check("train: cached KD / CE-only", rates["cached"], rates["ce"], ">=", 0.97),
        *(online[:1 + (spec.ensemble == 8)] if spec.online_bars else []),  # 3x: for 8 members
        common.check("train: join time in the step / cached step time",
                     sum(measured["join_s"]) / sum(secs["cached"]), join_of_step, "<=", 0.02),
        common.check("train: cached - CE step time not accounted for by the phases / cached "
                     "step", statistics.median(unexplained), unexplained, "<=", 0.02)]
    ratios = {
        "cached / online1": online[0]["value"],
        f"cached / {ens}": online[1]["value"],
        "join time / loader time": sum(measured["join_s"]) / sum(secs["loader"]),
        "join wall time (with GIL/core waits) / loader time":
            sum(measured["join_wall_s"]) / sum(secs["loader"]),
        "cache view read / loader time": sum(measured["fill_s"]) / sum(secs["loader"]),
        "loader time / CE-only time": sum(secs["loader"]) / sum(secs["ce"])}
    if spec.null:
        ratios["CE-only again / CE-only (two equal runs: the noise floor)"] = \
            figures["ce_again_over_ce_per_repeat"]["median"]
    setup = {**{k: v for k, v in vars(spec).items()}, "steps": bench.steps,
             "images_per_run": images, "first_epoch_s": measured["first_epoch_s"],
             "device": str(bench.d.device), "world": bench.d.world,
             "torch_threads": torch.get_num_threads(), **(extra_setup or {})}
    print_report(setup, figures, ratios, checks, account)
    return {"name": "train", "setup": setup, "figures": figures, "ratios": ratios,
            "checks": checks, "step_account_ms": account}


def step_account(accounts, steps):
    """({variant: {phase: median ms per step}}, per-repeat |unexplained| / cached step).

    Each run's phases add up to its loop time (`wall`; the remainder is `other`), so the
    difference between the cached and the CE-only step is explained by the phases'
    differences up to the difference in `other`, reported per repeat as a share of the
    cached step."""
    runs = {}
    for variant, accounts_of in accounts.items():
        phases = {k: [1e3 * a[k] / steps for a in accounts_of] for k in accounts_of[0]}
        phases["other"] = [w - sum(phases[k][i] for k in phases if k != "wall")
                           for i, w in enumerate(phases["wall"])]
        runs[variant] = phases
    table = {v: {k: statistics.median(x) for k, x in p.items()} for v, p in runs.items()}
    ce, cached = runs["ce"], runs["cached"]
    unexplained = [abs(b - a) / w for a, b, w in zip(ce["other"], cached["other"], cached["wall"])]
    return table, unexplained


def print_report(setup, figures, ratios, checks, account):
    print(f"train: student {setup['student']}, teacher {setup['teacher']} (ensemble "
          f"{setup['ensemble']}), {setup['resolution']} px, batch {setup['batch_size']}, "
          f"{setup['steps']} steps per run, {setup['workers']} workers, {setup['device']}; "
          f"first loader epoch (JIT, not counted) {setup['first_epoch_s']:.2f} s")
    common.print_figures({k: v for k, v in figures.items() if k.endswith("images_per_s")})
    common.print_figures({k: v for k, v in figures.items() if k.endswith("_ms_per_batch")
                          or k.endswith("_per_epoch")}, unit="ms")
    for name, value in ratios.items():
        print(f"  {name}: {value:.3f}")
    if "ce_again_over_ce_per_repeat" in figures:
        null = figures["ce_again_over_ce_per_repeat"]
        print(f"  CE-only again / CE-only per repeat: {null['min']:.3f}-{null['max']:.3f}")
    phases = list(account["ce"])
    print(f"  ms per step (median): {'':>10}" + "".join(f"{p:>10}" for p in phases))
    for variant, row in account.items():
        print(f"  {variant:>31}" + "".join(f"{row[p]:>10.2f}" for p in phases))
    print(f"  {'cached - ce':>31}" + "".join(f"{account['cached'][p] - account['ce'][p]:>+10.2f}"
                                               for p in phases))
    common.print_checks(checks)


# tiny: the loader and the join dominate; step: a real student's step dominates. One run of an
# epoch varies by 5-10% on a 2-core machine; even repeats run each pair in both orders equally.
SETTINGS = {
    "tiny": Spec(images=2048, repeats=24, online_bars=False),
    "step": Spec(student="resnet18", teacher="resnet18", classes=100, size=80, resolution=64,
                 images=512, batch_size=32, steps=12, repeats=14),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="tiny")
    known, _ = parser.parse_known_args(argv)
    defaults = SETTINGS[known.setting]
    for name in ("student", "teacher"):
        parser.add_argument(f"--{name}", default=getattr(defaults, name))
    for name in ("ensemble", "images", "classes", "size", "resolution", "batch_size", "workers",
                 "steps", "repeats", "views"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    parser.add_argument("--json", help="also write the result dict here")
    args = vars(parser.parse_args(argv))
    out = args.pop("json")
    setting = args.pop("setting")
    spec = replace(defaults, **args)
    with tempfile.TemporaryDirectory() as tmp:
        beton, ckpts = prepare(tmp, spec)
        cache = make_cache(beton, ckpts[0], Path(tmp) / "cache.zarr", spec)
        bench = Bench(beton, cache, ckpts, spec, tmp)
        result = report(bench, measure(bench), {"setting": setting})
    if out:
        Path(out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()

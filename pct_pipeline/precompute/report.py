"""What a precompute run tells its user besides the progress bar: notes on data smaller than
its settings (a batch larger than the data is lowered; a resolution above the largest image
side enlarges every image), how much of a resumed store was already written, and the
teachers' top-1 on the data it cached (also stored as the attribute `teacher_top1`)."""
from dataclasses import replace

import numpy as np

from .. import distributed, store
from ..errors import PctError
from ..progress import note, note_upsampling


def fit_to_data(cfg, info, dist):
    """`cfg` with --batch-size lowered to the data's sample count where it is larger (each
    process reads its own shards, at most all of them; a larger batch only holds more
    memory), with a note; and a note when the views' side is above the data's largest image
    side. `info`: the data's dataset.BetonInfo."""
    n = info.num_samples
    if n and cfg.batch_size > n:
        note(f"--batch-size {cfg.batch_size} is more than the {n} samples of {info.path}; "
             f"using --batch-size {n}", dist)
        cfg = replace(cfg, batch_size=n)
    note_upsampling("--resolution", cfg.spec.resolution, info, dist)
    return cfg


def report_start(job, dist):
    """(units done, units) of the store when the computing starts, read on process 0 (None
    elsewhere), which says how many a resumed store already had."""
    if not dist.is_main:
        return None
    done = store.done_markers(job.out)
    written, units = int(done.sum()), int(done.size)
    if 0 < written < units:
        print(f"resuming {job.out}: {written} of {units} units (view, shard) were already "
              f"written; computing the other {units - written}", flush=True)
    return written, units


def teacher_top1(job, done, dist):
    """The teachers' top-1 per view on the data, [V] of {top1, images} (None for a view whose
    targets do not decode, sample:K@T), summed over the processes and stored as the attribute
    `teacher_top1` by process 0. Called once every unit is written: the units this command
    wrote were counted as they were written (job.top1); those an earlier command wrote
    (`done`, the markers at the start) are read back, each process its own shards'. A unit
    that cannot be read back (altered since it was written) leaves the attribute unwritten,
    with a note; readers of the store refuse that unit anyway. Returns None then."""
    problem = None
    try:
        count_earlier_units(job, done & (np.arange(done.shape[1]) % dist.world == dist.rank))
    except PctError as exc:
        problem = str(exc)
    problem = distributed.first_problem(problem)
    if problem is not None:
        note(f"the teachers' top-1 is not recorded: {problem}", dist)
        return None
    views = len(job.top1.hits)
    totals = distributed.all_sum([*job.top1.hits, *job.top1.images], dist.device)
    per_view = [None if n == 0 else {"top1": h / n, "images": int(n)}
                for h, n in zip(totals[:views], totals[views:])]
    if dist.is_main and any(per_view):
        store.set_attributes(job.out, teacher_top1=per_view)
    return per_view


def count_earlier_units(job, units):
    """Read back the units marked in `units` (bool [V, S]) and count their hits in job.top1."""
    if not units.any():
        return
    cache = store.open_store(job.out)
    codec = job.cfg.codec
    names = ["logits"] if codec.name == "float16" else list(codec.arrays(cache.num_classes))
    for view, shard in zip(*np.nonzero(units)):
        lo, hi = store.shard_bounds(job.attrs, int(shard))
        values = {name: cache.read_rows(name, int(view), lo, hi) for name in names}
        job.top1.count(int(view), codec, values, job.labels[lo:hi], cache.num_classes)


def top1_line(per_view, eval_view):
    """'teacher top-1 ...' of `teacher_top1`'s list, or None without one."""
    counted = [(v, c) for v, c in enumerate(per_view) if c is not None]
    if not counted:
        return None
    who = "teacher top-1 (argmax of the stored logits)"
    if eval_view:
        return f"{who} on the eval view: {counted[0][1]['top1']:.4f} " \
               f"({counted[0][1]['images']} images)"
    views = ", ".join(f"view {v} {c['top1']:.4f}" for v, c in counted)
    return f"{who}: {views} ({counted[0][1]['images']} images each)"

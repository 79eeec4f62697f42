"""§Scale at ImageNet-1k shape: bytes read and memory of the cached-teacher join and of
validation, with W ranks on this machine (one node, gloo, no model).

    python bench/scale.py [--samples 1281167] [--classes 1000] [--val-samples 50000]
                          [--ranks 8] [--json OUT]

Builds (once, under bench/out/scale-N-C/) a synthetic teacher cache of N x C float16 logits,
one view, in our store format. Then `torchrun --nproc-per-node W` runs this script's worker
on every rank, which goes through one epoch of cached training as `pct train` does, minus the
model: the real join (`EpochTargets`) prefetches epoch 0's view, then, while epoch 0's
batches are taken from it, epoch 1's view is prefetched (the next epoch's buffer, as in
training); then the real validation code runs on synthetic float32 logits of a
val-samples x C validation set: top-1/top-5 counts summed over the ranks, and the predictions
store written by every rank for its own rows.

Measured: bytes each rank read from the store (counted at the store reader: what came back
from storage) and through read calls (/proc/PID/io rchar), the wall time to prefetch a view,
the join's time per batch, each rank's peak RSS, validation's extra memory per rank, and the
node's peak memory: the sum of the ranks' proportional set sizes (shared pages counted once),
sampled every 50 ms by this script's parent process.

Formulas (one view of N x C float16 is V = 2NC bytes; W ranks, L per node):
    read from the store per node per epoch = V; per rank V / L;
    held by the join per node <= 2 (L / W) V + V (two epochs' rows of the node's ranks, one
    view in flight); validation per rank = (N_val / W + one chunk) x C x 4 bytes.
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import common  # noqa: E402

ROOT = BENCH.parent
BATCH = 256


def build_cache(path, samples, classes, seed=0):
    """A complete one-view teacher cache of N x C float16 logits (realistic magnitudes: a
    standard normal per class plus a peak of 8 at the label), written shard by shard."""
    from pct_pipeline import store

    if path.is_dir():
        try:
            opened = store.open_store(path)
            if (opened.num_samples, opened.num_classes) == (samples, classes):
                return opened
        except Exception:  # noqa: BLE001  (an unfinished build: start again)
            pass
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, samples)
    layout = store.create_store(path, "teacher-cache", labels,
                                store.Contents(views=1, num_classes=classes),
                                {"resolution": 224, "view_seed": 0, "scale": [0.08, 1],
                                 "ratio": [0.75, 4 / 3], "flip": 0.5, "eval_view": False})
    for shard in range(layout["num_shards"]):
        lo, hi = store.shard_bounds(layout, shard)
        logits = rng.standard_normal((hi - lo, classes), dtype=np.float32)
        logits[np.arange(hi - lo), labels[lo:hi]] += 8
        store.write_unit(path, 0, shard, {"logits": logits.astype(np.float16),
                                          "crops": np.zeros((hi - lo, 5), np.int32)})
    return store.open_store(path)


def mib(n):
    return f"{n / 2**20:,.1f} MiB"


def folder_bytes(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# --- one rank -------------------------------------------------------------------------------

def rchar():
    return int(Path("/proc/self/io").read_text().split("rchar:")[1].split()[0])


def peak_rss_bytes():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes():
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def sampler_order(samples, world, rank, epoch, seed=0):
    """DistributedSampler's order (shuffle, pad to a multiple of W, every W-th from rank)."""
    order = np.random.default_rng([seed, epoch]).permutation(samples)
    padded = np.concatenate([order, order[:(-samples) % world]])
    return padded[rank::world]


def worker(args):
    import torch

    from pct_pipeline import distributed, store
    from pct_pipeline.predictions import own_rows, write_predictions
    from pct_pipeline.train.watch import validate
    from pct_pipeline.train.join import EpochTargets

    torch.set_num_threads(1)
    d = distributed.setup("cpu")
    cache = store.open_store(args.cache)
    read0, rchar0 = store.BYTES_READ.total, rchar()
    order0 = sampler_order(cache.num_samples, d.world, d.rank, 0)
    start = time.perf_counter()
    first = EpochTargets(cache, 0, order0, BATCH, d, epoch=0).wait()
    prefetch_s = time.perf_counter() - start
    second = EpochTargets(cache, 0, sampler_order(cache.num_samples, d.world, d.rank, 1), BATCH,
                          d, epoch=1)  # the next epoch's view, read while epoch 0 trains
    steps = len(order0) // BATCH
    start = time.perf_counter()
    for step in range(steps):
        first.batch(step, torch.from_numpy(order0[step * BATCH:(step + 1) * BATCH]), "cpu")
    join_ms = 1000 * (time.perf_counter() - start) / max(steps, 1)
    second.wait()
    del first, second
    read_bytes, read_calls = store.BYTES_READ.total - read0, rchar() - rchar0
    distributed.barrier()
    before = current_rss_bytes()
    val = validation(args, d, own_rows, validate, write_predictions)
    result = {"rank": d.rank, "node": d.node, "prefetch_s": prefetch_s, "join_ms_per_batch": join_ms,
              "store_bytes_read_2_epochs": read_bytes, "rchar_2_epochs": read_calls,
              "peak_rss": peak_rss_bytes(), "validation_extra_rss": val.pop("peak") - before, **val}
    results = [None] * d.world
    torch.distributed.all_gather_object(results, result)
    if d.is_main:
        Path(args.worker_out).write_text(json.dumps(results))
    distributed.cleanup()


def validation(args, d, own_rows, validate, write_predictions):
    """Validation counts and the predictions store of synthetic float32 logits, as training's
    last epoch runs them; returns accuracy and the peak RSS seen while holding the rows."""
    import torch
    from types import SimpleNamespace

    n, c = args.val_samples, args.classes
    labels = np.random.default_rng(1).integers(0, c, n)
    info = SimpleNamespace(num_samples=n, labels=labels, heights=np.full(n, 256),
                           widths=np.full(n, 256), classes=None, path="synthetic",
                           identity=lambda: {"num_samples": n, "classes": None})
    rows = own_rows(n, c, d)
    peak = [0]

    def batches():
        for lo in range(0, len(rows), BATCH):
            part = rows[lo:lo + BATCH]
            logits = torch.from_numpy(np.random.default_rng(part[0]).standard_normal(
                (len(part), c), dtype=np.float32))
            logits[torch.arange(len(part)), torch.from_numpy(labels[part])] += 2
            peak[0] = max(peak[0], current_rss_bytes())
            yield logits, torch.from_numpy(labels[part]), torch.from_numpy(part)

    counts = validate(batches(), d)
    from pct_pipeline.predictions import Output
    from pct_pipeline.views import ViewSpec

    output = Output(args.predictions, info, c, ViewSpec.centre(224), {})
    written = write_predictions(output, batches(), rows, d, "synthetic")
    return {"val_top1": counts["val_top1"], "written_top1": written["top1"], "val_rows": len(rows),
            "peak": max(peak[0], current_rss_bytes())}


# --- the parent: build, launch, watch memory --------------------------------------------------

def descendants(pid):
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def watch_memory(pid, stop, samples):
    """Append the node's memory (sum of PSS of `pid`'s descendants) every 50 ms."""
    import psutil

    while not stop.is_set():
        total = 0
        for proc in descendants(pid):
            try:
                total += proc.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        samples.append(total)
        time.sleep(0.05)


def launch(args, cache_path, out_dir):
    worker_out = out_dir / "ranks.json"
    predictions = out_dir / "predictions.zarr"
    command = [str(Path(sys.executable).parent / "torchrun"), "--nproc-per-node", str(args.ranks),
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()), str(BENCH / "scale.py"),
               "--worker", "--cache", str(cache_path), "--classes", str(args.classes),
               "--val-samples", str(args.val_samples), "--predictions", str(predictions),
               "--worker-out", str(worker_out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(command, env=env)
    stop, samples = threading.Event(), []
    watcher = threading.Thread(target=watch_memory, args=(proc.pid, stop, samples), daemon=True)
    watcher.start()
    start = time.perf_counter()
    code = proc.wait()
    wall = time.perf_counter() - start
    stop.set()
    watcher.join()
    if code != 0:
        raise SystemExit(f"torchrun exited with status {code}")
    return json.loads(worker_out.read_text()), max(samples, default=0), wall


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1_281_167)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--val-samples", type=int, default=50_000)
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--workdir", default=str(BENCH / "out"))
    parser.add_argument("--json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--predictions", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    report(args, *measure(args))


def measure(args):
    import shutil

    out_dir = Path(args.workdir) / f"scale-{args.samples}x{args.classes}"
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    cache = build_cache(out_dir / "cache.zarr", args.samples, args.classes)
    build_s = time.perf_counter() - start
    shutil.rmtree(out_dir / "predictions.zarr", ignore_errors=True)
    ranks, node_peak, wall = launch(args, out_dir / "cache.zarr", out_dir)
    view = {"raw_bytes": args.samples * args.classes * 2,
            "stored_bytes": folder_bytes(out_dir / "cache.zarr" / "logits")}
    return cache, ranks, node_peak, wall, view, build_s


def report(args, cache, ranks, node_peak, wall, view, build_s):
    read_node = sum(r["store_bytes_read_2_epochs"] for r in ranks) / 2
    rchar_node = sum(r["rchar_2_epochs"] for r in ranks) / 2
    prefetch = common.figure([r["prefetch_s"] for r in ranks])
    gib = 2 ** 30
    checks = [
        common.check("store bytes read per node per epoch / one view (stored)",
                     read_node / view["stored_bytes"], [], "<=", 1.1),
        common.check("node peak memory / (2.5 x one view + ranks x 1 GiB)",
                     node_peak / (2.5 * view["raw_bytes"] + args.ranks * gib), [], "<=", 1.0),
        common.check("view prefetch seconds (slowest rank)", prefetch["max"], [], "<", 53.0, " s"),
    ]
    result = {"name": "scale", "samples": args.samples, "classes": args.classes,
              "val_samples": args.val_samples, "ranks": args.ranks, "view": view,
              "build_cache_s": build_s, "wall_s": wall,
              "figures": {"prefetch_s": prefetch,
                          "join_ms_per_batch": common.figure([r["join_ms_per_batch"] for r in ranks]),
                          "peak_rss_per_rank_gib": common.figure([r["peak_rss"] / gib for r in ranks]),
                          "validation_extra_rss_per_rank_mib": common.figure(
                              [r["validation_extra_rss"] / 2**20 for r in ranks])},
              "per_node": {"store_bytes_read_per_epoch": read_node,
                           "rchar_per_epoch": rchar_node, "peak_memory_bytes": node_peak},
              "ranks_detail": ranks, "checks": checks, "machine": common.machine()}
    print(f"one view: {mib(view['raw_bytes'])} raw, {mib(view['stored_bytes'])} stored; "
          f"{args.ranks} ranks on one node")
    print(f"  store bytes read per node per epoch: {mib(read_node)} "
          f"({read_node / view['stored_bytes']:.2f} views); through read calls {mib(rchar_node)}")
    print(f"  view prefetch: {prefetch['median']:.1f} s median, {prefetch['max']:.1f} s slowest rank")
    print(f"  node peak memory (sum of PSS): {mib(node_peak)}; peak RSS per rank "
          f"{result['figures']['peak_rss_per_rank_gib']['max']:.2f} GiB")
    print(f"  validation: {ranks[0]['val_rows']} rows on rank 0, extra memory per rank "
          f"{result['figures']['validation_extra_rss_per_rank_mib']['max']:.0f} MiB at most")
    common.print_checks(checks)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()

"""The join's view prefetch from an S3 server against local disk: the same teacher cache, read
by the real `EpochTargets` (one process, the sampler's random order), once from a local folder
and once from an S3-compatible server on this machine (moto's, in its own process).

    python bench/s3.py [--samples 20000] [--classes 1000] [--repeats 5] [--json OUT]

Builds a synthetic one-view cache of N x C float16 logits (bench/scale.py's build_cache) in a
temporary folder and uploads it to a bucket of the server. Each repeat prefetches the view
from both locations back to back (the order alternating between repeats) and records the wall
time and the bytes read (store.BYTES_READ, counted at the store reader: they must be equal).
Local reads come from the page cache after the first; the server keeps objects in memory and
answers over loopback HTTP, so the ratio is what the S3 protocol itself costs (requests,
signing, HTTP), not a network's bandwidth or latency.
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import click


BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import common  # noqa: E402
from scale import build_cache, sampler_order  # noqa: E402

BUCKET = "pct-bench"
BATCH = 256


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port):
    """moto's S3 server in its own process, once it answers; sets this process's AWS_* env."""
    server = subprocess.Popen([sys.executable, "-c", "from moto.server import main; main()",
                               "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_EC2_METADATA_DISABLED="true")
    import fsspec

    deadline = time.monotonic() + 60
    while True:
        try:
            fsspec.filesystem("s3", skip_instance_cache=True).mkdir(BUCKET)
            return server
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise
            time.sleep(0.2)


def prefetch(location, order):
    """(seconds, bytes read) of the join prefetching view 0 of the cache at `location`."""
    import torch

    from pct_pipeline import distributed, store
    from pct_pipeline.train.join import EpochTargets

    cache = store.open_store(location)
    node = distributed.Dist(0, 1, 0, torch.device("cpu"))
    before, start = store.BYTES_READ.total, time.perf_counter()
    EpochTargets(cache, 0, order, BATCH, node, epoch=0).wait()
    return time.perf_counter() - start, store.BYTES_READ.total - before


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--samples", default=20_000, show_default=True)
@click.option("--classes", default=1_000, show_default=True)
@click.option("--repeats", default=5, show_default=True)
@click.option("--json", default=None, help="Also write the result dict here.")
def main(**options):
    args = SimpleNamespace(**options)
    server = start_server(free_port())
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "cache.zarr"
            build_cache(local, args.samples, args.classes)
            import fsspec

            url = f"s3://{BUCKET}/cache.zarr"
            fsspec.filesystem("s3").put(str(local), url.removeprefix("s3://"), recursive=True)
            order = sampler_order(args.samples, 1, 0, 0)
            times = {"local": [], "s3": []}
            read = {"local": set(), "s3": set()}
            prefetch(local, order)  # warm up: page cache, imports
            for r in range(args.repeats):
                for name in (("local", "s3") if r % 2 == 0 else ("s3", "local")):
                    seconds, nbytes = prefetch(local if name == "local" else url, order)
                    times[name].append(seconds)
                    read[name].add(nbytes)
    finally:
        server.terminate()
        server.wait()
    view_bytes = args.samples * args.classes * 2
    per_repeat = [a / b for a, b in zip(times["s3"], times["local"])]
    ratio = statistics.median(times["s3"]) / statistics.median(times["local"])
    same = read["s3"] == read["local"] and len(read["s3"]) == 1
    print(f"view prefetch of {args.samples} x {args.classes} float16 ({view_bytes / 2**20:.1f} MiB "
          f"uncompressed), {args.repeats} repeats:")
    for name, t in times.items():
        fig = common.figure(t)
        print(f"  {name:>6}: {fig['median']:.3f} s median (range {fig['min']:.3f}-{fig['max']:.3f})")
    print(f"  S3 / local: {ratio:.2f}x (per repeat {min(per_repeat):.2f}-"
          f"{max(per_repeat):.2f}); bytes read per view: local {sorted(read['local'])}, "
          f"S3 {sorted(read['s3'])}: {'equal' if same else 'DIFFERENT'} (load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    result = {"name": "s3", "setup": {k: v for k, v in vars(args).items() if k != "json"},
              "figures": {"local_s": common.figure(times["local"]),
                          "s3_s": common.figure(times["s3"]),
                          "s3_over_local": common.figure(per_repeat)},
              "ratio_s3_over_local": ratio,
              "checks": [common.check("s3: bytes read per view, S3 / local",
                                      max(read["s3"]) / max(read["local"]), None, "<=", 1.0, "x")]}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()

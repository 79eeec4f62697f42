"""Every CPU benchmark of §Performance in one command (`make bench`): the loader, precompute,
training and analyze benchmarks, each in its own process (clean thread and JIT state), at sizes
that take about 12 minutes on 2 idle cores. Writes bench/results.json (every figure with its
spread over repeats, every ratio with its bar and pass/fail, the machine and library versions,
the load average around each benchmark) and prints a table.

    python bench/run_all.py [--out bench/results.json] [--only loader,train]

Ratios come from A/B runs interleaved in one process; on a machine shared with other work the
load average is recorded next to them: read figures taken under load with care.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

BENCH = Path(__file__).resolve().parent
BENCHES = {  # name: (script, arguments)
    "loader": ("loader.py", []),
    "precompute": ("precompute.py", ["--arch", "resnet18", "--resolution", "32", "--repeats", "12"]),
    "train": ("train.py", ["--setting", "tiny"]),
    "train_step": ("train.py", ["--setting", "step"]),
    "analyze": ("analyze.py", []),
    "codecs": ("codecs.py", []),
    "scale": ("scale.py", []),
    "s3": ("s3.py", []),
    "answers": ("answers.py", []),
}


def run_one(name, tmp):
    """Run one benchmark script with --json; returns its result dict plus timing and load."""
    script, arguments = BENCHES[name]
    out = Path(tmp) / f"{name}.json"
    command = [sys.executable, str(BENCH / script), *arguments, "--json", str(out)]
    print(f"\n== {name}: {' '.join(command[1:])}", flush=True)
    load_before, start = os.getloadavg()[0], time.perf_counter()
    proc = subprocess.run(command, cwd=BENCH.parent)
    seconds = time.perf_counter() - start
    result = json.loads(out.read_text()) if proc.returncode == 0 and out.is_file() else \
        {"name": name, "error": f"exit status {proc.returncode}", "figures": {}, "checks": []}
    result.update(name=name, seconds=seconds, load_average_before=load_before,
                  load_average_after=os.getloadavg()[0])
    return result


def figures_table(results):
    """Every figure: median and range over repeats."""
    lines = [f"{'figure':<44} {'median':>10} {'range':>21}"]
    for result in results.values():
        for name, f in result["figures"].items():
            lines.append(f"{result['name'] + ': ' + name:<44} {f['median']:>10.3f} "
                         f"{f['min']:>10.3f}-{f['max']:<10.3f}")
    return "\n".join(lines)


def table(results):
    """The checks of every benchmark, one line each."""
    lines = [f"{'check':<58} {'value':>9} {'per repeat':>17} {'bar':>9}  result  load"]
    for result in results.values():
        if "error" in result:
            lines.append(f"{result['name']:<58} did not run: {result['error']}")
        for c in result["checks"]:
            spread = f"{c['spread'][0]:.3f}-{c['spread'][1]:.3f}"
            load = f"{result['load_average_before']:.1f}/{result['load_average_after']:.1f}"
            lines.append(f"{c['name'][:58]:<58} {c['value']:>9.3f} {spread:>17} {c['bar']:>9}  "
                         f"{'PASS' if c['pass'] else 'FAIL':<6}  {load}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(BENCH / "results.json"))
    parser.add_argument("--only", default=",".join(BENCHES),
                        help=f"comma-separated subset of {', '.join(BENCHES)}")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHES)}")
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    machine, start = common.machine(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results = {name: run_one(name, tmp) for name in names}
    report = {"started": started,
              "machine": machine, "total_s": time.perf_counter() - start, "benchmarks": results,
              "checks": [{"benchmark": r["name"], **c} for r in results.values()
                         for c in r["checks"]]}
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"\n{machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; "
          f"load average at start {machine['load_average'][0]:.1f} "
          f"(load columns: before/after each benchmark)")
    print(figures_table(results))
    print(table(results))
    print(f"total {report['total_s']:.0f} s; wrote {args.out}")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

"""What each stage of the Fashion-MNIST proof took, and what caching the teacher saved.

    python demo/proof_timing.py OUT --seeds 1 2 3

Reads OUT/times/STAGE.txt ("WALL_SECONDS PEAK_KB", written by GNU time for each `pct` command
of demo/proof_common.sh) and prints every stage's wall time and peak resident memory. Then the
cost of K students distilled from the old model, K = 1 and 3: with the cache, the precompute of
the training views once plus K cached FD students (the mean of the cached FD runs); with the
old model run in the step, K online FD students (the one online run, times K). Writes
OUT/timing.json.
"""
import argparse
import json
from pathlib import Path


def read_times(out):
    """{stage: (wall seconds, peak MiB)} of every timed stage."""
    times = {}
    for path in sorted((Path(out) / "times").glob("*.txt")):
        fields = path.read_text().split()
        if len(fields) == 2:  # a stage that did not finish leaves its file empty
            times[path.stem] = (float(fields[0]), int(fields[1]) / 1024)
    return times


def caching(times, seeds, ks=(1, 3)):
    """{K: {cached_s, online_s, online_over_cached}} from the proof's stages."""
    cached = [times[f"student_fd_s{s}"][0] for s in seeds if f"student_fd_s{s}" in times]
    online = times.get(f"student_fd_online_s{seeds[0]}")
    if not cached or online is None or "precompute" not in times:
        raise SystemExit("timing: the proof's precompute, cached FD and online FD stages are "
                         "not all there yet")
    mean_cached, precompute = sum(cached) / len(cached), times["precompute"][0]
    return {k: {"cached_s": precompute + k * mean_cached, "online_s": k * online[0],
                "online_over_cached": k * online[0] / (precompute + k * mean_cached)}
            for k in ks}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    args = parser.parse_args()
    times = read_times(args.out)
    print(f"{'stage':<28} {'wall s':>8} {'peak MiB':>9}")
    for stage, (wall, peak) in times.items():
        print(f"{stage:<28} {wall:>8.1f} {peak:>9.0f}")
    saved = caching(times, args.seeds)
    for k, row in saved.items():
        print(f"K = {k}: precompute + {k} cached FD student(s) {row['cached_s']:.0f} s; {k} "
              f"online FD student(s) {row['online_s']:.0f} s; online / cached "
              f"{row['online_over_cached']:.2f}")
    report = {"stages": {s: {"wall_s": w, "peak_mib": p} for s, (w, p) in times.items()},
              "caching": {str(k): row for k, row in saved.items()}}
    path = Path(args.out) / "timing.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Benchmark how fast `pct` answers: `pct --help`, every `pct CMD --help`, `pct models`, a refused
option value, missing input files and a store or run folder another process is writing.

    python bench/answers.py [--repeats 5] [--json OUT]

Each answer is the wall time of a new `python -m pct_pipeline ...` process (interpreter start
included), measured --repeats times in turn (case 1..K, then again), reported as median and
range; the bar is 2 s for every one. A case counts only if the process answered as intended
(its exit status, and for a refusal the words of its one-line error): a fast crash is not a
fast answer. The refusals use stand-in files (an empty .beton, an empty checkpoint): they
are refused before anything reads them, which is what is measured. Record the load average
beside the figures: on a busy machine every process start is slower.
"""
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import click

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

BAR_S = 2.0
COMMANDS = ("write-dataset", "precompute-teachers", "train", "evaluate", "analyze",
            "cache-fidelity", "models")


def cases(tmp):
    """[(name, argv, exit status, words of the stderr line or None)] in folder `tmp`, whose
    stand-in files `stand_ins` made."""
    data, teacher = tmp / "data.beton", tmp / "teacher.pt"
    out = [("pct --help", ["--help"], 0, None)]
    out += [(f"pct {c} --help", [c, "--help"], 0, None) for c in COMMANDS]
    out += [
        ("pct models", ["models"], 0, None),
        ("refused option value", ["train", "--data", data, "--val", data, "--out", tmp / "r",
                                  "--kd-alpha", "2"], 2, "is not in the range 0<=x<=1"),
        ("train: --data missing", ["train", "--data", tmp / "none.beton", "--val", data,
                                   "--out", tmp / "r"], 2, "dataset file not found"),
        ("evaluate: --checkpoint missing", ["evaluate", "--checkpoint", tmp / "none.pt",
                                            "--data", data, "--out", tmp / "p.zarr"],
         2, "checkpoint not found"),
        ("precompute: store being written", ["precompute-teachers", "--data", data, "--teacher",
                                             f"cnn_small={teacher}", "--views", "1",
                                             "--out", tmp / "held.zarr"],
         2, "is being written by another process"),
        ("train: run folder in use", ["train", "--data", data, "--val", data,
                                      "--out", tmp / "busy"], 2,
         "is being written by another process"),
    ]
    return out


def stand_ins(tmp):
    """Empty input files and the two locks the refusals meet, held by this process."""
    from pct_pipeline.store import Location

    (tmp / "data.beton").write_bytes(b"")
    (tmp / "teacher.pt").write_bytes(b"")
    (tmp / "busy").mkdir()
    return [Location(tmp / "held.zarr").lock(), Location(tmp / "busy" / "checkpoint.pt").lock()]


def answer(argv):
    """(wall seconds, exit status, stderr) of one new `python -m pct_pipeline ARGV` process."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pct_pipeline", *map(str, argv)],
                          capture_output=True, text=True, cwd=common.ROOT)
    return time.perf_counter() - start, proc.returncode, proc.stderr


def measure(repeats):
    """{case name: {seconds: [...], answered: bool, stderr}}, the cases taken in turn."""
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        locks = stand_ins(tmp)
        try:
            table = cases(tmp)
            got = {name: {"seconds": [], "answered": True, "stderr": ""} for name, *_ in table}
            for _ in range(repeats):
                for name, argv, status, words in table:
                    seconds, code, err = answer(argv)
                    row = got[name]
                    row["seconds"].append(seconds)
                    ok = code == status and (words is None or words in err)
                    row["answered"] &= ok
                    row["stderr"] = row["stderr"] or ("" if ok else err.strip()[-300:])
        finally:
            for lock in locks:
                lock.release()
    return got


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--repeats", default=5, show_default=True)
@click.option("--json", default=None, help="Also write the result dict here.")
def main(**options):
    args = SimpleNamespace(**options)
    load_before = os.getloadavg()[0]
    got = measure(args.repeats)
    figures = {name: common.figure(row["seconds"]) for name, row in got.items()}
    checks, wrong = [], {}
    for name, row in got.items():
        checks.append(common.check(f"{name} answers in <= {BAR_S:g} s",
                                   figures[name]["median"], row["seconds"], "<=", BAR_S, " s"))
        if not row["answered"]:  # a fast crash is not a fast answer
            checks[-1]["pass"] = False
            wrong[name] = row["stderr"]
    result = {"name": "answers", "figures": figures, "checks": checks, "wrong_answers": wrong,
              "repeats": args.repeats, "load_average": [load_before, os.getloadavg()[0]],
              "python": sys.executable}
    print(f"pct answers: wall time of a new process, {args.repeats} repeats "
          f"(load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after)")
    for name, fig in figures.items():
        print(f"  {name:>32}: {fig['median']:6.3f} s median (range {fig['min']:.3f}-"
              f"{fig['max']:.3f})")
    common.print_checks(checks)
    for name, err in wrong.items():
        print(f"  {name}: did not answer as intended: {err}")
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(result, indent=1))
    sys.exit(1 if wrong else 0)


if __name__ == "__main__":
    main()

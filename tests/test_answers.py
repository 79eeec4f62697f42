"""Commands that answer at once: bench/answers.py runs and records every answer (its times are
for the benchmark, not asserted here); help, `pct models` and the early refusals load neither
torch, ffcv nor numba; an early refusal says what the full check would say."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT
from pct_pipeline.cli import COMMANDS
from pct_pipeline.errors import PctError
from pct_pipeline.options import check_input

HEAVY = ("torch", "ffcv", "numba")


def test_the_benchmark_runs_and_writes_its_json(tmp_path):
    out = tmp_path / "answers.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "answers.py"), "--repeats",
                             "1", "--json", str(out)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    names = set(report["figures"])
    assert {"pct --help", "pct models", "refused option value",
            "precompute: store being written", "train: run folder in use"} <= names
    assert {f"pct {c} --help" for c in COMMANDS} <= names
    assert report["wrong_answers"] == {}  # every process answered as intended
    assert all(c["bar"] == "<= 2 s" and len(c["spread"]) == 2 for c in report["checks"])
    assert "answers.py" in (ROOT / "bench" / "run_all.py").read_text()


def loaded(*args):
    """The heavy libraries a `pct ARGS` process has imported when it ends, and its stderr."""
    script = (f"import sys\nfrom pct_pipeline.cli import main\ntry:\n    main({list(args)!r})\n"
              "except SystemExit:\n    pass\n"
              f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    return result.stdout.splitlines()[-1], result.stderr


@pytest.mark.parametrize("args", [
    *[(command, "--help") for command in COMMANDS], ("models",),
    ("train", "--data", "x", "--val", "x", "--out", "r", "--kd-alpha", "2"),
    ("train", "--data", "none.beton", "--val", "none.beton", "--out", "r"),
    ("precompute-teachers", "--data", "none.beton", "--teacher", "cnn_small=t.pt", "--views", "1",
     "--out", "c.zarr"),
    ("evaluate", "--checkpoint", "none.pt", "--data", "v.beton", "--out", "p.zarr"),
], ids=" ".join)
def test_help_and_early_refusals_load_no_heavy_library(args):
    heavy, err = loaded(*args)
    assert heavy == "[]", (heavy, err)


def test_an_early_refusal_says_what_the_full_check_says(tmp_path, train_beton):
    from pct_pipeline.dataset import BetonInfo
    from pct_pipeline.models import load_file

    for kind, full in (("dataset", BetonInfo), ("checkpoint", load_file)):
        for path in (tmp_path / "none", tmp_path):
            with pytest.raises(PctError) as early:
                check_input(kind, path)
            with pytest.raises(PctError) as later:
                full(path)
            assert str(early.value) == str(later.value)
    assert check_input("dataset", train_beton) is None

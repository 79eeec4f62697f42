"""The example CI job of the documentation, run for real: the ```bash block between the lines
`<!-- ci-gate:begin -->` and `<!-- ci-gate:end -->` of README.md or docs/*.md must fail on a
model update that regresses, and pass once the candidate is replaced by one that does not."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from test_cli_analyze import make_store

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- ci-gate:begin -->", "<!-- ci-gate:end -->"
N, C = 1000, 10
LABELS = np.arange(N) % C
OLD_WRONG = np.arange(800, 1000)  # the model in production: 80.0% top-1


def ci_job():
    """(file, the shell lines) of the one marked block in README.md or docs/*.md."""
    found = [(path, path.read_text()) for path in [ROOT / "README.md",
                                                     *sorted((ROOT / "docs").glob("*.md"))]
             if path.is_file() and BEGIN in path.read_text()]
    assert len(found) == 1, [str(p) for p, _ in found]
    path, text = found[0]
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    (lines,) = re.findall(r"^```bash\n(.*?)^```$", block, flags=re.S | re.M)
    return path, lines


def candidate(path, negative, positive):
    """A predictions store: the production model's mistakes, less `positive`, plus `negative`
    (each mistake predicts the next class)."""
    wrong = np.setdiff1d(np.union1d(OLD_WRONG, np.asarray(negative, np.int64)),
                         np.asarray(positive, np.int64))
    logits = np.zeros((N, C), np.float32)
    predicted = LABELS.copy()
    predicted[wrong] = (LABELS[wrong] + 1) % C
    logits[np.arange(N), predicted] = 5.0
    return make_store(path, logits, LABELS, classes=[f"class{k}" for k in range(C)])


def run_job(lines, cwd, old, new):
    env = dict(os.environ, OLD=str(old), NEW=str(new),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(["bash", "-euo", "pipefail", "-c", lines], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_documented_ci_job_fails_on_a_regression_and_passes_after_the_fix(tmp_path):
    _, lines = ci_job()
    old = candidate(tmp_path / "production.zarr", [], [])
    # 86% top-1 but 50 negative flips (5%); then 84% with 10 (1%)
    regressing = candidate(tmp_path / "candidate.zarr", np.arange(50), np.arange(800, 910))
    fixed = candidate(tmp_path / "candidate_fixed.zarr", np.arange(10), np.arange(800, 850))
    job = tmp_path / "job"
    job.mkdir()
    failed = run_job(lines, job, old, regressing)
    assert failed.returncode == 1, failed.stdout[-2000:] + failed.stderr[-2000:]
    lines_out = failed.stdout.splitlines()
    assert lines_out[-1].startswith("gates: ") and lines_out[-1].endswith(" passed: FAIL")
    failing = [line for line in lines_out[:-1] if line.endswith(" FAIL")]
    assert failing and all(str(regressing) in line for line in failing)
    assert any(line.startswith("nfr<=") for line in failing)
    reports = list(job.glob("*.json"))
    assert reports and json.loads(reports[0].read_text())["gates_passed"] is False
    passed = run_job(lines, job, old, fixed)
    assert passed.returncode == 0, passed.stdout[-2000:] + passed.stderr[-2000:]
    verdict = passed.stdout.rstrip().splitlines()[-1]
    assert re.fullmatch(r"gates: (\d+) of \1 passed: PASS", verdict), verdict
    assert json.loads(reports[0].read_text())["gates_passed"] is True

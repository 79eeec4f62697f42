"""Every command as a user first types it: no -j (loader threads and writer processes default
to this process's share of the cores), real subprocesses on the conftest data, stderr not a
terminal (progress comes as lines, PCT_PROGRESS_SECONDS=0 prints one per update). Commands
that do not depend on each other run at the same time, in two rounds of about equal CPU time:
each pays seconds of imports and loader compilation. (`pct models` is asked for two names:
the whole list builds every torchvision model, ~30 s of CPU.)"""
import json
import os
import subprocess
import sys

from pct_pipeline import store

TINY = ["--arch", "cnn_small", "--epochs", 1, "--max-steps-per-epoch", 2, "--resolution", 16,
        "--batch-size", 16]


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "pct_pipeline", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PCT_PROGRESS_SECONDS="0"))


def results(procs, timeout=600):
    """{name: (exit status, stdout, stderr)} once every process of {name: Popen} has ended."""
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=timeout)
        out[name] = (proc.returncode, stdout, stderr)
    return out


def assert_ok(result):
    code, stdout, stderr = result
    assert code == 0, stderr[-3000:]
    assert "Traceback" not in stderr and "note:" not in stderr, stderr[-3000:]
    return stdout, stderr


def progress_lines(stderr, desc):
    return [line for line in stderr.splitlines() if line.startswith(f"{desc}: ")]


def test_every_command_runs_without_j(small_tree, train_beton, val_beton, teacher_ckpt,
                                      tmp_path):
    run = tmp_path / "run"
    first = results({
        "write-dataset": start("write-dataset", small_tree, tmp_path / "w.beton",
                               "--max-resolution", 32),
        "precompute-teachers": start("precompute-teachers", "--data", val_beton, "--teacher",
                                     f"cnn_small={teacher_ckpt}", "--eval-view",
                                     "--resolution", 16, "--out", tmp_path / "old.zarr"),
        # the original underscore spellings, of a number, a choice and a negated flag
        "train": start("train", "--data", train_beton, "--val", val_beton, "--out", run, *TINY,
                       "--kd_alpha", 0.5, "--kd_filter", "old_correct", "--no_li_exclude_gt"),
        "models": start("models", "cnn_small", "resnet18"),
    })
    _, err = assert_ok(first["write-dataset"])
    for phase in ("checking", "writing"):
        lines = progress_lines(err, f"write-dataset: {phase}")
        assert lines and lines[-1].startswith(f"write-dataset: {phase}: 120/120 images (100.0%)")
    _, err = assert_ok(first["precompute-teachers"])
    lines = progress_lines(err, "precompute-teachers")
    assert lines and lines[-1].startswith("precompute-teachers: 80/80 images (100.0%), ")
    assert " images/s, ETA " in lines[-1]
    assert_ok(first["train"])
    loss = json.loads((run / "config.json").read_text())["loss"]
    assert (loss["kd_alpha"], loss["kd_filter"], loss["li_exclude_gt"]) == (0.5, "old_correct",
                                                                            False)
    out, _ = assert_ok(first["models"])
    assert "cnn_small" in out and "resnet18" in out

    second = results({
        # no --resolution or --crop-ratio: the 16 px model is evaluated as it was trained
        "evaluate": start("evaluate", "--checkpoint", run / "checkpoint.pt", "--data", val_beton,
                          "--out", tmp_path / "new.zarr"),
        "train --arch nosuchnet": start("train", "--data", train_beton, "--val", val_beton,
                                        "--out", tmp_path / "bad", *TINY, "--arch", "nosuchnet"),
    })
    code, _, err = second["train --arch nosuchnet"]
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("pct: error: "), err
    assert "'nosuchnet'" in lines[0]
    assert not (tmp_path / "bad").exists()
    out, _ = assert_ok(second["evaluate"])
    assert out.startswith("top1 ") and " at 16 px, crop ratio 0.875 -> " in out
    attrs = store.open_store(tmp_path / "new.zarr").attrs
    assert (attrs["resolution"], attrs["crop_ratio"]) == (16, 0.875)
    assert attrs["config"]["resolution"] == 16 and attrs["config"]["workers"] is None

    out, _ = assert_ok(results({"analyze": start(
        "analyze", tmp_path / "old.zarr", tmp_path / "new.zarr")})["analyze"])
    assert "new.zarr" in out

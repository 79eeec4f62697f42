"""`pct train` event files and negative flips against --old-predictions, through the real CLI:
each validation's NF, NFR, PFR and top-1 equal what `pct analyze` reports for the predictions
of that epoch's checkpoint; a foreign or unfit old store is refused in one line."""
import json
import os
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import forked, free_port

TINY = ["--arch", "cnn_small", "--batch-size", 16, "-j", 1, "--resolution", 16,
        "--print-freq", 0, "--epochs", 2, "--lr", 0.1, "--scale", 0.5, 1, "--flip", 0]


def train(forks, train_beton, val_beton, out, *extra):
    result = forked(forks, "train", "--data", train_beton, "--val", val_beton, "--out", out,
                    *TINY, *extra)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def old_run(train_beton, val_beton, tmp_path_factory, forks):
    """A trained old model's run folder (its predictions.zarr is the old predictions store),
    written without event files. 10 epochs: about 60% top-1, so that a new model trained
    for 2 epochs makes tens of negative flips."""
    out = tmp_path_factory.mktemp("old") / "run"
    train(forks, train_beton, val_beton, out, "--seed", 1, "--no-tensorboard", "--epochs", 10)
    return out


def scalars(run, tag):
    """{step: value} of one scalar tag of the run folder's event files."""
    events = EventAccumulator(str(run))
    events.Reload()
    return {e.step: e.value for e in events.Scalars(tag)}


def analyze(forks, old, new):
    """The comparison row and the new model's row of `pct analyze OLD NEW --json -`."""
    result = forked(forks, "analyze", old, new, "--json", "-", "--bootstrap", 0)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    return report["comparisons"][0], report["models"][1]


def test_negative_flips_per_validation_equal_analyze(old_run, train_beton, val_beton, tmp_path,
                                                     forks):
    assert not list(old_run.glob("events.out.tfevents.*"))  # --no-tensorboard
    old = old_run / "predictions.zarr"
    run = tmp_path / "new"
    log = train(forks, train_beton, val_beton, run, "--seed", 2, "--arch", "cnn_wide",
                "--old-predictions", old, "--epochs-per-save", 1).stdout
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    nf, nfr, pfr = (scalars(run, tag) for tag in ("flips/negative", "flips/nfr", "flips/pfr"))
    top1 = scalars(run, "top1/val")
    assert sorted(nf) == [1, 2]
    for epoch in (1, 2):
        predictions = tmp_path / f"epoch{epoch}.zarr"
        evaluated = forked(forks, "evaluate", "--checkpoint", run / f"checkpoint_epoch_{epoch}.pt",
                           "--data", val_beton, "--out", predictions, "-b", 16, "-j", 1)
        assert evaluated.returncode == 0, evaluated.stderr
        row, model = analyze(forks, old, predictions)
        assert row["negative_flips"] > 0 and row["positive_flips"] > 0  # something to count
        assert nf[epoch] == row["negative_flips"] == metrics[epoch - 1]["negative_flips"]
        assert metrics[epoch - 1]["positive_flips"] == row["positive_flips"]
        assert nfr[epoch] == pytest.approx(row["nfr"]) and pfr[epoch] == pytest.approx(row["pfr"])
        assert top1[epoch] == pytest.approx(model["top1"])
        assert f"nf {row['negative_flips']} nfr {row['nfr']:.4f}" in log
    final, _ = analyze(forks, old, run / "predictions.zarr")
    assert final["negative_flips"] == nf[2]


def test_default_run_writes_losses_lr_top1_and_speed(train_beton, val_beton, tmp_path, forks):
    run = tmp_path / "run"
    log = train(forks, train_beton, val_beton, run, "--seed", 3, "--max-steps-per-epoch", 3).stdout
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(run))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/total", "loss/ce", "loss/fd", "loss/bct", "loss/focal_weight", "lr",
            "top1/train", "top1/val", "top5/val", "speed/images_per_s", "speed/step_s",
            "time/loader_s", "time/forward_s"} <= tags
    assert not any(tag.startswith("flips/") for tag in tags)  # no --old-predictions
    for m in metrics:
        loss = {e.step: e.value for e in events.Scalars("loss/total")}[m["epoch"]]
        assert loss == pytest.approx(m["loss"], rel=1e-6)
        assert 0 <= m["train_top1"] <= 1 and "val_top1" in m and "top1" not in m
        assert f"train_top1 {m['train_top1']:.4f} val_top1 {m['val_top1']:.4f}" in log
    assert [e.step for e in events.Scalars("speed/step_s")] == [1, 2]


@pytest.mark.parametrize("problem", ["other data", "teacher cache", "class count"])
def test_an_unfit_old_store_is_refused_in_one_line(problem, old_run, train_beton, val_beton,
                                                   tmp_path, forks, teacher_ckpt):
    if problem == "other data":  # predictions of the training data, not the validation data
        old = tmp_path / "train_pred.zarr"
        made = forked(forks, "precompute-teachers", "--data", train_beton, "--eval-view",
                      "--teacher", f"cnn_small={teacher_ckpt}", "--resolution", 16, "-j", 1,
                      "--out", old)
        expected = "was made from other data than the validation data"
    elif problem == "teacher cache":
        old = tmp_path / "cache.zarr"
        made = forked(forks, "precompute-teachers", "--data", val_beton, "--views", 1,
                      "--teacher", f"cnn_small={teacher_ckpt}", "--resolution", 16, "-j", 1,
                      "--out", old)
        expected = "is a teacher-cache store, expected predictions"
    else:
        old = old_run / "predictions.zarr"
        made = None
        expected = f"--old-predictions {old} has 10 classes, the model 12"
    assert made is None or made.returncode == 0, made.stderr
    extra = ["--num-classes", 12] if problem == "class count" else []
    result = forked(forks, "train", "--data", train_beton, "--val", val_beton, "--out",
                    tmp_path / "run", *TINY, "--old-predictions", old, *extra)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr, result.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_two_processes_count_the_flips_of_all_rows(old_run, train_beton, val_beton, tmp_path,
                                                   forks):
    """Under torchrun each process counts its own validation rows (those of its shards of the
    predictions store: here all 80 are in one ~1 MiB chunk, so process 1 has none and reads
    none of the old store) and one all_reduce sums them: the counts equal `pct analyze` of the
    predictions the run wrote."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(free_port()), "-m", "pct_pipeline", "train", "--data",
           str(train_beton), "--val", str(val_beton), "--out", str(out), *map(str, TINY),
           "--epochs", "1", "--seed", "2", "--old-predictions", str(old_run / "predictions.zarr")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    row, model = analyze(forks, old_run / "predictions.zarr", out / "predictions.zarr")
    assert metrics["negative_flips"] == row["negative_flips"] > 0
    assert metrics["positive_flips"] == row["positive_flips"]
    assert metrics["val_top1"] == pytest.approx(model["top1"])
    assert scalars(out, "flips/negative") == {1: row["negative_flips"]}  # process 0's file only
    assert len(list(out.glob("events.out.tfevents.*"))) == 1

"""`pct train`: cached vs online parity, resume, 2-process DDP, every loss mode, one-line errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import zarr

from conftest import DIGITS, forked, free_port
from pct_pipeline.models import build_model, save_atomic

RES = 24
COMMON = ["--arch", "cnn_small", "--batch-size", "16", "--workers", "1", "--lr", "0.05",
          "--print-freq", "0", "--resolution", str(RES), "--seed", "3"]


def precompute(forks, beton, teachers, out, *extra):
    args = ["precompute-teachers", "--data", beton, "--views", "2", "--view-seed", "5", "--out", out,
            "--resolution", RES, "--batch-size", "32", "-j", "1", *extra]
    for spec in teachers:
        args += ["--teacher", spec]
    result = forked(forks, *args)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def caches(train_beton, teacher_ckpt, tmp_path_factory, forks):
    root = tmp_path_factory.mktemp("caches")
    torch.manual_seed(1)
    second = root / "teacher2.pt"
    save_atomic({"model": build_model("cnn_small", 10).state_dict(), "arch": "cnn_small",
                 "classes": DIGITS}, second)
    teacher = f"cnn_small={teacher_ckpt}"
    return {
        "fp32": precompute(forks, train_beton, [teacher], root / "fp32.zarr", "--dtype", "float32",
                           "--store-features"),
        "fp16": precompute(forks, train_beton, [teacher], root / "fp16.zarr"),
        "ensemble": precompute(forks, train_beton, [teacher, f"cnn_small={second}"], root / "ens.zarr"),
        "custom": precompute(forks, train_beton, [teacher], root / "custom.zarr", "--dtype", "float32",
                             *AUGMENT),
        "teacher": teacher, "second": second,
    }


def train(forks, train_beton, val_beton, out, *extra, epochs=2, steps=3):
    result = forked(forks, "train", "--data", train_beton, "--val", val_beton, "--out", out, *COMMON,
                    "--epochs", epochs, "--max-steps-per-epoch", steps, *extra)
    assert result.returncode == 0, result.stderr
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    return metrics, state


AUGMENT = ["--scale", "0.5", "1", "--ratio", "0.9", "1.1", "--flip", "0"]
KD = ["--kd-loss-mode", "kl", "--kd-alpha", "0.5", "--kd-temperature", "4",
      "--kd-filter", "old_correct", "--filter-base", "1", "--filter-scale", "5"]


def test_cached_and_online_teacher_train_identically(train_beton, val_beton, caches, tmp_path, forks):
    cached, s_cached = train(forks, train_beton, val_beton, tmp_path / "c", "--teacher-cache", caches["fp32"], *KD)
    online, s_online = train(forks, train_beton, val_beton, tmp_path / "o", "--online-teacher", caches["teacher"],
                             "--view-seed", "5", *KD)  # the cache was made with view seed 5
    half, _ = train(forks, train_beton, val_beton, tmp_path / "h", "--teacher-cache", caches["fp16"], *KD)
    for a, b, c in zip(cached, online, half):
        assert a["view"] == b["view"] and a["fd"] > 0
        # float32 cache: the teacher ran on the same pixels, in other batches (last-bit differences)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["fd"] == pytest.approx(b["fd"], rel=1e-5)
        assert c["loss"] == pytest.approx(b["loss"], rel=2e-3)  # float16 rounding of the logits
    for key, value in s_cached["model"].items():
        assert torch.allclose(value.float(), s_online["model"][key].float(), atol=1e-5, rtol=1e-4), key
    plain, s_plain = train(forks, train_beton, val_beton, tmp_path / "p")
    assert plain[0]["fd"] == 0 and not torch.allclose(s_plain["model"]["fc.weight"], s_cached["model"]["fc.weight"])


def test_custom_augmentation_cache_reproduces_online(train_beton, val_beton, caches, tmp_path, forks):
    """A cache made with non-default scale, ratio and flip: training takes them from the cache
    (and records them), and an online teacher given the same options gets the same targets."""
    cached, _ = train(forks, train_beton, val_beton, tmp_path / "c", "--teacher-cache", caches["custom"], *KD)
    online, _ = train(forks, train_beton, val_beton, tmp_path / "o", "--online-teacher", caches["teacher"],
                      "--view-seed", "5", *AUGMENT, *KD)
    default, _ = train(forks, train_beton, val_beton, tmp_path / "d", "--online-teacher", caches["teacher"],
                       "--view-seed", "5", *KD)
    for a, b, c in zip(cached, online, default):
        assert a["fd"] == pytest.approx(b["fd"], rel=1e-5)
        assert a["fd"] != pytest.approx(c["fd"], rel=1e-3)  # other views, other targets
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    views = config["views"]
    assert (views["scale"], views["ratio"], views["flip"], views["view_seed"]) == ([0.5, 1], [0.9, 1.1], 0, 5)
    assert zarr.open_group(str(caches["custom"]), mode="r").attrs["flip"] == 0


def test_resume_continues_exactly(train_beton, val_beton, caches, tmp_path, forks):
    _, straight = train(forks, train_beton, val_beton, tmp_path / "a", "--teacher-cache", caches["fp16"], *KD,
                        epochs=3)
    first, _ = train(forks, train_beton, val_beton, tmp_path / "b", "--teacher-cache", caches["fp16"], *KD, epochs=1)
    resumed, state = train(forks, train_beton, val_beton, tmp_path / "b", "--teacher-cache", caches["fp16"], *KD,
                           "--resume", tmp_path / "b" / "checkpoint.pt", epochs=3)
    assert [m["epoch"] for m in resumed] == [1, 2, 3] and [m["view"] for m in resumed] == [0, 1, 0]
    assert state["epoch"] == straight["epoch"] == 3
    for key, value in straight["model"].items():
        assert torch.equal(value, state["model"][key]), key
    assert straight["optimizer"]["state"].keys() == state["optimizer"]["state"].keys()


@pytest.mark.parametrize("mode", ["kl", "l2", "li", "li-topk", "cna", "bct", "ensemble"])
def test_every_loss_mode_trains(mode, train_beton, val_beton, caches, tmp_path, forks):
    extra = {"kl": ["--kd-loss-mode", "kl"], "l2": ["--kd-loss-mode", "l2"],
             "li": ["--kd-loss-mode", "li", "--li-margin", "0.1"],
             "li-topk": ["--kd-loss-mode", "li", "--li_compute_topk", "3", "--no-li-exclude-gt", "--li_margin", "0"],
             "cna": ["--kd-loss-mode", "cna", "--cna-temperature", "0.05"],
             "bct": ["--kd-loss-mode", "kl", "--bct-loss-weight", "1", "--bct-old-model", str(caches["second"])],
             "ensemble": ["--kd-loss-mode", "li", "--kd-alpha", "0.8", "--li-margin", "0"]}[mode]
    cache = caches["ensemble" if mode == "ensemble" else "fp32"]
    metrics, state = train(forks, train_beton, val_beton, tmp_path / mode, "--teacher-cache", cache, *extra,
                           epochs=1, steps=4)
    assert metrics[0]["fd"] > 0 and np.isfinite(metrics[0]["loss"])
    assert (metrics[0]["bct"] > 0) == (mode == "bct")
    group = zarr.open_group(str(tmp_path / mode / "predictions.zarr"), mode="r")
    assert group.attrs["kind"] == "predictions" and group["done"][...].all()
    assert group["logits"].shape[1:] == (80, 10) and state["arch"] == "cnn_small"


def test_two_process_ddp_keeps_ranks_identical(train_beton, val_beton, caches, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(free_port()), "-m", "pct_pipeline", "train", "--data", str(train_beton),
           "--val", str(val_beton), "--out", str(out), *COMMON, "--epochs", "2",
           "--teacher-cache", str(caches["fp32"]), "--kd-loss-mode", "cna"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "parameters identical on all 2 ranks" in result.stdout
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and metrics[1]["fd"] > 0
    assert zarr.open_group(str(out / "predictions.zarr"), mode="r")["done"][...].all()


def one_line_error(result, *needles):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_one_line_errors(train_beton, val_beton, caches, tmp_path, forks):
    base = ["train", "--data", train_beton, "--val", val_beton, "--out", tmp_path / "run", *COMMON]
    other = precompute(forks, val_beton, [caches["teacher"]], tmp_path / "val_cache.zarr")
    one_line_error(forked(forks, *base, "--teacher-cache", other, "--kd-loss-mode", "kl"), "other data", "num_samples")
    broken = tmp_path / "broken.zarr"
    subprocess.run(["cp", "-r", str(caches["fp16"]), str(broken)], check=True)
    zarr.open_group(str(broken), mode="r+")["done"][1, 0] = False
    one_line_error(forked(forks, *base, "--teacher-cache", broken, "--kd-loss-mode", "kl"), "incomplete", "view 1 shard 0")
    one_line_error(forked(forks, *base, "--teacher-cache", caches["fp16"], "--kd-loss-mode", "cna"), "--store-features")
    wide = tmp_path / "wide.pt"
    save_atomic({"model": build_model("cnn_wide", 10).state_dict(), "arch": "cnn_wide",
                 "classes": DIGITS}, wide)
    one_line_error(forked(forks, *base, "--teacher-cache", caches["fp16"], "--kd-loss-mode", "kl",
                           "--bct-loss-weight", "1", "--bct-old-model", f"cnn_wide={wide}"), "128", "32")
    one_line_error(forked(forks, *base, "--teacher-cache", caches["custom"], "--kd-loss-mode", "kl", "--flip", "0.5"),
                   "--flip 0.5", "flip 0.0")
    one_line_error(forked(forks, *base, "--teacher-cache", caches["custom"], "--kd-loss-mode", "kl", "--scale", "0.08", "1"),
                   "--scale 0.08 1.0", "scale 0.5 1")
    one_line_error(forked(forks, *base, "--arch", "resnet_9000"), "resnet_9000")
    one_line_error(forked(forks, *base, "--kd-loss-mode", "kk"), "kk")
    one_line_error(forked(forks, *base, "--kd-loss-mode", "kl"), "--teacher-cache")
    one_line_error(forked(forks, *base, "--resume", wide), "wide.pt")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()

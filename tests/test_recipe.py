"""The training recipe: warm-up and schedules, label smoothing, gradient accumulation, EMA,
fp16 with a GradScaler, the per-step time account, and runs that are never lost (re-queue,
resume checks, --overwrite)."""
import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import forked
from pct_pipeline import distributed
from pct_pipeline.errors import PctError
from pct_pipeline.losses import LossConfig, pct_loss
from pct_pipeline.train import recipe
from pct_pipeline.train import run_folder as checkpoint
from pct_pipeline.train.config import TrainConfig
from pct_pipeline.train.run import OldModel, train_one_epoch
from pct_pipeline.train.state import TrainState

CPU = distributed.Dist(rank=0, world=1, local_rank=0, device=torch.device("cpu"))


def config(**kw):
    return TrainConfig(data="-", val="-", out="-", print_freq=0, **kw)


def test_warmup_is_linear_per_step_then_the_schedule():
    cfg = config(epochs=10, warmup_epochs=2, lr_schedule="cosine")
    factors = [recipe.lr_factor(cfg, e, s, 5) for e in range(3) for s in range(5)]
    assert factors[:10] == pytest.approx([(k + 1) / 10 for k in range(10)])
    assert factors[10] == pytest.approx(1.0)  # epoch 2: the cosine's start, after 2 epochs
    assert recipe.lr_factor(cfg, 6, 0, 5) == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    step = config(epochs=10, lr_step=3)
    assert [recipe.lr_factor(step, e, 0, 5) for e in (0, 2, 3, 6, 9)] == pytest.approx(
        [1, 1, 0.1, 0.01, 0.001])


def test_label_smoothing_loss_value():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 5), torch.randint(0, 5, (6,))
    total, parts = pct_loss(LossConfig(label_smoothing=0.2), logits, labels)
    log_p = F.log_softmax(logits, dim=1)
    expected = (-(0.8 * log_p.gather(1, labels[:, None]).squeeze(1) + 0.2 * log_p.mean(1))).mean()
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts["ce"].item() > pct_loss(LossConfig(), logits, labels)[1]["ce"].item() - 1.0


class Batches:
    """A loader stand-in: fixed (images, labels, indices) batches."""

    def __init__(self, batches):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


def linear_run(cfg, batches, steps_seen=None):
    """Train a BatchNorm-free model (so a split batch is the same batch) one epoch."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    optimizer = recipe.make_optimizer(cfg, model, cfg.lr)
    ema = recipe.make_ema(cfg, model)
    state = TrainState(model, optimizer, recipe.Precision(cfg, CPU.device), ema)
    stats = train_one_epoch(cfg, state, model, Batches(batches), OldModel(None, None), 0, CPU)
    return model, ema, stats


def data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 4, 4, generator=g), torch.randint(0, 5, (n,), generator=g)


def test_accumulating_two_half_batches_equals_one_batch():
    images, labels = data(16)
    whole = [(images, labels, torch.arange(16))]
    halves = [(images[:8], labels[:8], torch.arange(8)), (images[8:], labels[8:], torch.arange(8, 16))]
    a, _, _ = linear_run(config(lr=0.5, epochs=1), whole)
    b, _, _ = linear_run(config(lr=0.5, epochs=1, accum_steps=2), halves)
    c, _, _ = linear_run(config(lr=0.5, epochs=1), halves)  # two steps: not the same
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)
        assert not torch.allclose(pa, pc, atol=1e-4)


def test_ema_follows_every_optimizer_step():
    images, labels = data(24, seed=1)
    batches = [(images[k:k + 8], labels[k:k + 8], torch.arange(k, k + 8)) for k in (0, 8, 16)]
    cfg = config(lr=0.5, epochs=1, ema_decay=0.6)
    model, ema, _ = linear_run(cfg, batches)
    # the same steps one at a time, averaging by hand: the first copies, then d*ema + (1-d)*w
    torch.manual_seed(0)
    manual = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    optimizer = recipe.make_optimizer(cfg, manual, cfg.lr)
    expected = None
    for batch in batches:
        state = TrainState(manual, optimizer, recipe.Precision(cfg, CPU.device))
        train_one_epoch(replace(cfg, ema_decay=None), state, manual, Batches([batch]),
                        OldModel(None, None), 0, CPU)
        weights = [p.detach().clone() for p in manual.parameters()]
        expected = weights if expected is None else [0.6 * e + 0.4 * w for e, w in zip(expected, weights)]
    for got, want, raw in zip(ema.module.parameters(), expected, model.parameters()):
        assert torch.allclose(got, want, atol=1e-6)
        assert not torch.allclose(got, raw, atol=1e-4)


def test_step_time_account_adds_up():
    images, labels = data(64)
    batches = [(images[k:k + 8], labels[k:k + 8], torch.arange(k, k + 8)) for k in range(0, 64, 8)]
    _, _, stats = linear_run(config(lr=0.1, epochs=1), batches)
    parts = stats["step_time_s"]
    assert set(parts) == {"loader", "targets", "forward", "loss", "backward", "optimizer"}
    assert sum(parts.values()) == pytest.approx(stats["train_time_s"], rel=0.05)


def test_nonfinite_loss_names_step_and_sample():
    images, labels = data(16)
    images[11] = float("nan")
    batches = [(images[:8], labels[:8], torch.arange(8)), (images[8:], labels[8:], torch.arange(100, 108))]
    with pytest.raises(PctError, match=r"training loss is nan at epoch 0, step 1; sample 103 "):
        linear_run(config(lr=0.1, epochs=1), batches)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_first_nonfinite_row_of_numpy_arrays(dtype):
    """The exponent-bits test agrees with np.isfinite: NaN, +inf and -inf found in the first
    row that has one; the largest finite value, subnormals and -0 pass; strided, 3-D and
    byte-swapped input."""
    import numpy as np

    from pct_pipeline.errors import first_nonfinite_row

    values = np.random.default_rng(0).standard_normal((64, 30)).astype(dtype)
    info = np.finfo(dtype)
    values[1, :4] = info.max, -info.max, info.smallest_subnormal, -0.0
    assert first_nonfinite_row(values) is None
    for bad in (np.nan, np.inf, -np.inf):
        marked = values.copy()
        marked[40, 7], marked[50, 0] = bad, bad
        assert first_nonfinite_row(marked) == 40
        assert first_nonfinite_row(marked[:, 1::2]) == 40
        assert first_nonfinite_row(marked[:, ::2]) == 50
        assert first_nonfinite_row(marked.reshape(64, 5, 6)) == 40
        assert first_nonfinite_row(marked.astype(np.dtype(dtype).newbyteorder())) == 40


def test_sync_bn_refused_on_cpu():
    two = replace(CPU, world=2)
    with pytest.raises(PctError, match="--sync-bn needs CUDA"):
        recipe.convert_sync_bn(config(sync_bn=True), nn.BatchNorm2d(3), two)


# --- through the CLI ----------------------------------------------------------------------

RES = 16
BASE = ["--arch", "cnn_small", "--batch-size", "16", "--resolution", str(RES), "--print-freq", "0",
        "--max-steps-per-epoch", "2", "-j", "1"]


def train(forks, train_beton, val_beton, out, *extra):
    return forked(forks, "train", "--data", train_beton, "--val", val_beton, "--out", out, *BASE,
                  *extra)


def metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def one_line(result, *needles):
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr[-2000:]
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_requeued_command_resumes_and_loses_nothing(train_beton, val_beton, tmp_path, forks):
    out = tmp_path / "run"
    first = train(forks, train_beton, val_beton, out, "--epochs", 1, "--lr-schedule", "cosine")
    assert first.returncode == 0, first.stderr
    before = digest(out)
    again = train(forks, train_beton, val_beton, out, "--epochs", 1, "--lr-schedule", "cosine")
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stderr
    assert digest(out) == before  # a finished run is left as it is
    longer = train(forks, train_beton, val_beton, out, "--epochs", 3, "--lr-schedule", "cosine")
    assert longer.returncode == 0 and "resuming from" in longer.stdout, longer.stderr
    lines = metrics(out)
    assert [m["epoch"] for m in lines] == [1, 2, 3]
    # the schedule is this command's (3 epochs), from the saved epoch: epoch index 2 of 3
    assert lines[2]["lr"] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 2 / 3)))
    assert set(lines[2]["step_time_s"]) >= {"loader", "forward", "backward"}
    # the continued run's predictions are of its final model, not of epoch 1's
    attrs = json.loads((out / "predictions.zarr" / "zarr.json").read_text())["attributes"]
    assert attrs["model"]["epoch"] == 3 and "final: val_top1" in longer.stdout
    ckpt = out / "checkpoint.pt"
    assert attrs["teachers"] == [{"arch": "cnn_small", "path": str(ckpt.resolve()),
                                  "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest()}]


def test_resume_trims_metrics_newer_than_the_checkpoint(train_beton, val_beton, tmp_path, forks):
    out = tmp_path / "run"
    assert train(forks, train_beton, val_beton, out, "--epochs", 1).returncode == 0
    with open(out / "metrics.jsonl", "a") as f:  # killed after a metrics line, before its checkpoint
        f.write(json.dumps({"epoch": 2, "loss": 0}) + "\n")
    assert train(forks, train_beton, val_beton, out, "--epochs", 2).returncode == 0
    assert [m["epoch"] for m in metrics(out)] == [1, 2] and metrics(out)[1]["loss"] > 0


def test_resume_checks_and_overwrite(train_beton, val_beton, tmp_path, forks):
    out = tmp_path / "run"
    assert train(forks, train_beton, val_beton, out, "--epochs", 1, "--label-smoothing", "0.1").returncode == 0
    one_line(train(forks, train_beton, val_beton, out, "--epochs", 2, "--label-smoothing", "0.2"),
             "was trained with loss label_smoothing 0.1, this command 0.2", "--overwrite")
    one_line(train(forks, train_beton, val_beton, out, "--epochs", 2, "--arch", "cnn_wide"),
             "cnn_small checkpoint, --arch is cnn_wide")
    noted = train(forks, train_beton, val_beton, out, "--epochs", 2, "--label-smoothing", "0.1", "--seed", 9)
    assert noted.returncode == 0 and "pct: note: resuming" in noted.stdout and "seed 9" in noted.stdout
    other_val = train(forks, train_beton, train_beton, out, "--epochs", 3, "--label-smoothing", "0.1",
                      "--seed", 9)  # validated on another set from epoch 3 on: said, not refused
    assert other_val.returncode == 0, other_val.stderr
    assert f"with validation {train_beton.resolve()} (120 samples" in other_val.stdout
    assert f"(it was trained with {val_beton.resolve()} (" in other_val.stdout
    fresh = train(forks, train_beton, val_beton, out, "--epochs", 1, "--seed", 4, "--overwrite")
    assert fresh.returncode == 0, fresh.stderr
    assert [m["epoch"] for m in metrics(out)] == [1]
    assert json.loads((out / "config.json").read_text())["seed"] == 4


def test_a_second_train_into_a_folder_in_use_is_refused(train_beton, val_beton, tmp_path, forks):
    out = tmp_path / "run"
    lock = out / ".checkpoint.pt.lock"
    with checkpoint.RunLock(out):  # held as a running `pct train` holds it
        refused = train(forks, train_beton, val_beton, out, "--epochs", 1)
        one_line(refused, f"{out / 'checkpoint.pt'} is being written by another process",
                 f"lock {lock} is held")
        assert [p.name for p in out.iterdir()] == [lock.name]  # nothing written
    assert not lock.exists()
    done = train(forks, train_beton, val_beton, out, "--epochs", 1)
    assert done.returncode == 0, done.stderr
    assert (out / "checkpoint.pt").is_file() and not lock.exists()


def test_fp16_grad_scaler_on_cpu_with_cache_accumulation_and_ema(train_beton, val_beton, teacher_ckpt,
                                                                 tmp_path, forks):
    cache = tmp_path / "cache.zarr"
    made = forked(forks, "precompute-teachers", "--data", train_beton, "--teacher", f"cnn_small={teacher_ckpt}",
                   "--views", 2, "--resolution", RES, "--out", cache, "-j", 1, "--flip", 0)
    assert made.returncode == 0, made.stderr
    out = tmp_path / "run"
    result = train(forks, train_beton, val_beton, out, "--epochs", 2, "--teacher-cache", cache,
                   "--kd-loss-mode", "kl", "--kd-alpha", "0.5", "--accum-steps", 2, "--ema-decay", "0.9",
                   "--predictions-of", "ema", "--warmup-epochs", "1", "--amp-dtype", "fp16",
                   "--norm-weight-decay", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["scaler"]["scale"] > 0 and "model_ema" in state
    lines = metrics(out)
    schedule = state["scheduler"]  # two groups (--norm-weight-decay), after epoch 2 of 2
    assert (schedule["last_epoch"], schedule["warmup_epochs"], len(schedule["base_lrs"])) == (2, 1, 2)
    assert schedule["last_lrs"][0] == pytest.approx(lines[-1]["lr"])
    assert all(m["fd"] > 0 and "ema_val_top1" in m for m in lines)
    assert lines[0]["lr"] == pytest.approx(0.1 * 2 / 2)  # 2 optimizer steps per epoch: 2/2 at step 1
    prediction_attrs = json.loads((out / "predictions.zarr" / "zarr.json").read_text())["attributes"]
    assert prediction_attrs["model"]["weights"] == "ema"


def test_evaluate_flag_writes_a_checkpoint_predictions_at_its_resolution(train_beton, val_beton,
                                                                         tmp_path, forks):
    import numpy as np

    from pct_pipeline import store

    run = tmp_path / "run"
    assert train(forks, train_beton, val_beton, run, "--epochs", 1).returncode == 0
    copy = tmp_path / "copy"  # no --resolution: the checkpoint's run validated at RES
    result = forked(forks, "train", "--data", train_beton, "--val", val_beton, "--out", copy,
                    "--arch", "cnn_small", "--batch-size", 16, "-j", 1, "-e",
                    "--resume", run / "checkpoint.pt")
    assert result.returncode == 0, result.stderr
    assert f"at {RES} px" in result.stdout
    trained, evaluated = (store.open_store(p / "predictions.zarr") for p in (run, copy))
    assert evaluated.attrs["resolution"] == RES
    assert np.array_equal(trained.logits(0), evaluated.logits(0))
    ckpt = run / "checkpoint.pt"
    assert evaluated.attrs["teachers"][0]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()


def test_resume_refusal_names_the_setting_that_matters():
    """A changed loss mode is named before the settings that follow from it; a teacher cache
    given to one of the two runs is said in words, not as the cache's identity."""
    assert checkpoint._difference("loss", {"mode": "kl", "filter_base": 1.0},
                                  {"mode": "l2", "filter_base": 0.0}) == "loss mode 'kl', this command 'l2'"
    assert checkpoint._difference("teacher_cache", {"views": 2}, None) == \
        "a teacher cache, this command none"
    assert checkpoint._difference("teacher_cache", None, {"views": 2}) == \
        "no teacher cache, this command one"

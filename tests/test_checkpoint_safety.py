"""Checkpoints are read as data (torch.load weights_only=True): a file whose unpickling would run
code is refused by every command that reads checkpoints, with one line naming the file and the
globals it wants, and nothing of it runs; `--trust-checkpoint` unpickles fully. The layouts we
accept (our checkpoints, old and new; the original research code's; a bare torchvision state
dict) load without it; timm's are tested in tests/test_timm.py."""
import json
import os
import pathlib
import shlex
from dataclasses import asdict

import pytest
import torch
import torchvision

from conftest import forked
from pct_pipeline import __version__, models
from pct_pipeline.errors import PctError
from pct_pipeline.train.config import TrainConfig

RES = 24


class RunsShell:
    """Unpickling it runs `touch MARKER` through os.system (global posix.system)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


class TouchesPath:
    """Unpickling it calls pathlib.Path.touch (pickled as builtins.getattr(Path, 'touch'))."""

    def __init__(self, marker):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def small_model(seed=0):
    torch.manual_seed(seed)
    return models.build_model("cnn_small", 10)


def booby_trapped(path, payload):
    """A real cnn_small checkpoint in pct train's layout, plus `payload` under another key."""
    torch.save({"model": small_model().state_dict(), "arch": "cnn_small", "num_classes": 10,
                "notes": payload}, path)
    return path


def trained_optimizer(model, cfg):
    """(optimizer, scheduler) after one real step, as a checkpoint would hold them."""
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.wd)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    model(torch.randn(4, 3, RES, RES)).logsumexp(1).mean().backward()
    optimizer.step()
    scheduler.step()
    return optimizer, scheduler


def old_pct_checkpoint(path, cfg, epoch=1):
    """A checkpoint as save_checkpoint wrote it before configs were stored JSON-plain: the
    config as dataclasses.asdict (nested dicts, tuples, None), the RNG state tensor, the
    optimizer and scheduler state dicts, no record of the data it was trained on."""
    model = small_model()
    optimizer, scheduler = trained_optimizer(model, cfg)
    torch.save({
        "model": model.state_dict(), "arch": cfg.arch, "num_classes": 10,
        "model_kwargs": dict(cfg.model_kwargs), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "epoch": epoch, "rng": torch.get_rng_state(),
        "config": asdict(cfg), "pct_version": __version__}, path)
    return model


def upstream_checkpoint(path, legacy=False, best_acc1=torch.tensor(76.13)):
    """The original research code's model_best.pth.tar: a DataParallel state dict and its
    training state."""
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3, RES, RES)).sum().backward()
    optimizer.step()
    torch.save({"epoch": 90, "arch": "cnn_small",
                "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
                "best_acc1": best_acc1, "optimizer": optimizer.state_dict()}, path,
               _use_new_zipfile_serialization=not legacy)
    return model


def assert_same_weights(model, expected):
    got = model.state_dict()
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def assert_refused(result, path, wanted, marker):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("pct: error: ") and str(path) in lines[0], lines[0]
    assert wanted in lines[0] and "--trust-checkpoint" in lines[0], lines[0]
    assert not pathlib.Path(marker).exists()


# --- a file that would run code is refused: in process, and by every command that reads one ---

@pytest.mark.parametrize("payload, wanted", [(RunsShell, "posix.system"),
                                             (TouchesPath, "builtins.getattr")])
def test_load_file_refuses_code_naming_the_global(payload, wanted, tmp_path):
    marker = tmp_path / "PWNED"
    path = booby_trapped(tmp_path / "evil.pt", payload(marker))
    for read in (models.load_file, models.read_state_dict,
                 lambda p: models.load_model("cnn_small", p, 10)):
        with pytest.raises(PctError) as err:
            read(path)
        message = str(err.value)
        assert "\n" not in message and str(path) in message and wanted in message, message
        assert not marker.exists()


def test_legacy_format_file_that_runs_code_is_refused_naming_the_global(tmp_path):
    """torch's pre-zip format, where torch cannot list a file's globals: the weights-only
    unpickler's own line names the one it refused."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "legacy.pt"
    torch.save({"model": small_model().state_dict(), "notes": RunsShell(marker)}, path,
               _use_new_zipfile_serialization=False)
    with pytest.raises(PctError) as err:
        models.load_file(path)
    assert str(err.value) == (f"unreadable checkpoint {path}: UnpicklingError: Trying to load "
                              f"unsupported GLOBAL posix.system whose module posix is blocked.")
    assert not marker.exists()


def test_every_global_a_file_needs_is_named_its_own_classes_first(tmp_path):
    torch.save(torchvision.models.get_model("resnet18", weights=None), tmp_path / "whole.pt")
    with pytest.raises(PctError) as err:
        models.load_file(tmp_path / "whole.pt")
    needs = ("unpickling it needs torchvision.models.resnet.BasicBlock, torchvision.models."
             "resnet.ResNet, torch.nn.modules.activation.ReLU and 6 more, which runs code")
    assert needs in str(err.value)


def test_analyze_result_files_are_read_as_data(tmp_path):
    from pct_pipeline.analyze.run import _load_result

    marker = tmp_path / "PWNED"
    path = tmp_path / "new.result"
    torch.save({"gt": torch.zeros(3, dtype=torch.long), "outputs": torch.zeros(3, 10),
                "notes": RunsShell(marker)}, path)
    with pytest.raises(PctError, match="unreadable .result file"):
        _load_result(path)
    assert not marker.exists()


@pytest.fixture(scope="module")
def evil(tmp_path_factory):
    root = tmp_path_factory.mktemp("evil")
    marker = root / "PWNED"
    return booby_trapped(root / "evil.pt", RunsShell(marker)), marker


def train_args(train_beton, val_beton, out, *extra):
    return ["train", "--data", train_beton, "--val", val_beton, "--out", out, "--arch",
            "cnn_small", "--batch-size", "16", "-j", "1", "--print-freq", "0", "--resolution",
            RES, "--epochs", "1", "--max-steps-per-epoch", "1", *extra]


COMMANDS = {
    "precompute-teachers --teacher": lambda w, ckpt: [
        "precompute-teachers", "--data", w["train"], "--teacher", f"cnn_small={ckpt}",
        "--views", "1", "--resolution", RES, "--batch-size", "32", "-j", "1",
        "--out", w["tmp"] / "cache.zarr"],
    "train --resume": lambda w, ckpt: train_args(w["train"], w["val"], w["tmp"] / "run",
                                                 "--resume", ckpt),
    "train --bct-old-model": lambda w, ckpt: train_args(
        w["train"], w["val"], w["tmp"] / "run", "--online-teacher", f"cnn_small={w['teacher']}",
        "--kd-loss-mode", "kl", "--bct-loss-weight", "0.5", "--bct-old-model", f"cnn_small={ckpt}"),
    "train --online-teacher": lambda w, ckpt: train_args(
        w["train"], w["val"], w["tmp"] / "run", "--online-teacher", f"cnn_small={ckpt}",
        "--kd-loss-mode", "kl"),
    "evaluate --checkpoint": lambda w, ckpt: [
        "evaluate", "--checkpoint", ckpt, "--data", w["val"], "--out", w["tmp"] / "pred.zarr",
        "--resolution", RES, "--batch-size", "64", "-j", "1"],
}


@pytest.fixture
def w(train_beton, val_beton, teacher_ckpt, tmp_path):
    return {"train": train_beton, "val": val_beton, "teacher": teacher_ckpt, "tmp": tmp_path}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_refuses_a_checkpoint_that_runs_code(command, w, evil, forks):
    path, marker = evil
    result = forked(forks, *COMMANDS[command](w, path))
    assert_refused(result, path, "posix.system", marker)


def test_trust_checkpoint_loads_a_whole_model_pickle(w, forks):
    """torch.save(model): refused as data (the module's classes are code), loaded with
    --trust-checkpoint, where its state_dict() is what counts."""
    model = small_model(seed=4)
    whole = w["tmp"] / "whole.pt"
    torch.save(model, whole)
    refused = forked(forks, *COMMANDS["precompute-teachers --teacher"](w, whole))
    assert_refused(refused, whole, "pct_pipeline.models.architectures.SmallCNN", w["tmp"] / "none")
    assert not (w["tmp"] / "cache.zarr").exists()
    result = forked(forks, *COMMANDS["precompute-teachers --teacher"](w, whole), "--trust-checkpoint",
                    "--allow-unnamed-classes")
    assert result.returncode == 0, result.stderr
    assert (w["tmp"] / "cache.zarr" / "zarr.json").is_file()
    loaded, classes = models.load_model("cnn_small", whole, 10, trust=True)
    assert classes == 10
    assert_same_weights(loaded, model.state_dict())
    with pytest.raises(PctError, match="--trust-checkpoint"):
        models.load_model("cnn_small", whole, 10)


def test_trust_checkpoint_is_documented_on_each_command(forks):
    for command in ("precompute-teachers", "train", "evaluate"):
        result = forked(forks, command, "--help")
        assert result.returncode == 0
        text = " ".join(result.stdout.split())
        assert "--trust-checkpoint" in text and "runs whatever code" in text, command


# --- the layouts we accept load as data, without --trust-checkpoint ---

def test_old_pct_checkpoint_loads_and_resumes(w, forks):
    cfg = TrainConfig(data=str(w["train"]), val=str(w["val"]), out=str(w["tmp"] / "old"),
                      arch="cnn_small", online_teachers=(("cnn_small", str(w["teacher"])),),
                      model_kwargs=(("width", 8),), epochs=2, lr=0.05, lr_schedule="cosine")
    old = w["tmp"] / "old.pt"
    model = old_pct_checkpoint(old, cfg)
    raw = torch.load(old, map_location="cpu", weights_only=True)  # what load_file does
    assert raw["config"]["loss"]["mode"] is None and raw["epoch"] == 1
    assert_same_weights(models.load_model("cnn_small", old, 10)[0], model.state_dict())
    # through the CLI: --resume restores weights, optimizer, scheduler and RNG, trains epoch 2
    result = forked(forks, *train_args(w["train"], w["val"], w["tmp"] / "run", "--resume", old,
                                 "--epochs", "2", "--lr", "0.05", "--lr-schedule", "cosine"))
    assert result.returncode == 0, result.stderr
    metrics = [json.loads(line) for line in (w["tmp"] / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [2]
    new = torch.load(w["tmp"] / "run" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert new["epoch"] == 2 and new["config"]["resume"] == str(old)
    assert new["config"] == json.loads(json.dumps(new["config"]))  # plain JSON values


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("best", [torch.tensor(76.13), 76.13], ids=["tensor", "float"])
def test_upstream_checkpoint_loads(legacy, best, tmp_path):
    path = tmp_path / "model_best.pth.tar"
    model = upstream_checkpoint(path, legacy, best)
    state = models.read_state_dict(path)
    assert not any(k.startswith("module.") for k in state)
    assert_same_weights(models.load_model("cnn_small", path, 10)[0], model.state_dict())


def test_upstream_checkpoint_evaluates_through_the_cli(w, forks):
    path = w["tmp"] / "model_best.pth.tar"
    upstream_checkpoint(path)
    result = forked(forks, *COMMANDS["evaluate --checkpoint"](w, path))
    assert result.returncode == 2 and "records no class names" in result.stderr
    result = forked(forks, *COMMANDS["evaluate --checkpoint"](w, path), "--allow-unnamed-classes")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("top1 ") and (w["tmp"] / "pred.zarr").is_dir()
    assert "records no class names: its labels are taken to mean the classes" in result.stderr


def test_torchvision_state_dict_loads(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=10)
    path = tmp_path / "mobilenet.pth"
    torch.save(model.state_dict(), path)
    loaded, classes = models.load_model("mobilenet_v3_small", path, 10)
    assert classes == 10
    assert_same_weights(loaded, model.state_dict())

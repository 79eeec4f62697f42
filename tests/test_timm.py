"""timm's architectures as `timm:NAME` (the optional timm extra), on small timm models built
tiny (ResNet-T, MobileNetV3, EfficientNet, a ViT at img_size 32, ConvNeXt): they train,
evaluate and give features of the width `pct models` states, from which their classifier
rebuilds the logits; their input rules; starting from a local weights file; timm's checkpoint
layouts (train.py's dict, a bare state dict, .safetensors) read as data; `pct models --timm`;
the one line without timm; what imports timm; and a timm teacher and a timm student through
precompute-teachers -> cached train (CNA on the teacher's cached features, BCT with its
classifier) -> evaluate, through the real CLI."""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from conftest import pct
from pct_pipeline import models, store
from pct_pipeline.errors import PctError
from pct_pipeline.models.command import describe, models as models_command
from pct_pipeline.options import parse_arch_path
from test_layering import MODULES, imports

timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")

TINY = {"timm:resnet10t": {}, "timm:mobilenetv3_small_050": {}, "timm:efficientnet_b0": {},
        "timm:vit_tiny_patch16_224": {"img_size": 32}, "timm:convnext_atto": {}}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def timm_train_checkpoint(path, model, name, model_kwargs=None, ema=None, gp=None):
    """`model` saved as timm's train.py saves it (CheckpointSaver._save, timm 1.0)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    args = argparse.Namespace(model=name, model_kwargs=dict(model_kwargs or {}), gp=gp, lr=0.1,
                              drop_path=0.1, epochs=3, img_size=None, data_dir="/data/imagenet")
    state = {"epoch": 2, "arch": name, "optimizer": optimizer.state_dict(), "version": 2,
             "args": args, "state_dict": model.state_dict(), "metric": 71.5,
             "saver": {"checkpoint_files": [], "best_epoch": 2, "best_metric": 71.5}}
    if ema is not None:
        state["state_dict_ema"] = ema.state_dict()
    torch.save(state, path)
    return path


def same_weights(model, state, skip=()):
    own = model.state_dict()
    keys = [k for k in state if not k.startswith(skip)]
    return bool(keys) and all(torch.equal(own[k], state[k]) for k in keys)


@pytest.mark.parametrize("arch", list(TINY))
def test_timm_model_trains_evaluates_and_taps_features(arch):
    torch.manual_seed(0)
    model = models.build_model(arch, 10, **TINY[arch])
    lo, exact = models.input_requirement(arch, model, TINY[arch])
    side = exact or lo
    images, labels = torch.randn(2, 3, side, side), torch.tensor([3, 7])
    width = models.feature_dim(model)
    assert describe(arch)["feature_dim"] == width  # `pct models` at 1000 classes, timm's defaults
    layer = model.get_submodule(models.classifier_name(model))
    assert models.classifier_name(model) == models.classifier_key(arch)

    model.eval()
    with torch.no_grad(), models.FeatureTap(model) as tap:
        logits = model(images)
    assert logits.shape == (2, 10) and tap.features.shape == (2, width)
    weight, bias = models.classifier_weights(arch, model.state_dict())
    torch.testing.assert_close(tap.features @ weight.T + bias, logits, atol=1e-4, rtol=1e-4)

    model.train()
    with models.FeatureTap(model) as tap:
        output = model(images)
    assert tap.features.shape == (2, width) and models.aux_loss(output, labels).item() == 0
    before = layer.weight.detach().clone()
    F.cross_entropy(models.main_logits(output), labels).backward()
    torch.optim.SGD(model.parameters(), lr=0.01).step()
    assert not torch.equal(before, layer.weight)


def test_input_rules_name_the_size_and_the_option():
    torch.manual_seed(0)
    convnext = models.build_model("timm:convnext_atto", 10).eval()
    assert models.input_requirement("timm:convnext_atto", convnext) == (32, None)  # its stride
    with torch.no_grad(), pytest.raises(PctError) as err:
        convnext(torch.randn(1, 3, 16, 16))  # timm itself fails here: unpadded 2x2 downsampling
    assert str(err.value) == ("timm:convnext_atto needs inputs of at least 32 px, got 16: "
                              "raise --resolution")
    vit = models.build_model("timm:vit_tiny_patch16_224", 10, img_size=32).eval()
    with torch.no_grad(), pytest.raises(PctError) as err:
        vit(torch.randn(1, 3, 64, 64))
    assert str(err.value) == ("timm:vit_tiny_patch16_224 was built for 32x32 px inputs, got "
                              "64x64: use --resolution 32 or build it with --model-kwargs "
                              "img_size=N")
    with pytest.raises(PctError, match="built for 32x48 px inputs.*img_size=N"):
        models.build_model("timm:vit_tiny_patch16_224", 10, img_size=(32, 48))


@pytest.mark.parametrize("arch, kwargs, message", [
    ("timm:resnet_9000", {}, "unknown architecture 'timm:resnet_9000' (see `pct models --timm`"),
    ("timm:resnet18d.a1_in1k", {}, "without its pretrained tag (timm:resnet18d)"),
    ("timm:resnet10t", {"widht": 3}, "bad model options for timm:resnet10t {'widht': 3}"),
    ("timm:resnet10t", {"pretrained": True}, "pass --model-kwargs pretrained_file=PATH"),
])
def test_bad_names_and_options_are_one_line_errors(arch, kwargs, message):
    with pytest.raises(PctError) as err:
        models.build_model(arch, 10, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_arch_path_values_take_timm_names():
    assert parse_arch_path("timm:convnext_atto=/r/lr=0.1/c.pt", "--teacher") == (
        "timm:convnext_atto", "/r/lr=0.1/c.pt")
    assert parse_arch_path("timm:resnet18d.a1_in1k=c.pth.tar", "--bct-old-model", False) == (
        "timm:resnet18d.a1_in1k", "c.pth.tar")  # read as a name, then refused by name
    assert parse_arch_path("/r/timm=1/c.pt", "--bct-old-model", False) == (None, "/r/timm=1/c.pt")


def test_pretrained_file_gives_the_trunk_and_adapts_the_vit_to_its_img_size(tmp_path):
    torch.manual_seed(1)
    published = timm.create_model("vit_tiny_patch16_224", num_classes=1000)  # 224 px, 1000
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(published.state_dict(), path)
    theirs = published.state_dict()
    model = models.build_model("timm:vit_tiny_patch16_224", 10, img_size=32,
                               pretrained_file=str(path))
    own = model.state_dict()
    assert own["head.weight"].shape == (10, 192) and own["pos_embed"].shape == (1, 5, 192)
    assert not torch.equal(own["pos_embed"][:, :1], torch.zeros(1, 1, 192))
    torch.testing.assert_close(own["pos_embed"][:, :1], theirs["pos_embed"][:, :1])  # class token
    assert same_weights(model, theirs, skip=("head.", "pos_embed"))
    assert "state_dict" not in model.pretrained_cfg  # the config does not keep the weights
    same = models.build_model("timm:vit_tiny_patch16_224", 1000, pretrained_file=str(path))
    assert same_weights(same, theirs)  # 1000 classes: the file's classifier is kept


def test_pretrained_file_in_timm_layout_and_a_file_that_does_not_fit(tmp_path):
    torch.manual_seed(2)
    published = timm.create_model("resnet10t", num_classes=1000)
    path = timm_train_checkpoint(tmp_path / "model_best.pth.tar", published, "resnet10t")
    model = models.build_model("timm:resnet10t", 10, pretrained_file=str(path))
    assert model.fc.weight.shape == (10, 512)
    assert same_weights(model, published.state_dict(), skip=("fc.",))
    with pytest.raises(PctError) as err:
        models.build_model("timm:resnet14t", 10, pretrained_file=str(path))
    assert str(err.value).startswith(f"weights file {path} does not fit timm:resnet14t: ")
    assert "\n" not in str(err.value)


def test_timm_train_checkpoint_is_read_as_data_with_its_arch_and_model_kwargs(tmp_path):
    torch.manual_seed(3)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32)
    ema = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32)
    path = timm_train_checkpoint(tmp_path / "last.pth.tar", model,
                                 "vit_tiny_patch16_224.augreg_in21k",
                                 model_kwargs={"img_size": 32}, ema=ema)
    raw = models.load_file(path)
    assert raw["arch"] == "timm:vit_tiny_patch16_224" and raw["model_kwargs"] == {"img_size": 32}
    assert isinstance(raw["args"], argparse.Namespace) and raw["epoch"] == 2
    loaded, classes = models.load_model(raw["arch"], path, 10)  # img_size 32 from its args
    assert classes == 10 and same_weights(loaded, model.state_dict())  # state_dict, not EMA
    assert not same_weights(loaded, ema.state_dict())


def test_timm_train_checkpoint_builds_with_its_global_pool(tmp_path):
    torch.manual_seed(6)
    model = timm.create_model("resnet10t", num_classes=10, global_pool="catavgmax")  # 2 x 512
    path = timm_train_checkpoint(tmp_path / "cat.pth.tar", model, "resnet10t", gp="catavgmax")
    loaded, _ = models.load_model("timm:resnet10t", path, 10)
    assert models.feature_dim(loaded) == 1024 and same_weights(loaded, model.state_dict())


def test_timm_train_checkpoint_that_runs_code_is_still_refused(tmp_path):
    class RunsShell:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'PWNED'}",)

    torch.manual_seed(4)
    path = timm_train_checkpoint(tmp_path / "evil.pth.tar", timm.create_model("resnet10t"),
                                 "resnet10t", model_kwargs={"x": RunsShell()})
    with pytest.raises(PctError) as err:
        models.load_model("timm:resnet10t", path)
    assert "needs posix.system" in str(err.value) and "argparse" not in str(err.value)
    assert not (tmp_path / "PWNED").exists()


def test_bare_state_dict_and_safetensors_load(tmp_path):
    torch.manual_seed(5)
    model = timm.create_model("mobilenetv3_small_050", num_classes=10)
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "m.pth")
    safetensors_torch.save_file(model.state_dict(), tmp_path / "m.safetensors")
    for name in ("m.pth", "m.safetensors"):
        loaded, classes = models.load_model("timm:mobilenetv3_small_050", tmp_path / name, 10)
        assert classes == 10 and same_weights(loaded, model.state_dict()), name
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(PctError, match="unreadable checkpoint .*bad.safetensors"):
        models.load_file(tmp_path / "bad.safetensors")


def test_pct_models_lists_and_describes_timm_models():
    listed = CliRunner().invoke(models_command, ["--timm"])
    assert listed.exit_code == 0
    names = listed.output.split()
    assert "timm:convnext_atto" in names and len(names) == len(timm.list_models())
    result = CliRunner().invoke(models_command, ["--json", "timm:vit_tiny_patch16_224",
                                                 "timm:convnext_atto", "resnet18"])
    assert result.exit_code == 0, result.output
    vit, convnext, resnet = json.loads(result.output)
    params = sum(p.numel() for p in timm.create_model("vit_tiny_patch16_224").parameters())
    assert vit["params"] == params and vit["feature_dim"] == 192
    assert vit["min_input"] == 224 and vit["exact_input"] and not vit["pretrained"]
    assert convnext["feature_dim"] == 320 and convnext["min_input"] == 32
    assert resnet["params"] == 11_689_512
    table = CliRunner().invoke(models_command, ["timm:convnext_atto"])
    assert table.output.splitlines()[1].split() == ["timm:convnext_atto", "3,695,520", "320",
                                                    ">=32", "no"]
    assert "pretrained_file=PATH" in table.output.splitlines()[2]


NO_TIMM = """
import sys
sys.modules["timm"] = None  # `import timm` raises ImportError, as when it is not installed
from pct_pipeline import models
from pct_pipeline.cli import main
for argv in (["models", "timm:resnet10t"], ["models", "--timm"]):
    try:
        main(argv)
    except SystemExit as exc:
        print("exit", exc.code)
try:
    models.build_model("timm:resnet10t", 10)
except Exception as exc:
    print(type(exc).__name__, exc)
print(models.build_model("resnet18", 10).fc.out_features)
"""


def test_without_timm_a_timm_name_is_one_line_saying_how_to_install_it():
    result = subprocess.run([sys.executable, "-c", NO_TIMM], capture_output=True, text=True)
    install = "which is not installed: pip install 'pct_pipeline[timm]'"
    assert result.stderr.splitlines() == [
        f"pct: error: timm:resnet10t needs the timm package, {install}",
        f"pct: error: pct models --timm needs the timm package, {install}"]
    assert result.stdout.splitlines() == [
        "exit 2", "exit 2", f"PctError timm:resnet10t needs the timm package, {install}", "10"]


def test_only_the_timm_module_imports_timm_and_help_imports_neither():
    importers = {m for m in MODULES if "timm" in imports(m)[0]}
    assert importers == {"models/timm_models.py"}
    code = ("import sys\nimport pct_pipeline.models\nfrom pct_pipeline.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted({'torch', 'timm'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.splitlines()[-1] == "[]", result.stderr


def test_timm_teacher_and_student_through_precompute_train_and_evaluate(
        train_beton, val_beton, tmp_path, capsys):
    """The old model comes from timm's train.py (its checkpoint layout); the new one is a
    different timm ResNet trained by pct train against the cached teacher: CNA on the cached
    features plus BCT with the old classifier (both 512 wide); cache-fidelity takes the new
    one as --student, a second run the old one as --online-teacher; both are evaluated."""
    torch.manual_seed(0)
    old = timm_train_checkpoint(tmp_path / "model_best.pth.tar",
                                timm.create_model("resnet10t", num_classes=10), "resnet10t")
    cache, run, common = tmp_path / "cache.zarr", tmp_path / "run", ["--resolution", 32, "-j", 1]
    code, _, err = pct(capsys, "precompute-teachers", "--data", train_beton, "--teacher",
                       f"timm:resnet10t={old}", "--views", 2, "--out", cache, "--store-features",
                       "--batch-size", 32, "--allow-unnamed-classes", *common)
    assert code == 0, err
    teacher = store.open_store(cache, kind="teacher-cache")
    assert teacher.features(0).shape == (120, 512) and teacher.logits(1).shape == (120, 10)
    assert teacher.attrs["teachers"][0]["arch"] == "timm:resnet10t"

    code, _, err = pct(capsys, "train", "--data", train_beton, "--val", val_beton, "--out", run,
                       "--arch", "timm:resnet18d", "--teacher-cache", cache, "--kd-loss-mode",
                       "cna", "--bct-loss-weight", 0.5, "--bct-old-model",
                       f"timm:resnet10t={old}", "--epochs", 1, "--batch-size", 16,
                       "--print-freq", 0, "--allow-unnamed-classes", *common)
    assert code == 0, err
    metrics = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["fd"] > 0 and metrics["bct"] > 0 and np.isfinite(metrics["loss"])
    assert torch.load(run / "checkpoint.pt", weights_only=True)["arch"] == "timm:resnet18d"

    # the student's gradients against the cache (here its own exact reference) on its views
    code, out, err = pct(capsys, "cache-fidelity", cache, "--exact", cache, "--student",
                         f"timm:resnet18d={run / 'checkpoint.pt'}", "--rows", 40,
                         "--temperature", 4)
    assert code == 0 and f"student: timm:resnet18d={run / 'checkpoint.pt'}" in out, err
    # the same teacher run inside the step instead of the cache
    code, _, err = pct(capsys, "train", "--data", train_beton, "--val", val_beton, "--out",
                       tmp_path / "online", "--arch", "timm:resnet18d", "--online-teacher",
                       f"timm:resnet10t={old}", "--kd-loss-mode", "kl", "--epochs", 1,
                       "--max-steps-per-epoch", 2, "--batch-size", 16, "--print-freq", 0,
                       "--allow-unnamed-classes", *common)
    assert code == 0, err
    online = json.loads((tmp_path / "online" / "metrics.jsonl").read_text().splitlines()[0])
    assert online["fd"] > 0

    for name, ckpt in (("new", run / "checkpoint.pt"), ("old", old)):  # old: arch from its file
        code, out, err = pct(capsys, "evaluate", "--checkpoint", ckpt, "--data", val_beton,
                             "--out", tmp_path / f"{name}.zarr", "--batch-size", 40,
                             "--allow-unnamed-classes", *common)
        assert code == 0 and out.startswith("top1 "), err
    new_pred, old_pred = (store.open_store(tmp_path / f"{name}.zarr", kind="predictions")
                          for name in ("new", "old"))
    assert new_pred.attrs["model"]["arch"] == "timm:resnet18d"
    assert old_pred.attrs["model"]["arch"] == "timm:resnet10t"
    assert new_pred.logits().shape == old_pred.logits().shape == (80, 10)

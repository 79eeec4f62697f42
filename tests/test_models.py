"""Every architecture `pct models` lists: one SGD step and an eval forward at a tiny input,
features of the width `feature_dim` states, the eval logits rebuilt from those features;
auxiliary losses; the ResNet variants; `--pretrained` from the hub cache; `pct models` and the
table it answers from (each row checked against describe() by the test of its architecture);
and a teacher cache made by a stochastic-depth teacher being deterministic.

The heaviest architectures are marked `slow` (deselected by default; run them with
`pytest -m slow tests/test_models.py`)."""
import importlib.metadata
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from click.testing import CliRunner
from torchvision.models.googlenet import GoogLeNetOutputs
from torchvision.models.inception import InceptionOutputs

from conftest import DIGITS
from pct_pipeline import models, store
from pct_pipeline.cli import main
from pct_pipeline.errors import PctError
from pct_pipeline.models import table
from pct_pipeline.models.command import describe, models as models_command, own_rows
from pct_pipeline.models.resnet_variants import AuxOutputs

# The five with >= ~200M parameters: 3.5-8 GB for weights, gradients and momentum, and 3-25 s
# each on one core (all of the others together take ~100 s).
SLOW = {"convnext_large", "regnet_y_128gf", "vit_h_14", "vit_l_16", "vit_l_32"}
AUX_ARCHS = {"googlenet", "inception_v3"} | {a for a in models.available_models()
                                            if a.startswith(("aux_", "mb_"))}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tiny forwards are dominated by thread hand-offs: on a shared 2-core machine two
    intra-op threads made this file ~10x slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(arch):
    """(model with 10 classes, input side): 32 px where the model allows, its minimum otherwise."""
    if arch.startswith("vit_"):
        side = 28 if arch.endswith("_14") else 32  # a multiple of the patch size
        return models.build_model(arch, 10, image_size=side), side
    model = models.build_model(arch, 10)
    if arch == "inception_v3":
        return model, models.INCEPTION_AUX_MIN  # its auxiliary head is trained too
    lo, exact = models.input_requirement(arch, model)
    return model, exact or max(lo, 32)


def all_archs():
    return [pytest.param(a, marks=pytest.mark.slow) if a in SLOW else a
            for a in models.available_models()]


@pytest.mark.parametrize("arch", all_archs())
def test_architecture_trains_evaluates_and_taps_features(arch):
    torch.manual_seed(0)
    model, side = tiny_model(arch)
    images, labels = torch.randn(2, 3, side, side), torch.tensor([3, 7])
    width = models.feature_dim(model)
    row = describe(arch)
    assert row["feature_dim"] == width  # what `pct models` states, at 1000 classes
    assert own_rows()[arch] == row  # and the row it answers from, shipped in table.py
    layer = model.get_submodule(models.classifier_name(model))

    # eval first: one SGD step on 2 images of 32 px can blow up a deep net's BatchNorm
    model.eval()
    with torch.no_grad(), models.FeatureTap(model) as tap:
        logits = model(images)
    assert torch.is_tensor(logits) and logits.shape == (2, 10) and torch.isfinite(logits).all()
    assert tap.features.shape == (2, width)
    if isinstance(layer, torch.nn.Linear):  # the tap is the main classifier's input
        weight, bias = models.classifier_weights(arch, model.state_dict())
        torch.testing.assert_close(tap.features @ weight.T + bias, logits, atol=1e-4, rtol=1e-4)

    model.train()
    with models.FeatureTap(model) as tap:
        output = model(images)
    assert models.main_logits(output).shape == (2, 10)
    assert tap.features.shape == (2, width)
    aux = models.aux_loss(output, labels)
    assert (aux.item() > 0) == (arch in AUX_ARCHS)
    before = layer.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = F.cross_entropy(models.main_logits(output), labels) + aux
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    assert not torch.equal(before, layer.weight)


def test_squeezenet_features_are_the_spatial_mean_of_the_final_conv_input():
    model = models.build_model("squeezenet1_1", 10).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), models.FeatureTap(model) as tap:
        logits = model(images)
        conv_in = model.features(images)
    torch.testing.assert_close(tap.features, conv_in.mean((2, 3)))
    conv = model.classifier[1]
    torch.testing.assert_close(logits, F.relu(conv(conv_in)).mean((2, 3)))
    assert models.classifier_name(model) == "classifier.1" and models.feature_dim(model) == 512


def test_classifier_is_the_main_head_not_an_auxiliary_one():
    assert models.classifier_key("googlenet") == "fc"
    assert models.classifier_key("inception_v3") == "fc"
    assert models.classifier_key("aux_resnet18") == "fc"
    assert models.classifier_key("mb_resnet18") == "heads.0"
    assert models.classifier_key("vit_b_16") == "heads.head"
    assert models.classifier_key("maxvit_t") == "classifier.5"
    assert models.feature_dim(models.shape_only_model("inception_v3")) == 2048  # aux fc: 768


def test_aux_loss_weights():
    torch.manual_seed(0)
    labels = torch.tensor([0, 2, 1])
    main, a1, a2 = torch.randn(3, 3, 4).unbind(0)
    ce = lambda x: F.cross_entropy(x, labels)  # noqa: E731
    torch.testing.assert_close(models.aux_loss(GoogLeNetOutputs(main, a2, a1), labels),
                               0.3 * (ce(a1) + ce(a2)))
    torch.testing.assert_close(models.aux_loss(InceptionOutputs(main, a1), labels), 0.4 * ce(a1))
    torch.testing.assert_close(models.aux_loss(AuxOutputs(main, (a1, a2), 0.5), labels),
                               0.5 * (ce(a1) + ce(a2)))
    assert models.aux_loss(main, labels).item() == 0
    assert models.main_logits(InceptionOutputs(main, a1)) is main


def test_mb_resnet_logits_are_the_mean_of_its_heads_in_training_and_eval():
    torch.manual_seed(0)
    model = models.build_model("mb_resnet18", 5, heads=4, aux_weight=0.25)
    images = torch.randn(2, 3, 32, 32)
    out = model.train()(images)
    assert len(out.aux) == 4 and out.aux_weight == 0.25
    torch.testing.assert_close(out.logits, torch.stack(out.aux).mean(0))
    model.eval()
    with torch.no_grad(), models.FeatureTap(model) as tap:
        logits = model(images)
    heads = torch.stack([head(tap.features) for head in model.heads]).mean(0)
    torch.testing.assert_close(logits, heads)


def test_aux_resnet_heads_sit_on_conv3_and_conv4():
    model = models.build_model("aux_resnet50", 10)
    assert model.aux1.conv.conv.in_channels == 512 and model.aux2.conv.conv.in_channels == 1024
    out = model.train()(torch.randn(2, 3, 32, 32))
    assert isinstance(out, AuxOutputs) and len(out.aux) == 2 and out.aux_weight == 0.3
    assert torch.is_tensor(model.eval()(torch.randn(2, 3, 32, 32)))


def test_stochastic_depth_survival_decays_linearly_from_1_to_half():
    model = models.build_model("resnet50_StoDepth_lineardecay", 10)
    survival = [b.survival for b in model.blocks()]
    assert len(survival) == 16
    np.testing.assert_allclose(survival, np.linspace(1.0, 0.5, 16))


def test_stochastic_depth_with_survival_1_is_torchvision_resnet():
    torch.manual_seed(0)
    model = models.build_model("resnet18_StoDepth_lineardecay", 10, prob_end=1.0)
    plain = torchvision.models.resnet18(num_classes=10)
    plain.load_state_dict(model.state_dict())
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.train()(images), plain.train()(images))
    torch.testing.assert_close(model.eval()(images), plain.eval()(images))


def test_stochastic_depth_drops_blocks_in_training_and_scales_them_in_eval():
    torch.manual_seed(0)
    model = models.build_model("resnet18_StoDepth_lineardecay", 10)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(images), model(images))
        model.train()
        outs = [model(images) for _ in range(8)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])  # blocks were dropped
    for b in model.blocks():  # p = 0: each block is relu(shortcut(x)), in eval and training
        b.survival = 0.0
    model.eval()
    with torch.no_grad():
        x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
        for b in model.blocks():
            x = F.relu(x if b.downsample is None else b.downsample(x))
        torch.testing.assert_close(model(images), model.fc(torch.flatten(model.avgpool(x), 1)))
    model.train()
    F.cross_entropy(model(images), torch.tensor([1, 2])).backward()
    grad = model.layer1[0].conv1.weight.grad  # a dropped branch: zero gradient, not none (DDP)
    assert grad is not None and not grad.any()


def test_input_size_errors_name_the_size_needed():
    torch.manual_seed(0)
    inception = models.build_model("inception_v3", 10)
    with pytest.raises(PctError, match="at least 299 px in training, got 75"):
        inception.train()(torch.randn(2, 3, 75, 75))
    inception.eval()
    too_small = "inception_v3 needs inputs of at least 75 px, got 74"
    with torch.no_grad(), pytest.raises(PctError, match=too_small):
        inception(torch.randn(1, 3, 74, 74))
    with torch.no_grad():
        assert inception(torch.randn(1, 3, 75, 75)).shape == (1, 10)
    vit = models.shape_only_model("vit_b_16", 10)
    with pytest.raises(PctError, match="built for 224x224 px inputs, got 32x32.*image_size"):
        vit(torch.empty(1, 3, 32, 32, device="meta"))


def test_unknown_architecture_and_bad_options_are_one_line_errors():
    with pytest.raises(PctError, match="unknown architecture 'resnet19'"):
        models.build_model("resnet19", 10)
    with pytest.raises(PctError, match="bad model options for resnet18"):
        models.build_model("resnet18", 10, dropout=0.5)
    model = models.build_model("efficientnet_b0", 10, dropout=0.5)  # constructor kwargs pass through
    assert model.classifier[0].p == 0.5


def test_googlenet_checkpoint_without_aux_heads_loads(tmp_path):
    torch.manual_seed(0)
    model = models.build_model("googlenet", 10, aux_logits=False)
    models.save_atomic({"model": model.state_dict(), "arch": "googlenet"}, tmp_path / "g.pt")
    loaded, classes = models.load_model("googlenet", tmp_path / "g.pt", 10)
    assert classes == 10 and loaded.aux1 is None


def fake_hub_file(hub, arch, model):
    """Put `model`'s state dict where torch.hub keeps torchvision's weights for `arch`."""
    url = torchvision.models.get_model_weights(arch).DEFAULT.url
    path = hub / "hub" / "checkpoints" / os.path.basename(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def test_pretrained_without_the_cached_file_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(PctError, match=f"needs torchvision's weights file {expected}"):
        models.build_model("resnet18", 10, pretrained=True)
    with pytest.raises(PctError, match="resnet18-f37072fd.pth"):
        models.build_model("mb_resnet18", 10, pretrained=True)
    with pytest.raises(PctError, match="no published weights"):
        models.build_model("cnn_small", 10, pretrained=True)


@pytest.mark.parametrize("arch", ["resnet18", "resnet18_StoDepth_lineardecay", "mb_resnet18",
                                  "aux_resnet18", "squeezenet1_1", "googlenet"])
def test_pretrained_loads_the_cached_weights_and_replaces_the_classifier(arch, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    base = {"googlenet": "googlenet", "squeezenet1_1": "squeezenet1_1"}.get(arch, "resnet18")
    torch.manual_seed(1)
    kwargs = {"aux_logits": True, "init_weights": True} if base == "googlenet" else {}
    published = torchvision.models.get_model(base, num_classes=1000, **kwargs)
    fake_hub_file(tmp_path, base, published)
    model = models.build_model(arch, 10, pretrained=True)
    head = models.classifier_name(model)
    assert model.get_submodule(head).weight.shape[0] == 10
    own, theirs = model.state_dict(), published.state_dict()
    trunk = [k for k in theirs if not k.startswith(("fc.", "classifier.1", "aux1.fc2", "aux2.fc2"))]
    assert trunk and all(torch.equal(own[k], theirs[k]) for k in trunk)
    same = models.build_model(arch, 1000, pretrained=True) if arch == base else None
    if same is not None:  # 1000 classes: the published classifier is kept
        assert torch.equal(same.state_dict()[f"{head}.weight"], theirs[f"{head}.weight"])


def test_pct_models_json_and_table():
    result = CliRunner().invoke(models_command, ["--json", "resnet18", "squeezenet1_1",
                                                 "inception_v3", "vit_b_16", "mb_resnet50"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["resnet18"]["params"] == 11_689_512  # torchvision's published count
    assert rows["resnet18"]["feature_dim"] == 512 and rows["squeezenet1_1"]["feature_dim"] == 512
    assert rows["inception_v3"]["min_input"] == 75 and rows["mb_resnet50"]["feature_dim"] == 2048
    assert rows["vit_b_16"]["min_input"] == 224 and rows["vit_b_16"]["exact_input"]
    table = CliRunner().invoke(models_command, ["resnet18", "vit_b_16"])
    assert table.exit_code == 0
    assert table.output.splitlines()[1].split()[:3] == ["resnet18", "11,689,512", "512"]
    assert "=224" in table.output.splitlines()[2]


def test_the_shipped_table_names_every_architecture_for_the_installed_torchvision():
    assert table.TORCHVISION == importlib.metadata.version("torchvision")
    assert [row[0] for row in table.ROWS] == models.available_models()
    assert all(len(row) == len(table.FIELDS) for row in table.ROWS)


def test_pct_models_computes_its_rows_under_another_torchvision(monkeypatch):
    """A table made for another torchvision is not used: the rows are computed."""
    monkeypatch.setattr(table, "TORCHVISION", "0.0.0")
    assert own_rows() is None
    result = CliRunner().invoke(models_command, ["--json", "resnet18", "cnn_small"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [describe("resnet18"), describe("cnn_small")]
    assert json.loads(result.output)[0]["params"] == 11_689_512


def test_pct_models_imports_neither_torch_nor_torchvision():
    code = ("import sys\nfrom pct_pipeline.cli import main\ntry:\n    main(['models'])\n"
            "except SystemExit:\n    pass\n"
            "print(sorted({'torch', 'torchvision', 'timm'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[-1] == "[]" and len(lines) == len(table.ROWS) + 3  # header, rows, aux notes
    assert lines[1].split()[:3] == ["cnn_small", "39,088", "32"]


def test_stochastic_depth_teacher_cache_is_deterministic(train_beton, tmp_path):
    torch.manual_seed(0)
    arch = "resnet18_StoDepth_lineardecay"
    model = models.build_model(arch, 10)
    ckpt = tmp_path / "stodepth.pt"
    models.save_atomic({"model": model.state_dict(), "arch": arch, "classes": DIGITS}, ckpt)
    outs = []
    for seed, name in ((1, "a.zarr"), (2, "b.zarr")):
        torch.manual_seed(seed)  # a different global RNG state for each run
        args = ["precompute-teachers", "--data", train_beton, "--teacher", f"{arch}={ckpt}",
                "--views", 2, "--view-seed", 0, "--out", tmp_path / name, "--resolution", 32,
                "--batch-size", 16, "-j", 1, "--store-features"]
        assert main([str(a) for a in args]) is None
        outs.append(store.open_store(tmp_path / name, kind="teacher-cache"))
    a, b = outs
    assert a.features(0).shape[-1] == 512
    for view in range(2):
        assert np.array_equal(a.logits(view), b.logits(view))
        assert np.array_equal(a.features(view), b.features(view))
    assert not np.array_equal(a.logits(0), a.logits(1))  # the views differ


def test_teacher_below_its_minimum_input_is_a_one_line_error(train_beton, tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = tmp_path / "squeeze.pt"
    models.save_atomic({"model": models.build_model("squeezenet1_1", 10).state_dict(),
                        "classes": DIGITS}, ckpt)
    args = ["precompute-teachers", "--data", train_beton, "--teacher", f"squeezenet1_1={ckpt}",
            "--views", 1, "--out", tmp_path / "c.zarr", "--resolution", 16, "--batch-size", 16,
            "-j", 1]
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert err == "pct: error: squeezenet1_1 needs inputs of at least 17 px, got 16: raise --resolution"


def test_pct_train_pretrained_googlenet_trains_its_aux_heads(train_beton, val_beton, tmp_path,
                                                             monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(1)
    published = torchvision.models.googlenet(num_classes=1000, aux_logits=True, init_weights=True)
    fake_hub_file(tmp_path / "torch", "googlenet", published)
    out = tmp_path / "run"
    args = ["train", "--data", train_beton, "--val", val_beton, "--out", out, "--arch",
            "googlenet", "--pretrained", "--epochs", 1, "--max-steps-per-epoch", 2,
            "--batch-size", 16, "--resolution", 32, "-j", 1, "--lr", 0.01, "--print-freq", 0,
            "--save-init-checkpoint"]
    assert main([str(a) for a in args]) is None
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert np.isfinite(metrics["loss"])
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["config"]["pretrained"] and ckpt["model"]["fc.weight"].shape[0] == 10
    assert ckpt["model"]["aux1.fc2.weight"].shape[0] == 10
    init = torch.load(out / "init.pt", map_location="cpu", weights_only=False)["model"]
    for key in ("aux1.fc2.weight", "aux2.fc2.weight"):  # only the aux loss reaches these
        assert not torch.equal(init[key], ckpt["model"][key])

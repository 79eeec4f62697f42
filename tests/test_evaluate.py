"""Predictions are exact float32 logits: bf16 rounding would tie near-equal classes, and those
boundary samples are the ones the negative flip rate counts."""
import numpy as np
import torch

from conftest import DIGITS, run_pct, view_loader
from pct_pipeline import models, store
from pct_pipeline.precompute.run import forward
from pct_pipeline.predictions import predict

# bf16 has 8 significant bits: between 8 and 16 its step is 1/16, so these two round to 10.0
LOW, HIGH = 10.0, 10.03


def near_tie_model():
    """A cnn_small whose logits are its classifier's bias: class 3 -> 10.0, class 5 -> 10.03."""
    model = models.build_model("cnn_small", 10)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.fill_(-1.0)
        model.fc.bias[3], model.fc.bias[5] = LOW, HIGH
    return model.eval()


def test_bf16_ties_the_pair():
    """The premise: computed under bf16 autocast, the two logits become equal."""
    x = torch.rand(4, 3, 16, 16)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = near_tie_model()(x).float()
    assert (logits[:, 3] == logits[:, 5]).all() and (logits.argmax(1) == 3).all()


def test_predict_and_eval_view_precompute_stay_float32_under_autocast(val_beton):
    model = near_tie_model()
    loader = view_loader(val_beton, batch_size=16, resolution=16, workers=1, eval_view=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # even inside a caller's autocast
        batches = list(predict(model, loader))
        teacher = [type("T", (), {"model": model})()]
        images = next(iter(loader))[0]
        exact = forward(teacher, images, False, torch.device("cpu"), exact=True)["members"][0]
    logits = torch.cat([b[0] for b in batches])
    for out in (logits, exact):
        assert out.dtype == torch.float32
        assert (out[:, 5] == torch.tensor(HIGH)).all() and (out[:, 3] == LOW).all()
        assert (out.argmax(1) == 5).all()


def test_evaluate_stores_the_exact_float32_logits(val_beton, tmp_path):
    ckpt = tmp_path / "tie.pt"
    models.save_atomic({"model": near_tie_model().state_dict(), "arch": "cnn_small",
                        "classes": DIGITS}, ckpt)
    out = tmp_path / "pred.zarr"
    result = run_pct("evaluate", "--checkpoint", ckpt, "--data", val_beton, "--resolution", 16, "-j", 1,
                     "--out", out)
    assert result.returncode == 0, result.stderr
    logits = store.open_store(out).logits(0)
    assert logits.dtype == np.float32
    assert (logits[:, 5] == np.float32(HIGH)).all() and (logits[:, 3] == np.float32(LOW)).all()
    assert (logits.argmax(1) == 5).all()


def test_evaluate_a_bare_state_dict_with_arch(val_beton, tmp_path):
    model = near_tie_model()
    ckpt = tmp_path / "bare.pt"
    torch.save(model.state_dict(), ckpt)
    out = tmp_path / "pred.zarr"
    result = run_pct("evaluate", "--checkpoint", ckpt, "--arch", "cnn_small", "--data", val_beton,
                     "--resolution", 16, "-j", 1, "--out", out, "--allow-unnamed-classes")
    assert result.returncode == 0, result.stderr
    preds = store.open_store(out)
    assert (preds.logits(0).argmax(1) == 5).all()
    assert preds.attrs["teachers"] == [{"arch": "cnn_small", "sha256": models.sha256_file(ckpt),
                                        "path": str(ckpt.resolve())}]
    assert preds.attrs["ensemble"] == "mean-logits"

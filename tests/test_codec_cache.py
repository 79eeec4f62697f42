"""Compact teacher caches end to end through the real CLI: `precompute-teachers --codec`, the
store's codec arrays, reference rows and recorded fidelity, refusal to resume with another
codec, cached training from int8 / topk / sample caches, the refusals and the fidelity warning
of `pct train`, and `pct cache-fidelity`."""
import json

import numpy as np
import pytest
import torch

from pct_pipeline import store
from pct_pipeline.store import codecs
from pct_pipeline.models import build_model, save_atomic
from conftest import DIGITS
from test_cli_precompute import assert_one_line_error

RES = 24
LAYOUT = ["--rows-per-chunk", "16", "--chunks-per-shard", "2"]  # 4 shards of the 120 images
TRAIN = ["--arch", "cnn_small", "--batch-size", "16", "--workers", "1", "--lr", "0.05",
         "--print-freq", "0", "--seed", "3"]
FOCAL = ["--kd-alpha", "0.5", "--kd-filter", "old_correct", "--filter-base", "1",
         "--filter-scale", "5"]
FD = ["--kd-loss-mode", "kl", "--kd-temperature", "4", *FOCAL]


def precompute_args(data, teacher, out, *extra):
    return ["precompute-teachers", "--data", data, "--teacher", f"cnn_small={teacher}",
            "--views", 2, "--view-seed", 5, "--resolution", RES, "--batch-size", 32, "-j", 1,
            "--out", out, *LAYOUT, *extra]


def train_args(data, val, out, cache, *extra, epochs=2, steps=3):
    return ["train", "--data", data, "--val", val, "--out", out, "--teacher-cache", cache,
            *TRAIN, "--epochs", epochs, "--max-steps-per-epoch", steps, *extra]


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def caches(train_beton, teacher_ckpt, tmp_path_factory):
    """{name: path} of a float16, an int8 (with --keep-members), a topk:10 and a sample:16@4
    cache of the same views, and the precompute outputs."""
    root = tmp_path_factory.mktemp("codec_caches")
    made, printed = {}, {}
    for name, extra in {"fp16": [], "int8": ["--codec", "int8", "--keep-members"],
                        "topk": ["--codec", "topk:10"], "sample": ["--codec", "sample:16@4"]}.items():
        made[name] = root / f"{name}.zarr"
        printed[name] = run_cli(precompute_args(train_beton, teacher_ckpt, made[name], *extra))
    made["printed"] = printed
    return made


def run_cli(args):
    """(exit status, stdout, stderr) of the `pct` entry point, in this process."""
    import contextlib
    import io

    from pct_pipeline.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_precompute_writes_codec_arrays_attributes_and_fidelity(caches):
    for name in ("int8", "topk", "sample"):
        code, out, err = caches["printed"][name]
        assert code == 0, err
        assert "reference rows" in out and "kl@4" in out, out
    exact = store.open_store(caches["fp16"])
    assert exact.attrs["codec"] == "float16" and "reference_logits" not in exact.group
    logits = exact.logits(0).astype(np.float32)
    expected = {"int8": ("int8", {"codes": 10, "offset": 1, "step": 1}),
                "topk": ("topk:10", {"logprobs": 10, "indices": 10, "lse": 1}),
                "sample": ("sample:16@4", {"indices": 16, "neg_entropy": 1})}
    for name, (codec_name, widths) in expected.items():
        cache = store.open_store(caches[name])
        codec = codecs.from_attrs(cache.attrs)
        assert codec.name == codec_name and cache.attrs["config"]["codec"] == codec_name
        assert "logits" not in cache.group and cache.attrs["num_shards"] == 4
        for array, width in widths.items():
            a = cache.group[array]
            assert a.shape == (2, 120, width) and a.chunks == (1, 16, width)
            assert a.shards == (1, 32, width)  # sharded like the float16 cache's logits
        rows, reference, stored = cache.reference()
        assert np.array_equal(rows, np.arange(120))  # 1,000 asked, 120 there
        np.testing.assert_allclose(reference, logits, rtol=1e-3, atol=1e-6)
        recorded = cache.attrs["fidelity"]
        keys = {"kl@4"} if name == "sample" else {"kl@1", "kl@4", "kl@100", "l2", "li"}
        assert recorded["rows"] == 120 and set(recorded["settings"]) == keys
        if codec.dense:  # the stored rows decode to the teacher's logits
            decoded = codec.decode({k: cache.group[k][0] for k in widths}, 10)
            step = np.ptp(logits, axis=1, keepdims=True) / 255
            tolerance = step / 2 + 2e-3 if name == "int8" else 5e-3 * (1 + np.abs(logits))
            assert (np.abs(decoded - logits) <= tolerance).all()
    members = store.open_store(caches["int8"]).group["member_logits"]
    assert members.dtype == np.float16 and members.shape == (1, 2, 120, 10)


def test_resume_with_another_codec_and_bad_names_are_refused(caches, train_beton, teacher_ckpt,
                                                             tmp_path):
    code, out, err = run_cli(precompute_args(train_beton, teacher_ckpt, caches["int8"],
                                             "--codec", "topk:10", "--keep-members"))
    assert_one_line_error(code, err, "made by a different command", "codec is 'int8' there",
                          "'topk:10' here")
    code, out, err = run_cli(precompute_args(train_beton, teacher_ckpt, caches["fp16"],
                                             "--codec", "int8"))
    assert_one_line_error(code, err, "codec is 'float16' there, 'int8' here")
    code, out, err = run_cli(precompute_args(train_beton, teacher_ckpt, tmp_path / "x.zarr",
                                             "--codec", "int4"))
    assert_one_line_error(code, err, "unknown teacher cache codec 'int4'", "topk:K")
    code, out, err = run_cli(precompute_args(train_beton, teacher_ckpt, tmp_path / "x.zarr",
                                             "--codec", "int8", "--dtype", "float32"))
    assert_one_line_error(code, err, "--codec int8", "--dtype float32")
    # the same command resumes (nothing to compute) and prints the recorded fidelity again
    code, out, err = run_cli(precompute_args(train_beton, teacher_ckpt, caches["topk"],
                                             "--codec", "topk:10"))
    assert code == 0 and "was already complete" in out and "kl@100" in out, err


def test_int8_cache_trains_like_the_float16_cache(caches, train_beton, val_beton, tmp_path):
    # one step from the same weights on the same batch: the losses differ by the codec only
    # (later steps would add the drift of two trainings apart)
    for name in ("fp16", "int8"):
        code, _, err = run_cli(train_args(train_beton, val_beton, tmp_path / name, caches[name],
                                          "--kd-loss-mode", "kl", "--kd-temperature", "100",
                                          *FOCAL, epochs=1, steps=1))
        assert code == 0 and "warning" not in err, err
    exact, int8 = metrics(tmp_path / "fp16"), metrics(tmp_path / "int8")
    recorded = store.open_store(caches["int8"]).attrs["fidelity"]["settings"]["kl@100"]
    bound = recorded["loss_rel_error"]["p95"]  # the measured per-sample loss error
    assert len(exact) == len(int8) == 1
    for a, b in zip(exact, int8):
        assert a["fd"] > 0 and abs(a["fd"] - b["fd"]) <= bound * a["fd"]
        assert abs(a["loss"] - b["loss"]) <= bound * a["loss"]


def test_topk_and_sample_caches_train(caches, train_beton, val_beton, tmp_path):
    code, _, err = run_cli(train_args(train_beton, val_beton, tmp_path / "topk", caches["topk"],
                                      *FD, epochs=1))
    assert code == 0, err
    assert metrics(tmp_path / "topk")[0]["fd"] > 0
    sampled = ["--kd-loss-mode", "kl", "--kd-temperature", "4", "--kd-alpha", "0.5",
               "--kd-filter", "new_incorrect", "--filter-base", "1"]
    code, _, err = run_cli(train_args(train_beton, val_beton, tmp_path / "sample", caches["sample"],
                                      *sampled, epochs=1))
    assert code == 0, err
    assert all(np.isfinite(m["fd"]) and m["fd"] != 0 for m in metrics(tmp_path / "sample"))
    # one sampled codec per sample at T = 4 on a near-flat teacher: a noisy per-sample gradient
    assert err.count("pct: warning:") == 1 and "sample:16@4" in err


@pytest.mark.parametrize("extra, words", [
    (["--kd-loss-mode", "li"], ["sample:16@4", "kd loss mode li", "every class's logit"]),
    (["--kd-loss-mode", "kl", "--kd-temperature", "1"], ["temperature 4", "kd temperature 1"]),
    (FD, ["--kd-filter old_correct", "teacher's argmax"]),
])
def test_sample_cache_refuses_what_it_cannot_serve(extra, words, caches, train_beton, val_beton,
                                                   tmp_path):
    code, _, err = run_cli(train_args(train_beton, val_beton, tmp_path / "r", caches["sample"],
                                      *extra))
    assert_one_line_error(code, err, *words)
    assert not (tmp_path / "r").exists()  # refused before the run folder is made


def test_topk_refuses_l2_and_warns_at_high_temperature(caches, train_beton, val_beton,
                                                       teacher_ckpt, tmp_path):
    code, _, err = run_cli(train_args(train_beton, val_beton, tmp_path / "l2", caches["topk"],
                                      "--kd-loss-mode", "l2"))
    assert_one_line_error(code, err, "topk:10", "--kd-loss-mode l2 needs every class's logit")
    # A confident teacher (its classifier scaled up) whose dropped classes matter at T = 100.
    state = torch.load(teacher_ckpt, weights_only=True)["model"]
    state = {k: v * 30 if k.startswith("fc.") else v for k, v in state.items()}
    sharp = tmp_path / "sharp.pt"
    save_atomic({"model": state, "arch": "cnn_small", "classes": DIGITS}, sharp)
    cache = tmp_path / "sharp_topk.zarr"
    code, out, err = run_cli(precompute_args(train_beton, sharp, cache, "--codec", "topk:5"))
    assert code == 0, err
    settings = store.open_store(cache).attrs["fidelity"]["settings"]
    assert settings["kl@100"]["gradient"]["cosine"]["median"] < 0.99
    assert settings["kl@1"]["gradient"]["cosine"]["median"] >= 0.99
    for t, warned in (("100", True), ("1", False)):
        code, _, err = run_cli(train_args(train_beton, val_beton, tmp_path / f"t{t}", cache,
                                          "--kd-loss-mode", "kl", "--kd-temperature", t,
                                          epochs=1, steps=1))
        assert code == 0, err
        warnings = [line for line in err.splitlines() if line.startswith("pct: warning:")]
        assert len(warnings) == warned, err
        if warned:
            assert "topk:5" in warnings[0] and "T=100" in warnings[0] and "< 0.99" in warnings[0]


def test_cache_fidelity_command(caches, train_beton, tmp_path):
    code, out, err = run_cli(["cache-fidelity", caches["topk"]])
    assert code == 0, err
    assert "reference rows" in out and "N(0, 1)" in out
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["kl@1", "kl@4", "kl@100"]
    report = tmp_path / "f.json"
    code, out, err = run_cli(["cache-fidelity", caches["int8"], "--exact", caches["fp16"],
                              "--temperature", "4", "--rows", "40", "--json", report])
    assert code == 0, err
    got = json.loads(report.read_text())
    assert got["codec"] == "int8" and got["rows"] == 40 and list(got["settings"]) == ["kl@4"]
    recorded = got["recorded"]["settings"]["kl@4"]  # measured on the float32 reference rows
    assert got["settings"]["kl@4"]["gradient"]["cosine"]["median"] == pytest.approx(
        recorded["gradient"]["cosine"]["median"], abs=1e-3)
    assert got["settings"]["kl@4"]["top1_agreement"] == 1.0
    # a real student run on the same views, and li
    torch.manual_seed(7)
    student = tmp_path / "student.pt"
    save_atomic({"model": build_model("cnn_small", 10).state_dict(), "classes": DIGITS}, student)
    code, out, err = run_cli(["cache-fidelity", caches["int8"], "--exact", caches["fp16"],
                              "--student", f"cnn_small={student}", "--mode", "l2"])
    assert code == 0, err
    assert f"student: cnn_small={student}" in out and out.splitlines()[2].split()[0] == "l2"
    cosine = float(out.splitlines()[2].split()[4])
    assert cosine > 0.99
    for args, words in (([caches["fp16"]], ["keeps no exact reference rows", "--exact"]),
                        ([caches["int8"], "--exact", caches["topk"]], ["itself a compact cache"]),
                        ([caches["sample"], "--temperature", "1"], ["cannot serve kd temperature 1"])):
        code, _, err = run_cli(["cache-fidelity", *args])
        assert_one_line_error(code, err, *words)

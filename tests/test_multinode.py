"""Two nodes for real: two `torchrun --nnodes 2 --nproc-per-node 2` launchers on this machine
(c10d rendezvous on localhost), each its own node, run precompute-teachers, cached training
and evaluate as one 4-rank job. The cache is byte-identical to a 1-process run (15 shards over
4 ranks), the parameters stay identical on all 4 ranks, the predictions equal a 1-process
evaluate, and nothing is left in node-local shared memory."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import free_port, run_pct
from pct_pipeline import store
from pct_pipeline.train.shared_view import shared_dir
from test_precompute import assert_same_store

ENV = dict(os.environ, OMP_NUM_THREADS="1")
RES = 24


def two_nodes(*args, timeout=600):
    """Run `pct ARGS` as 2 nodes x 2 processes; returns the two launchers' (stdout, stderr)."""
    torchrun = Path(sys.executable).parent / "torchrun"
    endpoint = f"127.0.0.1:{free_port()}"
    launchers = [subprocess.Popen(
        [str(torchrun), "--nnodes", "2", "--nproc-per-node", "2", "--node-rank", str(node),
         "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "pct-test",
         "-m", "pct_pipeline", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV) for node in (0, 1)]
    outputs = [launcher.communicate(timeout=timeout) for launcher in launchers]
    for launcher, (_, err) in zip(launchers, outputs):
        assert launcher.returncode == 0, err[-3000:]
    return outputs


def shared_files():
    return {p for p in os.listdir(shared_dir()) if p.startswith("pct-")}


def test_two_nodes_precompute_train_evaluate(train_beton, val_beton, teacher_ckpt, tmp_path):
    before = shared_files()
    precompute = ["precompute-teachers", "--data", train_beton, "--teacher", f"cnn_small={teacher_ckpt}",
                  "--views", 2, "--resolution", RES, "--batch-size", 8, "-j", 1, "--rows-per-chunk", 8,
                  "--chunks-per-shard", 1, "--store-features", "--out"]
    outputs = two_nodes(*precompute, tmp_path / "four.zarr")
    assert any("240 images computed" in out for out, _ in outputs)
    single = run_pct(*precompute, tmp_path / "one.zarr", env=ENV)
    assert single.returncode == 0, single.stderr
    assert store.open_store(tmp_path / "four.zarr").attrs["num_shards"] == 15
    assert_same_store(tmp_path / "four.zarr", tmp_path / "one.zarr")

    run = tmp_path / "run"
    outputs = two_nodes("train", "--data", train_beton, "--val", val_beton, "--out", run, "--arch",
                        "cnn_small", "--batch-size", 8, "-j", 1, "--epochs", 2, "--print-freq", 0,
                        "--teacher-cache", tmp_path / "four.zarr", "--kd-loss-mode", "cna",
                        "--kd-alpha", "0.5")
    assert any("parameters identical on all 4 ranks" in out for out, _ in outputs), outputs
    predictions = store.open_store(run / "predictions.zarr")
    assert predictions.logits(0).dtype == np.float32 and predictions.attrs["kind"] == "predictions"

    two_nodes("evaluate", "--checkpoint", run / "checkpoint.pt", "--data", val_beton, "--resolution", RES,
              "-j", 1, "--batch-size", 4, "--rows-per-chunk", 8, "--out", tmp_path / "four_pred.zarr")
    one = run_pct("evaluate", "--checkpoint", run / "checkpoint.pt", "--data", val_beton, "--resolution",
                  RES, "-j", 1, "--out", tmp_path / "one_pred.zarr", env=ENV)
    assert one.returncode == 0, one.stderr
    four, single = store.open_store(tmp_path / "four_pred.zarr"), store.open_store(tmp_path / "one_pred.zarr")
    assert four.attrs["num_shards"] == 10  # 80 rows in shards of 8, written by 4 ranks
    for other in (single, predictions):  # same model and pixels, other batches
        np.testing.assert_allclose(four.logits(0), other.logits(0), rtol=1e-5, atol=1e-5)
        assert np.array_equal(four.labels, other.labels)
    assert shared_files() == before

"""What `pct precompute-teachers` says, through the real CLI: the teachers' top-1 on each view
it stores (also the attribute `teacher_top1`, equal to the argmax of the stored logits against
the labels, and the same after a resume as in one go), that a finished store was already
complete, and how much of a resumed store was already written."""
import numpy as np
import zarr

from conftest import pct
from pct_pipeline import store

LAYOUT = ["--rows-per-chunk", 16, "--chunks-per-shard", 2]  # 120 rows: 4 shards of 32


def precompute(capsys, data, teacher, out, *extra):
    code, out_text, err = pct(capsys, "precompute-teachers", "--data", data, "--teacher",
                              f"cnn_small={teacher}", "--resolution", 16, "--batch-size", 16,
                              "-j", 1, "--out", out, *LAYOUT, *extra)
    assert code == 0, err
    return out_text


def stored_top1(path):
    """[V] top-1 of the argmax of each view's stored logits against the store's labels."""
    cache = store.open_store(path)
    return [float(np.mean(np.asarray(cache.logits(v)).argmax(axis=1) == cache.labels))
            for v in range(cache.views)]


def test_teacher_top1_of_a_cache_and_of_predictions(capsys, train_beton, val_beton,
                                                     teacher_ckpt, tmp_path):
    cache = tmp_path / "cache.zarr"
    said = precompute(capsys, train_beton, teacher_ckpt, cache, "--views", 2)
    expected = stored_top1(cache)
    recorded = store.open_store(cache).attrs["teacher_top1"]
    assert [r["top1"] for r in recorded] == expected and [r["images"] for r in recorded] == [120] * 2
    assert (f"teacher top-1 (argmax of the stored logits): view 0 {expected[0]:.4f}, view 1 "
            f"{expected[1]:.4f} (120 images each)") in said
    predictions = tmp_path / "pred.zarr"
    said = precompute(capsys, val_beton, teacher_ckpt, predictions, "--eval-view")
    (top1,) = stored_top1(predictions)
    assert store.open_store(predictions).attrs["teacher_top1"] == [{"top1": top1, "images": 80}]
    assert f"on the eval view: {top1:.4f} (80 images)" in said


def test_rerun_says_complete_and_resume_says_what_was_done(capsys, train_beton, teacher_ckpt,
                                                           tmp_path):
    out = tmp_path / "c.zarr"
    precompute(capsys, train_beton, teacher_ckpt, out, "--views", 2)
    whole = store.open_store(out).attrs["teacher_top1"]
    said = precompute(capsys, train_beton, teacher_ckpt, out, "--views", 2)
    assert f"{out} was already complete (120 samples x 2 views): nothing to compute" in said
    assert "images computed" not in said
    group = zarr.open_group(str(out), mode="r+")
    group["done"][1, 2] = False  # as after a crash: one unit of eight not marked
    group["done"][0, 0] = False
    said = precompute(capsys, train_beton, teacher_ckpt, out, "--views", 2)
    assert f"resuming {out}: 6 of 8 units (view, shard) were already written; computing the " \
           f"other 2" in said
    assert "64 images computed" in said  # shards 0 and 2: 32 rows each
    assert store.open_store(out).attrs["teacher_top1"] == whole  # read back, not recounted

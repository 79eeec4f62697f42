"""Nothing is read that was not written: stores are read only where their writers recorded what
they wrote, .beton files are matched by the bytes of their images, images of every pixel type
are stored with their range, and stores written before records existed are read with a note
(or, to be resumed, refused). The one-line refusals of the CLI are in tests/test_faults_*.py."""
import json
import shutil
import zlib

import numpy as np
import pytest
import zarr
from PIL import Image

from conftest import pct, run_pct, view_loader
from faults import copy_beton
from pct_pipeline import store, views
from pct_pipeline.dataset import BetonInfo, write_beton
from pct_pipeline.errors import PctError

RES = 16


@pytest.fixture(scope="module")
def pred(val_beton, teacher_ckpt, tmp_path_factory):
    """A predictions store of the validation images, 4 shards of 16 rows (80 images)."""
    out = tmp_path_factory.mktemp("pred") / "pred.zarr"
    code, _, err = pct(None, "precompute-teachers", "--data", val_beton, "--teacher",
                       f"cnn_small={teacher_ckpt}", "--eval-view", "--resolution", RES,
                       "--out", out, "-j", 1, "--rows-per-chunk", 16, "--chunks-per-shard", 1)
    assert code == 0, err
    return out


def test_every_unit_records_its_objects_and_the_reader_holds_them_to_it(pred, tmp_path):
    attrs = store.open_store(pred).attrs
    assert attrs["unit_arrays"] == ["logits", "crops"] and attrs["num_shards"] == 5
    records = zarr.open_group(str(pred), mode="r")["unit_records"][...]
    for shard in range(5):
        for slot, (size, crc) in zip(("logits", "crops"), records[0, shard]):
            data = (pred / slot / "c" / "0" / str(shard) / "0").read_bytes()
            assert size == len(data) and crc == zlib.crc32(data)
    # same size, other bytes: refused when read, naming the rows
    altered = tmp_path / "altered.zarr"
    shutil.copytree(pred, altered)
    chunk = altered / "logits" / "c" / "0" / "2" / "0"
    data = bytearray(chunk.read_bytes())
    data[-5] ^= 1
    chunk.write_bytes(bytes(data))
    opened = store.open_store(altered)  # the listing still matches
    with pytest.raises(store.UnwrittenData, match=r"array 'logits', view 0, rows 32-47: object "
                                                  r"logits/c/0/2/0 was altered"):
        opened.logits(0)
    with pytest.raises(store.UnwrittenData, match="rows 32-47"):
        opened.verify()
    opened.verify(part=1, parts=2)  # units 1 and 3: untouched
    # a deleted object: refused at open, before anything is read
    (altered / "crops" / "c" / "0" / "4" / "0").unlink()
    with pytest.raises(store.UnwrittenData, match=r"array 'crops', view 0, rows 64-79: object "
                                                  r"crops/c/0/4/0 is missing"):
        store.open_store(altered)


def test_an_all_zero_unit_is_written_and_recorded(tmp_path):
    """zarr skips chunks equal to the fill value; a store writes them, so their absence is never
    legitimate."""
    path = tmp_path / "zeros.zarr"
    labels = np.zeros(10, np.int64)  # labels and logits all equal to the fill value 0
    store.create_store(path, "predictions", labels, store.Contents(views=1, num_classes=3),
                       {"split": "val"})
    store.write_unit(path, 0, 0, {"logits": np.zeros((10, 3), np.float16),
                                  "crops": np.zeros((10, 5), np.int32)})
    opened = store.open_store(path)
    assert (opened.logits(0) == 0).all() and (opened.labels == 0).all()
    assert (path / "logits" / "c" / "0" / "0" / "0").is_file()
    assert (path / "labels" / "c" / "0").is_file()


def schema_one(source, path):
    """A copy of store `source` as stores were before write records: no `unit_records`, schema
    version 1."""
    shutil.copytree(source, path)
    shutil.rmtree(path / "unit_records")
    group = zarr.open_group(str(path), mode="r+")
    attrs = group.attrs.asdict()
    for key in ("unit_arrays", "labels_record"):
        attrs.pop(key)
    attrs["schema_version"] = 1
    group.attrs.put(attrs)
    return path


def test_a_store_written_before_records_is_read_with_a_note(pred, tmp_path):
    old = schema_one(pred, tmp_path / "old.zarr")
    result = run_pct("analyze", old, pred, "--bootstrap", 0)
    assert result.returncode == 0, result.stderr
    assert f"pct: note: store {old} was written before stores recorded what they hold" in \
        result.stderr
    assert "negative flips" in result.stdout.lower()


def test_a_store_written_before_records_is_not_resumed(val_beton, teacher_ckpt, pred, tmp_path):
    old = schema_one(pred, tmp_path / "old.zarr")
    result = run_pct("precompute-teachers", "--data", val_beton, "--teacher",
                     f"cnn_small={teacher_ckpt}", "--eval-view", "--resolution", RES,
                     "--out", old, "-j", 1, "--rows-per-chunk", 16, "--chunks-per-shard", 1)
    assert result.returncode == 2
    assert f"{old} was written by an earlier version of pct (store schema 1); use --overwrite" \
        in result.stderr


def image_tree(root, images):
    """An ImageFolder of two classes, `images` {name: PIL image} in class a, one RGB in b."""
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
    for name, image in images.items():
        image.save(root / "a" / name)
    Image.new("RGB", (6, 6), (10, 20, 30)).save(root / "b" / "x.png")
    return root


def stored_pixels(beton, rows):
    """uint8 [H, W, 3] of each row as the loader decodes it at its own size (eval view, crop
    ratio 1)."""
    info = BetonInfo(beton)
    out = {}
    for row in rows:
        loader = view_loader(beton, batch_size=1, resolution=int(info.heights[row]),
                             eval_view=True, crop_ratio=1.0, indices=[row])
        images = next(iter(loader))[0]
        mean = np.asarray(views.IMAGENET_MEAN, np.float32)[:, None, None]
        std = np.asarray(views.IMAGENET_STD, np.float32)[:, None, None]
        out[row] = np.rint(images[0].numpy() * std + mean).astype(np.uint8).transpose(1, 2, 0)
    return out


def test_16_bit_and_float_images_are_stored_with_their_range(tmp_path):
    ramp16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1040)  # 0 .. 65520
    ramp_f = (np.arange(64, dtype=np.float32).reshape(8, 8) / 63)  # 0 .. 1
    tree = image_tree(tmp_path / "tree", {"p16.png": Image.fromarray(ramp16),
                                          "pf.tiff": Image.fromarray(ramp_f)})
    out = tmp_path / "o.beton"
    write_beton(tree, out, max_resolution=32, image_format="raw", workers=1)
    got = stored_pixels(out, [0, 1])  # sorted names: p16.png, pf.tiff
    assert np.array_equal(got[0][:, :, 0], np.rint(ramp16 / 257).astype(np.uint8))
    assert np.array_equal(got[1][:, :, 0], np.rint(ramp_f * 255).astype(np.uint8))
    assert got[0][:, :, 0].max() == 255 and got[0][:, :, 0].min() == 0


def test_skip_bad_leaves_out_what_cannot_be_stored_and_counts_it(tmp_path):
    images = {"ok.png": Image.new("RGB", (8, 8), (1, 2, 3)),
              "thin.png": Image.new("RGB", (3000, 2)),
              "hot.tiff": Image.fromarray(np.full((4, 4), 2.0, np.float32)),
              "broken.png": None}
    tree = image_tree(tmp_path / "tree", {k: v for k, v in images.items() if v is not None})
    (tree / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = run_pct("write-dataset", tree, tmp_path / "o.beton", "--max-resolution", 32, "-j", 1,
                     "--skip-bad")
    assert result.returncode == 0, result.stderr
    assert "2 images, 2 classes, 3 skipped" in result.stdout
    assert "left out 3 image(s) that cannot be stored" in result.stderr


def test_the_fingerprint_follows_the_stored_bytes(small_tree, train_beton, tmp_path):
    info = BetonInfo(train_beton)
    # the same images written again by two processes: the same fingerprint
    again = tmp_path / "again.beton"
    write_beton(small_tree, again, max_resolution=32, workers=2)
    assert BetonInfo(again).fingerprint["images_sha256"] == info.fingerprint["images_sha256"]
    # the same sizes and labels, other bytes (and no record of them): another fingerprint,
    # computed from the file itself
    other = tmp_path / "other.beton"
    shutil.copy(train_beton, other)
    data = np.memmap(other, dtype=np.uint8, mode="r+")
    from ffcv.reader import Reader

    from pct_pipeline.dataset.reader import _image_table

    _, _, ptrs, sizes = _image_table(Reader(str(other)))
    data[ptrs[5] + sizes[5] // 2] ^= 0xFF
    data.flush()
    assert BetonInfo(other).fingerprint["images_sha256"] != info.fingerprint["images_sha256"]
    # a record that belongs to another file is refused
    copy_beton(again, tmp_path / "third.beton")
    sidecar = json.loads((tmp_path / "third.beton.json").read_text())
    sidecar["fingerprint"]["shapes_sha256"] = "0" * 64
    (tmp_path / "third.beton.json").write_text(json.dumps(sidecar))
    with pytest.raises(PctError, match=r"third.beton.json does not describe .*third.beton"):
        BetonInfo(tmp_path / "third.beton")

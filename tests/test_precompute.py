"""Precompute in-process: the cache reproduces what the teacher outputs on the training loader's
pixels (the project's core claim), eval-view prediction stores, ensembles, features, resume,
and byte-identity across batch sizes and worker counts."""
import numpy as np
import pytest
import torch

from conftest import precompute_config
from pct_pipeline import models, store
from pct_pipeline.dataset import BetonInfo, Shuffle, ViewLoader
from pct_pipeline.errors import PctError
from pct_pipeline.precompute.run import run
from pct_pipeline.views import ViewSpec

RES = 24
# 16 rows per chunk, 2 chunks per shard: the 120-image data set has 4 shards (32, 32, 32, 24).
LAYOUT = dict(rows_per_chunk=16, chunks_per_shard=2)


@pytest.fixture(scope="module")
def second_ckpt(tmp_path_factory):
    """Another cnn_small, saved as a bare DDP-style state dict ('module.' prefixes)."""
    torch.manual_seed(1)
    model = models.build_model("cnn_small", 10)
    path = tmp_path_factory.mktemp("second") / "second.pt"
    models.save_atomic({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    return path


def precompute(data, out, ckpts, **options):
    """Run the stage in this process; returns the opened (complete) store."""
    settings = dict(resolution=RES, batch_size=16, workers=1, allow_unnamed_classes=True,
                    **LAYOUT)
    settings.update(options)
    run(precompute_config(data, out, [("cnn_small", str(c)) for c in ckpts], **settings))
    return store.open_store(out)


def teacher_outputs(ckpt, images):
    """(logits float32 [B, C], features float32 [B, D]) of a checkpoint on CPU in fp32."""
    model, _ = models.load_model("cnn_small", ckpt, 10)
    with torch.inference_mode(), models.FeatureTap(model) as tap:
        logits = model(images)
    return logits.numpy(), tap.features.numpy()


def assert_fp16_close(cached, reference):
    """`cached` equals `reference` up to float16 rounding (half an ulp is ~4.9e-4 relative)."""
    np.testing.assert_allclose(cached.astype(np.float32), reference, rtol=1e-3, atol=1e-6)


def training_batches(beton, view, view_seed=0, batch_size=32, **kw):
    """Batches of a training-style loader: random order (seeded per epoch), view `view`."""
    spec = ViewSpec(resolution=RES, view_seed=view_seed, **kw)
    loader = ViewLoader(beton, spec, batch_size, workers=1, shuffle=Shuffle(5, drop_last=False))
    loader.set_view(view)
    loader.set_epoch(view + 1)
    return list(loader)


def test_cache_reproduces_teacher_on_training_pixels(train_beton, teacher_ckpt, tmp_path):
    cache = precompute(train_beton, tmp_path / "cache.zarr", [teacher_ckpt], views=3, view_seed=7)
    info = BetonInfo(train_beton)
    assert cache.logits(0).dtype == np.float16 and cache.logits(0).shape == (120, 10)
    assert np.array_equal(cache.labels, info.labels)
    for view in range(3):
        for images, labels, indices in training_batches(train_beton, view, view_seed=7):
            rows = indices.numpy()
            logits, _ = teacher_outputs(teacher_ckpt, images)
            assert_fp16_close(cache.logits(view)[rows], logits)
            assert np.array_equal(cache.labels[rows], labels.numpy())
        expected = ViewSpec(resolution=RES, view_seed=7).boxes(view, info.heights, info.widths)
        assert np.array_equal(cache.crops(view), expected)
    # The views really differ, so matching them above is not a coincidence.
    assert np.abs(cache.logits(0).astype(np.float32) - cache.logits(1)).max() > 1e-2


def test_store_attributes(train_beton, teacher_ckpt, tmp_path):
    cache = precompute(train_beton, tmp_path / "cache.zarr", [teacher_ckpt], views=2, view_seed=3,
                       scale=(0.3, 1.0), ratio=(0.5, 2.0))
    attrs, info = cache.attrs, BetonInfo(train_beton)
    assert attrs["kind"] == "teacher-cache" and attrs["split"] == "train"
    assert (attrs["views"], attrs["view_seed"], attrs["resolution"]) == (2, 3, RES)
    assert attrs["scale"] == [0.3, 1.0] and attrs["ratio"] == [0.5, 2.0]
    assert attrs["eval_view"] is False and attrs["ensemble"] == "mean-logits"
    assert attrs["teachers"] == [{"arch": "cnn_small", "sha256": models.sha256_file(teacher_ckpt),
                                  "path": str(teacher_ckpt.resolve())}]
    assert attrs["dataset"] == dict(info.fingerprint, classes=info.classes)
    assert attrs["num_shards"] == 4 and attrs["num_classes"] == 10
    assert attrs["config"]["batch_size"] == 16 and attrs["config"]["teachers"] == [
        ["cnn_small", str(teacher_ckpt)]]
    assert not cache.has_features and "member_logits" not in cache.group


def test_eval_view_writes_a_prediction_store(val_beton, teacher_ckpt, tmp_path):
    preds = precompute(val_beton, tmp_path / "old.zarr", [teacher_ckpt], eval_view=True,
                       crop_ratio=0.75)
    preds = store.open_store(tmp_path / "old.zarr", kind="predictions")
    assert preds.views == 1 and preds.attrs["eval_view"] is True and preds.attrs["split"] == "val"
    spec = ViewSpec.centre(RES, 0.75)
    loader = ViewLoader(val_beton, spec, 24, workers=1, shuffle=Shuffle(1, drop_last=False))
    for images, _, indices in loader:
        logits, _ = teacher_outputs(teacher_ckpt, images)
        assert_fp16_close(preds.logits(0)[indices.numpy()], logits)
    info = BetonInfo(val_beton)
    assert np.array_equal(preds.crops(0), spec.boxes(0, info.heights, info.widths))


def test_ensemble_mean_members_and_features(train_beton, teacher_ckpt, second_ckpt, tmp_path):
    ckpts = [teacher_ckpt, second_ckpt]
    cache = precompute(train_beton, tmp_path / "ens.zarr", ckpts, views=2, store_features=True,
                       keep_members=True)
    assert cache.feature_dim == 32 and cache.group["member_logits"].shape == (2, 2, 120, 10)
    assert [t["arch"] for t in cache.attrs["teachers"]] == ["cnn_small", "cnn_small"]
    for view in range(2):
        for images, _, indices in training_batches(train_beton, view, batch_size=40):
            rows = indices.numpy()
            (l0, f0), (l1, f1) = (teacher_outputs(c, images) for c in ckpts)
            assert_fp16_close(cache.logits(view)[rows], (l0 + l1) / 2)
            assert_fp16_close(cache.features(view)[rows], (f0 + f1) / 2)
            assert_fp16_close(cache.member_logits(0, view)[rows], l0)
            assert_fp16_close(cache.member_logits(1, view)[rows], l1)
    assert np.abs(cache.member_logits(0, 0).astype(np.float32) - cache.member_logits(1, 0)).max() > 1e-2


def arrays(location):
    """{name: numpy array} of every array in a store (a path or a URL), complete or not."""
    group = store.open_group(location)
    return {name: group[name][...] for name in sorted(group.array_keys())}


def assert_same_store(a, b, ignore=("out",)):
    """Every array byte-identical; attributes equal except the config fields in `ignore`."""
    arrays_a, arrays_b = arrays(a), arrays(b)
    assert sorted(arrays_a) == sorted(arrays_b)
    for name in arrays_a:
        assert arrays_a[name].dtype == arrays_b[name].dtype, name
        assert np.array_equal(arrays_a[name], arrays_b[name]), name
    attrs_a, attrs_b = store.existing_attrs(a), store.existing_attrs(b)
    for attrs in (attrs_a, attrs_b):
        for key in ignore:
            attrs["config"].pop(key)
    assert attrs_a == attrs_b


def test_batch_size_and_workers_change_no_byte(train_beton, teacher_ckpt, second_ckpt, tmp_path):
    common = dict(views=2, store_features=True, keep_members=True)
    precompute(train_beton, tmp_path / "a.zarr", [teacher_ckpt, second_ckpt], batch_size=7,
               workers=1, **common)
    precompute(train_beton, tmp_path / "b.zarr", [teacher_ckpt, second_ckpt], batch_size=50,
               workers=2, **common)
    assert_same_store(tmp_path / "a.zarr", tmp_path / "b.zarr",
                      ignore=("out", "batch_size", "workers"))


def test_rerun_rewrites_only_units_not_done(train_beton, teacher_ckpt, tmp_path):
    import zarr

    out = tmp_path / "cache.zarr"
    precompute(train_beton, out, [teacher_ckpt], views=2)
    reference = arrays(out)
    group = zarr.open_group(str(out), mode="r+")
    # As after a crash: unit (1, 2) half written and not marked; unit (0, 3) never written.
    group["logits"][1, 64:80] = 0
    group["done"][1, 2] = False
    group["logits"][0, 96:] = 0
    group["crops"][0, 96:] = 0
    group["done"][0, 3] = False
    group["logits"][0, 0:32] = 1  # a done unit is never recomputed
    with pytest.raises(PctError, match=r"incomplete store .*2 of 8 units not written "
                                             r"\(view 0 shard 3, view 1 shard 2\)"):
        store.open_store(out)
    run(precompute_config(train_beton, out, [("cnn_small", str(teacher_ckpt))], views=2,
                          resolution=RES, batch_size=16, workers=1, **LAYOUT))
    resumed = arrays(out)
    assert np.all(resumed["logits"][0, 0:32] == 1)
    # the done unit altered after it was written is refused by readers
    with pytest.raises(PctError, match=r"array 'logits', view 0, rows 0-31: object "
                                             r"logits/c/0/0/0 has \d+ bytes, but \d+ were written"):
        store.open_store(out)
    resumed["logits"][0, 0:32] = reference["logits"][0, 0:32]
    for name in reference:
        assert np.array_equal(resumed[name], reference[name]), name


def test_features_are_float16_beside_float32_logits(train_beton, teacher_ckpt, tmp_path):
    cache = precompute(train_beton, tmp_path / "f32.zarr", [teacher_ckpt], views=1,
                       store_features=True, dtype="float32")
    assert cache.group["logits"].dtype == np.float32  # §Store: features float16 whatever --dtype
    assert cache.group["features"].dtype == np.float16
    images, _, indices = next(iter(training_batches(train_beton, 0, batch_size=40)))
    logits, features = teacher_outputs(teacher_ckpt, images)
    assert_fp16_close(cache.features(0)[indices.numpy()], features)

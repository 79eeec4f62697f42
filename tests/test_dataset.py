"""`pct write-dataset` and the loader's index/label join, including a 2-process torchrun loader."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import free_port, run_pct, view_loader
from pct_pipeline import dataset


def make_tree(root, images):
    """images: {class: {filename: PIL image or raw bytes}}."""
    for cls, files in images.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            if isinstance(content, bytes):
                (root / cls / name).write_bytes(content)
            else:
                content.save(root / cls / name)
    return root


def odd_modes_tree(root):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), np.uint8))
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 0))  # fully transparent: composited on white
    return make_tree(root, {
        "a": {"rgb.jpg": rgb, "gray.png": rgb.convert("L"), "cmyk.jpg": rgb.convert("CMYK")},
        "b": {"alpha.png": rgba, "palette.png": rgb.convert("P"), "rgb2.jpg": rgb},
    })


def test_write_dataset_converts_modes_and_records_fingerprint(tmp_path):
    tree = odd_modes_tree(tmp_path / "src")
    out = tmp_path / "odd.beton"
    result = run_pct("write-dataset", tree, out, "--max-resolution", "64")
    assert result.returncode == 0, result.stderr
    assert "6 images, 2 classes, 0 skipped" in result.stdout
    info = json.loads(Path(str(out) + ".json").read_text())
    beton = dataset.BetonInfo(out)
    assert info["classes"] == ["a", "b"] and beton.classes == ["a", "b"]
    assert list(beton.labels) == [0, 0, 0, 1, 1, 1]
    assert info["fingerprint"]["labels_sha256"] == beton.fingerprint["labels_sha256"]
    assert info["fingerprint"]["size"] == out.stat().st_size
    loader = view_loader(out, batch_size=4, resolution=16, workers=1, eval_view=True)
    images = {}
    for x, y, idx in loader:
        for image, i in zip(x, idx.tolist()):
            images[i] = image
    # sorted file order within class b: alpha.png (index 3) is white after compositing
    assert images[3].min() > 2.0  # normalised white is ~2.2-2.6 in every channel


def test_write_dataset_refuses_corrupt_image_unless_skip_bad(tmp_path):
    good = Image.new("RGB", (16, 16), (10, 200, 30))
    tree = make_tree(tmp_path / "src", {"x": {"ok.jpg": good, "bad.jpg": b"\xff\xd8\xff\xe0 not a jpeg"},
                                        "y": {"ok.jpg": good}})
    out = tmp_path / "d.beton"
    result = run_pct("write-dataset", tree, out)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "bad.jpg" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".d.beton*"))
    result = run_pct("write-dataset", tree, out, "--skip-bad")
    assert result.returncode == 0, result.stderr
    assert "2 images, 2 classes, 1 skipped" in result.stdout


def test_write_dataset_refuses_empty_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_pct("write-dataset", tmp_path / "empty", tmp_path / "o.beton")
    assert result.returncode == 2 and "no class folders" in result.stderr
    tree = make_tree(tmp_path / "src", {"x": {"ok.jpg": Image.new("RGB", (8, 8))}})
    (tree / "z_empty").mkdir()
    result = run_pct("write-dataset", tree, tmp_path / "o.beton")
    assert result.returncode == 2 and "z_empty" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "o.beton").exists()


def test_index_field_joins_labels_for_every_sample(train_beton):
    info = dataset.BetonInfo(train_beton)
    loader = view_loader(train_beton, batch_size=17, resolution=16, workers=1,
                                order="random", seed=3)
    seen = []
    for _, labels, indices in loader:
        assert np.array_equal(labels.numpy(), info.labels[indices.numpy()])
        seen.extend(indices.tolist())
    assert sorted(seen) == list(range(info.num_samples))
    assert np.array_equal(np.array(seen), loader.order())


DDP_CHILD = """
import json, os, sys
import torch.distributed as dist
from pct_pipeline import dataset, distributed
d = distributed.setup()
from pct_pipeline.views import ViewSpec
loader = dataset.ViewLoader(sys.argv[1], ViewSpec(resolution=16), 8, workers=1,
                            shuffle=dataset.Shuffle(11, distributed=True, drop_last=False))
epochs = []
for epoch in range(2):
    loader.set_epoch(epoch)
    epochs.append([i for _, _, idx in loader for i in idx.tolist()])
with open(os.path.join(sys.argv[2], f"rank{d.rank}.json"), "w") as f:
    json.dump(epochs, f)
distributed.cleanup()
"""


def test_two_process_loader_covers_each_sample_once(train_beton, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(DDP_CHILD)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                    "--master-port", str(free_port()), str(script), str(train_beton), str(tmp_path)],
                   check=True, env=env, timeout=300)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    n = dataset.BetonInfo(train_beton).num_samples  # 120: divisible by 2 ranks
    for epoch in range(2):
        a, b = ranks[0][epoch], ranks[1][epoch]
        assert not set(a) & set(b)
        assert sorted(a + b) == list(range(n))
    assert ranks[0][0] != ranks[0][1]  # a new order each epoch


def test_images_digest_tells_other_images_from_the_same_images_rewritten(small_tree, train_beton,
                                                                         tmp_path):
    """The same images written by 2 processes (another file size) keep the digest; the same
    labels with the images re-encoded (the same file size here) do not."""
    again, other = tmp_path / "again.beton", tmp_path / "other.beton"
    dataset.write_beton(small_tree, again, max_resolution=32, workers=2)
    dataset.write_beton(small_tree, other, max_resolution=32, jpeg_quality=50, workers=1)
    first, again, other = (dataset.BetonInfo(p).fingerprint for p in (train_beton, again, other))
    assert again["images_sha256"] == first["images_sha256"]
    assert other["labels_sha256"] == first["labels_sha256"]
    assert other["images_sha256"] != first["images_sha256"]

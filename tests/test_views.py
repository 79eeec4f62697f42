"""§Views: the same (view seed, view, index) gives the same pixels whatever the order, batch size,
worker count or process; the numpy/OpenCV reference reproduces the decoder."""
import subprocess
import sys

from pathlib import Path

import numpy as np
import torch
from ffcv.libffcv import imdecode

from conftest import crop_boxes, view_loader
from pct_pipeline import dataset, views
from pct_pipeline.boxes import eval_params, params

RES = 24


def pixels(loader):
    """uint8 [N, R, R, 3] of one epoch, rows placed by sample index (un-normalised exactly)."""
    mean = torch.tensor(views.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(views.IMAGENET_STD).view(1, 3, 1, 1)
    out = {}
    for images, _, indices in loader:
        u8 = (images * std + mean).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        for row, i in zip(u8, indices.tolist()):
            assert i not in out
            out[i] = row
    return np.stack([out[i] for i in sorted(out)]), sorted(out)


def make_loader(beton, **kw):
    args = dict(batch_size=32, resolution=RES, workers=1, view_seed=7)
    args.update(kw)
    return view_loader(beton, **args)


def test_params_is_pure_and_within_bounds():
    boxes = {params(3, v, i, 40, 30, 0.08, 1.0, 0.75, 4 / 3, 0.5) for v in range(4) for i in range(50)}
    assert len(boxes) > 150  # views and samples differ
    for top, left, h, w, flip in boxes:
        assert 0 <= top and top + h <= 40 and 0 <= left and left + w <= 30 and flip in (0, 1)
    assert params(3, 1, 5, 40, 30, 0.08, 1.0, 0.75, 4 / 3, 0.5) == params(3, 1, 5, 40, 30, 0.08, 1.0, 0.75, 4 / 3, 0.5)
    flips = [params(0, 0, i, 32, 32, 0.08, 1.0, 0.75, 4 / 3, 0.5)[4] for i in range(2000)]
    assert 0.45 < np.mean(flips) < 0.55


def test_view_pixels_identical_across_order_batch_and_workers(train_beton):
    seq = make_loader(train_beton, order="sequential")
    seq.set_view(3)
    reference, rows = pixels(seq)
    assert rows == list(range(dataset.BetonInfo(train_beton).num_samples))
    for kw in (dict(order="random", seed=5, batch_size=7), dict(order="random", seed=9, workers=2, batch_size=50)):
        loader = make_loader(train_beton, **kw)
        loader.set_view(3)
        got, _ = pixels(loader)
        assert np.array_equal(got, reference)
    seq.set_view(4)
    other, _ = pixels(seq)
    assert (other != reference).any(axis=(1, 2, 3)).mean() > 0.9  # nearly every sample changes
    seq.set_view(3)
    assert np.array_equal(pixels(seq)[0], reference)  # view switch needs no recompilation


CHILD = """
import sys, numpy as np, torch
sys.path.insert(0, {tests!r})
from test_views import make_loader, pixels
loader = make_loader({beton!r}, order="random", seed=int(sys.argv[1]), batch_size=int(sys.argv[2]))
loader.set_view(2)
np.save(sys.argv[3], pixels(loader)[0])
"""


def test_view_pixels_identical_across_processes(train_beton, tmp_path):
    script = CHILD.format(tests=str(Path(__file__).parent), beton=str(train_beton))
    outs = []
    for seed, batch in ((1, 16), (2, 40)):
        out = tmp_path / f"p{seed}.npy"
        subprocess.run([sys.executable, "-c", script, str(seed), str(batch), str(out)], check=True)
        outs.append(np.load(out))
    assert np.array_equal(outs[0], outs[1])


def test_reference_reproduces_decoder(train_beton):
    info = dataset.BetonInfo(train_beton)
    for eval_view in (False, True):
        loader = make_loader(train_beton, eval_view=eval_view)
        loader.set_view(1)
        got, _ = pixels(loader)
        rows = np.arange(0, info.num_samples, 3)
        boxes = crop_boxes(7, 1, info.heights, info.widths, eval_view=eval_view, indices=rows)
        worst_cv2 = []
        for row, jpeg, box in zip(rows, dataset.raw_images(train_beton, rows), boxes):
            h, w = int(info.heights[row]), int(info.widths[row])
            decoded = np.zeros((h, w, 3), np.uint8)
            imdecode(jpeg, decoded, h, w, h, w, 0, 0, 1, 1, False, False)
            # Same JPEG decode as the loader: the reference crop/resize/flip is exact.
            assert np.array_equal(views.reference_pixels(decoded, box, (RES, RES)), got[row])
            # OpenCV's own JPEG decoder differs from libjpeg-turbo's by a few levels.
            diff = np.abs(views.reference_pixels(views.decode_jpeg(jpeg), box, (RES, RES)).astype(int) - got[row])
            worst_cv2.append((diff.max(), diff.mean()))
        assert max(d for d, _ in worst_cv2) <= 12 and max(m for _, m in worst_cv2) <= 2.0
        if eval_view:
            assert (boxes[:, 4] == 0).all() and (boxes[:, 2] == boxes[:, 3]).all()


def test_eval_view_is_center_crop():
    assert eval_params(256, 320, 224 / 256) == (16, 48, 224, 224, 0)


def test_flip_probability_is_a_view_parameter():
    boxes = [params(0, 0, i, 32, 32, 0.08, 1.0, 0.75, 4 / 3, p) for p in (0.0, 0.25, 1.0)
             for i in range(2000)]
    flips = np.array([b[4] for b in boxes]).reshape(3, 2000).mean(axis=1)
    assert flips[0] == 0 and flips[2] == 1 and 0.22 < flips[1] < 0.28
    # the crop box does not depend on the flip probability
    assert {b[:4] for b in boxes[:2000]} == {b[:4] for b in boxes[4000:]}


def test_flip_and_scale_reach_the_decoder(train_beton):
    info = dataset.BetonInfo(train_beton)
    got = {}
    for flip in (0.0, 1.0):
        loader = make_loader(train_beton, scale=(0.5, 1.0), flip=flip)
        loader.set_view(2)
        got[flip], _ = pixels(loader)
    # flip = 0: every image is the unflipped crop; flip = 1: the same crop mirrored
    assert np.array_equal(got[1.0], got[0.0][:, :, ::-1])
    rows = np.arange(info.num_samples)
    boxes = crop_boxes(7, 2, info.heights, info.widths, scale=(0.5, 1.0), flip=0.0)
    areas = boxes[:, 2] * boxes[:, 3] / (info.heights * info.widths)
    assert (boxes[:, 4] == 0).all() and areas.min() >= 0.45  # scale's lower bound, rounded
    for row, jpeg in zip(rows[::5], dataset.raw_images(train_beton, rows[::5])):
        h, w = int(info.heights[row]), int(info.widths[row])
        decoded = np.zeros((h, w, 3), np.uint8)
        imdecode(jpeg, decoded, h, w, h, w, 0, 0, 1, 1, False, False)
        assert np.array_equal(views.reference_pixels(decoded, boxes[row], (RES, RES)), got[0.0][row])

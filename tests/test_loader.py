"""The loader normalises inside ffcv's pipeline, and its float32 images equal, bit for bit, the
formula `x.float().sub_(mean).div_(std)` on the same uint8 pixels."""
import numpy as np
import torch
from ffcv.libffcv import imdecode

from conftest import crop_boxes, view_loader
from pct_pipeline import dataset, views

RES = 24
MEAN = torch.tensor(views.IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(views.IMAGENET_STD).view(1, 3, 1, 1)


def formula(u8):
    """float32 [N, 3, R, R] of uint8 [N, 3, R, R]: the normalisation as a torch expression."""
    return u8.float().sub_(MEAN).div_(STD)


def reference_u8(jpeg, height, width, box):
    """uint8 [3, R, R] of the numpy/OpenCV reference, which equals the decoder's pixels (see
    test_views.test_reference_reproduces_decoder)."""
    decoded = np.zeros((height, width, 3), np.uint8)
    imdecode(jpeg, decoded, height, width, height, width, 0, 0, 1, 1, False, False)
    return torch.from_numpy(views.reference_pixels(decoded, box, (RES, RES))).permute(2, 0, 1)


def test_normalize_table_equals_formula_on_every_level():
    levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 256, 1).expand(1, 3, 256, 1)
    expected = formula(levels)[0, :, :, 0].T.numpy()  # [256, 3]
    assert dataset.reader._normalize_table().dtype == np.float32
    assert np.array_equal(dataset.reader._normalize_table(), expected)


def test_loader_images_equal_formula_on_the_same_pixels(train_beton):
    info = dataset.BetonInfo(train_beton)
    jpegs = dataset.raw_images(train_beton, range(info.num_samples))
    for eval_view, kw in ((False, dict(order="random", seed=3, workers=2, batch_size=50)),
                          (True, dict(workers=1, batch_size=32))):
        loader = view_loader(train_beton, resolution=RES, view_seed=7, eval_view=eval_view,
                                    **kw)
        loader.set_view(2)
        boxes = crop_boxes(7, 2, info.heights, info.widths, eval_view=eval_view)
        seen = 0
        for images, labels, indices in loader:
            assert images.dtype == torch.float32 and images.shape[1:] == (3, RES, RES)
            assert images.is_contiguous(memory_format=torch.channels_last)  # as before
            u8 = torch.stack([reference_u8(jpegs[i], int(info.heights[i]), int(info.widths[i]),
                                           boxes[i]) for i in indices.tolist()])
            assert torch.equal(images, formula(u8))  # exact, not to a tolerance
            assert labels.dtype == indices.dtype == torch.int64
            seen += len(indices)
        assert seen == info.num_samples


def test_batches_kept_across_iterations_do_not_change(train_beton):
    # 15 batches: three times ffcv's ring of reused buffers (batches_ahead + 2 = 5 slots)
    loader = view_loader(train_beton, batch_size=8, resolution=RES, workers=2,
                                order="random", seed=1)
    loader.set_view(1)
    snapshots = [(images.numpy().copy(), indices.numpy().copy()) for images, _, indices in loader]
    kept = list(loader)  # the same epoch again, every batch held until the end
    assert len(kept) == len(snapshots) == 15
    for (images, _, indices), (snap_images, snap_indices) in zip(kept, snapshots):
        assert np.array_equal(indices.numpy(), snap_indices)
        assert np.array_equal(images.numpy(), snap_images)

"""§Views: deterministic augmentation shared by precompute and train.

A view ``v`` of sample ``i`` is a RandomResizedCrop box plus a horizontal flip given by
``params(view_seed, v, i, H, W, scale, ratio, flip)``, a pure function built on a
counter-based hash (splitmix64). The augmentation itself is data: the crop's area range
``scale``, its aspect-ratio range ``ratio`` and the flip probability ``flip`` (0 disables it)
are options of both stages and attributes of a teacher cache. The loader's FFCV decoder
(dataset/decoder.py) computes the same box with these functions, so the pixels of
(view_seed, v, i) are identical whatever the order, batch size, worker count or process.
The evaluation view is a deterministic centre crop (ratio 224/256 by default) without flip.
"""
import math

import numpy as np
from numba import njit

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
DEFAULT_SCALE = (0.08, 1.0)
DEFAULT_RATIO = (3 / 4, 4 / 3)
DEFAULT_FLIP = 0.5
DEFAULT_CROP_RATIO = 224 / 256


def check_augmentation(scale, ratio, flip):
    """PctError naming the option unless 0 < lo <= hi for scale and ratio, scale hi <= 1 and
    0 <= flip <= 1."""
    from .errors import PctError

    for name, (lo, hi) in (("scale", scale), ("ratio", ratio)):
        if not 0 < lo <= hi:
            raise PctError(f"--{name} must be 0 < LO <= HI, got {lo} {hi}")
    if scale[1] > 1:
        raise PctError(f"--scale HI is a fraction of the image area, at most 1, got {scale[1]}")
    if not 0 <= flip <= 1:
        raise PctError(f"--flip is a probability in [0, 1], got {flip}")


def augmentation_attrs(attrs):
    """(scale, ratio, flip) recorded in a teacher cache's attributes; caches written before
    `flip` was an option always flipped with probability 0.5."""
    return (tuple(attrs["scale"]), tuple(attrs["ratio"]),
            float(attrs.get("flip", DEFAULT_FLIP)))


@njit(cache=False)
def splitmix64(x):
    """One step of splitmix64 on a uint64; wraps modulo 2**64."""
    z = np.uint64(x) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=False)
def _uniform(key, counter):
    """A float64 in [0, 1) drawn from (key, counter)."""
    bits = splitmix64(key ^ splitmix64(np.uint64(counter)))
    return np.float64(bits >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=False)
def params(view_seed, view, index, height, width, scale_lo, scale_hi, ratio_lo, ratio_hi,
           flip_p=DEFAULT_FLIP):
    """RandomResizedCrop box and flip of (view_seed, view, index) for an image of height x width.

    The algorithm is torchvision's RandomResizedCrop.get_params (10 tries, then a centre
    crop clipped to the ratio range) with its random draws replaced by a hash of the key; the
    image is mirrored with probability `flip_p` (0: never). The box does not depend on
    `flip_p`, so caches that differ only in it crop the same pixels.
    Returns (top, left, crop_height, crop_width, flip) as int64.
    """
    key = splitmix64(splitmix64(splitmix64(np.uint64(view_seed)) ^ np.uint64(view)) ^ np.uint64(index))
    flip = np.int64(1) if _uniform(key, 100) < flip_p else np.int64(0)
    area = np.float64(height) * np.float64(width)
    log_lo = math.log(ratio_lo)
    log_hi = math.log(ratio_hi)
    for attempt in range(10):
        target_area = area * (scale_lo + (scale_hi - scale_lo) * _uniform(key, 2 * attempt))
        aspect = math.exp(log_lo + (log_hi - log_lo) * _uniform(key, 2 * attempt + 1))
        w = np.int64(math.floor(math.sqrt(target_area * aspect) + 0.5))
        h = np.int64(math.floor(math.sqrt(target_area / aspect) + 0.5))
        if 0 < w <= width and 0 < h <= height:
            top = min(np.int64(_uniform(key, 50) * (height - h + 1)), height - h)
            left = min(np.int64(_uniform(key, 51) * (width - w + 1)), width - w)
            return top, left, h, w, flip
    in_ratio = np.float64(width) / np.float64(height)
    if in_ratio < ratio_lo:
        w = np.int64(width)
        h = np.int64(math.floor(w / ratio_lo + 0.5))
    elif in_ratio > ratio_hi:
        h = np.int64(height)
        w = np.int64(math.floor(h * ratio_hi + 0.5))
    else:
        w = np.int64(width)
        h = np.int64(height)
    return (height - h) // 2, (width - w) // 2, h, w, flip


@njit(cache=False)
def eval_params(height, width, crop_ratio):
    """Centre crop of side int(crop_ratio * min(H, W)) (ffcv-imagenet's eval view), no flip."""
    side = np.int64(crop_ratio * min(height, width))
    side = max(side, np.int64(1))
    return (height - side) // 2, (width - side) // 2, side, side, np.int64(0)


def crop_boxes(view_seed, view, heights, widths, scale=DEFAULT_SCALE, ratio=DEFAULT_RATIO,
               eval_view=False, crop_ratio=DEFAULT_CROP_RATIO, indices=None, flip=DEFAULT_FLIP):
    """int32 [n, 5] (top, left, height, width, flip) of one view for samples `indices`."""
    indices = np.arange(len(heights)) if indices is None else np.asarray(indices)
    out = np.empty((len(indices), 5), np.int32)
    for row, i in enumerate(indices):
        h, w = int(heights[i]), int(widths[i])
        if eval_view:
            out[row] = eval_params(h, w, crop_ratio)
        else:
            out[row] = params(view_seed, view, int(i), h, w, scale[0], scale[1], ratio[0],
                              ratio[1], float(flip))
    return out


def decode_jpeg(jpeg_bytes):
    """uint8 [H, W, 3] RGB decoded by OpenCV (independent of the loader's libjpeg-turbo call)."""
    import cv2

    bgr = cv2.imdecode(np.asarray(jpeg_bytes, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def reference_pixels(image, box, output_size):
    """numpy/OpenCV reference of the decoder after decoding: crop box, resize, flip.

    image: uint8 [H, W, 3] RGB; box: (top, left, h, w, flip); returns uint8 [H_out, W_out, 3].
    The loader resizes with OpenCV's INTER_AREA (ffcv's resize_crop), so the reference does too.
    """
    import cv2

    top, left, h, w, flip = (int(b) for b in box)
    crop = np.ascontiguousarray(image[top:top + h, left:left + w])
    out = cv2.resize(crop, (output_size[1], output_size[0]), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(out[:, ::-1]) if flip else out

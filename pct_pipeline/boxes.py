"""The crop box and flip of a view, compiled with numba: `params` (a training view) and
`eval_params` (the centre crop), pure functions of (view seed, view, sample index, image size)
through a counter-based hash (splitmix64). The FFCV decoder (dataset/decoder.py) calls them per
image; `views.ViewSpec.boxes` calls them for a store's `crops`. Imported only where boxes are
computed, so commands that only parse options never load numba.
"""
import math

import numpy as np
from numba import njit

from .views import splitmix64_array

splitmix64 = njit(cache=False)(splitmix64_array)


@njit(cache=False)
def _uniform(key, counter):
    """A float64 in [0, 1) drawn from (key, counter)."""
    bits = splitmix64(key ^ splitmix64(np.uint64(counter)))
    return np.float64(bits >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=False)
def params(view_seed, view, index, height, width, scale_lo, scale_hi, ratio_lo, ratio_hi,
           flip_p):
    """RandomResizedCrop box and flip of (view_seed, view, index) for an image of height x width.

    The algorithm is torchvision's RandomResizedCrop.get_params (10 tries, then a centre
    crop clipped to the ratio range) with its random draws replaced by a hash of the key; the
    image is mirrored with probability `flip_p` (0: never). The box does not depend on
    `flip_p`, so caches that differ only in it crop the same pixels.
    Returns (top, left, crop_height, crop_width, flip) as int64. Its ten scalar parameters
    are a ViewSpec's fields spelled out: the FFCV decoder calls it compiled, per image, where
    numba takes numbers and not the dataclass.
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

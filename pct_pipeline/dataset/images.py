"""Decoded pictures of a few .beton rows (the analyze gallery's thumbnails), read from the bytes
the writer stored, off any loader: no crop, no resize.

ffcv's image field stores each image either as JPEG bytes or raw (`raw` mode: the H x W x 3
uint8 pixels, row-major RGB); both are read. Anything else is refused in one line naming
the sample.
"""
import io

import numpy as np

from ..errors import PctError
from .reader import BetonInfo, raw_images

JPEG_MAGIC = b"\xff\xd8\xff"


def read_images(path, rows):
    """uint8 [H, W, 3] RGB pixels of each of `rows` (ints in [0, N)) of the .beton at `path`,
    in the order given (each image at its own stored size)."""
    rows = [int(r) for r in rows]
    payloads = raw_images(path, rows)
    shapes = None
    out = []
    for row, payload in zip(rows, payloads):
        if payload[:3].tobytes() == JPEG_MAGIC:
            out.append(_decode_jpeg(payload, path, row))
            continue
        if shapes is None:  # only raw images need the recorded sizes
            info = BetonInfo(path)
            shapes = (info.heights, info.widths)
        h, w = int(shapes[0][row]), int(shapes[1][row])
        if payload.size != h * w * 3:
            raise PctError(f"sample {row} of {path}: {payload.size} bytes that are neither a "
                           f"JPEG nor {h}x{w} raw RGB pixels (only jpg and raw images are read)")
        out.append(payload.reshape(h, w, 3).copy())
    return out


def _decode_jpeg(payload, path, row):
    """uint8 [H, W, 3] RGB of one JPEG payload; PctError naming the sample if it does not
    decode (PIL raises on truncated data, where OpenCV would print a warning and go on)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(payload.tobytes())) as image:
            image.load()
            return np.asarray(image.convert("RGB"), np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise PctError(f"sample {row} of {path}: its JPEG bytes do not decode "
                       f"({type(exc).__name__})") from None

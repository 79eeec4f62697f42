"""What an image must be to be stored: any PIL-readable file decoded to uint8 RGB (transparency
on white, 16-bit and 0-1 float ranges scaled), and the size ffcv stores it at."""
import numpy as np


def load_rgb(path):
    """uint8 [H, W, 3] RGB of any PIL-readable image. Transparency is composited on white;
    16-bit images are scaled from their range 0-65535, float images from 0-1 (others of no
    known range, e.g. floats outside [0, 1], raise ValueError naming the range found)."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            return _gray_to_rgb(np.asarray(image), image.mode)
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _gray_to_rgb(values, mode):
    """uint8 [H, W, 3] of one-channel integer (16-bit range) or float (0-1 range) pixels."""
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode == "F":
        if not (np.isfinite(values).all() and 0 <= lo and hi <= 1):
            raise ValueError(f"float pixels from {lo:g} to {hi:g}: only the range 0-1 is known")
        scaled = values * 255.0
    else:
        if not (0 <= lo and hi <= 65535):
            raise ValueError(f"{mode} pixels from {lo:g} to {hi:g}: only 16-bit ranges are known")
        scaled = values / 257.0
    gray = np.rint(scaled).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def stored_size(height, width, max_resolution):
    """(height, width) an image of height x width is stored at: scaled down (as ffcv does, the
    longer side to max_resolution, each side rounded down) if it is larger."""
    ratio = max_resolution / max(height, width)
    if ratio >= 1:
        return height, width
    return int(ratio * height), int(ratio * width)


def check_image(job):
    """An error message for the image at path, or None when it can be stored (job: (path,
    max_resolution))."""
    from PIL import Image

    path, max_resolution = job
    try:
        image = load_rgb(path)
    except Image.DecompressionBombError as exc:
        return f"{path}: {exc}"
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for bad files
        return f"{path}: {exc}"
    height, width = image.shape[:2]
    if min(stored_size(height, width, max_resolution)) < 1:
        return (f"{path}: {width}x{height} px is too thin to store at --max-resolution "
                f"{max_resolution} (its shorter side would be 0 px)")
    return None

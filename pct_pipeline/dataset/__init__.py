"""FFCV datasets, the package's one door to ffcv:

    command.py  `pct write-dataset`;
    writer.py   an ImageFolder tree -> a .beton with image, label and index fields, plus
                OUT.beton.json (class names, fingerprint);
    reader.py   what a .beton holds (BetonInfo) and loaders of its views (ViewLoader);
    decoder.py  the loaders' FFCV decoder of a view (the crop boxes of views.py).
"""
from .reader import BetonInfo, Shuffle, ViewLoader, fingerprint, raw_images
from .writer import IMAGE_SUFFIXES, load_rgb, scan_image_folder, write_beton

__all__ = ["BetonInfo", "Shuffle", "ViewLoader", "fingerprint", "raw_images", "IMAGE_SUFFIXES",
           "load_rgb", "scan_image_folder", "write_beton"]

"""FFCV datasets, the package's one door to ffcv:

    command.py  `pct write-dataset`;
    writer.py   an ImageFolder tree -> a .beton with image, label and index fields, plus
                OUT.beton.json (class names, fingerprint);
    storable.py what an image must be to be stored, decoded to uint8 RGB;
    images.py   decoded pictures of a few rows, read from the stored bytes (the gallery);
    reader.py   what a .beton holds (BetonInfo) and loaders of its views (ViewLoader);
    decoder.py  the loaders' FFCV decoder of a view (the crop boxes of views.py).

The names below are imported from their module on first use (PEP 562 module __getattr__):
reader.py loads torch, so `pct write-dataset --help` (command.py, inside this package) must
not run it.
"""
import importlib

WHERE = {"BetonInfo": "reader", "Shuffle": "reader", "ViewLoader": "reader",
         "fingerprint": "reader", "raw_images": "reader", "IMAGE_SUFFIXES": "writer",
         "load_rgb": "storable", "scan_image_folder": "writer", "write_beton": "writer"}

__all__ = list(WHERE)


def __getattr__(name):
    if name in WHERE:
        return getattr(importlib.import_module(f".{WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Build Fashion-MNIST as two ImageFolder trees, OUT/train/<class>/*.png (60,000 images) and
OUT/val/<class>/*.png (the 10,000 test images), from the four original idx files of Debian's
package `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist/*-idx?-ubyte.gz).

The idx files are decompressed into OUT/FashionMNIST/raw/ and read by torchvision's own
`datasets.FashionMNIST` (its MNIST-format reader), which also gives the class names. Images are the original
28 x 28 grayscale pixels, saved losslessly as PNG; labels are the data set's own (clean).
Class folders carry the data set's class names, made path-safe ("T-shirt/top" ->
"t-shirt_top"); as in every ImageFolder tree, label numbers follow the sorted folder names.
OUT/fashion_mnist.json records the counts and the class names.

    python data/build_fashion_mnist.py OUT [--source /usr/share/datasets/fashion-mnist]
"""
import argparse
import gzip
import json
from pathlib import Path

import numpy as np
from PIL import Image

SOURCE = "/usr/share/datasets/fashion-mnist"
SPLITS = {"train": "train", "val": "t10k"}  # our split name: the idx files' prefix
IDX_FILES = [f"{prefix}-{kind}-idx{dims}-ubyte" for prefix in SPLITS.values()
             for kind, dims in (("images", 3), ("labels", 1))]


def folder_name(name):
    """A class name as a folder name: lower case, '/' and ' ' replaced ("Ankle boot" ->
    "ankle_boot")."""
    return name.lower().replace("/", "_").replace(" ", "_")


def unpack(source, out):
    """Decompress the four .gz idx files into OUT/FashionMNIST/raw/, where torchvision's
    FashionMNIST looks for them."""
    raw = Path(out) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in IDX_FILES:
        with gzip.open(Path(source) / f"{name}.gz") as f:
            (raw / name).write_bytes(f.read())


def read_split(out, train):
    """(uint8 [N, 28, 28] images, int64 [N] labels, the data set's class names)."""
    from torchvision.datasets import FashionMNIST

    data = FashionMNIST(str(out), train=train, download=False)
    return data.data.numpy(), data.targets.numpy().astype(np.int64), list(data.classes)


def build(out, source=SOURCE):
    out = Path(out)
    missing = [name for name in IDX_FILES if not (Path(source) / f"{name}.gz").is_file()]
    if missing:
        raise SystemExit(f"missing {Path(source) / missing[0]}.gz: install Debian's "
                         f"dataset-fashion-mnist (make setup does)")
    unpack(source, out)
    summary = {"source": str(source)}
    for split, prefix in SPLITS.items():
        images, labels, classes = read_split(out, train=split == "train")
        folders = [folder_name(c) for c in classes]
        for name in folders:
            (out / split / name).mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(images, labels)):
            path = out / split / folders[label] / f"{prefix}_{i:05d}.png"
            Image.fromarray(image, mode="L").save(path)
        summary[split], summary["classes"] = int(len(labels)), folders
    (out / "fashion_mnist.json").write_text(json.dumps(summary, indent=1))
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--source", default=SOURCE)
    args = parser.parse_args()
    print(json.dumps(build(args.out, args.source)))


if __name__ == "__main__":
    main()

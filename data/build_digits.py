"""Build the demo data set: scikit-learn's bundled digits (1,797 real 8x8 handwritten digits)
as an ImageFolder tree OUT/train/<class>/*.jpg and OUT/val/<class>/*.jpg.

The split is fixed and stratified (540 validation images, random_state 0). Each 8x8 image
is upscaled with bicubic interpolation to --size pixels and saved as an RGB JPEG (dark ink on
white). --label-noise P replaces the class of a fraction P of the *training* images by a
different class drawn uniformly (seeded); validation labels stay clean.

    python data/build_digits.py OUT [--size 32] [--label-noise 0.0] [--seed 0]
"""
import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image


def build(out, size=32, label_noise=0.0, seed=0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (255 - digits.images * (255 / 16)).clip(0, 255).astype(np.uint8)
    rows = np.arange(len(images))
    train_rows, val_rows = train_test_split(rows, test_size=540, stratify=digits.target,
                                            random_state=0)
    rng = np.random.default_rng(seed)
    noisy = np.array(digits.target)
    flip = rng.random(len(train_rows)) < label_noise
    shift = rng.integers(1, 10, size=len(train_rows))
    noisy[train_rows] = np.where(flip, (digits.target[train_rows] + shift) % 10,
                                 digits.target[train_rows])
    out = Path(out)
    for split, split_rows in (("train", train_rows), ("val", val_rows)):
        for c in range(10):
            (out / split / str(c)).mkdir(parents=True, exist_ok=True)
        for r in sorted(split_rows):
            label = noisy[r] if split == "train" else digits.target[r]
            image = Image.fromarray(images[r]).resize((size, size), Image.BICUBIC).convert("RGB")
            image.save(out / split / str(label) / f"digit_{r:04d}.jpg", quality=95)
    summary = {"train": len(train_rows), "val": len(val_rows), "size": size,
               "label_noise": label_noise, "noisy_train_labels": int(flip.sum()), "seed": seed}
    (out / "digits.json").write_text(json.dumps(summary, indent=1))
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--label-noise", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(build(args.out, args.size, args.label_noise, args.seed)))


if __name__ == "__main__":
    main()

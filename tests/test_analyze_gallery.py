"""`pct analyze --images VAL.beton --gallery OUT`: the flips drawn from a real .beton (digits
under class folders named zero ... nine), against real stores whose flips and confidences are
fixed by construction; and dataset.images.read_images on JPEG and raw .beton files."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import pct
from test_cli_analyze import make_store

pytest.importorskip("matplotlib")

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
NEGATIVE = {5: 1.0, 17: 3.0, 30: 2.0, 44: 5.0, 61: 4.0}  # row: OLD's margin at the label
POSITIVE = {10: 1.0, 50: 3.0, 70: 2.0}                     # row: NEW's margin at the label


def named_tree(digits_tree, root):
    """8 validation digits per class, in folders named by the digit's word."""
    for digit, word in enumerate(WORDS):
        (root / word).mkdir(parents=True)
        for image in sorted((digits_tree / "val" / str(digit)).iterdir())[:8]:
            shutil.copy(image, root / word / image.name)
    return root


def logits(labels, margins, wrong, shift):
    """[N, 10] float32: `margins` (row: value) or 3 at the label; on the rows `wrong` the
    label gets 0 and class (label + shift) % 10 gets 3."""
    out = np.zeros((len(labels), 10), np.float32)
    out[np.arange(len(labels)), labels] = 3.0
    for row, margin in margins.items():
        out[row, labels[row]] = margin
    for row in wrong:
        out[row, labels[row]] = 0.0
        out[row, (labels[row] + shift) % 10] = 3.0
    return out


@pytest.fixture(scope="module")
def world(digits_tree, tmp_path_factory):
    from pct_pipeline.dataset import BetonInfo, write_beton

    root = tmp_path_factory.mktemp("gallery")
    tree = named_tree(digits_tree, root / "val")
    write_beton(tree, root / "val.beton", max_resolution=32, workers=1)
    write_beton(tree, root / "other.beton", max_resolution=32, jpeg_quality=50, workers=1)
    info = BetonInfo(root / "val.beton")
    digest = info.fingerprint["images_sha256"]
    labels = info.labels
    stores = {
        "old": logits(labels, NEGATIVE, POSITIVE, 1),
        "new": logits(labels, POSITIVE, NEGATIVE, 2),
    }
    paths = {name: make_store(root / f"{name}.zarr", x, labels, classes=info.classes,
                              images_sha256=digest) for name, x in stores.items()}
    paths["new_unrecorded"] = make_store(root / "new_unrecorded.zarr", stores["new"], labels,
                                         classes=info.classes)
    return root, info, paths


def expected_entry(info, row, negative):
    """What the gallery should say of a flip, computed here: classes by name, and each model's
    softmax at the label (a margin m among ten classes, the others 0: e^m / (e^m + 9))."""
    label = int(info.labels[row])
    names = info.classes
    p = {m: np.exp(m) / (np.exp(m) + 9) for m in (0.0, 1.0, 2.0, 3.0, 4.0, 5.0)}
    if negative:
        old, new = label, (label + 2) % 10
        p_old, p_new = p[NEGATIVE[row]], 1 / (np.exp(3.0) + 9)
    else:
        old, new = (label + 1) % 10, label
        p_old, p_new = 1 / (np.exp(3.0) + 9), p[POSITIVE[row]]
    return {"index": row, "true": names[label], "old": names[old], "new": names[new],
            "p_old_label": pytest.approx(p_old, rel=1e-5),
            "p_new_label": pytest.approx(p_new, rel=1e-5)}


def test_svg_gallery_of_both_flips_with_class_names(capsys, world):
    root, info, paths = world
    out, report = root / "flips.svg", root / "flips.json"
    code, text, err = pct(capsys, "analyze", paths["old"], paths["new"], "--images",
                          root / "val.beton", "--gallery", out, "--gallery-max", 4,
                          "--gallery-flips", "both", "--json", report)
    assert code == 0, err
    sections = json.loads(report.read_text())["gallery"]["sections"]
    assert [(s["flips"], s["total"]) for s in sections] == [("negative", 5), ("positive", 3)]
    # negative flips most confident old-right first, capped at 4; positive: new-right first
    assert sections[0]["shown"] == [expected_entry(info, r, True) for r in (44, 61, 17, 30)]
    assert sections[1]["shown"] == [expected_entry(info, r, False) for r in (50, 70, 10)]
    svg = out.read_text()
    assert svg.count("<image ") == 7  # one thumbnail per flip shown
    for entry in sections[0]["shown"] + sections[1]["shown"]:
        assert f"#{entry['index']}  true: {entry['true']}" in svg
        assert f"old: {entry['old']} ({entry['p_old_label']:.2f})" in svg
        assert f"new: {entry['new']} ({entry['p_new_label']:.2f})" in svg
    assert f"gallery {out}: {paths['new']}: 4 of 5 negative flips" in text


def test_png_gallery_has_one_framed_thumbnail_per_flip(capsys, world):
    from PIL import Image

    from pct_pipeline.analyze import gallery

    root, _, paths = world
    out = root / "flips.png"
    code, _, err = pct(capsys, "analyze", paths["old"], paths["new"], "--images",
                       root / "val.beton", "--gallery", out, "--gallery-max", 3)
    assert code == 0, err
    image = np.asarray(Image.open(out).convert("RGB")).astype(int)
    cell, title = int(gallery.CELL_W * gallery.DPI), int(gallery.TITLE_H * gallery.DPI)
    # 3 thumbnails in a row of at least 4 cells, below one section title
    assert image.shape == (title + int(gallery.CELL_H * gallery.DPI), 4 * cell, 3)
    red = (np.abs(image - [214, 39, 40]).sum(axis=2) < 60)  # matplotlib's tab:red frames
    framed = [red[title:, k * cell:(k + 1) * cell].sum() for k in range(4)]
    assert all(n > 100 for n in framed[:3]) and framed[3] == 0, framed


def test_a_beton_of_other_images_is_refused_unless_allowed(capsys, world):
    root, _, paths = world
    out = root / "refused.png"
    args = ["analyze", paths["old"], paths["new"], "--images", root / "other.beton",
            "--gallery", out]
    code, text, err = pct(capsys, *args)
    assert (code, text) == (2, "") and err.count("\n") == 1
    assert err.startswith(f"pct: error: image digests differ: {paths['old']} (images_sha256 ")
    assert f" and {root / 'other.beton'} (" in err and not out.exists()
    code, text, err = pct(capsys, *args, "--allow-different-images")
    assert code == 0 and out.exists()
    assert (f"note: the images of {root / 'other.beton'} differ from those of {paths['old']} "
            f"(--allow-different-images): samples are matched by index only") in text


def test_stores_without_a_digest_say_the_images_are_unchecked(capsys, world):
    root, _, paths = world
    code, text, err = pct(capsys, "analyze", paths["old"], paths["new_unrecorded"], "--images",
                          root / "val.beton", "--gallery", root / "unchecked.pdf")
    assert code == 0, err
    assert text.splitlines()[0] == (f"note: cannot check that the inputs hold the same images: "
                                    f"{paths['new_unrecorded']} records no image digest")
    assert (root / "unchecked.pdf").read_bytes()[:5] == b"%PDF-"


def test_read_images_decodes_the_stored_jpegs(world, digits_tree):
    from PIL import Image

    from pct_pipeline.dataset.images import read_images

    root, info, _ = world
    rows = [0, 37, 79]
    pictures = read_images(root / "val.beton", rows)
    sources = sorted(Path(root / "val").rglob("*.jpg"), key=lambda p: (p.parent.name, p.name))
    for row, picture in zip(rows, pictures):
        assert picture.dtype == np.uint8
        assert picture.shape == (info.heights[row], info.widths[row], 3)
        source = np.asarray(Image.open(sources[row]).convert("RGB"), np.int64)
        assert np.abs(picture - source).mean() < 8  # re-encoded once by the writer


def test_read_images_of_raw_pixels_and_refusal_of_other_bytes(tmp_path):
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    from pct_pipeline.dataset.images import read_images
    from pct_pipeline.errors import PctError

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((5, 7), (6, 4))]
    raw = tmp_path / "raw.beton"
    DatasetWriter(str(raw), {"image": RGBImageField(write_mode="raw"), "label": IntField(),
                             "index": IntField()}, num_workers=1).from_indexed_dataset(
        [(x, 0, i) for i, x in enumerate(images)])
    for picture, image in zip(read_images(raw, [1, 0]), images[::-1]):
        assert np.array_equal(picture, image)
    jpeg = tmp_path / "jpeg.beton"
    DatasetWriter(str(jpeg), {"image": RGBImageField(write_mode="jpg"), "label": IntField(),
                              "index": IntField()}, num_workers=1).from_indexed_dataset(
        [(np.full((8, 8, 3), 200, np.uint8), 0, 0)])
    data = bytearray(jpeg.read_bytes())
    at = data.find(b"\xff\xd8\xff")
    data[at:at + 3] = b"XYZ"  # no longer a JPEG, and not 8 x 8 x 3 bytes of pixels
    jpeg.write_bytes(bytes(data))
    with pytest.raises(PctError, match=r"sample 0 of .*jpeg.beton: \d+ bytes that are neither "
                                       r"a JPEG nor 8x8 raw RGB pixels"):
        read_images(jpeg, [0])

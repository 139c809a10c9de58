"""npseg.data: the shapes set, folder and COCO readers, transforms and the loader."""

import json
import os
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from npseg.data import (SHAPES_CLASSES, CocoDataset, Compose, DataLoader, FolderDataset, Normalize,
                        RandomHorizontalFlip, RandomScaleCrop, Resize, ShapesDataset, collate,
                        mask_to_rle, masks_to_boxes, polygons_to_mask, rle_to_mask, shapes_to_coco)
from npseg.data.transforms import resize_image, resize_nearest

# pycocotools (used for comparisons) predates NumPy 2's __array__ copy keyword
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def tight_box(mask):
    """Independent reference: (x1, y1, x2, y2) from the pixel coordinates, x2/y2 exclusive."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def check_instances(sample, num_classes=4, ignore=255):
    """label == union of the instance masks with their classes; boxes tight; dtypes."""
    masks, boxes, labels, label = sample["masks"], sample["boxes"], sample["labels"], sample["label"]
    assert masks.dtype == bool and boxes.dtype == np.float32 and labels.dtype == np.int64
    assert label.dtype == np.int64
    assert masks.shape[1:] == label.shape and len(masks) == len(boxes) == len(labels)
    assert masks.sum(axis=0).max(initial=0) <= 1, "instance masks overlap"
    union = np.zeros_like(label)
    for m, c in zip(masks, labels):
        union[m] = c
    covered = masks.any(axis=0)
    np.testing.assert_array_equal(label[covered], union[covered])
    assert set(np.unique(label[~covered]).tolist()) <= {0, ignore}
    for m, b in zip(masks, boxes):
        assert m.any()
        np.testing.assert_array_equal(b, tight_box(m))
    assert np.all((labels >= 1) & (labels < num_classes))


# --------------------------------------------------------------------------- shapes


def test_shapes_sample_structure_and_consistency():
    ds = ShapesDataset("train", size=40, image_size=64, seed=3)
    assert len(ds) == 40 and ds.num_classes == 4 and ds.class_names == SHAPES_CLASSES
    for i in range(len(ds)):
        s = ds[i]
        assert s["image"].shape == (3, 64, 64) and s["image"].dtype == np.float32
        assert 0.0 <= s["image"].min() and s["image"].max() <= 1.0
        assert 1 <= len(s["labels"]) <= 4
        assert s["masks"].sum(axis=(1, 2)).min() >= ds.min_area
        assert s["image_id"] == i
        check_instances(s)
        assert set(np.unique(s["label"]).tolist()) <= {0, 1, 2, 3}


def test_shapes_non_square_and_options():
    ds = ShapesDataset("val", size=5, image_size=(48, 80), seed=1, max_instances=2, min_area=20)
    for s in (ds[0], ds[4], ds[-1]):
        assert s["image"].shape == (3, 48, 80) and s["label"].shape == (48, 80)
        assert len(s["labels"]) <= 2
        assert s["masks"].sum(axis=(1, 2)).min() >= 20
        check_instances(s)


def test_shapes_deterministic():
    a = ShapesDataset("train", size=10, image_size=64, seed=7)
    b = ShapesDataset("train", size=10, image_size=64, seed=7)
    for i in (0, 3, 9):
        sa, sb = a[i], b[i]
        for key in ("image", "label", "masks", "boxes", "labels"):
            np.testing.assert_array_equal(sa[key], sb[key])
    # access order does not matter
    np.testing.assert_array_equal(a[5]["image"], ShapesDataset("train", size=10, image_size=64, seed=7)[5]["image"])


def test_shapes_splits_and_seeds_differ():
    train = ShapesDataset("train", size=20, image_size=64, seed=0)
    val = ShapesDataset("val", size=20, image_size=64, seed=0)
    other = ShapesDataset("train", size=20, image_size=64, seed=1)
    train_images = np.stack([train[i]["image"] for i in range(20)])
    for i in range(20):
        v = val[i]["image"]
        assert not any(np.array_equal(v, t) for t in train_images), f"val[{i}] is a train image"
        assert not np.array_equal(other[i]["image"], train_images[i])
    assert not np.array_equal(train_images[0], train_images[1])


def test_shapes_class_balance():
    ds = ShapesDataset("train", size=300, image_size=32, seed=0)
    counts = np.bincount(np.concatenate([ds[i]["labels"] for i in range(len(ds))]), minlength=4)
    assert counts[0] == 0
    mean = counts[1:].mean()
    assert np.all(np.abs(counts[1:] - mean) < 0.2 * mean), counts


def test_shapes_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        ShapesDataset("testing")
    with pytest.raises(ValueError, match="image_size"):
        ShapesDataset(image_size=(4, 64))
    with pytest.raises(ValueError, match="max_instances"):
        ShapesDataset(max_instances=0)
    with pytest.raises(IndexError, match="out of range"):
        ShapesDataset(size=3)[3]


# --------------------------------------------------------------------------- masks_to_boxes


@given(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9), st.integers(0, 2 ** 31 - 1))
def test_masks_to_boxes_matches_pixel_extent(k, h, w, seed):
    rng = np.random.default_rng(seed)
    masks = rng.random((k, h, w)) < 0.3
    masks[0] = False  # an empty mask
    boxes = masks_to_boxes(masks)
    assert boxes.shape == (k, 4) and boxes.dtype == np.float32
    np.testing.assert_array_equal(boxes[0], 0)
    for m, b in zip(masks[1:], boxes[1:]):
        if m.any():
            np.testing.assert_array_equal(b, tight_box(m))


# --------------------------------------------------------------------------- transforms


def _sample():
    return ShapesDataset("train", size=4, image_size=(40, 56), seed=5)[2]


def test_flip_twice_is_identity_and_stays_tight():
    s = _sample()
    original = {k: np.copy(v) for k, v in s.items() if isinstance(v, np.ndarray)}
    flip = RandomHorizontalFlip(p=1.0)
    f = flip(s, np.random.default_rng(0))
    check_instances(f)
    np.testing.assert_array_equal(f["image"], s["image"][:, :, ::-1])
    np.testing.assert_array_equal(f["label"], s["label"][:, ::-1])
    ff = flip(f, np.random.default_rng(0))
    for key in ("image", "label", "masks", "boxes", "labels"):
        np.testing.assert_array_equal(ff[key], s[key])
    for key, value in original.items():  # input untouched
        np.testing.assert_array_equal(s[key], value)
    same = RandomHorizontalFlip(p=0.0)(s, np.random.default_rng(0))
    np.testing.assert_array_equal(same["image"], s["image"])


def test_flip_probability_and_rng_required():
    s = _sample()
    flipped = sum(not np.array_equal(RandomHorizontalFlip(0.5)(s, np.random.default_rng(i))["label"], s["label"])
                  for i in range(200))
    assert 70 < flipped < 130
    with pytest.raises(TypeError, match="rng"):
        RandomHorizontalFlip(0.5)(s)
    with pytest.raises(ValueError, match="p must be"):
        RandomHorizontalFlip(1.5)


@pytest.mark.parametrize("seed", range(6))
def test_scale_crop_keeps_labels_valid(seed):
    s = _sample()
    t = RandomScaleCrop(scales=(0.5, 2.0), crop_size=(32, 48))
    out = t(s, np.random.default_rng(seed))
    assert out["image"].shape == (3, 32, 48) and out["image"].dtype == np.float32
    assert out["label"].shape == (32, 48) and out["label"].dtype == np.int64
    assert set(np.unique(out["label"]).tolist()) <= {0, 1, 2, 3, 255}
    check_instances(out)
    again = t(s, np.random.default_rng(seed))
    for key in ("image", "label", "masks", "boxes", "labels"):
        np.testing.assert_array_equal(out[key], again[key])


def test_scale_crop_pads_with_ignore_and_fill():
    s = _sample()  # 40 x 56
    out = RandomScaleCrop(scales=(0.5, 0.5), crop_size=(40, 56), fill=-1.0)(s, np.random.default_rng(0))
    # scaled to 20 x 28, padded at the bottom/right, the only crop offset is 0
    assert np.all(out["label"][20:] == 255) and np.all(out["label"][:, 28:] == 255)
    assert np.all(out["image"][:, 20:] == -1.0) and np.all(out["image"][:, :, 28:] == -1.0)
    np.testing.assert_array_equal(out["label"][:20, :28], resize_nearest(s["label"], (20, 28)))
    assert not np.any(out["label"][:20, :28] == 255)
    check_instances(out)


def test_scale_crop_drops_vanished_instances():
    s = _sample()
    big = RandomScaleCrop(scales=(2.0, 2.0), crop_size=8)
    kept = []
    for seed in range(20):
        out = big(s, np.random.default_rng(seed))
        assert 255 not in out["label"]  # 80 x 112 crops need no padding
        check_instances(out)
        kept.append(len(out["labels"]))
    assert min(kept) < len(s["labels"])


def test_scale_crop_boxes_without_masks():
    # channel 0 holds the column index, so the crop's x offset can be read off the output
    image = np.broadcast_to(np.arange(20, dtype=np.float32), (3, 10, 20)).copy()
    boxes = np.array([[0, 0, 4, 4], [10, 2, 20, 8], [3, 1, 15, 9]], np.float32)
    s = {"image": image, "boxes": boxes, "labels": np.array([1, 2, 3])}
    seen = set()
    for seed in range(12):
        out = RandomScaleCrop(scales=(1.0, 1.0), crop_size=(10, 10))(s, np.random.default_rng(seed))
        x0 = int(out["image"][0, 0, 0])
        seen.add(x0)
        np.testing.assert_array_equal(out["image"][0, 0], np.arange(x0, x0 + 10))
        expected = np.clip(boxes - [x0, 0, x0, 0], 0, 10)
        keep = expected[:, 2] > expected[:, 0]
        np.testing.assert_allclose(out["boxes"], expected[keep])
        np.testing.assert_array_equal(out["labels"], s["labels"][keep])
    assert len(seen) > 3


def test_resize_image_half_pixel_centres():
    row = np.array([[[0.0, 1.0]]], np.float32)  # (1, 1, 2)
    np.testing.assert_allclose(resize_image(row, (1, 4))[0, 0], [0.0, 0.25, 0.75, 1.0])
    const = np.full((3, 5, 7), 0.3, np.float32)
    np.testing.assert_allclose(resize_image(const, (11, 4)), 0.3, rtol=1e-6)
    lab = np.arange(4).reshape(2, 2)
    np.testing.assert_array_equal(resize_nearest(lab, (4, 4)), np.kron(lab, np.ones((2, 2), int)))


def test_resize_normalize_compose():
    s = _sample()
    out = Resize((20, 28))(s)
    assert out["image"].shape == (3, 20, 28)
    check_instances(out)
    norm = Normalize(mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))(s)
    np.testing.assert_allclose(norm["image"][0], (s["image"][0] - 0.5) / 0.5, rtol=1e-6)
    np.testing.assert_allclose(norm["image"][2], s["image"][2] / 2.0, rtol=1e-6)
    pipe = Compose([RandomHorizontalFlip(1.0), Normalize((0.5,) * 3, (0.5,) * 3)])
    out = pipe(s, np.random.default_rng(0))
    np.testing.assert_allclose(out["image"], (s["image"][:, :, ::-1] - 0.5) / 0.5, rtol=1e-6)
    with pytest.raises(ValueError, match="channels"):
        Normalize((0.5,), (0.5,))(s)


# --------------------------------------------------------------------------- loader


def test_loader_batches():
    ds = ShapesDataset("train", size=10, image_size=32, seed=0)
    loader = DataLoader(ds, batch_size=4, shuffle=True, seed=1)
    assert len(loader) == 3
    batches = list(loader.iter_epoch(0))
    assert [len(b["indices"]) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate([b["indices"] for b in batches]).tolist()) == list(range(10))
    b = batches[0]
    assert b["images"].shape == (4, 3, 32, 32) and b["images"].dtype == np.float32
    assert b["labels"].shape == (4, 32, 32) and b["labels"].dtype == np.int64
    assert len(b["instances"]) == 4
    for j, inst in enumerate(b["instances"]):
        ref = ds[int(b["indices"][j])]
        np.testing.assert_array_equal(b["images"][j], ref["image"])
        np.testing.assert_array_equal(inst["boxes"], ref["boxes"])
        np.testing.assert_array_equal(inst["masks"], ref["masks"])
    assert b["image_ids"] == b["indices"].tolist()
    assert len(DataLoader(ds, batch_size=4, drop_last=True)) == 2
    assert [len(b["indices"]) for b in DataLoader(ds, batch_size=4, drop_last=True)] == [4, 4]
    np.testing.assert_array_equal(next(iter(DataLoader(ds, batch_size=3)))["indices"], [0, 1, 2])


def test_loader_epochs_are_reproducible():
    ds = ShapesDataset("train", size=8, image_size=32, seed=0)
    tf = Compose([RandomScaleCrop((0.5, 2.0), crop_size=24), RandomHorizontalFlip(0.5)])
    loader = DataLoader(ds, batch_size=3, shuffle=True, seed=4, transform=tf)
    first = list(loader)  # epoch 0, then the counter moves on
    second = list(loader)  # epoch 1
    assert loader.epoch == 2
    assert not all(np.array_equal(a["indices"], b["indices"]) for a, b in zip(first, second))
    loader.set_epoch(1)
    resumed = list(loader)
    for a, b in zip(second, resumed):
        np.testing.assert_array_equal(a["indices"], b["indices"])
        np.testing.assert_array_equal(a["images"], b["images"])
        np.testing.assert_array_equal(a["labels"], b["labels"])
    # a sample's augmentation depends on (seed, epoch, index), not on the batch size
    other = DataLoader(ds, batch_size=8, shuffle=True, seed=4, transform=tf)
    whole = next(other.iter_epoch(1))
    np.testing.assert_array_equal(whole["indices"], np.concatenate([b["indices"] for b in second]))
    np.testing.assert_array_equal(whole["images"], np.concatenate([b["images"] for b in second]))
    # another seed, another order
    assert not np.array_equal(next(DataLoader(ds, 8, shuffle=True, seed=5).iter_epoch(1))["indices"],
                              whole["indices"])


def test_collate_needs_one_size():
    a = {"image": np.zeros((3, 4, 4), np.float32), "label": np.zeros((4, 4), np.int64)}
    b = {"image": np.zeros((3, 5, 4), np.float32), "label": np.zeros((5, 4), np.int64)}
    with pytest.raises(ValueError, match="RandomScaleCrop"):
        collate([a, b])
    assert "instances" not in collate([a, a])
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader([a], batch_size=0)


# --------------------------------------------------------------------------- folder


def _palette_png(path, label):
    im = Image.fromarray(label.astype(np.uint8), mode="P")
    palette = np.zeros((256, 3), np.uint8)
    palette[1:21] = np.random.default_rng(0).integers(0, 256, (20, 3))
    palette[255] = 224
    im.putpalette(palette.ravel().tolist())
    im.save(path)


def _voc(tmp_path, n=4, h=20, w=30):
    root = tmp_path / "voc"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = {}
    for i in range(n):
        stem = f"2007_{i:06d}"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{stem}.jpg")
        label = np.zeros((h, w), np.int64)
        label[4:12, 5:20] = i * 5 + 1
        label[4, 5:20] = 255  # border
        labels[stem] = label
        _palette_png(root / "SegmentationClass" / f"{stem}.png", label)
    stems = sorted(labels)
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(stems[:3]) + "\n")
    (root / "ImageSets/Segmentation/val.txt").write_text(stems[3] + "\n")
    # an extra JPEG without a label is normal in VOC
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(root / "JPEGImages" / "2008_000000.jpg")
    return root, labels


def test_folder_voc(tmp_path):
    root, labels = _voc(tmp_path)
    train = FolderDataset(root, split="train")
    assert train.layout == "voc" and train.num_classes == 21 and len(train) == 3
    assert len(FolderDataset(root, split="val")) == 1 and len(FolderDataset(root)) == 4
    s = train[1]
    assert s["image"].shape == (3, 20, 30) and s["image"].dtype == np.float32
    assert 0 <= s["image"].min() and s["image"].max() <= 1
    np.testing.assert_array_equal(s["label"], labels[s["image_id"]])
    assert 255 in s["label"]
    loader = DataLoader(train, batch_size=2, transform=RandomScaleCrop((0.5, 1.5), crop_size=16))
    batch = next(iter(loader))
    assert batch["labels"].shape == (2, 16, 16)
    assert set(np.unique(batch["labels"]).tolist()) <= set(range(21)) | {255}


def test_folder_voc_errors(tmp_path):
    root, _ = _voc(tmp_path)
    with pytest.raises(FileNotFoundError, match="split file"):
        FolderDataset(root, split="test")
    (root / "ImageSets/Segmentation/bad.txt").write_text("2007_999999\n")
    with pytest.raises(FileNotFoundError, match="2007_999999.jpg"):
        FolderDataset(root, split="bad")
    label = np.full((20, 30), 21)
    _palette_png(root / "SegmentationClass" / "2007_000000.png", label)
    ds = FolderDataset(root, split="train")
    with pytest.raises(ValueError, match=r"2007_000000\.png.*value 21"):
        ds[0]
    with pytest.raises(ValueError, match="value 21"):
        ds.validate()


def _simple(tmp_path, n=3, h=12, w=16):
    root = tmp_path / "simple"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(root / "images" / f"img{i}.png")
        label = np.full((h, w), i % 3, np.uint8)
        label[0] = 255
        Image.fromarray(label, mode="L").save(root / "labels" / f"img{i}.png")
    return root


def test_folder_simple(tmp_path):
    root = _simple(tmp_path)
    ds = FolderDataset(root, num_classes=3)
    assert ds.layout == "simple" and len(ds) == 3
    s = ds[2]
    assert s["image_id"] == "img2"
    np.testing.assert_allclose(s["image"], 80 / 255, rtol=1e-6)
    assert s["label"][0].tolist() == [255] * 16 and np.all(s["label"][1:] == 2)
    (root / "train.txt").write_text("img0\nimg2\n")
    assert [x[0] for x in FolderDataset(root, split="train", num_classes=3).items] == ["img0", "img2"]
    with pytest.raises(ValueError, match="num_classes"):
        FolderDataset(root)
    with pytest.raises(FileNotFoundError, match="split 'val'"):
        FolderDataset(root, split="val", num_classes=3)


def test_folder_clear_errors(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        FolderDataset(missing, num_classes=3)
    root = _simple(tmp_path)
    with pytest.raises(FileNotFoundError, match="no data set layout"):
        FolderDataset(root / "labels", num_classes=3)
    # label out of range
    with pytest.raises(ValueError, match=r"img1\.png.*value 1\b"):
        FolderDataset(root, num_classes=1)[1]
    # image without label
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(root / "images" / "lonely.jpg")
    with pytest.raises(FileNotFoundError, match=r"lonely\.jpg has no label file.*lonely\.png"):
        FolderDataset(root, num_classes=3)
    os.remove(root / "images" / "lonely.jpg")
    # unreadable image, RGB label
    (root / "images" / "img0.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read image file .*img0\.png"):
        FolderDataset(root, num_classes=3)[0]
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(root / "labels" / "img1.png")
    with pytest.raises(ValueError, match="mode 'RGB'"):
        FolderDataset(root, num_classes=3)[1]


# --------------------------------------------------------------------------- COCO


@given(st.integers(1, 7), st.integers(1, 7), st.integers(0, 2 ** 31 - 1), st.sampled_from([0.0, 0.3, 1.0]))
def test_rle_roundtrip(h, w, seed, p):
    mask = np.random.default_rng(seed).random((h, w)) < p
    rle = mask_to_rle(mask)
    assert rle["size"] == [h, w] and sum(rle["counts"]) == h * w
    assert all(isinstance(c, int) for c in rle["counts"])
    np.testing.assert_array_equal(rle_to_mask(rle), mask)
    json.dumps(rle)


def test_rle_layout_by_hand():
    mask = np.array([[0, 1, 1],
                     [0, 1, 0]], bool)
    # column-major: column 0 = (0, 0), column 1 = (1, 1), column 2 = (1, 0)
    assert mask_to_rle(mask)["counts"] == [2, 3, 1]
    assert mask_to_rle(np.ones((2, 2), bool))["counts"] == [0, 4]
    with pytest.raises(ValueError, match="sum"):
        rle_to_mask({"size": [2, 3], "counts": [2, 3]})


def test_rle_matches_pycocotools():
    mask_utils = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    for _ in range(5):
        mask = rng.random((9, 13)) < 0.4
        ours = mask_to_rle(mask)
        theirs = mask_utils.frPyObjects(ours, 9, 13)
        np.testing.assert_array_equal(mask_utils.decode(theirs).astype(bool), mask)
        compressed = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        text = {"size": [9, 13], "counts": compressed["counts"].decode("ascii")}
        np.testing.assert_array_equal(rle_to_mask(text), mask)


def test_compressed_rle_without_pycocotools(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    with pytest.raises(ImportError, match="pip install pycocotools"):
        rle_to_mask({"size": [2, 2], "counts": "04"})


def test_polygon_rasterisation():
    np.testing.assert_array_equal(np.argwhere(polygons_to_mask([[2, 3, 10, 3, 10, 8, 2, 8]], 12, 12)),
                                  np.argwhere(np.pad(np.ones((5, 8), bool), ((3, 4), (2, 2)))))
    # a triangle: the pixels whose centre lies below the diagonal y = x; centres exactly on
    # an edge go to the polygon on their left, so the diagonal (a right edge here) is inside
    tri = polygons_to_mask([[0, 0, 6, 6, 0, 6]], 6, 6)
    yy, xx = np.mgrid[0:6, 0:6] + 0.5
    np.testing.assert_array_equal(tri, yy >= xx)
    # shifted off the pixel centres, no tie: strictly below the line y = x + 0.25
    tri = polygons_to_mask([[0, 0.25, 5.75, 6, 0, 6]], 6, 6)
    np.testing.assert_array_equal(tri, yy > xx + 0.25)
    # two polygons are united, degenerate ones skipped
    two = polygons_to_mask([[0, 0, 2, 0, 2, 2, 0, 2], [4, 4, 6, 4, 6, 6, 4, 6], [1, 1, 2, 2]], 6, 6)
    assert two.sum() == 8 and two[0, 0] and two[5, 5]
    # overlapping polygons of one object are united, not XOR-ed
    overlap = polygons_to_mask([[0, 0, 4, 0, 4, 4, 0, 4], [2, 2, 6, 2, 6, 6, 2, 6]], 6, 6)
    assert overlap.sum() == 16 + 16 - 4


def test_polygons_close_to_pycocotools():
    mask_utils = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(1)
    ious = []
    for _ in range(30):
        n = rng.integers(3, 10)
        c = rng.uniform(15, 35, 2)
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(8, 14, n)
        poly = np.stack([c[0] + rad * np.cos(ang), c[1] + rad * np.sin(ang)], 1).ravel().tolist()
        ours = polygons_to_mask([poly], 50, 50)
        theirs = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], 50, 50))).astype(bool)
        ious.append((ours & theirs).sum() / (ours | theirs).sum())
    assert np.mean(ious) > 0.95 and np.min(ious) > 0.75


def _coco_fixture(tmp_path):
    root = tmp_path / "coco"
    root.mkdir()
    Image.fromarray(np.full((10, 12, 3), 128, np.uint8)).save(root / "a.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "b.png")
    rle_mask = np.zeros((10, 12), bool)
    rle_mask[6:9, 1:4] = True
    crowd_mask = np.zeros((10, 12), bool)
    crowd_mask[0:3, 8:12] = True
    data = {
        "images": [{"id": 11, "file_name": "a.png", "height": 10, "width": 12},
                   {"id": 12, "file_name": "b.png", "height": 8, "width": 8}],
        "categories": [{"id": 9, "name": "nine"}, {"id": 5, "name": "five"}],
        "annotations": [
            {"id": 1, "image_id": 11, "category_id": 9, "bbox": [2, 1, 5, 4], "area": 20, "iscrowd": 0,
             "segmentation": [[2, 1, 7, 1, 7, 5, 2, 5]]},
            {"id": 2, "image_id": 11, "category_id": 5, "bbox": [1, 6, 3, 3], "area": 9, "iscrowd": 0,
             "segmentation": mask_to_rle(rle_mask)},
            {"id": 3, "image_id": 11, "category_id": 5, "bbox": [8, 0, 4, 3], "area": 12, "iscrowd": 1,
             "segmentation": mask_to_rle(crowd_mask)},
            {"id": 4, "image_id": 11, "category_id": 5, "bbox": [3, 3, 0, 2], "area": 0, "iscrowd": 0,
             "segmentation": []},
        ],
    }
    return root, data, rle_mask, crowd_mask


def test_coco_reader(tmp_path):
    root, data, rle_mask, crowd_mask = _coco_fixture(tmp_path)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    ds = CocoDataset(path, root)
    assert len(ds) == 2 and ds.num_classes == 3
    assert ds.class_names == ("background", "five", "nine")
    assert ds.label_to_category == {1: 5, 2: 9}
    s = ds[0]
    assert s["image_id"] == 11 and s["image"].shape == (3, 10, 12)
    np.testing.assert_allclose(s["image"], 128 / 255, rtol=1e-6)
    np.testing.assert_array_equal(s["labels"], [2, 1])  # crowd and zero-width dropped
    np.testing.assert_array_equal(s["boxes"], [[2, 1, 7, 5], [1, 6, 4, 9]])
    poly = np.zeros((10, 12), bool)
    poly[1:5, 2:7] = True
    np.testing.assert_array_equal(s["masks"][0], poly)
    np.testing.assert_array_equal(s["masks"][1], rle_mask)
    expected = np.zeros((10, 12), np.int64)
    expected[poly] = 2
    expected[rle_mask] = 1
    expected[crowd_mask] = 255
    np.testing.assert_array_equal(s["label"], expected)
    check_instances(s, num_classes=3)
    empty = ds[1]
    assert empty["masks"].shape == (0, 8, 8) and empty["boxes"].shape == (0, 4)
    assert np.all(empty["label"] == 0)
    with_crowd = CocoDataset(data, root, include_crowd=True)[0]
    np.testing.assert_array_equal(with_crowd["iscrowd"], [False, False, True])
    np.testing.assert_array_equal(with_crowd["masks"][2], crowd_mask)


def test_coco_reader_errors(tmp_path):
    root, data, _, _ = _coco_fixture(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        CocoDataset(tmp_path / "missing.json", root)
    with pytest.raises(FileNotFoundError, match="image_root"):
        CocoDataset(data, tmp_path / "noimages")
    bad = json.loads(json.dumps(data))
    bad["annotations"][0]["category_id"] = 77
    with pytest.raises(ValueError, match="category_id 77"):
        CocoDataset(bad, root)
    bad = json.loads(json.dumps(data))
    bad["images"][0]["height"] = 11
    with pytest.raises(ValueError, match="json says"):
        CocoDataset(bad, root)[0]


def test_shapes_to_coco_roundtrip(tmp_path):
    ds = ShapesDataset("val", size=6, image_size=(40, 48), seed=2)
    coco = shapes_to_coco(ds, image_dir=tmp_path)
    json.dumps(coco)
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3]
    assert len(coco["images"]) == 6
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))
    back = CocoDataset(coco, tmp_path)
    assert back.label_to_category == {1: 1, 2: 2, 3: 3}
    for i in range(len(ds)):
        a, b = ds[i], back[i]
        assert b["image_id"] == a["image_id"] == i
        for key in ("masks", "boxes", "labels", "label"):
            np.testing.assert_array_equal(a[key], b[key])
        np.testing.assert_allclose(a["image"], b["image"], atol=0.5 / 255 + 1e-6)
    ann = coco["annotations"][0]
    x, y, w, h = ann["bbox"]
    first = ds[coco["images"][0]["id"]]
    assert ann["area"] == int(first["masks"][0].sum())
    np.testing.assert_array_equal([x, y, x + w, y + h], first["boxes"][0])

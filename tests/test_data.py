"""zoo.data: datasets, official-layout parsers on fake copies, PK sampling and the tf.data pipelines."""

from __future__ import annotations

import itertools
import os
import types

import numpy as np
import pytest
import scipy.io
import tensorflow as tf
from PIL import Image
from sklearn.datasets import load_digits as sklearn_digits

from zoo.data import DATASETS, ImageSet, PKSampler, eval_pipeline, load_dataset, train_pipeline
from zoo.data.pipeline import random_resized_boxes, resized_size
from zoo.data.synthetic import make_synthetic


def take(dataset: tf.data.Dataset, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(n)]


def write_jpeg(path: str, colour=(200, 30, 30), size=(12, 10)) -> bytes:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, colour).save(path, "JPEG", quality=95)
    with open(path, "rb") as f:
        return f.read()


def write_text(path: str, lines: list[str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def assert_decodes(image_set: ImageSet, colour=(200, 30, 30)) -> None:
    """eval_pipeline reads every file to (B, 16, 16, 3) images of the colour written."""
    batches = take(eval_pipeline(image_set, 16, batch_size=4), -1)
    images = np.concatenate([x for x, _ in batches])
    assert images.shape == (len(image_set), 16, 16, 3)
    np.testing.assert_allclose(images.mean(axis=(0, 1, 2)), colour, atol=8)
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), image_set.labels)


# ---------------------------------------------------------------------------------------- registry


def test_unknown_dataset_names_it_lists_all_and_suggests():
    with pytest.raises(ValueError) as error:
        load_dataset("cub")
    message = str(error.value)
    assert "'cub'" in message and "Did you mean 'cub200'" in message
    assert all(name in message for name in DATASETS)


def test_unknown_split():
    with pytest.raises(ValueError, match=r"unknown split 'val' of dataset 'digits'.*train, test"):
        load_dataset("digits", "val")
    with pytest.raises(ValueError, match=r"'test' of dataset 'inshop'.*train, query, gallery"):
        load_dataset("inshop", "test")


def test_image_set_basics_and_validation():
    labels = np.array([0, 0, 1, 1, 1, 2, 2], np.int32)
    images = np.zeros((7, 8, 8, 3), np.uint8)
    image_set = ImageSet("toy", "train", labels, ("a", "b", "c"), images, None)
    assert (len(image_set), image_set.num_classes) == (7, 3)
    assert image_set.steps_per_epoch(3) == 2 and image_set.steps_per_epoch(64) == 1
    with pytest.raises(ValueError, match="exactly one of images and paths"):
        ImageSet("toy", "train", labels, ("a",), images, ("x.jpg",) * 7)
    with pytest.raises(ValueError, match="int32"):
        ImageSet("toy", "train", labels.astype(np.int64), ("a",), images, None)
    with pytest.raises(ValueError, match="7 images but 6 labels"):
        ImageSet("toy", "train", labels[:6], ("a",), images, None)


# ------------------------------------------------------------------------------------------ digits


def test_digits_zero_shot_split_matches_sklearn():
    target = sklearn_digits().target
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert len(train) == int((target <= 4).sum()) == 901
    assert len(test) == int((target >= 5).sum()) == 896
    np.testing.assert_array_equal(np.bincount(train.labels), np.bincount(target)[:5])
    np.testing.assert_array_equal(np.bincount(test.labels), np.bincount(target)[5:])
    assert train.class_names == ("0", "1", "2", "3", "4")
    assert test.class_names == ("5", "6", "7", "8", "9")
    assert test.labels.dtype == np.int32 and set(test.labels) == set(range(5))


def test_digits_images_are_native_8x8_rgb_uint8_without_flip():
    digits = sklearn_digits()
    test = load_dataset("digits", "test")
    assert test.images.shape == (896, 8, 8, 3) and test.images.dtype == np.uint8
    assert test.paths is None and test.allow_flip is False
    assert (test.images.min(), test.images.max()) == (0, 255)
    first_five = digits.images[digits.target >= 5][0]
    np.testing.assert_array_equal(test.images[0, ..., 1], np.round(first_five * 255 / 16))
    np.testing.assert_array_equal(test.images[..., 0], test.images[..., 2])


# --------------------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_per_seed():
    a_images, a_ids = make_synthetic(8, 5, 16, seed=3)
    b_images, b_ids = make_synthetic(8, 5, 16, seed=3)
    c_images, _ = make_synthetic(8, 5, 16, seed=4)
    assert a_images.tobytes() == b_images.tobytes()
    np.testing.assert_array_equal(a_ids, b_ids)
    assert a_images.tobytes() != c_images.tobytes()
    assert a_images.shape == (40, 16, 16, 3) and a_images.dtype == np.uint8


def test_synthetic_splits_and_options():
    train, test = load_dataset("synthetic", "train"), load_dataset("synthetic", "test")
    assert (len(train), len(test)) == (200, 200)
    assert train.images.shape[1:] == (32, 32, 3) and train.allow_flip
    assert train.class_names == tuple(str(i) for i in range(10))
    assert test.class_names == tuple(str(i) for i in range(10, 20))
    np.testing.assert_array_equal(np.bincount(test.labels), [20] * 10)
    small = load_dataset("synthetic", "test", num_classes=7, images_per_class=3, image_size=12, seed=1)
    assert small.images.shape == (12, 12, 12, 3) and small.num_classes == 4  # classes 3..6
    with pytest.raises(ValueError, match="num_classes must be >= 4"):
        load_dataset("synthetic", num_classes=3)


def test_synthetic_is_learnable_but_not_solved_by_raw_pixels():
    test = load_dataset("synthetic", "test")
    pixels = test.images.reshape(len(test), -1).astype(np.float64)
    sq = (pixels**2).sum(1)
    distances = sq[:, None] - 2 * pixels @ pixels.T + sq[None]
    np.fill_diagonal(distances, np.inf)
    recall_at_1 = (test.labels[distances.argmin(1)] == test.labels).mean()
    assert 0.3 < recall_at_1 < 0.8  # chance is 0.1; measured 0.555


# ---------------------------------------------------------------------------------------- sampler


def sampler_labels() -> np.ndarray:
    """Class sizes 10, 3 (fewer than K), 6, 6, 6, 6, shuffled."""
    labels = np.repeat(np.arange(6), [10, 3, 6, 6, 6, 6])
    return np.random.default_rng(0).permutation(labels)


def test_pk_batches_hold_p_classes_of_k_images():
    labels = sampler_labels()
    sampler = PKSampler(labels, classes_per_batch=3, images_per_class=4, seed=0)
    batches = list(itertools.islice(sampler, 300))
    draws = np.zeros(6, int)
    for batch in batches:
        assert batch.shape == (12,) and batch.dtype == np.int64
        blocks = labels[batch].reshape(3, 4)
        assert (blocks == blocks[:, :1]).all()  # class by class, K of each
        classes = blocks[:, 0]
        assert len(set(classes)) == 3  # P classes without replacement
        draws[classes] += 1
        for block, cls in zip(batch.reshape(3, 4), classes):
            if cls != 1:  # classes with >= K images: no image twice
                assert len(set(block)) == 4
    assert draws.sum() == 900 and draws.min() > 100 and draws.max() < 200  # uniform: 150 each
    small_class = [b.reshape(3, 4)[i] for b in batches for i in range(3) if labels[b[4 * i]] == 1]
    assert all(len(set(block)) < 4 for block in small_class)  # 3 images -> with replacement


def test_pk_sampler_is_seeded():
    labels = sampler_labels()
    first = list(itertools.islice(PKSampler(labels, 3, 2, seed=5), 4))
    sampler = PKSampler(labels, 3, 2, seed=5)
    again = list(itertools.islice(sampler, 4))
    restarted = list(itertools.islice(sampler, 4))
    other = list(itertools.islice(PKSampler(labels, 3, 2, seed=6), 4))
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, restarted)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize(
    "p, k, message",
    [(1, 2, "classes_per_batch must be between 2 and the number of classes \\(6\\), got 1"),
     (7, 2, "classes_per_batch .* got 7"),
     (2, 1, "images_per_class must be >= 2")],
)
def test_pk_sampler_validates(p, k, message):
    with pytest.raises(ValueError, match=message):
        PKSampler(sampler_labels(), p, k)


# ---------------------------------------------------------------------------------------- pipelines


def test_train_pipeline_shapes_range_and_balance():
    digits = load_dataset("digits", "train")
    dataset = train_pipeline(digits, image_size=16, classes_per_batch=4, images_per_class=3, seed=0)
    images_spec, labels_spec = dataset.element_spec
    assert images_spec.shape == (12, 16, 16, 3) and images_spec.dtype == tf.float32
    assert labels_spec.shape == (12,) and labels_spec.dtype == tf.int32
    for images, labels in take(dataset, 3):
        assert images.shape == (12, 16, 16, 3)
        assert 0.0 <= images.min() and images.max() <= 255.0 and images.max() > 200
        assert sorted(np.bincount(labels, minlength=5).tolist()) == [0, 3, 3, 3, 3]


def test_train_pipeline_is_deterministic_per_seed():
    synthetic = load_dataset("synthetic", num_classes=8, images_per_class=6, image_size=16)
    first = take(train_pipeline(synthetic, 16, 3, 2, seed=1), 3)
    again = take(train_pipeline(synthetic, 16, 3, 2, seed=1), 3)
    other = take(train_pipeline(synthetic, 16, 3, 2, seed=2), 3)
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not all(np.array_equal(x1, x2) for (x1, _), (x2, _) in zip(first, other))


def test_train_pipeline_flips_only_when_allowed():
    images = np.zeros((8, 16, 16, 3), np.uint8)
    images[:, :, :6] = 255  # bright left third: a mirrored image is bright on the right
    labels = np.repeat(np.arange(4), 2).astype(np.int32)
    results = {}
    for allow_flip in (False, True):
        image_set = ImageSet("toy", "train", labels, tuple("abcd"), images, None, allow_flip=allow_flip)
        batches = np.concatenate([x for x, _ in take(train_pipeline(image_set, 16, 2, 2), 20)])
        results[allow_flip] = batches[:, :, 0].mean(axis=(1, 2)) > batches[:, :, -1].mean(axis=(1, 2))
    assert results[False].all()  # never mirrored
    assert 0.3 < results[True].mean() < 0.7  # mirrored about half the time


def test_random_resized_boxes_follow_torchvisions_area_and_ratio():
    boxes = random_resized_boxes(np.random.default_rng(0), 20_000, (0.3, 0.9))
    top, left, height, width = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + height <= 1 + 1e-6).all() and (left + width <= 1 + 1e-6).all()
    area, ratio = height * width, width / height
    assert 0.3 - 1e-6 <= area.min() and area.max() <= 0.9 + 1e-6  # no box reaches past the image at these areas
    assert abs(area.mean() - 0.6) < 0.01  # uniform in (0.3, 0.9)
    np.testing.assert_allclose([ratio.min(), ratio.max()], [3 / 4, 4 / 3], rtol=1e-3)
    assert abs(np.log(ratio).mean()) < 0.01  # log-uniform around 1


def test_random_resized_crop_zooms_into_the_image():
    """Red = column, green = row: the colour range of a crop is the fraction of the image it spans."""
    ramp = np.arange(32, dtype=np.uint8) * 8
    image = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], np.uint8(0)), axis=-1)
    image_set = ImageSet("toy", "train", np.repeat(np.arange(4), 2).astype(np.int32), tuple("abcd"),
                         np.repeat(image[None], 8, axis=0), None, allow_flip=False)

    def spans(**augmentation):
        (x, _), = take(train_pipeline(image_set, 16, 4, 2, seed=0, **augmentation), 1)
        return (x[..., :2].max(axis=(1, 2)) - x[..., :2].min(axis=(1, 2))) / 248.0  # (8, 2): width, height

    assert (spans() > 0.8).all()  # resize to 18, crop 16: 16/18 of the image minus the edge pixels
    # 20 % of the area at ratios 3/4-4/3: each side spans sqrt(0.2 * 3/4) = 0.39 to sqrt(0.2 * 4/3) = 0.52
    zoomed = spans(augmentation="random_resized_crop", crop_scale=(0.2, 0.2))
    assert 0.3 < zoomed.min() and zoomed.max() < 0.55
    with pytest.raises(ValueError, match="unknown augmentation 'mixup'"):
        train_pipeline(image_set, 16, 4, 2, augmentation="mixup")
    with pytest.raises(ValueError, match="crop_scale"):
        train_pipeline(image_set, 16, 4, 2, augmentation="random_resized_crop", crop_scale=(0.5, 1.5))


def test_eval_pipeline_keeps_order_and_center_crops():
    image_size = 14
    assert resized_size(image_size) == 16  # so the 16x16 images are not resized, only cropped
    base = np.arange(16 * 16 * 3).reshape(16, 16, 3) % 200
    images = np.stack([base + 10 * i for i in range(5)]).astype(np.uint8)
    labels = np.array([3, 0, 2, 1, 0], np.int32)
    image_set = ImageSet("toy", "test", labels, tuple("abcd"), images, None)
    batches = take(eval_pipeline(image_set, image_size, batch_size=2), -1)
    assert [len(y) for _, y in batches] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), labels)
    crops = np.concatenate([x for x, _ in batches])
    assert crops.dtype == np.float32
    np.testing.assert_allclose(crops, images[:, 1:15, 1:15].astype(np.float32), atol=1e-3)


def test_eval_pipeline_upscales_digits():
    digits = load_dataset("digits", "test")
    (images, labels), = take(eval_pipeline(digits, 32, batch_size=1000), 1)
    assert images.shape == (896, 32, 32, 3) and labels.shape == (896,)
    np.testing.assert_array_equal(labels, digits.labels)


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(image_size=4), "image_size must be >= 8, got 4"),
     (dict(classes_per_batch=1), "classes_per_batch"),
     (dict(classes_per_batch=6), "classes_per_batch must be between 2 and the number of classes \\(5\\)"),
     (dict(images_per_class=1), "images_per_class")],
)
def test_train_pipeline_validates(kwargs, message):
    args = {"image_size": 16, "classes_per_batch": 2, "images_per_class": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        train_pipeline(load_dataset("digits"), **args)


def test_eval_pipeline_validates():
    digits = load_dataset("digits")
    with pytest.raises(ValueError, match="image_size must be >= 8"):
        eval_pipeline(digits, 7)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        eval_pipeline(digits, 16, batch_size=0)


# ------------------------------------------------------------------------- official layouts (fake)


def make_cub(data_dir: str, classes=(1, 2, 100, 101, 150, 200), per_class=(3, 2, 2, 2, 2, 2)) -> None:
    root = os.path.join(data_dir, "CUB_200_2011")
    names = [f"{c:03d}.Bird_{c}" for c in range(1, 201)]
    rows, labels = [], []
    for cls, count in zip(classes, per_class):
        for j in range(count):
            rel = f"{names[cls - 1]}/Bird_{cls}_{j}.jpg"
            write_jpeg(os.path.join(root, "images", rel))
            rows.append(f"{len(rows) + 1} {rel}")
            labels.append(f"{len(labels) + 1} {cls}")
    write_text(os.path.join(root, "images.txt"), rows)
    write_text(os.path.join(root, "image_class_labels.txt"), labels)
    write_text(os.path.join(root, "classes.txt"), [f"{c} {n}" for c, n in enumerate(names, 1)])


def test_cub_parser(tmp_path):
    make_cub(str(tmp_path))
    train = load_dataset("cub200", "train", str(tmp_path))
    test = load_dataset("cub200", "test", data_dir=str(tmp_path), source="official")
    assert (len(train), len(test)) == (7, 6)
    np.testing.assert_array_equal(train.labels, [0, 0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(test.labels, [0, 0, 1, 1, 2, 2])
    assert train.class_names == ("001.Bird_1", "002.Bird_2", "100.Bird_100")
    assert test.class_names == ("101.Bird_101", "150.Bird_150", "200.Bird_200")
    assert test.images is None and all(os.path.isfile(p) for p in train.paths + test.paths)
    assert test.paths[0].endswith(os.path.join("images", "101.Bird_101", "Bird_101_0.jpg"))
    assert_decodes(train)


def test_cars_parser_ignores_the_official_test_flag(tmp_path):
    root = tmp_path / "cars196"
    classes = [1, 1, 50, 98, 99, 99, 150, 196]
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    annotations = np.zeros(len(classes), dtype=[(f, "O") for f in fields])
    for i, cls in enumerate(classes):
        rel = f"car_ims/{i + 1:06d}.jpg"
        write_jpeg(str(root / rel), colour=(20, 120, 220))
        annotations[i] = (rel, 1, 1, 10, 8, cls, i % 2)
    class_names = np.array([f"Car model {c}" for c in range(1, 197)], dtype=object)
    scipy.io.savemat(str(root / "cars_annos.mat"), {"annotations": annotations[None], "class_names": class_names[None]})

    train, test = (load_dataset("cars196", split, str(tmp_path)) for split in ("train", "test"))
    assert (len(train), len(test)) == (4, 4)
    np.testing.assert_array_equal(train.labels, [0, 0, 1, 2])
    np.testing.assert_array_equal(test.labels, [0, 0, 1, 2])
    assert train.class_names == ("Car model 1", "Car model 50", "Car model 98")
    assert test.class_names == ("Car model 99", "Car model 150", "Car model 196")
    assert test.paths[0] == str(root / "car_ims" / "000005.jpg")
    assert_decodes(test, colour=(20, 120, 220))


def test_sop_parser(tmp_path):
    root = tmp_path / "Stanford_Online_Products"
    header = "image_id class_id super_class_id path"
    train_rows = [(1, 1, "bicycle"), (2, 1, "bicycle"), (3, 2, "bicycle"), (4, 2, "bicycle"), (5, 7, "chair")]
    test_rows = [(6, 11319, "sofa"), (7, 11319, "sofa"), (8, 11320, "mug"), (9, 11320, "mug")]
    for file, rows in (("Ebay_train.txt", train_rows), ("Ebay_test.txt", test_rows)):
        lines = [header]
        for image_id, cls, super_class in rows:
            rel = f"{super_class}_final/{cls}_{image_id}.JPG"
            write_jpeg(str(root / rel))
            lines.append(f"{image_id} {cls} 1 {rel}")
        write_text(str(root / file), lines)
    train, test = (load_dataset("sop", split, str(tmp_path)) for split in ("train", "test"))
    assert (len(train), train.num_classes, len(test), test.num_classes) == (5, 3, 4, 2)
    np.testing.assert_array_equal(train.labels, [0, 0, 1, 1, 2])
    assert train.class_names == ("1", "2", "7") and test.class_names == ("11319", "11320")
    assert test.paths[2] == str(root / "mug_final" / "11320_8.JPG")
    assert_decodes(test)


def test_inshop_parser_query_and_gallery_share_labels(tmp_path):
    root = tmp_path / "InShop"
    rows = [("id_00000001", "train"), ("id_00000001", "train"), ("id_00000002", "train"),
            ("id_00000002", "train"), ("id_00000004", "query"), ("id_00000003", "query"),
            ("id_00000003", "gallery"), ("id_00000004", "gallery"), ("id_00000005", "gallery")]
    lines = [str(len(rows)), "image_name item_id evaluation_status"]
    for i, (item, status) in enumerate(rows):
        rel = f"img/WOMEN/Dresses/{item}/{i:02d}_1_front.jpg"
        write_jpeg(str(root / rel))
        lines.append(f"{rel}    {item}  {status}")
    write_text(str(root / "list_eval_partition.txt"), lines)

    train, query, gallery = (load_dataset("inshop", s, str(tmp_path)) for s in ("train", "query", "gallery"))
    assert (len(train), len(query), len(gallery)) == (4, 2, 3)
    np.testing.assert_array_equal(train.labels, [0, 0, 1, 1])
    assert train.class_names == ("id_00000001", "id_00000002")
    assert query.class_names == gallery.class_names == ("id_00000003", "id_00000004", "id_00000005")
    np.testing.assert_array_equal(query.labels, [1, 0])
    np.testing.assert_array_equal(gallery.labels, [0, 1, 2])
    assert query.paths[0] == str(root / "img/WOMEN/Dresses/id_00000004/04_1_front.jpg")
    assert_decodes(gallery)


# ------------------------------------------------------------------------------------ missing data


def test_missing_cub_names_the_expected_file_archive_and_tfds(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_dataset("cub200", "train", str(tmp_path))
    message = str(error.value)
    assert os.path.join(str(tmp_path), "CUB_200_2011", "images.txt") in message
    assert "CUB_200_2011.tgz" in message and "'caltech_birds2011'" in message and "source='tfds'" in message


def test_missing_images_name_the_first_image(tmp_path):
    make_cub(str(tmp_path))
    missing = tmp_path / "CUB_200_2011" / "images" / "101.Bird_101" / "Bird_101_0.jpg"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=f"expected {missing}"):
        load_dataset("cub200", "test", str(tmp_path))


@pytest.mark.parametrize(
    "name, expected, archive",
    [("cars196", "cars196/cars_annos.mat", "car_ims.tgz"),
     ("sop", "Stanford_Online_Products/Ebay_test.txt", "Stanford_Online_Products.zip"),
     ("inshop", "InShop/list_eval_partition.txt", "list_eval_partition.txt and Img/img.zip")],
)
def test_missing_benchmarks(tmp_path, name, expected, archive):
    split = "gallery" if name == "inshop" else "test"
    with pytest.raises(FileNotFoundError) as error:
        load_dataset(name, split, str(tmp_path), source="official")
    message = str(error.value)
    assert f"expected {os.path.join(str(tmp_path), expected)}" in message and archive in message
    assert ("no tensorflow-datasets version" in message) == (name == "inshop")


def test_inshop_has_no_tfds_source(tmp_path):
    with pytest.raises(ValueError, match="no tensorflow-datasets version"):
        load_dataset("inshop", data_dir=str(tmp_path), source="tfds")
    with pytest.raises(ValueError, match="unknown source 'web'"):
        load_dataset("sop", data_dir=str(tmp_path), source="web")


# ----------------------------------------------------------------------------- tensorflow-datasets


class FakeBuilder:
    """Stands in for ``tfds.builder("cars196")``: labels 0..195, encoded JPEG images."""

    def __init__(self, data_dir: str, prepared: bool, examples: list[tuple[bytes, int]]):
        self.data_dir = os.path.join(data_dir, "cars196", "2.1.0")
        self.prepared = prepared
        self.examples = examples
        self.calls: list[tuple] = []
        names = [f"Car {i}" for i in range(196)]
        self.info = types.SimpleNamespace(features={"label": types.SimpleNamespace(names=names)})

    def is_prepared(self) -> bool:
        return self.prepared

    def download_and_prepare(self, download_config):
        self.calls.append(("download_and_prepare", download_config.manual_dir))
        self.prepared = True
        os.makedirs(self.data_dir)

    def as_dataset(self, split, decoders):
        import tensorflow_datasets as tfds

        assert isinstance(decoders["image"], tfds.decode.SkipDecoding)
        self.calls.append(("as_dataset", split))
        images, labels = zip(*self.examples)
        return tf.data.Dataset.from_tensor_slices({"image": list(images), "label": np.array(labels, np.int64),
                                                   "bbox": np.zeros((len(labels), 4), np.float32)})


@pytest.fixture
def fake_tfds(tmp_path, monkeypatch):
    """Patches ``tfds.builder`` to return one FakeBuilder, created not prepared."""
    import tensorflow_datasets as tfds

    jpeg = write_jpeg(str(tmp_path / "source.jpg"), colour=(40, 200, 90))
    builder = FakeBuilder(str(tmp_path), False, [(jpeg, label) for label in (0, 0, 97, 98, 195, 195)])

    def fake_builder(name, data_dir):
        assert (name, data_dir) == ("cars196", str(tmp_path))
        return builder

    monkeypatch.setattr(tfds, "builder", fake_builder)
    return builder


def test_tfds_source_writes_a_cache_and_applies_the_zero_shot_split(tmp_path, fake_tfds):
    with pytest.raises(FileNotFoundError) as error:
        load_dataset("cars196", data_dir=str(tmp_path), source="tfds")
    assert f"expected the prepared tensorflow-datasets folder {fake_tfds.data_dir}" in str(error.value)
    assert "car_ims.tgz" in str(error.value)

    train = load_dataset("cars196", "train", str(tmp_path), source="tfds", download=True, manual_dir="/m")
    assert fake_tfds.calls == [("download_and_prepare", "/m"), ("as_dataset", "train+test")]
    test = load_dataset("cars196", "test", str(tmp_path))  # auto: no official layout, tfds prepared
    assert len(fake_tfds.calls) == 2  # the second split comes from the cache
    assert (len(train), len(test)) == (3, 3)
    np.testing.assert_array_equal(train.labels, [0, 0, 1])
    np.testing.assert_array_equal(test.labels, [0, 1, 1])
    assert train.class_names == ("Car 0", "Car 97") and test.class_names == ("Car 98", "Car 195")
    assert os.path.dirname(test.paths[0]) == str(tmp_path / "zoo_cache" / "cars196" / "train_test")
    assert_decodes(test, colour=(40, 200, 90))

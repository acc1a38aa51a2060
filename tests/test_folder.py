"""The 'folder' dataset: your own images from class subfolders or a CSV, split by class, checked on load."""

import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from image_folders import make_class_folder

from zoo import cli
from zoo.data import eval_pipeline, load_dataset, preprocess_for_embedding
from zoo.data.folder import seeded_split


def test_class_folders_split_by_class_with_a_seed(tmp_path):
    root = make_class_folder(tmp_path / "photos", classes=4, per_class=5)
    train, test = (load_dataset("folder", split, str(root)) for split in ("train", "test"))
    assert (len(train), len(test)) == (10, 10)
    assert not set(train.class_names) & set(test.class_names)
    assert set(train.class_names) | set(test.class_names) == {f"class_{c}" for c in range(4)}
    assert train.class_names == tuple(sorted(n for n, s in seeded_split([f"class_{c}" for c in range(4)], 0.5, 0).items()
                                             if s == "train"))
    assert {p.rsplit(".", 1)[1] for p in train.paths} == {"png", "jpg"}
    images, labels = next(iter(eval_pipeline(train, 32, batch_size=10)))
    assert images.shape == (10, 32, 32, 3) and labels.numpy().tolist() == [0] * 5 + [1] * 5
    other = load_dataset("folder", "test", str(root), seed=3)
    assert len(other) == 10


def test_split_file_and_csv_of_paths_and_labels(tmp_path):
    root = make_class_folder(tmp_path / "photos", classes=3, per_class=4)
    (root / "split.csv").write_text("label,split\nclass_0,test\nclass_1,train\nclass_2,train\n")
    assert load_dataset("folder", "test", str(root)).class_names == ("class_0",)
    assert load_dataset("folder", "train", str(root)).class_names == ("class_1", "class_2")
    rows = ["path,label,split"] + [f"photos/class_{c}/img_{i}.{'png' if i % 2 == 0 else 'jpg'},c{c},"
                                   f"{'test' if i == 3 else 'train'}" for c in range(3) for i in range(4)]
    (tmp_path / "images.csv").write_text("\n".join(rows) + "\n")
    test = load_dataset("folder", "test", str(tmp_path / "images.csv"))
    assert test.class_names == ("c0", "c1", "c2") and len(test) == 3
    assert test.paths[0] == str(tmp_path / "photos" / "class_0" / "img_3.jpg")


def test_a_csv_row_with_an_empty_label_or_a_binary_csv_is_refused_by_name(tmp_path):
    root = make_class_folder(tmp_path / "photos", classes=2, per_class=2)
    (tmp_path / "images.csv").write_text("photos/class_0/img_0.png,c0\nphotos/class_0/img_1.jpg, \n"
                                         "photos/class_1/img_0.png,c1\n")
    with pytest.raises(ValueError, match=r"images.csv: 1 rows have an empty label: .*class_0/img_1.jpg"):
        load_dataset("folder", "train", str(tmp_path / "images.csv"))
    with pytest.raises(ValueError, match="img_0.png is not a text CSV of rows 'path,label'"):
        load_dataset("folder", "train", str(root / "class_0" / "img_0.png"))
    (root / "split.csv").write_bytes((root / "class_0" / "img_0.png").read_bytes())  # a PNG saved as split.csv
    with pytest.raises(ValueError, match="split.csv is not a text CSV of rows 'label,split'"):
        load_dataset("folder", "train", str(root))


def test_unreadable_images_are_named_before_training(tmp_path, capsys):
    root = make_class_folder(tmp_path / "photos", classes=4, per_class=5)
    (root / "class_1" / "broken.png").write_bytes(b"not a png")
    (root / "class_3" / "cut.jpg").write_bytes((root / "class_3" / "img_1.jpg").read_bytes()[:20])
    with pytest.raises(ValueError, match=r"2 of 22 images cannot be decoded") as error:
        load_dataset("folder", "train", str(root))
    assert "broken.png" in str(error.value) and "cut.jpg" in str(error.value)
    code = cli.main(["train", "--dataset", "folder", "--data-dir", str(root), "--epochs", "1",
                     "--run-dir", str(tmp_path / "run")])
    assert code == 2 and "broken.png" in capsys.readouterr().err
    assert not (tmp_path / "run" / "backup").exists()


def _png_header(path, width: int, height: int) -> None:
    """A PNG that says it is width x height (signature, IHDR, IEND): what a decompression bomb shows first."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))


def test_an_image_of_too_many_pixels_is_refused_by_name_before_it_is_decoded(tmp_path, monkeypatch, capsys):
    root = make_class_folder(tmp_path / "photos", classes=4, per_class=5)
    _png_header(root / "class_1" / "huge.png", 20_000, 20_000)  # 1.2 GB decoded
    _png_header(root / "class_2" / "large.png", 8_000, 8_000)
    with pytest.raises(ValueError, match=r"2 of 22 images") as error:
        load_dataset("folder", "train", str(root))
    assert "huge.png (more than 178,956,970 pixels, PIL's decompression-bomb limit" in str(error.value)
    assert ("large.png (8000 x 8000 = 64,000,000 pixels, above the limit of 50,000,000; $ZOO_MAX_PIXELS raises it)"
            in str(error.value))
    (root / "class_1" / "huge.png").unlink()
    (root / "class_2" / "large.png").unlink()
    assert len(load_dataset("folder", "train", str(root))) == 10  # 20 x 20 images: within the default
    monkeypatch.setenv("ZOO_MAX_PIXELS", "300")
    with pytest.raises(ValueError, match=r"20 of 20 images .* too large:\n  .*img_0.png \(20 x 20 = 400 pixels"):
        load_dataset("folder", "train", str(root))
    monkeypatch.setenv("ZOO_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match=r"\$ZOO_MAX_PIXELS must be a positive number of pixels, got 'lots'"):
        load_dataset("folder", "train", str(root))


def test_preprocess_for_embedding_is_the_evaluation_crop(tmp_path):
    root = make_class_folder(tmp_path / "photos", classes=2, per_class=2, size=40)
    image_set = load_dataset("folder", "train", str(root), test_fraction=0.5)
    batch, _ = next(iter(eval_pipeline(image_set, 32, batch_size=2)))
    raw = tf.io.decode_image(tf.io.read_file(image_set.paths[0]), channels=3)
    np.testing.assert_array_equal(preprocess_for_embedding(raw, 32).numpy(), batch[0].numpy())
    both = preprocess_for_embedding(np.stack([raw.numpy()] * 2), 32)
    assert both.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(both[1].numpy(), batch[0].numpy())

"""Your own images as a dataset: a folder with one subfolder per class, or a CSV of ``path,label``.

    zoo train --dataset folder --data-dir photos/          # photos/<class>/<image>, any depth below <class>
    zoo train --dataset folder --data-dir photos.csv       # rows "path,label" (paths relative to the CSV)

Images are any format ``tf.io.decode_image`` reads (PNG, JPEG, GIF, BMP; mixed freely), recognised by
their suffix (:data:`IMAGE_SUFFIXES`). Every image is decoded once when the set is loaded, so an unreadable
file is reported by name before training starts, not in the middle of an epoch. An image of more than
:data:`MAX_PIXELS` pixels (width x height, read from its header before anything is decoded) is refused
by name: a small file can decode to gigabytes. ``$ZOO_MAX_PIXELS`` sets another limit (PIL's own
decompression-bomb limit, ``2 * PIL.Image.MAX_IMAGE_PIXELS``, still applies).

Zero-shot split by class, as the benchmarks: without a split file, a ``test_fraction`` of the classes,
drawn with ``seed``, are the test classes and the others train. A split file says it instead: a CSV of
rows ``label,split`` (``split`` is ``train`` or ``test``; every class listed), by default ``split.csv``
in the image folder; or, for a CSV of images, its third column (``path,label,split``, per image).
"""

from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from zoo.data import ImageSet, build_image_set

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
MAX_PIXELS = 50_000_000  # default limit of width x height: a 50-megapixel photo, 150 MB decoded as RGB bytes
MAX_PIXELS_VARIABLE = "ZOO_MAX_PIXELS"  # the environment variable that overrides it
SPLIT_FILE = "split.csv"
SPLIT_NAMES = ("train", "test")


def image_files(folder: str | Path) -> tuple[list[str], list[str | None]]:
    """The image files below ``folder`` (sorted) and their class: the first subfolder's name, None at the top.

    Raises:
        FileNotFoundError: ``folder`` is not a folder, or holds no image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    files = sorted(
        path for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not path.name.startswith(".")
    )
    if not files:
        raise FileNotFoundError(f"no image ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    labels = [path.relative_to(folder).parts[0] if path.parent != folder else None for path in files]
    return [str(path) for path in files], labels


def read_csv(path: str | Path) -> tuple[list[str], list[str], list[str] | None]:
    """Rows ``path,label[,split]`` of a CSV (a header row ``path,label...`` is skipped).

    Returns:
        ``(paths, labels, splits)``: paths resolved against the CSV's folder; ``splits`` None
        without a third column.

    Raises:
        ValueError: not a text CSV, a row without a label, or with a split column on some rows only.
    """
    path = Path(path)
    rows = _csv_rows(path, "path,label")
    if rows and rows[0][0].strip().lower() == "path":
        rows = rows[1:]
    if not rows:
        raise ValueError(f"{path} has no rows 'path,label'")
    widths = {len(row) for row in rows}
    if not widths <= {2, 3} or len(widths) > 1:
        bad = next(i for i, row in enumerate(rows, 1) if len(row) != len(rows[0]) or len(row) not in (2, 3))
        raise ValueError(f"{path}: every row must be 'path,label' or every row 'path,label,split'; row {bad} is not")
    paths = [str(path.parent / row[0].strip()) for row in rows]
    labels = [row[1].strip() for row in rows]
    unlabelled = [paths[i] for i, label in enumerate(labels) if not label]
    if unlabelled:
        raise ValueError(f"{path}: {len(unlabelled)} rows have an empty label: {', '.join(unlabelled[:10])}")
    splits = [row[2].strip() for row in rows] if widths == {3} else None
    return paths, labels, splits


def max_pixels() -> int:
    """The decoded-pixel limit of one image: ``$ZOO_MAX_PIXELS`` if set, else :data:`MAX_PIXELS`.

    Raises:
        ValueError: ``$ZOO_MAX_PIXELS`` is not a positive integer.
    """
    value = os.environ.get(MAX_PIXELS_VARIABLE, str(MAX_PIXELS))
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ValueError(f"${MAX_PIXELS_VARIABLE} must be a positive number of pixels, got {value!r}")
    return limit


def _too_large(path: str, limit: int) -> str | None:
    """Why ``path`` is refused when its header says it has more than ``limit`` pixels (None: it has not)."""
    try:
        with Image.open(path) as image:  # reads the header only
            width, height = image.size
    except Image.DecompressionBombError:  # above PIL's own limit, which it checks before saying the size
        return (f"{path} (more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, PIL's decompression-bomb limit; the "
                f"zoo's limit is {limit:,}, ${MAX_PIXELS_VARIABLE})")
    except Exception:  # not an image PIL reads: tf.io.decode_image decides
        return None
    if width * height <= limit:
        return None
    return (f"{path} ({width} x {height} = {width * height:,} pixels, above the limit of {limit:,}; "
            f"${MAX_PIXELS_VARIABLE} raises it)")


@lru_cache(maxsize=8)
def _unreadable(paths: tuple[str, ...], stamps: tuple[tuple[int, int], ...], limit: int) -> tuple[str, ...]:
    """The files of ``paths`` that are too large or that ``tf.io.decode_image`` cannot read, each with the reason
    (cached per stamp)."""

    def problem(path: str) -> str | None:
        too_large = _too_large(path, limit)
        if too_large:
            return too_large
        try:
            tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        except tf.errors.OpError as error:
            return f"{path} ({error.message.splitlines()[0]})"
        return None

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return tuple(reason for reason in pool.map(problem, paths) if reason)


def check_readable(paths: list[str] | tuple[str, ...]) -> None:
    """Decode every image once; raise naming every file that does not decode or has more than
    :func:`max_pixels` pixels (refused before it is decoded).

    Raises:
        FileNotFoundError: a file is missing. ValueError: files that do not decode or are too large, listed.
    """
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image files do not exist: {', '.join(missing[:20])}")
    stamps = tuple((os.stat(path).st_mtime_ns, os.stat(path).st_size) for path in paths)
    bad = _unreadable(tuple(paths), stamps, max_pixels())
    if bad:
        listed = "\n  ".join(bad[:50]) + ("\n  ..." if len(bad) > 50 else "")
        raise ValueError(f"{len(bad)} of {len(paths)} images cannot be decoded (tf.io.decode_image) or are too "
                         f"large:\n  {listed}")


def _csv_rows(path: Path, columns: str) -> list[list[str]]:
    """The non-blank rows of the CSV ``path`` (of rows ``columns``, for the error).

    Raises:
        ValueError: the file is not a text CSV, named.
    """
    try:
        with open(path, newline="") as stream:
            return [row for row in csv.reader(stream) if row and any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path} is not a text CSV of rows '{columns}': {error}") from None


def _read_split_file(path: Path, classes: list[str]) -> dict[str, str]:
    """Class -> split from rows ``label,split`` of ``path``; every class must be listed."""
    rows = [row for row in _csv_rows(path, "label,split") if row[0].strip() and row[0].strip().lower() != "label"]
    assignment = {row[0].strip(): row[1].strip() for row in rows if len(row) >= 2}
    missing = sorted(set(classes) - set(assignment))
    if missing:
        raise ValueError(f"split file {path} does not list the classes {missing[:10]}")
    return assignment


def seeded_split(classes: list[str], test_fraction: float, seed: int) -> dict[str, str]:
    """Class -> ``"train"``/``"test"``: ``round(test_fraction * C)`` classes (at least 1) drawn with ``seed`` test."""
    if len(classes) < 2:
        raise ValueError(f"a zero-shot split needs at least 2 classes, got {len(classes)}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    num_test = min(len(classes) - 1, max(1, round(test_fraction * len(classes))))
    order = np.random.default_rng(seed).permutation(sorted(classes))
    return {str(name): "test" if i < num_test else "train" for i, name in enumerate(order)}


def load_folder(
    split: str = "train",
    data_dir: str | None = None,
    *,
    seed: int = 0,
    test_fraction: float = 0.5,
    split_file: str | None = None,
) -> ImageSet:
    """One split of your own images (module docstring: layout and split).

    Args:
        split: ``"train"`` or ``"test"``.
        data_dir: a folder with one subfolder per class, or a CSV file of ``path,label[,split]`` rows.
        seed: seed of the class split (without a split file).
        test_fraction: fraction of the classes in the test split (without a split file).
        split_file: CSV of ``label,split`` rows; default ``DATA_DIR/split.csv`` when it exists.

    Returns:
        An on-disk ImageSet; ``class_names`` are the folder names or CSV labels.

    Raises:
        ValueError: no data_dir, images outside a class folder, unreadable images (all named),
            an unknown split name or a bad split file.
        FileNotFoundError: data_dir, an image or the split file does not exist.
    """
    if data_dir is None:
        raise ValueError("the 'folder' dataset needs data_dir (--data-dir): a folder of class subfolders or a CSV")
    source = Path(data_dir)
    if source.is_file():
        paths, labels, row_splits = read_csv(source)
    else:
        paths, folder_labels = image_files(source)
        loose = [path for path, label in zip(paths, folder_labels) if label is None]
        if loose:
            raise ValueError(
                f"{len(loose)} images of {source} are not in a class subfolder (e.g. {loose[0]}): "
                "put each class's images in a subfolder named after it"
            )
        labels, row_splits = folder_labels, None
        split_file = split_file or (str(source / SPLIT_FILE) if (source / SPLIT_FILE).is_file() else None)
    if split_file is not None:
        if not Path(split_file).is_file():
            raise FileNotFoundError(f"split file {split_file} does not exist")
        assignment = _read_split_file(Path(split_file), sorted(set(labels)))
        row_splits = [assignment[label] for label in labels]
    elif row_splits is None:
        assignment = seeded_split(sorted(set(labels)), test_fraction, seed)
        row_splits = [assignment[label] for label in labels]
    unknown = sorted(set(row_splits) - set(SPLIT_NAMES))
    if unknown:
        raise ValueError(f"split names must be 'train' or 'test', got {unknown} in {split_file or data_dir}")
    check_readable(paths)
    keep = np.array([row_split == split for row_split in row_splits])
    if not keep.any():
        raise ValueError(f"no image of {data_dir} is in the {split!r} split")
    return build_image_set("folder", split, np.array(labels), keep, paths=paths)

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

A CSV with a header row names its columns, in any order (Open Metric Learning's convention, whose
``validation`` split is the ``test`` one): ``path``, ``label``, optional ``split``, and optional ``is_query``
and ``is_gallery`` (true/false, 1/0). With the last two, the test images are evaluated query against
gallery (:func:`load_query_gallery`; a row may be both, and a query never retrieves itself), as In-Shop is.
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
SPLIT_ALIASES = {"validation": "test"}  # Open Metric Learning's name of the evaluation split
CSV_COLUMNS = ("path", "label", "split", "is_query", "is_gallery")
TRUE, FALSE = ("1", "true", "t", "yes", "y"), ("0", "false", "f", "no", "n", "")


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


def read_csv_columns(path: str | Path) -> dict[str, list[str]]:
    """The columns of a CSV of images by name (:data:`CSV_COLUMNS`; module docstring), ``path`` resolved.

    A header row naming ``path`` and ``label`` gives the columns (others are ignored); without one (or with
    a header ``path,...`` only), rows are ``path,label[,split]``. ``validation`` splits read as ``test``.

    Raises:
        ValueError: not a text CSV, no rows, a row of another width, or a row without a label.
    """
    path = Path(path)
    rows = [[cell.strip() for cell in row] for row in _csv_rows(path, "path,label")]
    header = [cell.lower() for cell in rows[0]] if rows else []
    named = "path" in header and "label" in header
    if named or header[:1] == ["path"]:
        rows = rows[1:]
    if not rows:
        raise ValueError(f"{path} has no rows 'path,label'")
    widths = {len(row) for row in rows}
    if named:
        if len(widths) > 1 or widths != {len(header)}:
            bad = next(i for i, row in enumerate(rows, 2) if len(row) != len(header))
            raise ValueError(f"{path}: row {bad} does not have the {len(header)} columns of the header")
        columns = {name: [row[header.index(name)] for row in rows] for name in CSV_COLUMNS if name in header}
    else:
        if not widths <= {2, 3} or len(widths) > 1:
            bad = next(i for i, row in enumerate(rows, 1) if len(row) != len(rows[0]) or len(row) not in (2, 3))
            raise ValueError(f"{path}: every row must be 'path,label' or every row 'path,label,split'; row {bad} "
                             "is not")
        columns = {name: [row[i] for row in rows] for i, name in enumerate(CSV_COLUMNS[: len(rows[0])])}
    columns["path"] = [str(path.parent / file) for file in columns["path"]]
    unlabelled = [file for file, label in zip(columns["path"], columns["label"]) if not label]
    if unlabelled:
        raise ValueError(f"{path}: {len(unlabelled)} rows have an empty label: {', '.join(unlabelled[:10])}")
    if "split" in columns:
        columns["split"] = [SPLIT_ALIASES.get(split.lower(), split) for split in columns["split"]]
    return columns


def read_csv(path: str | Path) -> tuple[list[str], list[str], list[str] | None]:
    """Rows ``path,label[,split]`` of a CSV (:func:`read_csv_columns`).

    Returns:
        ``(paths, labels, splits)``: paths resolved against the CSV's folder; ``splits`` None
        without a split column.

    Raises:
        ValueError: a row without a label, or with a split column on some rows only.
    """
    columns = read_csv_columns(path)
    return columns["path"], columns["label"], columns.get("split")


def _flags(path: Path, columns: dict[str, list[str]], name: str) -> np.ndarray:
    """A true/false column of a CSV as booleans."""
    values = [value.lower() for value in columns[name]]
    bad = [i for i, value in enumerate(values, 1) if value not in TRUE + FALSE]
    if bad:
        raise ValueError(f"{path}: column {name} must be true or false (1 or 0); rows {bad[:10]} are "
                         f"{[columns[name][i - 1] for i in bad[:3]]}")
    return np.array([value in TRUE for value in values])


def has_query_gallery(data_dir: str | Path | None) -> bool:
    """Whether ``data_dir`` is a CSV with ``is_query`` and ``is_gallery`` columns (query/gallery evaluation)."""
    if data_dir is None or not Path(data_dir).is_file():
        return False
    columns = read_csv_columns(data_dir)
    return "is_query" in columns and "is_gallery" in columns


def _image_rows(source: str | Path) -> tuple[list[str], list[str]]:
    """Every image of a class folder or a CSV of ``path,label`` rows, and its label."""
    if Path(source).is_file():
        paths, labels, _ = read_csv(source)
        return paths, labels
    paths, labels = image_files(source)
    loose = [path for path, label in zip(paths, labels) if label is None]
    if loose:
        raise ValueError(
            f"{len(loose)} images of {source} are not in a class subfolder (e.g. {loose[0]}): "
            "put each class's images in a subfolder named after it"
        )
    return paths, labels


def load_query_gallery(queries: str | Path, gallery: str | Path | None = None) -> tuple[ImageSet, ImageSet]:
    """Queries and gallery with one label space, from a CSV's ``is_query``/``is_gallery`` rows or two sources.

    Args:
        queries: a CSV with ``is_query`` and ``is_gallery`` columns (its ``test`` rows when it has a ``split``
            column) if ``gallery`` is None; else a class folder or a CSV of ``path,label`` rows.
        gallery: the gallery, a class folder or a CSV.

    Returns:
        ``(queries, gallery)`` ImageSets (splits ``"query"`` and ``"gallery"``). The same file in both is the
        same image (:func:`zoo.evaluation.own_references`).

    Raises:
        ValueError: no query or no gallery image, a CSV without the columns, unreadable images (all named).
    """
    if gallery is None:
        source = Path(queries)
        if not has_query_gallery(source):
            raise ValueError(f"{queries} is not a CSV with is_query and is_gallery columns: give the gallery too "
                             "(--gallery), or add the columns (header path,label,is_query,is_gallery)")
        columns = read_csv_columns(source)
        paths, labels = columns["path"], columns["label"]
        evaluated = np.array([split == "test" for split in columns.get("split", ["test"] * len(paths))])
        is_query = _flags(source, columns, "is_query") & evaluated
        is_gallery = _flags(source, columns, "is_gallery") & evaluated
        where = f"{queries}" + (" (its test/validation rows)" if "split" in columns else "")
    else:
        query_paths, query_labels = _image_rows(queries)
        gallery_paths, gallery_labels = _image_rows(gallery)
        paths, labels = query_paths + gallery_paths, query_labels + gallery_labels
        is_query = np.arange(len(paths)) < len(query_paths)
        is_gallery, where = ~is_query, f"{queries} and {gallery}"
    for name, rows in (("query", is_query), ("gallery", is_gallery)):
        if not rows.any():
            raise ValueError(f"{where} has no {name} image (is_{name} true): a query/gallery evaluation needs both")
    keep = is_query | is_gallery
    check_readable([path for path, kept in zip(paths, keep) if kept])
    labels = np.array(labels)
    return tuple(build_image_set("folder", name, labels, rows, paths=paths, label_space=keep)
                 for name, rows in (("query", is_query), ("gallery", is_gallery)))


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
        (paths, labels), row_splits = _image_rows(source), None
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

"""The DML benchmarks, read from their official directory layouts or from tensorflow-datasets.

Layouts under ``data_dir`` (default: ``$ZOO_DATA_DIR``, else ``~/zoo_data``) and zero-shot splits:

- ``cub200``: ``CUB_200_2011/{images.txt, image_class_labels.txt, classes.txt, images/}``;
  classes 1-100 train, 101-200 test.
- ``cars196``: ``cars196/{cars_annos.mat, car_ims/}`` (the "all images" annotations); classes
  1-98 train, 99-196 test, the official train/test flag ignored as in the DML protocol.
- ``sop``: ``Stanford_Online_Products/{Ebay_train.txt, Ebay_test.txt, <super_class>_final/}``;
  train = Ebay_train.txt (11,318 classes), test = Ebay_test.txt (11,316 classes).
- ``inshop``: ``InShop/{list_eval_partition.txt, img/}``; splits ``train``, ``query`` and
  ``gallery``. Query and gallery share one label space (the items of both), so their labels
  compare directly; a class may then have no image in one of them.

tensorflow-datasets (``caltech_birds2011``, ``cars196``, ``stanford_online_products``) is used
with ``source="tfds"``, or with the default ``source="auto"`` when the official layout is
missing but tfds has the dataset prepared in ``data_dir`` (or ``download=True``). The builder
reads ``data_dir`` and downloads only when ``download=True``. On first use a split's encoded
images are written once, as they are, to ``<cache_dir>/<tfds name>/<tfds split>/`` (default
``cache_dir``: ``<data_dir>/zoo_cache``) with an ``index.txt`` of ``file label`` lines, so the
ImageSet is file-based like the official layouts. CUB and Cars are cut from tfds'
``train+test`` by the same zero-shot class split; SOP's tfds splits are already zero-shot.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from zoo.data import ImageSet, build_image_set, zero_shot_mask

SOURCES = ("auto", "official", "tfds")


class _MissingFile(FileNotFoundError):
    """A required file of an official layout is missing (turned into a helpful message)."""


def _require(path: str) -> str:
    if not os.path.isfile(path):
        raise _MissingFile(path)
    return path


def _read_rows(path: str, skip: int = 0) -> list[list[str]]:
    """Whitespace-separated fields of the non-empty lines of a text file, after ``skip`` lines."""
    with open(_require(path), encoding="utf-8") as f:
        lines = f.read().splitlines()[skip:]
    return [line.split() for line in lines if line.strip()]


def _parse_cub(root: str, split: str) -> ImageSet:
    image_files = _read_rows(os.path.join(root, "images.txt"))
    class_of = dict(_read_rows(os.path.join(root, "image_class_labels.txt")))
    names = {int(cid): name for cid, name in _read_rows(os.path.join(root, "classes.txt"))}
    class_ids = np.array([int(class_of[image_id]) for image_id, _ in image_files])
    return build_image_set(
        "cub200", split, class_ids, zero_shot_mask(class_ids, split, 100),
        paths=[os.path.join(root, "images", rel) for _, rel in image_files],
        class_names=names,
    )


def _parse_cars(root: str, split: str) -> ImageSet:
    from scipy.io import loadmat

    mat = loadmat(_require(os.path.join(root, "cars_annos.mat")), squeeze_me=True)
    annotations = np.atleast_1d(mat["annotations"])
    class_ids = annotations["class"].astype(np.int64)
    names = {i + 1: str(name) for i, name in enumerate(np.atleast_1d(mat["class_names"]))}
    return build_image_set(
        "cars196", split, class_ids, zero_shot_mask(class_ids, split, 98),
        paths=[os.path.join(root, str(rel)) for rel in annotations["relative_im_path"]],
        class_names=names,
    )


def _parse_sop(root: str, split: str) -> ImageSet:
    rows = _read_rows(os.path.join(root, f"Ebay_{split}.txt"), skip=1)  # image_id class_id super_class_id path
    return build_image_set(
        "sop", split, np.array([int(row[1]) for row in rows]),
        paths=[os.path.join(root, row[3]) for row in rows],
    )


def _parse_inshop(root: str, split: str) -> ImageSet:
    rows = _read_rows(os.path.join(root, "list_eval_partition.txt"), skip=2)  # count, header
    files, items, status = (np.array(column) for column in zip(*rows))
    keep = status == split
    return build_image_set(
        "inshop", split, items, keep,
        paths=[os.path.join(root, f) for f in files],
        label_space=keep if split == "train" else status != "train",
    )


@dataclass(frozen=True)
class Benchmark:
    """Where a benchmark lives and how to read it.

    Attributes:
        title: readable name.
        folder: its folder under ``data_dir``.
        marker: the annotation file (in ``folder``) whose presence means the official layout.
        layout: the expected layout, for error messages.
        archive: the official archive(s) and where they come from.
        parse: ``(root folder, split) -> ImageSet`` for the official layout.
        tfds_name: the tensorflow-datasets name, None if there is none.
        tfds_label: the tfds feature holding the class.
        tfds_last_train_class: last training class of the zero-shot split of tfds' ``train+test``;
            None when tfds' own ``train``/``test`` splits are the zero-shot ones.
    """

    title: str
    folder: str
    marker: str
    layout: str
    archive: str
    parse: Callable[[str, str], ImageSet]
    tfds_name: str | None = None
    tfds_label: str = "label"
    tfds_last_train_class: int | None = None


BENCHMARKS: dict[str, Benchmark] = {
    "cub200": Benchmark(
        "CUB-200-2011", "CUB_200_2011", "images.txt",
        "CUB_200_2011/{images.txt, image_class_labels.txt, classes.txt, images/}",
        "archive CUB_200_2011.tgz (https://www.vision.caltech.edu/datasets/cub_200_2011/)",
        _parse_cub, "caltech_birds2011", "label", 99,
    ),
    "cars196": Benchmark(
        "Cars196", "cars196", "cars_annos.mat", "cars196/{cars_annos.mat, car_ims/}",
        "files car_ims.tgz and cars_annos.mat (https://ai.stanford.edu/~jkrause/cars/car_dataset.html)",
        _parse_cars, "cars196", "label", 97,
    ),
    "sop": Benchmark(
        "Stanford Online Products", "Stanford_Online_Products", "Ebay_train.txt",
        "Stanford_Online_Products/{Ebay_train.txt, Ebay_test.txt, <super_class>_final/}",
        "archive Stanford_Online_Products.zip (https://cvgl.stanford.edu/projects/lifted_struct/)",
        _parse_sop, "stanford_online_products", "class_id", None,
    ),
    "inshop": Benchmark(
        "In-Shop Clothes Retrieval", "InShop", "list_eval_partition.txt", "InShop/{list_eval_partition.txt, img/}",
        "DeepFashion In-shop Clothes Retrieval files Eval/list_eval_partition.txt and Img/img.zip "
        "(https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html)",
        _parse_inshop,
    ),
}


def default_data_dir() -> str:
    """``$ZOO_DATA_DIR``, else ``~/zoo_data``."""
    return os.environ.get("ZOO_DATA_DIR") or os.path.expanduser("~/zoo_data")


def _missing_message(name: str, bench: Benchmark, data_dir: str, expected: str) -> str:
    tfds_hint = (
        f"Or use tensorflow-datasets ({bench.tfds_name!r}): load_dataset({name!r}, data_dir={data_dir!r}, "
        "source='tfds', download=True) downloads and prepares it there."
        if bench.tfds_name
        else "It has no tensorflow-datasets version."
    )
    return (
        f"{bench.title} not found: expected {expected}. Get the official {bench.archive}; the expected "
        f"layout is {os.path.join(data_dir, bench.layout)}. {tfds_hint}"
    )


def _tfds_files(builder, split: str, label_key: str, cache: str) -> tuple[list[str], np.ndarray]:
    """Image files and class ids of a tfds split, writing the encoded images to ``cache`` once."""
    import tensorflow_datasets as tfds

    index = os.path.join(cache, "index.txt")
    if not os.path.isfile(index):
        os.makedirs(cache, exist_ok=True)
        dataset = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
        lines = []
        for i, example in enumerate(dataset.as_numpy_iterator()):
            filename = f"{i:07d}.jpg"  # decode_image reads the content, whatever the extension
            with open(os.path.join(cache, filename), "wb") as f:
                f.write(example["image"])
            lines.append(f"{filename} {int(example[label_key])}\n")
        with open(index + ".tmp", "w", encoding="utf-8") as f:
            f.writelines(lines)
        os.replace(index + ".tmp", index)  # the index appears only once every image is written
    rows = _read_rows(index)
    return [os.path.join(cache, filename) for filename, _ in rows], np.array([int(c) for _, c in rows])


def _load_tfds(name: str, bench: Benchmark, builder, split: str, data_dir: str, download: bool,
               manual_dir: str | None, cache_dir: str | None) -> ImageSet:
    """The split from a tfds builder, prepared first when ``download``."""
    import tensorflow_datasets as tfds

    if not builder.is_prepared():
        if not download:
            raise FileNotFoundError(_missing_message(
                name, bench, data_dir, f"the prepared tensorflow-datasets folder {builder.data_dir}"
            ))
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    zero_shot = bench.tfds_last_train_class is not None
    tfds_split = "train+test" if zero_shot else split
    cache = os.path.join(cache_dir or os.path.join(data_dir, "zoo_cache"), bench.tfds_name,
                         tfds_split.replace("+", "_"))
    paths, class_ids = _tfds_files(builder, tfds_split, bench.tfds_label, cache)
    return build_image_set(
        name, split, class_ids,
        zero_shot_mask(class_ids, split, bench.tfds_last_train_class) if zero_shot else None,
        paths=paths,
        class_names=dict(enumerate(builder.info.features[bench.tfds_label].names)),
    )


def load_benchmark(name: str, split: str = "train", data_dir: str | None = None, *, source: str = "auto",
                   download: bool = False, manual_dir: str | None = None,
                   cache_dir: str | None = None) -> ImageSet:
    """Load one split of a benchmark (usually through :func:`zoo.data.load_dataset`).

    Args:
        name: ``"cub200"``, ``"cars196"``, ``"sop"`` or ``"inshop"``.
        split: ``"train"``/``"test"``; In-Shop: ``"train"``/``"query"``/``"gallery"``.
        data_dir: folder holding the official layouts or tfds data (default :func:`default_data_dir`).
        source: ``"official"``, ``"tfds"`` or ``"auto"`` (the official layout if present, else
            tfds when it is prepared in ``data_dir``, or with ``download``).
        download: let tensorflow-datasets download and prepare the dataset.
        manual_dir: tfds ``manual_dir`` for archives downloaded by hand.
        cache_dir: where tfds images are written as files (default ``<data_dir>/zoo_cache``).

    Returns:
        A file-based ImageSet.

    Raises:
        FileNotFoundError: the data is missing; the message names the expected file, the official
            archive and the tensorflow-datasets alternative.
        ValueError: unknown ``source``, or ``source="tfds"`` for In-Shop.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; available: {', '.join(SOURCES)}")
    bench = BENCHMARKS[name]
    data_dir = os.path.expanduser(data_dir or default_data_dir())
    root = os.path.join(data_dir, bench.folder)
    if source == "tfds" and bench.tfds_name is None:
        raise ValueError(f"{name} has no tensorflow-datasets version; use its official layout")
    if source == "tfds" or (
        source == "auto"
        and bench.tfds_name is not None
        and not os.path.isfile(os.path.join(root, bench.marker))
        and (download or os.path.isdir(os.path.join(data_dir, bench.tfds_name)))
    ):
        import tensorflow_datasets as tfds

        builder = tfds.builder(bench.tfds_name, data_dir=data_dir)
        if source == "tfds" or download or builder.is_prepared():
            return _load_tfds(name, bench, builder, split, data_dir, download, manual_dir, cache_dir)
    try:
        image_set = bench.parse(root, split)
        if image_set.paths:  # the annotations are there: check the images are too
            _require(image_set.paths[0])
    except _MissingFile as missing:
        raise FileNotFoundError(_missing_message(name, bench, data_dir, str(missing))) from None
    return image_set

"""Datasets and input pipelines for deep metric learning.

Every dataset loads as an :class:`ImageSet` of one split with the standard zero-shot protocol:
the test classes are disjoint from the training classes. :func:`train_pipeline` turns an
ImageSet into an infinite stream of class-balanced batches (P classes x K images, drawn by
:class:`PKSampler`); :func:`eval_pipeline` into one finite pass in dataset order.

Datasets by name (:data:`DATASET_LOADERS`, a dict of loaders ``(split, data_dir, **options) -> ImageSet``;
:data:`DATASETS` its names, :data:`SPLITS` their splits):

- ``digits`` (default): scikit-learn's bundled 8x8 digits, classes 0-4 train, 5-9 test.
- ``glyphs``: Unicode characters rendered from the fonts matplotlib ships, Omniglot-like: hundreds of
  classes of 24 images, split by Unicode block (:mod:`zoo.data.glyphs`).
- ``synthetic``: procedurally generated images (:mod:`zoo.data.synthetic`).
- ``cub200``, ``cars196``, ``sop``, ``inshop``: the benchmarks, read from their official
  directory layouts or from tensorflow-datasets (:mod:`zoo.data.benchmarks`).
- ``folder``: your own images, one subfolder per class or a CSV of ``path,label`` (:mod:`zoo.data.folder`).
- ``icons``: real artwork, 1,638 icon names drawn by 22 icon-theme families, built from Debian's packages
  (:mod:`zoo.data.icons`).
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from zoo.data.pipeline import PKSampler, eval_pipeline, preprocess_for_embedding, train_pipeline

__all__ = [
    "DATASETS",
    "DATASET_LOADERS",
    "SPLITS",
    "ImageSet",
    "PKSampler",
    "eval_pipeline",
    "load_dataset",
    "preprocess_for_embedding",
    "train_pipeline",
]

@dataclass(frozen=True, eq=False)
class ImageSet:
    """One split of a labelled image dataset, held in memory or as a list of image files.

    Exactly one of ``images`` and ``paths`` is set. ``labels`` are contiguous class ids
    ``0..num_classes-1`` and ``class_names[i]`` is the original name or id of class ``i``.
    Exception: In-Shop's ``query`` and ``gallery`` share one label space (the classes of both),
    so a split may not hold an image of every class.

    Attributes:
        name: dataset name, e.g. ``"digits"``.
        split: ``"train"`` or ``"test"`` (In-Shop: ``"train"``, ``"query"`` or ``"gallery"``).
        labels: int32 (N,) class ids.
        class_names: the original class name of each class id.
        images: uint8 (N, H, W, 3) images, for in-memory sets.
        paths: image files (any format ``tf.io.decode_image`` reads), for on-disk sets.
        allow_flip: whether a horizontally mirrored image keeps its class (not for digits).
    """

    name: str
    split: str
    labels: np.ndarray
    class_names: tuple[str, ...]
    images: np.ndarray | None = None
    paths: tuple[str, ...] | None = None
    allow_flip: bool = True

    def __post_init__(self) -> None:
        if (self.images is None) == (self.paths is None):
            raise ValueError("an ImageSet needs exactly one of images and paths")
        if self.labels.dtype != np.int32 or self.labels.ndim != 1:
            raise ValueError(f"labels must be an int32 vector, got {self.labels.dtype} {self.labels.shape}")
        if self.images is not None and (
            self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3
        ):
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {self.images.dtype} {self.images.shape}")
        count = len(self.images) if self.images is not None else len(self.paths)
        if count != len(self.labels):
            raise ValueError(f"{count} images but {len(self.labels)} labels")

    @property
    def num_classes(self) -> int:
        """Number of classes in the label space."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def steps_per_epoch(self, batch_size: int) -> int:
        """Number of batches of ``batch_size`` in one pass over the set (at least 1)."""
        return max(1, len(self) // batch_size)


def zero_shot_mask(class_ids: np.ndarray, split: str, last_train_class: int) -> np.ndarray:
    """Rows of a zero-shot split: classes up to ``last_train_class`` train, the others test.

    Args:
        class_ids: original class id of every image.
        split: ``"train"`` or ``"test"``.
        last_train_class: the largest class id of the training split.

    Returns:
        A boolean mask over ``class_ids``.
    """
    class_ids = np.asarray(class_ids)
    return {"train": class_ids <= last_train_class, "test": class_ids > last_train_class}[split]


def build_image_set(
    name: str,
    split: str,
    class_ids: np.ndarray,
    keep: np.ndarray | None = None,
    *,
    images: np.ndarray | None = None,
    paths: list[str] | tuple[str, ...] | None = None,
    class_names: dict | None = None,
    label_space: np.ndarray | None = None,
    allow_flip: bool = True,
) -> ImageSet:
    """Select the rows ``keep`` of a dataset and relabel their classes to contiguous ids.

    Args:
        name: dataset name.
        split: split name.
        class_ids: original class id of every row (any sortable ids).
        keep: boolean mask of the rows of this split; all rows when None.
        images: uint8 (N, H, W, 3) images of all rows (in-memory sets).
        paths: image files of all rows (on-disk sets).
        class_names: original id -> readable name; ``str(id)`` when None or missing.
        label_space: boolean mask of the rows whose classes form the label space; ``keep``
            when None (In-Shop's query and gallery pass their union).
        allow_flip: see :class:`ImageSet`.

    Returns:
        The split's ImageSet, rows in their original order, class ids numbered in sorted
        order of the original ids.
    """
    class_ids = np.asarray(class_ids)
    keep = np.ones(len(class_ids), bool) if keep is None else np.asarray(keep, bool)
    space = np.unique(class_ids[keep if label_space is None else label_space])
    names = class_names or {}
    return ImageSet(
        name=name,
        split=split,
        labels=np.searchsorted(space, class_ids[keep]).astype(np.int32),
        class_names=tuple(str(names.get(cid, cid)) for cid in space.tolist()),
        images=None if images is None else images[keep],
        paths=None if paths is None else tuple(p for p, k in zip(paths, keep) if k),
        allow_flip=allow_flip,
    )


def load_dataset(name: str, split: str = "train", data_dir: str | None = None, **options) -> ImageSet:
    """Load one split of a dataset.

    Args:
        name: one of :data:`DATASETS`.
        split: one of ``SPLITS[name]``: ``"train"`` or ``"test"``; In-Shop has ``"train"``,
            ``"query"`` and ``"gallery"``.
        data_dir: folder holding the benchmarks (see :func:`zoo.data.benchmarks.load_benchmark`);
            unused by ``digits``, ``glyphs`` and ``synthetic``.
        **options: options of the dataset's loader (``glyphs``: :func:`zoo.data.glyphs.load_glyphs`; ``synthetic``:
            :func:`zoo.data.synthetic.load_synthetic`; benchmarks: ``source``, ``download``,
            ``manual_dir``, ``cache_dir``).

    Returns:
        The split as an :class:`ImageSet`.

    Raises:
        ValueError: unknown dataset or split.
        FileNotFoundError: a benchmark's files are missing (the message says which and where
            to get them).
    """
    if name not in DATASETS:
        close = difflib.get_close_matches(name, DATASETS, n=2)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}.{hint}")
    if split not in SPLITS[name]:
        raise ValueError(f"unknown split {split!r} of dataset {name!r}; available: {', '.join(SPLITS[name])}")
    return DATASET_LOADERS[name](split, data_dir, **options)


# ---- the datasets by name ------------------------------------------------------------------------
# Imported last: each loader's module imports ImageSet and build_image_set from this package.
from zoo.data import benchmarks, digits, folder, glyphs, icons, synthetic  # noqa: E402

DatasetLoader = Callable[..., ImageSet]  # (split, data_dir, **options) -> ImageSet


def _in_memory(load: Callable[..., ImageSet]) -> DatasetLoader:
    """The loader of a set generated in memory, which has no files: ``data_dir`` is ignored."""
    return lambda split, data_dir=None, **options: load(split, **options)


DATASET_LOADERS: dict[str, DatasetLoader] = {
    "digits": _in_memory(digits.load_digits),
    "glyphs": _in_memory(glyphs.load_glyphs),
    "synthetic": _in_memory(synthetic.load_synthetic),
    **{name: functools.partial(benchmarks.load_benchmark, name) for name in benchmarks.BENCHMARKS},
    "folder": folder.load_folder,
    "icons": icons.load_icons,
}
DATASETS: tuple[str, ...] = tuple(DATASET_LOADERS)

SPLITS: dict[str, tuple[str, ...]] = {
    **{name: ("train", "test") for name in DATASETS},
    "inshop": ("train", "query", "gallery"),
    "glyphs": ("train", "test", "pretrain"),  # pretrain: classes of neither, for pre-training backbones
}

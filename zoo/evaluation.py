"""Retrieval evaluation of an embedding model: the evaluation sets, their embeddings and their metrics.

    queries, gallery = evaluation_sets(config)            # the test split, or In-Shop's (a CSV's) query and gallery
    metrics = measure(model, queries, gallery, config)    # zoo.metrics.evaluate on their embeddings

Every evaluation goes through here: ``zoo train`` and ``zoo evaluate``, the :class:`zoo.callbacks.RetrievalEvaluation`
callback, ``zoo show`` and :mod:`zoo.viz`, the index and the training scripts, so that all of them embed the same
center-cropped images and rank In-Shop's queries against its gallery.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from zoo.data import ImageSet, eval_pipeline, load_dataset
from zoo.data.folder import has_query_gallery, load_query_gallery
from zoo.metrics import evaluate

if TYPE_CHECKING:  # zoo.training imports this module
    from zoo.training import TrainConfig


@tf.function(reduce_retracing=True)
def _embed_batch(model: keras.Model, images: tf.Tensor) -> tf.Tensor:
    return model(images, training=False)


def embed_dataset(model: keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and labels of a dataset of ``(images, labels)`` batches, in dataset order.

    One pass over ``dataset`` (so a shuffled or augmented dataset keeps images and labels
    paired), calling ``model(images, training=False)`` in a ``tf.function`` traced once per model.

    Returns:
        ``(embeddings, labels)``: float32 (N, D) and int64 (N,) arrays.
    """
    embeddings, labels = [], []
    for images, batch_labels in dataset:
        embeddings.append(_embed_batch(model, images).numpy())
        labels.append(np.reshape(batch_labels, [-1]))
    if not embeddings:
        raise ValueError("the evaluation dataset is empty")
    return np.concatenate(embeddings).astype(np.float32), np.concatenate(labels).astype(np.int64)


def embed_for_retrieval(
    model: keras.Model, dataset: tf.data.Dataset, reference_dataset: tf.data.Dataset | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Query embeddings and labels, and the gallery's as :func:`zoo.metrics.evaluate`'s keyword arguments.

    Returns:
        ``(embeddings, labels, reference)``; ``reference`` holds ``reference_embeddings`` and
        ``reference_labels`` of ``reference_dataset``, or is empty without one.
    """
    reference = {}
    if reference_dataset is not None:
        reference["reference_embeddings"], reference["reference_labels"] = embed_dataset(model, reference_dataset)
    return (*embed_dataset(model, dataset), reference)


def evaluation_sets(config: TrainConfig) -> tuple[ImageSet, ImageSet | None]:
    """The held-out queries and, for query/gallery benchmarks (In-Shop, a CSV with ``is_query``), the gallery."""
    if config.dataset == "inshop":
        return (load_dataset("inshop", "query", config.data_dir), load_dataset("inshop", "gallery", config.data_dir))
    if config.dataset == "folder" and has_query_gallery(config.data_dir):
        return load_query_gallery(config.data_dir)
    return load_dataset(config.dataset, "test", config.data_dir, **config.dataset_options), None


def evaluation_pipelines(
    queries: ImageSet, gallery: ImageSet | None, config: TrainConfig
) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
    """The center-cropped batches of the queries and, if any, of the gallery."""
    gallery_data = None if gallery is None else eval_pipeline(gallery, config.input_size, config.eval_batch_size)
    return eval_pipeline(queries, config.input_size, config.eval_batch_size), gallery_data


def own_references(queries: ImageSet, gallery: ImageSet | None) -> np.ndarray | None:
    """The gallery position of each query's own file (-1 for none), or None when no query is in the gallery."""
    if gallery is None or queries.paths is None or gallery.paths is None:
        return None
    positions = {str(Path(path).resolve()): i for i, path in enumerate(gallery.paths)}
    own = np.array([positions.get(str(Path(path).resolve()), -1) for path in queries.paths], np.int64)
    return own if (own >= 0).any() else None


def measure(model: keras.Model, queries: ImageSet, gallery: ImageSet | None, config: TrainConfig) -> dict[str, float]:
    """All retrieval metrics of ``model`` on the evaluation split(s), with ``config``'s Ks and seed.

    A query that is also in the gallery (the same file) never retrieves itself.
    """
    query_data, gallery_data = evaluation_pipelines(queries, gallery, config)
    embeddings, labels, reference = embed_for_retrieval(model, query_data, gallery_data)
    return evaluate(embeddings, labels, **reference, own_reference=own_references(queries, gallery),
                    recall_ks=config.recall_ks, precision_ks=config.precision_ks, seed=config.seed)


def raw_pixel_model(input_size: int) -> keras.Model:
    """The baseline every embedding must beat: the center-cropped image's pixels as its embedding."""
    return keras.Sequential([keras.Input((input_size, input_size, 3)), keras.layers.Flatten()], name="raw_pixels")

"""zoo.evaluation: embedding a dataset, the evaluation sets and their metrics."""

import keras
import numpy as np
import tensorflow as tf

from zoo import evaluation
from zoo.data import load_dataset
from zoo.evaluation import embed_dataset, evaluation_sets, measure, raw_pixel_model
from zoo.training import TrainConfig


def test_embed_dataset_keeps_order_and_matches_the_model():
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((60, 6)).astype(np.float32), np.arange(60) % 6
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    dataset = tf.data.Dataset.from_tensor_slices((x, labels[:, None])).batch(16)  # last batch of 12
    embeddings, got_labels = embed_dataset(model, dataset)
    assert embeddings.dtype == np.float32 and embeddings.shape == (60, 4)
    assert got_labels.dtype == np.int64
    np.testing.assert_array_equal(got_labels, labels)
    np.testing.assert_allclose(embeddings, model(x, training=False).numpy(), rtol=1e-6, atol=1e-6)


def test_the_test_split_retrieves_among_itself():
    config = TrainConfig(dataset="digits", input_size=8)
    queries, gallery = evaluation_sets(config)
    assert (queries.split, gallery) == ("test", None)
    metrics = measure(raw_pixel_model(8), queries, gallery, config)
    assert 0.5 < metrics["recall@1"] < 1.0 and set(metrics) >= {"recall@8", "precision@10", "map@r", "nmi"}


def test_the_dataset_options_reach_the_loader_of_the_test_split():
    config = TrainConfig(dataset="synthetic", dataset_options={"num_classes": 12, "images_per_class": 5})
    queries, _ = evaluation_sets(config)
    assert len(queries.labels) == 6 * 5 and len(set(queries.labels.tolist())) == 6  # the second half of 12 classes


def test_inshop_queries_are_retrieved_from_the_gallery(monkeypatch):
    loaded = []
    digits = load_dataset("digits", "test")

    def load(name, split, data_dir):
        loaded.append((name, split, data_dir))
        return digits

    monkeypatch.setattr(evaluation, "load_dataset", load)
    config = TrainConfig(dataset="inshop", data_dir="DATA", input_size=8)
    queries, gallery = evaluation_sets(config)
    assert loaded == [("inshop", "query", "DATA"), ("inshop", "gallery", "DATA")]
    assert measure(raw_pixel_model(8), queries, gallery, config)["recall@1"] == 1.0  # each query is in the gallery

"""zoo.callbacks: RetrievalEvaluation inside fit."""

import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import metrics
from zoo.callbacks import RetrievalEvaluation

METRICS = ("recall", "map@r", "nmi")


def toy_data(n=60, dim=6, num_classes=6, seed=0):
    """Class-dependent features: an identity-initialised Dense model already retrieves well."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    x = np.eye(dim, dtype=np.float32)[labels] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    return x, labels


def toy_model(dim=6):
    model = keras.Sequential([keras.Input((dim,)), keras.layers.Dense(dim, kernel_initializer="identity")])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    return model


def read_scalars(log_dir):
    scalars = {}
    for path in glob.glob(os.path.join(log_dir, "retrieval", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    return scalars


@pytest.mark.filterwarnings("ignore:Early stopping conditioned on metric")  # epoch 0: no evaluation
def test_fit_with_retrieval_evaluation_and_early_stopping(tmp_path):
    x, labels = toy_data()
    eval_data = tf.data.Dataset.from_tensor_slices((x, labels)).batch(25)
    evaluation = RetrievalEvaluation(eval_data, every_n_epochs=2, log_dir=str(tmp_path), metrics=METRICS, recall_ks=(1, 2))
    stopping = keras.callbacks.EarlyStopping(monitor="val_recall@1", mode="max", patience=5)
    model = toy_model()
    history = model.fit(x, x, epochs=3, batch_size=20, verbose=0, callbacks=[evaluation, stopping])

    # every_n_epochs=2: after epoch index 1, and after the last epoch (index 2).
    assert [entry["epoch"] for entry in evaluation.history] == [1, 2]
    names = ["val_recall@1", "val_recall@2", "val_map@r", "val_nmi"]
    assert sorted(evaluation.history[-1]["metrics"]) == sorted(n.removeprefix("val_") for n in names)
    embeddings = model.predict(x, verbose=0)
    assert evaluation.history[-1]["metrics"] == pytest.approx(metrics.evaluate(embeddings, labels, metrics=METRICS, recall_ks=(1, 2)), abs=1e-6)
    # The logs dict reaches the callbacks after it (EarlyStopping) and History.
    assert stopping.best == evaluation.history[-1]["metrics"]["recall@1"]
    assert all(len(history.history[name]) == 2 for name in names)  # epochs 2 and 3 only
    assert evaluation.history[-1]["metrics"]["recall@1"] > 0.9

    scalars = read_scalars(str(tmp_path))
    assert sorted(scalars) == sorted(names)
    for entry in evaluation.history:
        assert scalars["val_recall@1"][entry["epoch"]] == pytest.approx(entry["metrics"]["recall@1"])


def test_reference_dataset_and_every_epoch():
    x, labels = toy_data()
    queries = tf.data.Dataset.from_tensor_slices((x[:30], labels[:30])).batch(8)
    gallery = tf.data.Dataset.from_tensor_slices((x[30:], labels[30:])).batch(8)
    evaluation = RetrievalEvaluation(queries, reference_dataset=gallery, prefix="test_", metrics=("recall",), recall_ks=(1,))
    model = toy_model()
    history = model.fit(x, x, epochs=2, verbose=0, callbacks=[evaluation])
    assert [entry["epoch"] for entry in evaluation.history] == [0, 1]
    embeddings = model.predict(x, verbose=0)
    expected = metrics.evaluate(embeddings[:30], labels[:30], reference_embeddings=embeddings[30:], reference_labels=labels[30:], metrics=("recall",), recall_ks=(1,))
    assert history.history["test_recall@1"][-1] == pytest.approx(expected["recall@1"])


def test_every_n_epochs_must_be_positive():
    with pytest.raises(ValueError, match="every_n_epochs must be >= 1"):
        RetrievalEvaluation(tf.data.Dataset.range(1), every_n_epochs=0)

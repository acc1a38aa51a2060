"""The triplet baseline MetricModel: loss values, batch checks, gradients, serialisation, export."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import losses
from zoo.methods import build_model
from zoo.methods.metric_model import MetricModel


def _model(**hyperparameters) -> MetricModel:
    model = build_model("triplet", embedding_dim=8, input_size=32, **hyperparameters)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    return model


def test_triplet_loss_hand_example():
    anchor = tf.constant([[0.0, 0.0], [0.0, 0.0]])
    positive = tf.constant([[1.0, 0.0], [1.0, 0.0]])
    negative = tf.constant([[0.0, 2.0], [0.5, 0.0]])
    # squared: d_ap = 1; d_an = 4 -> [1 - 4 + 0.2]_+ = 0; d_an = 0.25 -> 1 - 0.25 + 0.2 = 0.95; mean 0.475
    assert float(losses.triplet_loss(anchor, positive, negative, margin=0.2)) == pytest.approx(0.475)
    # plain distances: d_ap = 1, d_an = 2 -> 0; d_an = 0.5 -> 0.7; mean 0.35
    assert float(losses.triplet_loss(anchor, positive, negative, 0.2, squared=False)) == pytest.approx(0.35, abs=1e-5)


def test_one_step_moves_every_embedding_variable(pk_batch):
    model = _model()
    before = [np.array(v) for v in model.trainable_variables]
    model.train_on_batch(*pk_batch)
    changed = [not np.allclose(b, np.array(v)) for b, v in zip(before, model.trainable_variables)]
    assert all(changed), [v.path for v, c in zip(model.trainable_variables, changed) if not c]
    assert int(model.optimizer.iterations) == 1


def test_training_lowers_the_loss_on_a_fixed_batch(pk_batch):
    model = _model(loss="facenet-triplet", miner="semi-hard")
    first = model.train_on_batch(*pk_batch, return_dict=True)["loss"]
    for _ in range(15):
        last = model.train_on_batch(*pk_batch, return_dict=True)["loss"]
    assert first > 0.15  # about the margin for random embeddings
    assert last < 0.25 * first


@pytest.mark.parametrize(
    "images, labels, error, message",
    [
        (np.zeros((8, 32, 32, 3), "float32"), np.zeros(8, "int32"), tf.errors.InvalidArgumentError, "single class"),
        (np.zeros((8, 32, 32, 3), "float32"), np.arange(8, dtype="int32"), tf.errors.InvalidArgumentError, "no positive pair"),
        (np.zeros((8, 32, 32, 3), "float32"), np.repeat([0.0, 1.0], 4), ValueError, "integer class ids"),
        (np.zeros((8, 32, 32, 3), "float32"), np.zeros((8, 2), "int32"), ValueError, r"shape \(batch,\)"),
        (np.zeros((8, 32, 32), "float32"), np.repeat([0, 1], 4), ValueError, "rank-4"),
    ],
)
def test_bad_batches_are_named(images, labels, error, message):
    model = _model()
    with pytest.raises(error, match=message):
        model.train_on_batch(images, labels)


def test_keras_round_trip_keeps_embeddings_and_loss_config(tmp_path, pk_batch):
    model = _model(loss="margin")
    model.train_on_batch(*pk_batch)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(pk_batch[0], verbose=0), model.predict(pk_batch[0], verbose=0), atol=1e-6)
    assert isinstance(loaded.metric_loss, losses.MarginLoss)
    assert float(loaded.metric_loss.beta) == pytest.approx(float(model.metric_loss.beta))
    assert loaded.metric_loss.miner.name == "all"  # PML's default: every triplet


def test_miner_given_with_a_loss_object_is_refused():
    with pytest.raises(ValueError, match="miner= applies to a loss given by name"):
        build_model("triplet", embedding_dim=8, input_size=32, loss=losses.TripletLoss(), miner="hard")
    with pytest.raises(ValueError, match="unknown method 'tripplet'"):
        build_model("tripplet")

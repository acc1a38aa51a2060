"""zoo.monitor: the embedding-spread statistic, the collapse warning and the stop at a non-finite loss."""

import glob
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import ops
from zoo.data import load_dataset
from zoo.methods import METHODS, build_model
from zoo.monitor import (
    COLLAPSE_SPREAD,
    MIN_LEARNING_GAIN,
    SPREAD_LOG,
    CollapseWarning,
    NoLearningWarning,
    TrainingDiverged,
    TrainingMonitor,
    warn_if_not_learned,
)
from zoo.training import TrainConfig, train


def test_embedding_spread_is_the_mean_distance_to_the_batch_mean():
    assert float(ops.embedding_spread(tf.constant([[1.0, 0.0], [-1.0, 0.0]]))) == pytest.approx(1.0)
    assert float(ops.embedding_spread(tf.constant([[1.0, 0.0], [0.0, 1.0]]))) == pytest.approx(np.sqrt(0.5))
    assert float(ops.embedding_spread(tf.constant([[0.6, 0.8]] * 4))) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize(("trained", "untrained", "warns"), [
    (0.015, 0.012, True),    # AMDAML hinge_distance="squared", seed 1 from scratch: spread 0.16, no collapse warning
    (0.312, 0.338, True),    # fine-tuned into a worse embedding
    (0.029, 0.012, False),   # the weakest run from scratch that learned (THSG, seed 1)
    (0.351, 0.338, False),
])
def test_no_learning_warns_below_the_gain(trained, untrained, warns):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_if_not_learned(trained, untrained)
    messages = [str(w.message) for w in caught if issubclass(w.category, NoLearningWarning)]
    assert len(messages) == int(warns), messages
    if warns:
        assert f"{trained:.4f} after training and {untrained:.4f} before" in messages[0]
        assert f"gain {trained - untrained:+.4f}, less than {MIN_LEARNING_GAIN}" in messages[0]


@pytest.mark.filterwarnings("ignore::zoo.monitor.CollapseWarning")  # the untrained digits net's spread is 0.07
def test_a_run_that_does_not_learn_says_so(tmp_path):
    # A learning rate far below float32's resolution of the weights (0 is refused) and frozen BatchNorm: the
    # trained model ranks as the untrained one, gain 0.
    config = TrainConfig(dataset="digits", epochs=1, steps_per_epoch=1, eval_every=1, learning_rate=1e-12,
                         freeze_batchnorm=True, measure_raw_pixels=False, run_dir=str(tmp_path / "run"))
    with pytest.warns(NoLearningWarning, match=r"gain \+0\.0000"):
        result = train(config)
    assert result["metrics"]["map@r"] == result["metrics_untrained"]["map@r"]


def _fit_synthetic(tmp_path, epochs: int, **hyperparameters) -> tuple[keras.callbacks.History, list]:
    train = load_dataset("synthetic", "train")
    keras.utils.set_random_seed(0)
    model = build_model("triplet", backbone="tiny_cnn", embedding_dim=64, freeze_batchnorm=True, **hyperparameters)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    data = model.make_train_dataset(train, 32, 5, 16, seed=0)
    callbacks = [*model.training_callbacks(), keras.callbacks.TensorBoard(str(tmp_path / "logs"))]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(data, epochs=epochs, steps_per_epoch=15, callbacks=callbacks, verbose=0)
    return history, [w for w in caught if issubclass(w.category, CollapseWarning)]


def test_a_collapsing_run_warns_and_a_learning_run_does_not(tmp_path):
    # Measured on synthetic (tiny_cnn from scratch, P5 x K16, Adam 1e-3): batch-hard triplets collapse at
    # once, loss flat at the margin 0.2, spread 0.029 then 0.009; contrastive learns, spread 0.32 then 0.39.
    # (Semi-hard learns on this data, spread 0.3-0.6; on the many-class glyphs of issue 12 it collapses.)
    history, warned = _fit_synthetic(tmp_path / "hard", 2, miner="hard")
    spreads = history.history[SPREAD_LOG]
    assert max(spreads) < COLLAPSE_SPREAD / 2, spreads
    assert len(warned) == 1  # once per fit, at the first collapsed epoch
    message = str(warned[0].message)
    assert "collapse at epoch 1" in message and f"{spreads[0]:.4f}" in message
    assert "miner" in message and "learning rate" in message
    events = glob.glob(str(tmp_path / "hard" / "logs" / "train" / "events.out.tfevents.*"))
    tags = {value.tag for path in events for event in tf.compat.v1.train.summary_iterator(path)
            for value in event.summary.value}
    assert f"epoch_{SPREAD_LOG}" in tags  # the statistic reaches TensorBoard

    history, warned = _fit_synthetic(tmp_path / "contrastive", 2, loss="contrastive")
    assert min(history.history[SPREAD_LOG]) > 2 * COLLAPSE_SPREAD, history.history
    assert warned == []


def test_a_nan_loss_stops_training_at_once_naming_the_epoch_and_step(pk_batch):
    images, labels = pk_batch
    poisoned = images.copy()
    poisoned[0, 0, 0, 0] = np.nan
    batches = [images, images, images, poisoned, images, images]  # the 4th step: epoch 2, step 2
    data = tf.data.Dataset.from_tensor_slices((np.stack(batches), np.stack([labels] * len(batches))))
    model = build_model("triplet", backbone="tiny_cnn", embedding_dim=8, input_size=32, miner="hard")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    with pytest.raises(TrainingDiverged, match=r"the (loss|embedding_spread) is nan at epoch 2, step 2 \(1-based\)"):
        model.fit(data, epochs=3, steps_per_epoch=2, callbacks=model.training_callbacks(), verbose=0)
    assert int(model.optimizer.iterations) == 4  # stopped at the first non-finite step


def test_an_infinite_loss_stops_too():
    monitor = TrainingMonitor()
    monitor.set_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]))
    monitor.on_epoch_begin(4)
    monitor.on_train_batch_end(0, {"loss": 1.5})
    with pytest.raises(TrainingDiverged, match="the loss is inf at epoch 5, step 7"):
        monitor.on_train_batch_end(6, {"loss": np.float32(np.inf)})


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_logs_the_spread_runs_the_monitor_and_continues_its_batch_stream(method):
    train = load_dataset("synthetic", "train")
    model = build_model(method, backbone="tiny_cnn", embedding_dim=8, input_size=16, num_classes=train.num_classes,
                        **({"pretrain_steps": 0} if method == "amdaml" else {}))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    callbacks = model.training_callbacks()
    assert isinstance(callbacks[0], TrainingMonitor)

    def batches():
        return model.make_train_dataset(train, 16, 5, 11 if method == "topk" else 4, seed=0)

    stream = list(batches().take(2))
    history = model.fit(batches(), epochs=1, steps_per_epoch=1, callbacks=callbacks, verbose=0)
    assert 0.0 < history.history[SPREAD_LOG][0] < 2.0  # unit embeddings: between 0 and 2
    # A resumed fit (optimizer at step 1) starts at the stream's second batch, not at its first.
    continued = next(iter(batches()))
    for got, expected in zip(continued, stream[1]):
        np.testing.assert_array_equal(got.numpy(), expected.numpy())

"""Train a method for two steps on 1 replica and on 2 logical CPU replicas; print the weight difference.

Run as a separate process (logical devices must be set before TensorFlow starts):
    python tests/distributed/one_vs_two_replicas.py METHOD
prints one JSON line {"method", "max_abs_diff", "num_weights"}. BatchNorm is frozen because its batch
statistics are per replica under tf.distribute (use synchronized BatchNormalization to share them).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf  # noqa: E402

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from zoo.methods import build_model  # noqa: E402


def train_two_steps(method: str, strategy: tf.distribute.Strategy, weights: list[np.ndarray]) -> list[np.ndarray]:
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build_model(method, embedding_dim=8, input_size=16, freeze_batchnorm=True, num_classes=4)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.set_weights(weights)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (16, 16, 16, 3)).astype("float32")
    labels = np.tile(np.arange(4), 4).astype("int32")  # every replica's half holds all 4 classes
    model.fit(tf.data.Dataset.from_tensors((images, labels)).repeat(), steps_per_epoch=2, epochs=1, verbose=0)
    return model.get_weights()


def max_abs_diff(first: list[np.ndarray], second: list[np.ndarray]) -> float:
    """Largest elementwise difference; equal entries count 0 (state such as THSG's d_t may be +inf)."""
    return max(float(np.max(np.where(a == b, 0.0, np.abs(a - b)), initial=0.0)) for a, b in zip(first, second))


def main(method: str) -> None:
    keras.utils.set_random_seed(0)
    initial = build_model(method, embedding_dim=8, input_size=16, freeze_batchnorm=True, num_classes=4).get_weights()
    single = train_two_steps(method, tf.distribute.OneDeviceStrategy("/cpu:0"), initial)
    mirrored = train_two_steps(method, tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), initial)
    moved = max_abs_diff(single, initial)
    diff = max_abs_diff(single, mirrored)
    print(json.dumps({"method": method, "max_abs_diff": diff, "max_update": moved, "num_weights": len(single)}))


if __name__ == "__main__":
    main(sys.argv[1])

"""Shared by the distribution scripts: two training steps of a method on one fixed global batch.

Import it only after the process has configured its devices (logical CPUs, TF_CONFIG).
"""

import keras
import numpy as np
import tensorflow as tf

from zoo.methods import build_model

GLOBAL_BATCH = 16
# Settings that make every part of a method's step run from the first step (no pre-training phase).
ACTIVE = {"amdaml": {"pretrain_steps": 0}, "thsg": {"pretrain_epochs": 0}}


def initial_weights(method: str) -> list[np.ndarray]:
    """The weights every run starts from (BatchNorm frozen: its statistics are per replica)."""
    keras.utils.set_random_seed(0)
    return build_model(method, embedding_dim=8, input_size=16, freeze_batchnorm=True, num_classes=4,
                       **ACTIVE.get(method, {})).get_weights()


def train_two_steps(method: str, strategy: tf.distribute.Strategy, weights: list[np.ndarray]) -> list[np.ndarray]:
    """Weights after two ``fit`` steps on the same global batch, every replica's share holding all 4 classes."""
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build_model(method, embedding_dim=8, input_size=16, freeze_batchnorm=True, num_classes=4,
                            **ACTIVE.get(method, {}))
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.set_weights(weights)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (GLOBAL_BATCH, 16, 16, 3)).astype("float32")
    labels = np.tile(np.arange(4), GLOBAL_BATCH // 4).astype("int32")
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat().with_options(options)
    model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0)
    return model.get_weights()


def max_abs_diff(first: list[np.ndarray], second: list[np.ndarray]) -> float:
    """Largest elementwise difference; equal entries count 0 (state such as THSG's d_t may be +inf)."""
    return max(float(np.max(np.where(a == b, 0.0, np.abs(a - b)), initial=0.0)) for a, b in zip(first, second))

"""Mixed precision: under ``mixed_float16`` every method's losses stay float32 and match float32 training."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.methods import METHODS, build_model

# Learning rates ~0 so that every loss a step logs is computed on the same weights in both runs.
LR = 1e-12
FROZEN = {
    "triplet": {},
    "topk": {},
    "profs": {},
    "thsg": {"classifier_learning_rate": LR, "discriminator_learning_rate": LR, "generator_learning_rate": LR,
             "pretrain_epochs": 0},
    "amdaml": {"generator_learning_rate": LR, "pretrain_steps": 0},
    "htg": {"generator_learning_rate": LR, "discriminator_learning_rate": LR},
}


def first_step_logs(method: str, policy: str, weights: list[np.ndarray] | None) -> tuple[dict[str, float], list]:
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = build_model(method, embedding_dim=16, input_size=16, num_classes=4, **FROZEN.get(method, {}))
        if weights is not None:
            model.set_weights(weights)
        initial_weights = model.get_weights()  # before the step: it also moves state (THSG's d_t, L_G2)
        model.compile(optimizer=keras.optimizers.Adam(LR))
        rng = np.random.default_rng(0)
        images = rng.uniform(0, 255, (16, 16, 16, 3)).astype("float32")
        labels = np.repeat(np.arange(4), 4).astype("int32")
        batch = (images, labels)
        if method == "profs":  # PROFS batches flag each class group's representative (its first image)
            batch += (np.tile([True, False, False, False], 4),)
        logs = model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0).history
        return {name: values[-1] for name, values in logs.items()}, initial_weights
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("method", sorted(METHODS))  # a new method is covered with no edit
def test_float16_losses_equal_float32_losses_on_the_same_weights(method):
    full, weights = first_step_logs(method, "float32", None)
    half, _ = first_step_logs(method, "mixed_float16", weights)
    assert set(half) == set(full)
    for name, value in full.items():
        assert np.isfinite(half[name]), (name, half)
        assert half[name] == pytest.approx(value, rel=1e-3, abs=1e-3), (name, value, half[name])
    assert full["loss"] > 0.0  # a real loss was compared, not an empty batch's zero

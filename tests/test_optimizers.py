"""zoo.optimizers.PaperAdam: coupled L2 weight decay and per-variable learning-rate multipliers, on hand values."""

import keras
import numpy as np
import pytest

from zoo.optimizers import PaperAdam
from zoo.training import TrainConfig, build_and_compile


def _variables() -> list[keras.Variable]:
    return [keras.Variable(np.array([1.0, -2.0, 0.5], "float32"), name="kernel"),
            keras.Variable(np.array([[0.3, -0.7]], "float32"), name="bias")]


def test_l2_decay_is_adam_on_the_gradient_plus_wd_times_w():
    """Three steps of PaperAdam(l2_weight_decay=wd) on g equal three steps of Adam on g + wd w."""
    wd, rng = 0.1, np.random.default_rng(0)
    coupled, plain = _variables(), _variables()
    ours, reference = PaperAdam(0.01, l2_weight_decay=wd), keras.optimizers.Adam(0.01)
    for _ in range(3):
        grads = [rng.normal(size=v.shape).astype("float32") for v in coupled]
        ours.apply(grads, coupled)
        reference.apply([g + wd * np.asarray(v) for g, v in zip(grads, plain)], plain)
    for a, b in zip(coupled, plain):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
        assert np.max(np.abs(np.asarray(a) - np.asarray(_variables()[0 if a.shape == (3,) else 1]))) > 1e-2


def test_l2_decay_alone_moves_each_weight_by_the_learning_rate_towards_zero():
    """Zero gradient: Adam's first step on g' = wd w is lr g' / (|g'| + eps / sqrt(1 - beta_2)), about lr sign(w);
    Keras's decoupled decay would move w by lr wd w (1e-3 |w| here), 10-40x less."""
    variables, wd, lr = _variables(), 0.1, 0.01
    optimizer = PaperAdam(lr, l2_weight_decay=wd)
    optimizer.apply([np.zeros(v.shape, "float32") for v in variables], variables)
    for after, before in zip(variables, _variables()):
        g = wd * np.asarray(before, "float64")
        step = lr * g / (np.abs(g) + optimizer.epsilon / np.sqrt(1 - optimizer.beta_2))
        np.testing.assert_allclose(np.asarray(after), np.asarray(before) - step, rtol=1e-6, atol=1e-7)
        assert np.all(np.abs(step) > 0.99 * lr)


def test_learning_rate_multiplier_scales_only_the_matching_variables():
    variables = _variables()
    optimizer = PaperAdam(0.01, learning_rate_multipliers={"bias*": 10.0})
    optimizer.apply([np.ones(v.shape, "float32") for v in variables], variables)  # first Adam step: lr sign(g)
    np.testing.assert_allclose(np.asarray(variables[0]), np.asarray(_variables()[0]) - 0.01, atol=1e-6)
    np.testing.assert_allclose(np.asarray(variables[1]), np.asarray(_variables()[1]) - 0.1, atol=1e-6)
    assert optimizer.learning_rate_multiplier("embedding/kernel") == 1.0


def test_config_round_trip_and_bad_decay():
    optimizer = PaperAdam(1e-4, beta_2=0.99, l2_weight_decay=4e-4, learning_rate_multipliers={"embedding/*": 10})
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(clone, PaperAdam)
    assert (clone.l2_weight_decay, clone.learning_rate_multipliers, clone.beta_2) == (4e-4, {"embedding/*": 10.0}, 0.99)
    with pytest.raises(ValueError, match="l2_weight_decay must be >= 0"):
        PaperAdam(l2_weight_decay=-1.0)


def test_train_config_optimizer_options_reach_the_compiled_model():
    config = TrainConfig(learning_rate=1e-4, embedding_dim=8, input_size=16, backbone_weights=None,
                         optimizer={"l2_weight_decay": 4e-4, "beta_2": 0.99})
    optimizer = build_and_compile(config, num_classes=4).optimizer
    assert isinstance(optimizer, PaperAdam)
    assert (optimizer.l2_weight_decay, optimizer.beta_2) == (4e-4, 0.99)
    assert float(optimizer.learning_rate) == pytest.approx(1e-4)

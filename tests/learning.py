"""Shared by the tests: retrieval metrics of a model before and after a short ``fit``; callbacks acting at a step."""

from typing import Iterable

import keras
import tensorflow as tf

from zoo import registry
from zoo.data import ImageSet, eval_pipeline, load_dataset, train_pipeline
from zoo.evaluation import embed_dataset
from zoo.methods import build_model
from zoo.metrics import evaluate


def fit_and_measure(
    model: keras.Model,
    train_data: tf.data.Dataset,
    image_sets: dict[str, ImageSet],
    *,
    steps: int,
    metrics: Iterable[str],
    epochs: int = 1,
    callbacks: Iterable[keras.callbacks.Callback] = (),
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """``(before, after)``: ``metrics`` of each named image set, before and after ``steps`` x ``epochs`` steps."""
    metrics = tuple(metrics)

    def measure() -> dict[str, dict[str, float]]:
        return {
            name: evaluate(*embed_dataset(model, eval_pipeline(image_set, model.input_size, 256)), metrics=metrics)
            for name, image_set in image_sets.items()
        }

    before = measure()
    model.fit(train_data, steps_per_epoch=steps, epochs=epochs, verbose=0, callbacks=list(callbacks))
    return before, measure()


def fit_preset_and_measure(name: str, metrics: Iterable[str]) -> tuple[dict[str, float], dict[str, float]]:
    """``(before, after)`` on the unseen test split: registry entry ``name``'s model trained as its preset says
    (its network, hyperparameters, batches, Adam rate and steps; seed 0)."""
    preset = registry.get_entry(name)
    training = preset["training"]
    train_set, test_set = load_dataset(preset["dataset"], "train"), load_dataset(preset["dataset"], "test")
    keras.utils.set_random_seed(0)
    model = build_model(preset["method"], backbone=preset["backbone"], embedding_dim=preset["embedding_dim"],
                        input_size=preset["input_size"], backbone_weights=preset["backbone_weights"],
                        freeze_batchnorm=preset["freeze_batchnorm"], num_classes=train_set.num_classes,
                        **preset["hyperparameters"])
    model.compile(optimizer=keras.optimizers.Adam(training["learning_rate"]))
    dataset = model.make_train_dataset(
        train_set, preset["input_size"], training["classes_per_batch"], training["images_per_class"], seed=0
    )
    before, after = fit_and_measure(model, dataset, {"test": test_set}, metrics=metrics,
                                    steps=training["epochs"] * training["steps_per_epoch"])
    return before["test"], after["test"]


def fit_synthetic_and_measure(
    method: str, *, epochs: int, **hyperparameters
) -> tuple[keras.Model, dict[str, float], dict[str, float]]:
    """``(model, before, after)``: ``method`` from scratch on the 10 synthetic training classes (tiny_cnn 32 px, 64-d,
    frozen BatchNorm, Adam 1e-3, P5 x K8, epochs of 20 steps with its ``training_callbacks``, seed 0), and the recall
    and MAP@R of the 10 unseen test classes before and after."""
    train_set, test_set = load_dataset("synthetic", "train"), load_dataset("synthetic", "test")
    keras.utils.set_random_seed(0)
    model = build_model(method, embedding_dim=64, input_size=32, freeze_batchnorm=True,
                        num_classes=train_set.num_classes, **hyperparameters)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    before, after = fit_and_measure(model, train_pipeline(train_set, 32, 5, 8, seed=0), {"test": test_set},
                                    steps=20, epochs=epochs, metrics=("recall", "map@r"),
                                    callbacks=model.training_callbacks())
    return model, before["test"], after["test"]


class AtStep(keras.callbacks.Callback):
    """Calls :meth:`act` once the optimizer has made a given number of steps."""

    def __init__(self, step: int):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == self.step:
            self.act()

    def act(self) -> None:
        raise NotImplementedError


class CrashAtStep(AtStep):
    """Stops training at a given optimizer step, as a kill would (after the previous epochs' backups)."""

    def act(self) -> None:
        raise KeyboardInterrupt("simulated kill")

"""The contract every registered method keeps (as timm tests every entry of ``list_models()``).

Parametrised over ``zoo.methods.METHODS``: a new method is covered with no edit here. Each method trains
on the batches its own ``make_train_dataset`` builds, so methods with their own batch layout (PROFS's
representative flags, top-k's sampler) need nothing special.
"""

from __future__ import annotations

import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.data import load_dataset
from zoo.export import export_saved_model, load_saved_model
from zoo.methods import METHODS, all_presets, build_model, check_hyperparameters

from distributed.steps import ACTIVE

NUM_CLASSES = 4
SMALL_BATCHES = {"topk": {"batch_size": 16}}  # top-k's own sampler: 16 images of the 4-class set
# Settings off the defaults, which the config and .keras round trips must keep.
OFF_DEFAULTS = {"amdaml": {"closeness": "negative", "theta_max": 0.8}, "htg": {"miner": "semi-hard", "b": 0.5},
                "thsg": {"phi": 0.25}, "profs": {"rho": 4, "anchored_at_representatives": True}, "topk": {"k": 3},
                "triplet": {"miner": "semi-hard"}}


def optimizers(model: keras.Model) -> dict[str, keras.optimizers.Optimizer]:
    """F's optimizer and every sub-network's, by attribute name."""
    found = {name: value for name, value in vars(model).items() if isinstance(value, keras.optimizers.Optimizer)}
    return {"optimizer": model.optimizer, **{k: v for k, v in found.items() if v is not model.optimizer}}


@pytest.fixture(scope="module", params=sorted(METHODS))
def stepped(request):
    """A method's model before and after 3 steps on its own batches of a 4-class set."""
    method = request.param
    keras.utils.set_random_seed(0)
    model = build_model(method, embedding_dim=8, input_size=16, num_classes=NUM_CLASSES,
                        **{**ACTIVE.get(method, {}), **SMALL_BATCHES.get(method, {}), **OFF_DEFAULTS.get(method, {})})
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    image_set = load_dataset("synthetic", "train", num_classes=2 * NUM_CLASSES, images_per_class=6, image_size=16)
    dataset = model.make_train_dataset(image_set, 16, classes_per_batch=NUM_CLASSES, images_per_class=4, seed=0)
    before = [np.array(v) for v in model.embedding_net.trainable_variables]
    history = model.fit(dataset, steps_per_epoch=3, epochs=1, verbose=0).history
    batch = next(iter(dataset))
    return {"method": method, "model": model, "before": before, "history": history, "images": batch[0],
            "labels": batch[1]}


def test_steps_move_the_embedding_net_and_count_every_optimizers_updates(stepped):
    model = stepped["model"]
    moved = [np.abs(np.array(v) - b).max() for v, b in zip(model.embedding_net.trainable_variables, stepped["before"])]
    assert max(moved) > 1e-3, stepped["method"]
    assert np.isfinite(stepped["history"]["loss"][-1])
    for name, optimizer in optimizers(model).items():
        assert int(optimizer.iterations) == 3, (stepped["method"], name)


def test_every_optimizer_belongs_to_a_declared_sub_network_and_trains_only_it(stepped):
    model = stepped["model"]
    declared = [optimizer for _, optimizer in model.sub_networks()]
    assert {id(o) for o in optimizers(model).values()} == {id(model.optimizer), *map(id, declared)}, stepped["method"]
    for network, optimizer in [(None, model.optimizer), *model.sub_networks()]:
        trained = network.trainable_variables if network is not None else model.own_variables()
        assert [id(v) for v in optimizer._trainable_variables] == [id(v) for v in trained], (stepped["method"], network)


def test_evaluate_reports_the_training_loss_and_its_terms(stepped):
    """``test_step`` computes train_step's loss (not only the metric loss) and fills the logged terms."""
    model, images, labels = stepped["model"], stepped["images"], stepped["labels"]
    loss, terms = model.validation_losses(images, labels)
    assert set(terms) <= set(model.LOGGED_TERMS) and bool(terms) == bool(model.LOGGED_TERMS), stepped["method"]
    logs = model.evaluate(images, labels, batch_size=len(images), verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(float(loss), rel=1e-4), stepped["method"]
    for name, value in terms.items():
        assert logs[name] == pytest.approx(float(value), rel=1e-4, abs=1e-6), (stepped["method"], name)


def test_call_returns_unit_embeddings(stepped):
    embeddings = np.asarray(stepped["model"](stepped["images"]))
    assert embeddings.shape == (len(stepped["images"]), 8)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_config_round_trips_through_json(stepped):
    model = stepped["model"]
    config = json.dumps(model.get_config())
    rebuilt = type(model).from_config(json.loads(config))
    rebuilt.build()
    assert json.loads(json.dumps(rebuilt.get_config())) == json.loads(config)


def test_keras_file_keeps_outputs_and_every_optimizers_state(stepped, tmp_path):
    model = stepped["model"]
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert type(loaded) is type(model)
    assert json.loads(json.dumps(loaded.get_config())) == json.loads(json.dumps(model.get_config()))
    for (network, _), (loaded_network, _) in zip(model.sub_networks(), loaded.sub_networks()):
        for a, b in zip(loaded_network.get_weights(), network.get_weights()):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(loaded.predict(stepped["images"], verbose=0),
                               model.predict(stepped["images"], verbose=0), atol=1e-5)
    loaded_optimizers = optimizers(loaded)
    for name, optimizer in optimizers(model).items():
        assert int(loaded_optimizers[name].iterations) == int(optimizer.iterations), (stepped["method"], name)
        for a, b in zip(loaded_optimizers[name].variables, optimizer.variables):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_zoo_export_serves_the_same_embeddings(stepped, tmp_path):
    model = stepped["model"]
    reloaded = load_saved_model(export_saved_model(model, tmp_path / "export"))  # held: it owns the variables
    served = reloaded.serve(tf.constant(stepped["images"]))
    served = next(iter(served.values())) if isinstance(served, dict) else served
    np.testing.assert_allclose(np.asarray(served), model.predict(stepped["images"], verbose=0), atol=1e-5)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_preset_names_only_hyperparameters_its_method_takes(method):
    for preset in all_presets():
        if preset["method"] == method:
            check_hyperparameters(method, preset["hyperparameters"])  # raises on a name the method does not take


@pytest.mark.parametrize("method, hyperparameters, named", [
    ("thsg", {"loss": "margin"}, "method 'thsg' takes no loss (loss: fixed by its paper)"),
    ("topk", {"miner": "hard"}, "method 'topk' takes no miner (miner: fixed by its paper)"),
    ("htg", {"margn": 0.2}, "method 'htg' takes no margn; its hyperparameters: b, "),
])
def test_a_hyperparameter_the_method_does_not_take_is_named(method, hyperparameters, named):
    with pytest.raises(ValueError, match=re.escape(named)):
        build_model(method, embedding_dim=8, input_size=16, num_classes=NUM_CLASSES, **hyperparameters)

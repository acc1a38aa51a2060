"""The registry: every preset is well formed, names resolve, weights are sha256-verified."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo import registry
from zoo.backbones import BACKBONES
from zoo.data import DATASETS, icons
from zoo.methods import METHODS

REQUIRED_KEYS = {"name", "method", "paper", "backbone", "dataset", "embedding_dim", "input_size", "hyperparameters",
                 "training", "command"}


@pytest.mark.parametrize("name", registry.list_models())
def test_every_preset_is_complete_and_consistent(name):
    entry = zoo.get_entry(name)
    assert REQUIRED_KEYS <= set(entry), REQUIRED_KEYS - set(entry)
    assert entry["name"] == name
    assert entry["method"] in METHODS and entry["backbone"] in BACKBONES and entry["dataset"] in DATASETS
    if entry["weights"]:
        assert len(entry["sha256"]) == 64 and {"recall@1", "map@r", "nmi"} <= set(entry["metrics"])
        assert (registry.PRETRAINED_DIR / entry["weights"]).is_file()


def _needs_its_data(name: str):
    """An entry measured on icons, which Debian's packages build (.ci/run does), runs where the set is built."""
    built = zoo.get_entry(name)["dataset"] != "icons" or (icons.default_dir() / "split.csv").is_file()
    return pytest.param(name, marks=pytest.mark.skipif(not built, reason="the icons set is not built: "
                                                       "python -m zoo.data.icons (see its --packages)"))


@pytest.mark.parametrize("name", [_needs_its_data(name) for name in registry.list_models(pretrained=True)])
def test_published_weights_load_verified_and_reproduce_their_card(name):
    from zoo.training import measure_published

    zoo.load(name)  # sha256- and provenance-checked
    card = zoo.get_entry(name)
    measured = measure_published(name)  # the weights, and the untrained model as train() measured it
    for key in ("metrics", "metrics_untrained"):
        for metric in ("recall@1", "map@r", "nmi"):
            assert measured[key][metric] == pytest.approx(card[key][metric], abs=1e-3), (key, metric)
    assert card["metrics"]["map@r"] > card["metrics_untrained"]["map@r"]  # publish refuses anything else


def test_corrupt_weights_file_is_refused_with_its_sha256(tmp_path, monkeypatch):
    entry = zoo.get_entry("triplet_digits")
    for suffix in (".weights.h5", ".json"):
        shutil.copy(registry.PRETRAINED_DIR / f"triplet_digits{suffix}", tmp_path / f"triplet_digits{suffix}")
    corrupt = tmp_path / entry["weights"]
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    monkeypatch.setattr(registry, "PRETRAINED_DIR", tmp_path)
    with pytest.raises(registry.WeightsError, match=f"does not match the registry's {entry['sha256']}"):
        zoo.load("triplet_digits")


def test_unknown_name_suggests_close_names():
    with pytest.raises(KeyError, match="Did you mean 'triplet_digits'"):
        zoo.load("triplet_digit")


def test_unpublished_entry_refuses_to_load_and_names_the_command_that_publishes_it(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "PRETRAINED_DIR", tmp_path)  # nothing published there
    with pytest.raises(zoo.WeightsError, match=r"no trained weights are published for 'triplet_digits'\. Train and "
                       r"publish them with: zoo train --method triplet --dataset digits --publish "
                       r"triplet_digits"):
        zoo.load("triplet_digits")
    with pytest.raises(zoo.WeightsError, match=r"thsg\.py --dataset cars196 --data-dir DATA --publish thsg_cars196"):
        zoo.load("thsg_cars196")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert zoo.build("triplet_digits").embedding_dim == 64  # tiny_cnn: no ImageNet weights to fetch
        zoo.load("triplet_digits", weights=None)  # explicitly untrained: no warning


def test_build_names_the_imagenet_file_to_put_in_place_when_it_cannot_be_fetched(monkeypatch, tmp_path):
    spec = BACKBONES["inception_v3"]

    def offline(*args, weights=None, **kwargs):
        if weights == "imagenet":
            raise OSError("URL fetch failure: no network")
        return spec.constructor(*args, weights=weights, **kwargs)

    monkeypatch.setitem(BACKBONES, "inception_v3", dataclasses.replace(spec, constructor=offline))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    expected = tmp_path / "models" / "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with pytest.warns(UserWarning, match=f"its backbone starts random. Put {expected} in place"):
        model = zoo.build("thsg_cars196")
    assert (model.num_classes, model.embedding_dim, model.input_size) == (98, 512, 227)


@pytest.mark.parametrize("other", ["htg_glyphs", "amdaml_glyphs", "topk_digits"])
def test_weights_of_another_method_are_refused_by_their_card(other):
    path = registry.PRETRAINED_DIR / f"{other}.weights.h5"
    with pytest.raises(zoo.WeightsError, match=rf"{other}\.json were not trained for 'triplet_digits': method "
                       rf"'{other.split('_')[0]}' \(expected 'triplet'\)"):
        zoo.load("triplet_digits", weights=str(path))


def test_a_card_of_another_configuration_or_hash_is_refused(tmp_path, monkeypatch):
    for suffix in (".weights.h5", ".json"):
        shutil.copy(registry.PRETRAINED_DIR / f"triplet_digits{suffix}", tmp_path / f"triplet_digits{suffix}")
    monkeypatch.setattr(registry, "PRETRAINED_DIR", tmp_path)
    card = json.loads((tmp_path / "triplet_digits.json").read_text())
    card["provenance"]["hyperparameters"] = {"loss": "contrastive"}  # trained otherwise: loads, and says so
    (tmp_path / "triplet_digits.json").write_text(json.dumps(card))
    with pytest.warns(UserWarning, match=r"trained with other settings than 'triplet_digits' has now: "
                      r"hyperparameters \{'loss': 'contrastive'\}"):
        zoo.load("triplet_digits")
    card["provenance"]["embedding_dim"] = 128
    (tmp_path / "triplet_digits.json").write_text(json.dumps(card))
    with pytest.raises(zoo.WeightsError, match=r"embedding_dim 128 \(expected 64\)"):
        zoo.load("triplet_digits")
    del card["provenance"]
    (tmp_path / "triplet_digits.json").write_text(json.dumps(card))
    with pytest.raises(zoo.WeightsError, match="has no provenance"):
        zoo.load("triplet_digits")


def test_a_truncated_card_names_its_file(tmp_path, monkeypatch):
    text = (registry.PRETRAINED_DIR / "triplet_digits.json").read_text()
    (tmp_path / "triplet_digits.json").write_text(text[: len(text) // 2])
    monkeypatch.setattr(registry, "PRETRAINED_DIR", tmp_path)
    with pytest.raises(zoo.WeightsError, match=f"weights card {tmp_path / 'triplet_digits.json'} is not valid JSON"):
        zoo.load("triplet_digits")


def test_weights_given_by_url_are_fetched_into_the_keras_cache_or_named_offline(tmp_path, monkeypatch):
    published = registry.PRETRAINED_DIR / "triplet_digits.weights.h5"
    card = json.loads((registry.PRETRAINED_DIR / "triplet_digits.json").read_text())
    url = "http://127.0.0.1:9/weights/triplet_digits.weights.h5"  # port 9 (discard): refused at once, offline
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "triplet_digits.json").write_text(json.dumps({**card, "url": url}))
    monkeypatch.setattr(registry, "PRETRAINED_DIR", tmp_path / "cards")  # the card only, no weights file
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    cached = tmp_path / "keras" / "zoo" / "triplet_digits.weights.h5"
    with pytest.raises(zoo.WeightsError, match=f"from {url} .*put the file at {cached} or"):
        zoo.load("triplet_digits")
    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(published, cached)  # as a download would leave it: get_file checks its sha256
    model = zoo.load("triplet_digits")
    for a, b in zip(model.get_weights(), zoo.load("triplet_digits", weights=str(published)).get_weights()):
        np.testing.assert_array_equal(a, b)


PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """``pip wheel`` of a copy of the package (the worktree stays free of build files)."""
    root, tmp = Path(__file__).resolve().parent.parent, tmp_path_factory.mktemp("wheel")
    shutil.copytree(root / "zoo", tmp / "source" / "zoo", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, tmp / "source" / name)
    subprocess.run([*PIP, "wheel", str(tmp / "source"), "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist")],
                   check=True, capture_output=True)
    return next((tmp / "dist").glob("zoo-*.whl"))


def test_the_wheel_ships_the_published_weights_and_cards(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    published = registry.list_models(pretrained=True)
    assert len(published) >= 6
    for name in published:
        assert {f"zoo/pretrained/{name}.json", f"zoo/pretrained/{zoo.get_entry(name)['weights']}"} <= names
    assert "zoo/__main__.py" in names


@pytest.mark.slow
def test_installed_from_the_wheel_zoo_load_gives_the_published_weights(wheel, tmp_path):
    subprocess.run([*PIP, "install", "--no-deps", "--no-index", "--target", str(tmp_path / "site"), str(wheel)],
                   check=True, capture_output=True)
    script = ("import zoo, numpy; m = zoo.load('triplet_digits'); print(zoo.registry.PRETRAINED_DIR); "
              "print(float(numpy.asarray(m(numpy.zeros((1, 32, 32, 3), 'float32'))).sum()))")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    env.pop("ZOO_PRETRAINED_DIR", None)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    folder, value = done.stdout.split()[-2:]
    assert folder == str(tmp_path / "site" / "zoo" / "pretrained")
    expected = np.asarray(zoo.load("triplet_digits")(np.zeros((1, 32, 32, 3), "float32"))).sum()
    assert float(value) == pytest.approx(float(expected), abs=1e-4)


def test_local_weights_path_loads_and_checks_a_given_sha256(tmp_path):
    model = zoo.load("triplet_digits")
    path = tmp_path / "mine.weights.h5"
    model.save_weights(path)
    loaded = zoo.load("triplet_digits", weights=str(path), sha256=registry.sha256_of(path))
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(registry.WeightsError, match="sha256"):
        zoo.load("triplet_digits", weights=str(path), sha256="0" * 64)


def test_list_models_filters_by_pattern():
    assert all(name.startswith("triplet_") for name in zoo.list_models("triplet_*"))
    assert "triplet_digits" in zoo.list_models("*digits")


def test_an_imagenet_entry_publishes_only_the_weights_it_trains(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "PRETRAINED_DIR", tmp_path)
    model = zoo.build("triplet_lite0_icons")  # EfficientNet-Lite0 from ImageNet, all but its last block frozen
    trained = [layer for layer in model.embedding_net.layers if layer.trainable and layer.weights]
    names = {layer.name for layer in trained}
    assert {"_conv_head", "_bn1", "embedding", "_blocks_15_project_conv"} <= names
    assert not any(name.startswith(("_conv_stem", "_blocks_3_")) for name in names)  # frozen at ImageNet's
    rng = np.random.default_rng(0)
    for layer in trained:  # as if training had moved them
        layer.set_weights([w + rng.normal(0, 0.01, w.shape).astype(w.dtype) for w in layer.get_weights()])
    registry.publish("triplet_lite0_icons", model, {"map@r": 0.2}, {"map@r": 0.1}, command="test")
    card = json.loads((tmp_path / "triplet_lite0_icons.json").read_text())
    assert card["weights"] == "triplet_lite0_icons.trained.npz"
    assert (tmp_path / card["weights"]).stat().st_size < 15_500_000  # the trained blocks only: not all 16.3 MB
    loaded = zoo.load("triplet_lite0_icons")
    images = rng.uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    np.testing.assert_allclose(loaded(images), model(images), atol=1e-6)
    np.testing.assert_array_equal(loaded.embedding_net.get_layer("_blocks_3_depthwise_conv").get_weights()[0],
                                  zoo.build("triplet_lite0_icons").embedding_net.get_layer(
                                      "_blocks_3_depthwise_conv").get_weights()[0])  # ImageNet's, from the pip file
    with np.load(tmp_path / card["weights"]) as stored:
        kept = {key: stored[key] for key in sorted(stored.files)[1:]}
    np.savez(tmp_path / "short.trained.npz", **kept)
    trains = len(registry._trained_positions(loaded))
    with pytest.raises(ValueError, match=f"short.trained.npz holds {trains - 1} weights where the model trains {trains}"):
        registry.load_trained_weights(zoo.build("triplet_lite0_icons"), tmp_path / "short.trained.npz")

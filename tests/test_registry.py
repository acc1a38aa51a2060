"""The registry: every preset is well formed, names resolve, weights are sha256-verified."""

import shutil
import warnings

import numpy as np
import pytest

import zoo
from zoo import registry
from zoo.backbones import BACKBONES
from zoo.data import DATASETS
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


def test_published_digits_models_load_verified_and_match_their_card():
    published = registry.list_models(pretrained=True)
    assert "triplet_digits" in published
    model = zoo.load("triplet_digits")
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    assert np.asarray(model(images)).shape == (2, zoo.get_entry("triplet_digits")["embedding_dim"])


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


def test_unpublished_entry_builds_the_configured_model_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "PRETRAINED_DIR", tmp_path)  # nothing published there
    with pytest.warns(UserWarning, match="no trained weights are published for 'triplet_digits'"):
        model = zoo.load("triplet_digits")
    assert model.embedding_dim == 64
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zoo.load("triplet_digits", weights=None)  # explicitly untrained: no warning


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

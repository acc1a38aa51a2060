"""The registry of models: presets are data, measured results are files.

A preset (a dict in a method module's ``PRESETS``) says how a model is configured and trained:
``name, method, paper, backbone, backbone_weights, freeze_batchnorm, dataset, embedding_dim,
input_size, hyperparameters, training, command``. What a training run measured lives beside the
weights it wrote: ``zoo/pretrained/<name>.weights.h5`` (package data, so it ships in the wheel) and
the card ``zoo/pretrained/<name>.json`` (``weights, sha256, provenance, metrics, metrics_untrained,
command, date``), written by :func:`publish`. ``get_entry`` merges both, so no metric is ever typed by hand.

Weights trained elsewhere (a GPU machine) are published without code changes: a card with a ``url``
beside its ``weights`` file name and ``sha256``; :func:`load` then fetches the file with
``keras.utils.get_file`` into the Keras cache (``~/.keras/zoo/``), verified by its sha256.

Every weights file is checked before it is loaded: its sha256 against its card, and the card's
``provenance`` (the method and configuration that trained it) against the entry it is loaded into.
"""

from __future__ import annotations

import datetime
import difflib
import fnmatch
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np

from zoo import methods
from zoo.backbones import BACKBONES, build_feature_net

PRETRAINED_DIR = Path(os.environ.get("ZOO_PRETRAINED_DIR", Path(__file__).resolve().parent / "pretrained"))
CACHE_SUBDIR = "zoo"  # downloaded weights go to keras.utils.get_file's cache: <Keras home>/zoo/

# Number of training classes of each benchmark's zero-shot split (the classifier/discriminator size).
TRAIN_CLASSES = {"digits": 5, "glyphs": 352, "icons": 819, "cub200": 100, "cars196": 98, "sop": 11318, "inshop": 3997}

# The configuration a weights file is trained for (its card's provenance): what build() builds from.
# The architecture keys must match the entry's for its weights to load; the training keys may have
# changed since the weights were published (a warning then says the card no longer reproduces them).
ARCHITECTURE_KEYS = ("method", "backbone", "embedding_dim", "input_size", "num_classes")
TRAINING_KEYS = ("freeze_batchnorm", "train_blocks", "hyperparameters")
PROVENANCE_KEYS = ARCHITECTURE_KEYS + TRAINING_KEYS

# The no-top ImageNet files keras.applications fetches into <Keras home>/models/.
IMAGENET_FILES = {
    "inception_v3": "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "resnet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
}


class WeightsError(ValueError):
    """A weights file is missing, corrupt, or does not match its registry entry."""


def _presets() -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for preset in methods.all_presets():
        if preset["name"] in entries:
            raise ValueError(f"two presets are named {preset['name']!r}")
        entries[preset["name"]] = preset
    return entries


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Registry names matching the fnmatch ``pattern``; only those with published weights if ``pretrained``."""
    names = sorted(fnmatch.filter(_presets(), pattern))
    return [n for n in names if get_entry(n).get("weights")] if pretrained else names


def card_path(name: str) -> Path:
    return PRETRAINED_DIR / f"{name}.json"


def read_card(path: Path) -> dict[str, Any]:
    """A weights card as a dict.

    Raises:
        WeightsError: the card is not valid JSON (truncated, hand-edited), naming the file.
    """
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise WeightsError(
            f"weights card {path} is not valid JSON ({error}): restore it (e.g. git checkout), or delete it and "
            "its weights file and publish them again"
        ) from error
    if not isinstance(card, dict):
        raise WeightsError(f"weights card {path} holds {type(card).__name__}, not a JSON object")
    return card


def get_entry(name: str) -> dict[str, Any]:
    """The preset of ``name`` merged with its measured card (if published).

    Raises:
        KeyError: unknown name, with the closest registered names as suggestions.
        WeightsError: the card is not valid JSON.
    """
    presets = _presets()
    if name not in presets:
        close = difflib.get_close_matches(name, presets, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"unknown model {name!r}.{hint} See zoo.list_models() for all {len(presets)} names.")
    entry = {"weights": None, "sha256": None, "url": None, "metrics": {}, **presets[name]}
    entry.setdefault("num_classes", TRAIN_CLASSES.get(entry["dataset"]))
    if card_path(name).exists():
        entry.update(read_card(card_path(name)))
    return entry


def provenance(entry: dict[str, Any]) -> dict[str, Any]:
    """The method and configuration of an entry, as its weights card records them (``PROVENANCE_KEYS``)."""
    return {key: entry.get(key, {} if key == "hyperparameters" else None) for key in PROVENANCE_KEYS}


def check_provenance(name: str, card: dict[str, Any], source: str | Path) -> None:
    """Refuse weights whose card says they were trained for another model than entry ``name``.

    Another method or architecture (``ARCHITECTURE_KEYS``) raises; other training settings
    (``TRAINING_KEYS``) than the entry's now are loaded with a warning naming them.

    Args:
        name: the registry entry the weights are loaded into.
        card: the weights' card (its ``provenance``).
        source: the card's file, named in the messages.

    Raises:
        WeightsError: no provenance, or another method or architecture.
    """
    if "provenance" not in card:
        raise WeightsError(f"weights card {source} has no provenance: publish the weights again (zoo train --publish)")
    expected, recorded = provenance(get_entry(name)), card["provenance"]

    def differences(keys: tuple[str, ...]) -> list[str]:
        return [f"{key} {recorded.get(key)!r} (expected {expected[key]!r})" for key in keys
                if json.loads(json.dumps(recorded.get(key))) != json.loads(json.dumps(expected[key]))]

    if differences(ARCHITECTURE_KEYS):
        raise WeightsError(
            f"the weights of card {source} were not trained for {name!r}: {'; '.join(differences(ARCHITECTURE_KEYS))}"
        )
    if differences(TRAINING_KEYS):
        warnings.warn(
            f"the weights of card {source} were trained with other settings than {name!r} has now: "
            f"{'; '.join(differences(TRAINING_KEYS))}. Their metrics are those of the card; retrain and publish "
            f"({publish_command(get_entry(name))}) to match the entry.",
            stacklevel=3,
        )


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(model: keras.Model) -> str:
    """sha256 of the embedding net's weight values (dtype, shape and bytes of each, in order)."""
    digest = hashlib.sha256()
    for weight in getattr(model, "embedding_net", model).weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def verify_weights(path: str | Path, expected_sha256: str) -> None:
    """Raise :class:`WeightsError` unless ``path`` exists and has the expected sha256."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise WeightsError(
            f"weights file {path} is corrupt or not the published one: sha256 {actual} "
            f"does not match the registry's {expected_sha256}. Delete it and fetch or retrain it."
        )


def keras_home() -> Path:
    """Keras' cache folder (``$KERAS_HOME``, else ``~/.keras``): downloads land in its subfolders."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser()


def _backbone_weights_file(backbone: str) -> Path:
    """Where keras.applications looks for a backbone's no-top ImageNet weights."""
    return keras_home() / "models" / IMAGENET_FILES[backbone]


def build(name: str, backbone_weights: str | None = "default") -> keras.Model:
    """The configured, untrained model of entry ``name``.

    Args:
        name: registry name.
        backbone_weights: ``"default"`` = the entry's (ImageNet for the paper configurations);
            when they cannot be had (offline) the backbone starts random and a warning names the
            file to put in place. ``None`` (random) or a local weights file.
    """
    entry = get_entry(name)
    weights = entry.get("backbone_weights") if backbone_weights == "default" else backbone_weights

    def build_with(weights: str | None) -> keras.Model:
        return methods.build_model(
            entry["method"],
            backbone=entry["backbone"],
            embedding_dim=entry["embedding_dim"],
            input_size=entry["input_size"],
            backbone_weights=weights,
            freeze_batchnorm=entry.get("freeze_batchnorm", False),
            train_blocks=entry.get("train_blocks"),
            num_classes=entry.get("num_classes"),
            **entry.get("hyperparameters", {}),
        )

    if backbone_weights != "default" or weights != "imagenet":
        return build_with(weights)
    try:
        return build_with("imagenet")
    except RuntimeError as error:  # backbones.build_embedding_net: the ImageNet download failed
        warnings.warn(
            f"{name}: the ImageNet weights of its {entry['backbone']} backbone could not be fetched ({error}); "
            f"its backbone starts random. Put {_backbone_weights_file(entry['backbone'])} in place "
            "(downloaded on a connected machine) to build it with them.",
            stacklevel=2,
        )
        return build_with(None)


def publish_command(entry: dict[str, Any]) -> str:
    """The command that trains entry ``entry`` and publishes its weights (its ``command``, with ``--publish``)."""
    command = entry.get("command") or f"zoo train --preset {entry['name']}"
    return command if "--publish" in command else f"{command} --publish {entry['name']}"


def weights_path(name: str) -> Path:
    """The published weights file of ``name``: in ``PRETRAINED_DIR``, else fetched from the card's ``url``.

    Raises:
        WeightsError: nothing published, or the download failed (naming the URL and where to put the file).
    """
    entry = get_entry(name)
    if not entry["weights"]:
        raise WeightsError(
            f"no trained weights are published for {name!r}. Train and publish them with: "
            f"{publish_command(entry)}; or use zoo.build({name!r}) for the configured untrained model."
        )
    local = PRETRAINED_DIR / entry["weights"]
    if local.is_file() or not entry["url"]:
        return local
    try:
        return Path(keras.utils.get_file(entry["weights"], origin=entry["url"], file_hash=entry["sha256"],
                                         hash_algorithm="sha256", cache_dir=str(keras_home()),
                                         cache_subdir=CACHE_SUBDIR))
    except Exception as error:  # urllib and keras raise many kinds for a failed fetch or a wrong hash
        cached = keras_home() / CACHE_SUBDIR / entry["weights"]
        raise WeightsError(
            f"could not fetch the weights of {name!r} from {entry['url']} ({error}). Download that URL on a "
            f"connected machine and put the file at {cached} or {local}."
        ) from error


def load(name: str, weights: str | None = "default", sha256: str | None = None) -> keras.Model:
    """A registry model with its weights, checked before they are loaded.

    Args:
        name: registry name, e.g. ``"triplet_digits"`` (see :func:`list_models`).
        weights: ``"default"`` = the published weights (verified against their card's sha256 and
            provenance); ``None`` = untrained (random backbone); or a path to a ``.weights.h5``
            file. A file with a card beside it (``<name>.json``, as :func:`publish` writes) must
            match that card's sha256 and provenance.
        sha256: expected sha256 of a weights file given by path (checked when given).

    Raises:
        KeyError: unknown name. WeightsError: nothing published (naming the command that trains
        and publishes it), or a missing, corrupt or mismatched weights file or card.
    """
    get_entry(name)
    if weights is None:
        return build(name, backbone_weights=None)
    if weights == "default":
        weights, card_file = weights_path(name), card_path(name)
    else:
        card_file = Path(str(weights).removesuffix(".weights.h5") + ".json")
    if card_file.is_file():
        card = read_card(card_file)
        check_provenance(name, card, card_file)
        verify_weights(weights, card["sha256"])
    if sha256 is not None:
        verify_weights(weights, sha256)
    trained_only = str(weights).endswith(TRAINED_WEIGHTS_SUFFIX)
    # A full file overwrites the backbone's ImageNet weights; a file of the trained weights needs them.
    model = build(name, backbone_weights="default" if trained_only else None)
    try:
        load_trained_weights(model, weights) if trained_only else model.load_weights(weights)
    except Exception as error:  # h5py/keras raise many kinds for a damaged or mismatched file
        raise WeightsError(f"could not load weights {weights} into {name!r}: {error}") from error
    model.zoo_name = name  # what loads it again (zoo.Index.save keeps it)
    return model


TRAINED_WEIGHTS_SUFFIX = ".trained.npz"


def _trained_positions(model: keras.Model) -> list[int]:
    """Positions in ``model.weights`` of every weight but those of the embedding net's frozen layers."""
    frozen = {id(w) for layer in model.embedding_net.layers if not layer.trainable for w in layer.weights}
    return [i for i, weight in enumerate(model.weights) if id(weight) not in frozen]


def save_trained_weights(model: keras.Model, path: Path) -> None:
    """Write the weights of ``model`` outside its frozen layers (``train_blocks``), by position, to an ``.npz``."""
    np.savez(path, **{f"{i:05d}": keras.ops.convert_to_numpy(model.weights[i]) for i in _trained_positions(model)})


def load_trained_weights(model: keras.Model, path: str | Path) -> None:
    """Load a :func:`save_trained_weights` file into a model whose frozen layers hold their ImageNet weights.

    Raises:
        ValueError: the file holds other weights than the model trains, or another shape (named).
    """
    positions = _trained_positions(model)
    with np.load(path) as stored:
        if sorted(stored.files) != [f"{i:05d}" for i in positions]:
            raise ValueError(f"{path} holds {len(stored.files)} weights where the model trains {len(positions)}: "
                             "it was published for another configuration")
        for i in positions:
            value = stored[f"{i:05d}"]
            if tuple(value.shape) != tuple(model.weights[i].shape):
                raise ValueError(f"{path}: weight {model.weights[i].path} has shape {value.shape}, "
                                 f"expected {tuple(model.weights[i].shape)}")
            model.weights[i].assign(value)


def zero_shot_spec(backbone: str, input_size: int | None = None) -> str:
    """The :func:`load_model` name of a backbone's ImageNet features without training: ``BACKBONE@SIZE``."""
    return f"{backbone}@{input_size or BACKBONES[backbone].default_size}"


def load_model(spec: str) -> keras.Model:
    """A model from a registry name (:func:`load`), a saved ``.keras`` file, or ``BACKBONE@SIZE``: the backbone's
    pooled ImageNet features at SIZE px without training (:func:`zoo.backbones.build_feature_net`, the zero-shot
    baseline); its ``zoo_name`` is ``spec``."""
    if spec.endswith(".keras"):
        if not Path(spec).is_file():
            raise FileNotFoundError(f"model file {spec} does not exist")
        model = keras.models.load_model(spec)
    elif spec.partition("@")[0] in BACKBONES:
        backbone, _, size = spec.partition("@")
        if not size.isdigit() or int(size) < 1:
            raise ValueError(f"{spec!r}: the ImageNet features of a backbone are named BACKBONE@SIZE, e.g. "
                             f"{zero_shot_spec(backbone)}")
        if BACKBONES[backbone].default_weights != "imagenet":
            raise ValueError(f"{backbone} has no ImageNet weights: its features without training are random")
        model = build_feature_net(backbone, int(size), "imagenet")
    else:
        return load(spec)
    model.zoo_name = spec
    return model


def model_input_size(model: keras.Model) -> int:
    """Side of the square images a model takes (a method model's ``input_size``, else its input shape)."""
    return int(getattr(model, "input_size", None) or model.input_shape[1])


def publish(
    name: str, model: keras.Model, metrics: dict[str, float], metrics_untrained: dict[str, float], command: str | None,
    trained_with: dict[str, Any] | None = None,
) -> Path:
    """Write ``PRETRAINED_DIR/<name>.weights.h5`` (model weights only) and its card; returns the card path.

    ``trained_with``: the resolved training configuration (``zoo.training.training_record``), kept in the card;
    its hyperparameters and BatchNorm setting are the card's provenance.
    """
    entry = get_entry(name)  # the preset must exist
    PRETRAINED_DIR.mkdir(parents=True, exist_ok=True)
    # A model whose early blocks stayed at their ImageNet values publishes only the weights it trained.
    trained_only = entry.get("train_blocks") is not None and entry.get("backbone_weights") == "imagenet"
    weights_file = f"{name}{TRAINED_WEIGHTS_SUFFIX if trained_only else '.weights.h5'}"
    clean = build(name, backbone_weights=None)  # a fresh, uncompiled copy: no optimizer state in the published file
    clean.set_weights(model.get_weights())
    if trained_only:
        save_trained_weights(clean, PRETRAINED_DIR / weights_file)
    else:
        clean.save_weights(PRETRAINED_DIR / weights_file)
    card = {
        "weights": weights_file,
        "sha256": sha256_of(PRETRAINED_DIR / weights_file),
        "provenance": {**provenance(entry), **{k: (trained_with or {})[k] for k in TRAINING_KEYS
                                               if k in (trained_with or {})}},
        **({"trained_with": trained_with} if trained_with else {}),
        "metrics": {k: round(float(v), 4) for k, v in metrics.items()},
        "metrics_untrained": {k: round(float(v), 4) for k, v in metrics_untrained.items()},
        "command": command,
        "date": datetime.date.today().isoformat(),
    }
    card_path(name).write_text(json.dumps(card, indent=2) + "\n")
    return card_path(name)

"""The registry of models: presets are data, measured results are files.

A preset (a dict in a method module's ``PRESETS``) says how a model is configured and trained:
``name, method, paper, backbone, backbone_weights, freeze_batchnorm, dataset, embedding_dim,
input_size, hyperparameters, training, command``. What a training run measured lives beside the
weights it wrote: ``pretrained/<name>.weights.h5`` and the card ``pretrained/<name>.json``
(``weights, sha256, metrics, metrics_untrained, command, date``), written by :func:`publish`.
``get_entry`` merges both, so no metric is ever typed by hand.
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

from zoo import methods

PRETRAINED_DIR = Path(os.environ.get("ZOO_PRETRAINED_DIR", Path(__file__).resolve().parent.parent / "pretrained"))

# Number of training classes of each benchmark's zero-shot split (the classifier/discriminator size).
TRAIN_CLASSES = {"digits": 5, "cub200": 100, "cars196": 98, "sop": 11318, "inshop": 3997}


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


def get_entry(name: str) -> dict[str, Any]:
    """The preset of ``name`` merged with its measured card (if published).

    Raises:
        KeyError: unknown name, with the closest registered names as suggestions.
    """
    presets = _presets()
    if name not in presets:
        close = difflib.get_close_matches(name, presets, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"unknown model {name!r}.{hint} See zoo.list_models() for all {len(presets)} names.")
    entry = {"weights": None, "sha256": None, "metrics": {}, **presets[name]}
    entry.setdefault("num_classes", TRAIN_CLASSES.get(entry["dataset"]))
    if card_path(name).exists():
        entry.update(json.loads(card_path(name).read_text()))
    return entry


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
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


def build(name: str, backbone_weights: str | None = None) -> keras.Model:
    """The configured, untrained model of entry ``name`` (ImageNet backbone only if asked)."""
    entry = get_entry(name)
    return methods.build_model(
        entry["method"],
        backbone=entry["backbone"],
        embedding_dim=entry["embedding_dim"],
        input_size=entry["input_size"],
        backbone_weights=backbone_weights,
        freeze_batchnorm=entry.get("freeze_batchnorm", False),
        num_classes=entry.get("num_classes"),
        **entry.get("hyperparameters", {}),
    )


def load(name: str, weights: str | None = "default", sha256: str | None = None) -> keras.Model:
    """A registry model with its weights.

    Args:
        name: registry name, e.g. ``"triplet_digits"`` (see :func:`list_models`).
        weights: ``"default"`` = the published weights (verified against the registry's sha256;
            when none are published yet, the configured untrained model with a warning saying so);
            ``None`` = untrained; or a path to a ``.weights.h5`` file.
        sha256: expected sha256 of a weights file given by path (checked when given).

    Raises:
        KeyError: unknown name. WeightsError: missing or corrupt weights file.
    """
    entry = get_entry(name)
    model = build(name)
    if weights == "default":
        if not entry["weights"]:
            warnings.warn(
                f"no trained weights are published for {name!r} yet: returning the configured untrained "
                f"model. Produce them with: {entry.get('command', 'its training script')}",
                stacklevel=2,
            )
            return model
        weights, sha256 = str(PRETRAINED_DIR / entry["weights"]), entry["sha256"]
    if weights is None:
        return model
    if sha256 is not None:
        verify_weights(weights, sha256)
    try:
        model.load_weights(weights)
    except Exception as error:  # h5py/keras raise many kinds for a damaged or mismatched file
        raise WeightsError(f"could not load weights {weights} into {name!r}: {error}") from error
    return model


def publish(
    name: str, model: keras.Model, metrics: dict[str, float], metrics_untrained: dict[str, float], command: str | None
) -> Path:
    """Write ``pretrained/<name>.weights.h5`` (model weights only) and its card; returns the card path."""
    get_entry(name)  # the preset must exist
    PRETRAINED_DIR.mkdir(parents=True, exist_ok=True)
    weights_file = f"{name}.weights.h5"
    clean = build(name)  # a fresh, uncompiled copy: no optimizer state in the published file
    clean.set_weights(model.get_weights())
    clean.save_weights(PRETRAINED_DIR / weights_file)
    card = {
        "weights": weights_file,
        "sha256": sha256_of(PRETRAINED_DIR / weights_file),
        "metrics": {k: round(float(v), 4) for k, v in metrics.items()},
        "metrics_untrained": {k: round(float(v), 4) for k, v in metrics_untrained.items()},
        "command": command,
        "date": datetime.date.today().isoformat(),
    }
    card_path(name).write_text(json.dumps(card, indent=2) + "\n")
    return card_path(name)

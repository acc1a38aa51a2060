"""Training methods: one ``keras.Model`` subclass per paper, all built on :class:`MetricModel`.

``METHODS`` maps a method name (as used by the CLI and the registry) to its model class;
:func:`build_model` builds the embedding net and the method's model from plain config values.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import keras

from zoo import losses, ops
from zoo.backbones import build_embedding_net
from zoo.methods.metric_model import MetricModel
from zoo.names import METHOD_NAMES

METHODS: dict[str, type[keras.Model]] = {"triplet": MetricModel}

# The protocol of every ``<method>_digits`` preset: tiny_cnn from scratch, 32 px, 64-d, on digits. Its
# BatchNorm is frozen: the moving statistics lag behind in runs of a few dozen steps.
DIGITS_PROTOCOL: dict[str, Any] = {
    "backbone": "tiny_cnn",
    "backbone_weights": None,
    "freeze_batchnorm": True,
    "dataset": "digits",
    "embedding_dim": 64,
    "input_size": 32,
}

# The protocol of every ``<method>_glyphs`` preset: the peer benchmark's four-block CNN from scratch on the
# offline many-class glyphs (zoo.data.glyphs), 32 px, 64-d, PML's batches (P16 x K4) and rate (Adam 1e-3).
GLYPHS_PROTOCOL: dict[str, Any] = {
    "backbone": "small_cnn",
    "backbone_weights": None,
    "freeze_batchnorm": False,
    "dataset": "glyphs",
    "embedding_dim": 64,
    "input_size": 32,
}
GLYPHS_TRAINING: dict[str, Any] = {
    "epochs": 2,
    "steps_per_epoch": 150,
    "classes_per_batch": 16,
    "images_per_class": 4,
    "learning_rate": 1e-3,
    "eval_every": 2,
    # The peer benchmark's crops: random resized crops of 70-100 % of the area, no flips (a mirrored glyph is
    # another glyph). Triplet baseline, 300 steps, seed 0: MAP@R 0.285 against 0.259 with resize_crop.
    "augmentation": "random_resized_crop",
    "crop_scale": (0.7, 1.0),
}



def glyphs_preset(method: str, paper: str, hyperparameters: dict[str, Any], **training: Any) -> dict[str, Any]:
    """The ``<method>_glyphs`` registry entry: :data:`GLYPHS_PROTOCOL` and :data:`GLYPHS_TRAINING` (``training``
    overrides it), trained and published by ``zoo train --method <method> --publish <method>_glyphs``."""
    return {
        "name": f"{method}_glyphs",
        "method": method,
        "paper": paper,
        **GLYPHS_PROTOCOL,
        "hyperparameters": dict(hyperparameters),
        "training": {**GLYPHS_TRAINING, **training},
        "command": f"zoo train --method {method} --publish {method}_glyphs",
    }


# The protocol of every ``<method>_lite0_icons`` preset (derived from its ``<method>_glyphs`` preset, whose
# hyperparameters and step count it keeps): EfficientNet-Lite0 from ImageNet on the real artwork of ``icons``, its
# early blocks frozen, fine-tuned as measured in benchmarks/RESULTS.md ("Fine-tuning from ImageNet on a CPU").
IMAGENET_PROTOCOL: dict[str, Any] = {
    "backbone": "efficientnet_lite0",
    "backbone_weights": "imagenet",
    "freeze_batchnorm": False,
    "train_blocks": 8,
    "dataset": "icons",
    "embedding_dim": 512,
    "input_size": 96,
}
IMAGENET_TRAINING: dict[str, Any] = {"augmentation": "resize_crop"}


def imagenet_preset(glyphs: dict[str, Any], paper: str | None = None, **hyperparameters: Any) -> dict[str, Any]:
    """The ``<method>_lite0_icons`` entry of a ``<method>_glyphs`` preset: its method, hyperparameters (updated by
    ``hyperparameters``) and steps on :data:`IMAGENET_PROTOCOL`."""
    name = f"{glyphs['method']}_lite0_icons"
    return {
        **glyphs,
        "name": name,
        "paper": paper or glyphs["paper"],
        **IMAGENET_PROTOCOL,
        "hyperparameters": {**glyphs["hyperparameters"], **hyperparameters},
        "training": {**glyphs["training"], **IMAGENET_TRAINING},
        "command": f"zoo train --preset {name} --dataset icons --publish {name}",
    }


def with_imagenet(glyphs: dict[str, Any], paper: str | None = None, **hyperparameters: Any) -> list[dict[str, Any]]:
    """A method's ``<method>_glyphs`` preset and its ``<method>_lite0_icons`` (:func:`imagenet_preset`)."""
    return [glyphs, imagenet_preset(glyphs, paper, **hyperparameters)]


# The protocol of the ``<method>_<benchmark>`` presets (CUB-200, Cars196, SOP): the papers' GoogLeNet / BN-Inception
# class of network as an ImageNet InceptionV3, fine-tuned with its BatchNorm, 512-d, 227 px crops.
PAPER_PROTOCOL: dict[str, Any] = {
    "backbone": "inception_v3",
    "backbone_weights": "imagenet",
    "freeze_batchnorm": False,
    "embedding_dim": 512,
    "input_size": 227,
}


def paper_preset(method: str, paper: str, dataset: str, hyperparameters: dict[str, Any], training: dict[str, Any],
                 **protocol: Any) -> dict[str, Any]:
    """The ``<method>_<dataset>`` registry entry of a benchmark: :data:`PAPER_PROTOCOL` (``protocol`` overrides
    it), trained by ``training_scripts/<method>.py`` on the benchmark's files."""
    return {
        "name": f"{method}_{dataset}",
        "method": method,
        "paper": paper,
        **PAPER_PROTOCOL,
        **protocol,
        "dataset": dataset,
        "hyperparameters": dict(hyperparameters),
        "training": dict(training),
        "command": f"python training_scripts/{method}.py --dataset {dataset} --data-dir DATA",
    }


# Losses built with the number of training classes (given by name in a method's hyperparameters):
# those whose class declares ``needs_num_classes`` (the proxy and classifier losses).
CLASS_AWARE_LOSSES: tuple[str, ...] = losses.CLASS_AWARE_LOSSES

# One module per method; each defines its model class (registered below) and its PRESETS.
METHOD_MODULES = METHOD_NAMES


def register_method(name: str):
    """Class decorator: makes a method model available by ``name`` and serialisable by Keras."""

    def decorator(cls: type[keras.Model]) -> type[keras.Model]:
        METHODS[name] = keras.saving.register_keras_serializable(package="zoo")(cls)
        return cls

    return decorator


def hyperparameter_names(method: str) -> tuple[str, ...]:
    """The hyperparameters ``method`` takes: its constructor's keyword arguments and those of the classes it passes
    ``**kwargs`` on to, up to :class:`MetricModel`, less the ones it fixes (``FIXED_ARGUMENTS``)."""
    cls = METHODS[method]
    return tuple(sorted(ops.keyword_arguments(cls) - {"embedding_net", "num_classes", *cls.FIXED_ARGUMENTS}))


def check_hyperparameters(method: str, hyperparameters: dict[str, Any]) -> None:
    """Raise a ValueError naming every hyperparameter ``method`` does not take, and the ones it does."""
    unknown = sorted(set(hyperparameters) - set(hyperparameter_names(method)))
    if unknown:
        fixed = [name for name in unknown if name in METHODS[method].FIXED_ARGUMENTS]
        why = f" ({', '.join(fixed)}: fixed by its paper)" if fixed else ""
        raise ValueError(f"method {method!r} takes no {', '.join(unknown)}{why}; "
                         f"its hyperparameters: {', '.join(hyperparameter_names(method))}")


def build_model(
    method: str,
    *,
    backbone: str = "tiny_cnn",
    embedding_dim: int = 128,
    input_size: int | None = None,
    backbone_weights: str | None = "default",
    freeze_batchnorm: bool = False,
    train_blocks: int | None = None,
    num_classes: int | None = None,
    **hyperparameters: Any,
) -> keras.Model:
    """Build ``method``'s model on a fresh embedding net.

    ``num_classes`` (training classes) is passed to the methods whose constructor takes it
    (those with a classifier or discriminator) and to a loss named in ``CLASS_AWARE_LOSSES``;
    ``hyperparameters`` go to the constructor; the other arguments to :func:`zoo.backbones.build_embedding_net`.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    check_hyperparameters(method, hyperparameters)
    cls = METHODS[method]
    net = build_embedding_net(backbone, embedding_dim, input_size, backbone_weights, freeze_batchnorm,
                              train_blocks=train_blocks)
    if hyperparameters.get("loss") in CLASS_AWARE_LOSSES:  # one trainable proxy per training class
        if num_classes is None:
            raise ValueError(f"loss {hyperparameters['loss']!r} needs num_classes (the number of training classes)")
        hyperparameters["loss"] = losses.get(hyperparameters["loss"], num_classes=num_classes, embedding_dim=embedding_dim)
    if "num_classes" in inspect.signature(cls.__init__).parameters:
        if num_classes is None:
            raise ValueError(f"method {method!r} needs num_classes (the number of training classes)")
        hyperparameters["num_classes"] = num_classes
    model = cls(embedding_net=net, **hyperparameters)
    model.build(net.input_shape)
    return model


def all_presets() -> list[dict[str, Any]]:
    """Every method module's registry presets."""
    presets: list[dict[str, Any]] = []
    for module in METHOD_MODULES:
        presets.extend(importlib.import_module(f"zoo.methods.{module}").PRESETS)
    return presets


for _module in METHOD_MODULES:
    importlib.import_module(f"zoo.methods.{_module}")

__all__ = ["METHODS", "MetricModel", "all_presets", "build_model", "check_hyperparameters", "hyperparameter_names",
           "register_method"]

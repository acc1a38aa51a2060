"""Backbones and the embedding network: backbone -> global average pool -> linear -> L2 norm.

Inputs are RGB images as float32 in [0, 255]; each backbone's own preprocessing (ImageNet
scaling for InceptionV3, caffe-style mean subtraction for ResNet50, (x - 127) / 128 for
EfficientNet-Lite) is a layer inside the network, so the saved model and the SavedModel export
take raw pixels. The EfficientNet-Lite backbones (:mod:`zoo.efficientnet_lite`) take their ImageNet
weights from pip packages, offline; :func:`build_feature_net` gives a backbone's pooled ImageNet
features without training (the zero-shot baseline of every real-image benchmark).
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
from keras import layers

from zoo import efficientnet_lite


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and what input it expects."""

    constructor: Callable[..., keras.Model] | None
    preprocessing: str          # mode of :class:`ImagePreprocessing`
    default_size: int
    default_weights: str | None


BACKBONES: dict[str, BackboneSpec] = {
    "inception_v3": BackboneSpec(keras.applications.InceptionV3, "tf", 299, "imagenet"),
    "resnet50": BackboneSpec(keras.applications.ResNet50, "caffe", 224, "imagenet"),
    **{name: BackboneSpec(None, "lite", variant.resolution, "imagenet")
       for name, variant in efficientnet_lite.VARIANTS.items()},
    "tiny_cnn": BackboneSpec(None, "unit", 32, None),
    "small_cnn": BackboneSpec(None, "standardize", 64, None),
}


# Backbone weights the zoo trains itself, shipped in zoo/pretrained/backbones/ (the ImageNet weights of the
# CPU backbones, which no one publishes): (backbone, weights name) -> (file, sha256). Each was trained on
# classes disjoint from every benchmark's by training_scripts/pretrain_backbone.py, whose command is in
# benchmarks/RESULTS.md.
PRETRAINED_BACKBONES: dict[tuple[str, str], tuple[str, str]] = {
    # 800 steps of the triplet baseline on glyphs' pretrain split (174 classes): glyphs test MAP@R 0.013 -> 0.334.
    ("small_cnn", "glyphs"): ("small_cnn_glyphs.weights.h5",
                              "f5672d18dbf1aea17ed22fb2300e98a8ec8bd88614d4aa62a46e32e7dd75dcdd"),
}
BACKBONE_WEIGHTS_DIR = Path(__file__).parent / "pretrained" / "backbones"


def backbone_part(net: keras.Model) -> keras.Model:
    """The backbone of an embedding net: its layers from the images to the global pooling (shared weights)."""
    return keras.Model(net.inputs, net.get_layer("pool").input, name=f"{net.name}_backbone")


def pretrained_backbone_file(backbone: str, weights: str) -> Path:
    """The verified file of the zoo's own ``weights`` for ``backbone`` (see :data:`PRETRAINED_BACKBONES`).

    Raises:
        ValueError: no such weights for this backbone.
        OSError: the file is missing or its sha256 differs from the registered one.
    """
    if (backbone, weights) not in PRETRAINED_BACKBONES:
        known = sorted(name for b, name in PRETRAINED_BACKBONES if b == backbone)
        raise ValueError(f"{backbone} has no pretrained weights {weights!r}; available: {known or 'none'} or None")
    filename, sha256 = PRETRAINED_BACKBONES[backbone, weights]
    path = BACKBONE_WEIGHTS_DIR / filename
    if not path.is_file():
        raise OSError(f"the {backbone} weights {weights!r} should be at {path}, which is missing: reinstall zoo")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise OSError(f"{path} has sha256 {digest}, expected {sha256}: the file is corrupt, reinstall zoo")
    return path


@keras.saving.register_keras_serializable(package="zoo")
class ImagePreprocessing(layers.Layer):
    """Maps [0, 255] RGB pixels to a backbone's expected input.

    Modes: ``"tf"`` -> [-1, 1] (InceptionV3); ``"caffe"`` -> BGR minus the ImageNet mean
    (ResNet50); ``"lite"`` -> ``(x - 127) / 128`` (EfficientNet-Lite); ``"unit"`` -> [0, 1] (tiny_cnn);
    ``"standardize"`` -> per channel ``(x / 255 - mean) / std`` with the ImageNet mean and std (small_cnn, as torchvision's
    ``Normalize`` in pytorch-metric-learning's examples).
    """

    _CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
    _IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
    _IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
    MODES = ("tf", "caffe", "lite", "unit", "standardize")

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"unknown preprocessing mode {mode!r}")
        self.mode = mode

    def call(self, images):
        images = keras.ops.cast(images, self.compute_dtype)
        if self.mode == "tf":
            return images / 127.5 - 1.0
        if self.mode == "lite":
            return (images - 127.0) / 128.0
        if self.mode == "caffe":
            return images[..., ::-1] - keras.ops.convert_to_tensor(self._CAFFE_MEAN_BGR, self.compute_dtype)
        if self.mode == "standardize":
            mean = keras.ops.convert_to_tensor(self._IMAGENET_MEAN_RGB, self.compute_dtype)
            std = keras.ops.convert_to_tensor(self._IMAGENET_STD_RGB, self.compute_dtype)
            return (images / 255.0 - mean) / std
        return images / 255.0

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def _conv_blocks(
    input_tensor: keras.KerasTensor, filters: tuple[int, ...], pooled_blocks: int, **batchnorm: float
) -> keras.KerasTensor:
    """3x3 conv -> BatchNorm(``batchnorm``) -> ReLU blocks, a 2x2 max-pool after each of the first ``pooled_blocks``."""
    x = input_tensor
    for block, width in enumerate(filters):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(**batchnorm)(x)
        x = layers.ReLU()(x)
        if block < pooled_blocks:
            x = layers.MaxPooling2D()(x)
    return x


# CPU backbones built here (no keras.applications constructor): the conv stack of each.
_CPU_BACKBONES: dict[str, Callable[[keras.KerasTensor], keras.KerasTensor]] = {
    # Three blocks (32-64-128), each pooled: fast on CPU, for tests and digits.
    "tiny_cnn": lambda x: _conv_blocks(x, (32, 64, 128), pooled_blocks=3),
    # pytorch-metric-learning's CPU benchmark network: four blocks (32-64-128-256), the first three pooled, with
    # PyTorch's BatchNorm2d settings (momentum 0.1 = Keras 0.9, eps 1e-5). Keras's momentum 0.99 leaves the
    # moving statistics far from the batch ones after a few hundred steps: the triplet baseline on glyphs,
    # 132 steps, gave MAP@R 0.075 with it against PML's 0.133 on the same batches.
    "small_cnn": lambda x: _conv_blocks(x, (32, 64, 128, 256), pooled_blocks=3, momentum=0.9, epsilon=1e-5),
}


def _applications_backbone(
    name: str, spec: BackboneSpec, input_tensor: keras.KerasTensor, weights: str | None
) -> keras.Model:
    """A keras.applications model without its top; turns an offline ImageNet download into a clear error."""
    if weights is None or os.path.isfile(weights):
        return spec.constructor(include_top=False, weights=weights, input_tensor=input_tensor)
    if weights != "imagenet":
        raise FileNotFoundError(f"weights for backbone {name!r} must be 'imagenet', None or an existing file, got {weights!r}")
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(15)  # fail fast offline instead of hanging on the download
    try:
        return spec.constructor(include_top=False, weights="imagenet", input_tensor=input_tensor)
    except Exception as error:  # keras raises Exception subclasses of many kinds for a failed fetch
        raise RuntimeError(
            f"could not load the ImageNet weights of {name!r} (no network?): {error}. "
            f"Download the 'notop' weights file of keras.applications.{spec.constructor.__name__} "
            "on a connected machine and either pass weights='/path/to/file.h5' or put it in "
            "~/.keras/models/; or pass weights=None to train from scratch."
        ) from error
    finally:
        socket.setdefaulttimeout(previous_timeout)


def _efficientnet_lite_backbone(name: str, input_tensor: keras.KerasTensor, weights: str | None) -> keras.Model:
    """EfficientNet-Lite without its top, with ``weights`` ``"imagenet"`` (the pip package), None or a weights file."""
    base = efficientnet_lite.efficientnet_lite(name, input_tensor)
    if weights == "imagenet":
        efficientnet_lite.load_imagenet_weights(base, name)
    elif weights is not None:
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"weights for backbone {name!r} must be 'imagenet', None or an existing file, "
                                    f"got {weights!r}")
        base.load_weights(weights)
    return base


def _freeze_early_blocks(base: keras.Model, train_blocks: int) -> None:
    """Freeze every block of an EfficientNet-Lite but its last ``train_blocks`` (``efficientnet_lite.block_index``)."""
    blocks = sorted({efficientnet_lite.block_index(layer.name) for layer in base.layers} - {None})
    trained = set(blocks[len(blocks) - train_blocks:]) if train_blocks else set()
    for layer in base.layers:
        block = efficientnet_lite.block_index(layer.name)
        if block is not None and block not in trained:
            layer.trainable = False


def resolved_weights(backbone: str, weights: str | None) -> str | None:
    """The weights ``weights`` means for ``backbone``: ``"default"`` is the backbone's own (``BackboneSpec``)."""
    return BACKBONES[backbone].default_weights if weights == "default" else weights


def build_feature_net(backbone: str, input_size: int | None = None, weights: str | None = "default") -> keras.Model:
    """A backbone's pooled features, L2-normalised, without training: images in [0, 255] -> unit vectors.

    With ImageNet weights this is the zero-shot baseline a trained model must beat (``zoo index --backbone``,
    ``zoo evaluate --backbone``). The layer names are the embedding net's, without its ``embedding`` layer.
    """
    net = build_embedding_net(backbone, 1, input_size, weights, name=f"{backbone}_features")
    pooled = net.get_layer("pool").output
    normalised = layers.UnitNormalization(axis=-1, name="l2_normalize", dtype="float32")(pooled)
    return keras.Model(net.inputs, normalised, name=f"{backbone}_features")


def build_embedding_net(
    backbone: str = "tiny_cnn",
    embedding_dim: int = 128,
    input_size: int | None = None,
    weights: str | None = "default",
    freeze_batchnorm: bool = False,
    name: str = "embedding_net",
    train_blocks: int | None = None,
) -> keras.Model:
    """The embedding net F: images (B, S, S, 3) in [0, 255] -> L2-normalised (B, embedding_dim).

    Args:
        backbone: one of ``BACKBONES`` (``inception_v3``, ``resnet50``, ``efficientnet_lite0/1/2``; on CPU
            ``small_cnn``, the four-block network of pytorch-metric-learning's CPU benchmarks, and ``tiny_cnn``).
        embedding_dim: size of the linear embedding layer on top of global average pooling.
        input_size: square image side; the backbone's default when None.
        weights: ``"imagenet"``, ``None`` (random init) or a path to a local no-top weights file;
            ``"default"`` means ImageNet for the keras.applications and EfficientNet-Lite backbones, None for the
            CPU ones,
            which take the zoo's own pretrained weights by name (:data:`PRETRAINED_BACKBONES`:
            ``"glyphs"`` for ``small_cnn``).
        freeze_batchnorm: freeze every BatchNormalization layer of the backbone (statistics and
            scale/offset), the protocol of the papers that fine-tune with small batches.
        train_blocks: EfficientNet-Lite only: the backbone's last ``train_blocks`` blocks (the head convolution
            counts as one) train and the earlier ones are frozen, BatchNorm included; 0 trains only the embedding
            layer on frozen ImageNet features. None: every layer trains.

    Raises:
        ValueError: an unknown backbone name, or ``train_blocks`` for a backbone without EfficientNet's blocks.
        RuntimeError: ImageNet weights requested but not downloadable (offline).
        ImportError: EfficientNet-Lite's ImageNet weights requested but their pip package is not installed.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}")
    spec = BACKBONES[backbone]
    size = input_size or spec.default_size
    weights = resolved_weights(backbone, weights)
    images = keras.Input((size, size, 3), name="images")
    x = ImagePreprocessing(spec.preprocessing, name="preprocessing")(images)
    if train_blocks is not None and (backbone not in efficientnet_lite.VARIANTS or train_blocks < 0):
        raise ValueError(f"train_blocks must be None, or >= 0 for an EfficientNet-Lite backbone; got {train_blocks} "
                         f"for {backbone!r}")
    if backbone in efficientnet_lite.VARIANTS:
        base = _efficientnet_lite_backbone(backbone, x, weights)
        features = base.output
        if train_blocks is not None:
            _freeze_early_blocks(base, train_blocks)
    elif spec.constructor is None:
        weights_file = None if weights is None else pretrained_backbone_file(backbone, weights)
        features = _CPU_BACKBONES[backbone](x)
        if weights_file is not None:
            keras.Model(images, features).load_weights(weights_file)
    else:
        base = _applications_backbone(backbone, spec, x, weights)
        features = base.output
    if freeze_batchnorm:
        for layer in keras.Model(images, features).layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.trainable = False
    pooled = layers.GlobalAveragePooling2D(name="pool")(features)
    # The embedding head runs in float32 under mixed precision: only the backbone computes in float16.
    embedding = layers.Dense(embedding_dim, name="embedding", dtype="float32")(pooled)
    normalised = layers.UnitNormalization(axis=-1, name="l2_normalize", dtype="float32")(embedding)
    return keras.Model(images, normalised, name=name)

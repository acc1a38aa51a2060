"""Export an embedding model for serving: a TensorFlow SavedModel, a TFLite file, or an index's whole folder.

Two signatures, each returning ``{"embeddings": float32 (B, D)}``, the L2-normalised embeddings,
whatever the training method (only the embedding net is exported, not the method's generators,
discriminators or optimizers):

- ``serve``: images already at the model's size, float32 (B, S, S, 3) in [0, 255]; another size is
  refused with an error naming the expected shape (a resized input would give other embeddings).
- ``serve_images``: images of any size (B, H, W, 3) in [0, 255], resized and centre-cropped by
  :func:`zoo.data.preprocess_for_embedding`, as the evaluation does.

An image with a NaN or infinite pixel gets a NaN embedding, never a plausible-looking vector, in both
signatures (``serve_images`` checks the pixels it is given, before resizing and cropping). An empty
batch, or images of no pixels, are refused with an error that says so.

Beyond Python:

- :func:`export_tflite`: the ``serve`` signature as a TFLite flatbuffer (phones, microcontrollers), float32
  or with ``quantize=True`` dynamic-range int8 weights (a quarter of the size); input images at the model's
  size, float32 (B, S, S, 3) in [0, 255], resized and centre-cropped by the caller as ``serve`` expects.
- :func:`export_index`: a folder a server answers match queries from, without the zoo: ``saved_model/``
  (``serve``, ``serve_images`` and ``match``: images of any size and a distance threshold -> the nearest
  gallery image's ``label``, ``file`` and ``distance``, and ``matched``), ``index.json`` (the gallery's files
  and labels, the model, and the calibrated thresholds: ``calibration.cutpoints.<name>.distance``),
  ``embeddings.npy`` and, asked for, ``model.tflite``.

    saved = tf.saved_model.load("exported/saved_model")
    threshold = json.load(open("exported/index.json"))["calibration"]["cutpoints"]["optimal"]["distance"]
    answer = saved.match(images, tf.constant(threshold))      # label "" where matched is False
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import keras
import numpy as np
import tensorflow as tf

from zoo.data import preprocess_for_embedding

if TYPE_CHECKING:  # zoo.index imports the model registry and faiss
    from zoo.index import Index

TFLITE_SIGNATURE = "serve"


def export_saved_model(model: keras.Model, path: str | Path) -> Path:
    """Write ``model``'s embedding net as a SavedModel with the signatures above; returns ``path``.

    Args:
        model: a zoo method model (anything with an ``embedding_net``) or a plain Keras model.
        path: output folder (created; must not exist yet).

    Raises:
        FileExistsError: ``path`` already exists.
    """
    path = _new_path(path)
    _embedding_archive(model)[0].write_out(str(path), verbose=False)
    return path


def _new_path(path: str | Path) -> Path:
    """``path`` as a Path, refused when it exists (an export never overwrites)."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"export folder {path} already exists: choose a new path")
    return path


def _embedding_archive(model: keras.Model) -> tuple[keras.export.ExportArchive, Callable, int]:
    """An ExportArchive of the embedding net with ``serve`` and ``serve_images``, its embedding function
    (images at the model's size -> ``{"embeddings": ...}``) and that size."""
    net = getattr(model, "embedding_net", model)
    size = int(net.input_shape[1])
    expected = f"(batch, {size}, {size}, 3)"

    def embed(images: tf.Tensor, given: tf.Tensor) -> dict[str, tf.Tensor]:
        """The embeddings of ``images``, NaN for each image whose ``given`` pixels are not all finite."""
        embeddings = net(images, training=False)
        finite = tf.reduce_all(tf.math.is_finite(given), axis=[1, 2, 3])
        return {"embeddings": tf.where(finite[:, None], embeddings, tf.constant(float("nan"), embeddings.dtype))}

    def check_not_empty(images: tf.Tensor, signature: str) -> list[tf.Operation]:
        """Refuse an empty batch or images of no pixels."""
        message = f"the signature {signature} needs a batch of at least one image of at least 1 x 1 pixels"
        return [tf.debugging.assert_positive(tf.shape(images)[:3], message=f"{message}, got an empty batch or image")]

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        check = tf.debugging.assert_equal(
            tf.shape(images)[1:], tf.constant([size, size, 3]),
            message=f"images must be {expected} float32 in [0, 255]: resize and centre-crop them with "
            "zoo.data.preprocess_for_embedding, or call the signature 'serve_images'",
        )
        with tf.control_dependencies([check, *check_not_empty(images, "serve")]):
            images = tf.identity(images)
            return embed(images, images)

    def serve_images(images: tf.Tensor) -> dict[str, tf.Tensor]:
        with tf.control_dependencies(check_not_empty(images, "serve_images")):
            images = tf.identity(images)
            return embed(preprocess_for_embedding(images, size), images)

    archive = keras.export.ExportArchive()
    archive.track(net)
    archive.add_endpoint(
        name="serve", fn=serve,
        input_signature=[tf.TensorSpec(shape=(None, size, size, 3), dtype=tf.float32, name="images")],
    )
    archive.add_endpoint(
        name="serve_images", fn=serve_images,
        input_signature=[tf.TensorSpec(shape=(None, None, None, 3), dtype=tf.float32, name="images")],
    )
    return archive, embed, size


def load_saved_model(path: str | Path):
    """Reload an exported SavedModel; call ``.serve(images)["embeddings"]`` on the result."""
    return tf.saved_model.load(str(path))


def tflite_bytes(model: keras.Model, quantize: bool = False) -> bytes:
    """The ``serve`` signature as a TFLite flatbuffer (converted from the SavedModel, variables frozen).

    Args:
        model: as :func:`export_saved_model`.
        quantize: dynamic-range quantisation (``tf.lite.Optimize.DEFAULT``): int8 weights, float activations.
    """
    with tempfile.TemporaryDirectory() as folder:
        saved = export_saved_model(model, Path(folder) / "saved_model")
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=[TFLITE_SIGNATURE])
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()


def export_tflite(model: keras.Model, path: str | Path, quantize: bool = False) -> Path:
    """Write :func:`tflite_bytes` to the file ``path`` (which must not exist); returns ``path``."""
    path = _new_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tflite_bytes(model, quantize))
    return path


def _interpreter(**kwargs):
    """LiteRT's interpreter (``ai-edge-litert``) where installed, else TensorFlow's ``tf.lite.Interpreter``."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    return Interpreter(**kwargs)


def tflite_embeddings(model: str | Path | bytes, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Embeddings (B, D) of images at the model's size (B, S, S, 3) in [0, 255] by a TFLite model (file or bytes)."""
    content = model if isinstance(model, bytes) else Path(model).read_bytes()
    runner = _interpreter(model_content=content).get_signature_runner(TFLITE_SIGNATURE)
    images = np.asarray(images, np.float32)
    return np.concatenate([runner(images=images[start : start + batch_size])["embeddings"]
                           for start in range(0, len(images), batch_size)])


def export_index(index: Index, path: str | Path, tflite: bool = False, quantize: bool = False) -> Path:
    """Write the folder a server answers match queries from without the zoo (module docstring); returns it.

    Args:
        index: a :class:`zoo.index.Index`, calibrated or not (``index.json`` then has no ``calibration``).
        path: output folder (must not exist).
        tflite: also write ``model.tflite`` (:func:`tflite_bytes`); ``quantize`` as there.

    Raises:
        FileExistsError: ``path`` already exists.
    """
    path = _new_path(path)
    archive, embed, size = _embedding_archive(index.model)
    gallery = tf.constant(index.embeddings)
    labels = tf.constant(["" if label is None else label for label in index.labels])
    files = tf.constant(index.files)

    def match(images: tf.Tensor, threshold: tf.Tensor) -> dict[str, tf.Tensor]:
        embeddings = embed(preprocess_for_embedding(images, size), images)["embeddings"]
        squared = (tf.reduce_sum(embeddings**2, axis=1, keepdims=True) - 2 * tf.matmul(embeddings, gallery,
                   transpose_b=True) + tf.reduce_sum(gallery**2, axis=1)[None])
        nearest = tf.argmin(squared, axis=1)
        distance = tf.sqrt(tf.maximum(tf.gather(squared, nearest, batch_dims=1), 0.0))
        matched = distance <= threshold
        return {"label": tf.where(matched, tf.gather(labels, nearest), ""), "file": tf.gather(files, nearest),
                "distance": distance, "matched": matched}

    archive.add_endpoint(name="match", fn=match, input_signature=[
        tf.TensorSpec(shape=(None, None, None, 3), dtype=tf.float32, name="images"),
        tf.TensorSpec(shape=(), dtype=tf.float32, name="threshold"),
    ])
    path.mkdir(parents=True)
    archive.write_out(str(path / "saved_model"), verbose=False)
    meta = {"model": index.model_name, "weights_sha256": index.weights_sha256, "input_size": size,
            "distance": "L2 between unit embeddings", "files": index.files, "labels": index.labels}
    if index.calibration is not None:
        meta["calibration"] = index.calibration
    (path / "index.json").write_text(json.dumps(meta, indent=1) + "\n")
    np.save(path / "embeddings.npy", index.embeddings)
    if tflite:
        (path / "model.tflite").write_bytes(tflite_bytes(index.model, quantize))
    return path

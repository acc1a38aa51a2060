"""Export an embedding model to a TensorFlow SavedModel for serving.

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
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from zoo.data import preprocess_for_embedding


def export_saved_model(model: keras.Model, path: str | Path) -> Path:
    """Write ``model``'s embedding net as a SavedModel with the signatures above; returns ``path``.

    Args:
        model: a zoo method model (anything with an ``embedding_net``) or a plain Keras model.
        path: output folder (created; must not exist yet).

    Raises:
        FileExistsError: ``path`` already exists.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"export folder {path} already exists: choose a new path")
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
    archive.write_out(str(path), verbose=False)
    return path


def load_saved_model(path: str | Path):
    """Reload an exported SavedModel; call ``.serve(images)["embeddings"]`` on the result."""
    return tf.saved_model.load(str(path))

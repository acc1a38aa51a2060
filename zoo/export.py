"""Export an embedding model to a TensorFlow SavedModel for serving.

The SavedModel's ``serve`` signature takes a batch of RGB images as float32 in [0, 255]
(``(None, S, S, 3)``) and returns the L2-normalised embeddings, whatever the training method:
only the embedding net is exported, not the method's generators, discriminators or optimizers.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf


def export_saved_model(model: keras.Model, path: str | Path) -> Path:
    """Write ``model``'s embedding net as a SavedModel with a ``serve`` signature; returns ``path``.

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
    size = net.input_shape[1:]
    archive = keras.export.ExportArchive()
    archive.track(net)
    archive.add_endpoint(
        name="serve",
        fn=lambda images: net(images, training=False),
        input_signature=[tf.TensorSpec(shape=(None, *size), dtype=tf.float32, name="images")],
    )
    archive.write_out(str(path))
    return path


def load_saved_model(path: str | Path):
    """Reload an exported SavedModel; call ``.serve(images)`` on the result."""
    return tf.saved_model.load(str(path))

"""Cross-batch memory (Wang et al., "Cross-Batch Memory for Embedding Learning", CVPR 2020)."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from zoo.losses.base import ComposedLoss, MetricLoss
from zoo.miners import References


@keras.saving.register_keras_serializable(package="zoo")
class CrossBatchMemory(MetricLoss):
    """XBM: any pair or triplet loss computed between the batch and a memory of past embeddings.

    As PML's ``CrossBatchMemory``: each call first enqueues the batch's (stopped) embeddings and
    labels in a ring buffer of ``memory_size`` slots, then computes the wrapped ``loss`` with the
    batch as anchors and the filled memory as references, without a sample's comparison with its own
    slot. Gradients reach the batch's embeddings only. The memory is three non-trainable Keras
    variables updated with ``assign`` (no Python state), so it is saved with the model and the
    same on every replica (each receives the global batch). ``loss`` must take references:
    the pair losses, the triplet and margin losses, with the miners ``"all"`` or ``"multi-similarity"``.
    """

    def __init__(self, loss: str | dict | MetricLoss, embedding_dim: int, memory_size: int = 1024, **kwargs: Any):
        super().__init__(**kwargs)
        from zoo.losses import get

        self.loss = get(loss)
        if not (isinstance(self.loss, ComposedLoss) and self.loss.takes_references):
            raise ValueError(f"CrossBatchMemory wraps a pair or triplet loss, got {type(self.loss).__name__}")
        self.embedding_dim, self.memory_size = int(embedding_dim), int(memory_size)
        self.embedding_memory = self.add_weight(
            shape=(self.memory_size, self.embedding_dim), initializer="zeros", trainable=False,
            name="embedding_memory", dtype="float32", aggregation="only_first_replica",
        )
        self.label_memory = self.add_weight(
            shape=(self.memory_size,), initializer="zeros", trainable=False, name="label_memory", dtype="int32",
            aggregation="only_first_replica",
        )
        self.filled = self.add_weight(  # slots written so far (saturates at memory_size), and the next slot
            shape=(2,), initializer="zeros", trainable=False, name="queue", dtype="int32",
            aggregation="only_first_replica",
        )

    def call(self, embeddings, labels, seed=None, anchor_mask=None):
        if anchor_mask is not None:
            raise ValueError("CrossBatchMemory takes no anchor_mask: its references are the memory, not the batch")
        embeddings = tf.cast(embeddings, tf.float32)
        labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
        batch = tf.shape(embeddings)[0]
        tf.debugging.assert_less_equal(batch, self.memory_size, message="the batch is larger than the memory")
        count, start = self.filled[0], self.filled[1]
        slots = (start + tf.range(batch)) % self.memory_size
        self.embedding_memory.assign(
            tf.tensor_scatter_nd_update(self.embedding_memory, slots[:, None], tf.stop_gradient(embeddings))
        )
        self.label_memory.assign(tf.tensor_scatter_nd_update(self.label_memory, slots[:, None], labels))
        count = tf.minimum(count + batch, self.memory_size)
        self.filled.assign(tf.stack([count, (start + batch) % self.memory_size]))
        filled = tf.range(self.memory_size) < count
        not_self = ~tf.cast(tf.one_hot(slots, self.memory_size), tf.bool)
        memory = References(tf.convert_to_tensor(self.embedding_memory), tf.convert_to_tensor(self.label_memory),
                            filled[None, :] & not_self)
        return self.loss(embeddings, labels, seed, references=memory)

    def get_config(self):
        return {
            **super().get_config(),
            "loss": keras.saving.serialize_keras_object(self.loss),
            "embedding_dim": self.embedding_dim,
            "memory_size": self.memory_size,
        }

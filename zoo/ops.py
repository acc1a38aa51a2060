"""Tensor helpers shared by every method: distances, batch checks, global-batch gathering.

All functions work on float32 (embeddings are cast up first, so losses stay float32 under
``mixed_float16``) and inside ``tf.function`` and ``tf.distribute`` replica contexts.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import tensorflow as tf


def pairwise_squared_distances(x: tf.Tensor, y: tf.Tensor | None = None) -> tf.Tensor:
    """Squared Euclidean distances ``||x_i - y_j||^2`` as an (N, M) float32 matrix (clipped at 0)."""
    x = tf.cast(x, tf.float32)
    y = x if y is None else tf.cast(y, tf.float32)
    x_sq = tf.reduce_sum(tf.square(x), axis=1, keepdims=True)
    y_sq = tf.reduce_sum(tf.square(y), axis=1, keepdims=True)
    d2 = x_sq - 2.0 * tf.matmul(x, y, transpose_b=True) + tf.transpose(y_sq)
    return tf.maximum(d2, 0.0)


def safe_sqrt(squared: tf.Tensor) -> tf.Tensor:
    """``sqrt`` of non-negative ``squared`` distances, 0 at 0 with a finite (zero) gradient there."""
    return tf.where(squared > 0.0, tf.sqrt(tf.maximum(squared, 1e-12)), tf.zeros_like(squared))


def pairwise_distances(x: tf.Tensor, y: tf.Tensor | None = None) -> tf.Tensor:
    """Euclidean distances with a gradient that stays finite at zero distance."""
    return safe_sqrt(pairwise_squared_distances(x, y))


def same_class_masks(labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Boolean (N, N) masks of positive pairs (same label, i != j) and negative pairs."""
    labels = tf.reshape(labels, [-1])
    same = tf.equal(labels[:, None], labels[None, :])
    not_self = tf.logical_not(tf.eye(tf.shape(labels)[0], dtype=tf.bool))
    return tf.logical_and(same, not_self), tf.logical_not(same)


def check_batch(images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Validate a training batch and return this replica's labels as a flat int32 vector.

    Raises ``ValueError`` at trace time for a wrong rank or dtype, and
    ``tf.errors.InvalidArgumentError`` at run time when the global batch (all replicas' labels,
    gathered) holds a single class or no two images of the same class.
    """
    images, labels = tf.convert_to_tensor(images), tf.convert_to_tensor(labels)
    if images.shape.rank != 4:
        raise ValueError(
            f"images must be a rank-4 batch (batch, height, width, channels), got shape {images.shape}"
        )
    if labels.dtype.is_floating or labels.dtype == tf.string or labels.dtype == tf.bool:
        raise ValueError(f"labels must be integer class ids, got dtype {labels.dtype.name}")
    if labels.shape.rank not in (None, 1) and not (labels.shape.rank == 2 and labels.shape[-1] == 1):
        raise ValueError(f"labels must have shape (batch,) or (batch, 1), got {labels.shape}")
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    check_batch_sizes(images, labels)
    (global_labels,) = gather_global_batch(labels)
    num_classes = tf.size(tf.unique(global_labels).y)
    tf.debugging.assert_greater(
        num_classes, 1,
        message="the batch holds a single class: metric learning needs at least 2 classes per batch "
        "(use zoo.data.train_pipeline, which samples P classes x K images)",
    )
    positives, _ = same_class_masks(global_labels)
    tf.debugging.assert_equal(
        tf.reduce_any(positives), True,
        message="the batch has no two images of the same class, so no positive pair: "
        "use images_per_class >= 2 in the P x K sampler",
    )
    return labels


def check_batch_sizes(inputs: tf.Tensor, labels: tf.Tensor, inputs_name: str = "images") -> None:
    """Raise when ``inputs`` and ``labels`` have different batch sizes, naming both sizes.

    ``ValueError`` at trace time when both sizes are static, else ``InvalidArgumentError`` at run time.
    """
    inputs, labels = tf.convert_to_tensor(inputs), tf.convert_to_tensor(labels)
    num_inputs, num_labels = inputs.shape[0], tf.reshape(labels, [-1]).shape[0]
    message = f"{inputs_name} and labels have different batch sizes: give one class label per image"
    if num_inputs is not None and num_labels is not None:
        if num_inputs != num_labels:
            raise ValueError(f"{message} (got {num_inputs} {inputs_name} and {num_labels} labels)")
        return
    tf.debugging.assert_equal(tf.size(labels), tf.shape(inputs)[0], message=message)


def embedding_spread(embeddings: tf.Tensor) -> tf.Tensor:
    """Mean distance of the global batch's embeddings to their mean (no gradient).

    Near 0 when the embedding has collapsed to one point; about 1 for unit embeddings spread over
    the sphere. Computed on the gathered global batch, so it is the same on every replica.
    """
    (embeddings,) = gather_global_batch(tf.stop_gradient(tf.cast(embeddings, tf.float32)))
    centred = embeddings - tf.reduce_mean(embeddings, axis=0, keepdims=True)
    return tf.reduce_mean(tf.norm(centred, axis=-1))


def num_replicas() -> int:
    """Number of replicas of the current ``tf.distribute`` strategy (1 without one)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def gather_triplets(values: tf.Tensor, triplets: tuple[tf.Tensor, tf.Tensor, tf.Tensor]) -> tf.Tensor:
    """The (T, 3, ...) stack of the rows of ``values`` at the (anchor, positive, negative) index triplets."""
    return tf.stack([tf.gather(values, index) for index in triplets], axis=1)


def gather_global_batch(*tensors: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """Concatenate per-replica tensors along axis 0 so that mining sees the whole global batch.

    Every replica receives the same global tensors (replica order), and gradients flow back to
    each replica's own slice. A loss computed on the gathered batch is the same on every replica;
    divide it by :func:`num_replicas` before taking gradients, because the optimizer sums them.
    Outside a strategy (or with one replica) the tensors are returned unchanged.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tensors
    return tuple(_with_dense_gradient(context.all_gather(t, axis=0)) for t in tensors)


@tf.custom_gradient
def _with_dense_gradient(x: tf.Tensor):
    """Identity whose gradient is dense: all_gather's gradient cannot take the IndexedSlices of tf.gather."""
    return tf.identity(x), lambda upstream: tf.convert_to_tensor(upstream)


def sample_columns(logits: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """One column index per row, drawn with probability softmax(logits) per row (stateless)."""
    return tf.cast(tf.reshape(tf.random.stateless_categorical(logits, 1, seed=seed), [-1]), tf.int32)


def local_rows(global_values: tf.Tensor, local_size: tf.Tensor) -> tf.Tensor:
    """This replica's rows of a tensor laid out like :func:`gather_global_batch`'s output."""
    context = tf.distribute.get_replica_context()
    replica = 0 if context is None else context.replica_id_in_sync_group
    start = tf.cast(replica, tf.int32) * local_size
    return global_values[start : start + local_size]


def step_seed(base_seed: int, iteration: tf.Tensor) -> tf.Tensor:
    """A stateless-RNG seed that is identical on every replica at a given optimizer step."""
    return tf.stack([tf.constant(base_seed, tf.int64), tf.cast(iteration, tf.int64)])


def keyword_arguments(factory: Callable[..., Any]) -> set[str]:
    """The keyword arguments a function or class takes, following a class's ``**kwargs`` up its bases until a
    Keras base class (whose ``**kwargs`` are Keras' own)."""
    if not isinstance(factory, type):
        return {p.name for p in inspect.signature(factory).parameters.values() if p.kind is not p.VAR_KEYWORD}
    names: set[str] = set()
    for klass in factory.__mro__:
        if klass.__module__.startswith("keras") or klass is object:
            break
        parameters = inspect.signature(klass.__init__).parameters.values()
        names.update(p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return names - {"self"}

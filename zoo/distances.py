"""Distances between embeddings, as pytorch-metric-learning (PML) composes them into losses and miners.

A distance maps query embeddings (N, D) and reference embeddings (M, D) to an (N, M) matrix. It is
either a distance (smaller is closer: :class:`EuclideanDistance`) or a similarity (larger is closer,
``is_inverted``: :class:`DotProductSimilarity`, :class:`CosineSimilarity`); losses are written once
for both through :meth:`Distance.margin`. As in PML, embeddings are L2-normalised first unless
``normalize_embeddings=False``; on the zoo's unit-norm embeddings that changes no value.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from zoo import ops



class Distance:
    """Base class: subclasses implement :meth:`matrix` and :meth:`rowwise` on (normalised) float32 embeddings."""

    name = "distance"
    is_inverted = False  # True for similarities

    def __init__(self, normalize_embeddings: bool = True):
        self.normalize_embeddings = bool(normalize_embeddings)

    def __call__(self, query: tf.Tensor, reference: tf.Tensor | None = None) -> tf.Tensor:
        """The (N, M) matrix between ``query`` and ``reference`` (``query`` itself when None)."""
        query = self.maybe_normalize(query)
        return self.matrix(query, query if reference is None else self.maybe_normalize(reference))

    def paired(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """Row-wise values between ``x[i]`` and ``y[i]`` (N,): the diagonal of ``self(x, y)``."""
        return self.rowwise(self.maybe_normalize(x), self.maybe_normalize(y))

    def maybe_normalize(self, embeddings: tf.Tensor) -> tf.Tensor:
        embeddings = tf.cast(embeddings, tf.float32)
        return tf.math.l2_normalize(embeddings, axis=-1) if self.normalize_embeddings else embeddings

    def margin(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """How far ``x`` lies beyond ``y`` towards "far": ``x - y`` for a distance, ``y - x`` for a similarity."""
        return y - x if self.is_inverted else x - y

    def matrix(self, query: tf.Tensor, reference: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def rowwise(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {"normalize_embeddings": self.normalize_embeddings}


def squared_differences(query: tf.Tensor, reference: tf.Tensor) -> tf.Tensor:
    """(N, M) ``||x_i - y_j||^2`` summed from the differences, not expanded as ``x^2 - 2 x.y + y^2``.

    The expansion loses the digits of close embeddings (an untrained net maps everything close
    together), and the losses' gradients then differ with the batch layout (1 or 2 replicas).
    Costs an (N, M, D) intermediate; for a very large cross-batch memory prefer ``"cosine"``.
    """
    return tf.reduce_sum(tf.square(query[:, None, :] - reference[None, :, :]), axis=-1)


class EuclideanDistance(Distance):
    """L2 distance ``||x - y||`` (PML's ``LpDistance(p=2)``), with a finite gradient at 0."""

    name = "euclidean"

    def matrix(self, query, reference):
        return ops.safe_sqrt(squared_differences(query, reference))

    def rowwise(self, x, y):
        return tf.sqrt(tf.reduce_sum(tf.square(x - y), axis=-1) + 1e-12)


class SquaredEuclideanDistance(Distance):
    """Squared L2 distance ``||x - y||^2`` (PML's ``LpDistance(power=2)``)."""

    name = "squared-euclidean"

    def matrix(self, query, reference):
        return squared_differences(query, reference)

    def rowwise(self, x, y):
        return tf.reduce_sum(tf.square(x - y), axis=-1)


class DotProductSimilarity(Distance):
    """Dot product ``x . y``, a similarity (PML's ``DotProductSimilarity``, which also normalises by default)."""

    name = "dot"
    is_inverted = True

    def matrix(self, query, reference):
        return tf.matmul(query, reference, transpose_b=True)

    def rowwise(self, x, y):
        return tf.reduce_sum(x * y, axis=-1)


class CosineSimilarity(DotProductSimilarity):
    """Cosine similarity: the dot product of L2-normalised embeddings (PML's ``CosineSimilarity``)."""

    name = "cosine"

    def __init__(self, normalize_embeddings: bool = True):
        if not normalize_embeddings:
            raise ValueError("cosine similarity normalises the embeddings; use 'dot' for raw dot products")
        super().__init__(True)


DISTANCES: dict[str, type[Distance]] = {
    cls.name: cls for cls in (EuclideanDistance, SquaredEuclideanDistance, DotProductSimilarity, CosineSimilarity)
}


def get(identifier: str | dict | Distance | None, default: str | dict | Distance = "euclidean") -> Distance:
    """A distance from its name (``"cosine"``), a ``{"name": ..., "config": ...}`` dict, or an instance.

    ``None`` gives ``default`` (each loss's PML default).
    """
    if identifier is None:
        return get(default)
    if isinstance(identifier, Distance):
        return identifier
    if isinstance(identifier, dict):
        return DISTANCES[identifier["name"]](**identifier.get("config", {}))
    if identifier not in DISTANCES:
        raise ValueError(f"unknown distance {identifier!r}; choose one of {sorted(DISTANCES)}")
    return DISTANCES[identifier]()


def serialize(distance: Distance) -> dict[str, Any]:
    return {"name": distance.name, "config": distance.get_config()}

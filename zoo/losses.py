"""Metric-learning losses: pure functions on tensors plus thin serialisable layers.

A loss layer is called as ``loss(embeddings, labels, seed)`` on the (global) batch and returns a
float32 scalar. It is a ``keras.layers.Layer`` so that losses with weights (the margin loss's
beta, Proxy-NCA's proxies) are tracked and trained by the model that owns them. Embeddings are
cast to float32 first, so losses stay float32 under mixed precision.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from zoo import miners as miners_lib
from zoo import ops


def triplet_loss(
    anchor: tf.Tensor, positive: tf.Tensor, negative: tf.Tensor, margin: float = 0.2, squared: bool = True
) -> tf.Tensor:
    """Mean hinge ``[d(a,p) - d(a,n) + margin]_+`` over triplets (THSG eq. 6; FaceNet eq. 1).

    ``squared=True`` uses squared Euclidean distances, as the THSG and FaceNet papers do.
    Returns 0 for an empty set of triplets.
    """
    anchor, positive, negative = (tf.cast(t, tf.float32) for t in (anchor, positive, negative))
    d_ap = tf.reduce_sum(tf.square(anchor - positive), axis=-1)
    d_an = tf.reduce_sum(tf.square(anchor - negative), axis=-1)
    if not squared:
        d_ap, d_an = tf.sqrt(d_ap + 1e-12), tf.sqrt(d_an + 1e-12)
    return _mean_or_zero(tf.nn.relu(d_ap - d_an + margin))


def _mean_or_zero(values: tf.Tensor) -> tf.Tensor:
    count = tf.cast(tf.size(values), tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(values), count)


class MetricLoss(keras.layers.Layer):
    """Base class of the zoo's losses: ``call(embeddings, labels, seed) -> scalar``."""

    def call(self, embeddings: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor | None = None) -> tf.Tensor:
        raise NotImplementedError


class MinedTripletLoss(MetricLoss):
    """Base of the losses that work on mined (anchor, positive, negative) index triplets."""

    def __init__(self, miner: str | dict | miners_lib.Miner = "semi-hard", margin: float = 0.2, **kwargs: Any):
        super().__init__(**kwargs)
        self.margin = float(margin)
        self.miner = miners_lib.get(miner, margin=self.margin) if isinstance(miner, str) else miners_lib.get(miner)

    def mine(self, embeddings: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor | None) -> miners_lib.Triplets:
        seed = tf.zeros([2], tf.int64) if seed is None else seed
        return self.miner(embeddings, labels, seed)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "miner": miners_lib.serialize(self.miner), "margin": self.margin}


@keras.saving.register_keras_serializable(package="zoo")
class TripletLoss(MinedTripletLoss):
    """Triplet loss on mined triplets, margin 0.2 on squared distances (THSG eq. 6, tau = 0.2)."""

    def __init__(self, miner="semi-hard", margin: float = 0.2, squared: bool = True, **kwargs):
        super().__init__(miner=miner, margin=margin, **kwargs)
        self.squared = bool(squared)

    def call(self, embeddings, labels, seed=None):
        embeddings = tf.cast(embeddings, tf.float32)
        a, p, n = self.mine(embeddings, labels, seed)
        return triplet_loss(
            tf.gather(embeddings, a), tf.gather(embeddings, p), tf.gather(embeddings, n), self.margin, self.squared
        )

    def get_config(self):
        return {**super().get_config(), "squared": self.squared}


@keras.saving.register_keras_serializable(package="zoo")
class ContrastiveLoss(MetricLoss):
    """Contrastive loss (Hadsell et al. 2006) on all pairs of the batch, Euclidean distance d.

    Positive pairs cost ``[d - pos_margin]_+^2``, negative pairs ``[neg_margin - d]_+^2``
    (pytorch-metric-learning's parametrisation; Hadsell's is pos_margin = 0). The loss is the
    mean over positive pairs plus the mean over negative pairs, so that the many negatives of a
    batch do not drown the few positives.
    """

    def __init__(self, pos_margin: float = 0.0, neg_margin: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.pos_margin, self.neg_margin = float(pos_margin), float(neg_margin)

    def call(self, embeddings, labels, seed=None):
        positive_mask, negative_mask = ops.same_class_masks(labels)
        d = ops.pairwise_distances(embeddings)
        pos = tf.boolean_mask(tf.square(tf.nn.relu(d - self.pos_margin)), positive_mask)
        neg = tf.boolean_mask(tf.square(tf.nn.relu(self.neg_margin - d)), negative_mask)
        return _mean_or_zero(pos) + _mean_or_zero(neg)

    def get_config(self):
        return {**super().get_config(), "pos_margin": self.pos_margin, "neg_margin": self.neg_margin}


@keras.saving.register_keras_serializable(package="zoo")
class MarginLoss(MinedTripletLoss):
    """Margin loss (Wu et al. 2017, eq. 4): ``[alpha + y (D_ij - beta)]_+``, y = +1 / -1.

    Pairs are the mined (a, p) and (a, n) pairs, with distance-weighted sampling by default as in
    the paper. beta is one trainable scalar (the paper's beta^(0); its class-specific betas are
    not implemented), initialised at 1.2, alpha = 0.2. The loss is averaged over the pairs with
    a non-zero loss, as in the paper's code.
    """

    def __init__(self, miner="distance-weighted", alpha: float = 0.2, beta: float = 1.2, **kwargs):
        kwargs.pop("margin", None)
        super().__init__(miner=miner, margin=alpha, **kwargs)
        self.alpha, self.initial_beta = float(alpha), float(beta)
        self.beta = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.initial_beta), name="beta", dtype="float32"
        )

    def call(self, embeddings, labels, seed=None):
        embeddings = tf.cast(embeddings, tf.float32)
        a, p, n = self.mine(embeddings, labels, seed)
        distance = lambda i, j: tf.sqrt(
            tf.reduce_sum(tf.square(tf.gather(embeddings, i) - tf.gather(embeddings, j)), -1) + 1e-8
        )
        pos_loss = tf.nn.relu(self.alpha + distance(a, p) - self.beta)
        neg_loss = tf.nn.relu(self.alpha - (distance(a, n) - self.beta))
        losses = tf.concat([pos_loss, neg_loss], axis=0)
        active = tf.reduce_sum(tf.cast(losses > 0.0, tf.float32))
        return tf.math.divide_no_nan(tf.reduce_sum(losses), active)

    def get_config(self):
        config = super().get_config()
        config.pop("margin")
        return {**config, "alpha": self.alpha, "beta": self.initial_beta}


LOSSES: dict[str, type[MetricLoss]] = {
    "triplet": TripletLoss,
    "contrastive": ContrastiveLoss,
    "margin": MarginLoss,
}


def get(identifier: str | dict | MetricLoss, **kwargs: Any) -> MetricLoss:
    """A loss layer from its name (``"triplet"``), a Keras serialisation dict, or an instance."""
    if isinstance(identifier, MetricLoss):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    if identifier not in LOSSES:
        raise ValueError(f"unknown loss {identifier!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[identifier](**kwargs)

"""Losses with one trainable weight vector (proxy, class centre, classifier row) per training class.

The weights are the layer's ``proxies``, of shape (num_classes * per_class, embedding_dim),
created at construction when ``embedding_dim`` is given, else on the first call. The model that
owns the loss trains them (:class:`~zoo.methods.MetricModel` tracks it; for a plain Keras model
see :meth:`zoo.losses.KerasMetricLoss.attach`). Labels must be the training class ids
``0..num_classes-1``. PML stores some of these weights transposed, (D, C): the same numbers.
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

from zoo.losses.base import ComposedLoss, masked_logsumexp
from zoo.reducers import Terms


class ProxyLoss(ComposedLoss):
    """Base of the proxy losses: builds ``proxies``; subclasses write :meth:`proxy_terms`."""

    needs_num_classes = True
    takes_anchor_mask = False
    initializer: ClassVar[str] = "random_normal"

    def __init__(self, num_classes: int, embedding_dim: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if int(num_classes) < 2:
            raise ValueError(
                f"{type(self).__name__} needs num_classes >= 2 (one proxy per training class), got {num_classes}"
            )
        self.num_classes = int(num_classes)
        self.embedding_dim = None if embedding_dim is None else int(embedding_dim)
        if self.embedding_dim is not None:
            self.build((None, self.embedding_dim))

    def build(self, embeddings_shape):
        self.embedding_dim = int(embeddings_shape[-1])
        self.proxies = self.add_weight(
            shape=(self.num_classes * self.num_weights_per_class(), self.embedding_dim),
            initializer=self.initializer,
            name="proxies",
            dtype="float32",
        )
        super().build(embeddings_shape)

    def num_weights_per_class(self) -> int:
        """Weight vectors per class (SoftTriple: its centres)."""
        return 1

    def compute(self, embeddings, labels, seed, anchor_mask):
        return self.proxy_terms(self.distance(embeddings, self.proxies), labels)

    def proxy_terms(self, matrix: tf.Tensor, labels: tf.Tensor) -> list[Terms]:
        """Terms from the (N, C * per_class) distances (or similarities) of the samples to the proxies."""
        raise NotImplementedError

    def own_class(self, labels: tf.Tensor) -> tf.Tensor:
        """(N, C) bool: each sample's own class."""
        return tf.one_hot(labels, self.num_classes, on_value=True, off_value=False)

    def logits(self, matrix: tf.Tensor) -> tf.Tensor:
        return matrix if self.distance.is_inverted else -matrix

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "embedding_dim": self.embedding_dim}


def _cross_entropy(logits: tf.Tensor, labels: tf.Tensor) -> list[Terms]:
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return [Terms(losses, tf.ones_like(labels, tf.bool))]


@keras.saving.register_keras_serializable(package="zoo")
class ProxyNCALoss(ProxyLoss):
    """Proxy-NCA (Movshovitz-Attias et al., "No Fuss Distance Metric Learning using Proxies", ICCV 2017,
    eq. 4), PML's ``ProxyNCALoss``: ``-log softmax(-softmax_scale d(x, p_c))_y`` over all proxies
    (the positive included in the denominator, as PML and the paper's later implementations; the
    paper's eq. 4 leaves it out), squared Euclidean distance of normalised embeddings and proxies,
    mean over the batch.
    """

    default_distance = "squared-euclidean"

    def __init__(self, num_classes: int, embedding_dim: int | None = None, softmax_scale: float = 1.0, **kwargs):
        super().__init__(num_classes, embedding_dim, **kwargs)
        self.softmax_scale = float(softmax_scale)

    def proxy_terms(self, matrix, labels):
        return _cross_entropy(self.softmax_scale * self.logits(matrix), labels)

    def get_config(self):
        return {**super().get_config(), "softmax_scale": self.softmax_scale}


@keras.saving.register_keras_serializable(package="zoo")
class ProxyAnchorLoss(ProxyLoss):
    """Proxy anchor loss (Kim et al., "Proxy Anchor Loss for Deep Metric Learning", CVPR 2020, eq. 4),
    PML's ``ProxyAnchorLoss``, cosine similarity s:

    ``1/|P+| sum_{p in P+} log(1 + sum_{x in X_p+} exp(-alpha (s(x,p) - margin)))
    + 1/|P| sum_p log(1 + sum_{x in X_p-} exp(alpha (s(x,p) + margin)))``, P+ the proxies with a
    positive in the batch. Proxies start He-normal, as in PML.
    """

    default_distance = "cosine"
    default_reduction = "divisor"
    initializer = "he_normal"

    def __init__(self, num_classes: int, embedding_dim: int | None = None, margin: float = 0.1, alpha: float = 32.0,
                 **kwargs):
        super().__init__(num_classes, embedding_dim, **kwargs)
        self.margin, self.alpha = float(margin), float(alpha)

    def proxy_terms(self, matrix, labels):
        own = self.own_class(labels)
        pos = masked_logsumexp(self.alpha * self.distance.margin(matrix, self.margin), own, axis=0, add_one=True)
        neg = masked_logsumexp(self.alpha * self.distance.margin(-self.margin, matrix), ~own, axis=0, add_one=True)
        every = tf.ones([self.num_classes], tf.bool)
        with_positives = tf.reduce_sum(tf.cast(tf.reduce_any(own, axis=0), tf.float32))
        return [Terms(pos, every, with_positives), Terms(neg, every, tf.constant(float(self.num_classes)))]

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="zoo")
class NormalizedSoftmaxLoss(ProxyLoss):
    """Normalised softmax (Zhai & Wu, "Classification is a Strong Baseline for Deep Metric Learning",
    BMVC 2019, eq. 2), PML's ``NormalizedSoftmaxLoss``: cross-entropy of ``cos(x, w_c) / temperature``
    with normalised class weights w, mean over the batch.
    """

    default_distance = "dot"

    def __init__(self, num_classes: int, embedding_dim: int | None = None, temperature: float = 0.05, **kwargs):
        super().__init__(num_classes, embedding_dim, **kwargs)
        self.temperature = float(temperature)

    def compute(self, embeddings, labels, seed, anchor_mask):
        weights = tf.math.l2_normalize(self.proxies, axis=1)
        return self.proxy_terms(self.distance(embeddings, weights), labels)

    def proxy_terms(self, matrix, labels):
        return _cross_entropy(self.logits(matrix) / self.temperature, labels)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


class MarginSoftmaxLoss(ProxyLoss):
    """Base of the additive-margin softmax losses: cross-entropy of ``scale * cos`` with the target
    class's cosine changed by :meth:`target_logit` (cosine similarity to the class weights)."""

    default_distance = "cosine"

    def __init__(self, num_classes: int, embedding_dim: int | None = None, margin: float = 0.35,
                 scale: float = 64.0, **kwargs):
        super().__init__(num_classes, embedding_dim, **kwargs)
        if not self.distance.is_inverted or not self.distance.normalize_embeddings:
            raise ValueError(f"{type(self).__name__} is defined on the cosine similarity")
        self.margin, self.scale = float(margin), float(scale)

    def proxy_terms(self, matrix, labels):
        own = self.own_class(labels)
        logits = tf.where(own, self.target_logit(matrix), matrix)
        return _cross_entropy(self.scale * logits, labels)

    def target_logit(self, cosine: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "scale": self.scale}


@keras.saving.register_keras_serializable(package="zoo")
class CosFaceLoss(MarginSoftmaxLoss):
    """CosFace / large margin cosine loss (Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face
    Recognition", CVPR 2018, eq. 4), PML's ``CosFaceLoss``: target logit ``scale (cos - margin)``,
    margin 0.35, scale 64."""

    def target_logit(self, cosine):
        return cosine - self.margin


@keras.saving.register_keras_serializable(package="zoo")
class ArcFaceLoss(MarginSoftmaxLoss):
    """ArcFace / additive angular margin loss (Deng et al., "ArcFace: Additive Angular Margin Loss for
    Deep Face Recognition", CVPR 2019, eq. 3), PML's ``ArcFaceLoss``: target logit ``scale cos(theta +
    m)``, m = ``margin`` in degrees (28.6, i.e. 0.5 rad), scale 64; past ``theta > pi - m`` it is
    ``cos(theta) - m sin(m)``, which keeps it decreasing in theta.
    """

    def __init__(self, num_classes: int, embedding_dim: int | None = None, margin: float = 28.6,
                 scale: float = 64.0, **kwargs):
        super().__init__(num_classes, embedding_dim, margin=margin, scale=scale, **kwargs)

    def target_logit(self, cosine):
        m = float(np.radians(self.margin))
        theta = tf.acos(tf.clip_by_value(cosine, -1.0, 1.0))
        return tf.where(theta <= np.pi - m, tf.cos(theta + m), tf.cos(theta) - m * np.sin(m))


@keras.saving.register_keras_serializable(package="zoo")
class SoftTripleLoss(ProxyLoss):
    """SoftTriple loss (Qian et al., "SoftTriple Loss: Deep Metric Learning Without Triplet Sampling",
    ICCV 2019, eq. 8-10), PML's ``SoftTripleLoss``: K = ``centers_per_class`` centres per class; the
    similarity to a class is the softmax(s / gamma)-weighted mean of its centres' similarities, and
    the loss the cross-entropy of ``la (S - margin 1_y)``, mean over the batch. (The paper's
    regulariser merging centres is not applied, as in PML's default.)
    """

    default_distance = "cosine"
    initializer = "glorot_uniform"

    def __init__(self, num_classes: int, embedding_dim: int | None = None, centers_per_class: int = 10,
                 la: float = 20.0, gamma: float = 0.1, margin: float = 0.01, **kwargs):
        self.centers_per_class = int(centers_per_class)
        super().__init__(num_classes, embedding_dim, **kwargs)
        if not self.distance.is_inverted:
            raise ValueError("SoftTriple is defined on a similarity (cosine)")
        self.la, self.gamma, self.margin = float(la), float(gamma), float(margin)

    def num_weights_per_class(self) -> int:
        return self.centers_per_class

    def proxy_terms(self, matrix, labels):
        centres = tf.reshape(matrix, [-1, self.num_classes, self.centers_per_class])
        weights = tf.nn.softmax(centres / self.gamma, axis=2)
        similarity = tf.reduce_sum(weights * centres, axis=2)
        margins = tf.where(self.own_class(labels), self.margin, 0.0)
        return _cross_entropy(self.la * (similarity - margins), labels)

    def get_config(self):
        return {**super().get_config(), "centers_per_class": self.centers_per_class, "la": self.la,
                "gamma": self.gamma, "margin": self.margin}

"""Metric-learning losses: pure functions on tensors plus thin serialisable layers.

A loss layer is called as ``loss(embeddings, labels, seed)`` on the (global) batch and returns a
float32 scalar. It is a ``keras.layers.Layer`` so that losses with weights (the margin loss's
beta, Proxy-NCA's proxies) are tracked and trained by the model that owns them. Embeddings are
cast to float32 first, so losses stay float32 under mixed precision.

The pairwise losses also take an optional boolean ``anchor_mask`` (N,): only the masked samples
act as anchors, and a pair of two unmasked samples is ignored. This is the batch constraint of
PROFS (Can et al., eq. 4.6-4.7: every pair involves a class representative); without a mask every
sample is an anchor.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
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


def softmax_cross_entropy(logits: tf.Tensor, labels: tf.Tensor | int) -> tf.Tensor:
    """Mean softmax cross-entropy of (N, C) ``logits`` (float32) under integer ``labels``: (N,) or one for all."""
    labels = tf.broadcast_to(tf.reshape(tf.cast(labels, tf.int32), [-1]), tf.shape(logits)[:-1])
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=tf.cast(logits, tf.float32))
    )


def _mean_or_zero(values: tf.Tensor) -> tf.Tensor:
    count = tf.cast(tf.size(values), tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(values), count)


def _pair_masks(labels: tf.Tensor, anchor_mask: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor]:
    """Positive and negative pair masks, keeping only pairs with at least one anchor when masked."""
    positives, negatives = ops.same_class_masks(labels)
    if anchor_mask is None:
        return positives, negatives
    anchor_mask = tf.reshape(tf.cast(anchor_mask, tf.bool), [-1])
    involves_anchor = tf.logical_or(anchor_mask[:, None], anchor_mask[None, :])
    return tf.logical_and(positives, involves_anchor), tf.logical_and(negatives, involves_anchor)


class MetricLoss(keras.layers.Layer):
    """Base class of the zoo's losses: ``call(embeddings, labels, seed, anchor_mask=None) -> scalar``."""

    def call(
        self,
        embeddings: tf.Tensor,
        labels: tf.Tensor,
        seed: tf.Tensor | None = None,
        anchor_mask: tf.Tensor | None = None,
    ) -> tf.Tensor:
        raise NotImplementedError


class MinedTripletLoss(MetricLoss):
    """Base of the losses that work on mined (anchor, positive, negative) index triplets."""

    def __init__(self, miner: str | dict | miners_lib.Miner = "semi-hard", margin: float = 0.2, **kwargs: Any):
        super().__init__(**kwargs)
        self.margin = float(margin)
        self.miner = miners_lib.get(miner, margin=self.margin) if isinstance(miner, str) else miners_lib.get(miner)

    def mine(
        self, embeddings: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor | None, anchor_mask: tf.Tensor | None = None
    ) -> miners_lib.Triplets:
        """The miner's triplets, restricted to those whose anchor is in ``anchor_mask`` when given."""
        seed = tf.zeros([2], tf.int64) if seed is None else seed
        anchors, positives, negatives = self.miner(embeddings, labels, seed)
        if anchor_mask is None:
            return anchors, positives, negatives
        keep = tf.gather(tf.reshape(tf.cast(anchor_mask, tf.bool), [-1]), anchors)
        return tuple(tf.boolean_mask(t, keep) for t in (anchors, positives, negatives))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "miner": miners_lib.serialize(self.miner), "margin": self.margin}


@keras.saving.register_keras_serializable(package="zoo")
class TripletLoss(MinedTripletLoss):
    """Triplet loss on mined triplets, margin 0.2 on squared distances (THSG eq. 6, tau = 0.2)."""

    def __init__(self, miner="semi-hard", margin: float = 0.2, squared: bool = True, **kwargs):
        super().__init__(miner=miner, margin=margin, **kwargs)
        self.squared = bool(squared)

    def call(self, embeddings, labels, seed=None, anchor_mask=None):
        embeddings = tf.cast(embeddings, tf.float32)
        a, p, n = self.mine(embeddings, labels, seed, anchor_mask)
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

    def call(self, embeddings, labels, seed=None, anchor_mask=None):
        positive_mask, negative_mask = _pair_masks(labels, anchor_mask)
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

    def call(self, embeddings, labels, seed=None, anchor_mask=None):
        embeddings = tf.cast(embeddings, tf.float32)
        a, p, n = self.mine(embeddings, labels, seed, anchor_mask)
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


# ---- lifted structured loss (Song et al. 2016) ------------------------------------------------
_NO_TERM = -1e9  # logit of an absent term of a log-sum-exp: exp(-1e9) == 0 in float32, gradients stay finite


def lifted_structured_loss(
    distances: tf.Tensor, positive_mask: tf.Tensor, negative_mask: tf.Tensor, margin: float = 1.0
) -> tf.Tensor:
    """Smooth lifted structured loss (Song et al. 2016, eq. 4).

    ``J_ij = log(sum_{(i,k) in N} exp(margin - D_ik) + sum_{(j,l) in N} exp(margin - D_jl)) + D_ij``
    for each positive pair (i, j), and the loss ``1 / (2|P|) sum_{(i,j) in P} [J_ij]_+^2`` over the
    unordered positive pairs P (here: half the mean over ordered pairs, which is the same number).

    Args:
        distances: (N, N) Euclidean distances D.
        positive_mask: (N, N) bool, the positive pairs (symmetric, no diagonal).
        negative_mask: (N, N) bool, the negative pairs that may enter the log-sum-exp (symmetric).
        margin: alpha of the paper (1.0).

    Returns:
        float32 scalar; 0 without positive pairs.
    """
    distances = tf.cast(distances, tf.float32)
    negative_terms = tf.reduce_logsumexp(tf.where(negative_mask, margin - distances, _NO_TERM), axis=1)
    j = tf.experimental.numpy.logaddexp(negative_terms[:, None], negative_terms[None, :]) + distances
    return 0.5 * _mean_or_zero(tf.boolean_mask(tf.square(tf.nn.relu(j)), positive_mask))


@keras.saving.register_keras_serializable(package="zoo")
class LiftedStructuredLoss(MetricLoss):
    """Lifted structured loss (Song et al. 2016, eq. 4) on all pairs of the batch, margin alpha = 1.

    Distances are Euclidean. With an ``anchor_mask`` (PROFS, Can et al. Sec. 5.3) the pairwise
    terms between two non-anchors are ignored, in the positive pairs and in the log-sum-exp alike.
    """

    def __init__(self, margin: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.margin = float(margin)

    def call(self, embeddings, labels, seed=None, anchor_mask=None):
        positive_mask, negative_mask = _pair_masks(labels, anchor_mask)
        return lifted_structured_loss(ops.pairwise_distances(embeddings), positive_mask, negative_mask, self.margin)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


# ---- N-pair (Sohn 2016) and angular (Wang et al. 2017) losses ---------------------------------
def anchor_positive_pairs(
    labels: tf.Tensor, anchor_mask: tf.Tensor | None = None
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The (anchor, positive) pairs of an N-pair batch, and which samples are anchors.

    Anchors are the ``anchor_mask`` samples or, without a mask, the first sample of each class;
    every other sample of an anchor's class is one of its positives.

    Returns:
        int32 anchor and positive index vectors of equal length, and the (N,) bool anchor mask.
    """
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    if anchor_mask is None:
        _, class_index = tf.unique(labels)
        first = tf.math.unsorted_segment_min(tf.range(tf.size(labels)), class_index, tf.reduce_max(class_index) + 1)
        anchor_mask = tf.reduce_any(tf.equal(tf.range(tf.size(labels))[:, None], first[None, :]), axis=1)
    anchor_mask = tf.reshape(tf.cast(anchor_mask, tf.bool), [-1])
    positives, _ = ops.same_class_masks(labels)
    pairs = tf.cast(tf.where(positives & anchor_mask[:, None] & ~anchor_mask[None, :]), tf.int32)
    return pairs[:, 0], pairs[:, 1], anchor_mask


def _log1p_sum_exp(logits: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Row-wise ``log(1 + sum_j exp(logits_ij))`` over the masked entries (0 for an empty row)."""
    logits = tf.where(mask, logits, _NO_TERM)
    return tf.reduce_logsumexp(tf.concat([tf.zeros_like(logits[:, :1]), logits], axis=1), axis=1)


def npair_loss(
    embeddings: tf.Tensor, anchors: tf.Tensor, positives: tf.Tensor, negative_mask: tf.Tensor
) -> tf.Tensor:
    """Multi-class N-pair loss (Sohn 2016, Sec. 3.2, N-pair-mc), mean over the (anchor, positive) pairs.

    ``log(1 + sum_n exp(f_a . f_n - f_a . f_p))``: a softmax cross-entropy that classifies the
    anchor's positive among the negatives of the batch.

    Args:
        embeddings: (N, D) embeddings f.
        anchors, positives: int32 (T,) indices of the pairs.
        negative_mask: (T, N) bool, the negatives n of each pair.
    """
    embeddings = tf.cast(embeddings, tf.float32)
    f_a, f_p = tf.gather(embeddings, anchors), tf.gather(embeddings, positives)
    logits = tf.matmul(f_a, embeddings, transpose_b=True) - tf.reduce_sum(f_a * f_p, axis=1, keepdims=True)
    return _mean_or_zero(_log1p_sum_exp(logits, negative_mask))


def angular_loss(
    embeddings: tf.Tensor, anchors: tf.Tensor, positives: tf.Tensor, negative_mask: tf.Tensor, alpha: float = 45.0
) -> tf.Tensor:
    """Angular loss in its N-pair form (Wang et al. 2017, Sec. 3.3), mean over the (anchor, positive) pairs.

    ``log(1 + sum_n exp(f_apn))`` with
    ``f_apn = 4 tan^2(alpha) (x_a + x_p)^T x_n - 2 (1 + tan^2(alpha)) x_a^T x_p``: the smooth
    version of ``[||x_a - x_p||^2 - 4 tan^2(alpha) ||x_n - x_c||^2]_+``, x_c = (x_a + x_p) / 2,
    which bounds the angle at the negative by alpha (degrees), for unit-norm embeddings.

    Args:
        embeddings: (N, D) L2-normalised embeddings x.
        anchors, positives: int32 (T,) indices of the pairs.
        negative_mask: (T, N) bool, the negatives n of each pair.
        alpha: the angle bound, in degrees.
    """
    embeddings = tf.cast(embeddings, tf.float32)
    tan_sq = float(np.tan(np.radians(alpha)) ** 2)
    x_a, x_p = tf.gather(embeddings, anchors), tf.gather(embeddings, positives)
    logits = 4.0 * tan_sq * tf.matmul(x_a + x_p, embeddings, transpose_b=True) - 2.0 * (1.0 + tan_sq) * tf.reduce_sum(
        x_a * x_p, axis=1, keepdims=True
    )
    return _mean_or_zero(_log1p_sum_exp(logits, negative_mask))


def _other_classes(labels: tf.Tensor, anchors: tf.Tensor, candidates: tf.Tensor) -> tf.Tensor:
    """(T, N) bool: the ``candidates`` whose class differs from each anchor's."""
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    return tf.not_equal(tf.gather(labels, anchors)[:, None], labels[None, :]) & candidates[None, :]


@keras.saving.register_keras_serializable(package="zoo")
class NPairLoss(MetricLoss):
    """Multi-class N-pair loss (Sohn 2016, Sec. 3.2) on P x K batches.

    Our reading for batches with K >= 2 images per class: the anchors are the first image of each
    class (the representatives under PROFS' ``anchor_mask``); every other image of the class is a
    positive, and the negatives of a pair are the non-anchor images of the other classes. With
    K = 2 this is exactly Sohn's N-pair-mc batch (N anchors, N positives; the negatives of an
    anchor are the other classes' positives). Sohn also penalises the embeddings' L2 norm: on the
    zoo's unit-norm embeddings that term is a constant, so it is left out.
    """

    def call(self, embeddings, labels, seed=None, anchor_mask=None):
        anchors, positives, anchor_mask = anchor_positive_pairs(labels, anchor_mask)
        return npair_loss(embeddings, anchors, positives, _other_classes(labels, anchors, ~anchor_mask))


@keras.saving.register_keras_serializable(package="zoo")
class AngularLoss(MetricLoss):
    """N-pair & angular loss (Wang et al. 2017, Sec. 3.3): ``npair_weight l_npair + angular_weight l_ang``.

    The paper's best objective adds lambda = 2 times the angular loss to the N-pair loss (the
    defaults); ``npair_weight=0, angular_weight=1`` is the angular loss alone. Pairs come from the
    batch as in :class:`NPairLoss`; the negatives of the angular term are all samples of other
    classes (``x_n in B, y_n != y_a``), anchors included. ``alpha`` is in degrees (45).
    """

    def __init__(self, alpha: float = 45.0, npair_weight: float = 1.0, angular_weight: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < alpha < 90.0:
            raise ValueError(f"alpha is an angle in degrees in (0, 90), got {alpha}")
        self.alpha, self.npair_weight, self.angular_weight = float(alpha), float(npair_weight), float(angular_weight)

    def call(self, embeddings, labels, seed=None, anchor_mask=None):
        anchors, positives, anchor_mask = anchor_positive_pairs(labels, anchor_mask)
        everyone = tf.ones_like(anchor_mask)
        l_ang = angular_loss(embeddings, anchors, positives, _other_classes(labels, anchors, everyone), self.alpha)
        l_npair = npair_loss(embeddings, anchors, positives, _other_classes(labels, anchors, ~anchor_mask))
        return self.npair_weight * l_npair + self.angular_weight * l_ang

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "npair_weight": self.npair_weight,
            "angular_weight": self.angular_weight,
        }


# ---- Proxy-NCA (Movshovitz-Attias et al. 2017) ------------------------------------------------
def proxy_nca_loss(embeddings: tf.Tensor, labels: tf.Tensor, proxies: tf.Tensor) -> tf.Tensor:
    """Proxy-NCA loss (Movshovitz-Attias et al. 2017, Sec. 4), mean over the batch.

    ``-log(exp(-d(x, p(y))) / sum_{z != y} exp(-d(x, p(z))))`` with d the squared Euclidean
    distance between the L2-normalised embedding and proxies; the positive proxy is not in the
    denominator, so the loss can be negative.

    Args:
        embeddings: (N, D) embeddings x.
        labels: (N,) class ids in ``[0, C)``.
        proxies: (C, D) one proxy per class.
    """
    x = tf.math.l2_normalize(tf.cast(embeddings, tf.float32), axis=1)
    p = tf.math.l2_normalize(tf.cast(proxies, tf.float32), axis=1)
    d = ops.pairwise_squared_distances(x, p)
    is_own = tf.one_hot(tf.reshape(tf.cast(labels, tf.int32), [-1]), tf.shape(p)[0], on_value=True, off_value=False)
    d_own = tf.reduce_sum(tf.where(is_own, d, 0.0), axis=1)
    return tf.reduce_mean(d_own + tf.reduce_logsumexp(tf.where(is_own, _NO_TERM, -d), axis=1))


@keras.saving.register_keras_serializable(package="zoo")
class ProxyNCALoss(MetricLoss):
    """Proxy-NCA (Movshovitz-Attias et al. 2017): one trainable proxy per training class.

    The proxies are this layer's weights (shape (num_classes, embedding dim), created on the first
    call from the embeddings' size, or at construction when ``embedding_dim`` is given), so the
    model that owns the loss trains them with its optimizer. Proxies and embeddings are
    L2-normalised in the loss (the paper's unit-norm setting); no temperature is applied. Labels
    must be the training class ids ``0..num_classes-1``.
    """

    def __init__(self, num_classes: int, embedding_dim: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) < 2:
            raise ValueError(f"Proxy-NCA needs num_classes >= 2 (one proxy per training class), got {num_classes}")
        self.num_classes = int(num_classes)
        self.embedding_dim = None if embedding_dim is None else int(embedding_dim)
        if self.embedding_dim is not None:
            self.build((None, self.embedding_dim))

    def build(self, embeddings_shape):
        self.embedding_dim = int(embeddings_shape[-1])
        self.proxies = self.add_weight(
            shape=(self.num_classes, self.embedding_dim),
            initializer=keras.initializers.RandomNormal(stddev=1.0),
            name="proxies",
            dtype="float32",
        )
        super().build(embeddings_shape)

    def call(self, embeddings, labels, seed=None, anchor_mask=None):
        if anchor_mask is not None:
            raise ValueError("Proxy-NCA compares samples with proxies, not with each other: it takes no anchor_mask")
        return proxy_nca_loss(embeddings, labels, self.proxies)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "embedding_dim": self.embedding_dim}


@keras.saving.register_keras_serializable(package="zoo")
class KerasMetricLoss(keras.losses.Loss):
    """Any :class:`MetricLoss` as a plain ``keras.losses.Loss``: ``model.compile(loss=KerasMetricLoss("triplet"))``.

    For any Keras model whose output is the embeddings, trained by the standard ``fit`` with
    ``y = labels``. Mining sees one replica's batch and random choices come from a seeded
    generator: on one device it is the same loss; under ``tf.distribute`` use :class:`MetricModel`,
    which mines over the global batch. Losses with their own weights (Proxy-NCA's proxies, the
    margin loss's beta) need :class:`MetricModel`, which trains them: a Keras loss has no optimizer.
    """

    def __init__(self, metric_loss: str | dict | MetricLoss, seed: int = 0, name: str | None = None, **kwargs):
        self.metric_loss = get(metric_loss)
        super().__init__(name=name or self.metric_loss.name, **kwargs)
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def call(self, y_true, y_pred):
        seed = tf.cast(self.seed_generator.next(), tf.int64)
        ops.check_batch_sizes(y_pred, y_true, inputs_name="embeddings")
        loss = self.metric_loss(y_pred, tf.reshape(y_true, [-1]), seed)
        if self.metric_loss.trainable_weights:
            raise ValueError(
                f"{type(self.metric_loss).__name__} has trainable weights, which a Keras loss cannot train: "
                "use zoo.methods.MetricModel(embedding_net, loss=...) instead"
            )
        return loss

    def get_config(self):
        return {
            **super().get_config(),
            "metric_loss": keras.saving.serialize_keras_object(self.metric_loss),
            "seed": self.seed,
        }


LOSSES: dict[str, type[MetricLoss]] = {
    "triplet": TripletLoss,
    "contrastive": ContrastiveLoss,
    "margin": MarginLoss,
    "lifted": LiftedStructuredLoss,
    "npair": NPairLoss,
    "angular": AngularLoss,
    "proxy-nca": ProxyNCALoss,
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

"""Losses on the batch's structure that are neither plain pair nor triplet losses: N-pair, angular, FastAP."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from zoo import miners as miners_lib
from zoo.losses.base import ComposedLoss, masked_logsumexp
from zoo.reducers import Terms


def one_pair_per_class(labels: tf.Tensor, anchor_mask: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """One (anchor, positive) pair per class, as PML's ``NPairsLoss`` picks them.

    The anchor is the first sample of its class with a positive (the first ``anchor_mask`` sample,
    PROFS' representative, when given) and the positive the first other sample of its class.

    Returns:
        int32 anchor and positive index vectors of equal length.
    """
    positives, _ = miners_lib.candidate_pairs(labels)
    can_anchor = tf.reduce_any(positives, axis=1)
    if anchor_mask is not None:
        can_anchor &= tf.reshape(tf.cast(anchor_mask, tf.bool), [-1])
    same = tf.equal(labels[:, None], labels[None, :])
    earlier = tf.linalg.band_part(tf.ones_like(same, tf.int32), -1, 0) - tf.eye(tf.size(labels), dtype=tf.int32) > 0
    has_earlier_anchor = tf.reduce_any(same & earlier & can_anchor[None, :], axis=1)
    anchors = tf.cast(tf.reshape(tf.where(can_anchor & ~has_earlier_anchor), [-1]), tf.int32)
    first_positive = tf.argmax(tf.cast(tf.gather(positives, anchors), tf.int32), axis=1, output_type=tf.int32)
    return anchors, first_positive


@keras.saving.register_keras_serializable(package="zoo")
class NPairLoss(ComposedLoss):
    """Multi-class N-pair loss (Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss
    Objective", NeurIPS 2016, eq. 6), PML's ``NPairsLoss``.

    One (anchor, positive) pair per class (:func:`one_pair_per_class`); each anchor's positive is
    classified by softmax cross-entropy among the positives of all pairs:
    ``log(1 + sum_{j != i} exp(f_i . f_j+ - f_i . f_i+))``, mean over pairs. Dot product (of
    normalised embeddings, PML's default) as similarity; Sohn's L2 penalty on the embeddings is a
    constant on unit-norm embeddings and left out.
    """

    default_distance = "dot"

    def compute(self, embeddings, labels, seed, anchor_mask):
        anchors, positives = one_pair_per_class(labels, anchor_mask)
        logits = self.distance(tf.gather(embeddings, anchors), tf.gather(embeddings, positives))
        logits = logits if self.distance.is_inverted else -logits
        targets = tf.range(tf.size(anchors))
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
        return [Terms(losses, tf.ones_like(targets, tf.bool))]


@keras.saving.register_keras_serializable(package="zoo")
class AngularLoss(ComposedLoss):
    """Angular loss (Wang et al., "Deep Metric Learning with Angular Loss", ICCV 2017, eq. 8), PML's
    ``AngularLoss``: for every positive pair (a, p),
    ``log(1 + sum_n exp(4 tan^2(alpha) (x_a + x_p)^T x_n - 2 (1 + tan^2(alpha)) x_a^T x_p))`` over the
    samples n of other classes, mean over pairs; ``alpha`` in degrees (PML's 40).

    The smooth form of ``[||x_a - x_p||^2 - 4 tan^2(alpha) ||x_n - x_c||^2]_+`` (x_c the pair's
    centre) on L2-normalised embeddings, which bounds the angle at the negative by alpha.
    With an ``anchor_mask`` only the pairs involving an anchor count.
    """

    def __init__(self, alpha: float = 40.0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < alpha < 90.0:
            raise ValueError(f"alpha is an angle in degrees in (0, 90), got {alpha}")
        if self.distance.name != "euclidean" or not self.distance.normalize_embeddings:
            raise ValueError("the angular loss is defined on normalised Euclidean embeddings (distance 'euclidean')")
        self.alpha = float(alpha)

    def compute(self, embeddings, labels, seed, anchor_mask):
        x = self.distance.maybe_normalize(embeddings)
        tan_sq = float(np.tan(np.radians(self.alpha)) ** 2)
        ap = tf.matmul(x, x, transpose_b=True)  # (N, N)
        an = tf.matmul(x, embeddings, transpose_b=True)  # PML leaves x_n as given (unit norm here anyway)
        # f[a, p, n] = 4 tan^2 (x_a + x_p) . x_n - 2 (1 + tan^2) x_a . x_p
        logits = 4.0 * tan_sq * (an[:, None, :] + an[None, :, :]) - 2.0 * (1.0 + tan_sq) * ap[:, :, None]
        positives, negatives = miners_lib.candidate_pairs(labels)
        if anchor_mask is not None:
            mask = tf.reshape(tf.cast(anchor_mask, tf.bool), [-1])
            positives &= mask[:, None] | mask[None, :]
        other_class = tf.broadcast_to(negatives[:, None, :], tf.shape(logits))
        losses = masked_logsumexp(logits, other_class, axis=2, add_one=True)
        return [Terms(losses, positives)]

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="zoo")
class FastAPLoss(ComposedLoss):
    """FastAP (Cakir et al., "Deep Metric Learning to Rank", CVPR 2019, eq. 10-12), PML's ``FastAPLoss``.

    Average precision of each sample's ranking of the batch, approximated by soft histograms of
    the squared distances of normalised embeddings (range [0, 4], ``num_bins`` bins, triangular
    kernels); the loss is ``1 - FastAP`` per sample with a positive, mean over those samples.
    """

    default_distance = "squared-euclidean"
    takes_anchor_mask = False

    def __init__(self, num_bins: int = 10, **kwargs):
        super().__init__(**kwargs)
        if self.distance.name not in ("euclidean", "squared-euclidean") or not self.distance.normalize_embeddings:
            raise ValueError("FastAP bins distances of normalised embeddings: 'squared-euclidean' or 'euclidean'")
        self.num_bins = int(num_bins)

    def compute(self, embeddings, labels, seed, anchor_mask):
        positives, negatives = miners_lib.candidate_pairs(labels)
        positives, negatives = tf.cast(positives, tf.float32), tf.cast(negatives, tf.float32)
        histogram_max = 4.0 if self.distance.name == "squared-euclidean" else 2.0
        delta = histogram_max / self.num_bins
        centres = tf.reshape(tf.linspace(0.0, histogram_max, self.num_bins + 1), [-1, 1, 1])
        pulse = tf.nn.relu(1.0 - tf.abs(self.distance(embeddings)[None] - centres) / delta)  # (bins, N, N)
        pos_hist = tf.transpose(tf.reduce_sum(pulse * positives, axis=2))  # (N, bins)
        neg_hist = tf.transpose(tf.reduce_sum(pulse * negatives, axis=2))
        h_pos_product = pos_hist * tf.cumsum(pos_hist, axis=1)
        total = tf.cumsum(pos_hist + neg_hist, axis=1)
        fast_ap = tf.reduce_sum(tf.math.divide_no_nan(h_pos_product, total), axis=1)
        num_positives = tf.reduce_sum(positives, axis=1)
        has_positive = num_positives > 0
        return [Terms(1.0 - tf.math.divide_no_nan(fast_ap, num_positives), has_positive)]

    def get_config(self):
        return {**super().get_config(), "num_bins": self.num_bins}

"""Losses on mined positive and negative pairs: each one PML class, written as a :class:`PairLoss`.

Each takes ``miner=`` (default ``"all"``: every pair), ``distance=`` and ``reduction=``; ``None``
gives pytorch-metric-learning's default for the loss, so ``Loss()`` equals PML's ``Loss()``.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from zoo.losses.base import NO_TERM, PairLoss, masked_logsumexp
from zoo.reducers import Terms


def _rows(matrix: tf.Tensor) -> tf.Tensor:
    """A mask that keeps every row of ``matrix`` (for per-anchor terms)."""
    return tf.ones(tf.shape(matrix)[:1], tf.bool)


@keras.saving.register_keras_serializable(package="zoo")
class ContrastiveLoss(PairLoss):
    """Contrastive loss (Hadsell, Chopra & LeCun, "Dimensionality Reduction by Learning an Invariant
    Mapping", CVPR 2006, eq. 4) in PML's parametrisation.

    Positive pairs cost ``[d - pos_margin]_+``, negative pairs ``[neg_margin - d]_+`` (plain
    hinges, as PML's ``ContrastiveLoss``; Hadsell squares them), each reduced on its own (mean
    over the non-zero terms by default) and summed.
    """

    default_reduction = "avg-non-zero"

    def __init__(self, pos_margin: float = 0.0, neg_margin: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.pos_margin, self.neg_margin = float(pos_margin), float(neg_margin)

    def pair_terms(self, matrix, positives, negatives):
        pos = tf.nn.relu(self.distance.margin(matrix, self.pos_margin))
        neg = tf.nn.relu(self.distance.margin(self.neg_margin, matrix))
        return [Terms(pos, positives), Terms(neg, negatives)]

    def get_config(self):
        return {**super().get_config(), "pos_margin": self.pos_margin, "neg_margin": self.neg_margin}


@keras.saving.register_keras_serializable(package="zoo")
class MultiSimilarityLoss(PairLoss):
    """Multi-similarity loss (Wang et al., "Multi-Similarity Loss with General Pair Weighting for Deep
    Metric Learning", CVPR 2019, eq. 4), cosine similarity S by default.

    Per anchor: ``1/alpha log(1 + sum_P exp(-alpha (S_ip - base))) + 1/beta log(1 + sum_N exp(beta
    (S_in - base)))``, mean over anchors. The paper pairs it with its miner:
    ``miner="multi-similarity"`` (:class:`zoo.miners.MultiSimilarityMiner`).
    """

    default_distance = "cosine"

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.beta, self.base = float(alpha), float(beta), float(base)

    def pair_terms(self, matrix, positives, negatives):
        pos_exp = self.distance.margin(matrix, self.base)
        neg_exp = self.distance.margin(self.base, matrix)
        pos = masked_logsumexp(self.alpha * pos_exp, positives, add_one=True) / self.alpha
        neg = masked_logsumexp(self.beta * neg_exp, negatives, add_one=True) / self.beta
        return [Terms(pos + neg, _rows(matrix))]

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta, "base": self.base}


@keras.saving.register_keras_serializable(package="zoo")
class GeneralizedLiftedStructureLoss(PairLoss):
    """Generalised lifted structure loss (Hermans, Beyer & Leibe, "In Defense of the Triplet Loss for
    Person Re-Identification", 2017, Sec. 2), PML's ``GeneralizedLiftedStructureLoss``.

    Per anchor: ``[log sum_P exp(d_ip - pos_margin) + log sum_N exp(neg_margin - d_in)]_+``, mean
    over anchors.
    """

    def __init__(self, neg_margin: float = 1.0, pos_margin: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.neg_margin, self.pos_margin = float(neg_margin), float(pos_margin)

    def pair_terms(self, matrix, positives, negatives):
        pos = masked_logsumexp(self.distance.margin(matrix, self.pos_margin), positives)
        neg = masked_logsumexp(self.distance.margin(self.neg_margin, matrix), negatives)
        return [Terms(tf.nn.relu(pos + neg), _rows(matrix))]

    def get_config(self):
        return {**super().get_config(), "neg_margin": self.neg_margin, "pos_margin": self.pos_margin}


@keras.saving.register_keras_serializable(package="zoo")
class LiftedStructuredLoss(PairLoss):
    """Lifted structured loss (Song et al., "Deep Metric Learning via Lifted Structured Feature
    Embedding", CVPR 2016, eq. 4), PML's ``LiftedStructureLoss``.

    ``J_ij = log(sum_{(i,k) in N} exp(neg_margin - D_ik) + sum_{(j,l) in N} exp(neg_margin - D_jl))
    + D_ij - pos_margin`` for each positive pair, and the mean of ``[J_ij]_+^2 / 2`` over the
    ordered positive pairs (each unordered pair counted twice: Song's ``1/(2|P|) sum_P``).
    With an ``anchor_mask`` the negative pairs between two non-anchors leave the log-sum-exp too.
    """

    takes_references = False  # the negatives of j are j's row of the batch

    def __init__(self, neg_margin: float = 1.0, pos_margin: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.neg_margin, self.pos_margin = float(neg_margin), float(pos_margin)

    def pair_terms(self, matrix, positives, negatives):
        negative_terms = tf.where(negatives, self.distance.margin(self.neg_margin, matrix), NO_TERM)
        negative_lse = tf.reduce_logsumexp(negative_terms, axis=1)
        has_negative = tf.reduce_any(negatives, axis=1)
        either = has_negative[:, None] | has_negative[None, :]
        lse = tf.experimental.numpy.logaddexp(negative_lse[:, None], negative_lse[None, :])
        j = tf.where(either, lse, 0.0) + self.distance.margin(matrix, self.pos_margin)
        return [Terms(tf.square(tf.nn.relu(j)) / 2.0, positives)]

    def get_config(self):
        return {**super().get_config(), "neg_margin": self.neg_margin, "pos_margin": self.pos_margin}


@keras.saving.register_keras_serializable(package="zoo")
class NTXentLoss(PairLoss):
    """NT-Xent, the normalised temperature-scaled cross-entropy (Chen et al., "A Simple Framework for
    Contrastive Learning of Visual Representations", ICML 2020, eq. 1; Sohn 2016's N-pair loss with a
    temperature), PML's ``NTXentLoss``.

    Per positive pair (i, j): ``-log(exp(S_ij / t) / (exp(S_ij / t) + sum_{(i,k) in N} exp(S_ik / t)))``,
    mean over positive pairs; cosine similarity by default.
    """

    default_distance = "cosine"

    def __init__(self, temperature: float = 0.07, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def pair_terms(self, matrix, positives, negatives):
        logits = (matrix if self.distance.is_inverted else -matrix) / self.temperature
        neg = tf.reduce_logsumexp(tf.where(negatives, logits, NO_TERM), axis=1, keepdims=True)
        return [Terms(tf.experimental.numpy.logaddexp(logits, neg) - logits, positives)]

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="zoo")
class SupConLoss(PairLoss):
    """Supervised contrastive loss (Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020,
    eq. 2, L_out), PML's ``SupConLoss``.

    Per anchor i: ``-1/|P(i)| sum_{p in P(i)} log(exp(S_ip / t) / sum_{a in P(i) u N(i)} exp(S_ia / t))``,
    mean over the anchors with a non-zero loss; cosine similarity by default.
    """

    default_distance = "cosine"
    default_reduction = "avg-non-zero"

    def __init__(self, temperature: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def pair_terms(self, matrix, positives, negatives):
        logits = (matrix if self.distance.is_inverted else -matrix) / self.temperature
        log_prob = logits - masked_logsumexp(logits, positives | negatives)[:, None]
        num_positives = tf.reduce_sum(tf.cast(positives, tf.float32), axis=1)
        mean_log_prob = tf.math.divide_no_nan(tf.reduce_sum(tf.where(positives, log_prob, 0.0), axis=1), num_positives)
        exists = tf.reduce_any(positives) & tf.reduce_any(negatives)  # PML: no loss without both kinds
        return [Terms(-mean_log_prob, _rows(matrix) & exists)]

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="zoo")
class CircleLoss(PairLoss):
    """Circle loss (Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity Optimization",
    CVPR 2020, eq. 6), PML's ``CircleLoss`` (cosine similarity; m = 0.4, gamma = 80, the paper's
    fine-grained retrieval setting).

    Per anchor: ``softplus(log sum_P exp(-gamma a_p (s_p - delta_p)) + log sum_N exp(gamma a_n (s_n -
    delta_n)))`` with ``a_p = [1 + m - s_p]_+``, ``a_n = [s_n + m]_+`` (no gradient through the
    weights a), ``delta_p = 1 - m``, ``delta_n = m``; anchors without a positive or a negative give 0.
    Mean over the non-zero terms.
    """

    default_distance = "cosine"
    default_reduction = "avg-non-zero"

    def __init__(self, m: float = 0.4, gamma: float = 80.0, **kwargs):
        super().__init__(**kwargs)
        if not self.distance.is_inverted:
            raise ValueError("the circle loss is defined on a similarity (cosine)")
        self.m, self.gamma = float(m), float(gamma)

    def pair_terms(self, matrix, positives, negatives):
        fixed = tf.stop_gradient(matrix)
        pos_logits = -self.gamma * tf.nn.relu(1.0 + self.m - fixed) * (matrix - (1.0 - self.m))
        neg_logits = self.gamma * tf.nn.relu(fixed + self.m) * (matrix - self.m)
        losses = tf.nn.softplus(masked_logsumexp(pos_logits, positives) + masked_logsumexp(neg_logits, negatives))
        both = tf.reduce_any(positives, axis=1) & tf.reduce_any(negatives, axis=1)
        return [Terms(tf.where(both, losses, 0.0), _rows(matrix))]

    def get_config(self):
        return {**super().get_config(), "m": self.m, "gamma": self.gamma}

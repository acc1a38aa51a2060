"""Losses on (anchor, positive, negative) triplets: the triplet-margin loss and the margin loss."""

from __future__ import annotations

import keras
import tensorflow as tf

from zoo import distances as distances_lib
from zoo import reducers
from zoo.losses.base import TripletBasedLoss
from zoo.reducers import Terms


def triplet_loss(
    anchor: tf.Tensor, positive: tf.Tensor, negative: tf.Tensor, margin: float = 0.2, squared: bool = True,
    reduction: str = "mean",
) -> tf.Tensor:
    """Hinges ``[d(a,p) - d(a,n) + margin]_+`` of given triplets of vectors, reduced by ``reduction`` (default the
    mean: THSG eq. 6; FaceNet eq. 1; "avg-non-zero": PML's triplet loss).

    For triplets of vectors that are not rows of one batch (THSG's and HTG's generated triplets).
    ``squared=True`` uses squared Euclidean distances, as the THSG and FaceNet papers do; the
    vectors are used as given (not normalised). Returns 0 for an empty set of triplets.
    """
    distance = (distances_lib.SquaredEuclideanDistance if squared else distances_lib.EuclideanDistance)(False)
    hinge = tf.nn.relu(distance.paired(anchor, positive) - distance.paired(anchor, negative) + margin)
    return reducers.reduce_values(reduction, hinge)


def inverted_triplet_loss(
    anchor: tf.Tensor, positive: tf.Tensor, negative: tf.Tensor, margin: float, squared: bool = True
) -> tf.Tensor:
    """Mean ``[d(a,n) - d(a,p) + margin]_+``: :func:`triplet_loss` with p and n swapped, the generators'
    objective that makes a triplet hard (THSG eq. 18, the ART loss with margin τr; HTG's L_inv with margin m)."""
    return triplet_loss(anchor, negative, positive, margin, squared)


@keras.saving.register_keras_serializable(package="zoo")
class TripletLoss(TripletBasedLoss):
    """Triplet margin loss (Weinberger & Saul, "Distance Metric Learning for Large Margin Nearest
    Neighbor Classification", JMLR 2009; Schroff et al., "FaceNet", CVPR 2015, eq. 1), PML's
    ``TripletMarginLoss``: ``[d(a,p) - d(a,n) + margin]_+`` over the mined triplets.

    Defaults are PML's: every triplet of the batch (``miner="all"``), margin 0.05, Euclidean distance
    of normalised embeddings, mean over the non-zero terms; this learns from scratch, unlike
    semi-hard mining (``miner="semi-hard"``), which collapses there. ``swap`` uses the
    positive-negative distance when it violates the margin more (Balntas et al. 2016); ``smooth_loss``
    the softplus of the violation. :func:`facenet_triplet_loss` is the THSG / FaceNet reading.
    """

    default_reduction = "avg-non-zero"

    def __init__(self, miner="all", margin: float = 0.05, swap: bool = False, smooth_loss: bool = False, **kwargs):
        super().__init__(miner=miner, margin=margin, **kwargs)
        self.swap, self.smooth_loss = bool(swap), bool(smooth_loss)

    @property
    def squared(self) -> bool:
        """Whether the distance is the squared Euclidean one (HTG reuses the loss's distance)."""
        return isinstance(self.distance, distances_lib.SquaredEuclideanDistance)

    def triplet_terms(self, matrix, triplets, labels):
        d_ap, d_an = matrix[:, :, None], matrix[:, None, :]
        if self.swap:
            d_pn = matrix[None, :, :]  # d(p, n): a row of the batch matrix (no references with swap)
            d_an = tf.maximum(d_an, d_pn) if self.distance.is_inverted else tf.minimum(d_an, d_pn)
        violation = self.distance.margin(d_ap, d_an) + self.margin
        losses = tf.nn.softplus(violation) if self.smooth_loss else tf.nn.relu(violation)
        return [Terms(losses, triplets)]

    def get_config(self):
        return {**super().get_config(), "swap": self.swap, "smooth_loss": self.smooth_loss}


def facenet_triplet_loss(miner="semi-hard", margin: float = 0.2, **kwargs) -> TripletLoss:
    """The triplet loss as FaceNet (Schroff et al. 2015, eq. 1) and THSG (eq. 6, tau = 0.2) write it.

    Squared Euclidean distance of the embeddings as given, margin 0.2, mean over the mined triplets
    (zeros included), FaceNet's semi-hard negatives: the configuration the paper methods (THSG,
    HTG, PROFS) are defined with, as a :class:`TripletLoss`.
    """
    kwargs.setdefault("distance", distances_lib.SquaredEuclideanDistance(normalize_embeddings=False))
    kwargs.setdefault("reduction", "mean")
    return TripletLoss(miner=miner, margin=margin, **kwargs)


@keras.saving.register_keras_serializable(package="zoo")
class MarginLoss(TripletBasedLoss):
    """Margin loss (Wu et al., "Sampling Matters in Deep Embedding Learning", ICCV 2017, eq. 4-5),
    PML's ``MarginLoss``: ``[alpha + (d_ap - beta)]_+ + [alpha - (d_an - beta)]_+`` per triplet.

    ``margin`` is the paper's alpha (0.2), ``beta`` its boundary (1.2), trainable by default
    (``learn_beta``; one per class with ``num_classes``, the paper's beta^(class)), with the
    paper's regulariser ``nu * beta`` (eq. 5; nu = 0 by default). The sum is divided by the number
    of non-zero terms, as the paper's code (PML's ``DivisorReducer``). PML's default is every
    triplet; the paper samples the negatives by distance (``miner="distance-weighted"``).
    """

    default_reduction = "divisor"

    def __init__(
        self,
        miner="all",
        margin: float = 0.2,
        beta: float = 1.2,
        nu: float = 0.0,
        learn_beta: bool = True,
        num_classes: int | None = None,
        **kwargs,
    ):
        super().__init__(miner=miner, margin=margin, **kwargs)
        self.initial_beta, self.nu, self.learn_beta = float(beta), float(nu), bool(learn_beta)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.beta = self.add_weight(
            shape=() if self.num_classes is None else (self.num_classes,),
            initializer=keras.initializers.Constant(self.initial_beta),
            name="beta",
            dtype="float32",
            trainable=self.learn_beta,
        )

    def triplet_terms(self, matrix, triplets, labels):
        beta = self.beta if self.num_classes is None else tf.gather(self.beta, labels)[:, None, None]
        d_ap, d_an = matrix[:, :, None], matrix[:, None, :]
        pos = tf.nn.relu(self.distance.margin(d_ap, beta) + self.margin)
        neg = tf.nn.relu(self.distance.margin(beta, d_an) + self.margin)
        active = tf.reduce_sum(tf.cast(triplets & (pos > 0.0), tf.float32)) + tf.reduce_sum(
            tf.cast(triplets & (neg > 0.0), tf.float32)
        )
        terms = [Terms(pos + neg, triplets, active)]
        if self.learn_beta and self.nu:
            if self.num_classes is None:  # PML: an already reduced term
                terms.append(Terms(self.nu * beta[None], tf.ones([1], tf.bool), tf.constant(1.0)))
            else:
                terms.append(Terms(self.nu * beta * tf.ones_like(pos), triplets, active))
        return terms

    def get_config(self):
        return {
            **super().get_config(),
            "beta": self.initial_beta,
            "nu": self.nu,
            "learn_beta": self.learn_beta,
            "num_classes": self.num_classes,
        }

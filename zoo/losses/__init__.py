"""Metric-learning losses: pure tensor functions plus thin serialisable layers, composed as in
pytorch-metric-learning (PML): a loss takes a ``distance=`` (:mod:`zoo.distances`), a
``reduction=`` (:mod:`zoo.reducers`) and, for pair and triplet losses, a ``miner=``
(:mod:`zoo.miners`); left out, each is PML's default for the loss, so that ``zoo.losses.X()`` gives
PML's value for ``X()`` (see :data:`PML_EQUIVALENTS` and tests/test_pml_equivalence.py).

One module per family: :mod:`~zoo.losses.base` (the template), :mod:`~zoo.losses.pair`,
:mod:`~zoo.losses.triplet`, :mod:`~zoo.losses.tuples` (N-pair, angular, FastAP),
:mod:`~zoo.losses.proxy` (losses with class weights), :mod:`~zoo.losses.memory` (XBM) and
:mod:`~zoo.losses.keras_loss` (any loss in a plain ``compile``).
"""

from __future__ import annotations

from typing import Any, Callable

import keras
import tensorflow as tf

from zoo import ops
from zoo.losses.base import ComposedLoss, MetricLoss, PairLoss, TripletBasedLoss, masked_logsumexp
from zoo.losses.keras_loss import KerasMetricLoss
from zoo.losses.memory import CrossBatchMemory
from zoo.losses.pair import (
    CircleLoss,
    ContrastiveLoss,
    GeneralizedLiftedStructureLoss,
    LiftedStructuredLoss,
    MultiSimilarityLoss,
    NTXentLoss,
    SupConLoss,
)
from zoo.losses.proxy import (
    ArcFaceLoss,
    CosFaceLoss,
    NormalizedSoftmaxLoss,
    ProxyAnchorLoss,
    ProxyLoss,
    ProxyNCALoss,
    SoftTripleLoss,
)
from zoo.losses.triplet import MarginLoss, TripletLoss, facenet_triplet_loss, inverted_triplet_loss, triplet_loss
from zoo.losses.tuples import AngularLoss, FastAPLoss, NPairLoss, one_pair_per_class


def softmax_cross_entropy(logits: tf.Tensor, labels: tf.Tensor | int) -> tf.Tensor:
    """Mean softmax cross-entropy of (N, C) ``logits`` (float32) under integer ``labels``: (N,) or one for all."""
    labels = tf.broadcast_to(tf.reshape(tf.cast(labels, tf.int32), [-1]), tf.shape(logits)[:-1])
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=tf.cast(logits, tf.float32))
    )


# name -> loss class, or a named configuration of one (a function returning an instance)
LOSSES: dict[str, Callable[..., MetricLoss]] = {
    "triplet": TripletLoss,
    "facenet-triplet": facenet_triplet_loss,
    "contrastive": ContrastiveLoss,
    "margin": MarginLoss,
    "multi-similarity": MultiSimilarityLoss,
    "lifted": LiftedStructuredLoss,
    "generalized-lifted": GeneralizedLiftedStructureLoss,
    "npair": NPairLoss,
    "angular": AngularLoss,
    "ntxent": NTXentLoss,
    "supcon": SupConLoss,
    "circle": CircleLoss,
    "fastap": FastAPLoss,
    "proxy-nca": ProxyNCALoss,
    "proxy-anchor": ProxyAnchorLoss,
    "normalized-softmax": NormalizedSoftmaxLoss,
    "cosface": CosFaceLoss,
    "arcface": ArcFaceLoss,
    "softtriple": SoftTripleLoss,
    "xbm": CrossBatchMemory,
}

# The losses built with the number of training classes (one weight per class).
CLASS_AWARE_LOSSES: tuple[str, ...] = tuple(
    name for name, factory in LOSSES.items() if getattr(factory, "needs_num_classes", False)
)


def get(identifier: str | dict | MetricLoss, **kwargs: Any) -> MetricLoss:
    """A loss layer from its name (``"triplet"``), a Keras serialisation dict, or an instance."""
    if isinstance(identifier, MetricLoss):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    if identifier not in LOSSES:
        raise ValueError(f"unknown loss {identifier!r}; choose one of {sorted(LOSSES)}")
    if identifier in CLASS_AWARE_LOSSES and "num_classes" not in kwargs:
        raise ValueError(f"loss {identifier!r} needs num_classes, one weight per training class: "
                         f"losses.get({identifier!r}, num_classes=...)")
    if "miner" in kwargs and "miner" not in ops.keyword_arguments(LOSSES[identifier]):
        raise ValueError(f"loss {identifier!r} takes no miner; leave the miner out, or choose a loss that takes "
                         f"one (triplet, contrastive, multi-similarity, margin, ...)")
    return LOSSES[identifier](**kwargs)


# ---- pytorch-metric-learning equivalents ------------------------------------------------------
# The sizes the proxy losses of the equivalence fixture are built with.
PML_NUM_CLASSES, PML_EMBEDDING_DIM = 8, 8
_PROXY_SIZES = {"num_classes": PML_NUM_CLASSES, "embedding_size": PML_EMBEDDING_DIM}
_ZOO_SIZES = {"num_classes": PML_NUM_CLASSES, "embedding_dim": PML_EMBEDDING_DIM}

# {PML loss class: (its constructor kwargs, a factory of the zoo loss with the same value)}; what
# the kwargs leave out is PML's default on both sides. tests/test_pml_equivalence.py checks each
# against benchmarks/peer/pml_losses.py's fixture. Proxy weights: the zoo's rows, PML's W / fc columns.
PML_EQUIVALENTS: dict[str, tuple[dict[str, Any], Callable[[], MetricLoss]]] = {
    "TripletMarginLoss": ({"margin": 0.2}, lambda: TripletLoss(margin=0.2)),
    "ContrastiveLoss": ({"pos_margin": 0.0, "neg_margin": 0.5}, lambda: ContrastiveLoss(neg_margin=0.5)),
    "MultiSimilarityLoss": ({}, MultiSimilarityLoss),
    "MarginLoss": ({"learn_beta": True}, MarginLoss),
    "NPairsLoss": ({}, NPairLoss),
    "AngularLoss": ({}, AngularLoss),
    "GeneralizedLiftedStructureLoss": ({}, GeneralizedLiftedStructureLoss),
    "LiftedStructureLoss": ({}, LiftedStructuredLoss),
    "CircleLoss": ({}, CircleLoss),
    "SupConLoss": ({}, SupConLoss),
    "NTXentLoss": ({}, NTXentLoss),
    "FastAPLoss": ({}, FastAPLoss),
    "ProxyNCALoss": (_PROXY_SIZES, lambda: ProxyNCALoss(**_ZOO_SIZES)),
    "ProxyAnchorLoss": (_PROXY_SIZES, lambda: ProxyAnchorLoss(**_ZOO_SIZES)),
    "NormalizedSoftmaxLoss": (_PROXY_SIZES, lambda: NormalizedSoftmaxLoss(**_ZOO_SIZES)),
    "CosFaceLoss": (_PROXY_SIZES, lambda: CosFaceLoss(**_ZOO_SIZES)),
    "ArcFaceLoss": (_PROXY_SIZES, lambda: ArcFaceLoss(**_ZOO_SIZES)),
    "SoftTripleLoss": (_PROXY_SIZES, lambda: SoftTripleLoss(**_ZOO_SIZES)),
}

__all__ = [
    "AngularLoss", "ArcFaceLoss", "CircleLoss", "ComposedLoss", "ContrastiveLoss", "CosFaceLoss",
    "CrossBatchMemory", "FastAPLoss", "GeneralizedLiftedStructureLoss", "KerasMetricLoss", "LiftedStructuredLoss",
    "MarginLoss", "MetricLoss", "MultiSimilarityLoss", "NPairLoss", "NTXentLoss", "NormalizedSoftmaxLoss",
    "PairLoss", "ProxyAnchorLoss", "ProxyLoss", "ProxyNCALoss", "SoftTripleLoss", "SupConLoss", "TripletBasedLoss",
    "TripletLoss", "CLASS_AWARE_LOSSES", "LOSSES", "PML_EQUIVALENTS", "facenet_triplet_loss", "get", "inverted_triplet_loss",
    "masked_logsumexp", "one_pair_per_class", "softmax_cross_entropy", "triplet_loss",
]

"""The losses' base classes: the template every zoo loss fills in, pytorch-metric-learning (PML) style.

A loss layer is called as ``loss(embeddings, labels, seed, anchor_mask=None)`` on the (global)
batch and returns a float32 scalar. :class:`ComposedLoss` is the template: it casts embeddings to
float32 (losses stay float32 under mixed precision), checks the arguments, asks the subclass's
:meth:`ComposedLoss.compute` for its :class:`~zoo.reducers.Terms` and reduces them with the loss's
``reduction``. A loss composes, by constructor, a ``distance`` (:mod:`zoo.distances`), a
``reduction`` (:mod:`zoo.reducers`) and, for the pair and triplet losses, a ``miner``
(:mod:`zoo.miners`); ``None`` gives the loss's PML default.

``anchor_mask`` (N,) bool: only the masked samples act as anchors, and a pair of two unmasked
samples is ignored. This is the batch constraint of PROFS (Can et al., eq. 4.6-4.7: every pair
involves a class representative); without a mask every sample is an anchor.
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras
import tensorflow as tf

from zoo import distances as distances_lib
from zoo import miners as miners_lib
from zoo import reducers
from zoo.reducers import Terms

NO_TERM = -1e9  # logit of an absent term of a log-sum-exp: exp(-1e9) == 0 in float32, gradients stay finite


def masked_logsumexp(x: tf.Tensor, mask: tf.Tensor, axis: int = 1, add_one: bool = False) -> tf.Tensor:
    """``log(sum_j exp(x_j))`` over the masked entries along ``axis`` (``log(1 + ...)`` with ``add_one``).

    An empty row gives 0, as PML's ``lmu.logsumexp``; gradients stay finite.
    """
    logits = tf.where(mask, x, NO_TERM)
    if add_one:
        logits = tf.concat([logits, tf.zeros_like(tf.reduce_sum(logits, axis=axis, keepdims=True))], axis=axis)
    out = tf.reduce_logsumexp(logits, axis=axis)
    return tf.where(tf.reduce_any(mask, axis=axis), out, 0.0)


def restrict_to_anchors(positives: tf.Tensor, negatives: tf.Tensor, anchor_mask: tf.Tensor | None):
    """The pairs with at least one masked sample (PROFS' constraint); unchanged without a mask."""
    if anchor_mask is None:
        return positives, negatives
    anchor_mask = tf.reshape(tf.cast(anchor_mask, tf.bool), [-1])
    involves_anchor = anchor_mask[:, None] | anchor_mask[None, :]
    return positives & involves_anchor, negatives & involves_anchor


class MetricLoss(keras.layers.Layer):
    """Interface of the zoo's losses: ``call(embeddings, labels, seed, anchor_mask=None) -> scalar``.

    Losses with weights (proxies, the margin loss's beta) are layers so that the model owning them
    tracks and trains the weights.
    """

    def call(
        self,
        embeddings: tf.Tensor,
        labels: tf.Tensor,
        seed: tf.Tensor | None = None,
        anchor_mask: tf.Tensor | None = None,
    ) -> tf.Tensor:
        raise NotImplementedError


class ComposedLoss(MetricLoss):
    """Template of a loss composed of a distance and a reducer: subclasses write only :meth:`compute`.

    Class attributes: ``default_distance`` and ``default_reduction`` (PML's defaults for the loss),
    ``takes_anchor_mask`` (whether PROFS' ``anchor_mask`` means something for the loss),
    ``needs_num_classes`` (class-aware: one weight per training class, built with ``num_classes``)
    and ``takes_references`` (whether :class:`~zoo.losses.CrossBatchMemory` can feed it a memory).
    """

    default_distance: ClassVar[str] = "euclidean"
    default_reduction: ClassVar[str] = "mean"
    takes_anchor_mask: ClassVar[bool] = True
    needs_num_classes: ClassVar[bool] = False
    takes_references: ClassVar[bool] = False

    def __init__(
        self, distance: str | dict | distances_lib.Distance | None = None, reduction: str | None = None, **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.distance = distances_lib.get(distance, self.default_distance)
        self.reduction = reducers.check(reduction or self.default_reduction)

    def call(self, embeddings, labels, seed=None, anchor_mask=None, references: miners_lib.References | None = None):
        if anchor_mask is not None and not self.takes_anchor_mask:
            raise ValueError(f"{type(self).__name__} takes no anchor_mask (PROFS' constraint on pairs of samples)")
        if references is not None and not self.takes_references:
            raise ValueError(f"{type(self).__name__} compares the batch with itself: it takes no references")
        embeddings = tf.cast(embeddings, tf.float32)
        labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
        seed = tf.zeros([2], tf.int64) if seed is None else tf.cast(seed, tf.int64)
        kwargs = {} if references is None else {"references": miners_lib.References(
            tf.stop_gradient(tf.cast(references.embeddings, tf.float32)),
            tf.reshape(tf.cast(references.labels, tf.int32), [-1]),
            references.comparable,
        )}
        return reducers.reduce(self.reduction, self.compute(embeddings, labels, seed, anchor_mask, **kwargs))

    def compute(
        self, embeddings: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, anchor_mask: tf.Tensor | None,
        references: miners_lib.References | None = None,
    ) -> list[Terms]:
        """The loss's terms on float32 ``embeddings`` and int32 ``labels`` (and a memory's ``references``, passed
        only to the losses that take them)."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "distance": distances_lib.serialize(self.distance),
            "reduction": self.reduction,
        }


def reference_embeddings(references: miners_lib.References | None) -> tf.Tensor | None:
    """The embeddings a distance compares the batch with: the references', the batch itself (None) without."""
    return None if references is None else references.embeddings


def make_miner(miner: str | dict | miners_lib.Miner, margin: float | None = None) -> miners_lib.Miner:
    """A miner from an identifier; a triplet miner named by a string gets the loss's ``margin``."""
    if isinstance(miner, str) and margin is not None and not issubclass(
        miners_lib.MINERS.get(miner, miners_lib.PairMiner), miners_lib.PairMiner
    ):
        return miners_lib.get(miner, margin=margin)
    return miners_lib.get(miner)


class PairLoss(ComposedLoss):
    """Base of the losses on the positive and negative pairs a miner picks (PML's ``GenericPairLoss``).

    Subclasses implement :meth:`pair_terms` on the (N, M) distance matrix and pair masks. The
    default miner ``"all"`` takes every pair, PML's behaviour without a miner.
    """

    takes_references = True

    def __init__(self, miner: str | dict | miners_lib.Miner = "all", **kwargs: Any):
        super().__init__(**kwargs)
        self.miner = make_miner(miner)

    def compute(self, embeddings, labels, seed, anchor_mask, references=None):
        positives, negatives = self.miner.pair_masks(embeddings, labels, seed, references)
        positives, negatives = restrict_to_anchors(positives, negatives, anchor_mask)
        return self.pair_terms(self.distance(embeddings, reference_embeddings(references)), positives, negatives)

    def pair_terms(self, matrix: tf.Tensor, positives: tf.Tensor, negatives: tf.Tensor) -> list[Terms]:
        raise NotImplementedError

    def get_config(self):
        return {**super().get_config(), "miner": miners_lib.serialize(self.miner)}


class TripletBasedLoss(ComposedLoss):
    """Base of the losses on (anchor, positive, negative) triplets (PML's triplet-margin and margin losses).

    Subclasses implement :meth:`triplet_terms` on the (N, M) distance matrix and the (N, M, M)
    triplet mask. ``margin`` is also the margin handed to a triplet miner named by a string.
    """

    takes_references = True

    def __init__(self, miner: str | dict | miners_lib.Miner = "all", margin: float = 0.05, **kwargs: Any):
        super().__init__(**kwargs)
        self.margin = float(margin)
        self.miner = make_miner(miner, self.margin)

    def mine(
        self, embeddings: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor | None, anchor_mask: tf.Tensor | None = None
    ) -> miners_lib.Triplets:
        """The miner's index triplets, restricted to those whose anchor is in ``anchor_mask`` when given."""
        seed = tf.zeros([2], tf.int64) if seed is None else seed
        anchors, positives, negatives = self.miner(embeddings, labels, seed)
        if anchor_mask is None:
            return anchors, positives, negatives
        keep = tf.gather(tf.reshape(tf.cast(anchor_mask, tf.bool), [-1]), anchors)
        return tuple(tf.boolean_mask(t, keep) for t in (anchors, positives, negatives))

    def compute(self, embeddings, labels, seed, anchor_mask, references=None):
        triplets = self.miner.triplet_mask(embeddings, labels, seed, references)
        if anchor_mask is not None:
            triplets &= tf.reshape(tf.cast(anchor_mask, tf.bool), [-1, 1, 1])
        return self.triplet_terms(self.distance(embeddings, reference_embeddings(references)), triplets, labels)

    def triplet_terms(self, matrix: tf.Tensor, triplets: tf.Tensor, labels: tf.Tensor) -> list[Terms]:
        raise NotImplementedError

    def get_config(self):
        return {**super().get_config(), "miner": miners_lib.serialize(self.miner), "margin": self.margin}

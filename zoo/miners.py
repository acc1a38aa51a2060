"""Miners: pick the pairs or (anchor, positive, negative) triplets of a batch that a loss sees.

A miner sees the (global) batch's embeddings and labels. ``miner(embeddings, labels, seed)``
returns three int32 index vectors of equal length (the triplets); :meth:`Miner.pair_masks` and
:meth:`Miner.triplet_mask` give the same choice as boolean masks, which is how the zoo's losses
consume it (static shapes). A miner never carries gradients (it works on stopped embeddings) and
draws its random numbers from a stateless seed, so every replica of a ``tf.distribute`` strategy
mines the same triplets.

Two kinds: triplet miners pick index triplets (the THSG paper's Tables 6-8: random, semi-hard,
soft-hard, distance-weighted, plus batch-hard); pair miners pick positive and negative pairs as
masks and also work against reference embeddings (a cross-batch memory): ``"all"`` (every valid
pair or triplet, pytorch-metric-learning's behaviour without a miner) and ``"multi-similarity"``
(Wang et al. 2019). Pairs are converted to triplets as PML does: every (a, p, n) with (a, p) a
mined positive and (a, n) a mined negative pair.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import tensorflow as tf

from zoo import distances as distances_lib
from zoo import ops

Triplets = tuple[tf.Tensor, tf.Tensor, tf.Tensor]
PairMasks = tuple[tf.Tensor, tf.Tensor]
_NEG_INF = -1e9


class References(NamedTuple):
    """What a batch is compared with instead of itself (a cross-batch memory's contents).

    ``embeddings`` (M, D) and ``labels`` (M,); ``comparable`` (N, M) bool says which pairs exist
    (filled slots, not a sample's own slot), all when None.
    """

    embeddings: tf.Tensor
    labels: tf.Tensor
    comparable: tf.Tensor | None = None


def _positive_pairs(labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """All ordered positive pairs (a, p), a != p, plus the positive and negative masks."""
    positives, negatives = ops.same_class_masks(labels)
    pairs = tf.cast(tf.where(positives), tf.int32)
    return pairs[:, 0], pairs[:, 1], positives, negatives


def candidate_pairs(labels: tf.Tensor, references: References | None = None) -> PairMasks:
    """(N, M) masks of every valid positive (same label) and negative (other label) pair.

    Without references a sample is not its own positive; with them, only their comparable pairs count.
    """
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    if references is None:
        return ops.same_class_masks(labels)
    same = tf.equal(labels[:, None], tf.reshape(tf.cast(references.labels, tf.int32), [-1])[None, :])
    if references.comparable is not None:
        return same & references.comparable, ~same & references.comparable
    return same, ~same


def _scatter_mask(indices: tf.Tensor, shape: list) -> tf.Tensor:
    """A bool tensor of ``shape``, True at the rows of ``indices`` (K, rank)."""
    ones = tf.ones(tf.shape(indices)[:1], tf.int32)
    return tf.scatter_nd(tf.cast(indices, tf.int32), ones, tf.stack(shape)) > 0


class Miner:
    """Base class of the triplet miners: subclasses implement :meth:`mine` on stopped float32 embeddings."""

    name = "miner"

    def __init__(self, margin: float = 0.2):
        self.margin = float(margin)

    def __call__(self, embeddings: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> Triplets:
        embeddings = tf.stop_gradient(tf.cast(embeddings, tf.float32))
        return self.mine(embeddings, tf.cast(tf.reshape(labels, [-1]), tf.int32), seed)

    def mine(self, embeddings: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> Triplets:
        raise NotImplementedError

    def pair_masks(
        self, embeddings: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, references: References | None = None
    ) -> PairMasks:
        """The mined positive and negative pairs as (N, M) masks: the (a, p) and (a, n) of each triplet."""
        self._check_no_references(references)
        a, p, neg = self(embeddings, labels, seed)
        n = tf.shape(embeddings)[0]
        return _scatter_mask(tf.stack([a, p], 1), [n, n]), _scatter_mask(tf.stack([a, neg], 1), [n, n])

    def triplet_mask(
        self, embeddings: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, references: References | None = None
    ) -> tf.Tensor:
        """The mined triplets as an (N, M, M) mask over (anchor, positive, negative)."""
        self._check_no_references(references)
        n = tf.shape(embeddings)[0]
        return _scatter_mask(tf.stack(self(embeddings, labels, seed), 1), [n, n, n])

    def _check_no_references(self, references: References | None) -> None:
        if references is not None:
            raise ValueError(f"the {self.name!r} miner mines within the batch; with references use 'all' or "
                             "'multi-similarity'")

    def get_config(self) -> dict[str, Any]:
        return {"margin": self.margin}


class PairMiner(Miner):
    """Base class of the pair miners: subclasses implement :meth:`mine_pairs` on the candidate pair masks."""

    default_distance = "euclidean"

    def __init__(self, distance: str | dict | distances_lib.Distance | None = None):
        self.distance = distances_lib.get(distance, self.default_distance)

    def mine_pairs(self, matrix: tf.Tensor, positives: tf.Tensor, negatives: tf.Tensor) -> PairMasks:
        raise NotImplementedError

    def pair_masks(self, embeddings, labels, seed, references=None):
        embeddings = tf.stop_gradient(tf.cast(embeddings, tf.float32))
        refs = None if references is None else tf.stop_gradient(tf.cast(references.embeddings, tf.float32))
        positives, negatives = candidate_pairs(labels, references)
        return self.mine_pairs(self.distance(embeddings, refs), positives, negatives)

    def triplet_mask(self, embeddings, labels, seed, references=None):
        positives, negatives = self.pair_masks(embeddings, labels, seed, references)
        return positives[:, :, None] & negatives[:, None, :]

    def mine(self, embeddings, labels, seed):
        triplets = tf.cast(tf.where(self.triplet_mask(embeddings, labels, seed)), tf.int32)
        return triplets[:, 0], triplets[:, 1], triplets[:, 2]

    def get_config(self) -> dict[str, Any]:
        return {"distance": distances_lib.serialize(self.distance)}


class AllMiner(PairMiner):
    """Every valid pair and triplet of the batch: what pytorch-metric-learning's losses use without a miner."""

    name = "all"

    def __init__(self):
        super().__init__()

    def pair_masks(self, embeddings, labels, seed, references=None):
        return candidate_pairs(labels, references)

    def get_config(self):
        return {}


class MultiSimilarityMiner(PairMiner):
    """Multi-similarity pair mining (Wang et al., "Multi-Similarity Loss with General Pair Weighting for
    Deep Metric Learning", CVPR 2019, eq. 5-6), as pytorch-metric-learning's ``MultiSimilarityMiner``.

    With a similarity S: a negative pair is kept when ``S_an + epsilon > min_p S_ap`` (eq. 5), a
    positive pair when ``S_ap - epsilon < max_n S_an`` (eq. 6); with a distance the inequalities
    turn around. Cosine similarity by default.
    """

    name = "multi-similarity"
    default_distance = "cosine"

    def __init__(self, epsilon: float = 0.1, distance: str | dict | distances_lib.Distance | None = None):
        super().__init__(distance)
        self.epsilon = float(epsilon)

    def mine_pairs(self, matrix, positives, negatives):
        eps = self.epsilon
        if self.distance.is_inverted:  # similarities: the nearest negative has the largest value
            hard_positives = positives & (matrix - eps < _row_max(matrix, negatives))
            hard_negatives = negatives & (matrix + eps > _row_min(matrix, positives))
        else:
            hard_positives = positives & (matrix + eps > _row_min(matrix, negatives))
            hard_negatives = negatives & (matrix - eps < _row_max(matrix, positives))
        return hard_positives, hard_negatives

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def _row_max(matrix: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """(N, 1) largest masked entry of each row; -inf for an empty row (no pair passes a comparison with it)."""
    return tf.reduce_max(tf.where(mask, matrix, -float("inf")), axis=1, keepdims=True)


def _row_min(matrix: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """(N, 1) smallest masked entry of each row; +inf for an empty row."""
    return tf.reduce_min(tf.where(mask, matrix, float("inf")), axis=1, keepdims=True)


class RandomMiner(Miner):
    """Every positive pair (a, p) with one negative drawn uniformly from the batch."""

    name = "random"

    def mine(self, embeddings, labels, seed):
        anchors, positives, _, negative_mask = _positive_pairs(labels)
        logits = tf.where(tf.gather(negative_mask, anchors), 0.0, _NEG_INF)
        return anchors, positives, ops.sample_columns(logits, seed)


class SemiHardMiner(Miner):
    """FaceNet's semi-hard negatives (Schroff et al. 2015, Sec. 3.2).

    For each positive pair, the closest negative that is farther than the positive
    (``d_an > d_ap``); when none exists, the farthest negative (the convention of
    TensorFlow Addons' ``triplet_semihard_loss``). Distances are squared Euclidean.
    """

    name = "semi-hard"

    def mine(self, embeddings, labels, seed):
        anchors, positives, _, negative_mask = _positive_pairs(labels)
        d2 = ops.pairwise_squared_distances(embeddings)
        d_an = tf.gather(d2, anchors)                                    # (T, N)
        d_ap = tf.gather_nd(d2, tf.stack([anchors, positives], axis=1))[:, None]
        is_negative = tf.gather(negative_mask, anchors)
        outside = tf.logical_and(is_negative, d_an > d_ap)
        closest_outside = tf.argmin(tf.where(outside, d_an, float("inf")), axis=1, output_type=tf.int32)
        farthest = tf.argmax(tf.where(is_negative, d_an, -1.0), axis=1, output_type=tf.int32)
        negatives = tf.where(tf.reduce_any(outside, axis=1), closest_outside, farthest)
        return anchors, positives, negatives


class HardMiner(Miner):
    """Batch-hard mining (Hermans et al. 2017): per anchor, its farthest positive and closest negative."""

    name = "hard"

    def mine(self, embeddings, labels, seed):
        positive_mask, negative_mask = ops.same_class_masks(labels)
        d2 = ops.pairwise_squared_distances(embeddings)
        has_positive = tf.reduce_any(positive_mask, axis=1)
        anchors = tf.cast(tf.reshape(tf.where(has_positive), [-1]), tf.int32)
        rows = tf.gather(d2, anchors)
        positives = tf.argmax(tf.where(tf.gather(positive_mask, anchors), rows, -1.0), axis=1, output_type=tf.int32)
        negatives = tf.argmin(
            tf.where(tf.gather(negative_mask, anchors), rows, float("inf")), axis=1, output_type=tf.int32
        )
        return anchors, positives, negatives


class SoftHardMiner(Miner):
    """Soft-hard mining: moderate positives and moderate negatives (the THSG paper's "Soft", ref. [24]).

    The paper describes it only as "restricting the sampling set using moderate negatives and
    positives to avoid too confusing samples". Our reading: every positive pair except each
    anchor's hardest (farthest) positive when it has more than one; the negative drawn uniformly
    from the semi-hard band ``d_ap < d_an < d_ap + margin``, falling back to negatives with
    ``d_an >= d_ap`` and then to any negative. Distances are squared Euclidean.
    """

    name = "soft-hard"

    def mine(self, embeddings, labels, seed):
        anchors, positives, positive_mask, negative_mask = _positive_pairs(labels)
        d2 = ops.pairwise_squared_distances(embeddings)
        hardest_positive = tf.argmax(tf.where(positive_mask, d2, -1.0), axis=1, output_type=tf.int32)
        positives_per_anchor = tf.reduce_sum(tf.cast(positive_mask, tf.int32), axis=1)
        keep = tf.logical_or(
            tf.gather(positives_per_anchor, anchors) < 2,
            tf.not_equal(positives, tf.gather(hardest_positive, anchors)),
        )
        anchors, positives = tf.boolean_mask(anchors, keep), tf.boolean_mask(positives, keep)
        d_an = tf.gather(d2, anchors)
        d_ap = tf.gather_nd(d2, tf.stack([anchors, positives], axis=1))[:, None]
        is_negative = tf.gather(negative_mask, anchors)
        band = is_negative & (d_an > d_ap) & (d_an < d_ap + self.margin)
        not_harder = is_negative & (d_an >= d_ap)
        chosen = tf.where(
            tf.reduce_any(band, axis=1, keepdims=True), band,
            tf.where(tf.reduce_any(not_harder, axis=1, keepdims=True), not_harder, is_negative),
        )
        return anchors, positives, ops.sample_columns(tf.where(chosen, 0.0, _NEG_INF), seed)


class DistanceWeightedMiner(Miner):
    """Distance-weighted sampling (Wu et al. 2017, Sec. 4, eq. 3).

    On the unit sphere in R^n the pairwise distance density is
    ``q(d) ∝ d^(n-2) (1 - d^2/4)^((n-3)/2)``; negatives are drawn with probability ∝ 1/q(d),
    with d clipped below at ``cutoff`` (0.5) and negatives beyond ``nonzero_loss_cutoff`` (1.4)
    excluded, as in the paper. Distances here are plain Euclidean on L2-normalised embeddings.
    """

    name = "distance-weighted"

    def __init__(self, margin: float = 0.2, cutoff: float = 0.5, nonzero_loss_cutoff: float = 1.4):
        super().__init__(margin)
        self.cutoff = float(cutoff)
        self.nonzero_loss_cutoff = float(nonzero_loss_cutoff)

    def mine(self, embeddings, labels, seed):
        anchors, positives, _, negative_mask = _positive_pairs(labels)
        dim = tf.cast(tf.shape(embeddings)[1], tf.float32)
        d = tf.maximum(ops.pairwise_distances(embeddings), self.cutoff)
        log_q = (dim - 2.0) * tf.math.log(d) + (dim - 3.0) / 2.0 * tf.math.log(
            tf.maximum(1.0 - 0.25 * tf.square(d), 1e-8)
        )
        allowed = negative_mask & (d < self.nonzero_loss_cutoff)
        allowed = tf.where(tf.reduce_any(allowed, axis=1, keepdims=True), allowed, negative_mask)
        logits = tf.where(allowed, -log_q, _NEG_INF)
        logits = logits - tf.reduce_max(logits, axis=1, keepdims=True)
        return anchors, positives, ops.sample_columns(tf.gather(logits, anchors), seed)

    def get_config(self):
        return {**super().get_config(), "cutoff": self.cutoff, "nonzero_loss_cutoff": self.nonzero_loss_cutoff}


MINERS: dict[str, type[Miner]] = {
    cls.name: cls
    for cls in (
        AllMiner, MultiSimilarityMiner, RandomMiner, SemiHardMiner, SoftHardMiner, HardMiner, DistanceWeightedMiner
    )
}


def get(identifier: str | dict | Miner, **kwargs: Any) -> Miner:
    """A miner from its name (``"semi-hard"``), a ``{"name": ..., "config": ...}`` dict, or an instance."""
    if isinstance(identifier, Miner):
        return identifier
    if isinstance(identifier, dict):
        return get(identifier["name"], **{**identifier.get("config", {}), **kwargs})
    if identifier not in MINERS:
        raise ValueError(f"unknown miner {identifier!r}; choose one of {sorted(MINERS)}")
    return MINERS[identifier](**kwargs)


def serialize(miner: Miner) -> dict[str, Any]:
    return {"name": miner.name, "config": miner.get_config()}

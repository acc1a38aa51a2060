"""The pair miners ('all', 'multi-similarity') and the mask forms every miner gives, on hand-made batches."""

import numpy as np
import pytest
import tensorflow as tf

from zoo import distances, miners

SEED = tf.zeros([2], tf.int64)


def masks_as_pairs(mask: tf.Tensor) -> set[tuple[int, ...]]:
    return {tuple(i) for i in tf.where(mask).numpy().tolist()}


def test_all_miner_gives_every_valid_pair_and_triplet():
    e, y = tf.zeros([3, 2]), tf.constant([0, 0, 1])
    positives, negatives = miners.get("all").pair_masks(e, y, SEED)
    assert masks_as_pairs(positives) == {(0, 1), (1, 0)}
    assert masks_as_pairs(negatives) == {(0, 2), (1, 2), (2, 0), (2, 1)}
    assert masks_as_pairs(miners.get("all").triplet_mask(e, y, SEED)) == {(0, 1, 2), (1, 0, 2)}
    a, p, n = miners.get("all")(e, y, SEED)
    assert sorted(zip(a.numpy(), p.numpy(), n.numpy())) == [(0, 1, 2), (1, 0, 2)]


def test_all_miner_against_references_skips_what_is_not_comparable():
    y, ref_y = tf.constant([0, 1]), tf.constant([0, 0, 1])
    comparable = tf.constant([[False, True, True], [True, True, False]])  # e.g. oneself, an empty slot
    references = miners.References(tf.zeros([3, 2]), ref_y, comparable)
    positives, negatives = miners.get("all").pair_masks(tf.zeros([2, 2]), y, SEED, references)
    assert masks_as_pairs(positives) == {(0, 1)}
    assert masks_as_pairs(negatives) == {(0, 2), (1, 0), (1, 1)}


def test_multi_similarity_miner_keeps_the_informative_pairs_by_hand():
    # cosine similarities to anchor 0 = (1, 0): positives .6 (x1) and .95 (x2), negatives .4 (x3) and -1 (x4)
    e = tf.constant([[1.0, 0.0], [0.6, 0.8], [0.95, 0.31225], [0.4, 0.916515], [-1.0, 0.0]])
    y = tf.constant([0, 0, 0, 1, 1])
    row = lambda mask: {j for i, j in masks_as_pairs(mask) if i == 0}
    # epsilon .1: a positive is kept when S_ap - .1 < max_n S_an = .4 (eq. 6): neither .6 nor .95;
    # a negative when S_an + .1 > min_p S_ap = .6 (eq. 5): neither .4 nor -1
    positives, negatives = miners.get("multi-similarity", epsilon=0.1).pair_masks(e, y, SEED)
    assert row(positives) == set() and row(negatives) == set()
    # epsilon .25: .6 - .25 < .4 keeps x1; .4 + .25 > .6 keeps x3
    positives, negatives = miners.get("multi-similarity", epsilon=0.25).pair_masks(e, y, SEED)
    assert row(positives) == {1} and row(negatives) == {3}


def test_multi_similarity_miner_with_a_distance_turns_the_inequalities_around():
    e = tf.constant([[0.0], [1.0], [3.0], [1.5], [10.0]])
    y = tf.constant([0, 0, 0, 1, 1])
    raw = distances.EuclideanDistance(normalize_embeddings=False)
    positives, negatives = miners.MultiSimilarityMiner(epsilon=0.1, distance=raw).pair_masks(e, y, SEED)
    row = lambda mask: {j for i, j in masks_as_pairs(mask) if i == 0}
    # anchor 0: positives at d 1 and 3, negatives at 1.5 and 10: keep positives with d + .1 > 1.5 (3),
    # negatives with d - .1 < 3 (1.5)
    assert row(positives) == {2} and row(negatives) == {3}


def test_triplet_miners_give_their_triplets_as_masks():
    rng = np.random.default_rng(0)
    e = tf.constant(rng.normal(size=(8, 4)), tf.float32)
    y = tf.constant(np.repeat(np.arange(4), 2), tf.int32)
    miner = miners.get("hard")
    a, p, n = (t.numpy() for t in miner(e, y, SEED))
    assert masks_as_pairs(miner.triplet_mask(e, y, SEED)) == set(zip(a, p, n))
    positives, negatives = miner.pair_masks(e, y, SEED)
    assert masks_as_pairs(positives) == set(zip(a, p)) and masks_as_pairs(negatives) == set(zip(a, n))
    with pytest.raises(ValueError, match="mines within the batch"):
        miner.pair_masks(e, y, SEED, miners.References(e, y))


def test_pair_miners_serialise():
    miner = miners.get("multi-similarity", epsilon=0.3, distance="euclidean")
    again = miners.get(miners.serialize(miner))
    assert isinstance(again, miners.MultiSimilarityMiner) and again.epsilon == 0.3
    assert isinstance(again.distance, distances.EuclideanDistance)
    assert isinstance(miners.get(miners.serialize(miners.get("all"))), miners.AllMiner)

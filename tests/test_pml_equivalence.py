"""The zoo's losses and miners against pytorch-metric-learning's own outputs (no torch needed).

tests/fixtures/pml_losses.json is written by benchmarks/peer/pml_losses.py in the peer environment
(``pip install -e ".[peer]"``); it holds the seeded inputs and PML's values and gradients.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from zoo import losses, miners

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "pml_losses.json").read_text())
INPUTS = sorted(FIXTURE["inputs"])
RTOL = 1e-4  # float32 sized: the two libraries sum in different orders


def batch(input_name: str) -> tuple[tf.Tensor, tf.Tensor]:
    data = FIXTURE["inputs"][input_name]
    return tf.constant(data["embeddings"], tf.float32), tf.constant(data["labels"], tf.int32)


def zoo_loss(pml_name: str, case: dict) -> losses.MetricLoss:
    loss = PML_FACTORIES[pml_name]()
    if "proxies" in case:
        loss.proxies.assign(np.array(case["proxies"], np.float32))
    return loss


PML_FACTORIES = {name: factory for name, (_, factory) in losses.PML_EQUIVALENTS.items()}


def test_the_fixture_covers_every_equivalent_with_the_same_kwargs():
    assert set(FIXTURE["losses"]) == set(losses.PML_EQUIVALENTS)
    for name, (kwargs, _) in losses.PML_EQUIVALENTS.items():
        assert FIXTURE["losses"][name]["kwargs"] == kwargs, f"{name}: rerun benchmarks/peer/pml_losses.py"


@pytest.mark.parametrize("input_name", INPUTS)
@pytest.mark.parametrize("pml_name", sorted(losses.PML_EQUIVALENTS))
def test_value_and_gradient_equal_pml(pml_name, input_name):
    case = FIXTURE["losses"][pml_name]["cases"][input_name]
    embeddings, labels = batch(input_name)
    loss = zoo_loss(pml_name, case)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(embeddings)
        value = loss(embeddings, labels)
    assert float(value) == pytest.approx(case["value"], rel=RTOL)
    grad = tf.convert_to_tensor(tape.gradient(value, embeddings)).numpy()
    expected = np.array(case["grad"])
    np.testing.assert_allclose(grad, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
    if "proxies_grad" in case:
        expected = np.array(case["proxies_grad"])
        grad = tape.gradient(value, loss.proxies).numpy()
        np.testing.assert_allclose(grad, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


def pairs(mask: tf.Tensor) -> list[list[int]]:
    return sorted(tf.where(mask).numpy().tolist())


@pytest.mark.parametrize("input_name", INPUTS)
def test_miners_pick_the_same_pairs_and_triplets_as_pml(input_name):
    expected = FIXTURE["miners"][input_name]
    embeddings, labels = batch(input_name)
    seed = tf.zeros([2], tf.int64)
    positives, negatives = miners.get("multi-similarity").pair_masks(embeddings, labels, seed)
    assert pairs(positives) == expected["multi_similarity"]["positives"]
    assert pairs(negatives) == expected["multi_similarity"]["negatives"]
    all_miner = miners.get("all")
    positives, negatives = all_miner.pair_masks(embeddings, labels, seed)
    assert pairs(positives) == expected["all"]["positives"]
    assert pairs(negatives) == expected["all"]["negatives"]
    triplets = zip(*(t.numpy().tolist() for t in all_miner(embeddings, labels, seed)))
    digest = hashlib.sha256(json.dumps(sorted([a, p, n] for a, p, n in triplets)).encode()).hexdigest()
    assert digest == expected["all"]["triplets_sha256"]


@pytest.mark.parametrize("pml_name", sorted(FIXTURE["xbm"]))
def test_cross_batch_memory_equals_pml_over_a_sequence_of_batches(pml_name):
    entry = FIXTURE["xbm"][pml_name]
    inner = {"ContrastiveLoss": losses.ContrastiveLoss, "TripletMarginLoss": losses.TripletLoss,
             "MultiSimilarityLoss": losses.MultiSimilarityLoss}[pml_name](**entry["kwargs"])
    xbm = losses.CrossBatchMemory(inner, embedding_dim=losses.PML_EMBEDDING_DIM, memory_size=FIXTURE["xbm_memory_size"])
    order = list(FIXTURE["inputs"])  # the script's order of batches
    values = [float(xbm(*batch(name))) for name in order]
    np.testing.assert_allclose(values, entry["values"], rtol=RTOL)

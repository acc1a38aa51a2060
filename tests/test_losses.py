"""Losses and miners on hand-made batches: every expected number is worked out by hand in the comments."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import losses, miners
from zoo.methods import build_model
from zoo.methods.metric_model import MetricModel


def line(*xs: float) -> tf.Tensor:
    """Points on the x axis of the plane."""
    return tf.constant([[x, 0.0] for x in xs], tf.float32)


def labels(*ys: int) -> tf.Tensor:
    return tf.constant(ys, tf.int32)


def triplets(miner, embeddings, y, seed=(0, 0)):
    return [t.numpy().tolist() for t in miner(embeddings, y, tf.constant(seed, tf.int64))]


# ---- miners --------------------------------------------------------------------------------------
def test_semi_hard_picks_the_closest_negative_beyond_the_positive_else_the_farthest():
    # x: a=0, p=1 (class 0); negatives 0.5 (d2 0.25, harder than p), 1.2 (d2 1.44), 2.0 (d2 4).
    e, y = line(0.0, 1.0, 0.5, 1.2, 2.0), labels(0, 0, 1, 1, 1)
    a, p, n = triplets(miners.get("semi-hard"), e, y)
    chosen = dict(zip(zip(a, p), n))
    assert chosen[(0, 1)] == 3  # 1.2: the closest with d_an > d_ap = 1
    # a=1, p=0 (d2 1): negatives at d2 0.25, 0.04, 1.0: none strictly farther -> the farthest, 2.0
    assert chosen[(1, 0)] == 4


def test_hard_miner_takes_the_farthest_positive_and_the_closest_negative():
    e, y = line(0.0, 1.0, 3.0, 1.5, 5.0), labels(0, 0, 0, 1, 1)
    a, p, n = triplets(miners.get("hard"), e, y)
    assert a == [0, 1, 2, 3, 4]
    assert p == [2, 2, 0, 4, 3]  # farthest same-class point
    assert n == [3, 3, 3, 1, 2]  # closest other-class point (x=1.5 for class 0; 1.0 and 3.0 for class 1)


def test_distance_weighted_never_picks_a_positive():
    rng = np.random.default_rng(1)
    e = tf.math.l2_normalize(tf.constant(rng.normal(size=(24, 16)), tf.float32), axis=1)
    y = tf.constant(np.repeat(np.arange(6), 4), tf.int32)
    miner = miners.get("distance-weighted")
    for seed in range(5):
        a, p, n = triplets(miner, e, y, (seed, 3))
        assert len(a) == 6 * 4 * 3
        assert all(y[i] != y[j] for i, j in zip(a, n))
        assert all(y[i] == y[j] and i != j for i, j in zip(a, p))


def test_random_miner_is_deterministic_for_a_seed_and_only_picks_negatives():
    rng = np.random.default_rng(2)
    e = tf.constant(rng.normal(size=(16, 4)), tf.float32)
    y = tf.constant(np.repeat(np.arange(4), 4), tf.int32)
    miner = miners.get("random")
    first, again, other = triplets(miner, e, y, (7, 1)), triplets(miner, e, y, (7, 1)), triplets(miner, e, y, (7, 2))
    assert first == again
    assert first[2] != other[2]
    assert all(y[i] != y[j] for i, j in zip(first[0], first[2]))


def test_soft_hard_drops_the_hardest_positive_and_draws_from_the_semi_hard_band():
    # class 0 at x = 0, 1, 2; anchor 0's hardest positive is 2 (d2 4) and is dropped; for (0, 1)
    # (d2 1) the band 1 < d2 < 1.2 holds only x=-1.05 (d2 1.1025); x=0.5 is harder, x=3 too far.
    e, y = line(0.0, 1.0, 2.0, 0.5, -1.05, 3.0), labels(0, 0, 0, 1, 1, 1)
    a, p, n = triplets(miners.get("soft-hard"), e, y, (0, 5))
    pairs = dict(zip(zip(a, p), n))
    assert (0, 2) not in pairs and (0, 1) in pairs
    assert pairs[(0, 1)] == 4


def test_miners_get_and_serialize():
    miner = miners.get("distance-weighted", cutoff=0.3)
    again = miners.get(miners.serialize(miner))
    assert isinstance(again, miners.DistanceWeightedMiner) and again.cutoff == 0.3
    with pytest.raises(ValueError, match="unknown miner 'hardest'"):
        miners.get("hardest")


# ---- existing losses -----------------------------------------------------------------------------
def test_triplet_loss_function_by_hand():
    a, p = tf.constant([[0.0, 0.0]] * 2), tf.constant([[1.0, 0.0]] * 2)
    n = tf.constant([[0.0, 2.0], [0.5, 0.0]])
    # squared: [1 - 4 + .2]_+ = 0 and [1 - .25 + .2]_+ = .95 -> mean .475
    assert float(losses.triplet_loss(a, p, n, 0.2)) == pytest.approx(0.475)
    # plain distances: [1 - 2 + .2]_+ = 0 and [1 - .5 + .2]_+ = .7 -> mean .35
    assert float(losses.triplet_loss(a, p, n, 0.2, squared=False)) == pytest.approx(0.35, abs=1e-5)
    assert float(losses.triplet_loss(a[:0], p[:0], n[:0])) == 0.0


def test_triplet_loss_with_batch_hard_mining_by_hand():
    # class 0 at 0 and 1, class 1 at 1.5 and 3; hard triplets (a, p, n):
    # (0,1,2): 1 - 2.25 + .2 < 0; (1,0,2): 1 - .25 + .2 = .95; (2,3,1): 2.25 - .25 + .2 = 2.2;
    # (3,2,1): 2.25 - 4 + .2 < 0  -> mean (.95 + 2.2) / 4 = .7875
    loss = losses.TripletLoss(miner="hard")
    assert float(loss(line(0.0, 1.0, 1.5, 3.0), labels(0, 0, 1, 1))) == pytest.approx(0.7875)
    # anchor_mask: only anchors 1 and 3 -> (.95 + 0) / 2
    mask = tf.constant([False, True, False, True])
    assert float(loss(line(0.0, 1.0, 1.5, 3.0), labels(0, 0, 1, 1), anchor_mask=mask)) == pytest.approx(0.475)


def test_contrastive_loss_by_hand_and_with_an_anchor_mask():
    e, y = line(0.0, 0.5, 0.8), labels(0, 0, 1)
    # positives (0,1),(1,0): d = .5 -> .25; negatives (0,2),(2,0): [1 - .8]^2 = .04, (1,2),(2,1): [1 - .3]^2 = .49
    assert float(losses.ContrastiveLoss()(e, y)) == pytest.approx(0.25 + (0.04 + 0.49) / 2)
    # anchor 0 only: the pair (1, 2) between two non-anchors is ignored
    mask = tf.constant([True, False, False])
    assert float(losses.ContrastiveLoss()(e, y, anchor_mask=mask)) == pytest.approx(0.25 + 0.04)


def test_margin_loss_by_hand_and_its_beta_is_trained():
    # class 0 at 0 and 1.5, class 1 at .5 and 3; batch-hard pairs, alpha .2, beta 1.2:
    # positives d = 1.5, 1.5, 2.5, 2.5 -> [.2 + d - 1.2]_+ = .5, .5, 1.5, 1.5
    # negatives d = .5, 1, .5, 1.5 -> [.2 - (d - 1.2)]_+ = .9, .4, .9, 0 -> 6.2 over 7 active terms
    loss = losses.MarginLoss(miner="hard")
    e = tf.Variable(line(0.0, 1.5, 0.5, 3.0))
    with tf.GradientTape() as tape:
        value = loss(e, labels(0, 0, 1, 1))
    assert float(value) == pytest.approx(6.2 / 7, abs=1e-5)
    grads = tape.gradient(value, [loss.beta, e])
    # d/d beta: -1 per active positive term (4), +1 per active negative term (3) -> -1/7
    assert float(grads[0]) == pytest.approx(-1 / 7, abs=1e-5)
    assert loss.trainable_weights == [loss.beta]


# ---- lifted structured ---------------------------------------------------------------------------
def test_lifted_structured_loss_by_hand():
    # positive pair (0, 1), D = .5; negatives of 0: D(0,2) = 1.5; of 1: D(1,2) = 1
    # J = log(exp(1 - 1.5) + exp(1 - 1)) + .5; loss = J^2 / (2 |P|), |P| = 1
    j = math.log(math.exp(-0.5) + 1.0) + 0.5
    e, y = line(0.0, 0.5, 1.5), labels(0, 0, 1)
    assert float(losses.LiftedStructuredLoss()(e, y)) == pytest.approx(j**2 / 2, abs=1e-5)
    # anchor 1 only: the negative pair (0, 2) joins two non-anchors and is dropped: J = log(e^0) + .5
    mask = tf.constant([False, True, False])
    assert float(losses.LiftedStructuredLoss()(e, y, anchor_mask=mask)) == pytest.approx(0.125, abs=1e-5)


def test_lifted_structured_loss_averages_over_unordered_positive_pairs():
    # two classes of 2: pairs (0,1) D=1 and (2,3) D=1; negatives of every point at distance >= 2
    e, y = line(0.0, 1.0, 3.0, 4.0), labels(0, 0, 1, 1)
    d = lambda a, b: abs(a - b)
    x = [0.0, 1.0, 3.0, 4.0]
    neg = lambda i: [k for k in range(4) if y[k] != y[i]]
    total = 0.0
    for i, j in ((0, 1), (2, 3)):
        s = sum(math.exp(1 - d(x[i], x[k])) for k in neg(i)) + sum(math.exp(1 - d(x[j], x[k])) for k in neg(j))
        total += max(0.0, math.log(s) + d(x[i], x[j])) ** 2
    assert float(losses.LiftedStructuredLoss()(e, y)) == pytest.approx(total / (2 * 2), abs=1e-5)


def test_lifted_structured_loss_has_finite_gradients_when_a_pair_has_no_negative():
    e = tf.Variable(line(0.0, 0.5, 2.0))
    mask = tf.constant([True, False, False])
    with tf.GradientTape() as tape:
        # labels 0, 0, 0: no negative at all
        value = losses.LiftedStructuredLoss()(e, labels(0, 0, 0), anchor_mask=mask)
    grad = tape.gradient(value, e)
    assert np.all(np.isfinite(grad.numpy()))


# ---- N-pair and angular --------------------------------------------------------------------------
NPAIR_E = tf.constant([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.0, -1.0]])  # a0, p0, a1, p1
NPAIR_Y = labels(0, 0, 1, 1)


def test_anchor_positive_pairs_take_the_first_image_of_each_class_or_the_mask():
    a, p, mask = losses.anchor_positive_pairs(labels(2, 5, 2, 5, 2))
    assert a.numpy().tolist() == [0, 0, 1] and p.numpy().tolist() == [2, 4, 3]
    assert mask.numpy().tolist() == [True, True, False, False, False]
    a, p, _ = losses.anchor_positive_pairs(labels(2, 5, 2, 5, 2), tf.constant([False, False, True, True, False]))
    assert a.numpy().tolist() == [2, 2, 3] and p.numpy().tolist() == [0, 4, 1]


def test_npair_loss_by_hand():
    # pair (a0, p0): log(1 + exp(a0.p1 - a0.p0)) = log(1 + e^(0 - .6))
    # pair (a1, p1): log(1 + exp(a1.p0 - a1.p1)) = log(1 + e^(.8 + 1))
    expected = (math.log(1 + math.exp(-0.6)) + math.log(1 + math.exp(1.8))) / 2
    assert float(losses.NPairLoss()(NPAIR_E, NPAIR_Y)) == pytest.approx(expected, abs=1e-5)


def test_angular_loss_by_hand():
    # alpha = 45 deg: tan^2 = 1, f = 4 (x_a + x_p).x_n - 4 x_a.x_p; negatives: all other-class points
    # (a0, p0): x_a + x_p = (1.6, .8); x_n = a1 -> 3.2 - 2.4 = .8; x_n = p1 -> -3.2 - 2.4 = -5.6
    # (a1, p1): x_a + x_p = 0; x_a.x_p = -1 -> f = 4 for both negatives a0, p0
    l_ang = (math.log(1 + math.exp(0.8) + math.exp(-5.6)) + math.log(1 + 2 * math.exp(4.0))) / 2
    l_npair = (math.log(1 + math.exp(-0.6)) + math.log(1 + math.exp(1.8))) / 2
    only_angular = losses.AngularLoss(npair_weight=0.0, angular_weight=1.0)
    assert float(only_angular(NPAIR_E, NPAIR_Y)) == pytest.approx(l_ang, abs=1e-4)
    assert float(losses.AngularLoss()(NPAIR_E, NPAIR_Y)) == pytest.approx(l_npair + 2 * l_ang, abs=1e-4)


def test_angular_loss_rejects_an_angle_out_of_range():
    with pytest.raises(ValueError, match="alpha is an angle in degrees"):
        losses.AngularLoss(alpha=90)


# ---- Proxy-NCA -----------------------------------------------------------------------------------
def test_proxy_nca_loss_by_hand():
    proxies = tf.constant([[2.0, 0.0], [0.0, 3.0]])  # normalised to (1, 0) and (0, 1)
    e = tf.constant([[1.0, 0.0], [0.6, 0.8]])
    # x0 = (1,0), class 0: d_own = 0, d_other = 2 -> 0 + log(e^-2) = -2
    # x1 = (.6,.8), class 1: d_own = .36 + .04 = .4, d_other = .16 + .64 = .8 -> .4 - .8 = -.4
    assert float(losses.proxy_nca_loss(e, labels(0, 1), proxies)) == pytest.approx(-1.2, abs=1e-5)


def test_proxy_nca_proxies_are_trained_by_the_model_and_survive_save_load(tmp_path):
    loss = losses.get("proxy-nca", num_classes=4)
    model = build_model("triplet", embedding_dim=8, input_size=16, loss=loss)
    images = np.random.default_rng(0).uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    y = np.repeat(np.arange(4), 2).astype("int32")
    with tf.GradientTape() as tape:
        value = model.metric_loss(model(images, training=True), y)
    assert loss.proxies.shape == (4, 8)
    assert any(v is loss.proxies for v in model.trainable_variables)
    grad = tape.gradient(value, loss.proxies)
    assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0
    path = tmp_path / "proxy.keras"
    model.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_allclose(again.metric_loss.proxies.numpy(), loss.proxies.numpy())
    assert again.metric_loss.get_config()["num_classes"] == 4


def test_proxy_nca_errors():
    with pytest.raises(ValueError, match="num_classes >= 2"):
        losses.ProxyNCALoss(num_classes=1)
    with pytest.raises(ValueError, match="takes no anchor_mask"):
        losses.ProxyNCALoss(num_classes=2, embedding_dim=2)(NPAIR_E, NPAIR_Y % 2, anchor_mask=tf.constant([True] * 4))


# ---- registry and serialisation ------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, config",
    [
        ("lifted", {"margin": 0.5}),
        ("npair", {}),
        ("angular", {"alpha": 36.0, "npair_weight": 0.0, "angular_weight": 1.0}),
        ("proxy-nca", {"num_classes": 3, "embedding_dim": 2}),
        ("triplet", {"miner": "hard", "margin": 0.1}),
        ("contrastive", {"neg_margin": 0.5}),
        ("margin", {"beta": 1.0}),
    ],
)
def test_losses_serialise_and_give_the_same_value(name, config):
    loss = losses.get(name, **config)
    again = losses.get(keras.saving.serialize_keras_object(loss))
    assert type(again) is type(loss)
    for key, value in config.items():
        assert again.get_config()[key] == (miners.serialize(loss.miner) if key == "miner" else value)
    if name == "proxy-nca":
        again.proxies.assign(loss.proxies)
    e = tf.math.l2_normalize(tf.constant(np.random.default_rng(3).normal(size=(6, 2)), tf.float32), axis=1)
    y = labels(0, 0, 1, 1, 2, 2)
    seed = tf.constant([0, 0], tf.int64)
    assert float(again(e, y, seed)) == pytest.approx(float(loss(e, y, seed)), abs=1e-6)


def test_losses_get_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown loss 'proxy'; choose one of"):
        losses.get("proxy")


def test_every_loss_is_float32_under_mixed_precision_inputs():
    e = tf.cast(NPAIR_E, tf.float16)
    for name in ("lifted", "npair", "angular", "contrastive"):
        assert losses.get(name)(e, NPAIR_Y).dtype == tf.float32
    assert losses.ProxyNCALoss(2, embedding_dim=2)(e, NPAIR_Y).dtype == tf.float32


def test_a_metric_model_trains_with_each_new_loss():
    images = np.random.default_rng(0).uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    y = np.repeat(np.arange(4), 2).astype("int32")
    for loss in (losses.LiftedStructuredLoss(), losses.NPairLoss(), losses.AngularLoss()):
        model = MetricModel(build_model("triplet", embedding_dim=8, input_size=16).embedding_net, loss=loss)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        before = [v.numpy().copy() for v in model.trainable_variables]
        logs = model.train_on_batch(images, y, return_dict=True)
        assert np.isfinite(logs["loss"]) and logs["loss"] > 0
        assert any(np.abs(b - v.numpy()).max() > 0 for b, v in zip(before, model.trainable_variables))


def test_proxy_nca_by_name_gets_one_trained_proxy_per_training_class():
    images = np.random.default_rng(0).uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    y = np.repeat(np.arange(4), 2).astype("int32")
    with pytest.raises(ValueError, match="needs num_classes"):
        build_model("triplet", embedding_dim=8, input_size=16, loss="proxy-nca")
    model = build_model("triplet", embedding_dim=8, input_size=16, loss="proxy-nca", num_classes=5)
    assert model.metric_loss.proxies.shape == (5, 8)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = model.metric_loss.proxies.numpy().copy()
    model.train_on_batch(images, y)
    assert np.abs(model.metric_loss.proxies.numpy() - before).max() > 0  # the optimizer trains the proxies


def test_a_metric_loss_trains_a_plain_keras_model_through_compile():
    from zoo.methods.topk import TopKPrecisionLoss

    images = np.random.default_rng(0).uniform(0, 255, (16, 16, 16, 3)).astype("float32")
    y = np.repeat(np.arange(4), 4).astype("int32")
    net = build_model("triplet", embedding_dim=8, input_size=16).embedding_net
    metric_loss = TopKPrecisionLoss(k=3, gamma=0.1)
    expected = float(metric_loss(net(images), tf.constant(y)))
    net.compile(optimizer=keras.optimizers.SGD(0.0), loss=losses.KerasMetricLoss(metric_loss))
    assert net.evaluate(images, y, batch_size=16, verbose=0) == pytest.approx(expected, rel=1e-5)
    assert expected > 0
    net.compile(optimizer=keras.optimizers.SGD(0.05), loss=losses.KerasMetricLoss("triplet"))
    history = net.fit(images, y, batch_size=16, epochs=5, shuffle=False, verbose=0).history["loss"]
    assert history[-1] < history[0]
    net.compile(optimizer="sgd", loss=losses.KerasMetricLoss(losses.ProxyNCALoss(num_classes=4)))
    with pytest.raises(ValueError, match="trainable weights"):
        net.train_on_batch(images, y)

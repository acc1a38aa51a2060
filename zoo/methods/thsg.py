"""THSG: two-stage hard sample generation for deep metric learning (Zhu et al., "Construct Informative Triplet
with Two-stage Hard-sample Generation", arXiv 2021).

The embedding net F learns from real triplets X = (a, p, n) and from hard triplets made of them in two stages
(Fig. 4). Stage 1: piecewise linear manipulation (PLM, eq. 9-11) stretches each anchor-positive pair to (a*, p*),
and G1 maps it to (a', p') against the conditional discriminator DG1 (eq. 12-16). Stage 2: G2 maps (a', p', n) to
the hard triplet X̂ = (â, p̂, n̂) with the adaptive reverse triplet (ART) loss, against the (C+1)-class DG2
(eq. 17-23). F, with the classifier CF, minimises eq. 5: e^(-β/L_G) L_t(X) + φ L_class + (1 - e^(-β/L_G)) L_t(X̂).
Algorithm 1, as ``train_step`` does it: embed the batch, X = F(I) (line 5); PLM with d_t (eq. 9-11); update DG1
(eq. 16), then G1 (eq. 12) (line 6); re-extract X' (line 7); update DG2 (eq. 23), then G2 (eq. 17) (lines 8-9);
re-extract X̂ and update F and CF on eq. 5 (lines 10-11). Line 2, pre-training F: the first ``pretrain_epochs``.

Readings (numbers: benchmarks/RESULTS.md, "THSG: readings measured", under the heading in brackets):

- Each loss is the paper's per-triplet sum (Sec. 4.1), averaged over the triplets of the global batch.
- d(a, p) of eq. 10-11 is squared, as d is in eq. 15 and 20 (``plm_squared_distance=False``: plain); λ is a
  per-pair constant (no gradient); a*, p* are not re-normalised.
- d_t (eq. 11) is the previous epoch's mean d(a, p), rolled over by :class:`DistanceThresholdUpdate` (one of
  ``training_callbacks()``); the first epoch, which has none, uses the running mean of the epoch so far.
- τr (eq. 19) uses the previous step's L_G2 (the two depend on each other), eq. 5's weight this step's; both
  detached, and the first τr is 0 (L_G2 starts at +inf).
- DG2's "0" (generated) class of eq. 23 is index C (labels are 0..C-1); eq. 16's ½ and eq. 23's 1/(C+1) as printed.
- CF learns only in the eq. 5 step (its own Adam); G1 and G2 use it as a fixed label critic (eq. 13, 21), as they
  use DG1 and DG2 (eq. 14, 22). F's gradient passes through PLM, G1 and G2 there (end-to-end, Sec. 4.2); the
  stage 1 and 2 updates see F's embeddings detached.
- Generation starts from random triplets; another ``miner`` replaces only L_org by the mined triplets' loss (eq. 25).
- Generators: "two fully connected layers with dimensions 128 and 512" (Sec. 6.2, 512 its embedding size), i.e.
  Dense(128, ReLU) -> Dense(D), L2-normalised. G1 maps a* and p* one by one; G2 maps the concatenation
  [a', p', n] to (â, p̂, n̂), because Sec. 5.4 makes the hard negative depend on the anchor-positive pair
  ["G2 on the whole triplet"]. DG1, DG2 (the paper does not describe them): Dense(hidden, ReLU) -> Dense(classes);
  CF: one Dense(C). All compute in float32.
- Pre-training (line 2) has no length in the paper: one epoch of L_t(X) alone, so that eq. 5's first epoch has the
  d_t of the pre-trained F; the sub-networks keep training meanwhile ["Pre-training F"].
- CF's learning rate: Sec. 6.2's ratio to F's, 100 (1e-3 / 1e-5), kept in ``thsg_glyphs`` (CF at 0.1 beside F's
  1e-3) ["CF's learning rate"].
- φ per dataset (Table 2: 0.5 CUB-200, 0.25 Cars196, 0.2 SOP); ``thsg_glyphs`` takes CUB-200's ["phi (eq. 5)"].
- φ with a miner: eq. 25 keeps φ but Sec. 6.5 gives none; ``mining_phi`` = 0.05 ["phi with a miner"].
- "Adam optimizer with 4e-4 weight decay" (Sec. 6.2) is PyTorch's coupled L2 (g + wd w): every sub-network's, and
  F's in the presets, is :class:`zoo.optimizers.PaperAdam` (Keras's decoupled decay would be lr * wd, i.e. nothing).
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import keras
import tensorflow as tf

from zoo import losses as losses_lib
from zoo import miners as miners_lib
from zoo import ops
from zoo.methods import DIGITS_PROTOCOL, glyphs_preset, paper_preset, register_method, with_imagenet
from zoo.methods.metric_model import MetricModel
from zoo.optimizers import PaperAdam


class Triplet(NamedTuple):
    """Anchor, positive and negative rows, aligned (T, ...) tensors."""

    anchor: tf.Tensor
    positive: tf.Tensor
    negative: tf.Tensor


# ---- loss math (pure functions, float32) -------------------------------------------------------------

def squared_distance(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Row-wise ``||x - y||^2`` (the paper's d(x, y), eq. 15 and 20)."""
    return tf.reduce_sum(tf.square(tf.cast(x, tf.float32) - tf.cast(y, tf.float32)), axis=-1)


def plm_lambda(distance: tf.Tensor, threshold: tf.Tensor, alpha: float, gamma: float) -> tf.Tensor:
    """THSG eq. (10): λ = α e^-(d - d_t) when d >= d_t, else α + γ (1 - d / d_t)."""
    distance = tf.cast(distance, tf.float32)
    threshold = tf.cast(threshold, tf.float32)
    far = alpha * tf.exp(-(distance - threshold))
    near = alpha + gamma * (1.0 - tf.math.divide_no_nan(distance, threshold))
    return tf.where(distance >= threshold, far, near)


def piecewise_linear_manipulation(
    anchor: tf.Tensor, positive: tf.Tensor, threshold: tf.Tensor, alpha: float, gamma: float, squared: bool = True
) -> tuple[tf.Tensor, tf.Tensor]:
    """THSG eq. (9): a* = a + λ (a - p), p* = p + λ (p - a), with λ of eq. (10) per pair (no gradient)."""
    anchor, positive = tf.cast(anchor, tf.float32), tf.cast(positive, tf.float32)
    distance = squared_distance(anchor, positive)
    if not squared:
        distance = tf.sqrt(distance)
    lam = tf.stop_gradient(plm_lambda(distance, threshold, alpha, gamma))[:, None]
    return anchor + lam * (anchor - positive), positive + lam * (positive - anchor)


def original_sample_weight(generator_loss: tf.Tensor, beta: float) -> tf.Tensor:
    """THSG eq. (5): the weight e^(-β / L_G) of L_org (that of L_hard is one minus it)."""
    return tf.exp(-beta / tf.maximum(tf.cast(generator_loss, tf.float32), 1e-12))


def adaptive_reverse_margin(generator_loss: tf.Tensor, nu: float, beta: float) -> tf.Tensor:
    """THSG eq. (19): τr = ν (1 - e^(-β / L_G2))."""
    return nu * (1.0 - original_sample_weight(generator_loss, beta))


def reconstruction_loss(targets: tuple[tf.Tensor, ...], outputs: tuple[tf.Tensor, ...]) -> tf.Tensor:
    """THSG eq. (15) and (20): Σ over the pair members of ||target - output||^2, mean over triplets."""
    return tf.add_n([tf.reduce_mean(squared_distance(t, o)) for t, o in zip(targets, outputs)])


def softmax_loss(logits: list[tf.Tensor], labels: list[tf.Tensor]) -> tf.Tensor:
    """Σ over a triplet's members of the softmax cross-entropy, mean over triplets (eq. 8, 13, 14, 21, 22).

    ``logits[m]`` (T, K) and ``labels[m]`` (T,) are the m-th member's logits and target classes.
    """
    return tf.add_n([losses_lib.softmax_cross_entropy(z, y) for z, y in zip(logits, labels)])


def discriminator1_loss(real_logits: list[tf.Tensor], fake_logits: list[tf.Tensor]) -> tf.Tensor:
    """THSG eq. (16): ½ {Σ L_sm(DG1([x, x*]), 1) + Σ L_sm(DG1([x', x*]), 0)}."""
    real = softmax_loss(real_logits, [tf.ones(tf.shape(z)[:1], tf.int32) for z in real_logits])
    fake = softmax_loss(fake_logits, [tf.zeros(tf.shape(z)[:1], tf.int32) for z in fake_logits])
    return 0.5 * (real + fake)


def discriminator2_loss(
    real_logits: list[tf.Tensor], real_labels: list[tf.Tensor], fake_logits: list[tf.Tensor], num_classes: int
) -> tf.Tensor:
    """THSG eq. (23): 1/(C+1) {Σ L_sm(DG2(x'), l_x') + Σ L_sm(DG2(x̂), generated)}; generated = class C."""
    generated = [tf.fill(tf.shape(z)[:1], num_classes) for z in fake_logits]
    return (softmax_loss(real_logits, real_labels) + softmax_loss(fake_logits, generated)) / (num_classes + 1)


def generator1_loss(class_loss: tf.Tensor, adversarial_loss: tf.Tensor, rec_loss: tf.Tensor, eta: float) -> tf.Tensor:
    """THSG eq. (12): L_G1 = η (L_class1 + L_adv) + (1 - 2η) L_rec1."""
    return eta * (class_loss + adversarial_loss) + (1.0 - 2.0 * eta) * rec_loss


def generator2_loss(
    art_loss: tf.Tensor, rec_loss: tf.Tensor, class_loss: tf.Tensor, adversarial_loss: tf.Tensor, eta: float, mu: float
) -> tf.Tensor:
    """THSG eq. (17): L_G2 = μ L_ART + (1 - 2η - μ) L_rec2 + η (L_class2 + L_adv2)."""
    return mu * art_loss + (1.0 - 2.0 * eta - mu) * rec_loss + eta * (class_loss + adversarial_loss)


def embedding_loss(
    original_loss: tf.Tensor, class_loss: tf.Tensor, hard_loss: tf.Tensor, original_weight: tf.Tensor, phi: float
) -> tf.Tensor:
    """THSG eq. (5): w L_org + φ L_class + (1 - w) L_hard, with w = e^(-β / L_G)."""
    return original_weight * original_loss + phi * class_loss + (1.0 - original_weight) * hard_loss


# ---- the model ---------------------------------------------------------------------------------------

def _dense_net(
    input_dim: int, hidden_units: int, outputs: int, name: str, normalize: bool = False, members: int = 1
) -> keras.Model:
    """Dense(hidden, ReLU) -> Dense(members x outputs) [-> (members, outputs) rows] [-> L2 norm of each], float32."""
    stack = [
        keras.Input((input_dim,)),
        keras.layers.Dense(hidden_units, activation="relu", dtype="float32"),
        keras.layers.Dense(members * outputs, dtype="float32"),
    ]
    if members > 1:
        stack.append(keras.layers.Reshape((members, outputs), dtype="float32"))
    if normalize:
        stack.append(keras.layers.UnitNormalization(axis=-1, dtype="float32"))
    return keras.Sequential(stack, name=name)


@register_method("thsg")
class THSG(MetricModel):
    """Two-stage hard sample generation (THSG) on top of a triplet-loss embedding net.

    Args:
        embedding_net: F, images -> L2-normalised embeddings.
        num_classes: C, the number of training classes (CF and DG2 classify into them).
        miner: triplets of L_org: "random" is THSG; "semi-hard", "soft-hard", "distance-weighted" give
            THSG(Semi/Soft/D) (eq. 25).
        margin: triplet margin τ (Sec. 6.2: 0.2).
        alpha, gamma: PLM's λ (eq. 10; Table 2: 0.2, 0.8).
        eta, mu: generator loss balance (eq. 12, 17; Table 2: 0.3, 0.3); needs 1 - 2η - μ >= 0.
        beta: β of the adaptive weights (eq. 5, 19; Table 2: 0.5).
        phi: weight of the category loss (eq. 5; Table 2: 0.5 CUB-200, 0.25 Cars196, 0.2 SOP).
        mining_phi: the category loss's weight with a miner (eq. 25), which Sec. 6.5 does not give: 0.05,
            measured (module docstring, "φ with a miner").
        nu: maximum reverse margin ν (eq. 19; Sec. 6.2: 0.2).
        hidden_units: first layer of the generators and discriminators (Sec. 6.2: 128).
        classifier_learning_rate, discriminator_learning_rate, generator_learning_rate: Adam learning
            rates (Sec. 6.2: 1e-3, 1e-4, 1e-3); F's optimizer is the one given to ``compile``.
        l2_weight_decay: coupled L2 weight decay (g + wd w) of those optimizers (Sec. 6.2: 4e-4).
        pretrain_epochs: epochs of plain triplet training of F first (Algorithm 1, line 2).
        plm_squared_distance: d(a, p) of eq. 10-11 squared (True) or plain.
        seed: base seed of the stateless triplet sampling.
    """

    FIXED_ARGUMENTS = ("loss",)  # L_t of eq. 6 (its miner: eq. 25)
    LOGGED_TERMS = ("l_org", "l_class", "l_hard", "l_g1", "l_d1", "l_g2", "l_d2", "tau_r", "d_t", "w_org")

    def __init__(
        self,
        embedding_net: keras.Model,
        *,
        num_classes: int,
        miner: str | dict = "random",
        margin: float = 0.2,
        alpha: float = 0.2,
        gamma: float = 0.8,
        eta: float = 0.3,
        beta: float = 0.5,
        mu: float = 0.3,
        phi: float = 0.5,
        mining_phi: float = 0.05,
        nu: float = 0.2,
        hidden_units: int = 128,
        classifier_learning_rate: float = 1e-3,
        discriminator_learning_rate: float = 1e-4,
        generator_learning_rate: float = 1e-3,
        l2_weight_decay: float = 4e-4,
        pretrain_epochs: int = 1,
        plm_squared_distance: bool = True,
        seed: int = 0,
        **kwargs: Any,
    ):
        _check_hyperparameters(
            num_classes=num_classes, margin=margin, alpha=alpha, gamma=gamma, eta=eta, beta=beta, mu=mu, phi=phi,
            mining_phi=mining_phi, nu=nu, hidden_units=hidden_units, classifier_learning_rate=classifier_learning_rate,
            discriminator_learning_rate=discriminator_learning_rate, generator_learning_rate=generator_learning_rate,
            l2_weight_decay=l2_weight_decay, pretrain_epochs=pretrain_epochs,
        )
        super().__init__(embedding_net, loss=losses_lib.facenet_triplet_loss(miner, margin), seed=seed, **kwargs)
        self.num_classes = int(num_classes)
        self.margin, self.alpha, self.gamma, self.eta = float(margin), float(alpha), float(gamma), float(eta)
        self.beta, self.mu, self.phi, self.nu = float(beta), float(mu), float(phi), float(nu)
        self.mining_phi = float(mining_phi)
        self.hidden_units = int(hidden_units)
        self.classifier_learning_rate = float(classifier_learning_rate)
        self.discriminator_learning_rate = float(discriminator_learning_rate)
        self.generator_learning_rate = float(generator_learning_rate)
        self.l2_weight_decay = float(l2_weight_decay)
        self.pretrain_epochs = int(pretrain_epochs)
        self.plm_squared_distance = bool(plm_squared_distance)
        self.generation_miner = miners_lib.RandomMiner()

        dim, hidden, classes = self.embedding_dim, self.hidden_units, self.num_classes
        self.classifier = keras.Sequential(
            [keras.Input((dim,)), keras.layers.Dense(classes, dtype="float32")], name="classifier"
        )
        self.generator1 = _dense_net(dim, hidden, dim, "generator1", normalize=True)
        self.generator2 = _dense_net(3 * dim, hidden, dim, "generator2", normalize=True, members=3)  # Sec. 5.4
        self.discriminator1 = _dense_net(2 * dim, hidden, 2, "discriminator1")
        self.discriminator2 = _dense_net(dim, hidden, classes + 1, "discriminator2")
        adam = lambda lr: PaperAdam(lr, l2_weight_decay=self.l2_weight_decay)
        self.classifier_optimizer = adam(self.classifier_learning_rate)
        self.generator1_optimizer = adam(self.generator_learning_rate)
        self.generator2_optimizer = adam(self.generator_learning_rate)
        self.discriminator1_optimizer = adam(self.discriminator_learning_rate)
        self.discriminator2_optimizer = adam(self.discriminator_learning_rate)

        state = lambda name, value, dtype="float32": self.add_weight(
            shape=(), initializer=keras.initializers.Constant(value), dtype=dtype, trainable=False,
            aggregation="only_first_replica", name=name,
        )
        self.distance_threshold = state("distance_threshold", 0.0)                  # d_t, eq. (11)
        self.epoch_distance_sum = state("epoch_distance_sum", 0.0)
        self.epoch_pair_count = state("epoch_pair_count", 0.0)
        self.completed_epochs = state("completed_epochs", 0, "int64")
        self.last_generator2_loss = state("last_generator2_loss", float("inf"))     # latest L_G2, detached

    @property
    def class_loss_weight(self) -> float:
        """φ of eq. 5 on random triplets (THSG), ``mining_phi`` of eq. 25 with a miner (THSG(Semi/Soft/D))."""
        return self.phi if self.metric_loss.miner.name == "random" else self.mining_phi

    def sub_networks(self) -> list[tuple[keras.Model, keras.optimizers.Optimizer]]:
        return [
            (self.classifier, self.classifier_optimizer),
            (self.generator1, self.generator1_optimizer),
            (self.generator2, self.generator2_optimizer),
            (self.discriminator1, self.discriminator1_optimizer),
            (self.discriminator2, self.discriminator2_optimizer),
        ]

    def training_callbacks(self) -> list[keras.callbacks.Callback]:
        """:class:`DistanceThresholdUpdate`: pass it to ``fit`` (``zoo.training`` does) so d_t rolls over."""
        return [*super().training_callbacks(), DistanceThresholdUpdate()]

    # ---- Algorithm 1 -----------------------------------------------------------------------------
    def train_step(self, data):
        images, labels = data[0], data[1]
        labels = ops.check_batch(images, labels)
        tf.debugging.assert_less(
            labels, self.num_classes, message=f"labels must be < num_classes ({self.num_classes})"
        )
        tape = tf.GradientTape(persistent=True)  # F's gradient (loss-scaled) and CF's (plain) below
        with tape:                                                                     # line 5: X = F(I)
            x, y = ops.gather_global_batch(tf.cast(self(images, training=True), tf.float32), labels)
        indices = self.generation_miner(x, y, self.step_seed())
        real, real_labels = self._triplets(tf.stop_gradient(x), y, indices)
        threshold = self.update_distance_threshold(real)                               # eq. (11)
        stretched = self.stretch(real, threshold)                                      # X*, eq. (9)
        l_d1 = self.update_discriminator1(real, stretched)                              # line 6, eq. (16)
        l_g1 = self.update_generator1(stretched, real_labels)                           # line 6, eq. (12)
        hidden = self.hidden_triplet(real, stretched)                                   # line 7: X'
        l_d2 = self.update_discriminator2(hidden, real_labels)                          # lines 8-9, eq. (23)
        l_g2, tau_r = self.update_generator2(hidden, real_labels)                       # line 9, eq. (17)
        with tape:                                                                     # lines 10-11, eq. (5)
            loss, terms = self.embedding_losses(x, y, indices, threshold)
            loss += self.regularization_loss()
            replica_loss = loss / ops.num_replicas()
            net_loss = self.optimizer.scale_loss(replica_loss)  # a LossScaleOptimizer's scale, if any
        net_variables = self.embedding_net.trainable_variables
        classifier_variables = self.classifier.trainable_variables
        self.optimizer.apply(tape.gradient(net_loss, net_variables), net_variables)
        self.classifier_optimizer.apply(tape.gradient(replica_loss, classifier_variables), classifier_variables)
        del tape

        logs = {**terms, "l_g1": l_g1, "l_d1": l_d1, "l_g2": l_g2, "l_d2": l_d2, "tau_r": tau_r, "d_t": threshold}
        return self.step_logs(loss, logs)

    def validation_losses(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """Eq. (5) with the current generators and d_t, nothing updated."""
        x, y = ops.gather_global_batch(tf.cast(self(images, training=False), tf.float32), labels)
        loss, terms = self.embedding_losses(x, y, self.generation_miner(x, y, self.step_seed()),
                                            self.current_distance_threshold())
        return loss + self.regularization_loss(), terms

    def _triplets(self, x: tf.Tensor, y: tf.Tensor, indices: miners_lib.Triplets) -> tuple[Triplet, Triplet]:
        """Embeddings and labels of the mined (anchor, positive, negative) index triplets."""
        return tuple(Triplet(*tf.unstack(ops.gather_triplets(values, indices), axis=1)) for values in (x, y))

    def update_distance_threshold(self, real: Triplet) -> tf.Tensor:
        """d_t of eq. (11) for this step; adds this batch's d(a, p) to the epoch's running sum.

        After the first epoch d_t is the previous epoch's mean (set by :meth:`end_epoch`); during the
        first it is the mean of the epoch so far, this batch included.
        """
        distance = squared_distance(real.anchor, real.positive)
        if not self.plm_squared_distance:
            distance = tf.sqrt(distance)
        self.epoch_distance_sum.assign_add(tf.reduce_sum(distance))
        self.epoch_pair_count.assign_add(tf.cast(tf.size(distance), tf.float32))
        return self.current_distance_threshold()

    def current_distance_threshold(self) -> tf.Tensor:
        """d_t as it stands: the previous epoch's mean d(a, p), or in the first epoch the mean so far."""
        running_mean = tf.math.divide_no_nan(self.epoch_distance_sum, self.epoch_pair_count)
        return tf.where(self.completed_epochs > 0, self.distance_threshold.value, running_mean)

    def end_epoch(self) -> None:
        """Eq. (11): d_t <- mean d(a, p) of the epoch that ends; called by :class:`DistanceThresholdUpdate`."""
        if float(self.epoch_pair_count.numpy()) > 0:
            self.distance_threshold.assign(self.epoch_distance_sum / self.epoch_pair_count)
        self.epoch_distance_sum.assign(0.0)
        self.epoch_pair_count.assign(0.0)
        self.completed_epochs.assign_add(1)

    def stretch(self, real: Triplet, threshold: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """PLM (eq. 9-10): the stretched anchor-positive pair (a*, p*)."""
        return piecewise_linear_manipulation(
            real.anchor, real.positive, threshold, self.alpha, self.gamma, self.plm_squared_distance
        )

    def hidden_triplet(self, real: Triplet, stretched: tuple[tf.Tensor, tf.Tensor]) -> Triplet:
        """X' = (G1(a*), G1(p*), n), the input of stage 2 (Sec. 5.1)."""
        return Triplet(self.generator1(stretched[0]), self.generator1(stretched[1]), real.negative)

    def generated_triplet(self, hidden: Triplet) -> Triplet:
        """X̂ = (â, p̂, n̂) = G2([a', p', n]) (Sec. 5.4, eq. 18): each output depends on the whole triplet."""
        return Triplet(*tf.unstack(self.generator2(tf.concat(hidden, axis=-1)), axis=1))

    def _conditional_logits(self, pair: list[tf.Tensor], stretched: tuple[tf.Tensor, tf.Tensor]) -> list[tf.Tensor]:
        """DG1's logits of each embedding concatenated with its stretched version, [x, x*] (eq. 14, 16)."""
        return [self.discriminator1(tf.concat([x, s], axis=-1)) for x, s in zip(pair, stretched)]

    def update_discriminator1(self, real: Triplet, stretched: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        """Eq. (16): DG1 tells [x, x*] (real) from [G1(x*), x*] (generated), x in {a, p}."""
        generated = [tf.stop_gradient(self.generator1(s)) for s in stretched]
        return self.update_network(self.discriminator1, self.discriminator1_optimizer, lambda: discriminator1_loss(
            self._conditional_logits([real.anchor, real.positive], stretched),
            self._conditional_logits(generated, stretched),
        ))

    def update_generator1(self, stretched: tuple[tf.Tensor, tf.Tensor], labels: Triplet) -> tf.Tensor:
        """Eq. (12)-(15): G1 keeps the label (CF), fools DG1 and stays close to x* (L_rec1)."""
        pair_labels = [labels.anchor, labels.positive]

        def loss_fn():
            generated = [self.generator1(s) for s in stretched]
            class_loss = softmax_loss([self.classifier(g) for g in generated], pair_labels)           # eq. (13)
            adversarial = softmax_loss(                                                               # eq. (14)
                self._conditional_logits(generated, stretched), [tf.ones_like(y) for y in pair_labels]
            )
            rec = reconstruction_loss(stretched, generated)                                           # eq. (15)
            return generator1_loss(class_loss, adversarial, rec, self.eta)

        return self.update_network(self.generator1, self.generator1_optimizer, loss_fn)

    def update_discriminator2(self, hidden: Triplet, labels: Triplet) -> tf.Tensor:
        """Eq. (23): DG2 puts a', p', n in their classes and G2's outputs in the generated class C."""
        generated = [tf.stop_gradient(x) for x in self.generated_triplet(hidden)]
        return self.update_network(self.discriminator2, self.discriminator2_optimizer, lambda: discriminator2_loss(
            [self.discriminator2(x) for x in hidden], list(labels),
            [self.discriminator2(x) for x in generated], self.num_classes,
        ))

    def update_generator2(self, hidden: Triplet, labels: Triplet) -> tuple[tf.Tensor, tf.Tensor]:
        """Eq. (17)-(22): G2 makes n̂ close to â (ART loss with τr of eq. 19); returns (L_G2, τr)."""
        tau_r = adaptive_reverse_margin(self.last_generator2_loss, self.nu, self.beta)              # eq. (19)

        def loss_fn():
            generated = self.generated_triplet(hidden)
            art = losses_lib.inverted_triplet_loss(*generated, tau_r)                    # eq. (18)
            rec = reconstruction_loss(hidden[:2], generated[:2])                                      # eq. (20)
            class_loss = softmax_loss([self.classifier(g) for g in generated], list(labels))         # eq. (21)
            adversarial = softmax_loss([self.discriminator2(g) for g in generated], list(labels))    # eq. (22)
            return generator2_loss(art, rec, class_loss, adversarial, self.eta, self.mu)

        loss = self.update_network(self.generator2, self.generator2_optimizer, loss_fn)
        self.last_generator2_loss.assign(loss)
        return loss, tau_r

    def embedding_losses(
        self, x: tf.Tensor, y: tf.Tensor, indices: miners_lib.Triplets, threshold: tf.Tensor
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """Eq. (5) on the global batch, with X' and X̂ re-extracted by the updated G1 and G2.

        During the ``pretrain_epochs`` the generated terms see F's embeddings detached and get weight 0,
        so F learns from L_t(X) alone while CF still learns from eq. (8).
        """
        pretraining = self.completed_epochs < self.pretrain_epochs
        original_loss = self.compute_metric_loss(x, y)                                # eq. (6) / (25)
        real, labels = self._triplets(tf.where(pretraining, tf.stop_gradient(x), x), y, indices)
        hidden = self.hidden_triplet(real, self.stretch(real, threshold))
        generated = self.generated_triplet(hidden)
        class_loss = softmax_loss(                                                    # eq. (8)
            [self.classifier(e) for e in (*real, *hidden[:2], *generated)],
            [*labels, *labels[:2], *labels],
        )
        hard_loss = losses_lib.triplet_loss(*generated, margin=self.margin)           # eq. (7)
        weight = tf.where(pretraining, 1.0, original_sample_weight(self.last_generator2_loss, self.beta))
        loss = embedding_loss(original_loss, class_loss, hard_loss, weight, self.class_loss_weight)
        return loss, {"l_org": original_loss, "l_class": class_loss, "l_hard": hard_loss, "w_org": weight}

    # ---- serialisation ---------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("loss")
        return {
            **config,
            "num_classes": self.num_classes,
            "miner": miners_lib.serialize(self.metric_loss.miner),
            "margin": self.margin,
            "alpha": self.alpha,
            "gamma": self.gamma,
            "eta": self.eta,
            "beta": self.beta,
            "mu": self.mu,
            "phi": self.phi,
            "mining_phi": self.mining_phi,
            "nu": self.nu,
            "hidden_units": self.hidden_units,
            "classifier_learning_rate": self.classifier_learning_rate,
            "discriminator_learning_rate": self.discriminator_learning_rate,
            "generator_learning_rate": self.generator_learning_rate,
            "l2_weight_decay": self.l2_weight_decay,
            "pretrain_epochs": self.pretrain_epochs,
            "plm_squared_distance": self.plm_squared_distance,
        }



class DistanceThresholdUpdate(keras.callbacks.Callback):
    """Rolls THSG's d_t over at each epoch end (eq. 11); :meth:`THSG.training_callbacks` returns it."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.model.end_epoch()


def _check_hyperparameters(**values: float) -> None:
    """Clear ``ValueError`` for hyperparameters outside the ranges where THSG's losses make sense."""
    if not isinstance(values["num_classes"], numbers.Integral) or values["num_classes"] < 2:
        raise ValueError(f"num_classes must be an integer >= 2 (training classes), got {values['num_classes']}")
    positive = ("margin", "beta", "hidden_units", "classifier_learning_rate", "discriminator_learning_rate",
                "generator_learning_rate")
    for name in positive:
        if not values[name] > 0:
            raise ValueError(f"{name} must be > 0, got {values[name]}")
    for name in ("alpha", "gamma", "mu", "phi", "mining_phi", "nu", "l2_weight_decay", "pretrain_epochs"):
        if not values[name] >= 0:
            raise ValueError(f"{name} must be >= 0, got {values[name]}")
    eta, mu = values["eta"], values["mu"]
    if not 0.0 <= eta <= 0.5:
        raise ValueError(f"eta must be in [0, 0.5] so that 1 - 2 eta >= 0 in eq. (12), got {eta}")
    if 1.0 - 2.0 * eta - mu < 0.0:
        raise ValueError(f"eq. (17) needs 1 - 2 eta - mu >= 0, got eta={eta}, mu={mu}")


# ---- registry presets --------------------------------------------------------------------------------
_PAPER = (
    'C. Zhu, Z. Hu, H. Dong, G. He, Z. Yu, S. Zhang, '
    '"Construct Informative Triplet with Two-stage Hard-sample Generation"'
    ', arXiv 2021 (THSG)'
)
# Table 2 (α, γ, η, β, μ, φ); τ = ν = 0.2 (Sec. 6.2) are the constructor's defaults.
_TABLE2 = {
    dataset: {"alpha": 0.2, "gamma": 0.8, "eta": 0.3, "beta": 0.5, "mu": 0.3, "phi": phi}
    for dataset, phi in (("cub200", 0.5), ("cars196", 0.25), ("sop", 0.2))
}
_EPOCHS = {"cub200": 150, "cars196": 150, "sop": 100}  # Sec. 6.2
# Algorithm 1, line 2: pre-train F before the generators join; the paper gives no length, one epoch here.
_PRETRAIN = {"pretrain_epochs": 1}
# Sec. 6.2: "Adam optimizer with 4e-4 weight decay" in PyTorch, i.e. L2 added to the gradient (zoo.optimizers).
_PAPER_OPTIMIZER = {"l2_weight_decay": 4e-4}


def _paper_training(dataset: str) -> dict[str, Any]:
    """Sec. 6.2: batch 128 (our split: 32 classes x 4 images), Adam 1e-5 for F, coupled weight decay 4e-4."""
    return {"epochs": _EPOCHS[dataset], "classes_per_batch": 32, "images_per_class": 4, "learning_rate": 1e-5,
            "optimizer": _PAPER_OPTIMIZER, "eval_every": 5}


PRESETS: list[dict[str, Any]] = [
    {
        "name": "thsg_digits",
        "method": "thsg",
        "paper": _PAPER,
        **DIGITS_PROTOCOL,
        "hyperparameters": dict(_PRETRAIN),  # and the paper's defaults (Table 2, CUB-200 row)
        "training": {"epochs": 12, "classes_per_batch": 5, "images_per_class": 8, "learning_rate": 5e-4,
                     "optimizer": _PAPER_OPTIMIZER, "eval_every": 4},
        "command": "python training_scripts/thsg.py --dataset digits --publish thsg_digits",
    },
    # The first of the 2 epochs pre-trains F (Algorithm 1, line 2); Table 2's CUB-200 row; CF at 100x F's rate,
    # the paper's ratio (module docstring, "CF's learning rate").
    *with_imagenet(glyphs_preset("thsg", _PAPER, {**_TABLE2["cub200"], **_PRETRAIN, "classifier_learning_rate": 0.1},
                  optimizer=_PAPER_OPTIMIZER)),
    *(  # Sec. 6.2: GoogLeNet, 512-d, 227 px (InceptionV3 here)
        paper_preset("thsg", _PAPER, dataset, {**_TABLE2[dataset], **_PRETRAIN}, _paper_training(dataset))
        for dataset in _TABLE2
    ),
    *(  # Sec. 6.5 (Tables 6-8): ResNet50 with frozen BatchNorm, 128-d, 224 px; --miner for THSG(Semi/Soft/D)
        {
            "name": f"thsg_{dataset}_resnet50",
            "method": "thsg",
            "paper": _PAPER + ", Sec. 6.5 protocol",
            "backbone": "resnet50",
            "backbone_weights": "imagenet",
            "freeze_batchnorm": True,
            "dataset": dataset,
            "embedding_dim": 128,
            "input_size": 224,
            "hyperparameters": {**_TABLE2[dataset], **_PRETRAIN},
            "training": _paper_training(dataset),
            "command": f"python training_scripts/thsg.py --preset thsg_{dataset}_resnet50 --dataset {dataset} "
                       "--data-dir DATA",
        }
        for dataset in _TABLE2
    ),
]

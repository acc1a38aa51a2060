"""HTG: an adversarial approach to hard triplet generation (Zhao et al., ECCV 2018).

Written from a summary of the paper, not from its text, hence no equation numbers (the loss names are the
summary's); d is the squared Euclidean distance of L2-normalised vectors and m the margin of F's triplet loss. Three
networks, each with its own optimizer, are updated one after the other in every ``train_step``:

1. F, the embedding net: the triplet loss ``L_tri = [d(a,p) - d(a,n) + m]_+`` of the batch's mined triplets
   (a, p, n) AND of the hard triplets (a^, p^, n^) = G(a, p, n) that G makes of them (``f_loss``); optionally
   plus b L_cls.
2. D, the multi-category discriminator on embeddings, K real classes + 1 fake class: ``L_D = L_real + b L_fake``,
   the softmax losses of the real a, p, n under their labels and of the generated a^, p^, n^ under the fake class K.
3. G, the adversarial triplet generator: ``L_G = L_inv + b L_cls``, the inverse triplet objective
   ``L_inv = [d(a^,n^) - d(a^,p^) + m]_+`` (it pushes same-class vectors apart and pulls different-class ones
   together) and the label preservation L_cls, the softmax loss of D(a^), D(p^), D(n^) under the real labels.

Choices where the summary is silent (numbers: benchmarks/RESULTS.md, "HTG: readings measured", under the heading in
brackets):

- Order F -> D -> G, from one forward pass of F: D and G see F's stopped embeddings of the step, D updates before G,
  so G plays against the latest D.
- G is an MLP on the concatenated triplet (3 d -> hidden -> 3 d) added to its input and L2-normalised per vector,
  its output layer initialised at zero: it starts as the identity, so F starts on the plain triplet loss.
- D is an MLP d -> hidden -> K + 1 logits. L_real, L_fake and L_cls average over the 3 T vectors of the T triplets
  (the summary: "a, p and n falling in the right labels"). m = 0.2, b = 1, hidden = 512 units, Adam 1e-3 for D.
- Which triplets G hardens: the triplet loss's miner picks them, semi-hard by default; F's real and generated terms
  are reduced as that loss reduces ["Which triplets G hardens"].
- ``f_loss="real+generated"`` with ``f_through_g=False`` (G's change fixed in F's gradient): F on G's triplets alone,
  or through G's Jacobian, follows G's inversion of the triplets and collapses ["F's loss"].
- G's learning rate: the summary gives none; 1e-5 by default (measured from scratch on random triplets), 1e-4 in
  ``htg_glyphs``, a tenth of F's 1e-3 ["G's learning rate"].
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import layers

from zoo import losses as losses_lib
from zoo import miners as miners_lib
from zoo import ops
from zoo.methods import DIGITS_PROTOCOL, glyphs_preset, paper_preset, register_method, with_imagenet
from zoo.methods.metric_model import MetricModel


# ---- loss math (pure) ------------------------------------------------------------------------
def generate_triplets(generator: keras.Model, real: tf.Tensor, through_generator: bool) -> tf.Tensor:
    """G's triplets for F's loss: ``G(t)``, or ``t + stop_gradient(G(t) - t)`` when F's gradient should not
    pass through G (the same values, with the identity as Jacobian)."""
    generated = generator(real)
    return generated if through_generator else real + tf.stop_gradient(generated - real)


# ---- networks --------------------------------------------------------------------------------
def build_generator(embedding_dim: int, hidden_units: int) -> keras.Model:
    """G: (T, 3, d) triplets -> (T, 3, d) L2-normalised triplets, the identity at initialisation."""
    triplets = keras.Input((3, embedding_dim), name="triplets")
    hidden = layers.Dense(hidden_units, activation="relu", dtype="float32", name="hidden")(layers.Flatten()(triplets))
    change = layers.Dense(3 * embedding_dim, kernel_initializer="zeros", dtype="float32", name="change")(hidden)
    moved = layers.Add(dtype="float32")([triplets, layers.Reshape((3, embedding_dim))(change)])
    return keras.Model(triplets, layers.UnitNormalization(axis=-1, dtype="float32")(moved), name="generator")


def build_discriminator(embedding_dim: int, num_classes: int, hidden_units: int) -> keras.Model:
    """D: (..., d) embeddings -> (..., K + 1) logits, the last class meaning "generated"."""
    vectors = keras.Input((embedding_dim,), name="embeddings")
    hidden = layers.Dense(hidden_units, activation="relu", dtype="float32")(vectors)
    return keras.Model(vectors, layers.Dense(num_classes + 1, dtype="float32")(hidden), name="discriminator")


# ---- model -----------------------------------------------------------------------------------
@register_method("htg")
class HTG(MetricModel):
    """Hard triplet generation: F trained on G's hard triplets, G against D (Zhao et al., ECCV 2018).

    Args:
        embedding_net: images -> L2-normalised embeddings (F).
        num_classes: K, the number of training classes (D has K + 1 outputs).
        loss: F's triplet loss (its miner picks the triplets given to G, its margin is m, its reduction reduces the
            real and the generated triplets' hinges).
        miner: with ``loss`` given by name, its miner; ``"semi-hard"`` by default (measured: the module docstring).
        b: weight of L_fake in D's loss and of L_cls in G's loss.
        hidden_units: width of G's and D's hidden layer.
        generator_learning_rate, discriminator_learning_rate: Adam learning rates of G and D.
        f_loss: F's loss: "generated" (L_tri of G's triplets), "real+generated" (L_tri of the real
            and of G's triplets) or "real+generated+cls" (plus b L_cls, D's softmax loss of G's
            triplets under their real labels).
        f_through_g: whether F's gradient of its generated-triplet terms passes through G's Jacobian
            (True) or takes G's change ``G(t) - t`` as fixed, so F learns to meet the margin of the
            moved triplets (False).
        seed: base seed of the stateless mining.
    """

    LOGGED_TERMS = (
        "real_triplet_loss", "generated_triplet_loss", "f_cls_loss",
        "discriminator_loss", "real_loss", "fake_loss", "generator_loss", "inverse_loss", "cls_loss",
    )
    F_LOSSES = ("generated", "real+generated", "real+generated+cls")

    def __init__(
        self,
        embedding_net: keras.Model,
        *,
        num_classes: int,
        loss: str | dict | losses_lib.MetricLoss = "facenet-triplet",
        miner: str | None = None,
        b: float = 1.0,
        hidden_units: int = 512,
        generator_learning_rate: float = 1e-5,
        discriminator_learning_rate: float = 1e-3,
        f_loss: str = "real+generated",
        f_through_g: bool = False,
        seed: int = 0,
        **kwargs: Any,
    ):
        if loss == "facenet-triplet" and miner is None:
            miner = "semi-hard"
        super().__init__(embedding_net, loss=loss, miner=miner, seed=seed, **kwargs)
        if not isinstance(self.metric_loss, losses_lib.TripletLoss):
            raise ValueError(f"HTG trains F with a triplet loss, got {type(self.metric_loss).__name__}")
        if num_classes < 2:
            raise ValueError(f"HTG's discriminator needs num_classes >= 2 training classes, got {num_classes}")
        if b < 0:
            raise ValueError(f"HTG needs b >= 0, got {b}")
        if f_loss not in self.F_LOSSES:
            raise ValueError(f"HTG's f_loss must be one of {self.F_LOSSES}, got {f_loss!r}")
        if hidden_units < 1:
            raise ValueError(f"hidden_units must be >= 1, got {hidden_units}")
        self.num_classes, self.b, self.hidden_units = int(num_classes), float(b), int(hidden_units)
        self.f_loss, self.f_through_g = f_loss, bool(f_through_g)
        self.generator_learning_rate = float(generator_learning_rate)
        self.discriminator_learning_rate = float(discriminator_learning_rate)
        self.generator = build_generator(self.embedding_dim, self.hidden_units)
        self.discriminator = build_discriminator(self.embedding_dim, self.num_classes, self.hidden_units)
        self.generator_optimizer = keras.optimizers.Adam(self.generator_learning_rate)
        self.discriminator_optimizer = keras.optimizers.Adam(self.discriminator_learning_rate)

    def discriminate(self, triplets: tf.Tensor) -> tf.Tensor:
        """D's (3 T, K + 1) logits of the vectors of (T, 3, d) triplets, in row-major order."""
        return self.discriminator(tf.reshape(triplets, [-1, self.embedding_dim]))

    def sub_networks(self) -> list[tuple[keras.Model, keras.optimizers.Optimizer]]:
        return [(self.generator, self.generator_optimizer), (self.discriminator, self.discriminator_optimizer)]

    # ---- the three updates, in train_step's order -------------------------------------------
    def embedding_losses(
        self, embeddings: tf.Tensor, labels: tf.Tensor
    ) -> tuple[tf.Tensor, miners_lib.Triplets, dict[str, tf.Tensor]]:
        """F's loss (``f_loss``) on one global batch of embeddings; returns it, the triplets and its terms."""
        margin, squared, reduction = self.metric_loss.margin, self.metric_loss.squared, self.metric_loss.reduction
        triplets = self.metric_loss.mine(embeddings, labels, self.step_seed())
        real = ops.gather_triplets(tf.cast(embeddings, tf.float32), triplets)
        generated = generate_triplets(self.generator, real, self.f_through_g)
        real_triplet_loss = losses_lib.triplet_loss(*tf.unstack(real, axis=1), margin, squared, reduction)
        generated_triplet_loss = losses_lib.triplet_loss(*tf.unstack(generated, axis=1), margin, squared, reduction)
        f_cls_loss = losses_lib.softmax_cross_entropy(self.discriminate(generated), ops.gather_triplets(labels, triplets))
        use_real, use_cls = self.f_loss != "generated", self.f_loss == "real+generated+cls"
        loss = (
            generated_triplet_loss
            + (real_triplet_loss if use_real else 0.0)
            + (self.b * f_cls_loss if use_cls else 0.0)
            + self.regularization_loss()
        )
        terms = {"real_triplet_loss": real_triplet_loss, "generated_triplet_loss": generated_triplet_loss,
                 "f_cls_loss": f_cls_loss}
        return loss, triplets, terms

    def embedding_step(
        self, images: tf.Tensor, labels: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, miners_lib.Triplets, dict[str, tf.Tensor]]:
        """F's update (``f_loss``); returns the global (stopped) embeddings, labels, triplets and F's losses."""
        with tf.GradientTape() as tape:
            embeddings, labels = ops.gather_global_batch(self(images, training=True), labels)
            loss, triplets, terms = self.embedding_losses(embeddings, labels)
            scaled_loss = self.optimizer.scale_loss(loss / ops.num_replicas())
        variables = self.embedding_net.trainable_variables
        self.optimizer.apply(tape.gradient(scaled_loss, variables), variables)
        return tf.stop_gradient(tf.cast(embeddings, tf.float32)), labels, triplets, {"loss": loss, **terms}

    def validation_losses(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """F's, D's and G's losses of one batch, nothing updated."""
        embeddings, labels = ops.gather_global_batch(self(images, training=False), labels)
        loss, triplets, terms = self.embedding_losses(embeddings, labels)
        real = ops.gather_triplets(tf.cast(embeddings, tf.float32), triplets)
        real_labels = ops.gather_triplets(labels, triplets)
        return loss, {**terms, **self.discriminator_losses(real, real_labels), **self.generator_losses(real, real_labels)}

    def discriminator_losses(self, real: tf.Tensor, real_labels: tf.Tensor) -> dict[str, tf.Tensor]:
        """D's loss ``L_real + b L_fake`` (K real classes, fake class K) on (T, 3, d) real triplets."""
        real_loss = losses_lib.softmax_cross_entropy(self.discriminate(real), real_labels)
        fake_loss = losses_lib.softmax_cross_entropy(self.discriminate(self.generator(real)), self.num_classes)
        return {"discriminator_loss": real_loss + self.b * fake_loss, "real_loss": real_loss, "fake_loss": fake_loss}

    def generator_losses(self, real: tf.Tensor, real_labels: tf.Tensor) -> dict[str, tf.Tensor]:
        """G's loss ``L_inv + b L_cls`` against the current D."""
        generated = self.generator(real)
        inverse_loss = losses_lib.inverted_triplet_loss(
            *tf.unstack(generated, axis=1), self.metric_loss.margin, self.metric_loss.squared
        )
        cls_loss = losses_lib.softmax_cross_entropy(self.discriminate(generated), real_labels)
        return {"generator_loss": inverse_loss + self.b * cls_loss, "inverse_loss": inverse_loss, "cls_loss": cls_loss}

    def sub_network_step(
        self, network: str, embeddings: tf.Tensor, labels: tf.Tensor, triplets: miners_lib.Triplets
    ) -> dict[str, tf.Tensor]:
        """One update of D (``"discriminator"``) or G (``"generator"``) on its losses of the triplets of the
        (stopped) global embeddings; returns every term of the update."""
        real, real_labels = ops.gather_triplets(embeddings, triplets), ops.gather_triplets(labels, triplets)
        losses_fn = {"discriminator": self.discriminator_losses, "generator": self.generator_losses}[network]
        terms: dict[str, tf.Tensor] = {}

        def loss_fn() -> tf.Tensor:
            terms.update(losses_fn(real, real_labels))
            return terms[f"{network}_loss"]

        self.update_network(getattr(self, network), getattr(self, f"{network}_optimizer"), loss_fn)
        return terms

    def train_step(self, data):
        images, labels = data[0], data[1]
        labels = ops.check_batch(images, labels)
        tf.debugging.assert_less(
            labels, self.num_classes,
            message=f"HTG's discriminator has num_classes={self.num_classes} real classes: labels must be below it",
        )
        embeddings, labels, triplets, logs = self.embedding_step(images, labels)
        loss = logs.pop("loss")
        logs.update(self.sub_network_step("discriminator", embeddings, labels, triplets))  # D, then G against it
        logs.update(self.sub_network_step("generator", embeddings, labels, triplets))
        return self.step_logs(loss, logs)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "b": self.b,
            "hidden_units": self.hidden_units,
            "generator_learning_rate": self.generator_learning_rate,
            "discriminator_learning_rate": self.discriminator_learning_rate,
            "f_loss": self.f_loss,
            "f_through_g": self.f_through_g,
        }


# ---- registry presets --------------------------------------------------------------------------
_PAPER = (
    'Y. Zhao, Z. Jin, G.-J. Qi, H. Lu, X.-S. Hua, '
    '"An Adversarial Approach to Hard Triplet Generation"'
    ', ECCV 2018 (HTG)'
)

PRESETS: list[dict[str, Any]] = [
    # F on the real and generated triplets; G at a tenth of F's 1e-3 (the module docstring, "G's learning rate").
    *with_imagenet(glyphs_preset("htg", _PAPER, {"generator_learning_rate": 1e-4})),
    {
        "name": "htg_digits",
        "method": "htg",
        "paper": _PAPER,
        **DIGITS_PROTOCOL,
        # Random triplets: on the 5 training digits semi-hard triplets lower the unseen digits' MAP@R (0.48 -> 0.46)
        "hyperparameters": {"miner": "random"},
        # The step count: benchmarks/RESULTS.md, "How the digits presets' step counts were chosen".
        "training": {"epochs": 3, "steps_per_epoch": 10, "classes_per_batch": 5, "images_per_class": 16,
                     "learning_rate": 5e-4, "eval_every": 1},
        "command": "python training_scripts/htg.py --dataset digits --publish htg_digits",
    },
    *(  # the zoo's benchmark protocol, as the triplet baseline
        paper_preset("htg", _PAPER, dataset, {}, {"epochs": 100, "classes_per_batch": 32, "images_per_class": 4,
                                                  "learning_rate": 1e-5, "eval_every": 5})
        for dataset in ("cub200", "cars196")
    ),
]

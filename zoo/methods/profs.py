"""PROFS: deep metric learning with alternating projections onto feasible sets (Can, Gürbüz, Alatan, ICIP 2021).

Algorithm 1 of the paper, and where each line lives here::

    sample R = {k_l}: one representative image per class           ProfsSampler.representatives
    repeat M = ceil(rho / p(y)) times (Sec. 5.4)                   projection_length
        R' from R, possibly by hard negative class mining           ProfsSampler.choose_classes,
                                                                    hard_negative_classes
        batch B: R' with examples E of their classes                ProfsSampler.batch
        theta <- theta - a grad(1/2 lambda ||theta^(k) - theta||^2   ProfsModel.train_step,
                                + L(theta; B))  (eq. 4.6 / 4.7)     proximal_term
    theta^(k+1) <- theta                                            ProfsModel.start_projection_if_due

Batches are ``(images, labels, is_representative)`` (:func:`profs_pipeline`, built by
:meth:`ProfsModel.make_train_dataset`): P classes x I images, each class's representative first.

Readings (numbers: benchmarks/RESULTS.md, "PROFS: readings measured", under the heading in brackets):

- I counts the representative, so p(y) = B / (I L) = P / L is the probability that a class is in a batch and
  M = ceil(rho L / P), in integers: the float formula is off by one (B = 96, I = 2, L = 376 gives 48, not 47).
- lambda = 1e-3 (Sec. 5.2) multiplies 1/2 ||theta^(k) - theta||^2, which eq. 4.7 and Algorithm 1 print without it;
  theta is the embedding net's trainable weights (not a loss's own, e.g. the margin loss's beta).
- Representatives: projection k draws, for every class of 2+ images, one other than projection k - 1's (Sec. 4).
- HNCM: a batch draws one query class, then the P - 1 classes whose cached representatives are nearest to its
  (squared Euclidean); classes never cached are skipped, and uniform classes fill the batch.
- The metric loss takes every pair of the batch (eq. 4.7: "any proper loss" on the constrained batch, "only [the]
  batch construction"); ``anchored_at_representatives`` keeps the pairs of a representative (eq. 4.6, Sec. 5.3's
  lifted adaptation) ["Which pairs the metric loss takes"].
- Base loss: contrastive (C-PROFS) by default, as the triplet loss's semi-hard miner collapses from scratch; the
  paper presets keep T-PROFS-HNCM ["Default base loss: contrastive, not triplet"].
- Sec. 5.2's Adam (beta_2 .99, the new layer at 10x) is :data:`PAPER_OPTIMIZER`, passed by the paper presets only
  (fine-tuning from ImageNet) ["Sec. 5.2's optimizer from scratch"].

HNCM's classes are chosen in the input pipeline, which reads ``representative_cache`` (refreshed in ``train_step``)
between steps; with prefetching it can be a few steps old, so an HNCM run (P < L) is not bit-for-bit reproducible,
while no image is embedded twice; given its classes, a batch is a function of (seed, step). theta^(k) and the
sampler's representatives switch at the steps whose optimizer index is a multiple of M, so a resumed run stays in
step. The proximal anchor theta^(k) is a second copy of the trainable weights: ``anchor_dtype="float16"`` halves it,
``anchor_device="/CPU:0"`` keeps it in host memory (without a ``tf.distribute`` strategy; a MirroredStrategy keeps a
copy per replica).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

from zoo import losses as losses_lib
from zoo import ops
from zoo.data import ImageSet, PKSampler
from zoo.data.pipeline import augmented_batches
from zoo.methods import DIGITS_PROTOCOL, glyphs_preset, paper_preset, register_method, with_imagenet
from zoo.methods.metric_model import MetricModel

# The pairwise losses PROFS is defined with (Sec. 5.3): C-, T-, M-, L-, N- and A-PROFS.
PROFS_LOSSES: tuple[type[losses_lib.MetricLoss], ...] = (
    losses_lib.ContrastiveLoss,
    losses_lib.TripletLoss,
    losses_lib.MarginLoss,
    losses_lib.LiftedStructuredLoss,
    losses_lib.NPairLoss,
    losses_lib.AngularLoss,
)
ANCHOR_DTYPES = ("float32", "float16", "bfloat16")


# ---- the paper's equations ---------------------------------------------------------------------
def projection_length(rho: int, num_classes: int, classes_per_batch):
    """M = ceil(rho / p(y)), p(y) = B / (I L) = P / L (Sec. 5.4), in integers: ceil(rho L / P).

    Works on Python ints and on integer tensors (``classes_per_batch`` counted in a batch).
    """
    return (rho * num_classes + classes_per_batch - 1) // classes_per_batch


def proximal_term(variables: list, anchors: list, weight: float) -> tf.Tensor:
    """``weight / 2 * ||theta^(k) - theta||^2`` summed over all variables (eq. 4.6), in float32."""
    squares = [
        tf.reduce_sum(tf.square(tf.cast(v, tf.float32) - tf.cast(a, tf.float32))) for v, a in zip(variables, anchors)
    ]
    return 0.5 * weight * tf.add_n(squares)


def hard_negative_classes(cache: np.ndarray, cached: np.ndarray, query: int, count: int) -> np.ndarray:
    """HNCM (Sec. 4): the ``count`` classes whose cached representatives are nearest to ``query``'s.

    Args:
        cache: (L, D) last embedding of each class's representative.
        cached: (L,) bool, whether a class's row holds an embedding yet.
        query: the class the negatives are mined for.
        count: how many classes to return at most.

    Returns:
        int64 class ids, nearest first (squared Euclidean); empty when ``query`` was never
        cached. Classes never cached are skipped, so fewer than ``count`` may come back.
    """
    if not cached[query]:
        return np.zeros(0, np.int64)
    candidates = np.flatnonzero(cached)
    candidates = candidates[candidates != query]
    distances = np.sum(np.square(cache[candidates] - cache[query]), axis=1)
    return candidates[np.argsort(distances, kind="stable")[:count]].astype(np.int64)


# ---- batch construction ----------------------------------------------------------------------
class ProfsSampler(PKSampler):
    """Representative-constrained batches of Algorithm 1, as image indices.

    Projection k = step // M has one representative image per class. A batch holds P classes
    (uniform, or by hard negative class mining when ``class_cache`` is given) with I images each:
    the class's representative first, then I - 1 other images of the class (drawn without
    replacement when the class has enough, else with replacement; the representative itself when
    it is the class's only image). Iterating yields ``(step, indices, is_representative)``.

    Args:
        labels: class id of every image; ids ``0..L-1`` index the cache rows.
        classes_per_batch: P (2 to L).
        images_per_class: I, the representative included (at least 2).
        steps_per_projection: M.
        seed: seed of all draws: ``[seed, 1, k]`` (representatives of projection k),
            ``[seed, 2, t]`` (classes of step t) and ``[seed, 4, t]`` (examples of step t).
        class_cache: for HNCM, a function returning the model's ``(cache, cached)`` arrays.
        first_step: the step of the first batch, or a function returning it when iteration
            starts (the optimizer's counter, so that a resumed run keeps the schedule).

    Raises:
        ValueError: P, I or M out of range.
    """

    def __init__(
        self,
        labels: np.ndarray,
        classes_per_batch: int,
        images_per_class: int,
        steps_per_projection: int,
        seed: int = 0,
        class_cache: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
        first_step: int | Callable[[], int] = 0,
    ):
        super().__init__(labels, classes_per_batch, images_per_class, seed)
        if steps_per_projection < 1:
            raise ValueError(f"steps_per_projection must be >= 1, got {steps_per_projection}")
        self.steps_per_projection = int(steps_per_projection)
        self.class_cache = class_cache
        self.first_step = first_step
        self._sizes = np.array([len(m) for m in self.members])
        self._projection, self._positions = -1, np.zeros(len(self.members), np.int64)

    def representatives(self, projection: int) -> np.ndarray:
        """Image index of each class's representative in ``projection`` (Algorithm 1, line 3).

        Each projection moves every class with n >= 2 images to another of its images: position
        (previous + 1 + floor(u (n - 1))) mod n, u uniform. Computed forward from the last call.
        """
        if projection < self._projection:
            self._projection = -1
        while self._projection < projection:
            self._projection += 1
            u = np.random.default_rng([self.seed, 1, self._projection]).random(len(self._sizes))
            if self._projection == 0:
                self._positions = np.floor(u * self._sizes).astype(np.int64)
            else:
                self._positions = (self._positions + 1 + np.floor(u * (self._sizes - 1)).astype(np.int64)) % self._sizes
        return np.array([members[p] for members, p in zip(self.members, self._positions)], np.int64)

    def choose_classes(self, rng: np.random.Generator) -> np.ndarray:
        """The P class indices of a batch: uniform, or a query class and its hard negative classes."""
        if self.class_cache is None:
            return rng.choice(len(self.classes), self.classes_per_batch, replace=False)
        cache, cached = self.class_cache()
        query = int(rng.integers(len(self.classes)))
        rows = hard_negative_classes(cache, cached, int(self.classes[query]), self.classes_per_batch - 1)
        chosen = np.concatenate([[query], np.searchsorted(self.classes, rows)])
        others = np.setdiff1d(np.arange(len(self.classes)), chosen)
        return np.concatenate([chosen, rng.choice(others, self.classes_per_batch - len(chosen), replace=False)])

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices (P * I,) and representative flags of the batch of ``step``, class by class.

        Classes come in increasing order and the examples have their own random stream, so that
        the examples of a step depend on its set of classes only (with HNCM, not on which class
        was the query nor on how many classes were cached).
        """
        representatives = self.representatives(step // self.steps_per_projection)
        classes = np.sort(self.choose_classes(np.random.default_rng([self.seed, 2, step])))
        rng = np.random.default_rng([self.seed, 4, step])
        indices = []
        for c in classes:
            others = self.members[c][self.members[c] != representatives[c]]
            if len(others) == 0:
                others = self.members[c]
            count = self.images_per_class - 1
            indices += [representatives[c], *rng.choice(others, count, replace=len(others) < count)]
        is_representative = np.zeros(self.batch_size, bool)
        is_representative[:: self.images_per_class] = True
        return np.asarray(indices, np.int64), is_representative

    def __iter__(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        step = self.first_step() if callable(self.first_step) else self.first_step
        while True:
            yield (step, *self.batch(step))
            step += 1


def profs_pipeline(image_set: ImageSet, image_size: int, sampler: ProfsSampler, **augmentation: Any) -> tf.data.Dataset:
    """Endless PROFS batches with random crops (``augmentation``, as in :func:`zoo.data.train_pipeline`) and flips.

    Returns:
        A dataset of ``(float32 (B, S, S, 3) images in [0, 255], int32 (B,) labels,
        int32 (B,) is_representative)``, B = P * I; the augmentation of step t is drawn from
        ``[seed, 3, t]``. The flags are 0/1 integers, not bools, because Keras averages every
        batch tensor when it builds a model under ``tf.distribute``, which bools cannot do.
    """

    def index_batches() -> Iterator[tuple[np.ndarray, ...]]:
        for step, indices, is_representative in sampler:
            rng = np.random.default_rng([sampler.seed, 3, step])
            yield indices, rng, is_representative.astype(np.int32)

    return augmented_batches(image_set, image_size, sampler.batch_size, index_batches, extra_dtypes=(tf.int32,),
                             **augmentation)


# ---- the model ---------------------------------------------------------------------------------
def unpack_profs_batch(data: tuple) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """``(images, labels, is_representative)`` of a PROFS batch; a clear error for any other batch."""
    if not isinstance(data, (tuple, list)) or len(data) != 3 or data[2] is None:
        raise ValueError(
            "ProfsModel trains on batches (images, labels, is_representative) from "
            "ProfsModel.make_train_dataset (zoo.methods.profs.profs_pipeline), not on plain "
            "(images, labels) batches: Algorithm 1 anchors every pair at a class representative"
        )
    images, labels, is_representative = data
    if not (is_representative.dtype == tf.bool or is_representative.dtype.is_integer):
        raise ValueError(f"is_representative must hold bools or 0/1 integers, got dtype {is_representative.dtype.name}")
    return images, labels, tf.cast(tf.reshape(is_representative, [-1]), tf.bool)


@register_method("profs")
class ProfsModel(MetricModel):
    """PROFS (Algorithm 1): a pairwise metric loss on representative-constrained batches + a proximal term.

    Args:
        embedding_net: images -> L2-normalised embeddings.
        num_classes: L, the number of training classes (rows of the representative cache).
        loss: one of the pairwise losses of Sec. 5.3 (``contrastive``, ``triplet``, ``margin``,
            ``lifted``, ``npair``, ``angular``), by name, dict or instance; default contrastive (C-PROFS,
            see the module docstring for why not triplet).
        miner: with a mined loss given by name, its miner.
        proximal_weight: lambda of eq. 4.6 (1e-3, Sec. 5.2); 0 keeps only the batch construction.
        rho: uses of a representative per projection (6, Sec. 5.4); gives M with P.
        steps_per_projection: M given directly (the ablation of Fig. 1); overrides rho.
        hard_negative_class_mining: choose a batch's classes by HNCM (Sec. 4).
        anchored_at_representatives: the metric loss takes only the pairs with a representative (eq. 4.6,
            the lifted adaptation of Sec. 5.3); False (default): every pair of the batch (eq. 4.7 read as the
            batch construction alone, "any proper loss" on the constrained batch; the module docstring).
        anchor_dtype: dtype of the proximal anchor theta^(k) (``float32``, ``float16``, ``bfloat16``).
        anchor_device: device of theta^(k), e.g. ``"/CPU:0"``; None = with the weights.
        seed: base seed of the stateless mining (the sampler takes the seed of
            :meth:`make_train_dataset`).

    Raises:
        ValueError: a loss PROFS is not defined with, or a hyperparameter out of range.
    """

    LOGGED_TERMS = ("metric_loss", "proximal_loss")

    def __init__(
        self,
        embedding_net: keras.Model,
        *,
        num_classes: int,
        loss: str | dict | losses_lib.MetricLoss = "contrastive",
        miner: str | None = None,
        proximal_weight: float = 1e-3,
        rho: int = 6,
        steps_per_projection: int | None = None,
        hard_negative_class_mining: bool = True,
        anchored_at_representatives: bool = False,
        anchor_dtype: str = "float32",
        anchor_device: str | None = None,
        seed: int = 0,
        **kwargs: Any,
    ):
        super().__init__(embedding_net, loss=loss, miner=miner, seed=seed, **kwargs)
        if not isinstance(self.metric_loss, PROFS_LOSSES):
            raise ValueError(
                f"PROFS is defined with the pairwise losses contrastive, triplet, margin, lifted, npair and "
                f"angular (Sec. 5.3), got {type(self.metric_loss).__name__}"
            )
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if proximal_weight < 0:
            raise ValueError(f"proximal_weight (lambda) must be >= 0, got {proximal_weight}")
        if int(rho) < 1 or rho != int(rho):
            raise ValueError(f"rho must be an integer >= 1, got {rho}")
        if steps_per_projection is not None and int(steps_per_projection) < 1:
            raise ValueError(f"steps_per_projection must be >= 1 or None, got {steps_per_projection}")
        if anchor_dtype not in ANCHOR_DTYPES:
            raise ValueError(f"anchor_dtype must be one of {ANCHOR_DTYPES}, got {anchor_dtype!r}")
        self.num_classes = int(num_classes)
        self.proximal_weight = float(proximal_weight)
        self.rho = int(rho)
        self.steps_per_projection = None if steps_per_projection is None else int(steps_per_projection)
        self.hard_negative_class_mining = bool(hard_negative_class_mining)
        self.anchored_at_representatives = bool(anchored_at_representatives)
        self.anchor_dtype = anchor_dtype
        self.anchor_device = anchor_device

    def build(self, input_shape=None) -> None:
        super().build(input_shape)
        with tf.device(self.anchor_device):
            self.anchor_weights = [
                keras.Variable(
                    keras.ops.cast(v, self.anchor_dtype), trainable=False, dtype=self.anchor_dtype,
                    aggregation="only_first_replica", name=f"anchor_{i}",
                )
                for i, v in enumerate(self.embedding_net.trainable_variables)
            ]
        self.representative_cache = keras.Variable(
            keras.ops.zeros((self.num_classes, self.embedding_dim)), trainable=False, dtype="float32",
            aggregation="only_first_replica", name="representative_cache",
        )
        self.representative_cached = keras.Variable(
            keras.ops.zeros((self.num_classes,), "bool"), trainable=False, dtype="bool",
            aggregation="only_first_replica", name="representative_cached",
        )

    # ---- Algorithm 1 ---------------------------------------------------------------------------
    def projection_length(self, classes_per_batch):
        """M for batches of ``classes_per_batch`` classes: ``steps_per_projection`` or ceil(rho L / P)."""
        if self.steps_per_projection is not None:
            return self.steps_per_projection
        return projection_length(self.rho, self.num_classes, classes_per_batch)

    def start_projection_if_due(self, num_representatives: tf.Tensor) -> None:
        """theta^(k) <- theta at the first step of every projection (steps 0, M, 2M, ...).

        An unconditional assign of a ``tf.where``: a mirrored variable cannot be assigned inside
        ``tf.cond`` in a replica context.
        """
        step = tf.convert_to_tensor(self.optimizer.iterations)
        due = tf.equal(step % tf.cast(self.projection_length(num_representatives), step.dtype), 0)
        for anchor, variable in zip(self.anchor_weights, self.embedding_net.trainable_variables):
            anchor.assign(tf.where(due, tf.cast(variable, anchor.dtype), anchor))

    def train_step(self, data):
        images, labels, is_representative = unpack_profs_batch(data)
        labels = ops.check_batch(images, labels)
        in_range = tf.debugging.assert_less(
            labels, self.num_classes, message="a label is not a training class id < num_classes"
        )
        with tf.control_dependencies([in_range]):  # before the cache update that would fail on it
            labels = tf.identity(labels)
        global_labels, global_flags = ops.gather_global_batch(labels, tf.cast(is_representative, tf.int32))
        global_representatives = global_flags > 0  # gathered as integers: all_gather takes no bools
        self.start_projection_if_due(tf.reduce_sum(global_flags))
        with tf.GradientTape() as tape:
            embeddings = self(images, training=True)
            (global_embeddings,) = ops.gather_global_batch(embeddings)
            # L(theta; B) of eq. 4.7 on the batch built around the representatives
            anchor_mask = global_representatives if self.anchored_at_representatives else None
            metric_loss = self.metric_loss(global_embeddings, global_labels, self.step_seed(), anchor_mask=anchor_mask)
            # 1/2 lambda ||theta^(k) - theta||^2 (eq. 4.6, lambda of Sec. 5.2)
            proximal_loss = proximal_term(
                self.embedding_net.trainable_variables, self.anchor_weights, self.proximal_weight
            )
            loss = metric_loss + proximal_loss + self.regularization_loss()
            scaled_loss = self.optimizer.scale_loss(loss / ops.num_replicas())
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(scaled_loss, variables), variables)
        self.update_representative_cache(global_embeddings, global_labels, global_representatives)
        return self.step_logs(loss, {"metric_loss": metric_loss, "proximal_loss": proximal_loss})

    def validation_losses(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """The metric loss (every image an anchor: plain batches flag no representatives) + the proximal term."""
        embeddings, labels = ops.gather_global_batch(self(images, training=False), labels)
        metric_loss = self.compute_metric_loss(embeddings, labels)
        proximal_loss = proximal_term(self.embedding_net.trainable_variables, self.anchor_weights, self.proximal_weight)
        loss = metric_loss + proximal_loss + self.regularization_loss()
        return loss, {"metric_loss": metric_loss, "proximal_loss": proximal_loss}

    def update_representative_cache(
        self, embeddings: tf.Tensor, labels: tf.Tensor, is_representative: tf.Tensor
    ) -> None:
        """HNCM cache (Sec. 4): store the embedding of every representative in the batch."""
        rows = tf.boolean_mask(labels, is_representative)[:, None]
        values = tf.boolean_mask(tf.stop_gradient(tf.cast(embeddings, tf.float32)), is_representative)
        self.representative_cache.assign(tf.tensor_scatter_nd_update(self.representative_cache, rows, values))
        self.representative_cached.assign(
            tf.tensor_scatter_nd_update(self.representative_cached, rows, tf.ones_like(rows[:, 0], tf.bool))
        )

    # ---- batches -------------------------------------------------------------------------------
    def read_representative_cache(self) -> tuple[np.ndarray, np.ndarray]:
        """The cache as numpy arrays, for the sampler's HNCM."""
        return self.representative_cache.numpy(), self.representative_cached.numpy()

    def make_train_dataset(
        self, image_set: ImageSet, image_size: int, classes_per_batch: int, images_per_class: int, seed: int = 0,
        **augmentation: Any,
    ) -> tf.data.Dataset:
        """PROFS batches ``(images, labels, is_representative)`` for this model (:func:`profs_pipeline`).

        P classes x I images, I counting the representative; M and HNCM as the model is
        configured; the first batch is the one of the optimizer's current step (resume).
        """
        if image_set.num_classes != self.num_classes:
            raise ValueError(
                f"the model was built for {self.num_classes} training classes, the set has {image_set.num_classes}"
            )
        sampler = ProfsSampler(
            image_set.labels,
            classes_per_batch,
            images_per_class,
            self.projection_length(classes_per_batch),
            seed=seed,
            class_cache=self.read_representative_cache if self.hard_negative_class_mining else None,
            first_step=self.current_step,
        )
        return profs_pipeline(image_set, image_size, sampler, **augmentation)

    # ---- serialisation -------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "proximal_weight": self.proximal_weight,
            "rho": self.rho,
            "steps_per_projection": self.steps_per_projection,
            "hard_negative_class_mining": self.hard_negative_class_mining,
            "anchored_at_representatives": self.anchored_at_representatives,
            "anchor_dtype": self.anchor_dtype,
            "anchor_device": self.anchor_device,
        }


# ---- registry presets --------------------------------------------------------------------------
_PAPER = (
    'O. Can, Y. Z. Gürbüz, A. A. Alatan, '
    '"Deep Metric Learning with Alternating Projections onto Feasible Sets"'
    ', ICIP 2021 (PROFS), T-PROFS-HNCM'
)
# Sec. 5.2: batch 128 with I = 2 images per class (the ablation's I, Sec. 5.4), 100 epochs,
# Adam lr 1e-4 for SOP and 1e-5 for CUB-200 / CARS196; 512-d embedding on 224 px crops.
_PAPER_HYPERPARAMETERS = {"loss": "facenet-triplet", "miner": "hard", "proximal_weight": 1e-3, "rho": 6,
                          "hard_negative_class_mining": True}
# Sec. 5.2: Adam with beta_1 = .9, beta_2 = .99; the new linear layer after the pooling (the Dense named
# "embedding" of zoo.backbones.build_embedding_net) learns with a 10x larger learning rate than the pretrained ones.
PAPER_OPTIMIZER = {"beta_2": 0.99, "learning_rate_multipliers": {"embedding/*": 10.0}}

PRESETS = [
    {
        "name": "profs_digits",
        "method": "profs",
        "paper": _PAPER,
        **DIGITS_PROTOCOL,
        "hyperparameters": {**_PAPER_HYPERPARAMETERS},
        # The step count: benchmarks/RESULTS.md, "How the digits presets' step counts were chosen".
        "training": {"epochs": 4, "steps_per_epoch": 10, "classes_per_batch": 5, "images_per_class": 16,
                     "learning_rate": 1e-4, "eval_every": 2},
        "command": "python training_scripts/profs.py --dataset digits --publish profs_digits",
    },
    # C-PROFS, the base loss that learns from scratch (the module docstring), with Sec. 5.2-5.4's PROFS settings.
    *with_imagenet(glyphs_preset("profs", _PAPER.replace("T-PROFS-HNCM", "C-PROFS-HNCM"),
                  {**_PAPER_HYPERPARAMETERS, "loss": "contrastive", "miner": None})),
    *(
        paper_preset("profs", _PAPER, dataset, _PAPER_HYPERPARAMETERS,
                     {"epochs": 100, "classes_per_batch": 64, "images_per_class": 2, "learning_rate": lr,
                      "optimizer": PAPER_OPTIMIZER, "eval_every": 1}, input_size=224)
        for dataset, lr in (("cub200", 1e-5), ("cars196", 1e-5), ("sop", 1e-4))
    ),
]

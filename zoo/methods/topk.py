"""Top-k precision embedding: "sampling wisely" and its loss l_k.

Lu et al., "Sampling Wisely: Deep Image Embedding by Top-k Precision Optimization", ICCV 2019.
Algorithm 1: each image of the batch takes its turn as the query ``z_a``; the other images are its candidates,
ranked by the large-margin cosine score ``ŝ = s + γ(1 − y)`` (eq. 4). Only the "misplaced" candidates beside the
top-k boundary enter the loss ``l_k = Σ_N ŝ − Σ_P ŝ`` (eq. 5):

- case 1, ``n+ < k`` (Sec. 3.3.1): ``P`` = the positives outside the top k ``K`` (eq. 6); ``N`` = the
  negatives of ``K`` ranked after the first ``k − n+`` negatives (eq. 7, "minimal necessary update");
- case 2, ``n+ ≥ k`` (Sec. 3.3.2): ``N`` = every negative of ``K`` (eq. 9); ``P`` = the positives outside
  ``K`` that are among the ``k`` best positives, ``ŝ ≥ ŝ+[k]`` (eq. 10).

The per-query losses are reduced over the batch and F descends on them (Algorithm 1's last line).

Choices where the paper is silent or ambiguous (numbers: benchmarks/RESULTS.md, "top-k: readings measured", under
the heading in brackets):

- Ties in ŝ: candidates are ranked by ŝ, equal scores by candidate index (the image earlier in the batch ranks
  higher; ``tf.math.top_k``'s order), so ``K`` holds exactly ``k`` candidates and ``|P| = |N|`` in both cases;
  the paper's ``K = {ŝ_i ≥ ŝ[k]}`` could hold more than k on ties.
- The query is not its own candidate (Algorithm 1: "other n images as candidate set"). A query with fewer than
  ``k`` candidates has all of them in ``K`` and a zero loss.
- Reduction: Algorithm 1 sums the per-query losses; :class:`TopKPrecisionLoss` takes their mean, the zoo's
  contract (a loss scale independent of the batch size and of the replicas); under Adam, the paper's optimizer,
  the updates are the same up to Adam's epsilon.
- Gradients flow through ŝ of the selected P and N only; the selection (a ranking) is constant.
- Batches (Sec. 4.4): :class:`TopKBatchSampler`, 64 images, at most 11 of a class; the last class drawn is cut to
  fill the batch. It stays the default over the baselines' P x K batches ["Learning rate and batches on glyphs"].
- Learning rate: the paper gives none (Sec. 4.4); ``topk_glyphs`` takes Adam 3e-4, since l_k's gradient is ±1 on
  every misplaced score ["Learning rate and batches on glyphs"]; from scratch on tiny_cnn, lr <= 1e-4: l_k has no
  gradient along a shift shared by all embeddings ["From scratch, and why it looks collapsed"].
- Optimizer: Keras's Adam (eps 1e-7); the paper says "ADAM", its authors' code and its ref. [21] run other
  settings, which measured no better ["The authors' optimizer, and that of ref. [21]"].
- Do not follow the PyTorch port that circulates (``topk_pre.py``): it shrinks k to n+ in case 1, ranks by
  negative Euclidean distance and assumes the query ranks first in its own row. Fig. 2 and Fig. 3's worked
  examples are test vectors (tests/test_topk.py).
"""

from __future__ import annotations

import functools
import numbers
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from zoo import losses as losses_lib
from zoo import ops
from zoo.data import ImageSet, PKSampler, train_pipeline
from zoo.methods import DIGITS_PROTOCOL, glyphs_preset, paper_preset, register_method, with_imagenet
from zoo.methods.metric_model import MetricModel

_EXCLUDED = float("-inf")  # the score that ranks a masked-out entry after every candidate


def large_margin_scores(scores: tf.Tensor, positive_mask: tf.Tensor, gamma: float) -> tf.Tensor:
    """``ŝ = s + γ(1 − y)`` (eq. 4): a negative outranks a positive unless ``s+ > s− + γ``."""
    scores = tf.cast(scores, tf.float32)
    return scores + gamma * (1.0 - tf.cast(positive_mask, tf.float32))


def _indicator(indices: tf.Tensor, depth: tf.Tensor, keep: tf.Tensor | None = None) -> tf.Tensor:
    """Boolean (..., depth): whether each column is one of ``indices`` (..., m) (where ``keep``)."""
    hits = tf.one_hot(indices, depth)
    if keep is not None:
        hits *= tf.cast(keep, tf.float32)[..., None]
    return tf.reduce_max(hits, axis=-2) > 0.0


def misplaced_sets(
    scores_hat: tf.Tensor, positive_mask: tf.Tensor, negative_mask: tf.Tensor, k: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """The misplaced positives ``P`` and negatives ``N`` of every query (Sec. 3.3.1-3.3.2).

    Vectorised over the leading axes, with three ``top_k`` of depth k per query (O(n log k)).

    Args:
        scores_hat: (..., n) large-margin scores ŝ of each query's candidates (eq. 4).
        positive_mask: (..., n) bool, candidate of the query's class (y = 1).
        negative_mask: (..., n) bool, candidate of another class (y = 0). Entries in neither mask
            (the query itself) are not candidates.
        k: the k of Prec@k.

    Returns:
        Boolean (..., n) masks ``P`` and ``N``.
    """
    scores_hat = tf.stop_gradient(tf.cast(scores_hat, tf.float32))
    positive_mask, negative_mask = tf.cast(positive_mask, tf.bool), tf.cast(negative_mask, tf.bool)
    num_candidates = tf.shape(scores_hat)[-1]
    depth = tf.minimum(k, num_candidates)

    def ranked(mask: tf.Tensor) -> tf.Tensor:
        """Indices of the ``depth`` best entries of ``mask`` by ŝ, best first (ties: lower index)."""
        return tf.math.top_k(tf.where(mask, scores_hat, _EXCLUDED), depth).indices

    in_top_k = _indicator(ranked(positive_mask | negative_mask), num_candidates)         # K
    num_positives = tf.reduce_sum(tf.cast(positive_mask, tf.int32), axis=-1, keepdims=True)  # n+
    # ŝ_i ≥ ŝ+[k]: one of the k best positives (eq. 10).
    top_k_positive = positive_mask & _indicator(ranked(positive_mask), num_candidates)
    # ŝ_i ≥ ŝ−[k − n+]: one of the first k − n+ negatives, properly placed even in an ideal ranking (eq. 7).
    first_negative = negative_mask & _indicator(
        ranked(negative_mask), num_candidates, keep=tf.range(depth) < k - num_positives
    )

    case_1 = num_positives < k  # Sec. 3.3.1; otherwise Sec. 3.3.2
    positive_outside = positive_mask & ~in_top_k
    negative_inside = negative_mask & in_top_k
    misplaced_positive = tf.where(case_1, positive_outside, positive_outside & top_k_positive)  # eq. (6) / (10)
    misplaced_negative = tf.where(case_1, negative_inside & ~first_negative, negative_inside)  # eq. (7) / (9)
    return misplaced_positive, misplaced_negative


def topk_precision_loss(
    scores: tf.Tensor, positive_mask: tf.Tensor, negative_mask: tf.Tensor, k: int = 5, gamma: float = 0.1
) -> tf.Tensor:
    """Per-query loss ``l_k = Σ_N ŝ − Σ_P ŝ`` (eq. 5) on the misplaced sets of :func:`misplaced_sets`.

    Args:
        scores: (..., n) similarities s between each query and its candidates (cosine, Sec. 3.1).
        positive_mask: (..., n) bool, y = 1.
        negative_mask: (..., n) bool, y = 0; entries in neither mask are not candidates.
        k: the k of Prec@k (paper: 5, Sec. 4.4).
        gamma: the margin γ of eq. (4) (paper: 0.1, Sec. 4.4).

    Returns:
        float32 (...): l_k of each query; its gradient reaches the scores of P (−1) and N (+1) only.
    """
    scores_hat = large_margin_scores(scores, positive_mask, gamma)
    misplaced_positive, misplaced_negative = misplaced_sets(scores_hat, positive_mask, negative_mask, k)
    zeros = tf.zeros_like(scores_hat)
    return tf.reduce_sum(tf.where(misplaced_negative, scores_hat, zeros), axis=-1) - tf.reduce_sum(
        tf.where(misplaced_positive, scores_hat, zeros), axis=-1
    )


def _integer_at_least(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


@keras.saving.register_keras_serializable(package="zoo")
class TopKPrecisionLoss(losses_lib.MetricLoss):
    """The top-k precision loss l_k as a zoo metric loss: usable with any :class:`MetricModel`.

    Every image of the batch is a query against all the others (Algorithm 1), with cosine
    similarities (Sec. 3.1); returns the mean of the per-query l_k (the paper sums them: see the
    module docstring). Deterministic: the ``seed`` is unused.

    Args:
        k: the k of Prec@k, an integer >= 1 (paper: 5).
        gamma: the margin γ >= 0 of eq. (4) (paper: 0.1).

    Raises:
        ValueError: k or gamma out of range.
    """

    def __init__(self, k: int = 5, gamma: float = 0.1, **kwargs: Any):
        super().__init__(**kwargs)
        self.k = _integer_at_least("k (of Prec@k)", k, 1)
        if not gamma >= 0.0:  # also rejects NaN
            raise ValueError(f"gamma (the margin of eq. 4) must be >= 0, got {gamma!r}")
        self.gamma = float(gamma)

    def call(self, embeddings: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor | None = None) -> tf.Tensor:
        embeddings = tf.math.l2_normalize(tf.cast(embeddings, tf.float32), axis=-1)
        scores = tf.matmul(embeddings, embeddings, transpose_b=True)  # s_ij, cosine similarity (Sec. 3.1)
        positive_mask, negative_mask = ops.same_class_masks(labels)
        return tf.reduce_mean(topk_precision_loss(scores, positive_mask, negative_mask, self.k, self.gamma))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "k": self.k, "gamma": self.gamma}


class TopKBatchSampler(PKSampler):
    """Sec. 4.4 batches: ``batch_size`` images (64) from randomly sampled classes.

    "For large classes, we randomly sample 11 images for the batch, so n+ = 10 (excluding 1 for
    query). For small classes with less than 11 images, we sample them all." Classes are drawn
    in random order without replacement, each giving ``min(images_per_class, its size)`` images
    without replacement, until the batch is full; the last class drawn is cut to fit (with 64 and
    11: five classes of 11 and 9 images of a sixth when the classes are large).

    Args:
        labels: class label of every image.
        classes_per_batch: only range-checked as in :class:`PKSampler`: Sec. 4.4 fixes the batch
            size, and the number of classes of a batch follows from it and the class sizes.
        images_per_class: the most images of one class in a batch (paper: 11), at least 2.
        seed: seed of the numpy generator.
        batch_size: images per batch (paper: 64).

    Raises:
        ValueError: an argument out of range, or a batch size the classes cannot fill.
    """

    def __init__(
        self, labels: np.ndarray, classes_per_batch: int, images_per_class: int, seed: int = 0, *, batch_size: int = 64
    ):
        super().__init__(labels, classes_per_batch, images_per_class, seed)
        capacity = sum(min(len(members), images_per_class) for members in self.members)
        if not 2 <= batch_size <= capacity:
            raise ValueError(
                f"batch_size must be between 2 and {capacity} (the images of all classes at "
                f"{images_per_class} per class), got {batch_size}"
            )
        self._batch_size = batch_size

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def sample_batch(self, rng: np.random.Generator) -> np.ndarray:
        chosen, count = [], 0
        for class_index in rng.permutation(len(self.classes)):
            members = self.members[class_index]
            chosen.append(rng.choice(members, min(len(members), self.images_per_class), replace=False))
            count += len(chosen[-1])
            if count >= self._batch_size:
                break
        return np.concatenate(chosen)[: self._batch_size].astype(np.int64)


@register_method("topk")
class TopKPrecisionModel(MetricModel):
    """Embedding net trained by l_k (Algorithm 1): MetricModel's step with :class:`TopKPrecisionLoss`.

    ``train_step`` (inherited) embeds the batch, gathers the global batch over replicas, lets every
    image be the query against all the others, and descends on the mean l_k.

    Args:
        embedding_net: images -> L2-normalised embeddings.
        k: the k of Prec@k (paper: 5, Sec. 4.4).
        gamma: the margin γ of eq. (4) (paper: 0.1, Sec. 4.4).
        batch_size: images per training batch of :class:`TopKBatchSampler` (paper: 64, Sec. 4.4).
        seed: base seed of the model's stateless random choices (l_k makes none).
    """

    def __init__(
        self,
        embedding_net: keras.Model,
        *,
        k: int = 5,
        gamma: float = 0.1,
        batch_size: int = 64,
        seed: int = 0,
        **kwargs: Any,
    ):
        super().__init__(embedding_net, loss=TopKPrecisionLoss(k=k, gamma=gamma), seed=seed, **kwargs)
        self.batch_size = _integer_at_least("batch_size", batch_size, 2)

    FIXED_ARGUMENTS = ("loss", "miner")  # l_k selects its own images (Sec. 3)

    def train_batch_size(self, classes_per_batch: int, images_per_class: int) -> int:
        return self.batch_size

    def make_train_dataset(
        self, image_set: ImageSet, image_size: int, classes_per_batch: int, images_per_class: int, seed: int = 0,
        **augmentation: Any,
    ) -> tf.data.Dataset:
        """Sec. 4.4 batches of ``batch_size`` images, at most ``images_per_class`` (11) per class."""
        sampler = functools.partial(TopKBatchSampler, batch_size=self.batch_size)
        return train_pipeline(image_set, image_size, classes_per_batch, images_per_class, seed, sampler_cls=sampler,
                              first_step=self.current_step, **augmentation)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        del config["loss"]  # fixed by k and gamma
        return {**config, "k": self.metric_loss.k, "gamma": self.metric_loss.gamma, "batch_size": self.batch_size}



_PAPER = (
    'J. Lu, C. Xu, W. Zhang, L.-Y. Duan, T. Mei, '
    '"Sampling Wisely: Deep Image Embedding by Top-k Precision Optimization"'
    ', ICCV 2019'
)
# Sec. 4.4: k = 5, gamma = 0.1, batches of 64 images with at most 11 per class.
_PAPER_HYPERPARAMETERS = {"k": 5, "gamma": 0.1, "batch_size": 64}
# The paper gives no learning rate: 1e-5, the zoo's fine-tuning rate of ImageNet backbones. Iterations:
# 5,000 on CUB and 8,000 on Cars (the x-axes of Fig. 4a-b); SOP: not given, about 20 passes.
_PAPER_TRAINING = {"classes_per_batch": 6, "images_per_class": 11, "learning_rate": 1e-5, "eval_every": 5}
_ITERATIONS = {"cub200": {"epochs": 50, "steps_per_epoch": 100}, "cars196": {"epochs": 80, "steps_per_epoch": 100},
               "sop": {"epochs": 20, "steps_per_epoch": 1000}}

PRESETS: list[dict[str, Any]] = [
    {
        "name": "topk_digits",
        "method": "topk",
        "paper": _PAPER,
        **DIGITS_PROTOCOL,
        # digits has 5 training classes: at most 11 images each fill 55, not 64.
        "hyperparameters": {**_PAPER_HYPERPARAMETERS, "batch_size": 55},
        # Frozen BatchNorm, Adam 5e-5, 60 steps. In runs this short BatchNorm's moving statistics lag, and
        # faster rates or longer runs overfit the 5 training digits: both lowered MAP@R on the unseen digits
        # in our trials (digits has no validation split: the step count was chosen on the test curve).
        "training": {"epochs": 3, "steps_per_epoch": 20, "classes_per_batch": 5, "images_per_class": 11,
                     "learning_rate": 5e-5, "eval_every": 3},
        "command": "python training_scripts/topk.py --dataset digits --publish topk_digits",
    },
    # Sec. 4.4's sampler (at most 11 images per class); Adam at 3e-4, measured (the module docstring).
    *with_imagenet(glyphs_preset("topk", _PAPER, _PAPER_HYPERPARAMETERS, images_per_class=11, learning_rate=3e-4)),
    *(  # the paper: BN-Inception and DenseNet201 (Sec. 4.4, Table 1); 256 px resized, random 227 crops
        paper_preset("topk", _PAPER, dataset, _PAPER_HYPERPARAMETERS, {**_PAPER_TRAINING, **_ITERATIONS[dataset]},
                     embedding_dim=512 if dataset == "sop" else 64)  # Sec. 4.4
        for dataset in ("cub200", "cars196", "sop")
    ),
]

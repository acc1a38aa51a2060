"""The training monitor: no silent collapse, no silent divergence.

:class:`TrainingMonitor` is one of every method's ``training_callbacks()``, so it runs in
``zoo train`` and in a plain ``model.fit(data, callbacks=model.training_callbacks())``. It reads
what each training step already logs, with no extra forward pass:

- ``loss`` and ``embedding_spread``: at the first NaN or infinite value it stops ``fit`` by raising
  :class:`TrainingDiverged`, whose message names the epoch and the step, before any later callback (a
  backup) sees the epoch (the spread too: a reducer over the non-zero terms drops NaN terms from the loss);
- ``embedding_spread`` (:func:`zoo.ops.embedding_spread`, the mean distance of the batch embeddings
  to their mean, recorded by :class:`zoo.methods.MetricModel` at each training forward pass): when its
  epoch mean falls below ``collapse_spread`` the embedding has collapsed to about one point, and the
  monitor warns (:class:`CollapseWarning`) with the epoch, the value and what to try.

A run can fail without either sign: AMDAML with squared hinges under the non-zero reduction
(``hinge_distance="squared"``) from scratch (glyphs, seed 1) ends at the untrained net's unseen-class MAP@R (0.015
against 0.012) with a spread of 0.16 and its training batches' classes still apart (1 - mean same-class / mean
other-class distance 0.35, against 0.39-0.55 in runs that learn); its embeddings lie along 2.5 directions
(participation ratio of the batch covariance), but so do those of runs that learn (HTG from scratch 2.7 in its first
epoch) and of the untrained nets (2.8-4.5 on the test set). No statistic of the training batches tells it apart, so
:func:`zoo.training.train` checks the held-out classes themselves: :func:`warn_if_not_learned` after the final
evaluation.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import keras
import numpy as np
import tensorflow as tf

# Measured on zoo's synthetic data with tiny_cnn from scratch (P5 x K16, Adam 1e-3, 15 steps an epoch):
# batch-hard triplets collapse, the loss flat at the margin and the epoch spread 0.029-0.035 then below 0.01
# (0.17 then 0.06 with BatchNorm training); the runs that learn (semi-hard, random, contrastive) keep
# 0.3-0.9 from the first epoch on.
COLLAPSE_SPREAD = 0.1
SPREAD_LOG = "embedding_spread"


# Measured (benchmarks/results/compare_methods.jsonl: glyphs and synthetic, 100 steps): the runs that ended at the
# untrained net's MAP@R (AMDAML hinge_distance="squared", seed 1 from scratch, three readings) gained +0.003
# to +0.006; every other run from scratch gained at least +0.018.
MIN_LEARNING_GAIN = 0.01


class NoLearningWarning(UserWarning):
    """Training left the held-out classes' MAP@R below the untrained model's, or less than a little above it."""


def warn_if_not_learned(trained_map_at_r: float, untrained_map_at_r: float,
                        min_gain: float = MIN_LEARNING_GAIN) -> None:
    """Warn (:class:`NoLearningWarning`) when training raised the held-out MAP@R by less than ``min_gain``."""
    gain = float(trained_map_at_r) - float(untrained_map_at_r)
    if gain >= min_gain:
        return
    warnings.warn(
        f"training did not learn: the held-out classes' MAP@R is {float(trained_map_at_r):.4f} after training and "
        f"{float(untrained_map_at_r):.4f} before (gain {gain:+.4f}, less than {min_gain}). The embedding may have "
        "collapsed without shrinking to a point; look at the loss terms in the run's history.jsonl and try a lower "
        "learning rate, another loss or reduction, or more steps.",
        NoLearningWarning,
        stacklevel=2,
    )


class TrainingDiverged(ValueError):
    """The training loss became NaN or infinite; the message names the epoch and the step."""


class CollapseWarning(UserWarning):
    """The embeddings of the training batches have collapsed to about one point."""


class TrainingMonitor(keras.callbacks.Callback):
    """Stops ``fit`` at the first non-finite loss; warns once when the embedding collapses.

    Args:
        collapse_spread: an epoch whose mean ``embedding_spread`` is below this value is a collapse
            (embeddings are L2-normalised: about 1 when spread over the sphere, 0 at one point).
    """

    def __init__(self, collapse_spread: float = COLLAPSE_SPREAD):
        super().__init__()
        self.collapse_spread = float(collapse_spread)
        self.epoch = 0
        self.collapsed_epoch: int | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.collapsed_epoch = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._check_loss(logs, f"epoch {self.epoch + 1}, step {batch + 1}")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._check_loss(logs, f"epoch {epoch + 1}")
        spread = (logs or {}).get(SPREAD_LOG)
        if spread is None or self.collapsed_epoch is not None or float(spread) >= self.collapse_spread:
            return
        self.collapsed_epoch = epoch
        warnings.warn(
            f"embedding collapse at epoch {epoch + 1}: the training embeddings lie within {float(spread):.4f} "
            f"of their mean ({SPREAD_LOG} < {self.collapse_spread}) and the loss is {float(logs['loss']):.4f}: "
            "the embedding no longer tells classes apart. Try another miner or loss (miner='hard' or "
            "'random', loss='contrastive' or 'multi-similarity') or a lower learning rate.",
            CollapseWarning,
            stacklevel=2,
        )

    def _check_loss(self, logs: dict | None, where: str) -> None:
        """Stop at a non-finite loss or embedding spread (a loss that drops non-finite terms stays finite)."""
        for name in ("loss", SPREAD_LOG):
            value = (logs or {}).get(name)
            if value is not None and not math.isfinite(float(np.mean(value))):
                self.model.stop_training = True
                raise TrainingDiverged(
                    f"training stopped: the {name} is {float(np.mean(value))} at {where} (1-based). The run "
                    "diverged: lower the learning rate, or check the data for NaN or infinite values."
                )


def warn_if_unit_scaled(images: Any) -> None:
    """Warn when float array ``images`` all lie in [0, 1]: the zoo's nets take pixels in [0, 255].

    Checks arrays and tensors only (a ``tf.data.Dataset`` is not read); costs one max over them.
    """
    if not isinstance(images, (np.ndarray, tf.Tensor)) or len(images.shape) != 4:
        return
    values = np.asarray(images)
    if np.issubdtype(values.dtype, np.floating) and values.size and float(values.max()) <= 1.0:
        warnings.warn(
            "the images lie in [0, 1], but the zoo's embedding nets expect pixels in [0, 255] "
            "(they standardise internally): pass images * 255",
            UserWarning,
            stacklevel=3,
        )

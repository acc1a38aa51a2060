"""Registry presets of the baseline: :class:`~zoo.methods.metric_model.MetricModel` + a metric loss.

The baseline is pytorch-metric-learning's default triplet loss: every triplet of the batch, margin
0.05, mean over the non-zero terms (``zoo.losses.TripletLoss()``, the protocol of Musgrave et al.,
"A Metric Learning Reality Check", ECCV 2020). FaceNet's semi-hard mining (Schroff et al. 2015)
stays available (``miner="semi-hard"``) but collapses when training from scratch. The paper
configs use the shared benchmark protocol of the zoo's papers (InceptionV3, 512-d, 227 px).
"""

from __future__ import annotations

from zoo.methods import DIGITS_PROTOCOL, glyphs_preset, paper_preset, with_imagenet

# Digits (5 training classes, 900 images): the net separates them within a few dozen steps and
# then overfits; frozen BatchNorm, a low rate and 30 steps keep the small gain on digits 5-9.
_DIGITS_TRAINING = {"epochs": 2, "steps_per_epoch": 15, "classes_per_batch": 5, "images_per_class": 16,
                    "learning_rate": 3e-4, "eval_every": 2}
_PAPER_TRAINING = {"epochs": 100, "classes_per_batch": 32, "images_per_class": 4, "learning_rate": 1e-5, "eval_every": 5}

_PAPER = (
    'Triplet margin loss over all batch triplets, PML defaults (K. Musgrave, S. Belongie, S.-N. Lim, '
    '"A Metric Learning Reality Check"'
    ', ECCV 2020)'
)
_HYPERPARAMETERS = {"loss": "triplet", "miner": "all"}
_MULTI_SIMILARITY = (
    'Multi-similarity loss, PML defaults (X. Wang, X. Han, W. Huang, D. Dong, M. R. Scott, '
    '"Multi-Similarity Loss with General Pair Weighting for Deep Metric Learning", CVPR 2019)'
)

PRESETS = [
    {
        "name": "triplet_digits",
        "method": "triplet",
        "paper": _PAPER,
        **DIGITS_PROTOCOL,
        "hyperparameters": {**_HYPERPARAMETERS},
        "training": _DIGITS_TRAINING,
        "command": "zoo train --method triplet --dataset digits --publish triplet_digits",
    },
    # glyphs: the README's main job, `zoo train` with no flags. From ImageNet (zoo train on a folder of your images):
    # PML's multi-similarity loss, which fine-tunes better than its triplet loss (benchmarks/RESULTS.md).
    *with_imagenet(glyphs_preset("triplet", _PAPER, _HYPERPARAMETERS), _MULTI_SIMILARITY, loss="multi-similarity"),
    *(paper_preset("triplet", _PAPER, dataset, _HYPERPARAMETERS, _PAPER_TRAINING) for dataset in ("cub200", "cars196", "sop")),
]

"""Registry presets of the baseline: :class:`~zoo.methods.metric_model.MetricModel` + a metric loss.

The triplet loss with semi-hard mining is FaceNet's protocol (Schroff et al. 2015); the paper
configs use the shared benchmark protocol of the zoo's papers (InceptionV3, 512-d, 227 px).
"""

from __future__ import annotations

from zoo.methods import DIGITS_PROTOCOL

# Digits (5 training classes, 900 images): the net separates them within a few dozen steps and
# then overfits; frozen BatchNorm, a low rate and 30 steps keep the small gain on digits 5-9.
_DIGITS_TRAINING = {"epochs": 2, "steps_per_epoch": 15, "classes_per_batch": 5, "images_per_class": 16,
                    "learning_rate": 3e-4, "eval_every": 2}
_PAPER_TRAINING = {"epochs": 100, "classes_per_batch": 32, "images_per_class": 4, "learning_rate": 1e-5, "eval_every": 5}

PRESETS = [
    {
        "name": "triplet_digits",
        "method": "triplet",
        "paper": "FaceNet (Schroff et al., CVPR 2015) triplet loss, random triplets",
        **DIGITS_PROTOCOL,
        "hyperparameters": {"loss": "triplet", "miner": "random"},
        "training": _DIGITS_TRAINING,
        "command": "zoo train --method triplet --dataset digits --publish triplet_digits",
    },
    *(
        {
            "name": f"triplet_{dataset}",
            "method": "triplet",
            "paper": "FaceNet (Schroff et al., CVPR 2015), semi-hard triplet mining",
            "backbone": "inception_v3",
            "backbone_weights": "imagenet",
            "dataset": dataset,
            "embedding_dim": 512,
            "input_size": 227,
            "hyperparameters": {"loss": "triplet", "miner": "semi-hard"},
            "training": _PAPER_TRAINING,
            "command": f"python training_scripts/triplet.py --dataset {dataset} --data-dir DATA",
        }
        for dataset in ("cub200", "cars196", "sop")
    ),
]

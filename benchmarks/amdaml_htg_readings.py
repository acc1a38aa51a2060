"""AMDAML's and HTG's readings beside their baselines, from scratch, on unseen synthetic classes (issue 14).

Every run: synthetic with ``--classes`` classes (the first half train, the rest unseen), tiny_cnn 32 px,
64-d, frozen BatchNorm, P8 x K4 batches (the same batches for every reading of a seed), Adam 1e-3,
``--steps`` steps; MAP@R and R@1 of the unseen classes before and after, and the last epoch's logged
terms (theta, D^2(x+, x^), G's and D's losses, ...). One JSON line per run.

    python benchmarks/amdaml_htg_readings.py --readings triplet contrastive amdaml htg --seeds 0 1 2
    python benchmarks/amdaml_htg_readings.py --readings amdaml_hinge amdaml_no_generator --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import keras

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from learning import fit_and_measure  # noqa: E402

from zoo.data import load_dataset, train_pipeline  # noqa: E402
from zoo.methods import build_model  # noqa: E402

_PRE = {"pretrain_steps": 50}
_HARD_NEGATIVE = {"adversary": "hinge", "closeness": "negative", "theta_max": 0.5}
READINGS: dict[str, tuple[str, dict]] = {
    "triplet": ("triplet", {"miner": "random"}),
    "contrastive": ("triplet", {"loss": "contrastive"}),
    "amdaml": ("amdaml", _PRE),
    "amdaml_no_generator": ("amdaml", {"pretrain_steps": 10**9}),
    "amdaml_all_pairs": ("amdaml", {**_PRE, "balance": "all"}),
    "amdaml_no_l_r": ("amdaml", {"pretrain_steps": 10**9, "l2_lambda": 0.0}),
    "amdaml_hinge": ("amdaml", {**_PRE, **_HARD_NEGATIVE}),
    "amdaml_hinge_embedding": ("amdaml", {**_PRE, **_HARD_NEGATIVE, "mix_space": "embedding"}),
    "amdaml_fast_generator": ("amdaml", {"pretrain_steps": 0, "generator_learning_rate": 0.02}),
    "amdaml_fast_generator_hinge": ("amdaml", {"pretrain_steps": 0, "generator_learning_rate": 0.02, **_HARD_NEGATIVE}),
    "amdaml_fast_generator_mixup": ("amdaml", {"pretrain_steps": 0, "generator_learning_rate": 0.02,
                                               "target": "mixup"}),
    "htg": ("htg", {}),
    "htg_summary": ("htg", {"f_loss": "generated", "f_through_g": True, "generator_learning_rate": 1e-4}),
    "htg_cls": ("htg", {"f_loss": "real+generated+cls"}),
    "htg_through_g": ("htg", {"f_through_g": True}),
    "htg_fast_generator": ("htg", {"generator_learning_rate": 1e-4}),
}


def run(reading: str, seed: int, classes: int, steps: int) -> dict:
    """One reading, one seed: unseen-class metrics before and after, and the last epoch's logs."""
    method, hyperparameters = READINGS[reading]
    train_set = load_dataset("synthetic", "train", num_classes=classes)
    test_set = load_dataset("synthetic", "test", num_classes=classes)
    keras.utils.set_random_seed(seed)
    extra = {"num_classes": classes // 2} if method == "htg" else {}
    model = build_model(method, embedding_dim=64, input_size=32, freeze_batchnorm=True, seed=seed,
                        **extra, **hyperparameters)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    logs: dict = {}
    last_epoch = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, epoch_logs: logs.update(epoch_logs))
    before, after = fit_and_measure(model, train_pipeline(train_set, 32, 8, 4, seed=seed), {"test": test_set},
                                    steps=steps // 5, epochs=5, metrics=("recall", "map@r"), callbacks=[last_epoch])
    return {"reading": reading, "seed": seed,
            "map@r": [round(before["test"]["map@r"], 4), round(after["test"]["map@r"], 4)],
            "recall@1": [round(before["test"]["recall@1"], 4), round(after["test"]["recall@1"], 4)],
            "last_epoch": {name: round(float(value), 4) for name, value in logs.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", nargs="+", default=["triplet", "contrastive", "amdaml", "htg"],
                        choices=sorted(READINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    for reading in args.readings:
        for seed in args.seeds:
            print(json.dumps(run(reading, seed, args.classes, args.steps)), flush=True)


if __name__ == "__main__":
    main()

"""Every method beside the baselines on unseen classes: same data, network, initialisation and budget, several seeds.

Each method trains with its ``<method>_glyphs`` preset (``zoo.methods.glyphs_preset``: ``small_cnn``, 32 px, 64-d,
P16 x K4, Adam 1e-3, the paper's hyperparameters) through ``zoo.training.train``, as ``zoo train`` does, for the
same number of steps, from scratch or fine-tuned from the zoo's pretrained backbone (``--backbone-weights glyphs``,
the offline stand-in for the papers' ImageNet start). Reports MAP@R, R@1 and NMI on the unseen test classes as
mean +- std over the seeds, and the untrained model's.

    python benchmarks/compare_methods.py                                   # all methods, 3 seeds, from scratch
    python benchmarks/compare_methods.py --backbone-weights glyphs         # fine-tuned from the pretrained backbone
    python benchmarks/compare_methods.py --methods triplet topk --seeds 0 --steps 100
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np

from zoo.names import METHOD_NAMES
from zoo.training import config_from_preset, train

KEY_METRICS = ("map@r", "recall@1", "nmi")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHOD_NAMES), choices=METHOD_NAMES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300, help="training steps per run")
    parser.add_argument("--backbone-weights", default=None, help="'glyphs': fine-tune the pretrained small_cnn")
    args = parser.parse_args()
    rows = []
    for method in args.methods:
        runs = []
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as run_dir:
                config = config_from_preset(f"{method}_glyphs", seed=seed, run_dir=run_dir, epochs=2,
                                            steps_per_epoch=args.steps // 2, eval_every=2,
                                            backbone_weights=args.backbone_weights)
                result = train(config)
            runs.append((result["metrics_untrained"], result["metrics"]))
        rows.append((method, runs))
    start = "fine-tuned from the pretrained small_cnn" if args.backbone_weights else "from scratch"
    print(f"glyphs, unseen test classes; each method's glyphs preset, {start}, {args.steps} steps, seeds {args.seeds}")
    print("| method | untrained MAP@R | " + " | ".join(KEY_METRICS) + " |")
    print("|---|--:|" + "--:|" * len(KEY_METRICS))
    for method, runs in rows:
        untrained = np.mean([before["map@r"] for before, _ in runs])
        cells = []
        for name in KEY_METRICS:
            values = np.array([after[name] for _, after in runs])
            cells.append(f"{values.mean():.3f} +- {values.std():.3f}")
        print(f"| {method} | {untrained:.3f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

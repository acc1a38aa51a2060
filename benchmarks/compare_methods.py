"""Every method side by side on unseen classes, with the same small budget (CPU-sized).

Trains each method from the same untrained tiny_cnn on the synthetic dataset's training classes
(``--classes`` in all, the first half train) and reports retrieval on the unseen half before and
after: the quick check that a method's training transfers, which digits (5 training classes)
cannot give. Uses ``zoo.training.train``, as ``zoo train`` does.

    python benchmarks/compare_methods.py                   # all methods, 60 steps each
    python benchmarks/compare_methods.py --methods triplet topk --steps 100
"""

from __future__ import annotations

import argparse
import tempfile

from zoo.methods import METHODS
from zoo.training import TrainConfig, train

KEY_METRICS = ("recall@1", "map@r", "nmi")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=sorted(METHODS))
    parser.add_argument("--steps", type=int, default=60, help="training steps per method")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    for method in args.methods:
        with tempfile.TemporaryDirectory() as run_dir:
            config = TrainConfig(
                method=method, dataset="synthetic", freeze_batchnorm=True, embedding_dim=64, input_size=32,
                epochs=1, steps_per_epoch=args.steps, classes_per_batch=5, images_per_class=8,
                learning_rate=args.lr, eval_every=1, seed=args.seed, run_dir=run_dir,
            )
            result = train(config)
        rows.append((method, result["metrics_untrained"], result["metrics"]))
    print(f"synthetic (10 training classes, 10 unseen), tiny_cnn 32 px, 64-d, {args.steps} steps, "
          f"Adam {args.lr:g}, batches 5 x 8, seed {args.seed}; each method's defaults otherwise")
    print("| method | " + " | ".join(f"{m} before -> after" for m in KEY_METRICS) + " |")
    print("|---|" + "---|" * len(KEY_METRICS))
    for method, before, after in rows:
        print(f"| {method} | " + " | ".join(f"{before[m]:.3f} -> {after[m]:.3f}" for m in KEY_METRICS) + " |")


if __name__ == "__main__":
    main()

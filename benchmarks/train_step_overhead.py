"""Time of each method's train_step relative to the plain triplet train_step, and peak host memory.

Each method runs in its own process (so that peak memory is its own) on the same backbone, image
size and batch (P x K = 8 x 4 = 32 synthetic images); the step time is the median of timed
``fit`` epochs of one step after a warm-up (graph tracing excluded). Targets (issue 8): <= 1.10
for THSG, HTG and AMDAML, <= 1.03 for PROFS and top-k.

    python benchmarks/train_step_overhead.py --backbone tiny_cnn --image-size 64
    python benchmarks/train_step_overhead.py --backbone resnet50 --image-size 224 --steps 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

TARGETS = {"thsg": 1.10, "htg": 1.10, "amdaml": 1.10, "profs": 1.03, "topk": 1.03}


def measure(method: str, backbone: str, image_size: int, steps: int) -> dict:
    """Median seconds per train step of ``method`` and this process's peak memory (MiB)."""
    import keras
    import tensorflow as tf

    from zoo.data import load_dataset
    from zoo.methods import build_model

    train_set = load_dataset("synthetic", "train", num_classes=32, images_per_class=12, image_size=64)
    model = build_model(method, backbone=backbone, embedding_dim=128, input_size=image_size,
                        backbone_weights=None, num_classes=train_set.num_classes)
    model.compile(optimizer=keras.optimizers.Adam(1e-5))
    batch = next(iter(model.make_train_dataset(train_set, image_size, 8, 4, seed=0)))
    data = tf.data.Dataset.from_tensors(batch).repeat()
    model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)  # trace and warm up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.fit(data, steps_per_epoch=1, epochs=1, verbose=0)
        times.append(time.perf_counter() - start)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"method": method, "step_seconds": statistics.median(times), "peak_mib": peak_mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="tiny_cnn")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per method")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args.backbone, args.image_size, args.steps)))
        return

    from zoo.methods import METHODS

    results = {}
    for method in ["triplet", *sorted(m for m in METHODS if m != "triplet")]:
        run = subprocess.run(
            [sys.executable, __file__, "--worker", method, "--backbone", args.backbone,
             "--image-size", str(args.image_size), "--steps", str(args.steps)],
            capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        if run.returncode != 0:
            print(f"{method}: failed\n{run.stderr[-2000:]}", file=sys.stderr)
            continue
        results[method] = json.loads(run.stdout.strip().splitlines()[-1])
    base = results["triplet"]["step_seconds"]
    print(f"{args.backbone} {args.image_size}px, batch 32, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs")
    print(f"| method | step (s) | ratio to triplet | target | peak host memory (MiB) |")
    print("|---|---|---|---|---|")
    for method, result in results.items():
        ratio = result["step_seconds"] / base
        target = TARGETS.get(method)
        verdict = "" if target is None else f"<= {target:.2f} {'met' if ratio <= target else 'MISSED'}"
        print(f"| {method} | {result['step_seconds']:.3f} | {ratio:.3f} | {verdict} | {result['peak_mib']:.0f} |")


if __name__ == "__main__":
    main()

"""Time of each method's train_step relative to the plain triplet train_step, and peak host memory.

Each method runs in its own process (so that peak memory is its own) on the same backbone, image
size and batch (P x K = 8 x 4 = 32 synthetic images); the step time (wall clock and CPU) is the median of three timed
``fit`` calls of ``--steps`` steps each, after a warm-up (graph tracing excluded). Targets (issue 8):
<= 1.10 for THSG, HTG and AMDAML, <= 1.03 for PROFS and top-k.

    python benchmarks/train_step_overhead.py --backbone tiny_cnn --image-size 64 --steps 20
    python benchmarks/train_step_overhead.py --backbone resnet50 --image-size 224 --steps 2
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

BATCH = 32  # P x K = 8 x 4
TARGETS = {"thsg": 1.10, "htg": 1.10, "amdaml": 1.10, "profs": 1.03, "topk": 1.03}


def measure(method: str, backbone: str, image_size: int, steps: int, repeats: int = 3) -> dict:
    """Median seconds per train step of ``method`` and this process's peak memory (MiB).

    Each of ``repeats`` timings is one ``fit`` of ``steps`` steps on one fixed batch, divided by
    ``steps`` (so ``fit``'s own per-call overhead is spread out): wall-clock seconds, and CPU
    seconds of all the process's threads (steadier on a shared or CPU-quota-limited machine).
    """
    import keras
    import tensorflow as tf

    from zoo.data import load_dataset
    from zoo.methods import build_model

    train_set = load_dataset("synthetic", "train", num_classes=32, images_per_class=12, image_size=64)
    same_batch = {"batch_size": BATCH} if method == "topk" else {}  # top-k's own sampler: 64 by default
    model = build_model(method, backbone=backbone, embedding_dim=128, input_size=image_size,
                        backbone_weights=None, num_classes=train_set.num_classes, **same_batch)
    model.compile(optimizer=keras.optimizers.Adam(1e-5))
    batch = next(iter(model.make_train_dataset(train_set, image_size, 8, 4, seed=0)))
    assert int(tf.shape(batch[0])[0]) == BATCH, f"{method} made a batch of {tf.shape(batch[0])[0]}"
    data = tf.data.Dataset.from_tensors(batch).repeat()
    model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)  # trace and warm up
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
        wall.append((time.perf_counter() - start_wall) / steps)
        cpu.append((time.process_time() - start_cpu) / steps)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"method": method, "step_seconds": statistics.median(wall), "step_cpu_seconds": statistics.median(cpu),
            "peak_mib": peak_mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="tiny_cnn")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed fit (3 timed fits per method)")
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
    base = results["triplet"]["step_cpu_seconds"]
    print(f"{args.backbone} {args.image_size}px, batch 32, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs")
    print("| method | step, wall (s) | step, CPU (s) | CPU ratio to triplet | target | peak host memory (MiB) |")
    print("|---|---|---|---|---|---|")
    for method, result in results.items():
        ratio = result["step_cpu_seconds"] / base
        target = TARGETS.get(method)
        verdict = "" if target is None else f"<= {target:.2f} {'met' if ratio <= target else 'MISSED'}"
        print(f"| {method} | {result['step_seconds']:.3f} | {result['step_cpu_seconds']:.3f} | {ratio:.3f} | {verdict} "
              f"| {result['peak_mib']:.0f} |")


if __name__ == "__main__":
    main()

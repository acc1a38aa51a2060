"""Images per second of the training input pipeline from JPEG files, versus what a train step consumes.

Writes a directory of JPEGs (synthetic images at typical benchmark resolution, default 500 x 375
like CUB-200 photos), then times ``zoo.data.train_pipeline`` (decode, resize 256 -> random crop
224 + flip, P x K sampling) over whole batches, and the ResNet50 triplet ``train_step`` at the
same batch. Target (issue 8): pipeline throughput >= 3x what the step consumes.

    python benchmarks/input_pipeline.py                 # pipeline and ResNet50 step
    python benchmarks/input_pipeline.py --skip-step     # pipeline only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np
from PIL import Image


def write_jpegs(folder: str, num_classes: int, per_class: int, width: int, height: int) -> tuple[list[str], np.ndarray]:
    """Random smooth RGB images as JPEG files; returns their paths and class ids."""
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for class_id in range(num_classes):
        for index in range(per_class):
            coarse = rng.uniform(0, 255, (height // 16, width // 16, 3)).astype(np.uint8)
            image = Image.fromarray(coarse).resize((width, height), Image.BILINEAR)
            path = os.path.join(folder, f"{class_id:03d}_{index:03d}.jpg")
            image.save(path, quality=90)
            paths.append(path)
            labels.append(class_id)
    return paths, np.asarray(labels)


def pipeline_images_per_second(paths: list[str], labels: np.ndarray, image_size: int, classes: int,
                               images_per_class: int, batches: int) -> float:
    from zoo.data import build_image_set, train_pipeline

    image_set = build_image_set("jpegs", "train", labels, paths=paths)
    iterator = iter(train_pipeline(image_set, image_size, classes, images_per_class, seed=0))
    next(iterator)  # start the workers
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * classes * images_per_class / (time.perf_counter() - start)


def step_images_per_second(image_size: int, classes: int, images_per_class: int, steps: int) -> float:
    import keras
    import tensorflow as tf

    from zoo.methods import build_model

    model = build_model("triplet", backbone="resnet50", embedding_dim=512, input_size=image_size,
                        backbone_weights=None)
    model.compile(optimizer=keras.optimizers.Adam(1e-5))
    batch = classes * images_per_class
    images = tf.random.uniform((batch, image_size, image_size, 3), 0, 255)
    labels = tf.repeat(tf.range(classes), images_per_class)
    data = tf.data.Dataset.from_tensors((images, labels)).repeat()
    model.fit(data, steps_per_epoch=1, epochs=1, verbose=0)  # trace
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=8, help="P classes per batch")
    parser.add_argument("--images-per-class", type=int, default=4, help="K images per class")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--steps", type=int, default=3, help="timed ResNet50 steps")
    parser.add_argument("--skip-step", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        paths, labels = write_jpegs(folder, num_classes=20, per_class=20, width=500, height=375)
        pipeline = pipeline_images_per_second(paths, labels, args.image_size, args.classes,
                                              args.images_per_class, args.batches)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "pipeline_images_per_second": round(pipeline, 1)}
    if not args.skip_step:
        step = step_images_per_second(args.image_size, args.classes, args.images_per_class, args.steps)
        result["resnet50_step_images_per_second"] = round(step, 2)
        result["ratio"] = round(pipeline / step, 1)
        result["target_ratio"] = 3.0
    print(json.dumps(result))


if __name__ == "__main__":
    main()

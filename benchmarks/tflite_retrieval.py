"""Retrieval of the TFLite exports beside the Keras model: float32 and dynamic-range int8 (``--quantize``).

    python benchmarks/tflite_retrieval.py                  # triplet_digits and triplet_glyphs on their test splits

The test split's images go through the evaluation's preprocessing (:func:`zoo.data.eval_pipeline`), then
through the Keras model, the float TFLite file and the quantised one (:func:`zoo.export.tflite_bytes`, run by
the TFLite interpreter); :func:`zoo.metrics.evaluate` measures each set of embeddings. One JSON line per model
goes to ``--results`` (metrics, largest embedding difference, file sizes, the command).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

import zoo
from zoo.data import eval_pipeline, load_dataset
from zoo.export import tflite_bytes, tflite_embeddings
from zoo.metrics import evaluate
from zoo.registry import get_entry, model_input_size

RESULTS = Path("benchmarks/results/tflite_retrieval.jsonl")
METRICS = ("recall", "map@r", "r_precision")


def measure(name: str) -> dict:
    model = zoo.load(name)
    dataset = get_entry(name)["dataset"]
    test = load_dataset(dataset, "test")
    images, labels = [], []
    for batch, batch_labels in eval_pipeline(test, model_input_size(model), 256):
        images.append(batch.numpy())
        labels.append(batch_labels.numpy())
    images, labels = np.concatenate(images), np.concatenate(labels)
    embeddings = {"keras": np.asarray(model.embedding_net.predict(images, batch_size=256, verbose=0))}
    sizes = {}
    for kind, quantize in (("tflite", False), ("tflite_int8", True)):
        blob = tflite_bytes(model, quantize)
        sizes[kind] = len(blob)
        embeddings[kind] = tflite_embeddings(blob, images)
    metrics = {kind: evaluate(x, labels, metrics=METRICS, recall_ks=(1,)) for kind, x in embeddings.items()}
    return {
        "model": name, "dataset": dataset, "images": len(images), "metrics": metrics, "bytes": sizes,
        "max_abs_difference": {kind: float(np.abs(x - embeddings["keras"]).max()) for kind, x in embeddings.items()},
        "map@r_difference_int8": metrics["tflite_int8"]["map@r"] - metrics["keras"]["map@r"],
        "command": "python " + shlex.join(sys.argv),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["triplet_digits", "triplet_glyphs"])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        record = measure(name)
        with open(args.results, "a") as stream:
            stream.write(json.dumps(record) + "\n")
        print(json.dumps(record))


if __name__ == "__main__":
    main()

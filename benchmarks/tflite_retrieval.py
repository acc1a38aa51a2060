"""Retrieval of the TFLite exports beside the Keras model: float32 and dynamic-range int8 (``--quantize``).

    python benchmarks/tflite_retrieval.py                  # triplet_digits and triplet_glyphs on their test splits
    python benchmarks/tflite_retrieval.py --report         # the table of benchmarks/RESULTS.md

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


def report(path: Path) -> str:
    """Markdown table of the recorded runs: MAP@R and R@1 of each export, embedding differences, sizes."""
    lines = ["| model (test split) | images | Keras MAP@R | TFLite float MAP@R | TFLite int8 MAP@R | int8 - Keras "
             "| R@1 Keras / int8 | max abs. embedding difference float / int8 | size float / int8 (KB) |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for line in path.read_text().splitlines():
        r = json.loads(line)
        m, d, b = r["metrics"], r["max_abs_difference"], r["bytes"]
        lines.append(f"| {r['model']} ({r['dataset']}) | {r['images']} | {m['keras']['map@r']:.4f} | "
                     f"{m['tflite']['map@r']:.4f} | {m['tflite_int8']['map@r']:.4f} | {r['map@r_difference_int8']:+.4f} "
                     f"| {m['keras']['recall@1']:.4f} / {m['tflite_int8']['recall@1']:.4f} | {d['tflite']:.1e} / "
                     f"{d['tflite_int8']:.4f} | {b['tflite'] / 1000:.0f} / {b['tflite_int8'] / 1000:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["triplet_digits", "triplet_glyphs"])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--report", action="store_true", help="print the table of --results")
    args = parser.parse_args()
    if args.report:
        print(report(args.results))
        return
    args.results.parent.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        record = measure(name)
        with open(args.results, "a") as stream:
            stream.write(json.dumps(record) + "\n")
        print(json.dumps(record))


if __name__ == "__main__":
    main()

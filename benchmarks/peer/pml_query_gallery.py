"""pytorch-metric-learning's ``AccuracyCalculator`` on query/gallery sets: writes the test fixture.

Run in the peer environment (``pip install -e ".[peer]"``: CPU torch and pytorch-metric-learning)::

    python benchmarks/peer/pml_query_gallery.py --out tests/fixtures/pml_query_gallery.json

Each case of :data:`CASES` is seeded unit embeddings (queries and a gallery) with labels, some query classes
absent from the gallery (PML's "lone" queries, left out of the metrics). ``separate``: the gallery holds no
query (``get_accuracy(query, labels, reference, reference_labels)``); ``includes_queries``: the gallery
starts with the queries themselves, followed by other items (``ref_includes_query=True``: a query never
retrieves itself). The default test suite (tests/test_query_gallery.py, no torch) compares
``zoo.metrics.evaluate`` with ``reference_embeddings`` (and ``own_reference``) against this file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytorch_metric_learning
import torch
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN

DIM = 16
NOISE = 0.35  # per coordinate, around unit class centres
# name: (seed, queries, gallery items besides the queries, query classes, gallery classes, gallery includes queries)
CASES = {
    "separate": (0, 60, 100, 14, 12, False),
    "includes_queries": (1, 50, 80, 12, 10, True),
}
METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r", "mean_average_precision")


def unit_rows(rng: np.random.Generator, centres: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each label's centre plus noise, L2-normalised: classes that overlap, so the metrics are neither 0 nor 1."""
    x = (centres[labels] + NOISE * rng.normal(size=(len(labels), DIM))).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def compact(values: np.ndarray) -> list:
    """Nested lists of float32 values with the 9 significant digits that round-trip float32."""
    return np.vectorize(lambda v: float(f"{v:.9g}"), otypes=[float])(np.asarray(values, np.float32)).tolist()


def case(seed: int, num_queries: int, num_others: int, query_classes: int, gallery_classes: int,
         includes_queries: bool) -> dict:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(query_classes, gallery_classes), DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels, other_labels = rng.integers(0, query_classes, num_queries), rng.integers(0, gallery_classes, num_others)
    queries, others = unit_rows(rng, centres, labels), unit_rows(rng, centres, other_labels)
    gallery = np.concatenate([queries, others]) if includes_queries else others
    gallery_labels = np.concatenate([labels, other_labels]) if includes_queries else other_labels
    calculator = AccuracyCalculator(include=METRICS, k=None, device=torch.device("cpu"),
                                    knn_func=CustomKNN(CosineSimilarity()))  # exact k-NN in torch (no faiss)
    values = calculator.get_accuracy(torch.from_numpy(queries), torch.from_numpy(labels), torch.from_numpy(gallery),
                                     torch.from_numpy(gallery_labels), ref_includes_query=includes_queries)
    return {"queries": compact(queries), "labels": labels.tolist(), "gallery": compact(gallery),
            "gallery_labels": gallery_labels.tolist(), "includes_queries": includes_queries,
            "pml": {name: float(value) for name, value in values.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tests/fixtures/pml_query_gallery.json")
    args = parser.parse_args()
    fixture = {
        "versions": {"pytorch_metric_learning": pytorch_metric_learning.__version__, "torch": torch.__version__},
        "command": "python benchmarks/peer/pml_query_gallery.py --out " + args.out,
        "calculator": {"include": list(METRICS), "k": None, "knn_func": "CustomKNN(CosineSimilarity())"},
        "cases": {name: case(*spec) for name, spec in CASES.items()},
    }
    Path(args.out).write_text(json.dumps(fixture) + "\n")
    print(f"wrote {args.out}: {', '.join(fixture['cases'])}")


if __name__ == "__main__":
    main()

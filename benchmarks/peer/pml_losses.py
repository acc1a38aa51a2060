"""pytorch-metric-learning's values for the zoo's PML-equivalent losses and miners: writes the test fixture.

Run in the peer environment (``pip install -e ".[peer]"``: CPU torch and pytorch-metric-learning)::

    python benchmarks/peer/pml_losses.py --out tests/fixtures/pml_losses.json

For each input of :data:`INPUTS` (seeded L2-normalised embeddings and labels) and each entry of
``zoo.losses.PML_EQUIVALENTS`` it records PML's loss value and its gradient with respect to the
embeddings (and to the proxies); for the miners the index sets of PML's ``MultiSimilarityMiner``
and of all pairs and triplets; and cross-batch memory over a sequence of batches. The default test
suite (tests/test_pml_equivalence.py, no torch) compares the zoo against this file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pytorch_metric_learning
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from zoo.losses import PML_EMBEDDING_DIM, PML_EQUIVALENTS, PML_NUM_CLASSES

# name: (seed, labels); embeddings are (len(labels), PML_EMBEDDING_DIM), normal then L2-normalised
INPUTS = {
    "p8k4": (0, np.repeat(np.arange(8), 4)),
    "uneven": (1, np.array([0] * 5 + [1] * 3 + [2] + [3] * 4 + [4] * 2 + [5] * 6)),
    "p8k6_shuffled": (2, np.random.default_rng(12).permutation(np.repeat(np.arange(8), 6))),
}
# where each proxy loss keeps its weights, and whether PML stores them transposed (D, C)
PROXY_WEIGHTS = {
    "ProxyNCALoss": ("proxies", False),
    "ProxyAnchorLoss": ("proxies", False),
    "NormalizedSoftmaxLoss": ("W", True),
    "CosFaceLoss": ("W", True),
    "ArcFaceLoss": ("W", True),
    "SoftTripleLoss": ("fc", True),
}
XBM_LOSSES = {
    "ContrastiveLoss": {},
    "TripletMarginLoss": {"margin": 0.2},
    "MultiSimilarityLoss": {},
}
XBM_MEMORY_SIZE = 64


def compact(values: np.ndarray) -> list:
    """Nested lists of float32 values, written with the 9 significant digits that round-trip float32."""
    return np.vectorize(lambda v: float(f"{v:.9g}"), otypes=[float])(np.asarray(values, np.float32)).tolist()


def embeddings_for(seed: int, size: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(size, PML_EMBEDDING_DIM)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def proxy_weights_for(seed: int, rows: int) -> np.ndarray:
    return np.random.default_rng(100 + seed).normal(size=(rows, PML_EMBEDDING_DIM)).astype(np.float32)


def loss_case(name: str, kwargs: dict, x: np.ndarray, y: np.ndarray, seed: int) -> dict:
    loss = getattr(pml_losses, name)(**kwargs)
    case: dict = {}
    weights = None
    if name in PROXY_WEIGHTS:
        attribute, transposed = PROXY_WEIGHTS[name]
        rows = getattr(loss, attribute).shape[1 if transposed else 0]
        zoo_layout = proxy_weights_for(seed, rows)
        with torch.no_grad():
            getattr(loss, attribute).copy_(torch.from_numpy(zoo_layout.T.copy() if transposed else zoo_layout))
        weights = getattr(loss, attribute)
        case["proxies"] = compact(zoo_layout)
    embeddings = torch.tensor(x, requires_grad=True)
    value = loss(embeddings, torch.from_numpy(y))
    value.backward()
    case["value"] = float(value.detach())
    case["grad"] = compact(embeddings.grad.numpy())
    if weights is not None:
        grad = weights.grad.numpy()
        case["proxies_grad"] = compact(grad.T if PROXY_WEIGHTS[name][1] else grad)
    return case


def pairs(a: torch.Tensor, b: torch.Tensor) -> list[list[int]]:
    return sorted([int(i), int(j)] for i, j in zip(a, b))


def triplets_digest(triplets) -> str:
    """sha256 of the sorted (a, p, n) list as JSON (the lists themselves would make the fixture large)."""
    return hashlib.sha256(json.dumps(sorted([int(i), int(j), int(k)] for i, j, k in triplets)).encode()).hexdigest()


def miner_case(x: np.ndarray, y: np.ndarray) -> dict:
    e, labels = torch.from_numpy(x), torch.from_numpy(y)
    a1, p, a2, n = pml_miners.MultiSimilarityMiner()(e, labels)
    all_a1, all_p, all_a2, all_n = lmu.get_all_pairs_indices(labels)
    ta, tp, tn = lmu.get_all_triplets_indices(labels)
    return {
        "multi_similarity": {"positives": pairs(a1, p), "negatives": pairs(a2, n)},
        "all": {
            "positives": pairs(all_a1, all_p),
            "negatives": pairs(all_a2, all_n),
            "triplets_sha256": triplets_digest(zip(ta.tolist(), tp.tolist(), tn.tolist())),
        },
    }


def xbm_case(name: str, kwargs: dict, batches: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    xbm = pml_losses.CrossBatchMemory(getattr(pml_losses, name)(**kwargs), PML_EMBEDDING_DIM, XBM_MEMORY_SIZE)
    values = [float(xbm(torch.from_numpy(x), torch.from_numpy(y)).detach()) for x, y in batches]
    return {"kwargs": kwargs, "values": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tests/fixtures/pml_losses.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    fixture: dict = {
        "versions": {"pytorch_metric_learning": pytorch_metric_learning.__version__, "torch": torch.__version__},
        "num_classes": PML_NUM_CLASSES,
        "inputs": {},
        "losses": {},
        "miners": {},
        "xbm": {},
    }
    batches = []
    for input_name, (seed, labels) in INPUTS.items():
        x, y = embeddings_for(seed, len(labels)), labels.astype(np.int64)
        batches.append((x, y))
        fixture["inputs"][input_name] = {"embeddings": compact(x), "labels": y.tolist()}
        fixture["miners"][input_name] = miner_case(x, y)
        for loss_name, (kwargs, _) in PML_EQUIVALENTS.items():
            case = loss_case(loss_name, kwargs, x, y, seed)
            fixture["losses"].setdefault(loss_name, {"kwargs": kwargs, "cases": {}})["cases"][input_name] = case
    for loss_name, kwargs in XBM_LOSSES.items():
        fixture["xbm"][loss_name] = xbm_case(loss_name, kwargs, batches)
    fixture["xbm_memory_size"] = XBM_MEMORY_SIZE
    Path(args.out).write_text(json.dumps(fixture, separators=(",", ":")))
    for loss_name, entry in fixture["losses"].items():
        print(loss_name, {k: round(c["value"], 5) for k, c in entry["cases"].items()})


if __name__ == "__main__":
    main()

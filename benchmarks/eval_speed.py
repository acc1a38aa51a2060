"""Speed and memory of ``zoo.metrics.evaluate`` at Stanford Online Products scale, and its k-means.

Random unit vectors stand in for embeddings: 60,502 x 512 in 11,316 classes (2 images per class plus
a multinomial share of the rest: 2 to ~12 per class, ~5.35 on average, as in SOP's test split).
``--noise S`` makes them clustered instead (class centre plus S times as much noise), like trained
embeddings. Without ``--kmeans-study`` it times ``evaluate`` (SOP protocol, every metric) and its two
halves; with it, the NMI and time of faiss k-means for a grid of iteration counts and subsamples (the study behind ``zoo.metrics.KMEANS_*``). ``benchmarks/peer/compare_eval.py`` puts
``evaluate`` beside pytorch-metric-learning and the faiss bound.

    python benchmarks/eval_speed.py                        # full scale, prints a JSON report
    python benchmarks/eval_speed.py --kmeans-study --noise 1.5
    python benchmarks/eval_speed.py --num 5000 --classes 935 --out report.json
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
from sklearn.metrics import normalized_mutual_info_score

from zoo import metrics

SOP_RECALL_KS = (1, 10, 100, 1000)
# (niter, max_points_per_centroid, seeds) of the k-means study, cheapest first; niter=100 runs until
# faiss stops (objective no longer decreasing): the converged reference, two seeds for their spread.
KMEANS_GRID = (
    (1, 1, (0,)), (1, None, (0,)), (2, None, (0,)), (3, None, (0,)), (1, 2, (0,)), (2, 2, (0,)),
    (100, None, (0, 1)),
)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss, KiB on Linux), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sop_like_data(
    num: int, dim: int, num_classes: int, seed: int = 0, noise: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors and shuffled labels, every class with at least 2 items.

    Args:
        num, dim, num_classes: shape of the set.
        seed: numpy seed.
        noise: None: uniformly random directions; else each vector is its class centre plus
            ``noise`` times a random vector of the same expected norm, normalised.
    """
    rng = np.random.default_rng(seed)
    sizes = 2 + rng.multinomial(num - 2 * num_classes, np.full(num_classes, 1 / num_classes))
    labels = rng.permutation(np.repeat(np.arange(num_classes), sizes))
    x = rng.standard_normal((num, dim), dtype=np.float32)
    if noise is not None:
        x = rng.standard_normal((num_classes, dim), dtype=np.float32)[labels] + np.float32(noise) * x
    return metrics.l2_normalise(x), labels


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def kmeans_study(x: np.ndarray, labels: np.ndarray) -> list[dict]:
    """NMI, F1 and seconds of k-means (as many clusters as classes) for each setting of KMEANS_GRID."""
    num_classes = len(np.unique(labels))
    rows = []
    for niter, points, seeds in KMEANS_GRID:
        for seed in seeds:
            clusters, seconds = timed(
                metrics.kmeans_clusters, x, num_classes, seed=seed, niter=niter, max_points_per_centroid=points
            )
            rows.append({
                "niter": niter, "max_points_per_centroid": points, "seed": seed,
                "nmi": float(normalized_mutual_info_score(labels, clusters)),
                "f1": metrics.pairwise_f1(labels, clusters), "seconds": seconds,
            })
            print(json.dumps(rows[-1]), flush=True)
    return rows


def evaluate_sop(
    x: np.ndarray, labels: np.ndarray, retrieval_only: bool = False, use_gpu: bool = False
) -> tuple[dict, float]:
    """``evaluate`` at the SOP protocol, every metric (or all but NMI and F1): (results, seconds)."""
    names = [name for name in metrics.ALL_METRICS if not (retrieval_only and name in ("nmi", "f1"))]
    return timed(metrics.evaluate, x, labels, recall_ks=SOP_RECALL_KS, metrics=names, use_gpu=use_gpu)


def evaluate_parts(x: np.ndarray, labels: np.ndarray, use_gpu: bool) -> dict:
    """Seconds of ``evaluate`` (SOP protocol, every metric), of its retrieval half and of its k-means."""
    results, total = evaluate_sop(x, labels, use_gpu=use_gpu)
    report = {"evaluate_s": total, "peak_rss_mb_after_evaluate": peak_rss_mb(), "metrics": results}
    report["retrieval_s"] = evaluate_sop(x, labels, retrieval_only=True, use_gpu=use_gpu)[1]
    report["kmeans_s"] = timed(metrics.evaluate, x, labels, metrics=("nmi", "f1"), use_gpu=use_gpu)[1]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=60502)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=11316)
    parser.add_argument("--noise", type=float, help="clustered data: noise relative to the class centre")
    parser.add_argument("--kmeans-study", action="store_true", help="NMI and time of k-means settings")
    parser.add_argument("--gpu", action="store_true", help="similarity blocks and k-means on the GPU (faiss-gpu)")
    parser.add_argument("--out", help="write the JSON report here (default: print it)")
    args = parser.parse_args()

    report: dict = {"num": args.num, "dim": args.dim, "classes": args.classes, "noise": args.noise}
    x, labels = sop_like_data(args.num, args.dim, args.classes, noise=args.noise)
    if args.kmeans_study:
        report["kmeans"] = kmeans_study(x, labels)
    else:
        report.update(evaluate_parts(x, labels, args.gpu))
    report["peak_rss_mb"] = peak_rss_mb()
    text = json.dumps(report, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

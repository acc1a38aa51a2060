"""Speed and memory of ``zoo.metrics.evaluate`` at Stanford Online Products scale (issue 8).

Random unit vectors stand in for embeddings: 60,502 x 512 in 11,316 classes (2 images per class plus
a multinomial share of the rest: 2 to ~12 per class, ~5.3 on average, as in SOP's test split).
Times ``evaluate`` with every metric, then each part on its own, faiss' ``IndexFlatIP.search`` and a
plain numpy brute-force k-NN for the retrieval part, and checks that they give the same neighbours.

    python benchmarks/eval_speed.py                 # full scale, prints a JSON report
    python benchmarks/eval_speed.py --num 5000 --classes 1000 --out report.json
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import faiss
import numpy as np
from sklearn.metrics import normalized_mutual_info_score

from zoo import metrics


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss, KiB on Linux), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sop_like_data(num: int, dim: int, num_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random unit vectors and shuffled labels, every class with at least 2 items."""
    rng = np.random.default_rng(seed)
    sizes = 2 + rng.multinomial(num - 2 * num_classes, np.full(num_classes, 1 / num_classes))
    labels = rng.permutation(np.repeat(np.arange(num_classes), sizes))
    x = rng.standard_normal((num, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=60502)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=11316)
    parser.add_argument("--gpu", action="store_true", help="similarity blocks and k-means on the GPU (faiss-gpu)")
    parser.add_argument("--out", help="write the JSON report here (default: print it)")
    args = parser.parse_args()

    report: dict = {"num": args.num, "dim": args.dim, "classes": args.classes, "peak_rss_mb_after_import": peak_rss_mb()}
    x, labels = sop_like_data(args.num, args.dim, args.classes)
    results, report["evaluate_s"] = timed(metrics.evaluate, x, labels, use_gpu=args.gpu)
    report["peak_rss_mb_after_evaluate"] = peak_rss_mb()
    report["metrics"] = results

    gpu = metrics.gpu_resources(args.gpu)
    k = 10  # max of the default recall_ks and precision_ks
    seconds = report["parts_s"] = {}
    ranking, seconds["knn_and_positive_ranks"] = timed(metrics.compute_ranking, x, labels, k=k, gpu=gpu)
    knn, seconds["knn_only"] = timed(metrics.compute_ranking, x, labels, k=k, positive_ranks=False, gpu=gpu)
    _, seconds["positive_ranks_only"] = timed(metrics.compute_ranking, x, labels, k=0, gpu=gpu)
    _, seconds["retrieval_metrics_from_ranking"] = timed(
        metrics.retrieval_metrics, ranking, labels, labels, (1, 2, 4, 8), (1, 3, 5, 10), metrics.RANK_METRICS
    )
    clusters, seconds[f"kmeans_niter{metrics.KMEANS_NITER}"] = timed(
        metrics.kmeans_clusters, x, args.classes, gpu=gpu
    )
    _, seconds["nmi"] = timed(normalized_mutual_info_score, labels, clusters)
    _, seconds["f1"] = timed(metrics.pairwise_f1, labels, clusters)

    # For comparison: faiss' own exact search (k + 1: the query finds itself first).
    index = faiss.IndexFlatIP(args.dim)
    index.add(x)
    (_, flat_ids), seconds["faiss_index_flat_ip_search"] = timed(index.search, x, k + 1)
    report["index_flat_ip_rows_differing"] = int((flat_ids[:, 1:] != knn.neighbors).any(axis=1).sum())

    (sims, ids), numpy_s = timed(metrics.brute_force_knn, x, x, k, exclude_self=True)
    seconds["numpy_brute_force_knn"] = numpy_s
    report["numpy_over_faiss_knn"] = numpy_s / seconds["knn_only"]
    differ = knn.neighbors != ids
    report["knn_rows_differing"] = int(differ.any(axis=1).sum())
    # Rows may differ only where two neighbours are within float32 rounding of each other.
    report["knn_max_similarity_gap"] = float(np.abs(knn.similarities - sims).max())
    report["knn_equal_up_to_rounding"] = bool(report["knn_max_similarity_gap"] <= 1e-5)
    report["peak_rss_mb"] = peak_rss_mb()

    text = json.dumps(report, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

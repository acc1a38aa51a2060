"""``zoo.metrics.evaluate`` beside pytorch-metric-learning's ``AccuracyCalculator`` and the faiss bound.

Same embeddings for all (``benchmarks/eval_speed.py``'s SOP-shaped random unit vectors, 512-D, classes of
~5.35), each measurement in a fresh process (so that its peak memory is its own), the libraries
interleaved and repeated, the minimum kept:

- ``zoo``: ``evaluate`` with every metric, SOP protocol (R@1,10,100,1000, P@1,3,5,10, mAP, MAP@R,
  R-precision, NMI, F1);
- ``zoo-retrieval``: the same without NMI and F1 (its retrieval part);
- ``pml``: ``AccuracyCalculator(k="max_bin_count")`` with P@1, R-precision, MAP@R and NMI (its faiss
  k-NN of max-class-size neighbours and faiss k-means, 20 iterations);
- ``bound``: a bare faiss ``IndexFlatIP`` search for max-class-size neighbours, the similarity matmul
  (2 N^2 D) that any exact evaluation pays.

The shared metrics (zoo R@1 = PML P@1, MAP@R, R-precision, NMI) are compared too. Needs the optional
peer environment (CPU torch and pytorch-metric-learning).

    python benchmarks/peer/compare_eval.py                          # 20,000 and 60,502 vectors
    python benchmarks/peer/compare_eval.py --nums 20000 --repeats 3
    python benchmarks/peer/compare_eval.py --nums 60502 --libraries zoo-retrieval bound
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import faiss
import numpy as np

from benchmarks.eval_speed import evaluate_sop, peak_rss_mb, sop_like_data

IMAGES_PER_CLASS = 60502 / 11316  # SOP's test split
LIBRARIES = ("zoo", "zoo-retrieval", "pml", "bound")
SHARED = {"recall@1": "precision_at_1", "map@r": "mean_average_precision_at_r", "r_precision": "r_precision", "nmi": "NMI"}


def measure(library: str, num: int, dim: int) -> dict:
    """One timed run of ``library`` on the benchmark data of ``num`` vectors (in this process)."""
    x, labels = sop_like_data(num, dim, round(num / IMAGES_PER_CLASS))
    if library in ("zoo", "zoo-retrieval"):
        results, seconds = evaluate_sop(x, labels, retrieval_only=library == "zoo-retrieval")
        return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "metrics": results}
    if library == "pml":  # imported here, before the clock, so that the other processes do not load torch
        import torch
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        calculator = AccuracyCalculator(include=tuple(SHARED.values()), k="max_bin_count", device=torch.device("cpu"))
        embeddings, embedding_labels = torch.from_numpy(x), torch.from_numpy(labels)
    start = time.perf_counter()
    if library == "pml":
        results = calculator.get_accuracy(embeddings, embedding_labels)
    else:
        index = faiss.IndexFlatIP(dim)
        index.add(x)
        index.search(x, int(np.bincount(labels).max()))
        results = {}
    return {"seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb(), "metrics": results}


def run_measure(library: str, num: int, dim: int) -> dict:
    command = [sys.executable, __file__, "--measure", library, "--nums", str(num), "--dim", str(dim)]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])


def table(runs: dict[int, dict[str, list[dict]]]) -> str:
    """Markdown table: minimum seconds, ratios and peak memory per size, and the largest metric gap."""
    lines = [
        "| N | zoo, all metrics (s) | PML (s) | zoo / PML | zoo retrieval (s) | bound (s) | retrieval / bound "
        "| peak MiB zoo / PML / bound | max gap of shared metrics |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for num, by_library in runs.items():
        best = {name: min(r["seconds"] for r in rs) for name, rs in by_library.items()}
        peak = {name: max(r["peak_rss_mb"] for r in rs) for name, rs in by_library.items()}
        zoo, pml = by_library["zoo"][0]["metrics"], by_library["pml"][0]["metrics"]
        gap = max(abs(zoo[ours] - pml[theirs]) for ours, theirs in SHARED.items())
        lines.append(
            f"| {num:,} | {best['zoo']:.1f} | {best['pml']:.1f} | {best['zoo'] / best['pml']:.2f} "
            f"| {best['zoo-retrieval']:.1f} | {best['bound']:.1f} | {best['zoo-retrieval'] / best['bound']:.2f} "
            f"| {peak['zoo']:,.0f} / {peak['pml']:,.0f} / {peak['bound']:,.0f} | {gap:.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nums", type=int, nargs="+", default=[20000, 60502])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--libraries", nargs="+", choices=LIBRARIES, default=LIBRARIES, help="a subset to time")
    parser.add_argument("--measure", choices=LIBRARIES, help=argparse.SUPPRESS)  # one run, in a child process
    parser.add_argument("--out", help="also write every run as JSON here")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.nums[0], args.dim)))
        return

    print(f"faiss threads: {faiss.omp_get_max_threads()}", flush=True)
    runs: dict[int, dict[str, list[dict]]] = {}
    for num in args.nums:
        runs[num] = {name: [] for name in args.libraries}
        for repeat in range(args.repeats):
            for name in args.libraries:
                runs[num][name].append(run_measure(name, num, args.dim))
                print(f"N={num} repeat {repeat} {name}: {json.dumps(runs[num][name][-1])}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(runs, f, indent=2)
    if set(args.libraries) == set(LIBRARIES):
        print(table(runs))


if __name__ == "__main__":
    main()

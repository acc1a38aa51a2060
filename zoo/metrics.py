"""Retrieval and clustering metrics for deep metric learning, exact at Stanford Online Products scale.

Conventions (those of pytorch-metric-learning's ``AccuracyCalculator``, so numbers compare across
libraries):

- Embeddings are L2-normalised here and compared by cosine similarity (inner product of unit vectors,
  the same order as Euclidean distance).
- Without a reference set the queries are the references and each query is excluded from its own
  neighbours. A query whose class has no other item among the references is left out of every
  retrieval metric (it still counts for NMI and F1).
- Ties. Neighbour lists order equal similarities by the smaller reference index. The rank of a
  positive counts every reference at least as similar as it (tied items all rank before it), the
  convention of ``sklearn.metrics.average_precision_score``. Ties come from duplicate embeddings;
  float32 matrix products may round the similarities of two identical references differently (by
  an ulp, depending on their place in the block), and such near-ties follow the rounded values.

Metrics (keys of :func:`evaluate`):

- ``recall@K``: fraction of queries with at least one same-class reference among their K nearest
  (the DML Recall@K, e.g. THSG [26]; PML's ``precision_at_1`` for K = 1).
- ``precision@k``: mean fraction of same-class references among the k nearest (top-k precision,
  "sampling wisely" paper, Table 1).
- ``map``: mean average precision over the whole ranking, THSG eq. (24):
  ``mAP = 1/N sum_i 1/M_i sum_{r: item r relevant} P(r)``. The extracted equation sums P(r) for
  r = 1..M_i; with "r is the rank" and the cited definition [3], the sum runs over the ranks of the
  M_i relevant images (standard AP), which is the reading used here.
- ``map@r`` and ``r_precision``: Musgrave et al., "A Metric Learning Reality Check" (ECCV 2020),
  Sec. 3.2, with R = number of other same-class references.
- ``nmi`` and ``f1``: k-means (faiss, ``KMEANS_NITER`` iterations) of the query embeddings into as
  many clusters as classes; NMI with the arithmetic normalisation and the pairwise F-measure of
  Song et al., "Deep Metric Learning via Lifted Structured Feature Embedding" (CVPR 2016), Sec. 5.

Cost. One blocked pass over the similarity matrix (only its upper triangle when the queries are
the references: a block serves its transpose too) computes, per block, the k nearest neighbours
(faiss C++ heaps, the ones behind ``IndexFlatIP.search``) and, for the rank metrics, how many
negatives are at least as similar as each positive; the similarity of each pair is computed once
for all metrics. A block and its transpose are processed by two threads. Memory stays at a few
blocks of ``BLOCK_SIZE`` x ``BLOCK_SIZE``. ``benchmarks/eval_speed.py`` measures it at SOP scale.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, NamedTuple

import faiss
import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

ALL_METRICS = ("recall", "precision", "map", "map@r", "r_precision", "nmi", "f1")
RANK_METRICS = ("map", "map@r", "r_precision")

# Rows (and columns) of one similarity block: at most 2040 (byte lanes of _count_per_row); not a
# power of two, whose row stride makes transposes slow (cache-set conflicts).
BLOCK_SIZE = 2000

# Lloyd iterations of the k-means behind NMI and F1. Each is one exact assignment of every query to
# the nearest of C centroids (N x C x D multiply-adds): at SOP scale (60,502 x 11,316 x 512) about
# 3 s on two CPU cores, so k-means (5 iterations + the final assignment) takes ~20 s of the ~57 s of
# evaluate (benchmarks/eval_speed.py). pytorch-metric-learning uses 20 iterations; on synthetic
# clusters (6,000 points, 1,120 classes, 128-D) 5 iterations gave NMI within 0.001 and F1 within
# 0.004 of 20 iterations.
KMEANS_NITER = 5


class Ranking(NamedTuple):
    """Where the references fall in each query's ranking (see :func:`compute_ranking`).

    Attributes:
        neighbors: (Q, k) int64 indices of the k most similar references, most similar first.
        similarities: (Q, k) float32 cosine similarities of those neighbours.
        positive_ranks: (Q, P) int64 1-based rank of each same-class reference (its "positives"),
            ascending; a rank counts every reference at least as similar. Rows are padded with
            ``num_references + 1`` after ``num_positives`` entries.
        num_positives: (Q,) int64 number of same-class references of each query.
    """

    neighbors: np.ndarray
    similarities: np.ndarray
    positive_ranks: np.ndarray
    num_positives: np.ndarray


def evaluate(
    embeddings,
    labels,
    *,
    reference_embeddings=None,
    reference_labels=None,
    recall_ks: Iterable[int] = (1, 2, 4, 8),
    precision_ks: Iterable[int] = (1, 3, 5, 10),
    metrics: Iterable[str] = ALL_METRICS,
    use_gpu: bool = False,
    seed: int = 0,
) -> dict[str, float]:
    """Retrieval and clustering metrics of query embeddings (module docstring: definitions).

    Args:
        embeddings: (N, D) float query embeddings (normalised here).
        labels: (N,) or (N, 1) class labels of the queries.
        reference_embeddings: (M, D) gallery to retrieve from; None retrieves among the queries.
        reference_labels: (M,) labels of the gallery; given together with ``reference_embeddings``.
        recall_ks: the K of ``recall@K``.
        precision_ks: the k of ``precision@k``.
        metrics: which of ``ALL_METRICS`` to compute.
        use_gpu: run the similarity blocks and k-means on the GPU (needs faiss-gpu).
        seed: k-means seed.

    Returns:
        ``{"recall@1": ..., "precision@5": ..., "map": ..., "map@r": ..., "r_precision": ...,
        "nmi": ..., "f1": ...}`` for the requested metrics, as Python floats.

    Raises:
        ValueError: malformed inputs, fewer than two classes, a K larger than the number of
            references, or (for retrieval metrics) no query with a same-class reference.
        RuntimeError: ``use_gpu=True`` without a faiss GPU.
    """
    metrics = _check_metric_names(metrics)
    queries, query_labels = _check_pair(embeddings, labels, "embeddings", "labels")
    same_set = reference_embeddings is None and reference_labels is None
    if same_set:
        references, ref_labels = queries, query_labels
    elif reference_embeddings is None or reference_labels is None:
        raise ValueError("give reference_embeddings and reference_labels together, or neither")
    else:
        references, ref_labels = _check_pair(
            reference_embeddings, reference_labels, "reference_embeddings", "reference_labels"
        )
        if references.shape[1] != queries.shape[1]:
            raise ValueError(
                f"reference_embeddings have dimension {references.shape[1]}, embeddings {queries.shape[1]}"
            )
    num_classes = len(np.unique(query_labels))
    if num_classes < 2:
        raise ValueError(f"labels must contain at least 2 classes, got {num_classes}")
    num_references = len(references) - same_set
    recall_ks = _check_ks("recall", recall_ks, num_references) if "recall" in metrics else ()
    precision_ks = _check_ks("precision", precision_ks, num_references) if "precision" in metrics else ()
    gpu = gpu_resources(use_gpu)
    query_labels, ref_labels = _encode_labels(query_labels, ref_labels)
    queries = l2_normalise(queries)
    references = queries if same_set else l2_normalise(references)

    results: dict[str, float] = {}
    rank_metrics = [name for name in RANK_METRICS if name in metrics]
    if recall_ks or precision_ks or rank_metrics:
        ranking = compute_ranking(
            queries,
            query_labels,
            None if same_set else references,
            None if same_set else ref_labels,
            k=max(recall_ks + precision_ks, default=0),
            positive_ranks=bool(rank_metrics),
            gpu=gpu,
        )
        results.update(retrieval_metrics(ranking, query_labels, ref_labels, recall_ks, precision_ks, rank_metrics))
    if "nmi" in metrics or "f1" in metrics:
        clusters = kmeans_clusters(queries, num_classes, seed=seed, gpu=gpu)
        if "nmi" in metrics:
            results["nmi"] = float(normalized_mutual_info_score(query_labels, clusters))
        if "f1" in metrics:
            results["f1"] = pairwise_f1(query_labels, clusters)
    return results


def compute_ranking(
    queries: np.ndarray,
    query_labels: np.ndarray,
    references: np.ndarray | None = None,
    reference_labels: np.ndarray | None = None,
    *,
    k: int,
    positive_ranks: bool = True,
    gpu: "faiss.StandardGpuResources | None" = None,
) -> Ranking:
    """Exact k nearest neighbours and ranks of the positives, in one blocked pass.

    Args:
        queries: (Q, D) float32 unit vectors (:func:`evaluate` checks and normalises).
        query_labels: (Q,) int64 labels.
        references: (M, D) float32 unit vectors; None: the queries, each excluding itself.
        reference_labels: (M,) int64 labels of the references.
        k: number of neighbours (0: none); at most the number of references per query.
        positive_ranks: also rank the positives (needed by ``map``, ``map@r``, ``r_precision``).
        gpu: faiss GPU resources computing the similarity blocks, or None for numpy on the CPU.

    Returns:
        A :class:`Ranking`; ``positive_ranks`` has no columns when not requested.
    """
    same_set = references is None
    if same_set:
        references, reference_labels = queries, query_labels
    positives, positive_dists = _positives(queries, query_labels, references, reference_labels, same_set)
    scan = _BlockScan(len(queries), k, positives, positive_dists if positive_ranks else positive_dists[:, :0])
    # Blocks hold negated similarities: faiss' max-heap keeps the smallest and, of equal values, the
    # first added; columns are added in increasing reference order, so ties go to the smaller index.
    negated_queries = -queries
    with ThreadPoolExecutor(max_workers=2) as pool:  # a block and its transpose update disjoint rows
        for i0 in range(0, len(queries), BLOCK_SIZE):
            for j0 in range(i0 if same_set else 0, len(references), BLOCK_SIZE):
                dists = _matmul_t(negated_queries[i0 : i0 + BLOCK_SIZE], references[j0 : j0 + BLOCK_SIZE], gpu)
                if same_set and i0 == j0:
                    np.fill_diagonal(dists, np.inf)  # a query is not its own neighbour
                tasks = [pool.submit(scan.add, dists, i0, j0)]
                if same_set and j0 != i0:  # the block below the diagonal is the transpose
                    tasks.append(pool.submit(scan.add, dists, j0, i0, transposed=True))
                for task in tasks:
                    task.result()
    neighbors, dists = scan.neighbors()
    return Ranking(neighbors, -dists, scan.positive_ranks(len(references) - same_set), scan.num_positives)


def retrieval_metrics(
    ranking: Ranking,
    query_labels: np.ndarray,
    reference_labels: np.ndarray,
    recall_ks: Iterable[int] = (),
    precision_ks: Iterable[int] = (),
    rank_metrics: Iterable[str] = (),
) -> dict[str, float]:
    """Recall@K, precision@k and the rank metrics (``RANK_METRICS``), over the queries with positives."""
    valid = ranking.num_positives > 0
    if not valid.any():
        raise ValueError("no query has a same-class item among the references: retrieval metrics are undefined")
    matches = reference_labels[ranking.neighbors[valid]] == query_labels[valid, None]
    results = {f"recall@{k}": float(matches[:, :k].any(axis=1).mean()) for k in recall_ks}
    results.update({f"precision@{k}": float(matches[:, :k].mean()) for k in precision_ks})
    if rank_metrics:
        ranks = ranking.positive_ranks[valid]
        num = ranking.num_positives[valid, None]
        precision = rankdata(ranks, method="max", axis=1) / ranks  # P(rank) at each positive
        in_top_r = ranks <= num  # padding ranks exceed every R
        values = {
            "map": (precision * (np.arange(ranks.shape[1]) < num)).sum(axis=1) / num[:, 0],
            "map@r": (precision * in_top_r).sum(axis=1) / num[:, 0],
            "r_precision": in_top_r.sum(axis=1) / num[:, 0],
        }
        results.update({name: float(values[name].mean()) for name in rank_metrics})
    return results


def kmeans_clusters(
    embeddings: np.ndarray,
    num_clusters: int,
    *,
    seed: int = 0,
    niter: int = KMEANS_NITER,
    gpu: "faiss.StandardGpuResources | None" = None,
) -> np.ndarray:
    """Cluster ids of k-means (faiss, random initialisation, no subsampling) on float32 rows."""
    kmeans = faiss.Kmeans(
        embeddings.shape[1],
        num_clusters,
        niter=niter,
        seed=seed,
        gpu=gpu is not None,
        min_points_per_centroid=1,  # no warning for few points per cluster (SOP: ~5)
        max_points_per_centroid=len(embeddings),  # cluster every point, no subsampling
    )
    kmeans.train(embeddings)
    return kmeans.index.search(embeddings, 1)[1][:, 0]


def pairwise_f1(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Pairwise F-measure of a clustering (Song et al. 2016, Sec. 5), from the contingency table.

    Over all pairs of items, a true positive is a same-class pair in one cluster: with TP =
    sum_ij C(n_ij, 2), predicted pairs A = sum_j C(n_j, 2), same-class pairs B = sum_i C(n_i, 2),
    P = TP / A and R = TP / B give F = 2PR / (P + R) = 2 TP / (A + B). Two identical all-singleton
    partitions (no pairs at all) score 1.
    """
    table = contingency_matrix(labels, clusters, sparse=True)

    def pairs(counts) -> float:
        counts = np.asarray(counts, dtype=np.float64)
        return float((counts * (counts - 1) / 2).sum())

    predicted, same_class = pairs(table.sum(axis=0)), pairs(table.sum(axis=1))
    if predicted + same_class == 0:
        return 1.0
    return 2.0 * pairs(table.data) / (predicted + same_class)


def brute_force_knn(
    queries: np.ndarray, references: np.ndarray, k: int, exclude_self: bool = False, chunk_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Reference k-NN by inner product in plain numpy, query chunk by query chunk.

    Args:
        queries: (Q, D) rows (unit vectors for cosine similarity).
        references: (M, D) rows.
        k: number of neighbours.
        exclude_self: the queries are the references; query i never returns reference i.
        chunk_size: queries per chunk (memory: chunk_size x M floats).

    Returns:
        (similarities, indices), each (Q, k), most similar first, equal similarities by smaller index.
    """
    queries = np.asarray(queries, dtype=np.float32)
    references = np.asarray(references, dtype=np.float32)
    similarities = np.empty((len(queries), k), dtype=np.float32)
    indices = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), chunk_size):
        sims = queries[start : start + chunk_size] @ references.T
        if exclude_self:
            rows = np.arange(len(sims))
            sims[rows, start + rows] = -np.inf
        top = _top_k(sims, k)
        indices[start : start + chunk_size] = top
        similarities[start : start + chunk_size] = np.take_along_axis(sims, top, axis=1)
    return similarities, indices


# ---- internals ---------------------------------------------------------------------------------


class _BlockScan:
    """Accumulates, block by block of negated similarities, the k-NN heaps and the positive counts.

    For the counts, each row's positives are masked out of the block and the remaining (negative)
    entries at most each positive's negated similarity are counted, positive by positive. Rows of a
    block are visited by decreasing number of positives, so positive m only touches the rows that
    have more than m positives (SOP: 1 to 11 positives per query).
    """

    def __init__(self, num_queries: int, k: int, positives: np.ndarray, positive_dists: np.ndarray):
        self.num_positives = (positives >= 0).sum(axis=1)
        self.heap = faiss.ResultHeap(num_queries, k) if k else None
        # Within each BLOCK_SIZE chunk of rows: rows sorted by decreasing number of positives.
        self.order = np.concatenate(
            [
                start + np.argsort(-self.num_positives[start : start + BLOCK_SIZE], kind="stable")
                for start in range(0, num_queries, BLOCK_SIZE)
            ]
        )
        self.sorted_num = self.num_positives[self.order]
        self.sorted_positives = positives[self.order]
        self.sorted_dists = positive_dists[self.order]
        self.sorted_counts = np.zeros(positive_dists.shape, dtype=np.int64)
        self.buffers = np.zeros((2, BLOCK_SIZE, _round_up(BLOCK_SIZE, 8)), dtype=bool)  # one per concurrent add

    def add(self, dists: np.ndarray, r0: int, c0: int, transposed: bool = False) -> None:
        """Add a block of negated similarities: rows r0.., columns (reference ids) c0..

        With ``transposed``, add the transpose of ``dists`` (so that the block and its transpose can
        be added at the same time from two threads).
        """
        if transposed:
            dists = np.ascontiguousarray(dists.T)
        num_rows, num_cols = dists.shape
        if self.heap is not None:
            self.heap.heaps.addn(num_cols, faiss.swig_ptr(dists), c0, r0, num_rows)
        if not self.sorted_dists.shape[1]:  # positive ranks not requested
            return
        rows = slice(r0, r0 + num_rows)
        block = dists[self.order[rows] - r0]
        positives = self.sorted_positives[rows]
        hit_rows, hit_slots = np.nonzero((positives >= c0) & (positives < c0 + num_cols))
        block[hit_rows, positives[hit_rows, hit_slots] - c0] = np.inf  # count negatives only
        thresholds = self.sorted_dists[rows]
        counts = self.sorted_counts[rows]
        buffer = self.buffers[int(transposed), :, : _round_up(num_cols, 8)]
        buffer[:, num_cols:] = False  # padding columns count nothing
        for m in range(self.sorted_num[r0]):  # the first row has the most positives
            n = np.count_nonzero(self.sorted_num[rows] > m)
            np.less_equal(block[:n], thresholds[:n, m : m + 1], out=buffer[:n, :num_cols])
            counts[:n, m] += _count_per_row(buffer[:n])

    def neighbors(self) -> tuple[np.ndarray, np.ndarray]:
        if self.heap is None:
            return np.zeros((len(self.num_positives), 0), np.int64), np.zeros((len(self.num_positives), 0), np.float32)
        self.heap.finalize()
        return self.heap.I, self.heap.D

    def positive_ranks(self, num_references: int) -> np.ndarray:
        """Rank of positive m = positives at least as similar (ties included) + negatives counted."""
        counts = np.empty_like(self.sorted_counts)
        counts[self.order] = self.sorted_counts
        dists = np.empty_like(self.sorted_dists)
        dists[self.order] = self.sorted_dists
        ranks = rankdata(dists, method="max", axis=1).astype(np.int64) + counts
        ranks[np.arange(ranks.shape[1]) >= self.num_positives[:, None]] = num_references + 1
        return ranks


def _positives(
    queries: np.ndarray, query_labels: np.ndarray, references: np.ndarray, reference_labels: np.ndarray, same_set: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's same-class references (self excluded): ids padded with -1, and their negated
    similarities ascending (most similar first) padded with inf. One small product per class."""
    ref_order = np.argsort(reference_labels, kind="stable")
    ref_sorted = reference_labels[ref_order]
    query_order = np.argsort(query_labels, kind="stable")
    starts = np.searchsorted(ref_sorted, query_labels, "left")
    num = np.searchsorted(ref_sorted, query_labels, "right") - starts - same_set
    width = int(num.max(initial=0))
    ids = np.full((len(queries), width), -1, dtype=np.int64)
    dists = np.full((len(queries), width), np.inf, dtype=np.float32)
    splits = np.flatnonzero(np.diff(query_labels[query_order])) + 1
    for members in np.split(query_order, splits):
        label = query_labels[members[0]]
        refs = ref_order[np.searchsorted(ref_sorted, label, "left") : np.searchsorted(ref_sorted, label, "right")]
        m = len(refs) - same_set
        if m <= 0:
            continue
        block = -(queries[members] @ references[refs].T)
        if same_set:  # members == refs: the diagonal is the query itself
            np.fill_diagonal(block, np.inf)
        order = np.argsort(block, axis=1, kind="stable")[:, :m]
        ids[members, :m] = refs[order]
        dists[members, :m] = np.take_along_axis(block, order, axis=1)
    return ids, dists


def _count_per_row(mask: np.ndarray) -> np.ndarray:
    """True entries per row of an (n, 8 w) bool array with w <= 255, eight times faster than a sum.

    Each row is summed as w uint64 words: every byte lane of the sum counts at most w ones, so no
    carry crosses lanes; the 8 lanes are then added.
    """
    return mask.view(np.uint64).sum(axis=1).view(np.uint8).reshape(-1, 8).sum(axis=1, dtype=np.int64)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _top_k(sims: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest entries of each row, largest first, ties by smaller index."""
    kth = np.partition(sims, sims.shape[1] - k, axis=1)[:, sims.shape[1] - k, None]
    rows, cols = np.nonzero(sims >= kth)  # k or more per row (ties at the k-th value)
    order = np.lexsort((cols, -sims[rows, cols], rows))
    rows, cols = rows[order], cols[order]
    position = np.arange(len(rows)) - np.searchsorted(rows, rows)
    return cols[position < k].reshape(len(sims), k)


def _matmul_t(a: np.ndarray, b: np.ndarray, gpu) -> np.ndarray:
    """``a @ b.T`` as a C-contiguous float32 block, on the GPU when resources are given."""
    if gpu is None:
        return a @ b.T
    return faiss.pairwise_distance_gpu(gpu, a, b, metric=faiss.METRIC_INNER_PRODUCT)


def gpu_resources(use_gpu: bool) -> "faiss.StandardGpuResources | None":
    if not use_gpu:
        return None
    if faiss.get_num_gpus() == 0:
        raise RuntimeError(
            "use_gpu=True needs faiss built with GPU support (faiss-gpu) and a visible GPU; "
            "faiss.get_num_gpus() is 0"
        )
    return faiss.StandardGpuResources()


def _check_metric_names(metrics: Iterable[str]) -> tuple[str, ...]:
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = sorted(set(metrics) - set(ALL_METRICS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {list(ALL_METRICS)}")
    return metrics


def _check_ks(name: str, ks: Iterable[int], num_references: int) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    for k in ks:
        if not 1 <= k <= num_references:
            raise ValueError(
                f"{name}@{k}: K={k} must be between 1 and the number of references per query ({num_references})"
            )
    return ks


def _check_pair(embeddings, labels, name: str, labels_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate (N, D) float embeddings and their (N,) or (N, 1) labels."""
    x = np.asarray(embeddings)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be a 2-D float array (N, D), got shape {x.shape} and dtype {x.dtype}")
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (len(x),):
        raise ValueError(f"{labels_name} must have shape ({len(x)},) or ({len(x)}, 1) to match {name}, got {y.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x, y


def _encode_labels(query_labels: np.ndarray, reference_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels of any sortable type as int64 class ids shared by queries and references."""
    ids = np.unique(np.concatenate([query_labels, reference_labels]), return_inverse=True)[1].astype(np.int64)
    return ids[: len(query_labels)], ids[len(query_labels) :]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as C-contiguous float32 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, np.finfo(np.float32).tiny))

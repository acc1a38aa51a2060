"""Retrieval and clustering metrics for deep metric learning, exact at Stanford Online Products scale.

Conventions (those of pytorch-metric-learning's ``AccuracyCalculator``, so numbers compare across
libraries):

- Embeddings are L2-normalised here and compared by cosine similarity (inner product of unit vectors,
  the same order as Euclidean distance).
- Without a reference set the queries are the references and each query is excluded from its own
  neighbours. With a reference set (a gallery) that holds some queries themselves (``own_reference``:
  OML's rows that are both query and gallery), each such query never retrieves itself (PML's
  ``ref_includes_query``). A query whose class has no other item among the references is left out of every
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
- ``nmi`` and ``f1``: k-means (faiss; converged, or one iteration where classes are small, see
  :func:`kmeans_clusters`) of the query embeddings into as many clusters as classes; NMI with the arithmetic normalisation and the pairwise F-measure of
  Song et al., "Deep Metric Learning via Lifted Structured Feature Embedding" (CVPR 2016), Sec. 5.

Cost. Every retrieval metric comes from the rank of each query's positives (same-class
references): ``recall@K`` from the list position of the first, ``precision@k`` from those of the
first k, the rank metrics from all ranks, so no neighbour list is kept (Recall@1000 costs what
Recall@1 does). A rank is a count: the negatives at least as similar as the positive (for the list
position: more similar, or as similar and of smaller index), plus the positives before it. One pass
over the similarity matrix counts them block by block (only the upper triangle when the queries are
the references: a block counts for its rows, and column-wise for its columns), the blocks shared out
to ``faiss.omp_get_max_threads()`` workers, each with single-threaded BLAS. The pass costs about the
similarity matmul itself: half of the N^2 D multiply-adds of a faiss flat search, plus one
comparison per pair and positive (two for the positives that recall and precision place). Memory: two strips per worker and the (N, max positives)
counts. ``benchmarks/eval_speed.py`` and ``benchmarks/peer/compare_eval.py`` measure it at SOP scale.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, NamedTuple

import faiss
import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix
from threadpoolctl import threadpool_limits

ALL_METRICS = ("recall", "precision", "map", "map@r", "r_precision", "nmi", "f1")
RANK_METRICS = ("map", "map@r", "r_precision")

# Rows and columns of one block of the similarity matrix (a task of one worker): at most 2040 (byte
# lanes of _count_per_row). A block is computed and counted STRIP_ROWS rows at a time (at most 255,
# the uint8 sums of _count_per_column), so that each strip is compared from cache.
BLOCK_SIZE = 2000
STRIP_ROWS = 250

# The k-means behind NMI and F1 (faiss, random initialisation, every point): KMEANS_NITER Lloyd
# iterations (pytorch-metric-learning's 20; faiss stops earlier once converged), one where the
# classes average at most KMEANS_FEW_POINTS points (SOP ~5.35, In-Shop ~3.6): kmeans_clusters has
# the measurements behind it.
KMEANS_NITER = 20
KMEANS_FEW_POINTS = 8


class Ranking(NamedTuple):
    """Where the references fall in each query's ranking (see :func:`compute_ranking`).

    Attributes:
        neighbors: (Q, k) int64 indices of the k most similar references, most similar first, equal
            similarities by smaller index.
        similarities: (Q, k) float32 cosine similarities of those neighbours.
        positive_ranks: (Q, P) int64 1-based rank of each same-class reference (its "positives"),
            ascending; a rank counts every reference at least as similar. Rows are padded with
            ``num_references + 1`` after ``num_positives`` entries.
        list_ranks: (Q, L) int64 1-based position of the L most similar positives in the neighbour
            list (the order of ``neighbors``: equal similarities by smaller index), same padding.
        num_positives: (Q,) int64 number of same-class references of each query.
    """

    neighbors: np.ndarray
    similarities: np.ndarray
    positive_ranks: np.ndarray
    list_ranks: np.ndarray
    num_positives: np.ndarray


def evaluate(
    embeddings,
    labels,
    *,
    reference_embeddings=None,
    reference_labels=None,
    own_reference=None,
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
        own_reference: (N,) int, the position of each query among the references when the gallery holds the
            query itself (never retrieved), -1 where it does not; None: none does.
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
    own_reference = _check_own_reference(own_reference, len(queries), None if same_set else len(references))
    num_references = len(references) - same_set - bool(own_reference is not None and (own_reference >= 0).any())
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
            positive_ranks=bool(rank_metrics),
            list_ranks=max(precision_ks + (1,) * bool(recall_ks), default=0),
            gpu=gpu,
            own_reference=own_reference,
        )
        results.update(retrieval_metrics(ranking, recall_ks, precision_ks, rank_metrics))
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
    k: int = 0,
    positive_ranks: bool = True,
    list_ranks: int = 0,
    gpu: "faiss.StandardGpuResources | None" = None,
    own_reference: np.ndarray | None = None,
) -> Ranking:
    """Exact k nearest neighbours and the ranks of the positives.

    Args:
        queries: (Q, D) float32 unit vectors (:func:`evaluate` checks and normalises).
        query_labels: (Q,) int64 labels.
        references: (M, D) float32 unit vectors; None: the queries, each excluding itself.
        reference_labels: (M,) int64 labels of the references.
        k: number of neighbours (0: none); at most the number of references per query.
        positive_ranks: rank every positive (needed by ``map``, ``map@r``, ``r_precision``).
        list_ranks: place the first this many positives in the neighbour list (``recall@K``: 1,
            ``precision@k``: k).
        gpu: faiss GPU resources computing the similarities, or None for the CPU.
        own_reference: (Q,) int64 position of each query among ``references`` (itself: never a positive nor a
            neighbour), -1 for none; None: no query is among them.

    Returns:
        A :class:`Ranking`; the arrays not requested have no columns.
    """
    same_set = references is None
    if same_set:
        references, reference_labels = queries, query_labels
    num_references = len(references) - same_set
    positives, positive_sims = _positives(queries, query_labels, references, reference_labels, same_set,
                                          own_reference)
    num_positives = (positives >= 0).sum(axis=1)
    num_slots = positives.shape[1] if positive_ranks else min(list_ranks, positives.shape[1])
    at_least, in_list = _count_negatives(
        queries, None if same_set else references, positives, positive_sims,
        num_slots=num_slots, num_list=min(list_ranks, num_slots), gpu=gpu, own_reference=own_reference,
    )
    padding = np.arange(positives.shape[1]) >= num_positives[:, None]
    ranks = rankdata(-positive_sims, method="max", axis=1).astype(np.int64)[:, :num_slots] + at_least
    ranks[padding[:, :num_slots]] = num_references + 1
    positions = np.arange(1, in_list.shape[1] + 1) + in_list
    positions[padding[:, : in_list.shape[1]]] = num_references + 1
    neighbors, similarities = _knn(queries, None if same_set else references, k, gpu, own_reference)
    return Ranking(neighbors, similarities, ranks if positive_ranks else ranks[:, :0], positions, num_positives)


def retrieval_metrics(
    ranking: Ranking,
    recall_ks: Iterable[int] = (),
    precision_ks: Iterable[int] = (),
    rank_metrics: Iterable[str] = (),
) -> dict[str, float]:
    """Recall@K, precision@k and the rank metrics (``RANK_METRICS``), over the queries with positives.

    ``ranking`` needs ``list_ranks`` for the first positive (recall) or the first k (precision@k)
    and ``positive_ranks`` for the rank metrics.
    """
    valid = ranking.num_positives > 0
    if not valid.any():
        raise ValueError("no query has a same-class item among the references: retrieval metrics are undefined")
    positions = ranking.list_ranks[valid]
    results = {f"recall@{k}": float((positions[:, 0] <= k).mean()) for k in recall_ks}
    results.update({f"precision@{k}": float((positions[:, :k] <= k).sum(axis=1).mean() / k) for k in precision_ks})
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
    niter: int | None = None,
    max_points_per_centroid: int | None = None,
    gpu: "faiss.StandardGpuResources | None" = None,
) -> np.ndarray:
    """Cluster ids of k-means (faiss, random initialisation) on float32 rows.

    Each Lloyd iteration assigns the training points to the nearest of C centroids (N x C x D
    multiply-adds), then every point is assigned to the final centroids once more. At SOP scale
    (60,502 x 11,316 x 512: a faiss flat search's worth per assignment; ~5.35 points per cluster) the
    default is one iteration. Measured there (``benchmarks/eval_speed.py --kmeans-study``; NMI / F1 / seconds on two shared,
    heavily loaded cores):

    ======================================  =========================  =========================
    setting                                 random unit vectors        clustered (``--noise 1.5``)
    ======================================  =========================  =========================
    converged (faiss' early stop)           0.81183 / 0.00009 / 241    0.91812 / 0.49991 / 689
    same, seed 1                            0.81187 / 0.00010 / 281
    1 iteration (the default there)         0.81183 / 0.00009 / 122    0.91805 / 0.49953 / 125
    2 iterations                            0.81183 / 0.00009 / 194    0.91809 / 0.49970 / 174
    1 iteration, 1 point per centroid       0.81180 / 0.00010 / 66     0.91864 / 0.50129 / 65
    1 iteration, 2 points per centroid      0.65530 / 0.00016 / 119
    ======================================  =========================  =========================

    With so few points per cluster, Lloyd iterations barely move the centroids: one stays within
    0.0001 of converged at a half (random) to a fifth (clustered) of its time. Training on one point per centroid (the centroids are then C random points) is cheaper
    still and close at SOP's ~5 points per class, but cannot recover from two seeds in one class where
    classes are large (CUB, Cars: converged k-means can). Subsamples of 2 or more points per centroid
    give shorter centroids, means of few random points, that draw the unsampled points unevenly.

    Args:
        embeddings: (N, D) float32 rows.
        num_clusters: number of clusters.
        seed: faiss seed (initial centroids and subsample).
        niter: most Lloyd iterations; None: ``KMEANS_NITER``, or 1 if there are at most
            ``KMEANS_FEW_POINTS`` points per cluster.
        max_points_per_centroid: train on a random subsample of this many points per cluster
            (None: every point).
        gpu: faiss GPU resources, or None for the CPU.
    """
    if niter is None:
        niter = 1 if len(embeddings) <= KMEANS_FEW_POINTS * num_clusters else KMEANS_NITER
    kmeans = faiss.Kmeans(
        embeddings.shape[1],
        num_clusters,
        niter=niter,
        seed=seed,
        gpu=gpu is not None,
        min_points_per_centroid=1,  # no warning for few points per cluster (SOP: ~5)
        max_points_per_centroid=max_points_per_centroid or len(embeddings),
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


class _Scan(NamedTuple):
    """What every worker of :func:`_count_negatives` reads: the rows in scan order (queries by
    decreasing number of positives, so that positive slot m touches a prefix of every block)."""

    queries: np.ndarray  # (Q, D) in scan order
    references: np.ndarray  # (M, D): the scan-ordered queries themselves when same_set
    thresholds: np.ndarray  # (Q, S) similarity of each counted positive slot
    positive_columns: np.ndarray  # (Q, W) column of every positive among the references, -1 padded
    positive_ids: np.ndarray  # (Q, num_list) original reference id of each listed positive
    column_ids: np.ndarray  # (M,) original reference id of each column
    ends: np.ndarray  # (S,) number of scan rows with more than m positives
    num_list: int
    same_set: bool
    gpu: "faiss.StandardGpuResources | None"
    gpu_lock: threading.Lock


def _count_negatives(
    queries: np.ndarray,
    references: np.ndarray | None,
    positives: np.ndarray,
    similarities: np.ndarray,
    *,
    num_slots: int,
    num_list: int,
    gpu: "faiss.StandardGpuResources | None",
    own_reference: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Negatives at least as similar as each positive, and before it in the neighbour list.

    One pass over the similarity matrix, block by block (only the upper triangle when the queries
    are the references: a block counts for its rows and, column-wise, for its columns). Positives
    (and the query itself) are masked out of each block, then the block is compared with the
    similarity of each positive slot. Equal similarities before a positive in the list are those of
    smaller reference index: they are counted only for the rare rows where a negative equals it.

    Args:
        queries: (Q, D) unit vectors.
        references: (M, D) unit vectors, or None: the queries, each without itself.
        positives: (Q, W) ids of each query's positives in list order, -1 padded.
        similarities: (Q, W) their similarities (descending).
        num_slots: count for the first this many positive slots.
        num_list: count the list position for the first this many (<= num_slots).
        gpu: faiss GPU resources for the similarity blocks, or None.
        own_reference: (Q,) reference that is the query itself (masked out as the positives are), -1 for none.

    Returns:
        (Q, num_slots) and (Q, num_list) int64 counts (zero in padded slots).
    """
    same_set = references is None
    num_positives = (positives >= 0).sum(axis=1)
    order = np.argsort(-num_positives, kind="stable")
    scan_queries = queries[order]
    scan_positives = positives[order]
    if same_set:
        position = np.empty_like(order)
        position[order] = np.arange(len(order))
        columns = np.where(scan_positives >= 0, position[scan_positives], -1)
        references, column_ids = scan_queries, order
    else:
        columns, column_ids = scan_positives, np.arange(len(references))
        if own_reference is not None:  # masked out of every block with the positives
            columns = np.concatenate([columns, own_reference[order, None]], axis=1)
    scan = _Scan(
        scan_queries, references, similarities[order, :num_slots], columns, scan_positives[:, :num_list],
        column_ids, (num_positives[order, None] > np.arange(num_slots)).sum(axis=0), num_list, same_set,
        gpu, threading.Lock(),
    )
    num_queries, num_refs = len(queries), len(references)
    blocks = [
        (r0, c0)
        for r0 in range(0, num_queries, BLOCK_SIZE)
        for c0 in range(r0 if same_set else 0, num_refs, BLOCK_SIZE)
    ]
    workers = min(faiss.omp_get_max_threads(), len(blocks)) if num_slots else 0
    free = queue.SimpleQueue()
    for _ in range(workers):
        free.put(_Counter(scan))

    def run(block: tuple[int, int]) -> None:
        counter = free.get()
        counter.add_block(*block)
        free.put(counter)

    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
        list(pool.map(run, blocks if workers else ()))
    counters = [free.get() for _ in range(workers)]
    at_least = np.zeros((num_queries, num_slots), np.int64)
    in_list = np.zeros((num_queries, num_list), np.int64)
    at_least[order] = sum((c.at_least for c in counters), np.zeros_like(at_least))
    in_list[order] = sum((c.in_list for c in counters), np.zeros_like(in_list))
    return at_least, in_list


class _Counter:
    """One worker's counts (in scan order) over the blocks it is given, and its buffers."""

    def __init__(self, scan: _Scan):
        self.scan = scan
        self.at_least = np.zeros(scan.thresholds.shape, np.int64)
        self.in_list = np.zeros((len(scan.thresholds), scan.num_list), np.int64)
        self.dists = np.empty(STRIP_ROWS * BLOCK_SIZE, np.float32)
        self.mask = np.empty(STRIP_ROWS * _round_up(BLOCK_SIZE, 8), bool)

    def add_block(self, r0: int, c0: int) -> None:
        """Rows r0.. (and, off the diagonal of the same set, columns c0..) of the scan, strip by strip."""
        scan = self.scan
        c1 = min(c0 + BLOCK_SIZE, len(scan.references))
        for s0 in range(r0, min(r0 + BLOCK_SIZE, len(scan.queries)), STRIP_ROWS):
            s1 = min(s0 + STRIP_ROWS, r0 + BLOCK_SIZE, len(scan.queries))
            sims = self.similarities(s0, s1, c0, c1)
            self.add_rows(sims, s0, c0)
            if scan.same_set and c0 != r0:  # the transposed block: its columns are queries too
                self.add_columns(sims, s0, c0)

    def similarities(self, s0: int, s1: int, c0: int, c1: int) -> np.ndarray:
        """Rows s0..s1 x columns c0..c1 of the similarity matrix, positives and self at -inf."""
        scan = self.scan
        sims = self.dists[: (s1 - s0) * (c1 - c0)].reshape(s1 - s0, c1 - c0)
        with scan.gpu_lock if scan.gpu is not None else contextlib.nullcontext():
            _inner_products(scan.queries[s0:s1], scan.references[c0:c1], scan.gpu, out=sims)
        columns = scan.positive_columns[s0:s1]
        rows, slots = np.nonzero((columns >= c0) & (columns < c1))  # a positive pair is one both ways
        sims[rows, columns[rows, slots] - c0] = -np.inf
        if scan.same_set and s0 < c1 and c0 < s1:  # diagonal block: a query is not its own neighbour
            rows = np.arange(s1 - s0)
            sims[rows, s0 - c0 + rows] = -np.inf
        return sims

    def add_rows(self, sims: np.ndarray, s0: int, c0: int) -> None:
        """Count, for the queries of rows s0.., the columns of ``sims`` above their positives."""
        scan = self.scan
        num_rows, width = sims.shape
        mask = self.mask[: num_rows * _round_up(width, 8)].reshape(num_rows, -1)
        mask[:, width:] = False  # padding columns count nothing
        for m, end in enumerate(scan.ends):
            n = min(end - s0, num_rows)
            if n <= 0:
                break
            threshold = scan.thresholds[s0 : s0 + n, m, None]
            np.greater_equal(sims[:n], threshold, out=mask[:n, :width])
            at_least = _count_per_row(mask[:n])
            self.at_least[s0 : s0 + n, m] += at_least
            if m < scan.num_list:
                np.greater(sims[:n], threshold, out=mask[:n, :width])
                before = _count_per_row(mask[:n])
                tied = np.flatnonzero(at_least > before)  # ties: those of smaller index come first
                before[tied] += np.count_nonzero(
                    (sims[tied] == threshold[tied])
                    & (scan.column_ids[c0 : c0 + width] < scan.positive_ids[s0 + tied, m, None]),
                    axis=1,
                )
                self.in_list[s0 : s0 + n, m] += before

    def add_columns(self, sims: np.ndarray, s0: int, c0: int) -> None:
        """Count, for the queries of columns c0.., the rows s0.. of ``sims`` above their positives."""
        scan = self.scan
        num_rows, width = sims.shape
        mask = self.mask[: num_rows * width].reshape(num_rows, width)
        for m, end in enumerate(scan.ends):
            n = min(end - c0, width)
            if n <= 0:
                break
            threshold = scan.thresholds[c0 : c0 + n, m]
            np.greater_equal(sims[:, :n], threshold, out=mask[:, :n])
            at_least = _count_per_column(mask[:, :n])
            self.at_least[c0 : c0 + n, m] += at_least
            if m < scan.num_list:
                np.greater(sims[:, :n], threshold, out=mask[:, :n])
                before = _count_per_column(mask[:, :n])
                tied = np.flatnonzero(at_least > before)
                before[tied] += np.count_nonzero(
                    (sims[:, tied] == threshold[tied])
                    & (scan.column_ids[s0 : s0 + num_rows, None] < scan.positive_ids[c0 + tied, m]),
                    axis=0,
                )
                self.in_list[c0 : c0 + n, m] += before


def _positives(
    queries: np.ndarray, query_labels: np.ndarray, references: np.ndarray, reference_labels: np.ndarray, same_set: bool,
    own_reference: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's same-class references (self excluded, and its ``own_reference``) in list order (most
    similar first, equal similarities by smaller index): ids padded with -1 and similarities padded with
    -inf. One small product per class."""
    ref_order = np.argsort(reference_labels, kind="stable")
    ref_sorted = reference_labels[ref_order]
    query_order = np.argsort(query_labels, kind="stable")
    starts = np.searchsorted(ref_sorted, query_labels, "left")
    num = np.searchsorted(ref_sorted, query_labels, "right") - starts - same_set
    width = int(num.max(initial=0))
    ids = np.full((len(queries), width), -1, dtype=np.int64)
    sims = np.full((len(queries), width), -np.inf, dtype=np.float32)
    splits = np.flatnonzero(np.diff(query_labels[query_order])) + 1
    for members in np.split(query_order, splits):
        label = query_labels[members[0]]
        refs = ref_order[np.searchsorted(ref_sorted, label, "left") : np.searchsorted(ref_sorted, label, "right")]
        m = len(refs) - same_set
        if m <= 0:
            continue
        block = queries[members] @ references[refs].T
        if same_set:  # members == refs: the diagonal is the query itself
            np.fill_diagonal(block, -np.inf)
        if own_reference is not None:
            block[refs[None, :] == own_reference[members, None]] = -np.inf
        order = np.argsort(-block, axis=1, kind="stable")[:, :m]
        ids[members, :m] = refs[order]
        sims[members, :m] = np.take_along_axis(block, order, axis=1)
    if own_reference is not None:  # the query itself, sorted last: padding
        ids[sims == -np.inf] = -1
        width = int((ids >= 0).sum(axis=1).max(initial=0))
        ids, sims = ids[:, :width], sims[:, :width]
    return ids, sims


def _count_per_row(mask: np.ndarray) -> np.ndarray:
    """True entries per row of an (n, 8 w) bool array with w <= 255, eight times faster than a sum.

    Each row is summed as w uint64 words: every byte lane of the sum counts at most w ones, so no
    carry crosses lanes; the 8 lanes are then added.
    """
    return mask.view(np.uint64).sum(axis=1).view(np.uint8).reshape(-1, 8).sum(axis=1, dtype=np.int64)


def _count_per_column(mask: np.ndarray) -> np.ndarray:
    """True entries per column of a bool array of at most 255 rows (uint8 sums cannot overflow)."""
    return np.add.reduce(mask.view(np.uint8), axis=0, dtype=np.uint8).astype(np.int64)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _knn(
    queries: np.ndarray, references: np.ndarray | None, k: int, gpu: "faiss.StandardGpuResources | None",
    own_reference: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN by inner product, (ids, similarities), most similar first and equal similarities
    by smaller index; references None: among the queries, each without itself; a query's ``own_reference``
    is never its neighbour.

    faiss' max-heaps of negated similarities keep, of equal values, the first added; reference
    blocks are added in increasing order.
    """
    same_set = references is None
    references = queries if same_set else references
    heap = faiss.ResultHeap(len(queries), k)
    for r0 in range(0, len(queries) if k else 0, BLOCK_SIZE):
        for c0 in range(0, len(references), BLOCK_SIZE):
            dists = -_inner_products(queries[r0 : r0 + BLOCK_SIZE], references[c0 : c0 + BLOCK_SIZE], gpu)
            if same_set and r0 == c0:
                np.fill_diagonal(dists, np.inf)
            if own_reference is not None:
                own = own_reference[r0 : r0 + BLOCK_SIZE] - c0
                rows = np.flatnonzero((own >= 0) & (own < dists.shape[1]))
                dists[rows, own[rows]] = np.inf
            heap.heaps.addn(dists.shape[1], faiss.swig_ptr(dists), c0, r0, dists.shape[0])
    heap.finalize()
    return heap.I, -heap.D


def _inner_products(
    a: np.ndarray, b: np.ndarray, gpu: "faiss.StandardGpuResources | None", out: np.ndarray | None = None
) -> np.ndarray:
    """``a @ b.T`` as a C-contiguous float32 array (into ``out`` if given), on the GPU when resources are given."""
    if gpu is None:
        return np.matmul(a, b.T, out=out)
    sims = faiss.pairwise_distance_gpu(gpu, a, b, metric=faiss.METRIC_INNER_PRODUCT)
    if out is None:
        return sims
    out[...] = sims
    return out


def _top_k(sims: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest entries of each row, largest first, ties by smaller index."""
    kth = np.partition(sims, sims.shape[1] - k, axis=1)[:, sims.shape[1] - k, None]
    rows, cols = np.nonzero(sims >= kth)  # k or more per row (ties at the k-th value)
    order = np.lexsort((cols, -sims[rows, cols], rows))
    rows, cols = rows[order], cols[order]
    position = np.arange(len(rows)) - np.searchsorted(rows, rows)
    return cols[position < k].reshape(len(sims), k)


def gpu_resources(use_gpu: bool) -> "faiss.StandardGpuResources | None":
    if not use_gpu:
        return None
    if faiss.get_num_gpus() == 0:
        raise RuntimeError(
            "use_gpu=True needs faiss built with GPU support and a visible GPU; faiss.get_num_gpus() is 0. "
            "The [gpu] extra brings TensorFlow with CUDA, not faiss: pip uninstall faiss-cpu && pip install faiss-gpu"
        )
    return faiss.StandardGpuResources()


def _check_metric_names(metrics: Iterable[str]) -> tuple[str, ...]:
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = sorted(set(metrics) - set(ALL_METRICS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {list(ALL_METRICS)}")
    return metrics


def _check_own_reference(own_reference, num_queries: int, num_references: int | None) -> np.ndarray | None:
    """Validate (Q,) positions among the references (-1: none), each reference the query of at most one."""
    if own_reference is None:
        return None
    if num_references is None:
        raise ValueError("own_reference needs reference_embeddings: without them each query is excluded already")
    own = np.asarray(own_reference)
    if own.shape != (num_queries,) or not np.issubdtype(own.dtype, np.integer):
        raise ValueError(f"own_reference must be ({num_queries},) integers, got {own.dtype} {own.shape}")
    if ((own < -1) | (own >= num_references)).any():
        raise ValueError(f"own_reference must be -1 or a reference position in [0, {num_references})")
    taken = own[own >= 0]
    if len(np.unique(taken)) != len(taken):
        raise ValueError("own_reference gives one reference to several queries")
    return own.astype(np.int64)


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

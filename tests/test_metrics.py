"""zoo.metrics: hand-computed cases, exact ties, slow references on random data, input checks."""

import faiss
import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from zoo import metrics


def on_circle(degrees):
    """2-D unit vectors at these angles: cosine order = order of angular differences (< 180)."""
    radians = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


# Six points plus a singleton class (179 degrees, ranked last or after every positive it could
# displace). Each query's ranking (angular differences), 1 = same class:
#   q0 (0, a):  1(10) 2(25) 3(45) 4(70) 5(100)  -> rel 1 0 1 0 0   positives at ranks 1, 3
#   q1 (10, a): 0(10) 2(15) 3(35) 4(60) 5(90)   -> rel 1 0 1 0 0   ranks 1, 3
#   q2 (25, b): 1(15) 3(20) 0(25) 4(45) 5(75)   -> rel 0 0 0 1 1   ranks 4, 5
#   q3 (45, a): 2(20) 4(25) 1(35) 0(45) 5(55)   -> rel 0 0 1 1 0   ranks 3, 4
#   q4 (70, b): 3(25) 5(30) 2(45) 1(60) 0(70)   -> rel 0 1 1 0 0   ranks 2, 3
#   q5 (100, b): 4(30) 3(55) 2(75) 6(79) 1(90)  -> rel 1 0 1 0 0   ranks 1, 3
#   q6 (179, c): singleton class, left out of every retrieval metric.
ANGLES = [0, 10, 25, 45, 70, 100, 179]
LABELS = [0, 0, 1, 0, 1, 1, 2]


def test_hand_computed_retrieval_metrics_exclude_self_and_singletons():
    results = metrics.evaluate(
        on_circle(ANGLES), LABELS, recall_ks=(1, 2), precision_ks=(1, 3),
        metrics=("recall", "precision", "map", "map@r", "r_precision"),
    )
    expected = {
        "recall@1": 3 / 6,  # q0 q1 q5
        "recall@2": 4 / 6,  # + q4
        "precision@1": 3 / 6,
        "precision@3": (2 + 2 + 0 + 1 + 2 + 2) / 3 / 6,
        # R = 2 for everyone; MAP@R = 1/R sum_{i<=R} P(i) rel(i): q0 q1 q5 1/2, q4 (1/2)/2, q2 q3 0.
        "map@r": (0.5 + 0.5 + 0 + 0 + 0.25 + 0.5) / 6,
        "r_precision": (0.5 + 0.5 + 0 + 0 + 0.5 + 0.5) / 6,
        # AP = mean over positives of (positives so far / rank).
        "map": (3 * (1 + 2 / 3) / 2 + (1 / 4 + 2 / 5) / 2 + (1 / 3 + 2 / 4) / 2 + (1 / 2 + 2 / 3) / 2) / 6,
    }
    assert results.keys() == expected.keys()
    for name, value in expected.items():
        assert results[name] == pytest.approx(value, abs=1e-12), name


def test_hand_computed_query_versus_gallery():
    # Gallery at 0, 20 (class a), 40, 60 (class b). Queries:
    #   5 (b):  0 20 40 60 -> rel 0 0 1 1   ranks 3, 4: AP (1/3 + 2/4)/2, R=2: MAP@R 0, R-prec 0
    #   48 (b): 40 60 20 0 -> rel 1 1 0 0   AP 1, MAP@R 1, R-prec 1
    #   28 (a): 20 40 0 60 -> rel 1 0 1 0   AP (1 + 2/3)/2, MAP@R 1/2, R-prec 1/2
    #   10 (c): no class-c image in the gallery -> left out.
    results = metrics.evaluate(
        on_circle([5, 48, 28, 10]), np.array([[1], [1], [0], [2]]),
        reference_embeddings=on_circle([0, 20, 40, 60]), reference_labels=[0, 0, 1, 1],
        recall_ks=(1, 4), precision_ks=(2,), metrics=("recall", "precision", "map", "map@r", "r_precision"),
    )
    assert results == pytest.approx({
        "recall@1": 2 / 3,
        "recall@4": 1.0,  # K may equal the gallery size
        "precision@2": (0 + 1 + 0.5) / 3,
        "map": ((1 / 3 + 2 / 4) / 2 + 1 + (1 + 2 / 3) / 2) / 3,
        "map@r": (0 + 1 + 0.5) / 3,
        "r_precision": (0 + 1 + 0.5) / 3,
    })


def test_exact_ties_follow_documented_order():
    # One-hot query: every similarity is exact. Gallery sims 0, 1, 1, 0, -1, query class 0.
    query = np.array([[1, 0, 0]], np.float32)
    gallery = np.array([[0, 1, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0], [-1, 0, 0]], np.float32)
    gallery_labels = np.array([1, 1, 0, 0, 1])
    ranking = metrics.compute_ranking(query, np.array([0]), gallery, gallery_labels, k=5)
    np.testing.assert_array_equal(ranking.neighbors, [[1, 2, 0, 3, 4]])  # ties by smaller index
    # Positives at sims 1 and 0: every reference at least as similar ranks before: ranks 2 and 4.
    np.testing.assert_array_equal(ranking.positive_ranks, [[2, 4]])
    results = metrics.evaluate(
        query.repeat(2, 0), [0, 2], reference_embeddings=gallery, reference_labels=gallery_labels,
        recall_ks=(1, 2), metrics=("recall", "map"),
    )
    # AP = (1/2 + 2/4) / 2, sklearn's convention for tied scores.
    assert average_precision_score(gallery_labels == 0, gallery @ query[0]) == 0.5
    assert results == {"recall@1": 0.0, "recall@2": 1.0, "map": 0.5}


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 64 rows in strips of 24, so that small sets exercise the multi-block scan, its
    transposed blocks and partial strips."""
    monkeypatch.setattr(metrics, "BLOCK_SIZE", 64)
    monkeypatch.setattr(metrics, "STRIP_ROWS", 24)


RETRIEVAL = ("recall", "precision") + metrics.RANK_METRICS


def test_many_exact_ties_over_several_blocks(small_blocks):
    # All vectors one-hot: similarities are exactly 0 or 1; 300 items span five blocks.
    rng = np.random.default_rng(0)
    n, k = 300, 12
    x = np.eye(8, dtype=np.float32)[rng.integers(0, 8, n)]
    labels = rng.integers(0, 40, n)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    expected = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    ranking = metrics.compute_ranking(x, labels, k=k)
    np.testing.assert_array_equal(ranking.neighbors, expected)
    np.testing.assert_array_equal(metrics.brute_force_knn(x, x, k, exclude_self=True)[1], expected)
    assert metrics.evaluate(x, labels, metrics=("map",))["map"] == pytest.approx(slow_map(sims, labels), abs=1e-12)


def slow_map(sims, labels, reference_labels=None):
    """mAP as the mean of sklearn's per-query average precision over the whole row (-inf: self)."""
    reference_labels = labels if reference_labels is None else reference_labels
    aps = []
    for row, label in zip(sims, labels):
        keep = np.isfinite(row)
        relevant = reference_labels[keep] == label
        if relevant.any():
            aps.append(average_precision_score(relevant, row[keep]))
    return np.mean(aps)


def brute_force_metrics(sims, labels, reference_labels, recall_ks, precision_ks):
    """Every retrieval metric from whole rows of similarities (-inf: the query itself), query by query.

    The documented conventions: recall and precision read a stable sort of each row (equal
    similarities by smaller index); the rank of a positive counts every reference at least as similar.
    """
    values = {}
    for row, label in zip(sims, labels):
        keep = np.isfinite(row)
        order = np.argsort(-row, kind="stable")[: keep.sum()]
        relevant = reference_labels[order] == label
        r = relevant.sum()
        if r == 0:
            continue
        positive_sims = row[keep & (reference_labels == label)]
        ranks = (row[keep] >= positive_sims[:, None]).sum(axis=1)
        precision = (positive_sims >= positive_sims[:, None]).sum(axis=1) / ranks  # P(rank) at each positive
        per_query = {f"recall@{k}": relevant[:k].any() for k in recall_ks}
        per_query.update({f"precision@{k}": relevant[:k].mean() for k in precision_ks})
        per_query.update({
            "map": precision.mean(), "map@r": (precision * (ranks <= r)).sum() / r, "r_precision": (ranks <= r).mean(),
        })
        for name, value in per_query.items():
            values.setdefault(name, []).append(value)
    return {name: float(np.mean(v)) for name, v in values.items()}


def unit_rows(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def halves(rng, n):
    """Unit rows of four entries +-1/2 among 8: every product is a multiple of 1/4, exact in float32
    in any order of summation (so on any CPU), with many exact ties."""
    x = np.zeros((n, 8), np.float32)
    for row in x:
        row[rng.choice(8, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return x


def uneven_labels(rng, n, num_classes=40):
    """Class sizes from 0 or 1 (no positive: left out) to a few dozen."""
    weights = 1.0 / np.arange(1, num_classes + 1)
    return rng.choice(num_classes, n, p=weights / weights.sum())


def assert_matches_brute_force(x, labels, gallery=None, gallery_labels=None, recall_ks=(1,), precision_ks=(1,)):
    """Every retrieval metric, together and one family at a time, against :func:`brute_force_metrics`."""
    same_set = gallery is None
    sims = x @ (x if same_set else gallery).T
    if same_set:
        np.fill_diagonal(sims, -np.inf)
    expected = brute_force_metrics(sims, labels, labels if same_set else gallery_labels, recall_ks, precision_ks)
    kwargs = dict(reference_embeddings=gallery, reference_labels=gallery_labels, recall_ks=recall_ks, precision_ks=precision_ks)
    assert metrics.evaluate(x, labels, metrics=RETRIEVAL, **kwargs) == pytest.approx(expected, abs=1e-12)
    for family in RETRIEVAL:  # each alone: positives are masked even when their ranks are not needed
        alone = metrics.evaluate(x, labels, metrics=(family,), **kwargs)
        assert alone == pytest.approx({name: expected[name] for name in alone}, abs=1e-12), family


def min_gap_to_positives(sims, labels, reference_labels):
    """Smallest difference between a positive's similarity and another similarity of its row (nan: self)."""
    gap = np.inf
    for row, label in zip(sims.astype(np.float64), labels):
        positives = np.flatnonzero((reference_labels == label) & ~np.isnan(row))
        differences = np.abs(row[:, None] - row[positives])
        differences[positives, np.arange(len(positives))] = np.inf
        gap = min(gap, np.nanmin(differences, initial=np.inf))
    return gap


def test_random_data_matches_brute_force(small_blocks):
    rng = np.random.default_rng(6)
    x, labels = unit_rows(rng, 150, 8), uneven_labels(rng, 150, num_classes=30)
    gallery, gallery_labels = unit_rows(rng, 100, 8), uneven_labels(rng, 100, num_classes=30)
    # No similarity within 1e-6 of a positive's in its row: float32 rounding (~1e-7) cannot reorder a
    # ranking, whatever the CPU's matrix product.
    sims = x @ x.T
    np.fill_diagonal(sims, np.nan)
    assert min_gap_to_positives(sims, labels, labels) > 1e-6
    assert min_gap_to_positives(x @ gallery.T, labels, gallery_labels) > 1e-6
    assert_matches_brute_force(x, labels, recall_ks=(1, 4, 30, 149), precision_ks=(1, 4, 9))
    assert_matches_brute_force(x, labels, gallery, gallery_labels, recall_ks=(1, 4, 30, 100), precision_ks=(1, 4, 9))


def test_tied_data_matches_brute_force(small_blocks):
    # Products exact on any CPU; ties between positives and negatives, within and across blocks.
    rng = np.random.default_rng(2)
    x, labels = halves(rng, 300), uneven_labels(rng, 300)
    gallery, gallery_labels = halves(rng, 200), uneven_labels(rng, 200)
    assert_matches_brute_force(x, labels, recall_ks=(1, 2, 5, 60, 299), precision_ks=(1, 3, 10))
    assert_matches_brute_force(x, labels, gallery, gallery_labels, recall_ks=(1, 7, 200), precision_ks=(2, 10))


def test_a_gallery_holding_the_queries_never_returns_a_query_itself(small_blocks):
    # OML's rows that are both query and gallery: 120 of the 200 queries are in the 260-item gallery.
    rng = np.random.default_rng(3)
    queries, labels = halves(rng, 200), uneven_labels(rng, 200)
    extra, extra_labels = halves(rng, 140), uneven_labels(rng, 140)
    shared = rng.permutation(200)[:120]
    order = rng.permutation(260)
    gallery = np.concatenate([extra, queries[shared]])[order]
    gallery_labels = np.concatenate([extra_labels, labels[shared]])[order]
    own = np.full(200, -1)
    own[shared] = np.argsort(order)[140 + np.arange(120)]
    np.testing.assert_array_equal(gallery[own[shared]], queries[shared])
    sims = queries @ gallery.T
    sims[shared, own[shared]] = -np.inf  # brute_force_metrics: -inf is the query itself
    ks = dict(recall_ks=(1, 3, 259), precision_ks=(1, 4))
    expected = brute_force_metrics(sims, labels, gallery_labels, **ks)
    kwargs = dict(reference_embeddings=gallery, reference_labels=gallery_labels, own_reference=own, **ks)
    assert metrics.evaluate(queries, labels, metrics=RETRIEVAL, **kwargs) == pytest.approx(expected, abs=1e-12)
    for family in RETRIEVAL:
        alone = metrics.evaluate(queries, labels, metrics=(family,), **kwargs)
        assert alone == pytest.approx({name: expected[name] for name in alone}, abs=1e-12), family
    without = metrics.evaluate(queries, labels, metrics=("recall",), **{**kwargs, "own_reference": None})
    assert without["recall@1"] > expected["recall@1"]  # a query finding itself is a hit
    ranking = metrics.compute_ranking(queries, labels, gallery, gallery_labels, k=5, own_reference=own)
    np.testing.assert_array_equal(ranking.neighbors, np.argsort(-sims, axis=1, kind="stable")[:, :5])
    with pytest.raises(ValueError, match="own_reference gives one reference to several queries"):
        metrics.evaluate(queries, labels, **{**kwargs, "own_reference": np.zeros(200, int)})
    with pytest.raises(ValueError, match="must be -1 or a reference position in"):
        metrics.evaluate(queries, labels, **{**kwargs, "own_reference": np.full(200, 260)})
    with pytest.raises(ValueError, match="own_reference needs reference_embeddings"):
        metrics.evaluate(queries, labels, own_reference=own)


def test_knn_equals_brute_force_and_faiss_flat_index():
    rng = np.random.default_rng(2)
    x = unit_rows(rng, 2300, 32)  # two blocks of the default size: upper-triangle scan with a transpose
    labels = rng.integers(0, 500, 2300)
    ranking = metrics.compute_ranking(x, labels, k=9)
    sims, ids = metrics.brute_force_knn(x, x, 9, exclude_self=True)
    np.testing.assert_array_equal(ranking.neighbors, ids)
    np.testing.assert_allclose(ranking.similarities, sims, atol=1e-6)
    index = faiss.IndexFlatIP(32)
    index.add(x)
    flat_ids = index.search(x, 10)[1]
    np.testing.assert_array_equal(ranking.neighbors, flat_ids[:, 1:])  # first hit: the query itself

    queries = unit_rows(rng, 1500, 32)
    ranking = metrics.compute_ranking(queries, rng.integers(0, 9, 1500), x, labels, k=5)
    np.testing.assert_array_equal(ranking.neighbors, metrics.brute_force_knn(queries, x, 5)[1])


def test_perfect_clusters_give_nmi_and_f1_of_one():
    rng = np.random.default_rng(3)
    labels = np.repeat([3, 7, 11], 20)
    centers = np.eye(4, dtype=np.float32)[[0, 1, 2]]
    x = centers[np.searchsorted([3, 7, 11], labels)] + 0.01 * rng.standard_normal((60, 4)).astype(np.float32)
    assert metrics.evaluate(x, labels, metrics=("nmi", "f1")) == pytest.approx({"nmi": 1.0, "f1": 1.0})


def test_pairwise_f1_hand_computed_and_against_pair_enumeration():
    # Cluster 0 = {all of class a, one of class b}: TP = C(3,2) = 3 same-class pairs in one cluster;
    # predicted pairs C(4,2) = 6; same-class pairs C(3,2) + C(2,2) = 4. P = 1/2, R = 3/4, F = 0.6.
    assert metrics.pairwise_f1([0, 0, 0, 1, 1, 2], [0, 0, 0, 0, 1, 2]) == pytest.approx(0.6)
    assert metrics.pairwise_f1([0, 1, 2], [5, 6, 7]) == 1.0  # identical all-singleton partitions

    rng = np.random.default_rng(4)
    labels, clusters = rng.integers(0, 7, 150), rng.integers(0, 9, 150)
    i, j = np.triu_indices(150, 1)
    same_class, same_cluster = labels[i] == labels[j], clusters[i] == clusters[j]
    tp = (same_class & same_cluster).sum()
    precision, recall = tp / same_cluster.sum(), tp / same_class.sum()
    assert metrics.pairwise_f1(labels, clusters) == pytest.approx(2 * precision * recall / (precision + recall))


def test_kmeans_is_seeded():
    rng = np.random.default_rng(5)
    x = unit_rows(rng, 300, 16)
    np.testing.assert_array_equal(metrics.kmeans_clusters(x, 30, seed=1), metrics.kmeans_clusters(x, 30, seed=1))
    # and the seed is used: another seed starts from other centroids (random rows), so other clusters
    assert not np.array_equal(metrics.kmeans_clusters(x, 30, seed=1), metrics.kmeans_clusters(x, 30, seed=2))


def test_labels_of_shape_n_by_1_and_any_type():
    x = on_circle(ANGLES)
    expected = metrics.evaluate(x, LABELS, recall_ks=(1,), metrics=("recall", "map"))
    assert metrics.evaluate(x, np.array(LABELS)[:, None], recall_ks=(1,), metrics=("recall", "map")) == expected
    names = np.array(["a", "b", "c"])[LABELS]
    assert metrics.evaluate(x, names, recall_ks=(1,), metrics=("recall", "map")) == expected


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"embeddings": np.zeros(7, np.float32)}, ValueError, "embeddings must be a 2-D float array"),
        ({"embeddings": np.zeros((7, 2), np.int64)}, ValueError, "embeddings must be a 2-D float array"),
        ({"labels": LABELS[:-1]}, ValueError, r"labels must have shape \(7,\) or \(7, 1\)"),
        ({"embeddings": on_circle(ANGLES) * np.float32("nan")}, ValueError, "contains NaN or inf"),
        ({"labels": [0] * 7}, ValueError, "at least 2 classes, got 1"),
        ({"recall_ks": (1, 7)}, ValueError, "recall@7: K=7 must be between 1 and the number of references per query"),
        ({"precision_ks": (0,), "recall_ks": (1,)}, ValueError, "precision@0: K=0"),
        ({"metrics": ("recall", "auc")}, ValueError, r"unknown metrics \['auc'\]"),
        ({"reference_labels": LABELS}, ValueError, "together"),
        ({"labels": [0, 1, 2, 3, 4, 5, 6], "metrics": ("map",)}, ValueError, "no query has a same-class item"),
    ],
)
def test_input_errors(kwargs, error, message):
    arguments = {"embeddings": on_circle(ANGLES), "labels": LABELS, **kwargs}
    with pytest.raises(error, match=message):
        metrics.evaluate(arguments.pop("embeddings"), arguments.pop("labels"), **arguments)


def test_reference_checks():
    with pytest.raises(ValueError, match="reference_embeddings have dimension 3, embeddings 2"):
        metrics.evaluate(on_circle(ANGLES), LABELS, reference_embeddings=np.ones((4, 3), np.float32), reference_labels=[0, 0, 1, 1])
    with pytest.raises(ValueError, match="recall@5: K=5"):
        metrics.evaluate(on_circle(ANGLES), LABELS, reference_embeddings=on_circle([0, 1, 2, 3]), reference_labels=[0, 0, 1, 1], recall_ks=(5,))


@pytest.mark.skipif(faiss.get_num_gpus() > 0, reason="checks the error raised without a GPU")
def test_use_gpu_without_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="not faiss: pip uninstall faiss-cpu && pip install faiss-gpu"):
        metrics.evaluate(on_circle(ANGLES), LABELS, metrics=("map",), use_gpu=True)


def test_counts_use_byte_lanes_without_overflow():
    mask = np.ones((3, 2040), bool)  # 255 ones per byte lane: the most a BLOCK_SIZE row may hold
    mask[1, ::3] = False
    np.testing.assert_array_equal(metrics._count_per_row(mask), mask.sum(axis=1))
    mask = np.ones((255, 7), bool)  # the most a STRIP_ROWS column may hold
    mask[::2, 3] = False
    np.testing.assert_array_equal(metrics._count_per_column(mask), mask.sum(axis=0))

"""Tests for dnc_jax.evaluation.retrieval.recall_at_k against independent references."""
import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from dnc_jax.evaluation import retrieval
from dnc_jax.evaluation.retrieval import recall_at_k


def reference_recall(query, q_labels, gallery=None, g_labels=None, ks=(1,)):
    """Float64 full-matrix Recall@K; ties broken by (distance, gallery index)."""
    loo = gallery is None
    if loo:
        gallery, g_labels = query, q_labels
    q = np.asarray(query, np.float64)
    g = np.asarray(gallery, np.float64)
    dist = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    out = {k: 0 for k in ks}
    for i in range(len(q)):
        cols = np.arange(len(g))
        if loo:
            cols = np.delete(cols, i)  # self excluded by index, duplicates kept
        # Stable argsort by distance keeps ascending index order among ties.
        order = cols[np.argsort(dist[i, cols], kind="stable")]
        for k in ks:
            out[k] += bool(np.any(np.asarray(g_labels)[order[:k]] == q_labels[i]))
    return {k: out[k] / len(q) for k in ks}


def tied_embeddings(rng, n, dim=2, high=3, n_dup=10):
    """Small integer coordinates (many exact distance ties) plus duplicated rows."""
    x = rng.integers(0, high, size=(n, dim)).astype(np.float32)
    src = rng.choice(n, size=n_dup, replace=False)
    dst = rng.choice(n, size=n_dup, replace=False)
    x[dst] = x[src]
    return x


KS = (1, 2, 3, 5, 8, 40, 1000)  # 40 and 1000 exceed some gallery sizes


@pytest.mark.parametrize("block_size", [7, 16, 1000])
def test_leave_one_out_matches_reference_with_ties(block_size):
    rng = np.random.default_rng(0)
    x = tied_embeddings(rng, 48)
    labels = rng.integers(0, 4, size=48)
    got = recall_at_k(x, labels, ks=KS, block_size=block_size)
    assert got == pytest.approx(reference_recall(x, labels, ks=KS), abs=0)


@pytest.mark.parametrize("block_size", [7, 16, 1000])
def test_query_gallery_matches_reference_with_ties(block_size):
    rng = np.random.default_rng(1)
    q = tied_embeddings(rng, 45, dim=3, high=3)
    g = tied_embeddings(rng, 30, dim=3, high=3)
    g[:5] = q[:5]  # exact query duplicates inside the gallery
    ql = rng.integers(0, 5, size=45)
    gl = rng.integers(0, 5, size=30)
    got = recall_at_k(q, ql, g, gl, ks=KS, block_size=block_size)
    assert got == pytest.approx(reference_recall(q, ql, g, gl, ks=KS), abs=0)


def test_tie_break_is_lower_gallery_index():
    # Query at 0; gallery items 0 and 1 both at distance 1. Only the lower index
    # (label 7) is the single nearest neighbour.
    q = np.array([[0.0]])
    g = np.array([[1.0], [-1.0]])
    assert recall_at_k(q, [7], g, [7, 8], ks=(1, 2)) == {1: 1.0, 2: 1.0}
    assert recall_at_k(q, [8], g, [7, 8], ks=(1, 2)) == {1: 0.0, 2: 1.0}


@pytest.mark.parametrize("k", [1, 3, 10])
def test_leave_one_out_matches_sklearn(k):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(120, 16)).astype(np.float32) * 3.0 + 1.0  # not unit-norm
    labels = rng.integers(0, 10, size=120)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(x.astype(np.float64))
    idx = nn.kneighbors(x.astype(np.float64), return_distance=False)
    hits = 0
    for i, row in enumerate(idx):
        row = row[row != i][:k]  # drop self by index
        hits += bool(np.any(labels[row] == labels[i]))
    assert recall_at_k(x, labels, ks=(k,), block_size=32)[k] == pytest.approx(hits / 120, abs=0)


def test_query_gallery_matches_sklearn():
    rng = np.random.default_rng(3)
    q = rng.normal(size=(70, 8)).astype(np.float32)
    g = rng.normal(size=(90, 8)).astype(np.float32) * 2.0
    ql, gl = rng.integers(0, 6, size=70), rng.integers(0, 6, size=90)
    idx = NearestNeighbors(n_neighbors=8).fit(g).kneighbors(q, return_distance=False)
    want = {k: float(np.mean([np.any(gl[r[:k]] == lab) for r, lab in zip(idx, ql)]))
            for k in (1, 2, 4, 8)}
    assert recall_at_k(q, ql, g, gl, block_size=16) == pytest.approx(want, abs=0)


def test_hand_computed_points_on_a_line():
    # Points 0, 1, 3, 7 with labels a, b, a, b. Leave-one-out neighbour orders:
    #   0: 1(b), 3(a), 7(b)   -> first hit at rank 2
    #   1: 0(a), 3(a), 7(b)   -> rank 3 (7 is the only b)
    #   3: 1(b), 0(a), 7(b)   -> rank 2
    #   7: 3(a), 1(b), 0(a)   -> rank 2
    x = np.array([[0.0], [1.0], [3.0], [7.0]])
    labels = ["a", "b", "a", "b"]
    got = recall_at_k(x, labels, ks=(1, 2, 3, 4), block_size=3)
    assert got == {1: 0.0, 2: 0.75, 3: 1.0, 4: 1.0}  # k=4 clamped to 3 candidates
    assert all(type(v) is float for v in got.values())


def test_duplicate_of_query_is_retrievable():
    x = np.array([[5.0, 5.0], [5.0, 5.0], [0.0, 0.0]])
    assert recall_at_k(x, [1, 1, 2], ks=(1,)) == {1: pytest.approx(2 / 3)}


def test_no_candidates_gives_zero():
    assert recall_at_k(np.ones((1, 4)), [0], ks=(1, 5)) == {1: 0.0, 5: 0.0}


def test_block_function_traced_once_per_call():
    rng = np.random.default_rng(4)
    # A gallery size no other test uses, so the jit cache cannot already hold it.
    x = rng.normal(size=(53, 5)).astype(np.float32)
    labels = rng.integers(0, 3, size=53)
    before = retrieval._TRACE_COUNT
    recall_at_k(x, labels, ks=(1, 4), block_size=6)  # 9 blocks, last one padded
    assert retrieval._TRACE_COUNT - before == 1
    recall_at_k(x + 1.0, labels, ks=(2, 4), block_size=6)  # same shapes, same max k
    assert retrieval._TRACE_COUNT - before == 1


def test_invalid_arguments():
    x = np.zeros((4, 2))
    with pytest.raises(ValueError):
        recall_at_k(x, [0, 1, 0, 1], ks=())
    with pytest.raises(ValueError):
        recall_at_k(x, [0, 1, 0, 1], gallery=x)
    with pytest.raises(ValueError):
        recall_at_k(x, [0, 1, 0])
    with pytest.raises(ValueError):
        recall_at_k(np.full((4, 2), np.nan), [0, 1, 0, 1])


# ----------------------------------------------------------------------------------------------
# MAP@R, R-precision and the official [PAMI] mARP (retrieval_metrics)

from dnc_jax.evaluation.retrieval import query_stats, retrieval_metrics  # noqa: E402


def ranked_labels(query, q_labels, gallery=None, g_labels=None):
    """Float64 full matrix: each query's gallery labels in rank order, self dropped by index."""
    loo = gallery is None
    if loo:
        gallery, g_labels = query, q_labels
    q = np.asarray(query, np.float64)
    g = np.asarray(gallery, np.float64)
    dist = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    out = []
    for i in range(len(q)):
        cols = np.arange(len(g))
        if loo:
            cols = np.delete(cols, i)
        out.append(np.asarray(g_labels)[cols[np.argsort(dist[i, cols], kind="stable")]])
    return out


def official_average_precision(relevant, retrieved):
    """Transcribed from [PAMI] metriclearning/evaluation/mean_avg_precision.py."""
    is_hit = np.array([x in relevant for x in retrieved])
    precision = np.cumsum(is_hit, dtype=float) / np.arange(1, len(retrieved) + 1)
    precision *= is_hit
    return precision.sum() / is_hit.sum() if is_hit.sum() > 0 else 0


def reference_metrics(query, q_labels, gallery=None, g_labels=None, ks=(1,)):
    """Recall@K, MAP@R, R-precision (queries with R >= 1) and official mARP, in float64."""
    loo = gallery is None
    ranked = ranked_labels(query, q_labels, gallery, g_labels)
    g_all = np.asarray(q_labels if loo else g_labels)
    out = {f"recall@{k}": np.mean([lab in r[:k] for r, lab in zip(ranked, q_labels)]) for k in ks}
    aps, rps, marps = [], [], []
    for r, lab in zip(ranked, q_labels):
        n_rel = int(np.sum(g_all == lab)) - int(loo)  # official: class size - remove_self
        first_r = r[:n_rel]
        marps.append(official_average_precision([lab], first_r))
        if n_rel == 0:
            continue
        hits = first_r == lab
        prec = np.cumsum(hits) / np.arange(1, n_rel + 1)
        aps.append(np.sum(prec * hits) / n_rel)
        rps.append(hits.sum() / n_rel)
    out.update({"map@r": np.mean(aps) if aps else np.nan,
                "r_precision": np.mean(rps) if rps else np.nan,
                "marp_official": np.mean(marps)})
    return out


def assert_metrics_equal(got, want):
    assert set(got) == set(want)
    for key in want:
        if key.startswith("recall@"):  # integer counts: exact
            assert got[key] == want[key], key
        else:  # float32 precision sums on device
            assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-7, nan_ok=True), key


R_KS = (1, 2, 4, 8)


@pytest.mark.parametrize("block_size", [7, 1000])
def test_r_metrics_leave_one_out_with_ties_and_singletons(block_size):
    rng = np.random.default_rng(10)
    x = tied_embeddings(rng, 60, dim=2, high=3)
    labels = rng.integers(0, 12, size=60)
    labels[:3] = [100, 101, 102]  # singleton classes: R = 0
    got = retrieval_metrics(x, labels, ks=R_KS, block_size=block_size)
    assert_metrics_equal(got, reference_metrics(x, labels, ks=R_KS))


@pytest.mark.parametrize("block_size", [7, 1000])
def test_r_metrics_query_gallery_with_ties_and_absent_labels(block_size):
    rng = np.random.default_rng(11)
    q = tied_embeddings(rng, 45, dim=3, high=3)
    g = tied_embeddings(rng, 38, dim=3, high=3)
    g[:6] = q[:6]  # exact duplicates of queries in the gallery
    ql = rng.integers(0, 7, size=45)  # label 6 never in the gallery: R = 0
    gl = rng.integers(0, 6, size=38)
    got = retrieval_metrics(q, ql, g, gl, ks=R_KS, block_size=block_size)
    assert_metrics_equal(got, reference_metrics(q, ql, g, gl, ks=R_KS))


def test_r_metrics_match_sklearn_neighbours():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(150, 12)).astype(np.float32)
    labels = rng.integers(0, 9, size=150)  # classes of ~17: R_max > max(ks)
    idx = NearestNeighbors(n_neighbors=150).fit(x.astype(np.float64)).kneighbors(
        x.astype(np.float64), return_distance=False)
    aps, rps = [], []
    for i, row in enumerate(idx):
        row = row[row != i]
        n_rel = int(np.sum(labels == labels[i])) - 1
        hits = labels[row[:n_rel]] == labels[i]
        aps.append(np.sum(hits * np.cumsum(hits) / np.arange(1, n_rel + 1)) / n_rel)
        rps.append(hits.mean())
    got = retrieval_metrics(x, labels, ks=(1,), block_size=64)
    assert got["map@r"] == pytest.approx(np.mean(aps), rel=1e-6)
    assert got["r_precision"] == pytest.approx(np.mean(rps), rel=1e-12)


def test_hand_computed_r_metrics_against_the_official_example():
    # The official module's own example: retrieved labels 7,5,7,7,7,7,2,3,1,7 for a query of
    # class 7, with six 7s in the gallery, so R = 6 and the first six are 7,5,7,7,7,7:
    # hits at 1,3,4,5,6 -> precisions 1, 2/3, 3/4, 4/5, 5/6 (sum 4.05).
    g_labels = [7, 5, 7, 7, 7, 7, 2, 3, 1, 7]
    gallery = np.arange(1, 11, dtype=np.float32)[:, None]  # rank order = index order
    got = retrieval_metrics(np.zeros((1, 1)), [7], gallery, g_labels, ks=(1, 2))
    assert got["recall@1"] == 1.0
    assert got["map@r"] == pytest.approx(4.05 / 6)
    assert got["r_precision"] == pytest.approx(5 / 6)
    assert got["marp_official"] == pytest.approx(4.05 / 5)  # divided by hits, not by R
    assert got["marp_official"] == pytest.approx(official_average_precision([7], g_labels[:6]))


def test_large_class_needs_deep_search():
    # One class holds 35 of 40 items: k_max grows from max(ks)=1 to R_max=34 (~ the gallery).
    rng = np.random.default_rng(13)
    x = tied_embeddings(rng, 40, dim=2, high=4)
    labels = np.where(np.arange(40) < 35, 0, np.arange(40))
    got = retrieval_metrics(x, labels, ks=(1,), block_size=16)
    assert_metrics_equal(got, reference_metrics(x, labels, ks=(1,)))


def test_padding_never_enters_a_metric():
    rng = np.random.default_rng(14)
    x = tied_embeddings(rng, 37, dim=2, high=3)
    labels = rng.integers(0, 5, size=37)
    whole = query_stats(x, labels, k=4, block_size=64)
    for block_size in (1, 5, 36):  # 37 = 7 * 5 + 2: last block mostly padding
        stats = query_stats(x, labels, k=4, block_size=block_size)
        for a, b in zip(stats, whole):
            np.testing.assert_array_equal(a, b)
    assert len(whole.first_hit) == 37


def test_all_singletons_give_nan_map_and_zero_marp():
    got = retrieval_metrics(np.eye(4), [0, 1, 2, 3], ks=(1,))
    assert got["recall@1"] == 0.0 and got["marp_official"] == 0.0
    assert np.isnan(got["map@r"]) and np.isnan(got["r_precision"])


def test_recall_only_keys_and_consistency_with_recall_at_k():
    rng = np.random.default_rng(15)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    labels = rng.integers(0, 5, size=50)
    got = retrieval_metrics(x, labels, ks=(1, 3), block_size=16, map_at_r=False)
    assert got == {f"recall@{k}": v for k, v in recall_at_k(x, labels, ks=(1, 3)).items()}

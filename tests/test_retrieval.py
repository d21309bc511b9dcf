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

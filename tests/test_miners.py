"""Miners against plain-numpy references of the official behaviour (docs/method.md §3.2-3.4), and a
statistical test of distance-weighted sampling."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnc_jax.losses import common, miners
from tests import reference_miners


def _normalize(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _batch(seed, b=20, d=4):
    """Two learners (10 + 8 slots) and two padding slots; class 1 appears in both learners."""
    rng = np.random.default_rng(seed)
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4, 4, 5, 5, 1, 1, 1, 6, 6], np.int32)
    learners = np.array([0] * 10 + [1] * 8 + [0, 0], np.int32)
    valid = np.arange(b) < 18
    emb = _normalize(rng.normal(size=(b, d)))
    return emb, labels, learners, valid


def _mine(miner, emb, labels, learners, valid, rng=0):
    positives, negatives = common.pair_masks(jnp.asarray(labels), jnp.asarray(learners),
                                             jnp.asarray(valid))
    d = common.miner_distances(common.pairwise_squared_distances(jnp.asarray(emb, jnp.float32)))
    n_dim = jnp.full(len(emb), emb.shape[1], jnp.float32)
    t = miner(jax.random.key(rng), d, positives, negatives, n_dim)
    return {k: np.asarray(v) for k, v in t._asdict().items()}, reference_miners.distances(emb)


def _valid_triplets(t):
    ok = t["valid"]
    return [tuple(x) for x in zip(t["anchor"][ok], t["positive"][ok], t["negative"][ok])]


def _groups(labels, learners, valid):
    return reference_miners.groups(labels, learners, valid)


@pytest.mark.parametrize("strict", [True, False])
def test_easy_peasy_matches_the_official_miner_per_learner(strict):
    emb, labels, learners, valid = _batch(0)
    miner = miners.make_miner("easy_peasy", num_negatives=2, cutoff=0.5, strict=strict)
    t, d = _mine(miner, emb, labels, learners, valid)
    got = _valid_triplets(t)
    assert got == reference_miners.easy_peasy(d, labels, learners, valid, 2, 0.5, strict)
    assert len(got) > 20


def test_easy_peasy_with_too_few_negatives_strict_and_official():
    # One learner: anchor 0 has positives 1, 2; negative 3 is too close (d < 0.5), 4 is fine.
    angles = np.array([0.0, 1.2, 2.0, 0.3, 1.0])  # d = 2 sin(angle / 2)
    emb = np.stack([np.cos(angles), np.sin(angles)], 1)
    labels = np.array([0, 0, 0, 1, 2])
    learners, valid = np.zeros(5, np.int32), np.ones(5, bool)
    strict = miners.make_miner("easy_peasy", num_negatives=2, cutoff=0.5, strict=True)
    t, _ = _mine(strict, emb, labels, learners, valid)
    assert [x for x in _valid_triplets(t) if x[0] == 0] == [(0, 1, 4)]
    # The official top-k fills the second slot with the closest penalised item: the anchor
    # itself (distance 0.01), listed first in index order.
    official = miners.make_miner("easy_peasy", num_negatives=2, cutoff=0.5, strict=False)
    t, _ = _mine(official, emb, labels, learners, valid)
    assert [x for x in _valid_triplets(t) if x[0] == 0] == [(0, 1, 0), (0, 2, 4)]


def test_semi_hard_and_batch_hard_match_references():
    emb, labels, learners, valid = _batch(1)
    t, d = _mine(miners.semi_hard, emb, labels, learners, valid)
    expected = reference_miners.semi_hard(d, labels, learners, valid)
    assert sorted(_valid_triplets(t)) == sorted(expected)
    assert any(d[a, n] < d[a, p] for a, p, n in expected)  # the "no semi-hard" branch is hit

    t, d = _mine(miners.batch_hard, emb, labels, learners, valid)
    assert _valid_triplets(t) == reference_miners.batch_hard(d, labels, learners, valid)


def test_all_triplets_are_every_valid_triple():
    emb, labels, learners, valid = _batch(2)
    t, _ = _mine(miners.all_triplets, emb, labels, learners, valid)
    assert _valid_triplets(t) == reference_miners.all_triplets(labels, learners, valid)


def _dw_batch():
    """Anchor 0 and its positive 1, negatives 2..7 at chosen distances from the anchor."""
    dist = np.array([0.0, 0.2, 0.3, 0.6, 0.9, 1.2, 1.35, 1.6])
    angles = 2 * np.arcsin(dist / 2)
    emb = np.zeros((8, 4))
    emb[:, 0], emb[:, 1] = np.cos(angles), np.sin(angles)
    labels = np.array([0, 0, 1, 2, 3, 4, 5, 6])
    return emb, labels, np.zeros(8, np.int32), np.ones(8, bool), dist


def test_distance_weighted_frequencies_match_the_analytic_weights():
    emb, labels, learners, valid, dist = _dw_batch()
    n, draws = 4.0, 20000
    positives, negatives = common.pair_masks(jnp.asarray(labels), jnp.asarray(learners),
                                             jnp.asarray(valid))
    d = common.miner_distances(common.pairwise_squared_distances(jnp.asarray(emb, jnp.float32)))
    miner = miners.make_miner("distance_weighted", num_negatives=1, cutoff=0.5,
                              nonzero_loss_cutoff=1.4)
    draw = jax.jit(jax.vmap(lambda key: miner(key, d, positives, negatives,
                                              jnp.full(8, n, jnp.float32)).negative[0]))
    picks = np.asarray(draw(jax.random.split(jax.random.key(0), draws)))
    freq = np.bincount(picks, minlength=8) / draws

    # docs/method.md §3.3 on the anchor's row, in float64.
    dc = np.maximum(dist, 0.5)
    log_w = (2 - n) * np.log(dc) - (n - 3) / 2 * np.log(1 - dc ** 2 / 4)
    near = (labels != 0) & (dc < 1.4)
    w = np.exp(log_w - log_w[near].max()) + 1e-9
    w = np.where(near, w, np.where(labels != 0, 1e-6, 0.0))
    p = w / w.sum()
    stderr = np.sqrt(p * (1 - p) / draws)
    assert freq[:2].sum() == 0  # never self or the positive
    assert np.all(np.abs(freq - p) <= 5 * stderr + 1e-4), (freq, p)
    assert p[2] > 2 * p[6]  # the test has power: the weights differ


def test_distance_weighted_draws_without_replacement_inside_the_learner():
    emb, labels, learners, valid = _batch(3)
    positives, negatives = common.pair_masks(jnp.asarray(labels), jnp.asarray(learners),
                                             jnp.asarray(valid))
    d = common.miner_distances(common.pairwise_squared_distances(jnp.asarray(emb, jnp.float32)))
    miner = miners.make_miner("distance_weighted", num_negatives=3)
    draw = jax.jit(jax.vmap(lambda key: miner(key, d, positives, negatives,
                                              jnp.full(20, 4.0, jnp.float32))))
    t = draw(jax.random.split(jax.random.key(1), 500))
    neg = np.asarray(t.negative).reshape(500, 20, 3)
    ok = np.asarray(t.valid).reshape(500, 20, 3)
    _, pos, negs = _groups(labels, learners, valid)
    for a in range(20):
        if not (valid[a] and pos[a]):
            assert not ok[:, a].any()
            continue
        assert ok[:, a].all()  # every anchor here has >= 3 negatives
        assert np.isin(neg[:, a], negs[a]).all()
        assert (np.sort(neg[:, a], axis=1)[:, 1:] != np.sort(neg[:, a], axis=1)[:, :-1]).all()
        assert len(np.unique(neg[:, a, 1])) > 1  # later picks are random too


def test_distance_weighted_dim_embedding_ignores_the_views_dimensionality():
    """'view' weights a learner's negatives by the density of its own sphere (n = the dims its
    mask keeps); 'embedding' always uses the full width, as PAMI's sampler does (n = 512)."""
    import ml_collections

    from dnc_jax.losses import make_loss

    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 32)).astype(np.float32)
    x[:, 8:] = 0.0                               # a learner view keeping 8 of 32 dims
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.repeat(np.arange(6), 4).astype(np.int32)
    learners = np.zeros(24, np.int32)
    valid = np.ones(24, bool)
    view_dim = jnp.full((24,), 8.0)

    def mined(dim_mode, n_dim):
        config = ml_collections.ConfigDict({"name": "margin", "miner": "distance_weighted",
                                            "distance_weighted_dim": dim_mode})
        loss_fn = make_loss(config, num_learners_max=1, samples_per_class=4)
        _, aux = loss_fn(jnp.asarray(x), labels, learners, valid, jax.random.key(3), {},
                         n_dim=n_dim)
        return np.asarray(aux["negative_index"])

    width = mined("view", None)                  # n_dim=None: the width, 32
    np.testing.assert_array_equal(mined("embedding", view_dim), width)
    assert not np.array_equal(mined("view", view_dim), width)
    with pytest.raises(ValueError, match="loss.distance_weighted_dim"):
        make_loss(ml_collections.ConfigDict({"distance_weighted_dim": "sphere"}), 1, 4)

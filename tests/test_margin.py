"""Margin loss against a float64 numpy reference written from docs/method.md §3.1/§3.3."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnc_jax.losses.margin import margin_loss
from dnc_jax.losses.miners import distance_weighted_logits, make_miner

ALPHA, BETA = 0.2, 1.2


def _miner(num_triplets):
    return make_miner("distance_weighted", num_negatives=num_triplets)


def _normalize(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _batch(seed, b=24, d=8, k=2, m=3):
    rng = np.random.default_rng(seed)
    emb = _normalize(rng.normal(size=(b, d)))
    learners = np.repeat(np.arange(k), b // k)
    labels = np.repeat(np.arange(b // m), m)
    valid = np.ones(b, bool)
    valid[-2:] = False  # two padding slots
    return emb.astype(np.float32), labels, learners, valid


def _reference_loss(emb, labels, learners, valid, anchor_idx, pos_idx, neg_idx, ok, k_max):
    """Per learner: sum of hinge terms over its triplets / number of non-zero terms."""
    e = emb.astype(np.float64)
    dist = np.sqrt(((e[:, None] - e[None]) ** 2).sum(-1) + 1e-8)
    sums, counts = np.zeros(k_max), np.zeros(k_max)
    for i, p, n, good in zip(anchor_idx, pos_idx, neg_idx, ok):
        if good:
            # The sampled triplet must respect the learner and label structure.
            assert learners[p] == learners[i] == learners[n]
            assert labels[p] == labels[i] != labels[n] and p != i and valid[p] and valid[n]
            pos = max(0.0, dist[i, p] - BETA + ALPHA)
            neg = max(0.0, BETA - dist[i, n] + ALPHA)
            sums[learners[i]] += pos + neg
            counts[learners[i]] += int(pos > 0) + int(neg > 0)
    per = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    return per.sum(), per


@pytest.mark.parametrize("seed", [0, 1])
def test_value_matches_float64_reference(seed):
    emb, labels, learners, valid = _batch(seed)
    n_dim = np.full(len(emb), emb.shape[1], np.float32)
    loss, aux = jax.jit(lambda *a: margin_loss(*a, n_dim=n_dim, num_learners_max=3,
                                               mine=_miner(2)))(
        jnp.asarray(emb), labels, learners, valid, jax.random.key(seed))
    ref, ref_per = _reference_loss(emb, labels, learners, valid,
                                   np.asarray(aux["anchor_index"]),
                                   np.asarray(aux["positive_index"]),
                                   np.asarray(aux["negative_index"]),
                                   np.asarray(aux["triplet_valid"]), 3)
    assert int(aux["triplets"]) > 20
    np.testing.assert_allclose(float(loss), ref, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(aux["per_learner"]), ref_per, rtol=1e-5, atol=1e-7)
    # Every valid anchor with a valid positive has all of its triplets (there are enough
    # negatives); anchor 21 lost its classmates to padding, padding anchors have none.
    ok = np.asarray(aux["triplet_valid"]).reshape(len(labels), 2)
    has_positive = np.array([valid[i] and any(valid[j] and labels[j] == labels[i]
                                              for j in range(len(labels)) if j != i)
                             for i in range(len(labels))])
    assert not has_positive[21]
    assert ok[has_positive].all() and not ok[~has_positive].any()


def test_gradient_matches_finite_differences():
    emb, labels, learners, valid = _batch(3, b=12, d=4, k=1, m=3)
    n_dim = np.full(len(emb), 4.0, np.float32)

    @jax.jit
    def f(x):
        return margin_loss(x, labels, learners, valid, jax.random.key(0), n_dim=n_dim,
                           num_learners_max=1, mine=_miner(2))[0]

    x = jnp.asarray(emb, jnp.float32)
    grad = np.asarray(jax.grad(f)(x), np.float64)
    direction = np.random.default_rng(0).normal(size=emb.shape)
    eps = 1e-3
    fd = (float(f(x + eps * direction)) - float(f(x - eps * direction))) / (2 * eps)
    assert abs(fd - (grad * direction).sum()) < 2e-3 * max(1.0, abs(fd))


def test_degenerate_batches_are_finite():
    n_dim = np.full(8, 8.0, np.float32)
    emb = jnp.asarray(_normalize(np.random.default_rng(0).normal(size=(8, 8))), jnp.float32)
    cases = {
        "one class": (np.zeros(8, int), np.zeros(8, int)),
        "no positive pair": (np.arange(8), np.zeros(8, int)),
        "every learner alone": (np.repeat(np.arange(4), 2), np.arange(8)),
    }
    value_and_grad = jax.jit(jax.value_and_grad(
        lambda x, labels, learners: margin_loss(
            x, labels, learners, np.ones(8, bool), jax.random.key(0), n_dim=n_dim,
            num_learners_max=8, mine=_miner(3))[0]))
    for name, (labels, learners) in cases.items():
        loss, grad = value_and_grad(emb, labels, learners)
        assert np.isfinite(float(loss)) and float(loss) == 0.0, name
        assert np.all(np.isfinite(np.asarray(grad))), name


def test_distance_weighted_logits_follow_the_formula():
    d = np.array([[0.0, 0.3, 0.8, 1.1, 1.5]])
    negatives = np.array([[False, True, True, True, True]])
    n = 16.0
    got = np.asarray(distance_weighted_logits(jnp.asarray(d), jnp.asarray(negatives),
                                              jnp.asarray([n]), 0.5, 1.4))
    dc = np.maximum(d, 0.5)
    log_w = (2 - n) * np.log(dc) - (n - 3) / 2 * np.log(1 - dc ** 2 / 4)
    near = negatives & (dc < 1.4)
    w = np.exp(log_w - log_w[near].max()) + 1e-9
    w = np.where(near, w, np.where(negatives, 1e-6, 0.0))
    assert got[0, 0] < -1e29  # self is never drawn
    np.testing.assert_allclose(got[0, 1:], np.log(w[0, 1:]), rtol=1e-5, atol=1e-6)

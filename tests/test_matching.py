"""Hungarian matching of new clusters to learners, applied the right way round."""
import numpy as np

from dnc_jax.divide.matching import (cost_matrix, match_clusters, matching_cost, overlap_counts,
                                     reassign, relabel)


def _rename(labels, sigma):
    """The same partition with previous cluster p now called sigma[p] (what a new k-means gives)."""
    labels = np.asarray(labels)
    return np.where(labels >= 0, np.asarray(sigma)[np.clip(labels, 0, None)], -1)


def test_three_cycle_recovered_and_applied_not_inverted():
    previous = np.repeat([0, 1, 2], [5, 7, 9])
    sigma = np.array([1, 2, 0])
    current = _rename(previous, sigma)
    perm = match_clusters(previous, current, 3)
    np.testing.assert_array_equal(perm, np.argsort(sigma))  # perm = sigma^-1
    np.testing.assert_array_equal(relabel(current, perm), previous)
    # The official code's inverse application gets every label wrong on a 3-cycle.
    assert np.all(relabel(current, np.argsort(perm)) != previous)
    assert matching_cost(previous, current, perm, 3) == 0


def test_identity():
    previous = np.random.default_rng(0).integers(0, 5, 200)
    perm = match_clusters(previous, previous.copy(), 5)
    np.testing.assert_array_equal(perm, np.arange(5))
    np.testing.assert_array_equal(relabel(previous, perm), previous)


def test_minus_one_ignored():
    previous = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, -1, -1, -1, 0])
    current = np.array([2, 2, 2, 0, 0, 0, 1, 1, 1, 0, 1, 2, -1])
    ov = overlap_counts(previous, current, 3)
    assert ov.sum() == 9  # pairs with a -1 on either side are not counted
    perm = match_clusters(previous, current, 3)
    np.testing.assert_array_equal(perm, [1, 2, 0])
    out = relabel(current, perm)
    np.testing.assert_array_equal(out[:9], previous[:9])
    assert out[-1] == -1
    # Sizes count every non-negative label: |C_c| = 4, |P_p| = 4 (with the last point), overlap 3.
    assert cost_matrix(previous, current, 3)[2, 0] == 4 + 4 - 2 * 3


def test_random_permutation_with_noise():
    rng = np.random.default_rng(0)
    k, n = 8, 4000
    previous = rng.integers(0, k, n)
    sigma = rng.permutation(k)
    current = _rename(previous, sigma)
    noisy = rng.random(n) < 0.1
    current[noisy] = rng.integers(0, k, noisy.sum())
    out, perm, cost = reassign(previous, current, k)
    np.testing.assert_array_equal(perm, np.argsort(sigma))
    assert (out == previous).mean() > 0.85
    # The cost is the total symmetric difference: 2 x (points whose label changed).
    assert cost == 2 * int((out != previous).sum())

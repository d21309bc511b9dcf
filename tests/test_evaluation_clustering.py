"""Tests for dnc_jax.evaluation.clustering (NMI of k-means with #classes clusters)."""
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score

from dnc_jax.evaluation import clustering


def blobs(seed, n_classes=5, per_class=12, dim=6, spread=0.05):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)) * 10
    labels = np.repeat(np.arange(n_classes), per_class)
    return (centres[labels] + rng.normal(size=(len(labels), dim)) * spread).astype(np.float32), \
        labels


def direct_nmi(a, b):
    """Arithmetic-mean NMI from the contingency table, in float64."""
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= joint.sum()
    pa, pb = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = np.sum(joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz]))
    entropy = lambda p: -np.sum(p[p > 0] * np.log(p[p > 0]))  # noqa: E731
    return mi / ((entropy(pa) + entropy(pb)) / 2)


def test_well_separated_classes_give_nmi_one_like_sklearn():
    x, y = blobs(0)
    ours = clustering.normalized_mutual_information(x, y, seeds=(0,), n_init=3)
    sk = KMeans(n_clusters=5, n_init=3, random_state=0).fit(x).labels_
    assert ours.mean == pytest.approx(1.0)
    assert normalized_mutual_info_score(y, sk, average_method="arithmetic") == pytest.approx(1.0)


def test_nmi_is_the_direct_score_of_our_assignment_per_seed():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 4)).astype(np.float32)  # no structure: seeds disagree
    y = rng.integers(0, 6, size=80)
    got = clustering.normalized_mutual_information(x, y, seeds=(0, 1, 2))
    want = [direct_nmi(y, clustering.kmeans_assignment(x, 6, seed)) for seed in (0, 1, 2)]
    assert got.per_seed == pytest.approx(want, rel=1e-9)
    assert got.mean == pytest.approx(np.mean(want)) and got.std == pytest.approx(np.std(want))
    assert got.std > 0


def test_nmi_checks_arguments():
    x, y = blobs(2)
    with pytest.raises(ValueError):
        clustering.normalized_mutual_information(x, y[:-1])
    with pytest.raises(ValueError):
        clustering.normalized_mutual_information(x, y, seeds=())


def test_overlapping_classes_score_as_sklearn_kmeans_does():
    """Classes that overlap (NMI well below 1): our k-means + NMI against sklearn's KMeans
    (k-means++, 10 restarts) + normalized_mutual_info_score on the same points. Different
    inits reach slightly different partitions; the inertia each reaches and the NMI agree."""
    x, y = blobs(3, n_classes=6, per_class=60, dim=8, spread=11.0)
    ours = clustering.normalized_mutual_information(x, y, seeds=(0, 1, 2), n_init=10)
    fits = [KMeans(n_clusters=6, n_init=10, random_state=s).fit(x) for s in (0, 1, 2)]
    sk = [normalized_mutual_info_score(y, f.labels_, average_method="arithmetic") for f in fits]
    assert 0.3 < np.mean(sk) < 0.9  # overlapping: neither separated nor structureless
    assert ours.mean == pytest.approx(np.mean(sk), abs=0.03)
    # Both reach the same quality of partition: the inertia of our assignment's centroids.
    ours_inertia = []
    for seed in (0, 1, 2):
        a = np.asarray(clustering.kmeans_assignment(x, 6, seed, n_init=10))
        ours_inertia.append(sum(((x[a == c] - x[a == c].mean(0)) ** 2).sum()
                                for c in np.unique(a)))
    assert np.mean(ours_inertia) == pytest.approx(np.mean([f.inertia_ for f in fits]), rel=0.01)

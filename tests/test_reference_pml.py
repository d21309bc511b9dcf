"""Losses and retrieval metrics against pytorch-metric-learning, an independent implementation.

Our own float64 references (test_losses.py, test_retrieval.py) were written from the same reading
of the papers as the code; pytorch-metric-learning (PML) was not. Each case below uses the PML
class whose definition coincides with ours (named in the test), computed in float64 on the same
embeddings. Where the definitions differ on purpose the test is absent and the loss module says
why (contrastive: squared hinge, one joint mean; multi-similarity: an anchor needs both a kept
positive and a kept negative, as in the authors' code, so the batches here give every anchor
both).

Learners: our losses are sums over learners of per-learner losses, so PML runs once per learner
on that learner's rows and the results are summed; that also checks that no pair crosses
learners.
"""
import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="torch (requirements-test.txt) runs pytorch-metric-learning")
pml = pytest.importorskip(
    "pytorch_metric_learning",
    reason="pytorch-metric-learning (requirements-test.txt) is the independent reference")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from pytorch_metric_learning import distances as pml_distances  # noqa: E402
from pytorch_metric_learning import losses as pml_losses  # noqa: E402
from pytorch_metric_learning import miners as pml_miners  # noqa: E402
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator  # noqa: E402
from pytorch_metric_learning.utils.inference import CustomKNN  # noqa: E402

from dnc_jax.evaluation.retrieval import retrieval_metrics  # noqa: E402
from dnc_jax.losses import miners  # noqa: E402
from dnc_jax.losses.margin import margin_loss  # noqa: E402
from dnc_jax.losses.multi_similarity import multi_similarity_loss  # noqa: E402
from dnc_jax.losses.proxy import normalized_softmax_loss, proxy_anchor_loss  # noqa: E402
from dnc_jax.losses.triplet import triplet_loss  # noqa: E402

K_MAX = 4


def _batch(seed, *, classes=6, per_class=4, learners=2, dim=8, spread=0.6):
    """Unit embeddings of `learners` disjoint class-balanced sub-batches, some slots padding.

    Classes have a common direction plus noise, so there are easy and hard pairs alike."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes * learners, dim))
    labels = np.repeat(np.arange(classes * learners), per_class)
    learner = labels // classes
    x = centres[labels] + spread * rng.normal(size=(len(labels), dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    valid = np.ones(len(labels), bool)
    valid[[3, len(labels) - 2]] = False  # padding slots must never reach a term
    return x.astype(np.float32), labels.astype(np.int32), learner.astype(np.int32), valid


def _per_learner(pml_loss_of, x, labels, learner, valid):
    """Sum over learners of the PML loss on that learner's valid rows, in float64."""
    total = 0.0
    for k in np.unique(learner[valid]):
        rows = valid & (learner == k)
        emb = torch.tensor(x[rows], dtype=torch.float64)
        total += float(pml_loss_of(emb, torch.tensor(labels[rows], dtype=torch.long)))
    return total


def _ours(loss, x, labels, learner, valid, **kwargs):
    value, _ = loss(jnp.asarray(x), labels, learner, valid, jax.random.key(0),
                    num_learners_max=K_MAX, **kwargs)
    return float(value)


def _lp():
    return pml_distances.LpDistance(normalize_embeddings=False)


@pytest.mark.parametrize("seed", [0, 1])
def test_margin_loss_over_all_triplets_matches_pml(seed):
    x, labels, learner, valid = _batch(seed)
    ours = _ours(margin_loss, x, labels, learner, valid, mine=miners.all_triplets,
                 margin=0.2, beta=1.2)
    reference = pml_losses.MarginLoss(margin=0.2, nu=0, beta=1.2, triplets_per_anchor="all",
                                      distance=_lp())
    theirs = _per_learner(lambda e, y: reference(e, y), x, labels, learner, valid)
    assert theirs > 0
    np.testing.assert_allclose(ours, theirs, rtol=2e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_triplet_loss_over_all_triplets_matches_pml(seed):
    """Mean over non-zero terms (PML's AvgNonZeroReducer)."""
    x, labels, learner, valid = _batch(seed)
    ours = _ours(triplet_loss, x, labels, learner, valid, mine=miners.all_triplets,
                 margin=0.2, average="nonzero")
    reference = pml_losses.TripletMarginLoss(margin=0.2, triplets_per_anchor="all",
                                             distance=_lp())
    theirs = _per_learner(lambda e, y: reference(e, y), x, labels, learner, valid)
    assert theirs > 0
    np.testing.assert_allclose(ours, theirs, rtol=2e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_batch_hard_triplet_loss_matches_pml_batch_hard_miner(seed):
    x, labels, learner, valid = _batch(seed)
    ours = _ours(triplet_loss, x, labels, learner, valid, mine=miners.batch_hard,
                 margin=0.2, average="nonzero")
    miner = pml_miners.BatchHardMiner(distance=_lp())
    reference = pml_losses.TripletMarginLoss(margin=0.2, distance=_lp())
    theirs = _per_learner(lambda e, y: reference(e, y, miner(e, y)), x, labels, learner, valid)
    assert theirs > 0
    np.testing.assert_allclose(ours, theirs, rtol=2e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_multi_similarity_loss_with_its_miner_matches_pml(seed):
    x, labels, learner, valid = _batch(seed, spread=3.0)
    ours = _ours(multi_similarity_loss, x, labels, learner, valid, alpha=2.0, beta=50.0,
                 lam=0.5, epsilon=0.1)
    miner = pml_miners.MultiSimilarityMiner(epsilon=0.1)
    reference = pml_losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5)
    theirs = _per_learner(lambda e, y: reference(e, y, miner(e, y)), x, labels, learner, valid)
    assert theirs > 0
    # Valid rows per learner differ from PML's batch size only through padding, which both
    # exclude; the module doc's one deliberate difference needs an anchor that keeps positives
    # but no negative (or the reverse), which these batches do not have:
    sim = x @ x.T
    for i in np.flatnonzero(valid):
        same = valid & (learner == learner[i])
        pos = same & (labels == labels[i]) & (np.arange(len(x)) != i)
        neg = same & (labels != labels[i])
        assert np.any(sim[i, neg] + 0.1 > sim[i, pos].min())
        assert np.any(sim[i, pos] - 0.1 < sim[i, neg].max())
    np.testing.assert_allclose(ours, theirs, rtol=2e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_proxy_losses_match_pml_with_the_same_proxies(seed):
    """One learner without masks: PML has no notion of masked proxies. Labels cover only some
    classes, so the proxy-anchor positive term (present classes) and negative term (all
    classes) have different divisors, as in Kim et al. and PML."""
    x, labels, _, _ = _batch(seed, classes=5, learners=1)
    num_classes = 9
    learner = np.zeros_like(labels)
    valid = np.ones(len(labels), bool)
    proxies = np.random.default_rng(seed + 10).normal(size=(num_classes, x.shape[1]))
    params = {"proxies": jnp.asarray(proxies, jnp.float32)}
    y = torch.tensor(labels, dtype=torch.long)
    emb = torch.tensor(x, dtype=torch.float64)

    ours = _ours(proxy_anchor_loss, x, labels, learner, valid, loss_params=params,
                 alpha=32.0, delta=0.1)
    anchor = pml_losses.ProxyAnchorLoss(num_classes, x.shape[1], margin=0.1, alpha=32)
    anchor.proxies.data = torch.tensor(proxies, dtype=torch.float64)
    np.testing.assert_allclose(ours, float(anchor(emb, y).detach()), rtol=2e-5)

    ours = _ours(normalized_softmax_loss, x, labels, learner, valid, loss_params=params,
                 temperature=0.05)
    softmax = pml_losses.NormalizedSoftmaxLoss(num_classes, x.shape[1], temperature=0.05)
    softmax.W.data = torch.tensor(proxies.T, dtype=torch.float64)  # PML stores [d, C]
    np.testing.assert_allclose(ours, float(softmax(emb, y).detach()), rtol=2e-5)


# --- retrieval metrics -------------------------------------------------------------------------

def _pml_metrics(query, query_labels, gallery=None, gallery_labels=None):
    """PML's precision@1, R-precision and MAP@R with exact Euclidean k-NN (no faiss)."""
    calculator = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count", knn_func=CustomKNN(_lp()))
    q = torch.tensor(query, dtype=torch.float64)
    ql = torch.tensor(query_labels)
    if gallery is None:
        return calculator.get_accuracy(q, ql, q, ql, ref_includes_query=True)
    return calculator.get_accuracy(q, ql, torch.tensor(gallery, dtype=torch.float64),
                                   torch.tensor(gallery_labels), ref_includes_query=False)


def _compare(ours, theirs):
    np.testing.assert_allclose(ours["recall@1"], theirs["precision_at_1"], atol=1e-12)
    np.testing.assert_allclose(ours["r_precision"], theirs["r_precision"], rtol=1e-6)
    np.testing.assert_allclose(ours["map@r"], theirs["mean_average_precision_at_r"], rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_leave_one_out_metrics_match_pml(seed):
    """Uneven class sizes (R from 1 up) and continuous embeddings (no distance ties: the
    two libraries break ties differently, ours is documented in evaluation/retrieval.py).

    Every class has two images or more: PML leaves a query without a relevant item out of
    precision@1, while Recall@K keeps it as a miss, as the official code does."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.arange(40), np.arange(40), rng.integers(0, 40, size=220)])
    x = rng.normal(size=(300, 6)) + 0.8 * rng.normal(size=(40, 6))[labels]
    ours = retrieval_metrics(x.astype(np.float32), labels, ks=(1,), block_size=64)
    theirs = _pml_metrics(x, labels)
    assert 0.05 < ours["recall@1"] < 0.95  # neither trivial nor hopeless
    _compare(ours, theirs)


@pytest.mark.parametrize("seed", [0, 1])
def test_query_gallery_metrics_match_pml(seed):
    """In-shop's setting: disjoint query and gallery sets over shared identities."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, 6))
    q_labels = rng.integers(0, 30, size=150)
    g_labels = np.concatenate([np.arange(30), rng.integers(0, 30, size=90)])
    query = rng.normal(size=(150, 6)) + centres[q_labels]
    gallery = rng.normal(size=(120, 6)) + centres[g_labels]
    ours = retrieval_metrics(query.astype(np.float32), q_labels, gallery.astype(np.float32),
                             g_labels, ks=(1,), block_size=64)
    theirs = _pml_metrics(query, q_labels, gallery, g_labels)
    assert 0.05 < ours["recall@1"] < 0.95
    _compare(ours, theirs)

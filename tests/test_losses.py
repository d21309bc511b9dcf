"""Every registered loss against a float64 numpy reference written from its formula (docs/method.md
§3 and each module's doc), with finite-difference gradients, degenerate batches, learner
isolation and one trace across learner assignments. Runs in float64 (restored afterwards)."""
import functools
import itertools

import chex
import jax
import ml_collections
import numpy as np
import pytest

from dnc_jax import defaults, losses
from tests import reference_miners

B, D, K_MAX, NUM_CLASSES = 20, 6, 3, 12

CASES = {
    "margin_distance_weighted": dict(name="margin"),
    "margin_easy_peasy": dict(name="margin", miner="easy_peasy"),
    "margin_global_beta": dict(name="margin", miner="batch_hard", beta_mode="global", nu=0.05),
    "margin_per_class_beta": dict(name="margin", miner="semi_hard", beta_mode="per_class",
                                  nu=0.05),
    "triplet_semi_hard": dict(name="triplet", miner="semi_hard"),
    "triplet_batch_hard_soft": dict(name="triplet", miner="batch_hard", soft=True),
    "triplet_all": dict(name="triplet", miner="all"),
    "triplet_distance_weighted": dict(name="triplet"),
    "contrastive": dict(name="contrastive", pos_margin=0.1, neg_margin=1.2),
    "multi_similarity": dict(name="multi_similarity"),
    "proxy_anchor": dict(name="proxy_anchor"),
    "normalized_softmax": dict(name="normalized_softmax", temperature=0.1),
    "npairs": dict(name="npairs"),
}


@pytest.fixture(scope="module", autouse=True)
def float64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


def _config(case):
    return ml_collections.ConfigDict({**defaults.get_config().loss.to_dict(),
                                      **CASES[case]})


@functools.lru_cache(maxsize=None)
def _compiled(case):
    """jit(value_and_grad) of the registered loss; a second trace fails the test."""
    fn = losses.make_loss(_config(case), K_MAX, samples_per_class=3)

    def objective(emb, params, labels, learners, valid, masks, n_dim, rng):
        return fn(emb, labels, learners, valid, rng, params, n_dim=n_dim, masks=masks)

    value_and_grad = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)

    def step(*args):
        return value_and_grad(*args)

    step.__name__ = case  # chex tells functions apart by name and source
    return jax.jit(chex.assert_max_traces(step, n=1))


def _slices():
    masks = np.zeros((K_MAX, D))
    masks[0, :3], masks[1, 3:] = 1, 1  # learner 2 is inactive
    return masks


def _batch(seed=0, learners=None, labels=None, masks=None):
    """Learner views of random outputs: two learners (10 + 8) and two padding slots; class 1
    sits in both learners, so a cross-learner "positive" would show."""
    rng = np.random.default_rng(seed)
    if labels is None:
        labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4, 4, 5, 5, 1, 1, 1, 7, 7])
    if learners is None:
        learners = np.array([0] * 10 + [1] * 8 + [2, 2])
    masks = _slices() if masks is None else masks
    valid = np.arange(B) < 18
    out = rng.normal(size=(B, D))
    view = out * masks[learners]
    emb = view / np.maximum(np.linalg.norm(view, axis=1, keepdims=True), 1e-12)
    n_dim = (masks > 0).sum(1)[learners].astype(np.float64)
    return dict(emb=emb, labels=np.asarray(labels, np.int32),
                learners=np.asarray(learners, np.int32), valid=valid, masks=masks, n_dim=n_dim)


def _params(case, seed=0):
    params = losses.init_loss_params(_config(case), NUM_CLASSES, D, jax.random.key(seed))
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    if "beta" in params:  # distinct per-class betas, so a wrong index would show
        params["beta"] = params["beta"] + 0.1 * np.random.default_rng(seed).normal(
            size=params["beta"].shape)
    if "alpha" in params:
        params["alpha"] = np.float64(3.0)
    return params


def _run(case, batch, params, rng=0):
    (loss, aux), grads = _compiled(case)(batch["emb"], params, batch["labels"],
                                         batch["learners"], batch["valid"], batch["masks"],
                                         batch["n_dim"], jax.random.key(rng))
    return float(loss), jax.tree.map(np.asarray, aux), grads


# -- float64 references ----------------------------------------------------------------------

def _same(b, i, j):
    return b["valid"][i] and b["valid"][j] and b["learners"][i] == b["learners"][j]


def _dist(e):
    return np.sqrt(((e[:, None] - e[None]) ** 2).sum(-1) + 1e-8)


def _triplets(b, aux, cfg=None):
    """The triplets the reference sums over. Deterministic miners: its own, mined on float64
    distances from the embeddings (tests/reference_miners.py), which must be the set the loss
    mined. Distance-weighted sampling is random: the loss's own draws, checked to be legal
    (their distribution is tested in tests/test_miners.py)."""
    t = list(zip(aux["anchor_index"], aux["positive_index"], aux["negative_index"],
                 aux["triplet_valid"]))
    mined = [(int(a), int(p), int(n)) for a, p, n, ok in t if ok]
    for a, p, n in mined:
        assert _same(b, a, p) and _same(b, a, n) and p != a
        assert b["labels"][a] == b["labels"][p] != b["labels"][n]
    miner = cfg.miner if cfg is not None else "distance_weighted"
    if miner == "distance_weighted":
        return mined
    d, args = reference_miners.distances(b["emb"]), (b["labels"], b["learners"], b["valid"])
    own = {"semi_hard": lambda: reference_miners.semi_hard(d, *args),
           "batch_hard": lambda: reference_miners.batch_hard(d, *args),
           "all": lambda: reference_miners.all_triplets(*args),
           # samples_per_class=3 (_compiled): negatives_per_anchor 0 means M - 1 = 2.
           "easy_peasy": lambda: reference_miners.easy_peasy(d, *args, 2, cfg.cutoff,
                                                             cfg.easy_peasy_strict)}[miner]()
    assert sorted(mined) == sorted(own) and own, miner
    return own


def ref_margin(b, params, cfg, aux):
    dist = _dist(b["emb"])
    sums, counts, reg = np.zeros(K_MAX), np.zeros(K_MAX), np.zeros(K_MAX)
    for a, p, n in _triplets(b, aux, cfg):
        k = b["learners"][a]
        if cfg.beta_mode == "fixed":
            beta = cfg.beta
        elif cfg.beta_mode == "global":
            beta = params["beta"]
        else:
            beta = params["beta"][b["labels"][a]]
        pos = max(0.0, dist[a, p] - beta + cfg.margin)
        neg = max(0.0, beta - dist[a, n] + cfg.margin)
        sums[k] += pos + neg
        counts[k] += int(pos > 0) + int(neg > 0)
        reg[k] = reg[k] + abs(beta) if cfg.beta_mode == "per_class" else abs(beta)
    return np.where(counts > 0, (sums + cfg.nu * reg) / np.maximum(counts, 1), 0.0)


def ref_triplet(b, params, cfg, aux):
    dist = _dist(b["emb"])
    sums, counts = np.zeros(K_MAX), np.zeros(K_MAX)
    average = "valid" if cfg.miner in ("semi_hard", "all") else "nonzero"
    for a, p, n in _triplets(b, aux, cfg):
        diff = dist[a, p] - dist[a, n]
        term = np.log1p(np.exp(diff)) if cfg.soft else max(0.0, diff + cfg.margin)
        sums[b["learners"][a]] += term
        counts[b["learners"][a]] += 1 if average == "valid" else term > 0
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)


def ref_contrastive(b, params, cfg, aux):
    dist = _dist(b["emb"])
    sums, counts = np.zeros(K_MAX), np.zeros(K_MAX)
    for i, j in itertools.permutations(range(B), 2):
        if not _same(b, i, j):
            continue
        if b["labels"][i] == b["labels"][j]:
            term = max(0.0, dist[i, j] - cfg.pos_margin) ** 2
        else:
            term = max(0.0, cfg.neg_margin - dist[i, j]) ** 2
        sums[b["learners"][i]] += term
        counts[b["learners"][i]] += term > 0
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)


def ref_multi_similarity(b, params, cfg, aux):
    """The authors' loop, on each learner's sub-batch."""
    sim = b["emb"] @ b["emb"].T
    a_, b_, lam, eps = cfg.ms_alpha, cfg.ms_beta, cfg.ms_lambda, cfg.ms_epsilon
    sums, sizes = np.zeros(K_MAX), np.zeros(K_MAX)
    for i in range(B):
        if not b["valid"][i]:
            continue
        k = b["learners"][i]
        sizes[k] += 1
        pos = np.array([sim[i, j] for j in range(B) if j != i and _same(b, i, j)
                        and b["labels"][j] == b["labels"][i]])
        neg = np.array([sim[i, j] for j in range(B) if _same(b, i, j)
                        and b["labels"][j] != b["labels"][i]])
        if len(pos) == 0 or len(neg) == 0:
            continue
        kept_neg = neg[neg + eps > pos.min()]
        kept_pos = pos[pos - eps < neg.max()]
        if len(kept_neg) == 0 or len(kept_pos) == 0:
            continue
        sums[k] += (np.log1p(np.exp(-a_ * (kept_pos - lam)).sum()) / a_
                    + np.log1p(np.exp(b_ * (kept_neg - lam)).sum()) / b_)
    return np.where(sizes > 0, sums / np.maximum(sizes, 1), 0.0)


def _learner_proxies(params, masks, k):
    p = params["proxies"] * masks[k]
    return p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)


def ref_proxy_anchor(b, params, cfg, aux):
    alpha, delta = cfg.proxy_alpha, cfg.proxy_delta
    per = np.zeros(K_MAX)
    for k in range(K_MAX):
        rows = [i for i in range(B) if b["valid"][i] and b["learners"][i] == k]
        if not rows:
            continue
        s = b["emb"][rows] @ _learner_proxies(params, b["masks"], k).T
        y = b["labels"][rows]
        present = sorted(set(y))
        pos = sum(np.log1p(np.exp(-alpha * (s[y == c, c] - delta)).sum()) for c in present)
        neg = sum(np.log1p(np.exp(alpha * (s[y != c, c] + delta)).sum())
                  for c in range(NUM_CLASSES))
        per[k] = pos / len(present) + neg / NUM_CLASSES
    return per


def ref_normalized_softmax(b, params, cfg, aux):
    per = np.zeros(K_MAX)
    for k in range(K_MAX):
        rows = [i for i in range(B) if b["valid"][i] and b["learners"][i] == k]
        if rows:
            logits = b["emb"][rows] @ _learner_proxies(params, b["masks"], k).T / cfg.temperature
            log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
            per[k] = -np.mean(log_p[np.arange(len(rows)), b["labels"][rows]])
    return per


def ref_npairs(b, params, cfg, aux):
    """PAMI NPairsLoss on each learner's sub-batch."""
    per = np.zeros(K_MAX)
    for k in range(K_MAX):
        rows = [i for i in range(B) if b["valid"][i] and b["learners"][i] == k]
        losses_k = []
        for i in rows:
            others = [j for j in rows if j != i]
            pos = np.array([b["labels"][j] == b["labels"][i] for j in others], float)
            if pos.sum() == 0:
                continue
            logits = params["alpha"] * b["emb"][others] @ b["emb"][i]
            log_p = logits - np.log(np.exp(logits).sum())
            losses_k.append(-(log_p * pos / pos.sum()).sum())
        per[k] = np.mean(losses_k) if losses_k else 0.0
    return per


REFERENCES = {"margin": ref_margin, "triplet": ref_triplet, "contrastive": ref_contrastive,
              "multi_similarity": ref_multi_similarity, "proxy_anchor": ref_proxy_anchor,
              "normalized_softmax": ref_normalized_softmax, "npairs": ref_npairs}


# -- tests -----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_value_matches_reference_and_gradient_matches_finite_differences(case):
    cfg, b, params = _config(case), _batch(), _params(case)
    loss, aux, grads = _run(case, b, params)
    expected = REFERENCES[cfg.name](b, params, cfg, aux)
    np.testing.assert_allclose(aux["per_learner"], expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(loss, expected.sum(), rtol=1e-9)
    assert expected[:2].min() > 0 and aux["per_learner"][2] == 0
    assert aux["active"][:2].min() > 0 and aux["active"][2] == 0
    if cfg.name == "multi_similarity":  # its miner drops some pairs here
        same = (b["learners"][:, None] == b["learners"][None]) & b["valid"][:, None]
        assert 0 < aux["pairs"] < (same & b["valid"][None]).sum() - b["valid"].sum()

    # Directional finite differences through embeddings and loss parameters together.
    fd_rng = np.random.default_rng(1)
    for _ in range(2):
        v_emb = fd_rng.normal(size=b["emb"].shape)
        v_par = jax.tree.map(lambda a: fd_rng.normal(size=np.shape(a)), params)
        eps = 1e-6

        def shifted(sign, v_emb=v_emb, v_par=v_par):
            moved = dict(b, emb=b["emb"] + sign * eps * v_emb)
            return _run(case, moved, jax.tree.map(lambda p, v: p + sign * eps * v, params,
                                                  v_par))[0]

        fd = (shifted(1) - shifted(-1)) / (2 * eps)
        analytic = (np.sum(np.asarray(grads[0]) * v_emb)
                    + sum(np.sum(np.asarray(g) * v) for g, v in zip(
                        jax.tree.leaves(grads[1]), jax.tree.leaves(v_par))))
        assert abs(fd - analytic) <= 1e-6 * max(1.0, abs(fd)), (fd, analytic)
    if params:  # loss parameters do learn
        assert all(np.abs(np.asarray(g)).max() > 0 for g in jax.tree.leaves(grads[1]))


@pytest.mark.parametrize("case", CASES)
def test_each_learner_is_unaffected_by_the_others(case):
    b, params = _batch(2), _params(case)
    _, full, _ = _run(case, b, params)
    for k in (0, 1):
        alone = dict(b, valid=b["valid"] & (b["learners"] == k))
        _, aux, _ = _run(case, alone, params)
        np.testing.assert_allclose(aux["per_learner"][k], full["per_learner"][k], rtol=1e-12)
        assert aux["per_learner"][1 - k] == 0


PAIR_LOSSES = {"margin", "margin with learnt betas", "triplet", "multi_similarity", "npairs",
               "contrastive"}


def _degenerate_batches():
    """name: (batch, the losses that must give exactly 0 on it)."""
    base = _batch(3)
    collapsed = np.zeros((B, D))
    collapsed[:, 0] = 1.0  # every view identical: all distances 0 (sqrt at 0)
    # Class c at +-e_(c mod 6): different classes sit sqrt(2) or 2 apart.
    spread = np.eye(D)[base["labels"] % D] * np.where(base["labels"] < D, 1.0, -1.0)[:, None]
    one_per_learner = np.zeros(B, bool)
    one_per_learner[[0, 10, 18]] = True
    return {
        "every slot invalid": (dict(base, valid=np.zeros(B, bool)),
                               {*losses.LOSSES, "margin with learnt betas"}),
        "one class": (dict(base, labels=np.zeros(B, np.int32)),
                      {"margin", "margin with learnt betas", "triplet", "multi_similarity"}),
        "no positive pair": (dict(base, labels=np.arange(B, dtype=np.int32) % NUM_CLASSES),
                             {"margin", "margin with learnt betas", "triplet",
                              "multi_similarity", "npairs"}),
        "one example per learner": (dict(base, valid=one_per_learner), PAIR_LOSSES),
        "collapsed embedding": (dict(base, emb=collapsed, masks=np.ones((K_MAX, D)),
                                     n_dim=np.full(B, float(D))), set()),
        # Positives at distance 0, negatives beyond both cutoffs (0.5, 1.4): no margin is
        # violated for beta = 1.2 or the test's contrastive margins (0.1, 1.2).
        "negatives beyond the cutoffs": (dict(base, emb=spread, masks=np.ones((K_MAX, D)),
                                              n_dim=np.full(B, float(D))),
                                         {"margin", "contrastive"}),
    }


@pytest.mark.parametrize("case", CASES)
def test_degenerate_batches_are_finite(case):
    params = _params(case)
    name = CASES[case]["name"]
    if CASES[case].get("beta_mode", "fixed") != "fixed":
        name = "margin with learnt betas"  # its test betas are random around 1.2
    for what, (b, zero_for) in _degenerate_batches().items():
        loss, aux, grads = _run(case, b, params)
        assert np.isfinite(loss) and np.isfinite(aux["per_learner"]).all(), (case, what)
        assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads)), (case, what)
        if name in zero_for:
            assert loss == 0.0, (case, what, loss)
            assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads)), (case, what)


def test_one_trace_across_learner_assignments_and_masks():
    """K = 1, 2, 3 learners, learners switching, masks changing: values change, the compiled
    function does not (each `_compiled` fails on a second trace)."""
    assignments = [np.zeros(B, np.int32), np.repeat(np.arange(2), B // 2),
                   np.arange(B) % 3, (np.arange(B) % 3)[::-1]]
    for case in CASES:
        params = _params(case)
        values = set()
        for i, learners in enumerate(assignments):
            masks = np.ones((K_MAX, D)) if i == 0 else _slices()
            loss, aux, _ = _run(case, _batch(4, learners=learners, masks=masks), params)
            assert np.isfinite(loss)
            values.add(round(loss, 12))
        assert len(values) == len(assignments), case


def test_loss_parameters_groups_and_config_errors():
    def config(**overrides):
        return ml_collections.ConfigDict({**defaults.get_config().loss.to_dict(),
                                          **overrides})

    key = jax.random.key(0)
    assert losses.init_loss_params(config(), 5, 4, key) == {}  # fixed beta: nothing to learn
    shapes = {
        ("margin", "global"): {"beta": ()}, ("margin", "per_class"): {"beta": (5,)},
        ("proxy_anchor", "fixed"): {"proxies": (5, 4)},
        ("normalized_softmax", "fixed"): {"proxies": (5, 4)}, ("npairs", "fixed"): {"alpha": ()},
        ("triplet", "fixed"): {}, ("contrastive", "fixed"): {}, ("multi_similarity", "fixed"): {},
    }
    rates = losses.loss_learning_rates(config())
    for (name, mode), expected in shapes.items():
        params = losses.init_loss_params(config(name=name, beta_mode=mode), 5, 4, key)
        assert jax.tree.map(np.shape, params) == expected
        labels = losses.loss_param_labels(params)
        assert jax.tree.structure(labels) == jax.tree.structure(params)
        assert all(group in rates for group in jax.tree.leaves(labels))
    # make_loss also works from a config that only names the loss (defaults fill the rest).
    losses.make_loss(ml_collections.ConfigDict({"name": "triplet"}), 2, 4)
    for bad in (dict(name="arcface"), dict(miner="hardest"), dict(beta_mode="learned"),
                dict(triplet_average="max", name="triplet")):
        with pytest.raises(ValueError):
            losses.make_loss(config(**bad), 2, 4)
    with pytest.raises(ValueError):
        losses.init_loss_params(config(name="proxy_anchor"), None, 4, key)

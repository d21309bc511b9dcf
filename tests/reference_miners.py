"""Plain-python references of the deterministic miners (docs/method.md §3.2-3.4), on float64
distances computed from the embeddings here: shared by tests/test_miners.py (the miners) and
tests/test_losses.py (the losses mine their own triplets, not the project's)."""
import itertools

import numpy as np


def distances(emb):
    """Euclidean distances in float64, floored at 1e-2 (the official samplers'
    sqrt(max(d^2, 1e-4))), from the embeddings themselves."""
    e = np.asarray(emb, np.float64)
    return np.sqrt(np.maximum(((e[:, None] - e[None]) ** 2).sum(-1), 1e-4))


def groups(labels, learners, valid):
    """(same learner, positives, negatives) per slot; pairs only inside one learner."""
    b = len(labels)
    same = [[bool(valid[i] and valid[j] and learners[i] == learners[j]) for j in range(b)]
            for i in range(b)]
    pos = [[j for j in range(b) if same[i][j] and j != i and labels[j] == labels[i]]
           for i in range(b)]
    neg = [[j for j in range(b) if same[i][j] and labels[j] != labels[i]] for i in range(b)]
    return same, pos, neg


def easy_peasy(d, labels, learners, valid, k, cutoff, strict):
    """The official EasyPeasyPairsSampler on each learner's sub-batch (PAMI per-anchor
    truncation); `strict` drops penalised picks before pairing."""
    same, pos, _ = groups(labels, learners, valid)
    out = []
    for i in range(len(labels)):
        if not valid[i]:
            continue
        members = [j for j in range(len(labels)) if same[i][j]]
        penalty = {j: 1e6 * (j in pos[i] or j == i or d[i, j] < cutoff) for j in members}
        picked = sorted(members, key=lambda j: d[i, j] + penalty[j])[:k]
        if strict:
            picked = [j for j in picked if not penalty[j]]
        negs = sorted(picked)  # the official code lists a 0/1 mask's nonzero entries
        out += [(i, p, n) for p, n in zip(pos[i], negs)]
    return out


def semi_hard(d, labels, learners, valid):
    """Per (anchor, positive): the nearest negative farther than the positive, else the
    farthest negative."""
    _, pos, neg = groups(labels, learners, valid)
    out = []
    for a in range(len(labels)):
        for p in pos[a]:
            if not neg[a]:
                continue
            farther = [n for n in neg[a] if d[a, n] > d[a, p]]
            n = min(farther, key=lambda n: d[a, n]) if farther else max(neg[a],
                                                                         key=lambda n: d[a, n])
            out.append((a, p, n))
    return out


def batch_hard(d, labels, learners, valid):
    """Per anchor: its farthest positive and nearest negative."""
    _, pos, neg = groups(labels, learners, valid)
    return [(a, max(pos[a], key=lambda p: d[a, p]), min(neg[a], key=lambda n: d[a, n]))
            for a in range(len(labels)) if pos[a] and neg[a]]


def all_triplets(labels, learners, valid):
    _, pos, neg = groups(labels, learners, valid)
    return [(a, p, n) for a in range(len(labels)) for p, n in itertools.product(pos[a], neg[a])]

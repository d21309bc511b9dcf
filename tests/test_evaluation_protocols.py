"""Tests for dnc_jax.evaluation.protocols against direct float64 numpy implementations."""
import numpy as np
import pytest

from dnc_jax.evaluation import clustering, protocols
from dnc_jax.evaluation.retrieval import retrieval_metrics
from tests.test_retrieval import (assert_metrics_equal, reference_metrics, reference_recall,
                                  tied_embeddings)


def _data(seed, n, n_classes, dim=2, high=3):
    rng = np.random.default_rng(seed)
    return tied_embeddings(rng, n, dim=dim, high=high), rng.integers(0, n_classes, size=n)


@pytest.mark.parametrize("name, ks", [("cub", (1, 2, 4, 8)), ("cars", (1, 2, 4, 8)),
                                      ("sop", (1, 10, 100, 1000)), ("loo", (1, 2, 4, 8))])
def test_leave_one_out_protocols(name, ks):
    x, y = _data(20, 64, 10)
    result = protocols.evaluate(name, {"test": (x, y), "train": (x[:3], y[:3])},
                                map_at_r=True, block_size=24)
    assert_metrics_equal(result.metrics, reference_metrics(x, y, ks=ks))
    assert "leave-one-out" in result.protocol and "64 images (10 classes)" in result.protocol
    assert "marp_official" in result.protocol


def test_inshop_query_against_gallery():
    xq, yq = _data(21, 40, 8, dim=3)
    xg, yg = _data(22, 50, 8, dim=3)
    xg[:5] = xq[:5]
    result = protocols.evaluate("inshop", {"query": (xq, yq), "gallery": (xg, yg)},
                                map_at_r=True, block_size=16)
    assert_metrics_equal(result.metrics,
                         reference_metrics(xq, yq, xg, yg, ks=(1, 10, 20, 30, 40, 50)))
    assert "'query'" in result.protocol and "'gallery'" in result.protocol


def direct_one_per_id(labels, seed):
    """Per identity, the gallery image is its first row in default_rng(seed).permutation(N)."""
    order = np.random.default_rng(seed).permutation(len(labels))
    gallery = []
    for identity in np.unique(labels):
        gallery.append(next(i for i in order if labels[i] == identity))
    gallery = np.sort(gallery)
    return np.setdiff1d(np.arange(len(labels)), gallery), gallery


def test_one_gallery_image_per_id_matches_direct_draw():
    _, y = _data(23, 70, 9)
    y[0] = 99  # a single-image identity: gallery only
    for seed in range(4):
        query, gallery = protocols.one_gallery_image_per_id(y, seed)
        want_q, want_g = direct_one_per_id(y, seed)
        np.testing.assert_array_equal(query, want_q)
        np.testing.assert_array_equal(gallery, want_g)
        assert sorted(y[gallery]) == sorted(np.unique(y))  # exactly one per identity


def test_vehicleid_both_protocols_on_every_list():
    x, y = _data(24, 90, 12)
    splits = {"train": (x, y), "test_small": (x[:40], y[:40]), "test_large": (x, y)}
    result = protocols.evaluate("vehicleid", splits, gallery_draws=4, map_at_r=True,
                                block_size=32)
    for name, n in (("small", 40), ("large", 90)):
        xs, ys = x[:n], y[:n]
        loo = reference_metrics(xs, ys, ks=(1, 5))
        for key, value in loo.items():
            want = value if key.startswith("recall") else pytest.approx(value, rel=1e-6)
            assert result.metrics[f"{name}/loo/{key}"] == want
        draws = []
        for seed in range(4):
            q, g = direct_one_per_id(ys, seed)
            draws.append(reference_recall(xs[q], ys[q], xs[g], ys[g], ks=(1, 5)))
        for k in (1, 5):
            values = [d[k] for d in draws]
            assert result.metrics[f"{name}/one_per_id/recall@{k}"] == pytest.approx(np.mean(values))
            assert result.metrics[f"{name}/one_per_id/recall@{k}_std"] == pytest.approx(
                np.std(values))
    assert not any(key.startswith("medium") for key in result.metrics)
    assert "4 draws with seeds 0-3" in result.protocol


def test_vehicleid_training_split_is_test():
    x, y = _data(25, 30, 5)
    result = protocols.evaluate("vehicleid", {"test": (x, y)}, gallery_draws=1)
    assert set(result.metrics) == {f"test/{p}/recall@{k}{s}" for p, s in
                                   (("loo", ""), ("one_per_id", ""), ("one_per_id", "_std"))
                                   for k in (1, 5)}


def test_nmi_flag_and_ks_override():
    rng = np.random.default_rng(26)
    centres = rng.normal(size=(4, 8)) * 20
    y = np.repeat(np.arange(4), 10)
    x = (centres[y] + rng.normal(size=(40, 8)) * 0.1).astype(np.float32)
    result = protocols.evaluate("cub", {"test": (x, y)}, ks=(1, 3), nmi=True, nmi_seeds=(0, 1))
    assert set(result.metrics) == {"recall@1", "recall@3", "nmi", "nmi_std"}
    nmi = clustering.normalized_mutual_information(x, y, seeds=(0, 1))
    assert (result.metrics["nmi"], result.metrics["nmi_std"]) == (nmi.mean, nmi.std)
    assert "seeds 0/1" in result.protocol
    got = protocols.evaluate("loo", {"test": (x, y)}, ks=(2,)).metrics
    assert got == retrieval_metrics(x, y, ks=(2,), map_at_r=False)


def test_protocol_for_dataset():
    assert protocols.protocol_for_dataset("sop") == "sop"
    assert protocols.protocol_for_dataset("tfds", "cars196") == "cars"
    assert protocols.protocol_for_dataset("csv", split_names=("train", "query", "gallery")) \
        == "query_gallery"
    assert protocols.protocol_for_dataset("glyphs", split_names=("train", "test")) == "loo"
    assert set(protocols.PROTOCOLS) >= {"cub", "cars", "sop", "inshop", "vehicleid", "loo"}


def test_errors_name_the_problem():
    x, y = _data(27, 10, 2)
    with pytest.raises(ValueError, match="unknown evaluation protocol 'nope'"):
        protocols.evaluate("nope", {"test": (x, y)})
    with pytest.raises(ValueError, match="needs the 'gallery' split"):
        protocols.evaluate("inshop", {"query": (x, y)})


def test_format_table_groups_by_prefix():
    table = protocols.format_table({"large/loo/recall@1": 0.9401, "large/loo/recall@5": 0.9618,
                                    "large/one_per_id/recall@1": 0.8})
    assert table.splitlines() == [
        "| | recall@1 | recall@5 |",
        "|---|---|---|",
        "| large/loo | 94.01 | 96.18 |",
        "| large/one_per_id | 80.00 | - |",
    ]
    assert protocols.format_table({"recall@1": 0.5}).splitlines()[-1] == "| all | 50.00 |"

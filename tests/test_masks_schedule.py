"""Learner masks (slices) and the phase schedule."""
import ml_collections
import numpy as np

from dnc_jax.divide import masks, schedule


def test_contiguous_slices_partition_the_embedding():
    s = masks.contiguous_slices(3, 5, 10)   # ceil(10/3) = 4 -> blocks 4, 4, 2
    np.testing.assert_array_equal(s.sum(1), [4, 4, 2, 0, 0])
    np.testing.assert_array_equal(s[:3].sum(0), np.ones(10))
    assert (s[:3].argmax(1) == [0, 4, 8]).all()


def test_sliced_output_is_the_concatenation_of_normalised_blocks():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(5, 12))
    got = np.asarray(masks.sliced_output(e.astype(np.float32), masks.contiguous_slices(3, 4, 12)))
    blocks = [b / np.linalg.norm(b, axis=1, keepdims=True) for b in np.split(e, 3, axis=1)]
    np.testing.assert_allclose(got, np.concatenate(blocks, axis=1), rtol=1e-5)
    # K=1 is the plain normalised embedding.
    one = np.asarray(masks.sliced_output(e.astype(np.float32), masks.contiguous_slices(1, 4, 12)))
    np.testing.assert_allclose(one, e / np.linalg.norm(e, axis=1, keepdims=True), rtol=1e-5)


def test_learner_view_is_its_normalised_block():
    rng = np.random.default_rng(1)
    out = rng.normal(size=(4, 8)).astype(np.float32)
    s = masks.contiguous_slices(2, 2, 8)
    view = np.asarray(masks.learner_view(out, s, np.array([0, 1, 1, 0])))
    np.testing.assert_allclose(view[1, :4], 0)
    np.testing.assert_allclose(view[1, 4:], out[1, 4:] / np.linalg.norm(out[1, 4:]), rtol=1e-5)


def _cvpr():
    c = ml_collections.ConfigDict(dict(num_learners=8, recluster_every=2,
                                       full_embedding_epoch=80, finetune_epoch=190))
    return c


def test_cvpr_schedule_matches_method_md():
    c = _cvpr()
    plan = [schedule.phase(c, e) for e in range(200)]
    # Clustering before epoch 0, reclustering at 2, 4, ..., 188 (docs/method.md §1.2).
    assert [p.epoch for p in plan if p.recluster] == [0] + list(range(2, 190, 2))
    assert all(p.num_learners == 8 for p in plan[:190])
    assert all(p.num_learners == 1 and p.whole_dataset for p in plan[190:])
    assert [p.full_embedding for p in plan] == [e >= 80 for e in range(200)]
    assert schedule.needs_new_assignment(c, 190)       # finetune: one cluster, all data
    assert not schedule.needs_new_assignment(c, 191)
    assert not schedule.needs_new_assignment(c, 3)


def test_one_learner_is_the_baseline():
    c = _cvpr()
    c.num_learners = 1
    plan = [schedule.phase(c, e) for e in range(200)]
    assert not any(p.recluster for p in plan)
    assert all(p.num_learners == 1 and p.whole_dataset for p in plan)


def _pami():
    return ml_collections.ConfigDict(dict(schedule="pami", num_learners=32, recluster_every=2,
                                          freeze_epochs=1, full_embedding_epoch=80,
                                          finetune_epoch=-1))


def test_pami_schedule_matches_method_md():
    c = _pami()
    plan = [schedule.phase(c, e) for e in range(180)]
    # K = 1 (e=0,1), 2 (e=2), 4 (e=4), 8 (e=6), 16 (e=8), 32 from e=10 (docs/method.md §1.3).
    assert [p.num_learners for p in plan[:12]] == [1, 1, 2, 2, 4, 4, 8, 8, 16, 16, 32, 32]
    assert all(p.num_learners == 32 for p in plan[10:])
    assert [p.epoch for p in plan if p.split] == [2, 4, 6, 8, 10]
    # Every even epoch reclusters (epoch 0 included, into one cluster) and freezes the backbone,
    # for the whole run, the full-embedding phase included.
    assert [p.epoch for p in plan if p.recluster] == list(range(0, 180, 2))
    assert [p.freeze_backbone for p in plan] == [e % 2 == 0 for e in range(180)]
    assert [p.full_embedding for p in plan] == [e >= 80 for e in range(180)]
    assert not any(p.whole_dataset for p in plan)


def test_pami_schedule_rejects_a_final_k_that_is_not_a_power_of_two():
    c = _pami()
    c.num_learners = 12
    try:
        schedule.phase(c, 0)
    except ValueError as e:
        assert "divide.num_learners=12" in str(e)
    else:
        raise AssertionError("no error")


def test_grow_copies_each_parent_into_its_two_children():
    m = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    grown = np.asarray(masks.grow(m, 2))        # K 2 -> 4
    np.testing.assert_array_equal(grown[:4], m[[0, 0, 1, 1]])
    np.testing.assert_array_equal(grown[4:], m[4:])
    np.testing.assert_array_equal(np.asarray(masks.grow(m, 4)), m[[0, 0, 1, 1, 2, 2, 3, 3]])


def test_orthogonality_penalty_matches_a_direct_mean_of_cosines():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(6, 5)).astype(np.float32)
    k = 4
    r = np.maximum(m[:k], 0).astype(np.float64)
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    want = np.mean([r[i] @ r[j] for i in range(k) for j in range(k) if i != j])
    assert abs(float(masks.orthogonality_penalty(m, k)) - want) < 1e-6
    assert float(masks.orthogonality_penalty(m, 1)) == 0.0


def test_learning_rates_per_phase_decay_freeze_and_masks():
    from dnc_jax.configs import default
    from dnc_jax.training import optim

    c = default.get_config()
    c.optim.lr_decay_every = 30
    c.optim.lr_decay_factor = 0.5
    c.divide.masks = "learned"
    base = {"backbone": 1e-5, "head": 1e-5, "masks": 1e-3}
    frozen = schedule.Phase(65, 8, True, False, False, False, True)
    rates = optim.group_learning_rates(c, frozen, base)
    assert rates == {"backbone": 0.0, "head": 1e-5 * 0.25, "masks": 1e-3 * 0.25}
    conquer = schedule.Phase(10, 8, False, False, False, True, False)
    rates = optim.group_learning_rates(c, conquer, base)
    assert rates["masks"] == 0.0 and rates["backbone"] == 1e-5


def test_cvpr_finetune_keeps_the_models_k_output_blocks():
    """The official model fixes its K normalised output blocks when it is built; the one-learner
    finetune (epoch >= 190) trains their renormalised concatenation and evaluates on it."""
    from dnc_jax.configs import default

    config = default.get_config()  # K=8, d=128, full embedding from 80, finetune from 190
    before = masks.phase_arrays(config, schedule.phase(config.divide, 189))
    during = masks.phase_arrays(config, schedule.phase(config.divide, 190))
    assert int(during["num_learners"]) == 1 and np.all(during["masks"] == 1)
    np.testing.assert_array_equal(during["slices"], before["slices"])
    np.testing.assert_array_equal(during["slices"].sum(axis=1), [16] * 8)
    e = np.random.default_rng(0).normal(size=(3, 128)).astype(np.float32)
    out = np.asarray(masks.sliced_output(e, during["slices"]))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), np.sqrt(8), rtol=1e-6)

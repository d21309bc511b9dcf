"""One compiled train step serves every learner, K, reclustering and phase."""
import chex
import jax
import jax.numpy as jnp
import numpy as np

from dnc_jax import optim, parallel, steps
from dnc_jax.divide import masks as masks_lib
from dnc_jax.losses import make_loss
from dnc_jax.models.embedder import make_embedder
from dnc_jax.models.variables import initial_variables
from tests.helpers import tiny_config


def _initial_state(config, model, optimizer, num_learners):
    params, batch_stats = initial_variables(model, config.model, num_learners,
                                            jax.random.key(0), config.augment.image_size)
    return steps.create_train_state(params, batch_stats, optimizer)


def test_train_step_traces_once_across_learners_reclustering_and_phases():
    config = tiny_config()
    k_max, dim, b = 4, config.model.embedding_dim, config.data.batch_size
    mesh = parallel.make_mesh()
    model = make_embedder(config.model, jnp.float32)
    optimizer = optim.make_optimizer(config.optim)
    loss_fn = make_loss(config.loss, k_max, config.data.samples_per_class)
    step = jax.jit(chex.assert_max_traces(
        steps.make_train_step(model, optimizer, loss_fn, config.augment), n=1),
        donate_argnums=(0,))
    state = parallel.put_replicated(_initial_state(config, model, optimizer, k_max), mesh)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (b, 16, 16, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(b // 4), 4).astype(np.int32)
    phases = [  # (K, learner of each slot, full embedding?)
        (1, np.zeros(b, np.int32), False),
        (2, np.repeat(np.arange(2), b // 2).astype(np.int32), False),   # a reclustering
        (4, np.repeat(np.arange(4), b // 4).astype(np.int32), False),   # K grows
        (4, np.repeat(np.arange(4), b // 4)[::-1].astype(np.int32), False),  # learners switch
        (4, np.repeat(np.arange(4), b // 4).astype(np.int32), True),    # conquer
    ]
    before = jax.device_get(state.params)
    for k, learners, full in phases:
        slices = masks_lib.contiguous_slices(k, k_max, dim)
        masks = masks_lib.full_embedding_masks(k_max, dim) if full else slices
        batch = {"images": images, "labels": labels, "learners": learners,
                 "valid": np.ones(b, bool)}
        state, metrics = step(state, parallel.put_batch(batch, mesh), slices, masks,
                              jax.random.key(1))
        assert np.isfinite(float(metrics["loss"]))
        per_learner = np.asarray(metrics["loss_per_learner"])
        assert (per_learner[k:] == 0).all() and (per_learner[:k] > 0).any()
    assert int(state.step) == len(phases)
    after = jax.device_get(state.params)
    assert not np.allclose(before["head"]["kernel"], after["head"]["kernel"])


def test_frozen_batchnorm_keeps_statistics_and_trains_scale():
    config = tiny_config()
    config.model.bn_frozen = True
    model = make_embedder(config.model, jnp.float32)
    optimizer = optim.make_optimizer(config.optim)
    step = jax.jit(steps.make_train_step(
        model, optimizer, make_loss(config.loss, 1, 4), config.augment))
    state = _initial_state(config, model, optimizer, 1)
    b = config.data.batch_size
    batch = {"images": np.random.default_rng(0).integers(0, 256, (b, 16, 16, 3), np.uint8),
             "labels": np.repeat(np.arange(b // 4), 4), "learners": np.zeros(b, np.int32),
             "valid": np.ones(b, bool)}
    ones = masks_lib.contiguous_slices(1, 1, config.model.embedding_dim)
    new, _ = step(state, batch, ones, ones, jax.random.key(0))
    chex.assert_trees_all_equal(new.batch_stats, state.batch_stats)
    scale_before = state.params["backbone"]["bn1"]["scale"]
    assert not np.allclose(scale_before, new.params["backbone"]["bn1"]["scale"])

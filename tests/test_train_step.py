"""One compiled train step serves every learner, K, reclustering, mask growth and phase."""
import chex
import jax
import jax.numpy as jnp
import numpy as np

from dnc_jax.training import optim, steps
from dnc_jax import parallel
from dnc_jax.divide import masks as masks_lib
from dnc_jax.divide import schedule
from dnc_jax.losses import make_loss
from dnc_jax.models.embedder import make_embedder
from tests.helpers import tiny_config


def _trainer_parts(config, k_max):
    model = make_embedder(config.model, jnp.float32)
    optimizer = optim.make_optimizer(config.optim)
    loss_fn = make_loss(config.loss, k_max, config.data.samples_per_class)
    return model, optimizer, loss_fn


def _state(config, model, optimizer, k_max, learned):
    from dnc_jax.models.variables import initial_variables

    model_params, stats = initial_variables(model, config.model, k_max, jax.random.key(0),
                                            config.augment.image_size)
    params = {"model": model_params}
    if learned:
        params["masks"] = masks_lib.init_learned_masks(None, k_max, config.model.embedding_dim)
    return steps.create_train_state(params, stats, optimizer)


def _batch(b, learners):
    rng = np.random.default_rng(0)
    return {"images": rng.integers(0, 256, (b, 16, 16, 3), dtype=np.uint8),
            "labels": np.repeat(np.arange(b // 4), 4).astype(np.int32),
            "learners": learners.astype(np.int32), "valid": np.ones(b, bool)}


def test_cvpr_step_traces_once_across_learners_reclustering_and_phases():
    config = tiny_config()
    k_max, b = 4, config.data.batch_size
    config.divide.num_learners = k_max
    mesh = parallel.make_mesh()
    model, optimizer, loss_fn = _trainer_parts(config, k_max)
    step = jax.jit(chex.assert_max_traces(
        steps.make_train_step(model, optimizer, loss_fn, config.augment), n=1),
        donate_argnums=(0,))
    state = parallel.put_replicated(_state(config, model, optimizer, k_max, False), mesh)
    before = jax.device_get(state.params)
    plan = [  # (K, learner of each slot, full embedding?)
        (1, np.zeros(b), False),
        (2, np.repeat(np.arange(2), b // 2), False),     # a reclustering
        (4, np.repeat(np.arange(4), b // 4), False),     # K grows
        (4, np.repeat(np.arange(4), b // 4)[::-1], False),  # learners switch
        (4, np.repeat(np.arange(4), b // 4), True),      # conquer
    ]
    for k, learners, full in plan:
        phase = schedule.Phase(0, k, False, False, False, full, False)
        arrays = masks_lib.phase_arrays(config, phase)
        state, metrics = step(state, parallel.put_batch(_batch(b, learners), mesh), arrays,
                              jax.random.key(1))
        assert np.isfinite(float(metrics["loss"]))
        per_learner = np.asarray(metrics["loss_per_learner"])
        assert (per_learner[k:] == 0).all() and (per_learner[:k] > 0).any()
    assert int(state.step) == len(plan)
    after = jax.device_get(state.params)
    assert not np.allclose(before["model"]["head"]["kernel"], after["model"]["head"]["kernel"])


def test_pami_learned_masks_train_grow_and_freeze_without_retracing():
    config = tiny_config()
    k_max, b = 4, config.data.batch_size
    config.divide.num_learners = k_max
    config.divide.masks = "learned"
    model, optimizer, loss_fn = _trainer_parts(config, k_max)
    step = jax.jit(chex.assert_max_traces(
        steps.make_train_step(model, optimizer, loss_fn, config.augment), n=1))
    state = _state(config, model, optimizer, k_max, True)
    base = optim.base_learning_rates(config.optim)

    def run(state, k, full=False, freeze=False):
        phase = schedule.Phase(0, k, False, False, False, full, freeze)
        rates = optim.group_learning_rates(config, phase, base)
        state = state.replace(opt_state=optim.set_learning_rates(state.opt_state, rates))
        learners = np.repeat(np.arange(k), b // k)
        return step(state, _batch(b, learners), masks_lib.phase_arrays(config, phase),
                    jax.random.key(2))

    masks0 = np.asarray(state.params["masks"])
    state, m = run(state, 2)
    masks1 = np.asarray(state.params["masks"])
    assert not np.allclose(masks0[:2], masks1[:2])     # the active learners' masks learn
    assert float(m["orthogonality"]) > 0.9              # identical ones-masks: cosine 1
    # Growth: children copy their parent, the mask moments restart.
    grown = dict(state.params, masks=masks_lib.grow(state.params["masks"], 2))
    opt_state = optim.reset_group(state.opt_state, optimizer, grown, "masks")
    state = state.replace(params=grown, opt_state=opt_state)
    np.testing.assert_array_equal(np.asarray(grown["masks"])[[0, 1, 2, 3]], masks1[[0, 0, 1, 1]])
    # A frozen backbone does not move; the head does.
    backbone = jax.tree.map(np.asarray, state.params["model"]["backbone"])
    state, _ = run(state, 4, freeze=True)
    chex.assert_trees_all_equal(backbone, jax.tree.map(np.asarray,
                                                       state.params["model"]["backbone"]))
    # Conquering: masks are out of the optimiser.
    masks2 = np.asarray(state.params["masks"])
    state, m = run(state, 4, full=True)
    np.testing.assert_array_equal(masks2, np.asarray(state.params["masks"]))
    assert np.isfinite(float(m["loss"]))


def test_frozen_batchnorm_keeps_statistics_and_trains_scale():
    config = tiny_config()
    config.model.bn_frozen = True
    config.divide.num_learners = 1
    model, optimizer, loss_fn = _trainer_parts(config, 1)
    step = jax.jit(steps.make_train_step(model, optimizer, loss_fn, config.augment))
    state = _state(config, model, optimizer, 1, False)
    b = config.data.batch_size
    arrays = masks_lib.phase_arrays(config, schedule.phase(config.divide, 0))
    new, _ = step(state, _batch(b, np.zeros(b)), arrays, jax.random.key(0))
    chex.assert_trees_all_equal(new.batch_stats, state.batch_stats)
    scale_before = state.params["model"]["backbone"]["bn1"]["scale"]
    assert not np.allclose(scale_before, new.params["model"]["backbone"]["bn1"]["scale"])

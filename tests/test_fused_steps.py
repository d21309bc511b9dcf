"""Several optimiser steps in one compiled call (`steps.make_multi_step`, `steps_per_call`): the
same parameters and optimiser state as one call per step, for round robin's learner turns, in
the training loop, and resumed inside a round.

float32 on the CPU; the scan compiles the step's body once as a loop, so XLA may order float
sums differently from the stand-alone step: one call of K steps is held to 1e-6 in every leaf,
not bitwise. Over a whole epoch (20 steps) Adam turns those last-bit differences into more, since
m / sqrt(v) rescales a near-zero gradient's noise to a full step of the learning rate, and a
sampled negative or a hinge eventually flips: measured at the demo's rate 1e-3, 1e-4 apart in the
parameters after 20 steps, and with distance-weighted sampling the losses part at step 14. So the
loop tests train at the papers' rate, 1e-5, with a loss that samples nothing (contrastive):
parameters within 1e-6 (measured 3e-8, while training moved them 2e-4), optimiser moments within
LOOP_MOMENT_RTOL of their scale (measured 9e-6).
"""
import chex
import jax
import numpy as np
import pytest

from dnc_jax import parallel
from dnc_jax.training import steps, train
from dnc_jax.training import trainer as trainer_lib
from dnc_jax.data import sampling
from dnc_jax.data import sources
from dnc_jax.divide import masks as masks_lib
from dnc_jax.divide import schedule
from tests.helpers import tiny_config
from tests.test_train_step import _batch, _state, _trainer_parts

K = 4
TOLERANCE = 1e-6
LOOP_MOMENT_RTOL = 1e-4


def _max_abs_diff(a, b):
    diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64)
                                                          - np.asarray(y, np.float64)),
                                                   initial=0.0)),
                         jax.device_get(a), jax.device_get(b))
    return max(jax.tree.leaves(diffs))


def _max_rel_diff(a, b):
    """Per leaf, the largest difference over the leaf's largest magnitude; the worst leaf."""
    diffs = jax.tree.map(
        lambda x, y: _max_abs_diff(x, y) / max(float(np.max(np.abs(np.asarray(y)), initial=0.0)),
                                               1e-30), jax.device_get(a), jax.device_get(b))
    return max(jax.tree.leaves(diffs))


def _assert_same_state(got, want, moment_rtol=None):
    assert int(got.step) == int(want.step)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert _max_abs_diff(got.params, want.params) <= TOLERANCE
    assert _max_abs_diff(got.batch_stats, want.batch_stats) <= TOLERANCE
    if moment_rtol is None:
        assert _max_abs_diff(got.opt_state, want.opt_state) <= TOLERANCE
    else:
        assert _max_rel_diff(got.opt_state, want.opt_state) <= moment_rtol


def test_one_fused_call_equals_k_round_robin_steps():
    config = tiny_config()
    config.divide.num_learners = K
    b = config.data.batch_size
    model, optimizer, loss_fn = _trainer_parts(config, K)
    one_step = steps.make_train_step(model, optimizer, loss_fn, config.augment)
    single = jax.jit(chex.assert_max_traces(one_step, n=1))
    fused = jax.jit(chex.assert_max_traces(steps.make_multi_step(one_step), n=1))
    phase = masks_lib.phase_arrays(config, schedule.Phase(0, K, False, False, False, False,
                                                          False))
    rng = jax.random.key(3)
    # A round: every batch belongs to one learner, learners take turns (different images each).
    round_batches = []
    for k in range(K):
        batch = _batch(b, np.full(b, k))
        batch["images"] = np.roll(batch["images"], 17 * k, axis=0)
        round_batches.append(batch)

    state = _state(config, model, optimizer, K, False)
    want_metrics = []
    for batch in round_batches:
        state, metrics = single(state, batch, phase, rng)
        want_metrics.append(metrics)
    got, stacked = fused(_state(config, model, optimizer, K, False), tuple(round_batches),
                         phase, rng)
    _assert_same_state(got, state)
    assert stacked["loss"].shape == (K,)
    np.testing.assert_allclose(stacked["loss"], [m["loss"] for m in want_metrics], atol=1e-6)
    np.testing.assert_allclose(stacked["loss_per_learner"],
                               np.stack([m["loss_per_learner"] for m in want_metrics]),
                               atol=1e-6)
    # A second round (other learners' order) reuses the compiled call.
    fused(got, tuple(round_batches[::-1]), phase, rng)


@pytest.fixture(scope="module")
def glyphs(tmp_path_factory):
    config = _loop_config(1)
    config.data.cache_dir = str(tmp_path_factory.mktemp("cache"))
    return config.data.cache_dir, sources.load_dataset(config.data)


def _loop_config(steps_per_call):
    config = tiny_config()
    # Nothing sampled and the papers' rate (module docstring); the single-call test above
    # keeps the margin loss with its sampling and the demo's rate.
    config.loss.name = "contrastive"
    config.optim.backbone.learning_rate = config.optim.head.learning_rate = 1e-5
    config.divide.learner_schedule = "round_robin"
    config.divide.num_learners = K
    config.data.batch_size = 16
    config.steps_per_call = steps_per_call
    return config


def _epoch(glyphs, steps_per_call, start_from=None):
    """(state, history) after epoch 0 of a round-robin run; `start_from` = (state, history) of
    the steps already made, as a resumed run has them."""
    cache_dir, datasets = glyphs
    config = _loop_config(steps_per_call)
    config.data.cache_dir = cache_dir
    trainer = train.Trainer(config, datasets, parallel.make_mesh())
    labels = datasets["train"].labels
    assignment = (labels % K).astype(np.int32)  # classes dealt to the learners
    sampler = sampling.make_sampler("round_robin", labels, assignment, K,
                                       config.data.batch_size, config.data.samples_per_class,
                                       config.seed)
    arrays = masks_lib.phase_arrays(config, schedule.phase(config.divide, 0))
    if start_from is None:
        state, history = trainer.init_state(jax.random.key(0)), []
    else:
        state, history = start_from
    state, history, finished = trainer.train_epoch(
        state, sampler, 0, arrays, jax.random.key(1), start_step=len(history),
        history=history)
    assert finished
    return trainer, state, history, sampler.steps_per_epoch


@pytest.fixture(scope="module")
def one_call_per_step(glyphs):
    trainer, state, history, steps_per_epoch = _epoch(glyphs, 1)
    start = trainer.init_state(jax.random.key(0))
    assert _max_abs_diff(state.params, start.params) > 100 * TOLERANCE
    return state, history, steps_per_epoch


@pytest.mark.parametrize("steps_per_call", [0, 3])
def test_the_training_loop_fused_equals_one_call_per_step(glyphs, one_call_per_step,
                                                          steps_per_call):
    want_state, want_history, steps_per_epoch = one_call_per_step
    trainer, state, history, _ = _epoch(glyphs, steps_per_call)
    assert trainer.steps_per_call == (K if steps_per_call == 0 else steps_per_call)
    assert steps_per_epoch > trainer.steps_per_call  # some calls really are fused
    _assert_same_state(state, want_state, LOOP_MOMENT_RTOL)
    assert len(history) == len(want_history) == steps_per_epoch
    for got, want in zip(history, want_history):
        assert got.keys() == want.keys()
        np.testing.assert_allclose(got["loss"], want["loss"], atol=1e-6)
        assert got["images"] == want["images"]


def test_a_run_resumed_inside_a_round_ends_where_one_call_per_step_does(glyphs,
                                                                         one_call_per_step):
    want_state, want_history, _ = one_call_per_step
    # One step made one at a time (the checkpoint inside the round), then the fused loop: the
    # rest of the round goes step by step, whole rounds after it in one call each.
    cache_dir, datasets = glyphs
    config = _loop_config(1)
    config.data.cache_dir = cache_dir
    single = train.Trainer(config, datasets, parallel.make_mesh())
    labels = datasets["train"].labels
    sampler = sampling.make_sampler("round_robin", labels, (labels % K).astype(np.int32), K,
                                       config.data.batch_size, config.data.samples_per_class,
                                       config.seed)
    arrays = masks_lib.phase_arrays(config, schedule.phase(config.divide, 0))

    class StopAfterFirstStep:
        def __bool__(self):
            return True

    first, first_history, finished = single.train_epoch(
        single.init_state(jax.random.key(0)), sampler, 0, arrays, jax.random.key(1),
        stop=StopAfterFirstStep())
    assert not finished and len(first_history) == 1
    _, state, history, _ = _epoch(glyphs, 0, start_from=(first, first_history))
    _assert_same_state(state, want_state, LOOP_MOMENT_RTOL)
    np.testing.assert_allclose([h["loss"] for h in history],
                               [h["loss"] for h in want_history], atol=1e-6)


def test_grouping_of_steps_into_calls():
    def calls(start, n, size):
        return list(trainer_lib._calls(range(start, n), start, size))

    assert calls(0, 8, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert calls(0, 10, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8], [9]]
    assert calls(1, 9, 4) == [[1], [2], [3], [4, 5, 6, 7], [8]]
    assert calls(5, 6, 4) == [[5]]
    assert calls(0, 3, 1) == [[0], [1], [2]]
    assert trainer_lib._crossed(3, 7, 5) and not trainer_lib._crossed(5, 9, 5)
    assert trainer_lib._crossed(4, 5, 5) and not trainer_lib._crossed(0, 4, 0)


def test_steps_per_call_is_checked():
    config = tiny_config()
    config.steps_per_call = -1
    with pytest.raises(trainer_lib.ConfigError, match="steps_per_call"):
        trainer_lib.steps_per_call(config)
    config.steps_per_call = 0
    config.divide.learner_schedule = "joint"
    assert trainer_lib.steps_per_call(config) == 1

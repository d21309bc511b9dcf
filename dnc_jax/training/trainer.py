"""`Trainer`: what one run compiles and holds, and one epoch of training with it.

The epoch loop (`train.py`) asks it to start the state, train an epoch on a sampler's plan
(`train_epoch`: one jitted call per step, or per `steps_per_call` steps, fed by `feed.py`, the
metrics read a few calls late so the host never waits on the device), embed a split
(`embed`), score the held-out classes (`evaluate`) and recluster the training set
(`cluster`); each of those phases is timed by its `PhaseClock`.
"""
from __future__ import annotations

import collections
import time

import jax
import numpy as np

from dnc_jax.inference import embedding
from dnc_jax.data import feed
from dnc_jax import logs
from dnc_jax.training import optim
from dnc_jax import parallel
from dnc_jax.training import phase_clock
from dnc_jax.training import steps
from dnc_jax.divide import masks as masks_lib
from dnc_jax.divide import recluster
from dnc_jax.errors import ConfigError, NonFiniteLoss
from dnc_jax.evaluation.evaluator import Evaluator
from dnc_jax.losses import init_loss_params, loss_learning_rates, make_loss
from dnc_jax.models.embedder import compute_dtype, make_embedder
from dnc_jax.models.variables import initial_variables


class Trainer:
    """Holds the compiled functions and the data of one run; the state is passed around."""

    def __init__(self, config, datasets, mesh):
        self.config = config
        self.mesh = mesh
        self.datasets = datasets
        self.train_set = datasets["train"]
        self.k_max = config.divide.num_learners
        parallel.check_global_batch(config.data.batch_size, mesh)
        parallel.check_global_batch(config.data.eval_batch_size, mesh, "data.eval_batch_size")
        self.model = make_embedder(config.model, compute_dtype(config.dtype))
        loss_rates = loss_learning_rates(config.loss)
        self.optimizer = optim.make_optimizer(config.optim, loss_rates)
        self.base_rates = optim.base_learning_rates(config.optim, loss_rates)
        loss_fn = make_loss(config.loss, self.k_max, config.data.samples_per_class)
        replicated = parallel.replicated(mesh)
        step = steps.make_train_step(self.model, self.optimizer, loss_fn, config.augment)
        self.train_step = jax.jit(step, donate_argnums=(0,),
                                  out_shardings=(replicated, replicated))
        # Several steps in one call (`steps_per_call`); the one-step function above serves the
        # steps that do not fill a call (an epoch's tail, a resume inside a round).
        self.steps_per_call = steps_per_call(config)
        self.multi_step = (jax.jit(steps.make_multi_step(step), donate_argnums=(0,),
                                   out_shardings=(replicated, replicated))
                           if self.steps_per_call > 1 else None)
        # Image files: worker processes cut the views on the host (dnc_jax.data.feed), for the
        # training batches and the embedding passes alike.
        self.loader = feed.view_loader(config) if feed.host_cut(self.train_set.images) else None
        self.embedding = embedding.EmbeddingPass(self.model, config, mesh, loader=self.loader,
                                                 cache_views=config.data.cache_eval_views)
        self.evaluator = Evaluator(config, datasets, mesh=mesh)
        self.clock = phase_clock.PhaseClock().start()  # seconds per phase, in each record

    def close(self):
        self.clock.close()
        self.embedding.close()
        if self.loader is not None:
            self.loader.close()

    def init_state(self, rng):
        k_model, k_masks, k_loss = jax.random.split(rng, 3)
        cfg = self.config
        model_params, batch_stats = initial_variables(
            self.model, cfg.model, self.k_max, k_model, cfg.augment.image_size)
        params = {"model": model_params}
        if cfg.divide.masks == "learned":
            params["masks"] = masks_lib.init_learned_masks(k_masks, self.k_max,
                                                           cfg.model.embedding_dim,
                                                           cfg.divide.mask_init)
        loss_params = init_loss_params(cfg.loss, int(self.train_set.labels.max()) + 1,
                                       cfg.model.embedding_dim, k_loss)
        if loss_params:
            params["loss"] = loss_params
        state = steps.create_train_state(params, batch_stats, self.optimizer)
        return parallel.put_replicated(state, self.mesh)

    def embed(self, state, image_set, slices, output="embedding"):
        """The `output` ('embedding' or 'features') of every image's eval view: a device array
        [N, ...], computed before this returns (its seconds are the caller's phase's)."""
        out = self.embedding((state.params["model"], state.batch_stats), image_set.images,
                             slices, image_set.sizes, outputs=(output,))
        return jax.block_until_ready(out[output])

    def evaluate(self, state, slices):
        """The ProtocolResult on the held-out classes (the evaluator's protocol)."""
        def embed(image_set):
            with self.clock.phase("eval_embed"):
                return self.embed(state, image_set, slices)

        with self.clock.phase("eval_retrieval"):  # less the passes inside it
            return self.evaluator(embed, self.datasets)

    def cluster(self, state, slices, phase, previous, rng):
        """(assignment, statistics) of the training set's reclustering for `phase`."""
        features = None
        if recluster.needs_features(phase):
            with self.clock.phase("recluster_embed"):
                features = self.embed(state, self.train_set, slices,
                                      "features" if self.config.divide.cluster_on == "features"
                                      else "embedding")
        with self.clock.phase("recluster_kmeans"):
            return recluster.recluster(features, self.train_set.labels, phase, previous, rng,
                                       self.config.divide)

    # -- one epoch of training -------------------------------------------------------------
    _STOP_SYNC_EVERY = 10  # steps between multi-host agreements on stopping

    def _should_stop(self, stop, before, done) -> bool:
        """Whether to stop after step `done` (the call just made ran steps `before`..`done`-1).
        With several processes the signal may reach them at different steps, so they agree
        every few steps (all of them stop at the same step, or none saves while another is
        still in a collective)."""
        if jax.process_count() == 1:
            return bool(stop)
        if not _crossed(before, done, self._STOP_SYNC_EVERY):
            return False
        return parallel.any_process(bool(stop))

    def train_epoch(self, state, sampler, epoch, arrays, rng, *, start_step=0,
                    history=None, stop=None, save_mid_epoch=None):
        """Trains from `start_step` to the end of the epoch, or until `stop` is set; `arrays`
        are the phase's (`masks.phase_arrays`).

        Returns (state, history, finished): history holds one metrics dict per step of the
        epoch (those before `start_step` come from the checkpoint).
        """
        cfg = self.config
        phase_dev = parallel.put_replicated(arrays, self.mesh)
        data = self.train_set
        history = list(history or [])

        batches = feed.train_batches(data, sampler.epoch(epoch, start_step=start_step),
                                     cfg.data.batch_size, self.mesh, self.loader, cfg.augment,
                                     cfg.seed, epoch, start_step)

        bar = logs.progress_bar(sampler.steps_per_epoch, f"epoch {epoch}", cfg.progress)
        bar.update(start_step)
        pending = collections.deque()
        every = cfg.checkpoint.every_steps

        def drain(keep):
            # Metrics are read a few calls late so the host never waits on the device; a call
            # of several steps returns them stacked, one row a step.
            while len(pending) > keep:
                metrics, steps_made = pending.popleft()
                metrics = jax.device_get(metrics)
                rows = ([metrics] if steps_made == 1 else
                        [{k: v[i] for k, v in metrics.items()} for i in range(steps_made)])
                for one in rows:
                    _check_finite(one, epoch, len(history))
                    history.append({k: np.asarray(v).tolist() for k, v in one.items()})

        start = time.time()
        done = start_step
        for group in _prefetch(_calls(batches, start_step, self.steps_per_call), size=2):
            if len(group) == 1:
                state, metrics = self.train_step(state, group[0], phase_dev, rng)
            else:
                state, metrics = self.multi_step(state, tuple(group), phase_dev, rng)
            pending.append((metrics, len(group)))
            drain(keep=2)
            before, done = done, done + len(group)
            bar.update(len(group))
            if history and _crossed(before, done, cfg.log_every_steps):
                seconds = time.time() - start
                bar.set_postfix(loss=f"{history[-1]['loss']:.4f}",
                                img_s=f"{(done - start_step) * cfg.data.batch_size / seconds:.0f}")
            stopping = self._should_stop(stop, before, done)
            if stopping or (every and save_mid_epoch and _crossed(before, done, every)
                            and done < sampler.steps_per_epoch):
                drain(keep=0)
                if stopping:
                    bar.close()
                    return state, history, False
                save_mid_epoch(state, history)
        drain(keep=0)
        bar.close()
        return state, history, True


def steps_per_call(config) -> int:
    """Optimiser steps per compiled call: `steps_per_call`, where 0 means one round of
    learners (divide.num_learners) under round robin and 1 under joint."""
    n = config.steps_per_call
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"steps_per_call={n!r} must be an integer >= 0 (0: one round of "
                          f"learners under round_robin, 1 under joint)")
    if n == 0:
        return config.divide.num_learners if config.divide.learner_schedule == "round_robin" \
            else 1
    return n


def _calls(batches, start_step, size):
    """Groups consecutive batches into calls of `size` steps that start at multiples of `size`
    within the epoch, so that every run, resumed or not, makes the same calls; the steps
    before the first such start (a resume inside a round) and after the last whole group go
    one by one."""
    group = []
    for step, batch in enumerate(batches, start_step):
        if not group and (size == 1 or step % size):
            yield [batch]
            continue
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
    yield from ([b] for b in group)


def _crossed(before, after, every) -> bool:
    """Whether a multiple of `every` lies in (before, after]: a call of several steps may jump
    over the step a per-step rule names."""
    return every > 0 and after // every > before // every


def _check_finite(metrics, epoch, step):
    if np.isfinite(metrics["loss"]) and np.all(np.isfinite(metrics["loss_per_learner"])):
        return
    bad = np.flatnonzero(~np.isfinite(np.asarray(metrics["loss_per_learner"])))
    learners = ", ".join(map(str, bad)) if len(bad) else "none (total only)"
    raise NonFiniteLoss(f"non-finite loss at epoch {epoch}, step {step} of the epoch, "
                        f"learner(s) {learners}; stopped without saving, so the last "
                        f"checkpoint is the last good state")


def _prefetch(iterator, size):
    """Keeps `size` batches placed on the devices ahead of the step that consumes them."""
    queue = collections.deque()
    for item in iterator:
        queue.append(item)
        if len(queue) >= size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()

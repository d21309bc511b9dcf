"""`train_and_evaluate(config, workdir)`: the Divide and Conquer epoch loop.

Per epoch: ask the phase plan (`divide/schedule.py`) which phase this is; when it says so,
embed the training set and recluster it (`divide/recluster.py`: k-means on the device into K
clusters, matched to the learners, split in two when K doubles, singleton classes set aside);
then train every learner on its cluster with one jitted step per batch (`steps.py`, fed by
`feed.py` from the sampler's plan) and evaluate on the held-out classes
(`evaluation/evaluator.py`). What is said and written about each epoch is `reporting.py`'s.

A run is a pure function of its config: the sampler, augmentation and mining randomness derive
from (seed, epoch, step), so a run resumed from a checkpoint, at an epoch end or in the middle
of an epoch, ends where an uninterrupted one does.
"""
from __future__ import annotations

import collections
import contextlib
import os
import time

import jax
import numpy as np
from absl import logging

from dnc_jax import checkpoint as checkpoint_lib
from dnc_jax import compile_cache
from dnc_jax import config_checks
from dnc_jax import defaults
from dnc_jax import embedding
from dnc_jax import feed
from dnc_jax import logs
from dnc_jax import optim
from dnc_jax import parallel
from dnc_jax import phase_clock
from dnc_jax import plots
from dnc_jax import reporting
from dnc_jax import run_guard
from dnc_jax import steps
from dnc_jax.data import augment
from dnc_jax.data import sampler as sampler_lib
from dnc_jax.data import sources
from dnc_jax.divide import masks as masks_lib
from dnc_jax.divide import recluster
from dnc_jax.divide import schedule
from dnc_jax.errors import ConfigError, NonFiniteLoss
from dnc_jax.evaluation.evaluator import HEADLINE, Evaluator
from dnc_jax.losses import PROXY_LOSSES, init_loss_params, loss_learning_rates, make_loss
from dnc_jax.models import pretrained
from dnc_jax.models.embedder import check_model_config, compute_dtype, make_embedder
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
        # Image files: worker processes cut the views on the host (dnc_jax.feed), for the
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


def train_and_evaluate(config, workdir: str, allow_config_change: bool = False) -> dict:
    """Trains and evaluates; returns the last epoch's metrics record."""
    config = defaults.complete(config)
    compile_cache.enable(config.compilation_cache_dir)  # before the run's first compile
    run_guard.check_writable(workdir, create=False)
    config_checks.check_values(config)  # every key's range, in one line each
    # A batch layout that trains nothing is refused before the data set is read.
    min_classes = 1 if config.loss.name in PROXY_LOSSES else 2
    sampler_lib.check_batch_layout(
        config.data.batch_size, config.data.samples_per_class, config.divide.num_learners,
        config.divide.learner_schedule, min_classes=min_classes)
    sampler_lib.check_epoch_length(config.data.epoch_length)
    sampler_lib.check_sampler(config.data.sampler)
    # The keys the run needs, before the data set is read: each check raises a ConfigError.
    masks_lib.phase_arrays(config, schedule.phase(config.divide, 0))  # plan and masks
    optim.joint_lr_scale(config, 1)
    check_model_config(config.model, config.augment.image_size)
    augment.normalization_constants(config.augment.normalization)
    if config.model.pretrained:  # the file exists; the mean/std it expects, where timm says it
        pretrained.check_source(config.model.pretrained)
        pretrained.check_normalization(config.model.pretrained, config.augment.normalization)
    optim.check_optim_config(config)
    steps_per_call(config)
    compute_dtype(config.dtype)
    make_loss(config.loss, config.divide.num_learners, config.data.samples_per_class)

    # Data first: a missing data set must fail before anything is written.
    datasets = sources.load_dataset(config.data)
    sampler_lib.check_enough_classes(datasets["train"].labels, config.divide.num_learners,
                                     min_classes)
    run_guard.check_writable(workdir)
    main = logs.is_main_process()
    lock = run_guard.WorkdirLock(workdir) if main else contextlib.nullcontext()
    with lock, run_guard.StopRequest() as stop:
        run_guard.check_resume_config(workdir, config, allow_config_change)
        trainer = Trainer(config, datasets, parallel.make_mesh())
        try:
            return _train(config, workdir, trainer, stop)
        finally:
            trainer.close()


def _train(config, workdir, trainer, stop):
    ckpt = checkpoint_lib.Checkpointer(checkpoint_lib.directory(workdir),
                                       keep=config.checkpoint.keep)
    best_ckpt = (checkpoint_lib.Checkpointer(
        checkpoint_lib.directory(workdir, checkpoint_lib.BEST_ON_TEST), keep=1)
        if config.checkpoint.keep_best_on_test else None)
    # Every way out, a stop included, waits for the saves still being written in the
    # background: a process that exited under one would leave it half written (and, with
    # several processes, the others waiting for it at the save's barrier).
    checkpointers = [c for c in (ckpt, best_ckpt) if c is not None]
    try:
        record = _train_loop(config, workdir, trainer, stop, ckpt, best_ckpt)
    except BaseException:
        for checkpointer in checkpointers:  # the run's own error is the one to report
            try:
                checkpointer.close()
            except Exception as e:  # orbax raises many types
                logging.warning("while stopping on an error, a checkpoint save failed too: %s",
                                str(e).splitlines()[0][:200] if str(e) else type(e).__name__)
        raise
    for checkpointer in checkpointers:
        checkpointer.close()
    return record


def _train_loop(config, workdir, trainer, stop, ckpt, best_ckpt):
    writer = logs.MetricsWriter(workdir)
    board = logs.Board(workdir)
    init_rng, train_rng, cluster_rng = jax.random.split(jax.random.key(config.seed), 3)
    state = trainer.init_state(init_rng)
    restored = ckpt.restore_latest(state, len(trainer.train_set))
    if logs.is_main_process():
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))

    def report(record, label):
        record.update(trainer.clock.take())
        writer.write(record)
        board.write(record)
        logs.say(reporting.epoch_line(record, label))

    if restored is None:
        start_epoch, assignment, carry = 0, None, None
        # A run killed before its first checkpoint starts over: its rows so far go, so that
        # metrics.jsonl holds each epoch once however often it was restarted.
        writer.truncate_after(-2)
        report(_untrained_record(config, trainer, state), "untrained")
    else:
        state, assignment, carry, start_epoch = _resume_point(restored, workdir)
        writer.truncate_after(start_epoch - 1)
    # Only process 0 may be able to read metrics.jsonl; saving is collective, so all agree.
    best = parallel.from_main_process(max(
        (r[HEADLINE] for r in writer.read() if r.get("epoch", -1) >= 0 and HEADLINE in r),
        default=-1.0))

    record = {}
    for epoch in range(start_epoch, config.num_epochs):
        phase = schedule.phase(config.divide, epoch)
        arrays = masks_lib.phase_arrays(config, phase)
        if carry is not None:
            record, history, start_step = carry["record"], carry["history"], carry["step_in_epoch"]
            carry = None
        else:
            record = {"epoch": epoch, "num_learners": phase.num_learners,
                      "full_embedding": phase.full_embedding,
                      "backbone_frozen": phase.freeze_backbone}
            history, start_step = [], 0
            if assignment is None or schedule.needs_new_assignment(config.divide, epoch):
                t0 = time.time()
                if phase.split and "masks" in state.params:
                    state = _grow_masks(trainer, state, phase.num_learners // 2)
                assignment, stats = trainer.cluster(state, arrays["slices"], phase, assignment,
                                                    jax.random.fold_in(cluster_rng, epoch))
                record.update(stats, recluster_seconds=time.time() - t0)
                logs.say(reporting.cluster_line(record))
        state = state.replace(opt_state=optim.set_learning_rates(
            state.opt_state, optim.group_learning_rates(config, phase, trainer.base_rates)))
        sampler = sampler_lib.make_sampler(
            config.divide.learner_schedule, trainer.train_set.labels, assignment,
            phase.num_learners, config.data.batch_size, config.data.samples_per_class,
            config.seed, config.data.epoch_length, sampler=config.data.sampler,
            method=config.divide.schedule)

        def save_mid_epoch(state_, history_, epoch=epoch, record=record, assignment=assignment):
            with trainer.clock.phase("checkpoint"):
                ckpt.save_in_epoch(state_, assignment, epoch, record, history_)

        t0 = time.time()
        with trainer.clock.phase("train"):
            state, history, finished = trainer.train_epoch(
                state, sampler, epoch, arrays, train_rng, start_step=start_step,
                history=history, stop=stop, save_mid_epoch=save_mid_epoch)
        if not finished:
            save_mid_epoch(state, history)
            ckpt.wait()
            logs.say(f"stopped by {stop.signal} in epoch {epoch} after step {len(history)}; "
                     f"saved. Run the same command to resume.")
            return record
        record.update(reporting.summarise_epoch(history, phase.num_learners,
                                                config.data.batch_size, time.time() - t0))
        if (epoch + 1) % config.eval.every_epochs == 0 or epoch == config.num_epochs - 1:
            record.update(trainer.evaluate(state, arrays["slices"]).metrics)
        report(record, f"epoch {epoch}")
        if logs.is_main_process():
            plots.plot_run(writer.read(), workdir)
        with trainer.clock.phase("checkpoint"):
            if (epoch + 1) % config.checkpoint.every_epochs == 0 \
                    or epoch == config.num_epochs - 1:
                ckpt.save_epoch_end(state, assignment, epoch)
            if best_ckpt is not None and record.get(HEADLINE, -1.0) > best:
                # Model selection on the test set, as both official repos do: kept apart and
                # named so, never the default result.
                best = record[HEADLINE]
                best_ckpt.save_best(state, assignment, epoch, HEADLINE, best)
        if parallel.any_process(bool(stop)):
            ckpt.save_epoch_end(state, assignment, epoch)
            ckpt.wait()
            logs.say(f"stopped by {stop.signal} after epoch {epoch}; saved. Run the same "
                     f"command to resume.")
            return record
    with trainer.clock.phase("checkpoint"):
        ckpt.wait()
    board.close()
    reporting.final_summary(writer.read(), workdir, tail=trainer.clock.take())
    return record


def _untrained_record(config, trainer, state) -> dict:
    """Epoch -1: the starting model's metrics (and the chance R@1), said with the data set."""
    slices = masks_lib.phase_arrays(config, schedule.phase(config.divide, 0))["slices"]
    record = {"epoch": -1, **trainer.evaluate(state, slices).metrics}
    if "test" in trainer.datasets:
        record["chance_recall@1"] = reporting.chance_recall_at_1(trainer.datasets["test"].labels)
    logs.say(reporting.data_line(trainer.datasets, record))
    return record


def _resume_point(restored, workdir):
    """(state, assignment, carry, first epoch to run) of a restored checkpoint; `carry` is the
    meta of a checkpoint taken inside an epoch (its record and steps so far), else None."""
    state, assignment, meta = restored
    if meta["complete"]:
        logs.say(f"resumed {workdir} after epoch {meta['epoch']}")
        return state, assignment, None, meta["epoch"] + 1
    logs.say(f"resumed {workdir} in epoch {meta['epoch']} at step {meta['step_in_epoch']}")
    return state, assignment, meta, meta["epoch"]


def _grow_masks(trainer, state, num_learners):
    """PAMI doubling: children 2c, 2c+1 copy parent c's mask; the mask moments start fresh."""
    params = dict(state.params)
    params["masks"] = masks_lib.grow(params["masks"], num_learners)
    opt_state = optim.reset_group(state.opt_state, trainer.optimizer, params, "masks")
    return parallel.put_replicated(state.replace(params=params, opt_state=opt_state),
                                   trainer.mesh)

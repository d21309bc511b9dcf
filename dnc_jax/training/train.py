"""`train_and_evaluate(config, workdir)`: the Divide and Conquer epoch loop.

Per epoch: ask the phase plan (`divide/schedule.py`) which phase this is; when it says so,
embed the training set and recluster it (`divide/recluster.py`: k-means on the device into K
clusters, matched to the learners, split in two when K doubles, singleton classes set aside);
then train every learner on its cluster (`trainer.py`: one jitted step per batch, `steps.py`,
fed by `feed.py` from the sampler's plan) and evaluate on the held-out classes
(`evaluation/evaluator.py`). What is said and written about each epoch is `reporting.py`'s.

A run is a pure function of its config: the sampler, augmentation and mining randomness derive
from (seed, epoch, step), so a run resumed from a checkpoint, at an epoch end or in the middle
of an epoch, ends where an uninterrupted one does.
"""
from __future__ import annotations

import contextlib
import os
import time

import jax
from absl import logging

from dnc_jax import checkpoint as checkpoint_lib
from dnc_jax import compile_cache
from dnc_jax import config_checks
from dnc_jax import defaults
from dnc_jax import logs
from dnc_jax.training import optim
from dnc_jax import parallel
from dnc_jax.training import plots
from dnc_jax.training import reporting
from dnc_jax.training import run_guard
from dnc_jax.data import sampling, sources
from dnc_jax.data.sampling import sampler as sampler_lib
from dnc_jax.data.views import augment
from dnc_jax.divide import masks as masks_lib
from dnc_jax.divide import schedule
from dnc_jax.evaluation.evaluator import HEADLINE
from dnc_jax.losses import PROXY_LOSSES, make_loss
from dnc_jax.models import pretrained
from dnc_jax.models.embedder import check_model_config, compute_dtype
from dnc_jax.training.trainer import Trainer, steps_per_call


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
        sampler = sampling.make_sampler(
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

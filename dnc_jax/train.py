"""`train_and_evaluate(config, workdir)`: the Divide and Conquer epoch loop.

Per epoch: ask the schedule which phase this is; when it says so, embed the training set,
k-means it on device into K clusters (splitting every cluster in two when K doubles), match
the new clusters to the learners (Hungarian) and set singleton classes aside; then train every
learner on its cluster with one jitted step per batch and evaluate on the held-out classes.

A run is a pure function of its config: the sampler, augmentation and mining randomness derive
from (seed, epoch, step), so a run resumed from a checkpoint, at an epoch end or in the middle
of an epoch, ends where an uninterrupted one does.
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from dnc_jax import checkpoint as checkpoint_lib
from dnc_jax import feed
from dnc_jax import logs
from dnc_jax import optim
from dnc_jax import parallel
from dnc_jax import plots
from dnc_jax import run_guard
from dnc_jax import steps
from dnc_jax.data import sampler as sampler_lib
from dnc_jax.data.errors import ConfigError
from dnc_jax.data import sources
from dnc_jax.divide import masks as masks_lib
from dnc_jax.divide import matching
from dnc_jax.divide import recluster
from dnc_jax.divide import schedule
from dnc_jax.evaluation import protocols
from dnc_jax.losses import init_loss_params, loss_learning_rates, make_loss
from dnc_jax.models.embedder import make_embedder
from dnc_jax.models.variables import initial_variables


# Their negatives are class proxies: a learner batch of one class still trains them.
PROXY_LOSSES = ("proxy_anchor", "normalized_softmax")


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or inf; the run stops without saving, so the last checkpoint stays."""


def compute_dtype(name: str):
    if name == "auto":
        return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
    if name not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'auto', 'float32' or 'bfloat16', got {name!r}")
    return jnp.dtype(name).type


def phase_arrays(config, phase) -> dict:
    """The step's `phase` argument (see `steps.py`) for one epoch."""
    c, k_max, dim = config.divide, config.divide.num_learners, config.model.embedding_dim
    if c.masks == "slices":
        # The CVPR model fixes its K output blocks when it is built (`learner_neurons` in
        # lib/model.py): the one-learner finetune still normalises K blocks, trains on their
        # renormalised concatenation and is evaluated on it. PAMI's K grows with its phases.
        blocks = k_max if c.get("schedule", "cvpr") == "cvpr" else phase.num_learners
        slices = masks_lib.contiguous_slices(blocks, k_max, dim)
        fixed = masks_lib.contiguous_slices(phase.num_learners, k_max, dim)
    elif c.masks in ("fixed", "learned"):
        # PAMI: the output is normalised once; fixed masks are the hierarchical halves, which
        # for K = 2^j are the contiguous blocks of d / K dims.
        slices = masks_lib.single_block(k_max, dim)
        fixed = masks_lib.contiguous_slices(phase.num_learners, k_max, dim)
    else:
        raise ValueError(f"divide.masks must be 'slices', 'fixed' or 'learned', got {c.masks!r}")
    conquer = phase.full_embedding
    learned = c.masks == "learned" and not conquer
    return {
        "slices": slices,
        "masks": masks_lib.full_embedding_masks(k_max, dim) if conquer else fixed,
        "learned": np.float32(learned),
        "num_learners": np.int32(phase.num_learners),
        "orthogonality": np.float32(c.orthogonality_weight if learned else 0.0),
    }


def group_learning_rates(config, phase, base_rates) -> dict[str, float]:
    """Each group's learning rate for one epoch: the base rate, the optional step decay (the
    CVPR author's advice for CUB/Cars: decay every 30 epochs; neither official repo decays),
    0 for a frozen backbone, 0 for masks that are not being learned."""
    every = config.optim.get("lr_decay_every", 0)
    decay = config.optim.get("lr_decay_factor", 1.0) ** (phase.epoch // every) if every else 1.0
    rates = {group: rate * decay for group, rate in base_rates.items()}
    scale = joint_lr_scale(config, phase.num_learners)
    for group in ("backbone", "head"):
        rates[group] *= scale
    if phase.freeze_backbone:
        rates["backbone"] = 0.0
    if config.divide.masks != "learned" or phase.full_embedding:
        rates["masks"] = 0.0  # PAMI drops the masks from the optimiser when conquering
    return rates


JOINT_LR_RULES = ("none", "sqrt", "linear")


def joint_lr_scale(config, num_learners: int) -> float:
    """The network's learning-rate multiplier under the 'joint' schedule (`optim.joint_lr_rule`).

    A joint step serves all K learners at once, so an epoch takes K times fewer optimiser steps
    than round robin; Adam moves each weight by about the learning rate a step, so at the same
    rate the network travels about K times less per epoch. 'linear' gives it K times the rate,
    'sqrt' sqrt(K) (the square-root rule for Adam when the batch grows K-fold). Round robin and
    one-learner epochs keep the base rate.
    """
    rule = config.optim.get("joint_lr_rule", "none")
    if rule not in JOINT_LR_RULES:
        raise ConfigError(f"optim.joint_lr_rule must be one of {JOINT_LR_RULES}, got {rule!r}")
    if config.divide.learner_schedule != "joint" or rule == "none":
        return 1.0
    return float(num_learners) if rule == "linear" else float(np.sqrt(num_learners))


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
        self.train_step = jax.jit(
            steps.make_train_step(self.model, self.optimizer, loss_fn, config.augment),
            donate_argnums=(0,), out_shardings=(replicated, replicated))
        self.host_cut = feed.host_cut(self.train_set.images)
        self.embed_step = jax.jit(steps.make_embed_step(self.model, config.augment,
                                                        self.host_cut))
        # Image files: worker processes cut the views on the host (dnc_jax.feed).
        self.loader = feed.view_loader(config) if self.host_cut else None

    def close(self):
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

    # -- embedding passes ------------------------------------------------------------------
    def embed(self, state, image_set, slices):
        """Embeds every image with the eval transform; returns device arrays [N, ...]."""
        n, b = len(image_set.labels), self.config.data.eval_batch_size
        outs = collections.defaultdict(list)
        slices = parallel.put_replicated(slices, self.mesh)
        for images, sizes in feed.embed_batches(image_set.images, image_set.sizes, b, self.mesh,
                                                self.loader):
            out = self.embed_step(state.params["model"], state.batch_stats, images, sizes,
                                  slices)
            for k, v in out.items():
                outs[k].append(v)
        return {k: jnp.concatenate(v)[:n] for k, v in outs.items()}

    def evaluate(self, state, slices, full_protocol: bool = False):
        """Metrics on the held-out classes.

        During training: leave-one-out over 'test', or 'query' against 'gallery' (In-shop), at
        `eval.recall_ks`. With `full_protocol`, the data set's whole protocol (e.g. VehicleID's
        three lists, both ways) with its own cut-offs (`dnc_jax.evaluation.protocols`).
        """
        cfg = self.config
        names = [n for n in self.datasets if n != "train"]
        if not full_protocol:
            names = ["test"] if "test" in self.datasets else ["query", "gallery"]
        splits = {n: protocols.EmbeddedSplit(self.embed(state, self.datasets[n], slices)[
            "embedding"], self.datasets[n].labels) for n in names}
        if full_protocol:
            name = protocols.protocol_for_dataset(cfg.data.name, cfg.data.get("tfds_name", ""),
                                                  names)
            ks = None
        else:
            name = "loo" if "test" in splits else "query_gallery"
            ks = tuple(cfg.eval.recall_ks)
        result = protocols.evaluate(
            name, splits, ks=ks, map_at_r=cfg.eval.map_at_r, nmi=cfg.eval.nmi,
            nmi_seeds=tuple(cfg.eval.nmi_seeds), block_size=cfg.eval.block_size, mesh=self.mesh)
        return result.metrics if not full_protocol else result

    # -- clustering ------------------------------------------------------------------------
    def cluster(self, state, slices, phase, previous, rng):
        """Embed -> k-means on device -> match -> (split) -> set singletons aside."""
        c = self.config.divide
        labels = self.train_set.labels
        k = phase.num_learners // 2 if phase.split else phase.num_learners
        if k == 1 and not phase.split:
            return sampler_lib.remove_singletons(labels, np.zeros(len(labels), np.int32)), {}
        out = self.embed(state, self.train_set, slices)
        x = out["features" if c.cluster_on == "features" else "embedding"]
        info = {}
        if k == 1:
            assignment = np.zeros(len(labels), np.int32)
        else:
            assignment, info = recluster.flat_kmeans(
                x, k, labels, rng, trials=c.kmeans_trials, restarts=c.kmeans_restarts,
                iterations=c.kmeans_iterations, init=c.kmeans_init)
            if previous is not None and previous.max(initial=-1) == k - 1:
                perm = matching.match_clusters(previous, assignment, k)
                info["matching_cost"] = int(matching.matching_cost(previous, assignment, perm, k))
                assignment = matching.relabel(assignment, perm)
        if phase.split:
            assignment, rejected = recluster.split_in_two(
                x, assignment, labels, jax.random.fold_in(rng, 1), trials=c.split_trials,
                iterations=c.kmeans_iterations, init=c.kmeans_init)
            info["split_rejected"] = rejected
        info["class_purity"] = recluster.class_purity(assignment, labels)
        return sampler_lib.remove_singletons(labels, assignment), info

    # -- one epoch of training -------------------------------------------------------------
    _STOP_SYNC_EVERY = 10  # steps between multi-host agreements on stopping

    def _should_stop(self, stop, done) -> bool:
        """Whether to stop after step `done`. With several processes the signal may reach them
        at different steps, so they agree every few steps (all of them stop at the same step,
        or none saves while another is still in a collective)."""
        if jax.process_count() == 1:
            return bool(stop)
        if done % self._STOP_SYNC_EVERY:
            return False
        return parallel.any_process(bool(stop))

    def train_epoch(self, state, sampler, epoch, phase_arrays_, rng, *, start_step=0,
                    history=None, stop=None, save_mid_epoch=None):
        """Trains from `start_step` to the end of the epoch, or until `stop` is set.

        Returns (state, history, finished): history holds one metrics dict per step of the
        epoch (those before `start_step` come from the checkpoint).
        """
        cfg = self.config
        phase_dev = parallel.put_replicated(phase_arrays_, self.mesh)
        data = self.train_set
        history = list(history or [])

        batches = feed.train_batches(data, sampler.epoch(epoch, start_step=start_step),
                                     cfg.data.batch_size, self.mesh, self.loader, cfg.augment,
                                     cfg.seed, epoch, start_step)

        bar = logs.progress_bar(sampler.steps_per_epoch, f"epoch {epoch}", cfg.progress)
        bar.update(start_step)
        pending = collections.deque()
        every = cfg.checkpoint.get("every_steps", 0)

        def drain(keep):
            # Metrics are read a few steps late so the host never waits on the device.
            while len(pending) > keep:
                metrics = jax.device_get(pending.popleft())
                _check_finite(metrics, epoch, len(history))
                history.append({k: np.asarray(v).tolist() for k, v in metrics.items()})

        start = time.time()
        for batch in _prefetch(batches, size=2):
            state, metrics = self.train_step(state, batch, phase_dev, rng)
            pending.append(metrics)
            drain(keep=2)
            bar.update(1)
            if history and bar.n % cfg.log_every_steps == 0:
                seconds = time.time() - start
                bar.set_postfix(loss=f"{history[-1]['loss']:.4f}",
                                img_s=f"{(bar.n - start_step) * cfg.data.batch_size / seconds:.0f}")
            done = len(history) + len(pending)
            stopping = self._should_stop(stop, done)
            if stopping or (every and save_mid_epoch and done % every == 0
                            and done < sampler.steps_per_epoch):
                drain(keep=0)
                if stopping:
                    bar.close()
                    return state, history, False
                save_mid_epoch(state, history)
        drain(keep=0)
        bar.close()
        return state, history, True


def _check_finite(metrics, epoch, step):
    if np.isfinite(metrics["loss"]) and np.all(np.isfinite(metrics["loss_per_learner"])):
        return
    bad = np.flatnonzero(~np.isfinite(np.asarray(metrics["loss_per_learner"])))
    learners = ", ".join(map(str, bad)) if len(bad) else "none (total only)"
    raise NonFiniteLoss(f"non-finite loss at epoch {epoch}, step {step} of the epoch, "
                        f"learner(s) {learners}; stopped without saving, so the last "
                        f"checkpoint is the last good state")


def summarise_epoch(history, num_learners, batch_size, seconds):
    losses = np.array([h["loss"] for h in history])
    # Mean over the steps in which each learner had terms (round_robin: its own turns).
    learner_losses = np.array([h["loss_per_learner"] for h in history])
    active = np.array([np.asarray(h["active_terms"]) > 0 for h in history])
    per_learner = (learner_losses * active).sum(0) / np.maximum(active.sum(0), 1)
    summary = {"loss": float(losses.mean()),
               "loss_per_learner": per_learner[:num_learners].tolist(),
               "steps": len(history),
               # Valid (non-padding) slots trained on; absent from steps saved before it existed.
               "images": int(sum(h.get("images", 0) for h in history)),
               "images_per_second": len(history) * batch_size / max(seconds, 1e-9)}
    if "orthogonality" in history[0]:
        summary["orthogonality"] = float(np.mean([h["orthogonality"] for h in history]))
    return summary


def _prefetch(iterator, size):
    """Keeps `size` batches placed on the devices ahead of the step that consumes them."""
    queue = collections.deque()
    for item in iterator:
        queue.append(item)
        if len(queue) >= size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def chance_recall_at_1(labels) -> float:
    """Expected leave-one-out R@1 of a random ranking: mean over queries of (n_c - 1)/(N - 1)."""
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return float(np.mean((counts[inverse] - 1) / (len(labels) - 1)))


def cluster_stats(labels, assignment, num_learners):
    sizes, classes = [], []
    for k in range(num_learners):
        rows = assignment == k
        sizes.append(int(rows.sum()))
        classes.append(int(len(np.unique(labels[rows]))))
    return {"cluster_sizes": sizes, "cluster_classes": classes,
            "removed_images": int((assignment < 0).sum())}


def train_and_evaluate(config, workdir: str, allow_config_change: bool = False) -> dict:
    """Trains and evaluates; returns the last epoch's metrics record."""
    run_guard.check_writable(workdir, create=False)
    # A batch layout that trains nothing is refused before the data set is read.
    sampler_lib.check_batch_layout(
        config.data.batch_size, config.data.samples_per_class, config.divide.num_learners,
        config.divide.learner_schedule, min_classes=1 if config.loss.name in PROXY_LOSSES else 2)
    sampler_lib.check_epoch_length(config.data.get("epoch_length", "exact"))
    sampler_lib.check_sampler(config.data.get("sampler", "exact"))
    schedule.phase(config.divide, 0)  # the phase plan's keys (warm-up, K for 'pami')
    joint_lr_scale(config, 1)

    # Data first: a missing data set must fail before anything is written.
    datasets = sources.load_dataset(config.data)
    run_guard.check_writable(workdir)
    main = logs.is_main_process()
    lock = run_guard.WorkdirLock(workdir) if main else contextlib.nullcontext()
    with lock, run_guard.StopRequest() as stop:
        run_guard.check_resume_config(workdir, config, allow_config_change)
        return _run(config, workdir, datasets, stop)


def _run(config, workdir, datasets, stop):
    mesh = parallel.make_mesh()
    trainer = Trainer(config, datasets, mesh)
    try:
        return _train(config, workdir, trainer, stop)
    finally:
        trainer.close()


def _train(config, workdir, trainer, stop):
    datasets = trainer.datasets
    writer = logs.MetricsWriter(workdir)
    board = logs.Board(workdir)
    rng = jax.random.key(config.seed)
    init_rng, train_rng, cluster_rng = jax.random.split(rng, 3)
    state = trainer.init_state(init_rng)
    ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                       keep=config.checkpoint.keep)
    restored = ckpt.restore_latest(state, len(trainer.train_set))
    if logs.is_main_process():
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))

    best_ckpt = (checkpoint_lib.Checkpointer(
        os.path.join(workdir, "checkpoint_best_selected_on_test"), keep=1)
        if config.checkpoint.get("keep_best_on_test", False) else None)
    carry = None
    if restored is None:
        start_epoch, assignment = 0, None
        slices0 = phase_arrays(config, schedule.phase(config.divide, 0))["slices"]
        record = {"epoch": -1, **trainer.evaluate(state, slices0)}
        if "test" in datasets:
            record["chance_recall@1"] = chance_recall_at_1(datasets["test"].labels)
        writer.write(record)
        board.write(record)
        logs.say(_data_line(datasets, record))
        logs.say(_summary_line(record, "untrained"))
    else:
        state, assignment, meta = restored
        if meta["complete"]:
            start_epoch = meta["epoch"] + 1
            logs.say(f"resumed {workdir} after epoch {meta['epoch']}")
        else:
            start_epoch, carry = meta["epoch"], meta
            logs.say(f"resumed {workdir} in epoch {meta['epoch']} at step "
                     f"{meta['step_in_epoch']}")
        writer.truncate_after(start_epoch - 1)
    # Only process 0 may be able to read metrics.jsonl; saving is collective, so all agree.
    best_recall = parallel.from_main_process(max(
        (r["recall@1"] for r in writer.read() if r.get("epoch", -1) >= 0 and "recall@1" in r),
        default=-1.0))

    record = {}
    for epoch in range(start_epoch, config.num_epochs):
        phase = schedule.phase(config.divide, epoch)
        arrays = phase_arrays(config, phase)
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
                previous = None if assignment is None or phase.whole_dataset else assignment
                assignment, info = trainer.cluster(state, arrays["slices"], phase, previous,
                                                   jax.random.fold_in(cluster_rng, epoch))
                stats = cluster_stats(trainer.train_set.labels, assignment, phase.num_learners)
                record.update(info, **stats, recluster_seconds=time.time() - t0)
                purity = (f", class purity {100 * record['class_purity']:.1f}%"
                          if "class_purity" in record else "")
                logs.say(f"{'':>10}  clusters: {stats['cluster_sizes']} images, "
                         f"{stats['cluster_classes']} classes, {stats['removed_images']} "
                         f"singletons set aside{purity} ({record['recluster_seconds']:.1f} s)")
        state = state.replace(opt_state=optim.set_learning_rates(
            state.opt_state, group_learning_rates(config, phase, trainer.base_rates)))
        sampler = sampler_lib.make_sampler(
            config.divide.learner_schedule, trainer.train_set.labels, assignment,
            phase.num_learners, config.data.batch_size, config.data.samples_per_class,
            config.seed, config.data.get("epoch_length", "exact"),
            sampler=config.data.get("sampler", "exact"), method=config.divide.schedule)

        def save_mid_epoch(state_, history_, epoch=epoch, record=record, assignment=assignment):
            ckpt.save(state_, assignment, {"epoch": epoch, "complete": False,
                                           "step_in_epoch": len(history_),
                                           "record": record, "history": history_})

        t0 = time.time()
        state, history, finished = trainer.train_epoch(
            state, sampler, epoch, arrays, train_rng, start_step=start_step, history=history,
            stop=stop, save_mid_epoch=save_mid_epoch)
        if not finished:
            save_mid_epoch(state, history)
            ckpt.wait()
            logs.say(f"stopped by {stop.signal} in epoch {epoch} after step {len(history)}; "
                     f"saved. Run the same command to resume.")
            return record
        record.update(summarise_epoch(history, phase.num_learners, config.data.batch_size,
                                      time.time() - t0))
        if (epoch + 1) % config.eval.every_epochs == 0 or epoch == config.num_epochs - 1:
            record.update(trainer.evaluate(state, arrays["slices"]))
        writer.write(record)
        board.write(record)
        logs.say(_summary_line(record, f"epoch {epoch}"))
        if logs.is_main_process():
            plots.plot_run(writer.read(), workdir)
        if (epoch + 1) % config.checkpoint.every_epochs == 0 or epoch == config.num_epochs - 1:
            ckpt.save(state, assignment, {"epoch": epoch, "complete": True})
        if best_ckpt is not None and record.get("recall@1", -1.0) > best_recall:
            # Model selection on the test set, as both official repos do: kept apart and named
            # so, never the default result.
            best_recall = record["recall@1"]
            best_ckpt.save(state, assignment, {"epoch": epoch, "complete": True,
                                               "selected_on_test": "recall@1",
                                               "recall@1": best_recall})
        if parallel.any_process(bool(stop)):
            ckpt.save(state, assignment, {"epoch": epoch, "complete": True})
            ckpt.wait()
            logs.say(f"stopped by {stop.signal} after epoch {epoch}; saved. Run the same "
                     f"command to resume.")
            return record
    ckpt.wait()
    if best_ckpt is not None:
        best_ckpt.wait()
    board.close()
    _final_summary(writer, workdir)
    return record


def _grow_masks(trainer, state, num_learners):
    """PAMI doubling: children 2c, 2c+1 copy parent c's mask; the mask moments start fresh."""
    params = dict(state.params)
    params["masks"] = masks_lib.grow(params["masks"], num_learners)
    opt_state = optim.reset_group(state.opt_state, trainer.optimizer, params, "masks")
    return parallel.put_replicated(state.replace(params=params, opt_state=opt_state),
                                   trainer.mesh)


def _data_line(datasets, record):
    train = datasets["train"]
    held_out = ", ".join(f"{name} {len(s)} images of {len(np.unique(s.labels))} classes"
                         for name, s in datasets.items() if name != "train")
    line = (f"{len(train)} training images of {len(np.unique(train.labels))} classes; "
            f"held-out: {held_out}")
    if "chance_recall@1" in record:
        line += f"; chance R@1 {100 * record['chance_recall@1']:.2f}"
    return line


def _final_summary(writer, workdir):
    """The last epoch's metrics (the number to report) and, labelled as model selection on the
    test set, the best epoch's; also written to WORKDIR/summary.json."""
    records = writer.read()
    start = next((r for r in records if r.get("epoch") == -1), None)
    evaluated = [r for r in records if "recall@1" in r and r.get("epoch", -1) >= 0]
    if start is None or not evaluated:
        return
    last = evaluated[-1]
    best = max(evaluated, key=lambda r: r["recall@1"])
    metric_keys = [k for k in last if k.startswith(("recall@", "map@r", "r_precision", "nmi",
                                                    "marp"))]
    summary = {"last_epoch": {"epoch": last["epoch"], **{k: last[k] for k in metric_keys}},
               "best_epoch_selected_on_test": {"epoch": best["epoch"],
                                               **{k: best[k] for k in metric_keys}},
               "untrained": {k: start[k] for k in metric_keys if k in start}}
    if logs.is_main_process():
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    chance = (f", chance {100 * start['chance_recall@1']:.2f}"
              if "chance_recall@1" in start else "")
    logs.say(f"final (epoch {last['epoch']}): R@1 {100 * last['recall@1']:.2f} on unseen classes; "
             f"untrained {100 * start['recall@1']:.2f}{chance}. Metrics: "
             f"{os.path.join(workdir, 'metrics.jsonl')}")
    logs.say(f"best epoch {best['epoch']}: R@1 {100 * best['recall@1']:.2f} (selected on the "
             f"test set: not a fair number to report)")


def _summary_line(record, label):
    parts = [f"{label:>10}"]
    if "num_learners" in record:
        parts.append(f"K={record['num_learners']}")
    if "loss" in record:
        parts.append(f"loss {record['loss']:.4f}")
    parts += [f"{k.replace('recall', 'R')} {100 * v:.2f}" for k, v in record.items()
              if k.startswith("recall@")]
    if "images_per_second" in record:
        parts.append(f"{record['images_per_second']:.0f} img/s")
    return "  ".join(parts)

"""`train_and_evaluate(config, workdir)`: the Divide and Conquer epoch loop.

Per epoch: ask the schedule which phase this is; when it says so, embed the training set,
k-means it on device into K clusters, match the new clusters to the learners (Hungarian) and
drop singleton classes; then train every learner on its cluster with one jitted step per batch
(the `joint` layout) and evaluate Recall@K on the held-out test classes.
"""
from __future__ import annotations

import collections
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from dnc_jax import checkpoint as checkpoint_lib
from dnc_jax import logs
from dnc_jax import optim
from dnc_jax import parallel
from dnc_jax import steps
from dnc_jax.data import sampler as sampler_lib
from dnc_jax.data import sources
from dnc_jax.divide import kmeans as kmeans_lib
from dnc_jax.divide import masks as masks_lib
from dnc_jax.divide import matching
from dnc_jax.divide import schedule
from dnc_jax.evaluation import retrieval
from dnc_jax.losses import make_loss
from dnc_jax.models.embedder import make_embedder
from dnc_jax.models.variables import initial_variables


def compute_dtype(name: str):
    if name == "auto":
        return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
    if name not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'auto', 'float32' or 'bfloat16', got {name!r}")
    return jnp.dtype(name).type


class Trainer:
    """Holds the compiled functions and the data of one run; the state is passed around."""

    def __init__(self, config, datasets, mesh):
        self.config = config
        self.mesh = mesh
        self.train_set, self.test_set = datasets["train"], datasets["test"]
        self.k_max = config.divide.num_learners
        self.dim = config.model.embedding_dim
        parallel.check_global_batch(config.data.batch_size, mesh)
        parallel.check_global_batch(config.data.eval_batch_size, mesh,
                                    "data.eval_batch_size")
        self.model = make_embedder(config.model, compute_dtype(config.dtype))
        self.optimizer = optim.make_optimizer(config.optim)
        loss_fn = make_loss(config.loss, self.k_max, config.data.samples_per_class)
        replicated = parallel.replicated(mesh)
        self.train_step = jax.jit(
            steps.make_train_step(self.model, self.optimizer, loss_fn, config.augment),
            donate_argnums=(0,), out_shardings=(replicated, replicated))
        self.embed_step = jax.jit(steps.make_embed_step(self.model, config.augment))

    def init_state(self, rng):
        params, batch_stats = initial_variables(self.model, self.config.model, self.k_max, rng,
                                                self.config.augment.image_size)
        state = steps.create_train_state(params, batch_stats, self.optimizer)
        return parallel.put_replicated(state, self.mesh)

    # -- embedding passes ------------------------------------------------------------------
    def embed(self, state, images, slices):
        """Embeds every image with the eval transform; returns device arrays [N, ...]."""
        n, b = len(images), self.config.data.eval_batch_size
        outs = collections.defaultdict(list)
        slices = parallel.put_replicated(slices, self.mesh)
        for start in range(0, n, b):
            rows = np.arange(start, start + b)
            rows = np.minimum(rows, n - 1)  # pad the last batch with the last image
            batch = parallel.put_rows(images, rows, self.mesh)
            out = self.embed_step(state.params, state.batch_stats, batch, slices)
            for k, v in out.items():
                outs[k].append(v)
        return {k: jnp.concatenate(v)[:n] for k, v in outs.items()}

    def evaluate(self, state, slices):
        emb = self.embed(state, self.test_set.images, slices)["embedding"]
        recall = retrieval.recall_at_k(emb, self.test_set.labels,
                                       ks=tuple(self.config.eval.recall_ks),
                                       block_size=self.config.eval.block_size)
        return {f"recall@{k}": v for k, v in recall.items()}

    # -- clustering ------------------------------------------------------------------------
    def cluster(self, state, slices, num_learners, previous, rng):
        """Embed -> k-means on device -> match to the previous learners -> drop singletons."""
        labels = self.train_set.labels
        if num_learners == 1:
            return sampler_lib.remove_singletons(labels, np.zeros(len(labels), np.int32)), {}
        out = self.embed(state, self.train_set.images, slices)
        x = out["features" if self.config.divide.cluster_on == "features" else "embedding"]
        result = kmeans_lib.kmeans_jit(
            x, num_learners, rng, n_init=self.config.divide.kmeans_restarts,
            max_iter=self.config.divide.kmeans_iterations, init=self.config.divide.kmeans_init)
        assignment = np.asarray(result.assignment, np.int32)
        info = {"kmeans_inertia": float(result.inertia)}
        if previous is not None and previous.max() == num_learners - 1:
            perm = matching.match_clusters(previous, assignment, num_learners)
            info["matching_cost"] = float(matching.matching_cost(previous, assignment, perm,
                                                                 num_learners))
            assignment = matching.relabel(assignment, perm)
        return sampler_lib.remove_singletons(labels, assignment), info

    # -- one epoch of training -------------------------------------------------------------
    def train_epoch(self, state, sampler, epoch, slices, masks, rng):
        cfg = self.config
        slices = parallel.put_replicated(slices, self.mesh)
        masks = parallel.put_replicated(masks, self.mesh)
        labels = self.train_set.labels

        def batches():
            for b in sampler.epoch(epoch):
                yield {
                    "images": parallel.put_rows(self.train_set.images, b.indices, self.mesh),
                    "labels": parallel.put_rows(labels, b.indices, self.mesh),
                    "learners": parallel.put_rows(b.learners, np.arange(len(b.indices)),
                                                  self.mesh),
                    "valid": parallel.put_rows(b.valid, np.arange(len(b.indices)), self.mesh),
                }

        bar = logs.progress_bar(sampler.steps_per_epoch, f"epoch {epoch}", cfg.progress)
        pending, history = collections.deque(), []
        start = time.time()
        for batch in _prefetch(batches(), size=2):
            state, metrics = self.train_step(state, batch, slices, masks, rng)
            pending.append(metrics)
            # Read metrics a few steps late so the host never waits on the device.
            while len(pending) > 2:
                history.append(jax.device_get(pending.popleft()))
            bar.update(1)
            if history and bar.n % cfg.log_every_steps == 0:
                bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
        history.extend(jax.device_get(list(pending)))
        bar.close()
        seconds = time.time() - start
        losses = np.array([h["loss"] for h in history])
        per_learner = np.mean([h["loss_per_learner"] for h in history], axis=0)
        if not np.all(np.isfinite(losses)):
            bad = int(np.flatnonzero(~np.isfinite(losses))[0])
            raise FloatingPointError(f"non-finite loss at epoch {epoch}, step {bad} of the epoch")
        summary = {
            "loss": float(losses.mean()),
            "loss_per_learner": per_learner[:sampler.num_learners].tolist(),
            "steps": len(history),
            "images_per_second": len(history) * cfg.data.batch_size / max(seconds, 1e-9),
            "epoch_seconds": seconds,
        }
        return state, summary


def _prefetch(iterator, size):
    """Keeps `size` batches placed on the devices ahead of the step that consumes them."""
    queue = collections.deque()
    for item in iterator:
        queue.append(item)
        if len(queue) >= size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def phase_arrays(divide_config, phase, k_max, dim):
    slices = masks_lib.contiguous_slices(phase.num_learners, k_max, dim)
    masks = masks_lib.full_embedding_masks(k_max, dim) if phase.full_embedding else slices
    return slices, masks


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


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains and evaluates; returns the last epoch's metrics record."""
    # Data first: a missing data set must fail before anything is written.
    datasets = sources.load_dataset(config.data)
    os.makedirs(workdir, exist_ok=True)
    mesh = parallel.make_mesh()
    trainer = Trainer(config, datasets, mesh)
    writer = logs.MetricsWriter(workdir)
    if logs.is_main_process():
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))

    rng = jax.random.key(config.seed)
    init_rng, train_rng, cluster_rng = jax.random.split(rng, 3)
    state = trainer.init_state(init_rng)
    ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                       keep=config.checkpoint.keep)
    restored = ckpt.restore_latest(state, len(trainer.train_set.labels))
    if restored is None:
        start_epoch, assignment = 0, None
        slices0, _ = phase_arrays(config.divide, schedule.phase(config.divide, 0),
                                  trainer.k_max, trainer.dim)
        record = {"epoch": -1, **trainer.evaluate(state, slices0),
                  "chance_recall@1": chance_recall_at_1(trainer.test_set.labels)}
        writer.write(record)
        logs.say(f"{len(trainer.train_set.labels)} training images of "
                 f"{len(np.unique(trainer.train_set.labels))} classes; test on "
                 f"{len(trainer.test_set.labels)} images of "
                 f"{len(np.unique(trainer.test_set.labels))} unseen classes; "
                 f"chance R@1 {100 * record['chance_recall@1']:.2f}")
        logs.say(_summary_line(record, "untrained"))
    else:
        state, assignment, last_epoch = restored
        start_epoch = last_epoch + 1
        writer.truncate_after(last_epoch)
        logs.say(f"resumed {workdir} after epoch {last_epoch}")

    record = {}
    for epoch in range(start_epoch, config.num_epochs):
        phase = schedule.phase(config.divide, epoch)
        slices, masks = phase_arrays(config.divide, phase, trainer.k_max, trainer.dim)
        record = {"epoch": epoch, "num_learners": phase.num_learners,
                  "full_embedding": phase.full_embedding}
        if assignment is None or schedule.needs_new_assignment(config.divide, epoch):
            t0 = time.time()
            previous = assignment if assignment is not None and not phase.whole_dataset else None
            assignment, info = trainer.cluster(state, slices, phase.num_learners, previous,
                                               jax.random.fold_in(cluster_rng, epoch))
            stats = cluster_stats(trainer.train_set.labels, assignment, phase.num_learners)
            record.update(info, **stats, recluster_seconds=time.time() - t0)
            logs.say(f"{'':>10}  clusters: {stats['cluster_sizes']} images, "
                     f"{stats['cluster_classes']} classes, {stats['removed_images']} singletons "
                     f"set aside ({record['recluster_seconds']:.1f} s)")
        sampler = sampler_lib.make_sampler(
            config.divide.learner_schedule, trainer.train_set.labels, assignment,
            phase.num_learners, config.data.batch_size, config.data.samples_per_class,
            config.seed)
        state, summary = trainer.train_epoch(state, sampler, epoch, slices, masks, train_rng)
        record.update(summary)
        if (epoch + 1) % config.eval.every_epochs == 0 or epoch == config.num_epochs - 1:
            record.update(trainer.evaluate(state, slices))
        writer.write(record)
        logs.say(_summary_line(record, f"epoch {epoch}"))
        if (epoch + 1) % config.checkpoint.every_epochs == 0 or epoch == config.num_epochs - 1:
            ckpt.save(epoch, state, assignment)
    ckpt.wait()
    _final_summary(writer, workdir)
    return record


def _final_summary(writer, workdir):
    records = writer.read()
    start = next((r for r in records if r.get("epoch") == -1), None)
    last = next((r for r in reversed(records) if "recall@1" in r and r.get("epoch", -1) >= 0),
                None)
    if start is None or last is None:
        return
    logs.say(f"final (epoch {last['epoch']}): R@1 {100 * last['recall@1']:.2f} on unseen classes; "
             f"untrained {100 * start['recall@1']:.2f}, chance "
             f"{100 * start['chance_recall@1']:.2f}. Metrics: "
             f"{os.path.join(workdir, 'metrics.jsonl')}")


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

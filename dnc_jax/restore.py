"""Loading a trained run for use: `load_trained(workdir)`, shared by `embed` and `search`.

    from dnc_jax.restore import load_trained
    config, model, model_params, batch_stats, slices, embed_fn = load_trained("runs/sop")
    embeddings = embed_fn(images)   # float32 [N, d], the evaluation embedding of an
                                    # EncodedImages (image files) or of uint8 rows

The model is rebuilt from WORKDIR/config.json exactly as training built it, and only the
network's parameters and BN statistics are read from the newest readable checkpoint (orbax
partial restore of `arrays/state/{params/model, batch_stats}`). The optimiser state, the loss
parameters and the cluster assignment are left on disk: their shapes depend on the training
set (number of images, of classes), which a user of the model need not have.

`slices` are those of the checkpoint's epoch (`schedule.phase` -> `train.phase_arrays`), so the
embedding is the one that epoch's evaluation scored: the separately L2-normalised learner
blocks, concatenated (norm sqrt(number of blocks)).
"""
from __future__ import annotations

import collections
import json
import os
import re
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dnc_jax import feed
from dnc_jax import parallel
from dnc_jax import steps
from dnc_jax import train
from dnc_jax.divide import schedule
from dnc_jax.models.embedder import make_embedder


class RestoreError(Exception):
    """A workdir that cannot be used: its message is one line naming the path at fault."""


class TrainedModel(NamedTuple):
    config: ml_collections.ConfigDict
    model: Any                 # the flax Embedder
    model_params: Any          # params['model'] of the train state
    batch_stats: Any
    slices: np.ndarray         # [K_max, d] blocks of the evaluation embedding
    embed_fn: "EmbedFn"


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """The run's config from WORKDIR/config.json (written by training at its start)."""
    if not os.path.isdir(workdir):
        raise RestoreError(f"run folder not found: {workdir} does not exist")
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise RestoreError(f"{path} does not exist: {workdir} is not a training run folder "
                           f"(pass --workdir of a run started by dnc_jax.main)")
    try:
        with open(path) as f:
            return ml_collections.ConfigDict(json.load(f))
    except (OSError, ValueError) as e:
        raise RestoreError(f"cannot read {path}: {e}") from None


def restore_network(checkpoint_dir: str, params_template, stats_template, mesh):
    """(model params, batch_stats, meta, step) of the newest checkpoint that reads.

    Like `Checkpointer.restore_latest`, a damaged checkpoint is skipped with a warning; one that
    does not match the model built from config.json (shapes) fails the same way on every step,
    and the newest step's error is reported.
    """
    import orbax.checkpoint as ocp  # imported here: it is slow to import and only needed here

    if not os.path.isdir(checkpoint_dir):
        raise RestoreError(f"no checkpoints: {checkpoint_dir} does not exist (the run has not "
                           f"finished an epoch yet?)")
    # Only ever restored from: nothing is created, saved or deleted. (read_only=True would say
    # so too, but it logs two warnings on every use.)
    manager = ocp.CheckpointManager(os.path.abspath(checkpoint_dir),
                                    options=ocp.CheckpointManagerOptions(create=False))
    all_steps = sorted(manager.all_steps(), reverse=True)
    if not all_steps:
        manager.close()
        raise RestoreError(f"no checkpoints in {checkpoint_dir} (the run has not finished an "
                           f"epoch yet?)")
    replicated = parallel.replicated(mesh)
    # Restored straight onto this machine's devices: the saved sharding may name devices of
    # another machine (a run trained on 8 GPUs, used on a laptop).
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
        {"state": {"params": {"model": params_template}, "batch_stats": stats_template}})
    restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), target)
    errors = []
    try:
        for step in all_steps:
            try:
                item = manager.restore(step, args=ocp.args.Composite(
                    arrays=ocp.args.PyTreeRestore(target, restore_args=restore_args,
                                                  partial_restore=True),
                    meta=ocp.args.JsonRestore()))
            except Exception as e:  # orbax raises many types for damaged or mismatched files
                errors.append((step, _explain(e)))
                if step != all_steps[-1]:
                    print(f"dnc_jax: warning: checkpoint at step {step} cannot be read "
                          f"({errors[-1][1]}); trying the one before it", flush=True)
                continue
            state = item["arrays"]["state"]
            return state["params"]["model"], state["batch_stats"], dict(item["meta"]), step
    finally:
        manager.close()  # its threads left running make the interpreter's exit noisy
    step, reason = errors[0]
    raise RestoreError(f"no readable checkpoint in {checkpoint_dir}; the newest (step {step}): "
                       f"{reason}")


def _explain(error: Exception) -> str:
    """One line for a failed restore; orbax's shape-mismatch advice (strict=False) is wrong here."""
    text = str(error).strip() or type(error).__name__
    mismatch = re.search(r"Requested shape: (\(.*?\)) is not compatible with the stored "
                         r"shape: (\(.*?\))", text)
    if mismatch:
        return (f"its arrays do not fit the model config.json describes (an array of shape "
                f"{mismatch[2]} where the model has {mismatch[1]}): was config.json edited?")
    return text.splitlines()[0][:300]


class EmbedFn:
    """`embed_fn(images, sizes=None) -> float32 [N, d]`: the evaluation embedding.

    `images` is either an `EncodedImages` (image files through the image cache: the eval views
    are cut on the host at their own resolution) or uint8 rows [N, S, S, 3] (any row-indexable
    array) whose eval view the device computes, `sizes` int32 [N, 2] their original (height,
    width) or None when the rows are the originals. `embed_views(views)` embeds eval views
    already cut (uint8 [N, out, out, 3]). The same batches as `Trainer.embed`
    (`dnc_jax.feed.embed_batches`): fixed batches of `batch_size` rows, the last padded with
    its final image, so one compiled program serves every call. Carries the provenance of the
    weights: `step`, `epoch`, `checkpoint_dir`.
    """

    def __init__(self, model, config, model_params, batch_stats, slices, mesh, batch_size,
                 step, epoch, checkpoint_dir):
        self.step, self.epoch, self.checkpoint_dir = step, epoch, checkpoint_dir
        self.batch_size = batch_size
        self._config = config
        self._mesh = mesh
        self._variables = (model_params, batch_stats)
        self._slices = parallel.put_replicated(slices, mesh)
        self._steps = {cut: jax.jit(steps.make_embed_step(model, config.augment, cut))
                       for cut in (False, True)}
        self._loader = None

    def _view_loader(self):
        if self._loader is None:
            self._loader = feed.view_loader(self._config)
        return self._loader

    def __call__(self, images, sizes=None, progress: bool = False) -> np.ndarray:
        cut = feed.host_cut(images)
        loader = self._view_loader() if cut else None
        return self._run(feed.embed_batches(images, sizes, self.batch_size, self._mesh, loader),
                         len(images), self._steps[cut], progress)

    def embed_views(self, views, progress: bool = False) -> np.ndarray:
        """float32 [N, d] of eval views already cut, uint8 [N, out, out, 3]."""
        views = np.asarray(views)
        batches = ((b, None) for b, _ in feed.embed_batches(views, None, self.batch_size,
                                                             self._mesh))
        return self._run(batches, len(views), self._steps[True], progress)

    def _run(self, batches, n, embed_step, progress):
        from dnc_jax import logs

        outs, pending = [], collections.deque()
        bar = logs.progress_bar(-(-n // self.batch_size), "embed", progress)
        for batch, batch_sizes in batches:
            out = embed_step(*self._variables, batch, batch_sizes, self._slices)
            pending.append(out["embedding"])
            # Fetched one batch late, so the device is never idle waiting on the host, and a
            # large image set never has to fit in device memory.
            while len(pending) > 1:
                outs.append(np.asarray(jax.device_get(pending.popleft())))
            bar.update(1)
        outs += [np.asarray(jax.device_get(x)) for x in pending]
        bar.close()
        if not outs:
            return np.zeros((0, self._slices.shape[1]), np.float32)
        return np.concatenate(outs)[:n].astype(np.float32)

    def close(self):
        if self._loader is not None:
            self._loader.close()
            self._loader = None


def load_trained(workdir: str, batch_size: Optional[int] = None) -> TrainedModel:
    """(config, model, model_params, batch_stats, slices, embed_fn) of a training run folder.

    `batch_size`: images per embedding step (default: the run's data.eval_batch_size); it must
    be divisible by the number of devices. Raises RestoreError (one line, naming the path) for
    a folder that is not a run, has no checkpoint, or whose checkpoints do not match its config.
    """
    config = read_config(workdir)
    mesh = parallel.make_mesh()
    batch_size = batch_size or config.data.eval_batch_size
    if batch_size % mesh.devices.size:
        raise RestoreError(f"batch size {batch_size} must be divisible by the "
                           f"{mesh.devices.size} devices")
    model = make_embedder(config.model, train.compute_dtype(config.dtype))
    # Shapes only (eval_shape runs nothing): training's `initial_variables` would also read
    # the pretrained backbone, which the checkpoint's values replace anyway.
    side = config.augment.image_size
    variables = jax.eval_shape(
        lambda rng: model.init({"params": rng}, jnp.zeros((1, side, side, 3), jnp.float32),
                               train=False), jax.random.key(0))
    params, batch_stats, meta, step = restore_network(
        os.path.join(workdir, "checkpoints"), variables["params"],
        variables.get("batch_stats", {}), mesh)
    epoch = int(meta["epoch"])
    slices = np.asarray(train.phase_arrays(config, schedule.phase(config.divide, epoch))["slices"])
    embed_fn = EmbedFn(model, config, params, batch_stats, slices, mesh, batch_size, step, epoch,
                       os.path.join(workdir, "checkpoints"))
    return TrainedModel(config, model, params, batch_stats, slices, embed_fn)

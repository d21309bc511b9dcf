"""Loading a trained run for use: `load_trained(workdir)`, shared by `embed` and `search`.

    from dnc_jax.inference.restore import load_trained
    config, model, model_params, batch_stats, slices, embed_fn = load_trained("runs/sop")
    embeddings = embed_fn(images)   # float32 [N, d], the evaluation embedding of an
                                    # EncodedImages (image files) or of uint8 rows

The model is rebuilt from WORKDIR/config.json exactly as training built it, and only the
network's parameters and BN statistics are read from the newest readable checkpoint (orbax
partial restore of `arrays/state/{params/model, batch_stats}`). The optimiser state, the loss
parameters and the cluster assignment are left on disk: their shapes depend on the training
set (number of images, of classes), which a user of the model need not have.

`slices` are those of the checkpoint's epoch (`schedule.phase` -> `masks.phase_arrays`), so the
embedding is the one that epoch's evaluation scored: the separately L2-normalised learner
blocks, concatenated (norm sqrt(number of blocks)). Nothing of training is imported: using a
model needs only its config, its network and the embedding pass (`dnc_jax.inference.embedding`).
"""
from __future__ import annotations

import json
import os
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dnc_jax import checkpoint as checkpoint_lib
from dnc_jax import compile_cache
from dnc_jax import defaults
from dnc_jax.inference import embedding
from dnc_jax import parallel
from dnc_jax.divide import masks as masks_lib
from dnc_jax.divide import schedule
from dnc_jax.errors import RestoreError
from dnc_jax.models.embedder import compute_dtype, make_embedder


class TrainedModel(NamedTuple):
    """A trained run, as `load_trained` (and `dnc_jax.load_run`) return it."""

    config: ml_collections.ConfigDict
    model: Any                 # the flax Embedder
    model_params: Any          # params['model'] of the train state
    batch_stats: Any
    slices: np.ndarray         # [K_max, d] blocks of the evaluation embedding
    embed_fn: "EmbedFn"


def read_config(workdir: str, overrides=()) -> ml_collections.ConfigDict:
    """The run's config from WORKDIR/config.json (written by training at its start), completed
    as an older run is (`defaults.complete`), with `overrides` ('key=value' strings, e.g.
    'data.root=/new/place' when the data moved) applied to its scalars."""
    if not os.path.isdir(workdir):
        raise RestoreError(f"run folder not found: {workdir} does not exist")
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise RestoreError(f"{path} does not exist: {workdir} is not a training run folder "
                           f"(pass --workdir of a run started by dnc_jax.main)")
    try:
        with open(path) as f:
            config = defaults.complete(ml_collections.ConfigDict(json.load(f)))
    except (OSError, ValueError) as e:
        raise RestoreError(f"cannot read {path}: {e}") from None
    for item in overrides:
        _override(config, item)
    return config


def _override(config, item: str) -> None:
    key, sep, value = item.partition("=")
    node = config
    *parents, leaf = key.split(".")
    try:
        for p in parents:
            node = node[p]
        old = node[leaf]
    except (KeyError, AttributeError, TypeError):
        raise RestoreError(f"--set={item}: the run's config has no key {key!r}") from None
    if not sep or isinstance(old, (dict, ml_collections.ConfigDict, list, tuple)):
        raise RestoreError(f"--set={item}: expected key=value for a scalar key") from None
    try:
        node[leaf] = (value.lower() in ("1", "true", "yes") if isinstance(old, bool)
                      else type(old)(value))
    except ValueError:
        raise RestoreError(f"--set={item}: {value!r} is not a {type(old).__name__}") from None


class EmbedFn:
    """`embed_fn(images, sizes=None) -> float32 [N, d]`: the evaluation embedding.

    `images` is either an `EncodedImages` (image files through the image cache: the eval views
    are cut on the host at their own resolution) or uint8 rows [N, S, S, 3] (any row-indexable
    array) whose eval view the device computes, `sizes` int32 [N, 2] their original (height,
    width) or None when the rows are the originals. `embed_views(views)` embeds eval views
    already cut (uint8 [N, out, out, 3]). The embedding pass is training's own
    (`dnc_jax.inference.embedding.EmbeddingPass`). Carries the provenance of the weights: `step`,
    `epoch`, `complete` (whether at an epoch's end) and `checkpoint_dir`.
    """

    def __init__(self, model, config, model_params, batch_stats, slices, mesh, batch_size,
                 step, epoch, checkpoint_dir, complete=True):
        self.step, self.epoch, self.checkpoint_dir = step, epoch, checkpoint_dir
        self.complete = complete
        self.batch_size = batch_size
        self._variables = (model_params, batch_stats)
        self._slices = slices
        self._pass = embedding.EmbeddingPass(model, config, mesh, batch_size)

    def __call__(self, images, sizes=None, progress: bool = False) -> np.ndarray:
        return self._pass(self._variables, images, self._slices, sizes, to_host=True,
                          progress=progress)["embedding"]

    def embed_views(self, views, progress: bool = False) -> np.ndarray:
        """float32 [N, d] of eval views already cut, uint8 [N, out, out, 3]."""
        return self._pass.views(self._variables, views, self._slices, progress)

    def close(self):
        self._pass.close()


def load_trained(workdir: str, batch_size: Optional[int] = None, overrides=()) -> TrainedModel:
    """(config, model, model_params, batch_stats, slices, embed_fn) of a training run folder.

    `batch_size`: images per embedding step (default: the run's data.eval_batch_size); it must
    be divisible by the number of devices. Raises RestoreError (one line, naming the path) for
    a folder that is not a run, has no checkpoint, or whose checkpoints do not match its config.
    """
    config = read_config(workdir, overrides)
    # The run's persistent compilation cache: evaluate, embed, search and export load the
    # programs an earlier call compiled (the environment's JAX_COMPILATION_CACHE_DIR wins).
    compile_cache.enable(config.compilation_cache_dir)
    mesh = parallel.make_mesh()
    batch_size = batch_size or config.data.eval_batch_size
    if batch_size % mesh.devices.size:
        raise RestoreError(f"batch size {batch_size} must be divisible by the "
                           f"{mesh.devices.size} devices")
    model = make_embedder(config.model, compute_dtype(config.dtype))
    # Shapes only (eval_shape runs nothing): training's `initial_variables` would also read
    # the pretrained backbone, which the checkpoint's values replace anyway.
    side = config.augment.image_size
    variables = jax.eval_shape(
        lambda rng: model.init({"params": rng}, jnp.zeros((1, side, side, 3), jnp.float32),
                               train=False), jax.random.key(0))
    checkpoint_dir = checkpoint_lib.directory(workdir)
    params, batch_stats, meta, step = checkpoint_lib.restore_network(
        checkpoint_dir, variables["params"], variables.get("batch_stats", {}), mesh)
    epoch = int(meta["epoch"])
    slices = np.asarray(masks_lib.phase_arrays(config, schedule.phase(config.divide,
                                                                      epoch))["slices"])
    embed_fn = EmbedFn(model, config, params, batch_stats, slices, mesh, batch_size, step, epoch,
                       checkpoint_dir, complete=bool(meta["complete"]))
    return TrainedModel(config, model, params, batch_stats, slices, embed_fn)

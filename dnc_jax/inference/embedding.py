"""The embedding pass: the evaluation view of every image of a set through the network.

One pass serves the whole project: training's clustering (the features of the training set)
and evaluation (`trainer.Trainer.embed`), and the trained-model API behind `embed`, `search` and
`evaluate` (`restore.EmbedFn`). It cuts fixed batches of `batch_size` rows (the last padded
with its final image, `feed.embed_batches`), so one compiled program serves every call.

    embed = EmbeddingPass(model, config, mesh)
    out = embed((model_params, batch_stats), image_set.images, slices, image_set.sizes)
    out["embedding"]    # [N, d] the evaluation embedding, a device array
"""
from __future__ import annotations

import collections
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from dnc_jax import defaults
from dnc_jax.data import feed
from dnc_jax import logs
from dnc_jax import parallel
from dnc_jax.data.views import augment, view_cache
from dnc_jax.divide import masks as masks_lib

OUTPUTS = ("embedding", "features")


def make_embed_step(model, aug_config, host_cut: bool = False):
    """Returns `embed_step(model_params, batch_stats, images, sizes, slices) -> dict`.

    `images` are uint8 rows whose eval view (torchvision's Resize + CenterCrop) is computed
    here, in the coordinates of `sizes` [B, 2] (original height, width of resized rows; None
    when the rows are the originals); with `host_cut`, they are the eval views already, cut
    on the host from image files, and are only normalised.
    `embedding` is the evaluation embedding (the separately normalised blocks, concatenated:
    docs/method.md §1.2.6; with one block, the normalised output, §1.3.6), `features` the
    L2-normalised pooled backbone features used for clustering.
    """
    resize_size = augment.eval_resize_size(aug_config)
    normalization = defaults.filled(aug_config, "augment").normalization

    def embed_step(model_params, batch_stats, images, sizes, slices):
        if host_cut:
            views = augment.normalize(images.astype(jnp.float32), normalization)
        else:
            views = augment.eval_views(images, sizes, aug_config.image_size, resize_size,
                                       normalization)
        views = views.astype(model.dtype)
        out = model.apply({"params": model_params, "batch_stats": batch_stats}, views,
                          train=False)
        return {"embedding": masks_lib.sliced_output(out["embedding"], slices),
                "features": out["features"]}

    return embed_step


class EmbeddingPass:
    """`pass_(variables, images, slices, sizes=None) -> {output: [N, ...]}` for a model.

    `variables` is (model params, batch_stats); `images` an `EncodedImages` (image files: the
    eval views are cut on the host by `loader`'s worker processes) or uint8 rows [N, S, S, 3]
    whose eval view the device computes in the coordinates of `sizes` (int32 [N, 2], None when
    the rows are the originals); `slices` the phase's [K_max, d] blocks. `loader`: a
    `ViewLoader` to share (training's own); without one, a pool is started when image files
    first come and closed by `close()`.
    """

    def __init__(self, model, config, mesh, batch_size=None, loader=None, cache_views=False):
        self.batch_size = batch_size or config.data.eval_batch_size
        self._model, self._config, self._mesh = model, config, mesh
        self._steps = {}  # host_cut -> its jitted embed step, compiled when first used
        self._loader, self._owns_loader = loader, loader is None
        # Image files embedded again and again (training's passes): their eval views are kept
        # after the first pass (`data/views/view_cache.py`), one cache per image set.
        self._cache_views = cache_views
        self._view_caches = {}  # id(images) -> (images, ViewCache)

    def _step(self, cut: bool):
        if cut not in self._steps:
            self._steps[cut] = jax.jit(make_embed_step(self._model, self._config.augment, cut))
        return self._steps[cut]

    def _view_loader(self):
        if self._loader is None:
            self._loader = feed.view_loader(self._config)
        return self._loader

    def __call__(self, variables, images, slices, sizes=None, *, outputs=("embedding",),
                 to_host=False, progress=False) -> dict:
        """The outputs (of `OUTPUTS`) for rows 0..N-1: device arrays, which the clustering
        consumes where they are, or with `to_host` float32 numpy arrays fetched one batch late
        (the device is never idle waiting on the host, and a large image set never has to fit
        in device memory)."""
        cut = feed.host_cut(images)
        batches = feed.embed_batches(images, sizes, self.batch_size, self._mesh,
                                     self._view_loader() if cut else None,
                                     self._view_cache(images) if cut else None)
        return self._run(variables, batches, len(images), self._step(cut), slices, outputs,
                         to_host, progress)

    def _view_cache(self, images):
        if not self._cache_views:
            return None
        if id(images) not in self._view_caches:  # the images are held: their id stays theirs
            folder = os.path.expanduser(self._config.data.cache_dir or tempfile.gettempdir())
            self._view_caches[id(images)] = (images, view_cache.ViewCache(
                len(images), self._config.augment.image_size, folder))
        return self._view_caches[id(images)][1]

    def views(self, variables, views, slices, progress=False) -> np.ndarray:
        """float32 [N, d] embedding of eval views already cut, uint8 [N, out, out, 3]."""
        views = np.asarray(views)
        batches = ((b, None) for b, _ in feed.embed_batches(views, None, self.batch_size,
                                                             self._mesh))
        return self._run(variables, batches, len(views), self._step(True), slices,
                         ("embedding",), True, progress)["embedding"]

    def _run(self, variables, batches, n, embed_step, slices, outputs, to_host, progress):
        slices = parallel.put_replicated(np.asarray(slices), self._mesh)
        done = collections.defaultdict(list)
        pending = collections.deque()
        bar = logs.progress_bar(-(-n // self.batch_size), "embed", progress)
        for batch, batch_sizes in batches:
            out = embed_step(*variables, batch, batch_sizes, slices)
            pending.append({k: out[k] for k in outputs})
            while to_host and len(pending) > 1:
                _collect(done, pending.popleft(), to_host)
            bar.update(1)
        while pending:
            _collect(done, pending.popleft(), to_host)
        bar.close()
        if not done:
            return {k: np.zeros((0, slices.shape[1]), np.float32) for k in outputs}
        return _concatenate(done, n, to_host)

    def close(self):
        """Stops the view workers this pass started (a shared loader is its owner's)."""
        if self._owns_loader and self._loader is not None:
            self._loader.close()
            self._loader = None
        for _, cache in self._view_caches.values():
            cache.close()
        self._view_caches = {}


def _concatenate(done, n, to_host):
    """{output: [n, ...]} of the batches' outputs, the last batch's padding cut off."""
    if to_host:
        return {k: np.concatenate(v)[:n].astype(np.float32) for k, v in done.items()}
    return {k: jnp.concatenate(v)[:n] for k, v in done.items()}


def _collect(done, out, to_host):
    for k, v in out.items():
        done[k].append(np.asarray(jax.device_get(v)) if to_host else v)

"""Host -> device input batches, for training and for every embedding pass.

Two kinds of image storage reach the device differently:

- arrays of rows (the rendered glyphs, any uint8 [N, S, S, 3] array, with or without original
  sizes): the rows are gathered and the device computes the views (`augment.py`);
- image files (`EncodedImages`, the image cache): the host decodes and cuts the views at the
  images' own resolution (`views/host_views.py`), in worker processes a few batches ahead,
  and the device only flips and normalises them.

Either way each process gathers or computes only the rows of its own devices, and a batch is a
dict of global arrays sharded on the leading axis. Train crops are a pure function of
(seed, epoch, step), so a resumed epoch cuts the crops an uninterrupted one does.
"""
from __future__ import annotations

import collections

import numpy as np

from dnc_jax import parallel
from dnc_jax.data.views import augment, host_views
from dnc_jax.data.store.encoded import EncodedImages

_CROP_STREAM = 0x43524f50  # separates the crop RNG from the sampler's, seeded alike


def host_cut(images) -> bool:
    """Whether the views of these images are cut on the host (image files)."""
    return isinstance(images, EncodedImages)


def view_loader(config, workers=None) -> host_views.ViewLoader:
    """The ViewLoader of a run's augment config; `data.view_workers` processes (-1: one per
    core, 0: in this process)."""
    aug = config.augment
    if workers is None:
        workers = config.data.view_workers
    if workers < 0:
        workers = host_views.default_workers()
    return host_views.ViewLoader(aug.image_size, augment.eval_resize_size(aug), workers)


def embed_batches(images, sizes, batch_size: int, mesh, loader=None, view_cache=None):
    """(images, sizes) device batches of `batch_size` rows covering rows 0..N-1 in order, the
    last one padded with the final row; `sizes` is None for host-cut views and for rows that
    are the originals. Host-cut views come from `view_cache` (a `ViewCache` of these images)
    where it holds this process's rows, else from `loader`, and are then written to it."""
    n = len(images)
    rows_of = [np.minimum(np.arange(s, s + batch_size), n - 1) for s in range(0, n, batch_size)]
    if host_cut(images):
        lo, hi = parallel.local_span(batch_size, mesh)
        local = [rows[lo:hi] for rows in rows_of]
        if view_cache is not None and view_cache.has(np.concatenate(local or [[]]).astype(int)):
            for rows in local:
                yield parallel.put_local(view_cache.read(rows), lo, batch_size, mesh), None
            return
        for rows, views in zip(local, loader.stream(images, ((r, None) for r in local))):
            if view_cache is not None:
                view_cache.write(rows, views)
            yield parallel.put_local(views, lo, batch_size, mesh), None
        return
    for rows in rows_of:
        yield (parallel.put_rows(images, rows, mesh),
               None if sizes is None else parallel.put_rows(sizes, rows, mesh))


def train_batches(data, plan, batch_size: int, mesh, loader, aug_config, seed: int,
                  epoch: int, start_step: int = 0):
    """Device batches of the sampler's Batches `plan` (those of `epoch` from `start_step`):
    `labels`, `learners`, `valid`, and `images` (+ `sizes`) rows or host-cut `views`."""

    def place(b, pixels):
        slots = np.arange(len(b.indices))
        return {"labels": parallel.put_rows(data.labels, b.indices, mesh),
                "learners": parallel.put_rows(b.learners, slots, mesh),
                "valid": parallel.put_rows(b.valid, slots, mesh), **pixels}

    if not host_cut(data.images):
        for b in plan:
            pixels = {"images": parallel.put_rows(data.images, b.indices, mesh)}
            if data.sizes is not None:
                pixels["sizes"] = parallel.put_rows(data.sizes, b.indices, mesh)
            yield place(b, pixels)
        return

    lo, hi = parallel.local_span(batch_size, mesh)
    planned = collections.deque()

    def requests():
        for step, b in enumerate(plan, start_step):
            planned.append(b)
            rng = np.random.default_rng([seed, epoch, step, _CROP_STREAM])
            # Boxes for the whole global batch, then this host's rows: the crops do not depend
            # on how many hosts share the batch.
            boxes = host_views.random_resized_crop_boxes(
                rng, data.sizes[b.indices], tuple(aug_config.crop_scale),
                tuple(aug_config.crop_ratio))
            yield b.indices[lo:hi], boxes[lo:hi]

    for views in loader.stream(data.images, requests()):
        yield place(planned.popleft(), {"views": parallel.put_local(views, lo, batch_size,
                                                                    mesh)})

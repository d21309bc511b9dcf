"""Image files through the trainer's feed: host-cut crops per (seed, epoch, step), resumable,
one compiled train step for every batch, eval views in order."""
import os

import chex
import jax
import numpy as np
from PIL import Image

from dnc_jax.data import feed
from dnc_jax.training import steps
from dnc_jax import parallel
from dnc_jax.divide import masks
from dnc_jax.data.views import host_views, view_cache
from dnc_jax.data.store.cache import cached_images
from dnc_jax.data.store.image_set import ImageSet
from dnc_jax.data.sampling import make_sampler
from dnc_jax.divide import schedule
from tests.helpers import tiny_config
from tests.test_train_step import _state, _trainer_parts


def _files_set(tmp_path, classes=6, per_class=4):
    rng = np.random.default_rng(0)
    files, labels = [], []
    for c in range(classes):
        for j in range(per_class):
            h, w = 20 + 3 * j, 28 + 5 * (c % 3)
            path = str(tmp_path / f"{c}-{j}.jpg")
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
            files.append(path)
            labels.append(c)
    images, sizes = cached_images(files, str(tmp_path / "cache"), "set", workers=1,
                                  progress=False)
    labels = np.asarray(labels, np.int32)
    return files, ImageSet(images=images, labels=labels,
                           class_names=[str(c) for c in range(classes)], sizes=sizes,
                           paths=files)


def _epoch(data, sampler, config, epoch, start_step=0):
    mesh = parallel.make_mesh()
    loader = host_views.ViewLoader(config.augment.image_size, 18)
    return [jax.device_get(b) for b in feed.train_batches(
        data, sampler.epoch(epoch, start_step), config.data.batch_size, mesh, loader,
        config.augment, config.seed, epoch, start_step)]


def test_crops_are_a_function_of_the_step_and_resume_exactly(tmp_path):
    files, data = _files_set(tmp_path)
    config = tiny_config()
    config.data.batch_size = 8
    assignment = (data.labels % 2).astype(np.int32)
    sampler = make_sampler("round_robin", data.labels, assignment, 2, 8, 4, seed=0)
    whole = _epoch(data, sampler, config, epoch=3)
    resumed = _epoch(data, sampler, config, epoch=3, start_step=2)
    assert len(whole) == sampler.steps_per_epoch and len(resumed) == len(whole) - 2
    for a, b in zip(whole[2:], resumed):
        np.testing.assert_array_equal(a["views"], b["views"])
        np.testing.assert_array_equal(a["labels"], b["labels"])
    assert whole[0]["views"].shape == (8, 16, 16, 3) and whole[0]["views"].dtype == np.uint8
    assert "images" not in whole[0] and "sizes" not in whole[0]
    other = _epoch(data, sampler, config, epoch=4)
    assert any((a["views"] != b["views"]).any() for a, b in zip(whole, other))
    # Each view is the crop of its slot's image: its labels are the sampler's.
    for b, planned in zip(whole, sampler.epoch(3)):
        np.testing.assert_array_equal(b["labels"], data.labels[planned.indices])


def test_one_compiled_step_trains_on_host_cut_batches(tmp_path):
    files, data = _files_set(tmp_path)
    config = tiny_config()
    config.data.batch_size = 8
    k_max = 2
    model, optimizer, loss_fn = _trainer_parts(config, k_max)
    step = jax.jit(chex.assert_max_traces(
        steps.make_train_step(model, optimizer, loss_fn, config.augment), n=1),
        donate_argnums=(0,))
    mesh = parallel.make_mesh()
    state = parallel.put_replicated(_state(config, model, optimizer, k_max, False), mesh)
    phase = parallel.put_replicated(masks.phase_arrays(
        config, schedule.Phase(0, 2, False, False, False, False, False)), mesh)
    assignment = (data.labels % 2).astype(np.int32)
    sampler = make_sampler("round_robin", data.labels, assignment, 2, 8, 4, seed=0)
    loader = host_views.ViewLoader(16, 18)
    losses = []
    for epoch in range(2):
        for batch in feed.train_batches(data, sampler.epoch(epoch), 8, mesh, loader,
                                        config.augment, 0, epoch):
            state, metrics = step(state, batch, phase, jax.random.key(0))
            losses.append(float(metrics["loss"]))
    chex.clear_trace_counter()
    assert len(losses) == 2 * sampler.steps_per_epoch and np.isfinite(losses).all()


def test_embed_batches_cover_every_row_in_order(tmp_path):
    files, data = _files_set(tmp_path)
    loader = host_views.ViewLoader(16, 18)
    mesh = parallel.make_mesh()
    batches = list(feed.embed_batches(data.images, data.sizes, 10, mesh, loader))
    assert len(batches) == 3 and all(sizes is None for _, sizes in batches)
    views = np.concatenate([np.asarray(b) for b, _ in batches])
    want = loader.views(data.images, np.arange(len(files)))
    np.testing.assert_array_equal(views[:len(files)], want)
    np.testing.assert_array_equal(views[len(files):], np.repeat(want[-1:], 30 - len(files), 0))


def test_a_view_cache_serves_the_same_views_and_skips_the_decode(tmp_path):
    files, data = _files_set(tmp_path)
    loader = host_views.ViewLoader(16, 18)
    mesh = parallel.make_mesh()
    cache = view_cache.ViewCache(len(files), 16, str(tmp_path / "views"))
    assert os.listdir(tmp_path / "views") == []  # unlinked: gone with the process
    requests = []
    stream = loader.stream
    loader.stream = lambda images, reqs: stream(images, (requests.append(r) or r for r in reqs))
    first = [np.asarray(b) for b, _ in feed.embed_batches(data.images, data.sizes, 10, mesh,
                                                          loader, cache)]
    assert len(requests) == 3 and cache.filled.all()
    again = [np.asarray(b) for b, _ in feed.embed_batches(data.images, data.sizes, 10, mesh,
                                                          loader, cache)]
    assert len(requests) == 3  # the second pass decoded nothing
    plain = [np.asarray(b) for b, _ in feed.embed_batches(data.images, data.sizes, 10, mesh,
                                                          loader)]
    for a, b, c in zip(first, again, plain):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)
    # Consecutive rows are read in place; others gathered.
    assert np.shares_memory(cache.read(np.arange(3, 9)), cache.views)
    np.testing.assert_array_equal(cache.read(np.array([5, 2, 2])),
                                  np.concatenate(plain)[[5, 2, 2]])
    # A cache missing one row decodes the pass again (and fills it).
    cache.filled[7] = False
    before = len(requests)
    list(feed.embed_batches(data.images, data.sizes, 10, mesh, loader, cache))
    assert len(requests) == before + 3 and cache.filled.all()


def test_put_rows_reads_consecutive_rows_in_place_and_gathers_the_rest():
    source = np.arange(40, dtype=np.int32).reshape(10, 4)
    mesh = parallel.make_mesh()
    for rows in ([2, 3, 4, 5], [9, 9, 9, 9], [0, 2, 1, 3], [7, 8, 9, 9]):
        np.testing.assert_array_equal(np.asarray(parallel.put_rows(source, rows, mesh)),
                                      source[rows])

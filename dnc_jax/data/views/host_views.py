"""Network inputs cut on the host from the images at their own resolution, as torchvision cuts them.

For image files (`EncodedImages`) every view is computed from the decoded original with PIL,
by the very operations torchvision applies to a PIL image:

- train: `RandomResizedCrop(out, scale, ratio)`: the box drawn by `random_resized_crop_boxes`
  (torchvision's `get_params`, 10 attempts then the clamped centre crop), then
  `image.crop(box).resize((out, out), BILINEAR)`, which is `F.resized_crop`;
- eval and the clustering pass: `Resize(resize)` of the shorter side (the longer one
  `int(resize * long / short)`, BILINEAR), then `CenterCrop(out)` at offsets
  `int(round((side - out) / 2))`.

The device then flips (train) and normalises (`augment.py`). The views are uint8
[B, out, out, 3], smaller than a batch of cached rows, so the transfer shrinks too.

Why on the host: a fixed-shape device crop needs fixed-shape rows, and rows at a fixed size
either squash the detail of small crops (a 256 x 256 copy kept 0.2-0.35 of the high-frequency
energy of torchvision's crops at area 0.08) or, at the originals' resolution, take ten times the
disk of the files. Decoding the files' own bytes costs about 2 ms per 500 x 375 image and core
(bench/input_pipeline.py), so worker processes keep ahead of the accelerator.

Workers: `ViewLoader(workers=W)` runs W spawned processes (no JAX in them) that decode and crop
into memory-mapped buffers under /dev/shm, a few batches ahead of the step; W=0 works in the
calling process (tests, tiny data).
"""
from __future__ import annotations

import collections
import concurrent.futures
import math
import multiprocessing
import os
import tempfile
import uuid

import numpy as np

from dnc_jax.data.store.encoded import EncodedImages, decode_bytes

RRC_ATTEMPTS = 10  # torchvision's RandomResizedCrop.get_params


def random_resized_crop_boxes(rng: np.random.Generator, sizes, scale=(0.08, 1.0),
                              ratio=(3 / 4, 4 / 3)) -> np.ndarray:
    """int64 [B, 4] boxes (top, left, height, width) of torchvision's RandomResizedCrop.

    `sizes` [B, 2] (height, width). All RRC_ATTEMPTS draws are made at once and the first that
    fits is taken, else torchvision's fallback (the whole image, its aspect clamped to the ratio
    range, centred); top and left are drawn for the chosen box only, which has the distribution
    of torchvision drawing them for the accepted attempt.
    """
    sizes = np.asarray(sizes, np.float64).reshape(-1, 2)
    num = len(sizes)
    height, width = sizes[:, :1], sizes[:, 1:]
    area = height * width * rng.uniform(scale[0], scale[1], (num, RRC_ATTEMPTS))
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), (num, RRC_ATTEMPTS)))
    w = np.round(np.sqrt(area * aspect))   # half-to-even, like Python's round()
    h = np.round(np.sqrt(area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = np.argmax(fits, axis=1)
    found = fits.any(axis=1)
    rows = np.arange(num)
    h, w = h[rows, first], w[rows, first]
    height, width = height[:, 0], width[:, 0]
    in_ratio = width / np.maximum(height, 1)
    lo, hi = min(ratio), max(ratio)
    fb_w = np.where(in_ratio < lo, width, np.where(in_ratio > hi, np.round(height * hi), width))
    fb_h = np.where(in_ratio < lo, np.round(width / lo), height)
    h, w = np.where(found, h, fb_h), np.where(found, w, fb_w)
    top = np.floor(rng.random(num) * (height - h + 1))   # randint(0, H - h + 1)
    left = np.floor(rng.random(num) * (width - w + 1))
    top = np.where(found, top, (height - h) // 2)
    left = np.where(found, left, (width - w) // 2)
    return np.stack([top, left, h, w], axis=1).astype(np.int64)


def train_view(image, box, out_size: int) -> np.ndarray:
    """uint8 [out, out, 3]: torchvision's F.resized_crop of a PIL image, BILINEAR."""
    from PIL import Image

    top, left, h, w = (int(v) for v in box)
    crop = image.crop((left, top, left + w, top + h))
    return np.asarray(crop.resize((out_size, out_size), Image.BILINEAR))


def eval_view(image, out_size: int, resize_size: int) -> np.ndarray:
    """uint8 [out, out, 3]: torchvision's Resize(resize_size) then CenterCrop(out_size)."""
    from PIL import Image

    if resize_size < out_size:
        raise ValueError(f"resize_size {resize_size} < out_size {out_size}: torchvision would "
                         "pad the crop, which is not supported here")
    w, h = image.size
    short, long = min(w, h), max(w, h)
    new_long = int(resize_size * long / short)
    new_w, new_h = (resize_size, new_long) if w <= h else (new_long, resize_size)
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.BILINEAR)
    top = int(round((new_h - out_size) / 2.0))
    left = int(round((new_w - out_size) / 2.0))
    return np.asarray(image.crop((left, top, left + out_size, top + out_size)))


# -- worker side -------------------------------------------------------------------------------
_stores: dict = {}    # (data_path, offsets_path) -> EncodedImages, opened once per process
_buffers: dict = {}   # buffer path -> writable memmap (the few most recent)


def _store(key) -> EncodedImages:
    if key not in _stores:
        _stores[key] = EncodedImages(*key)
    return _stores[key]


def _buffer(path):
    if path not in _buffers:
        if len(_buffers) > 8:  # buffers of a finished loader: let them go
            _buffers.clear()
        _buffers[path] = np.load(path, mmap_mode="r+")
    return _buffers[path]


def _compute(job):
    """Decodes rows of a store and writes their views into `out[first:first + n]`."""
    store_key, base_rows, boxes, out_size, resize_size, out, first = job
    store = _store(store_key)
    target = _buffer(out) if isinstance(out, str) else out
    for j, row in enumerate(base_rows):
        image = decode_bytes(store._data[store._offsets[row]:store._offsets[row + 1]])
        target[first + j] = (eval_view(image, out_size, resize_size) if boxes is None else
                             train_view(image, boxes[j], out_size))
    return len(base_rows)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


class ViewLoader:
    """Computes views of EncodedImages rows, in worker processes a few requests ahead.

    `views(images, rows, boxes=None)` returns uint8 [len(rows), out, out, 3] (eval views when
    `boxes` is None, else train crops of those boxes); `stream(images, requests)` yields the
    views of each (rows, boxes) request in order, keeping `ahead` of them in flight.
    """

    def __init__(self, out_size: int, resize_size: int, workers: int = 0, ahead: int = 3):
        self.out_size, self.resize_size = out_size, resize_size
        self.workers = workers
        self.ahead = max(1, ahead)
        self._executor = None
        self._slots: list[str] = []
        self._slot_rows = 0
        self._next_slot = 0

    # Buffers: one memory-mapped file per in-flight request, reused round robin.
    def _slot(self, rows: int) -> str:
        if rows > self._slot_rows:
            self._free_slots()
            folder = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
            shape = (rows, self.out_size, self.out_size, 3)
            for _ in range(self.ahead + 1):
                path = os.path.join(folder, f"dnc_jax-views-{os.getpid()}-{uuid.uuid4().hex}.npy")
                np.lib.format.open_memmap(path, "w+", np.uint8, shape).flush()
                self._slots.append(path)
            self._slot_rows = rows
        path = self._slots[self._next_slot % len(self._slots)]
        self._next_slot += 1
        return path

    def _free_slots(self):
        for path in self._slots:
            try:
                os.remove(path)
            except OSError:
                pass
        self._slots, self._slot_rows = [], 0

    def _pool(self):
        if self._executor is None:
            # Spawn, not fork: the parent holds JAX's threads, which fork copies mid-state.
            self._executor = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._executor

    def _jobs(self, images, rows, boxes, out, per_job):
        key = (images.data_path, images.offsets_path)
        base = images.rows[np.asarray(rows, np.int64)]
        for first in range(0, len(base), per_job):
            part = None if boxes is None else np.asarray(boxes[first:first + per_job])
            yield (key, base[first:first + per_job], part, self.out_size, self.resize_size,
                   out, first)

    def _submit(self, images, rows, boxes):
        n = len(rows)
        if self.workers <= 0:
            out = np.empty((n, self.out_size, self.out_size, 3), np.uint8)
            for job in self._jobs(images, rows, boxes, out, max(n, 1)):
                _compute(job)
            return out, None
        path = self._slot(n)
        per_job = max(1, -(-n // (2 * self.workers)))
        futures = [self._pool().submit(_compute, job)
                   for job in self._jobs(images, rows, boxes, path, per_job)]
        return path, futures

    def _collect(self, submitted, n):
        out, futures = submitted
        if futures is None:
            return out
        for f in futures:
            f.result()  # re-raises a worker's error here
        return np.array(np.load(out, mmap_mode="r")[:n])  # a copy: the buffer is reused

    def views(self, images: EncodedImages, rows, boxes=None) -> np.ndarray:
        return self._collect(self._submit(images, rows, boxes), len(rows))

    def stream(self, images: EncodedImages, requests):
        """Views of each (rows, boxes) request of an iterable, in order, `ahead` in flight."""
        pending = collections.deque()
        for rows, boxes in requests:
            pending.append((self._submit(images, rows, boxes), len(rows)))
            if len(pending) > self.ahead:
                yield self._collect(*pending.popleft())
        while pending:
            yield self._collect(*pending.popleft())

    def close(self):
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._free_slots()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the modules may already be gone
            pass

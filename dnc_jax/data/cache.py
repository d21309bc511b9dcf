"""Decode-once image cache: every image decoded a single time into a memory-mapped uint8 array.

`decode_cached(files, S, cache_dir, name)` returns `images` uint8 [N, S, S, 3] (a read-only
memmap) and `sizes` int32 [N, 2], each image's original (height, width). Training then only
gathers rows by index; crops are computed on device in original-image coordinates
(`dnc_jax.data.augment`), so the S x S rows only need to carry the pixels, not the aspect.

Decoding matches torchvision's default PIL loader: `Image.open(path).convert('RGB')`, so
grayscale, CMYK, palette and alpha images all become RGB, and EXIF orientation is NOT applied
(neither ImageFolder nor the official code applies it; a rotated phone photo stays as stored).
The whole image is resized to S x S with PIL's LANCZOS filter, antialiased and the sharpest of
PIL's filters, so the cache loses as little as possible before the device applies torchvision's
own bilinear filter; measured against BILINEAR and BICUBIC it gives the smallest train-crop error
at every S and ties on eval.

Choice of S (DEFAULT_SIZE = 256), measured against torchvision's pipeline run in PIL on the
originals (photo-like JPEGs, mean |difference| in grey levels, tests/test_augment.py):

    S                                  256    288    320    384
    eval Resize(256)+CenterCrop(224)   0.38   0.37   0.32   -
    train RandomResizedCrop(224)       0.48   0.44   0.38   0.32   (64 random crops)
    (content with per-pixel noise +-20, the hardest case: eval 1.3 / 1.7 / 1.5, train 2.5 /
    2.4 / 2.0 / 1.6)

All are below the error JPEG itself adds. 256 is the smallest cache (SOP's 120k images: 23.6 GB,
against 36.9 GB at 320) and the best for eval on hard content (a 4:3 image's short side is cached
at exactly the Resize(256) scale); take 320 or 384 for finer train crops where disk allows.

Robustness:
- The file name holds a hash of (format version, S, the file list, each file's size and
  mtime), so a changed data set is rebuilt under a new name, never served stale.
- Rows are written into `<final>.partial.npy` beside a `done` bitmap (`<final>.done.npy`),
  checkpointed (images fsynced first) every CHECKPOINT_EVERY images and on any exit; a restart
  decodes only the rows not marked done. The final files are renamed into place only once every
  row is done, so a half-written cache is never read as complete.
- An undecodable file (corrupt, truncated: PIL's lazy loading is forced to the end of the data)
  raises `DataError` naming it, after the other rows are decoded and checkpointed, so that
  every bad file is reported at once and a transient failure (a network filesystem hiccup)
  resumes. Fixing or dropping a file changes the key: a new build.
- With `skip_bad=True` (`data.skip_bad_images`) the failed rows are retried once in this
  process, then the cache is completed without them: their rows stay zero with original size
  (0, 0), which no decodable image has, so `bad_rows(sizes)` finds them in any later load. The
  key does not depend on `skip_bad`: a cache completed that way, loaded with `skip_bad=False`,
  raises the same DataError naming the bad files.
- Builds left behind under old keys are not deleted; clear `cache_dir` by hand.

Multi-host: a cache on a shared filesystem works once built; build it from one process (e.g.
process 0, then a barrier) because two concurrent builders of the same key race on the rename. A
per-host `cache_dir` on local disk also works: every host builds its own identical copy.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import errno
import hashlib
import json
import multiprocessing
import os

import numpy as np

from dnc_jax.data.errors import DataError

FORMAT_VERSION = 1       # bump when the decoding or resizing changes
DEFAULT_SIZE = 256       # cache side S; see the module docstring
CHECKPOINT_EVERY = 256   # images between two saves of the done bitmap
_MAX_NAMED_FAILURES = 5  # bad files named in the DataError message
SKIP_HINT = "set --config.data.skip_bad_images=True to skip undecodable images"


@dataclasses.dataclass(frozen=True)
class CachePaths:
    """The final files of one cache key and, derived from them, those of its partial build."""

    images: str
    sizes: str

    @property
    def images_partial(self):
        return self.images[:-4] + ".partial.npy"

    @property
    def sizes_partial(self):
        return self.sizes[:-4] + ".partial.npy"

    @property
    def done(self):
        return self.images[:-4] + ".done.npy"


def cache_key(files: list[str], size: int) -> str:
    """Hash of (format version, S, each file's path, byte size and mtime)."""
    digest = hashlib.sha256(json.dumps([FORMAT_VERSION, size]).encode())
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            raise DataError(f"image listed but missing: {path}") from None
        digest.update(json.dumps([path, st.st_size, st.st_mtime_ns]).encode())
    return digest.hexdigest()[:16]


def cache_paths(files: list[str], size: int, cache_dir: str, name: str) -> CachePaths:
    stem = os.path.join(cache_dir, f"{name}-{size}-{cache_key(files, size)}")
    return CachePaths(images=stem + ".npy", sizes=stem + "-sizes.npy")


def decode_image(path: str, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """uint8 [size, size, 3] and the original (height, width); DataError if undecodable,
    truncated files included."""
    from PIL import Image, ImageFile

    # PIL decodes lazily and, with this flag set (some libraries set it globally), silently pads
    # a truncated file with grey; cleared, convert()'s load() raises "image file is truncated".
    load_truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            resized = im.resize((size, size), Image.LANCZOS)
            return np.asarray(resized, np.uint8), (im.height, im.width)
    except Exception as e:  # corrupt files raise a zoo in PIL: OSError, SyntaxError, EOFError...
        raise DataError(f"cannot decode image {path}: {type(e).__name__}: {e}") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = load_truncated


def bad_rows(sizes: np.ndarray) -> np.ndarray:
    """int64 rows of a cache built with `skip_bad=True` whose file could not be decoded."""
    return np.flatnonzero(np.asarray(sizes)[:, 0] == 0)


# Worker side: each process maps the partial images file once and writes its rows itself, so
# only (row, height, width) travels back through the pipe.
_worker_rows = None


def _open_rows(images_partial: str):
    global _worker_rows
    _worker_rows = np.load(images_partial, mmap_mode="r+")


def _decode_row(job):
    row, path, size = job
    try:
        image, (h, w) = decode_image(path, size)
    except DataError as e:
        return row, None, str(e)
    _worker_rows[row] = image
    return row, (h, w), None


def _open_partial(paths: CachePaths, n: int, size: int):
    """(sizes memmap r+, done bool [n]) of the partial build, reused when it matches."""
    if os.path.exists(paths.sizes) and not os.path.exists(paths.images):
        os.replace(paths.sizes, paths.sizes_partial)  # a finalisation was cut between renames
    shape = (n, size, size, 3)
    try:
        images = np.load(paths.images_partial, mmap_mode="r")
        sizes = np.load(paths.sizes_partial, mmap_mode="r+")
        done = np.load(paths.done)
        if images.shape != shape or sizes.shape != (n, 2) or done.shape != (n,):
            raise ValueError("shape mismatch")
        return sizes, done.astype(bool)
    except (OSError, ValueError):  # none yet, or truncated by a kill during creation
        pass
    np.lib.format.open_memmap(paths.images_partial, "w+", np.uint8, shape).flush()
    _reserve_disk(paths.images_partial)
    sizes = np.lib.format.open_memmap(paths.sizes_partial, "w+", np.int32, (n, 2))
    done = np.zeros(n, bool)
    _save_atomic(paths.done, done)
    return sizes, done


def _reserve_disk(path: str):
    """Allocate the sparse memmap file now: a full disk then fails here, with a clear message,
    instead of killing a worker with SIGBUS when it writes into a hole."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DataError(f"no space left for the image cache {path} "
                            f"({os.fstat(fd).st_size / 1e9:.1f} GB): free some or set "
                            "data.cache_dir elsewhere") from None
        # EOPNOTSUPP/EINVAL: a filesystem that cannot preallocate; go on with the sparse file.
    finally:
        os.close(fd)


def _save_atomic(path: str, array: np.ndarray):
    tmp = path[:-4] + ".tmp.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


def _fsync(path: str):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _checkpoint(paths: CachePaths, sizes, done):
    """Rows marked done must be on disk first: fsync images, flush sizes, then save `done`."""
    _fsync(paths.images_partial)
    sizes.flush()
    _save_atomic(paths.done, done)


def _decode_missing(files, size, paths, sizes, done, workers, progress, name):
    """Decode the rows not yet done; returns the error messages of the files that failed."""
    from tqdm.auto import tqdm

    from dnc_jax.logs import bar_interval  # here: decode workers never import jax

    jobs = [(int(i), files[i], size) for i in np.flatnonzero(~done)]
    failures = []
    bar = tqdm(total=len(files), initial=int(done.sum()), desc=f"decode {name}",
               disable=not progress, unit="img", dynamic_ncols=True,
               mininterval=bar_interval())
    executor = None
    try:
        if workers == 1 or len(jobs) <= 1:  # in-process: no start-up cost, easy to debug
            _open_rows(paths.images_partial)
            results = map(_decode_row, jobs)
        else:
            # A process pool that reports a dead worker (OOM kill, SIGBUS) instead of waiting for
            # it forever, as multiprocessing.Pool would. Spawn, not fork: the parent may hold
            # JAX's threads, which fork copies mid-state.
            executor = concurrent.futures.ProcessPoolExecutor(
                min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn"),
                initializer=_open_rows, initargs=(paths.images_partial,))
            results = executor.map(_decode_row, jobs, chunksize=16)
        since_checkpoint = 0
        for row, hw, error in results:
            bar.update(1)
            if error is not None:
                failures.append(error)
                continue
            sizes[row] = hw
            done[row] = True
            since_checkpoint += 1
            if since_checkpoint >= CHECKPOINT_EVERY:
                _checkpoint(paths, sizes, done)
                since_checkpoint = 0
    except concurrent.futures.process.BrokenProcessPool:
        raise DataError(f"a process decoding '{name}' died (out of memory?); the "
                        f"{int(done.sum())} rows decoded so far are kept, run again to resume"
                        ) from None
    finally:
        global _worker_rows
        _worker_rows = None  # drop the in-process mapping before the file is renamed
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        _checkpoint(paths, sizes, done)
        bar.close()
    return failures


def decode_cached(files: list[str], size: int, cache_dir: str, name: str,
                  workers: int | None = None, progress: bool = True,
                  skip_bad: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, size, size, 3] memory-mapped read-only, sizes int32 [N, 2] original
    (height, width)), built once under `cache_dir` and reused while the files are unchanged.

    `workers` decoding processes (default os.cpu_count(); 1 decodes in this process). The
    progress bar goes to stderr. Raises DataError for a missing file, and for an undecodable
    one unless `skip_bad`: then its row is zero with size (0, 0) (see `bad_rows`).
    """
    if not files:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros((0, 2), np.int32)
    cache_dir = os.path.expanduser(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    paths = cache_paths(files, size, cache_dir, name)
    if not (os.path.exists(paths.images) and os.path.exists(paths.sizes)):
        _build(files, size, paths, workers or os.cpu_count() or 1, progress, name, skip_bad)
    sizes = np.load(paths.sizes)
    bad = bad_rows(sizes)
    if len(bad) and not skip_bad:  # completed earlier with skip_bad=True
        raise _undecodable_error(name, [_reason(files[i], size, paths)
                                        for i in bad[:_MAX_NAMED_FAILURES]], len(bad),
                                 f"the cache {paths.images} was completed without them")
    return np.load(paths.images, mmap_mode="r"), sizes


def _reason(path, size, paths) -> str:
    """Why `path` failed, decoding it again (only for an error message: a few files)."""
    try:
        decode_image(path, size)
    except DataError as e:
        return str(e)
    return (f"{path} decodes now but did not when {paths.images} was built (delete that file "
            f"to decode again)")


def _undecodable_error(name, reasons, count, kept) -> DataError:
    more = count - len(reasons)
    return DataError(f"{count} image(s) of '{name}' cannot be decoded: {'; '.join(reasons)}"
                     + (f" (and {more} more)" if more > 0 else "")
                     + f"; {kept}. Fix or remove them, or {SKIP_HINT}")


def _build(files, size, paths, workers, progress, name, skip_bad=False):
    sizes, done = _open_partial(paths, len(files), size)
    failures = _decode_missing(files, size, paths, sizes, done, workers, progress, name)
    if failures and skip_bad:
        # Once more, in this process: a transient read error must not drop a good image.
        failures = _decode_missing(files, size, paths, sizes, done, 1, False, name)
    if failures and not skip_bad:
        raise _undecodable_error(name, failures[:_MAX_NAMED_FAILURES], len(failures),
                                 f"the {int(done.sum())} decoded rows are kept in "
                                 f"{paths.images_partial}")
    if failures:
        # The (0, 0) size marks a bad row; a row decoded before a kill but never marked done
        # may hold a stale size.
        sizes[~done] = 0
        sizes.flush()
    del sizes  # unmap before renaming
    os.replace(paths.sizes_partial, paths.sizes)
    os.replace(paths.images_partial, paths.images)  # last: its presence marks completeness
    os.remove(paths.done)

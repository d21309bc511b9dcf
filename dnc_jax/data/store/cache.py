"""The image cache: every file's bytes packed once into one memory-mapped array, checked.

`cached_images(files, cache_dir, name)` returns `images`, an `EncodedImages` (the files' own
compressed bytes, unchanged, one flat uint8 memmap with byte offsets), and `sizes` int32
[N, 2], each image's (height, width). Building it decodes every image once, in worker
processes, to check that it decodes and to record its size; views are decoded from these bytes
at their own resolution when a batch needs them (`host_views.py`), so no pixel is resampled
before torchvision's own crop and resize.

Why bytes, not decoded pixels (bench/input_pipeline.py, BENCHMARKS.md "Input pipeline"): the
bytes take the data set's own size on disk (SOP's 120k images: a few GB, where decoded pixels at
their own resolution take ten times more and a 256 x 256 squashed copy lost the detail of small
crops), and decoding a 500 x 375 JPEG plus its crop costs about 2 ms a core, so a 16-core host
feeds several thousand images a second.

Decoding matches torchvision's default PIL loader (`encoded.decode_bytes`).

Robustness:
- The file name holds a hash of (format version, the file list, each file's size and mtime), so
  a changed data set is rebuilt under a new name, never served stale.
- Bytes are written into `<final>.partial.npy` beside a `done` bitmap (`<final>.done.npy`),
  checkpointed (data fsynced first) every CHECKPOINT_EVERY images and on any exit; a restart
  reads only the images not marked done. The final files are renamed into place only once
  every image is done, so a half-written cache is never read as complete.
- An undecodable file (corrupt, truncated: PIL's lazy loading is forced to the end of the data)
  raises `DataError` naming it, after the other images are done and checkpointed, so that
  every bad file is reported at once and a transient failure (a network filesystem hiccup)
  resumes. Fixing or dropping a file changes the key: a new build.
- With `skip_bad=True` (`data.skip_bad_images`) the failed images are retried once in this
  process, then the cache is completed without them: their size stays (0, 0), which no
  decodable image has, so `bad_rows(sizes)` finds them in any later load. The key does not
  depend on `skip_bad`: a cache completed that way, loaded with `skip_bad=False`, raises the
  same DataError naming the bad files.
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

from dnc_jax.data.store.encoded import EncodedImages, decode_bytes
from dnc_jax.errors import DataError

FORMAT_VERSION = 2       # bump when what is stored changes (1: 256 x 256 decoded rows)
CHECKPOINT_EVERY = 256   # images between two saves of the done bitmap
_MAX_NAMED_FAILURES = 5  # bad files named in the DataError message
SKIP_HINT = "set --config.data.skip_bad_images=True to skip undecodable images"


@dataclasses.dataclass(frozen=True)
class CachePaths:
    """The final files of one cache key and, derived from them, those of its partial build."""

    images: str   # the packed bytes, uint8 [total]
    offsets: str  # int64 [N + 1]
    sizes: str    # int32 [N, 2]

    @property
    def images_partial(self):
        return self.images[:-4] + ".partial.npy"

    @property
    def sizes_partial(self):
        return self.sizes[:-4] + ".partial.npy"

    @property
    def done(self):
        return self.images[:-4] + ".done.npy"


def _file_sizes_and_key(files: list[str]) -> tuple[np.ndarray, str]:
    """(int64 byte size of each file, hash of (format version, each path, size and mtime))."""
    digest = hashlib.sha256(json.dumps([FORMAT_VERSION]).encode())
    nbytes = np.zeros(len(files), np.int64)
    for i, path in enumerate(files):
        try:
            st = os.stat(path)
        except OSError:
            raise DataError(f"image listed but missing: {path}") from None
        nbytes[i] = st.st_size
        digest.update(json.dumps([path, st.st_size, st.st_mtime_ns]).encode())
    return nbytes, digest.hexdigest()[:16]


def cache_key(files: list[str]) -> str:
    return _file_sizes_and_key(files)[1]


def cache_paths(files: list[str], cache_dir: str, name: str) -> CachePaths:
    stem = os.path.join(cache_dir, f"{name}-{cache_key(files)}")
    return CachePaths(images=stem + ".npy", offsets=stem + "-offsets.npy",
                      sizes=stem + "-sizes.npy")


def check_image(data) -> tuple[int, int]:
    """(height, width) of encoded image bytes, decoding all of them; DataError-free: raises
    whatever PIL raises for a corrupt or truncated file."""
    from PIL import ImageFile

    # PIL decodes lazily and, with this flag set (some libraries set it globally), silently pads
    # a truncated file with grey; cleared, convert()'s load() raises "image file is truncated".
    load_truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        image = decode_bytes(data)
        return image.height, image.width
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = load_truncated


def read_checked(path: str, expected_bytes: int | None = None) -> tuple[bytes, tuple[int, int]]:
    """The file's bytes and (height, width); DataError naming it if it does not decode."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        if expected_bytes is not None and len(data) != expected_bytes:
            raise OSError(f"it changed while being cached ({len(data)} bytes, "
                          f"{expected_bytes} listed)")
        return data, check_image(data)
    except Exception as e:  # corrupt files raise a zoo in PIL: OSError, SyntaxError, EOFError...
        raise DataError(f"cannot decode image {path}: {type(e).__name__}: {e}") from None


def bad_rows(sizes: np.ndarray) -> np.ndarray:
    """int64 rows of a cache built with `skip_bad=True` whose file could not be decoded."""
    return np.flatnonzero(np.asarray(sizes)[:, 0] == 0)


# Worker side: each process maps the partial bytes file once and writes its images itself, so
# only (row, height, width) travels back through the pipe.
_worker_bytes = None


def _open_bytes(images_partial: str):
    global _worker_bytes
    _worker_bytes = np.load(images_partial, mmap_mode="r+")


def _decode_row(job):
    row, path, start, stop = job
    try:
        data, (h, w) = read_checked(path, stop - start)
    except DataError as e:
        return row, None, str(e)
    _worker_bytes[start:stop] = np.frombuffer(data, np.uint8)
    return row, (h, w), None


def _open_partial(paths: CachePaths, offsets: np.ndarray):
    """(sizes memmap r+, done bool [n]) of the partial build, reused when it matches."""
    n = len(offsets) - 1
    if os.path.exists(paths.sizes) and not os.path.exists(paths.images):
        os.replace(paths.sizes, paths.sizes_partial)  # a finalisation was cut between renames
    total = int(offsets[-1])
    try:
        images = np.load(paths.images_partial, mmap_mode="r")
        sizes = np.load(paths.sizes_partial, mmap_mode="r+")
        done = np.load(paths.done)
        if images.shape != (total,) or sizes.shape != (n, 2) or done.shape != (n,):
            raise ValueError("shape mismatch")
        return sizes, done.astype(bool)
    except (OSError, ValueError):  # none yet, or truncated by a kill during creation
        pass
    np.lib.format.open_memmap(paths.images_partial, "w+", np.uint8, (total,)).flush()
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
    """Images marked done must be on disk first: fsync bytes, flush sizes, then save `done`."""
    _fsync(paths.images_partial)
    sizes.flush()
    _save_atomic(paths.done, done)


def _decode_missing(files, offsets, paths, sizes, done, workers, progress, name):
    """Read and check the images not yet done; returns the error messages of those that fail."""
    from tqdm.auto import tqdm

    from dnc_jax.logs import bar_interval  # here: decode workers never import jax

    jobs = [(int(i), files[i], int(offsets[i]), int(offsets[i + 1]))
            for i in np.flatnonzero(~done)]
    failures = []
    bar = tqdm(total=len(files), initial=int(done.sum()), desc=f"cache {name}",
               disable=not progress, unit="img", dynamic_ncols=True,
               mininterval=bar_interval())
    executor = None
    try:
        if workers == 1 or len(jobs) <= 1:  # in-process: no start-up cost, easy to debug
            _open_bytes(paths.images_partial)
            results = map(_decode_row, jobs)
        else:
            # A process pool that reports a dead worker (OOM kill, SIGBUS) instead of waiting for
            # it forever, as multiprocessing.Pool would. Spawn, not fork: the parent may hold
            # JAX's threads, which fork copies mid-state.
            executor = concurrent.futures.ProcessPoolExecutor(
                min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn"),
                initializer=_open_bytes, initargs=(paths.images_partial,))
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
        raise DataError(f"a process caching '{name}' died (out of memory?); the "
                        f"{int(done.sum())} images done so far are kept, run again to resume"
                        ) from None
    finally:
        global _worker_bytes
        _worker_bytes = None  # drop the in-process mapping before the file is renamed
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        _checkpoint(paths, sizes, done)
        bar.close()
    return failures


def cached_images(files: list[str], cache_dir: str, name: str, workers: int | None = None,
                  progress: bool = True, skip_bad: bool = False
                  ) -> tuple[EncodedImages | None, np.ndarray]:
    """(images: EncodedImages of the files' bytes, sizes: int32 [N, 2] (height, width)), built
    once under `cache_dir` and reused while the files are unchanged.

    `workers` checking processes (default os.cpu_count(); 1 works in this process). The
    progress bar goes to stderr. Raises DataError for a missing file, and for an undecodable
    one unless `skip_bad`: then its size is (0, 0) (see `bad_rows`). No files: (None, [0, 2]).
    """
    if not files:
        return None, np.zeros((0, 2), np.int32)
    cache_dir = os.path.expanduser(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    nbytes, key = _file_sizes_and_key(files)
    stem = os.path.join(cache_dir, f"{name}-{key}")
    paths = CachePaths(images=stem + ".npy", offsets=stem + "-offsets.npy",
                       sizes=stem + "-sizes.npy")
    offsets = np.concatenate([[0], np.cumsum(nbytes)]).astype(np.int64)
    if not all(os.path.exists(p) for p in (paths.images, paths.offsets, paths.sizes)):
        _build(files, offsets, paths, workers or os.cpu_count() or 1, progress, name, skip_bad)
    sizes = np.load(paths.sizes)
    bad = bad_rows(sizes)
    if len(bad) and not skip_bad:  # completed earlier with skip_bad=True
        reasons = [_reason(files[i], paths) for i in bad[:_MAX_NAMED_FAILURES]]
        raise _undecodable_error(name, reasons, len(bad),
                                 f"the cache {paths.images} was completed without them")
    return EncodedImages(paths.images, paths.offsets), sizes


def _reason(path, paths) -> str:
    """Why `path` failed, reading it again (only for an error message: a few files)."""
    try:
        read_checked(path)
    except DataError as e:
        return str(e)
    return (f"{path} decodes now but did not when {paths.images} was built (delete that file "
            f"to decode again)")


def _undecodable_error(name, reasons, count, kept) -> DataError:
    more = count - len(reasons)
    return DataError(f"{count} image(s) of '{name}' cannot be decoded: {'; '.join(reasons)}"
                     + (f" (and {more} more)" if more > 0 else "")
                     + f"; {kept}. Fix or remove them, or {SKIP_HINT}")


def _build(files, offsets, paths, workers, progress, name, skip_bad=False):
    sizes, done = _open_partial(paths, offsets)
    failures = _decode_missing(files, offsets, paths, sizes, done, workers, progress, name)
    if failures and skip_bad:
        # Once more, in this process: a transient read error must not drop a good image.
        failures = _decode_missing(files, offsets, paths, sizes, done, 1, False, name)
    if failures and not skip_bad:
        raise _undecodable_error(name, failures[:_MAX_NAMED_FAILURES], len(failures),
                                 f"the {int(done.sum())} images read are kept in "
                                 f"{paths.images_partial}")
    if failures:
        # The (0, 0) size marks a bad image; one read before a kill but never marked done
        # may hold a stale size.
        sizes[~done] = 0
        sizes.flush()
    del sizes  # unmap before renaming
    _save_atomic(paths.offsets, offsets)
    os.replace(paths.sizes_partial, paths.sizes)
    os.replace(paths.images_partial, paths.images)  # last: its presence marks completeness
    os.remove(paths.done)

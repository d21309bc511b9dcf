"""Image-file data sets: list parsing and a decode-once uint8 cache.

Each image is decoded once, resized to S x S (its original height and width are kept beside it)
and stored in a memory-mapped `.npy` named by a hash of the file list and S, so a changed data
set gets a new cache and an interrupted build is never trusted (it is written under a temporary
name and renamed when complete). Training then only gathers rows of that array.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os

import numpy as np

from dnc_jax.data.errors import DataError
from dnc_jax.data.image_set import ImageSet


def parse_sop_list(path: str):
    """Ebay_{train,test}.txt: a header line, then `image_id class_id super_class_id path`."""
    paths, labels = [], []
    with open(path) as f:
        for line_no, line in enumerate(f, start=1):
            if line_no == 1 or not line.strip():
                continue
            fields = line.split()
            if len(fields) != 4 or not fields[1].isdigit():
                raise DataError(f"{path}:{line_no}: expected 'image_id class_id "
                                f"super_class_id path', got {line.strip()!r}")
            labels.append(int(fields[1]) - 1)
            paths.append(fields[3])
    return paths, np.asarray(labels, np.int64)


def load_sop(root: str, data_config) -> dict[str, ImageSet]:
    out = {}
    for split, name in (("train", "Ebay_train.txt"), ("test", "Ebay_test.txt")):
        paths, labels = parse_sop_list(os.path.join(root, name))
        files = [os.path.join(root, p) for p in paths]
        images = decode_cached(files, data_config.image_size,
                               os.path.expanduser(data_config.cache_dir), f"sop-{split}")
        classes, contiguous = np.unique(labels, return_inverse=True)
        out[split] = ImageSet(images=images, labels=contiguous.astype(np.int32),
                              class_names=[str(c + 1) for c in classes])
    return out


def _decode(args):
    path, size = args
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            hw = (im.height, im.width)
            return np.asarray(im.resize((size, size), Image.BILINEAR), np.uint8), hw
    except (OSError, ValueError) as e:
        raise DataError(f"cannot decode {path}: {e}") from None


def decode_cached(files: list[str], size: int, cache_dir: str, name: str,
                  workers: int | None = None):
    """uint8 [N, size, size, 3], memory-mapped from the cache, built once."""
    key = hashlib.sha256(json.dumps([size, files]).encode()).hexdigest()[:16]
    os.makedirs(cache_dir, exist_ok=True)
    final = os.path.join(cache_dir, f"{name}-{size}-{key}.npy")
    if not os.path.exists(final):
        from tqdm.auto import tqdm

        for path in files:
            if not os.path.isfile(path):
                raise DataError(f"image listed but missing: {path}")
        tmp = final + ".partial"
        images = np.lib.format.open_memmap(tmp, "w+", np.uint8, (len(files), size, size, 3))
        sizes = np.zeros((len(files), 2), np.int32)
        with multiprocessing.Pool(workers or os.cpu_count()) as pool:
            jobs = pool.imap(_decode, [(p, size) for p in files], chunksize=64)
            for i, (image, hw) in enumerate(tqdm(jobs, total=len(files), desc=f"decode {name}")):
                images[i], sizes[i] = image, hw
        images.flush()
        del images
        np.save(final[:-4] + "-sizes.npy", sizes)
        os.replace(tmp, final)
    return np.load(final, mmap_mode="r")

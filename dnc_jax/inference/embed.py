"""Embed image files with a trained run: the evaluation embedding of its newest checkpoint.

    dnc-jax embed --workdir=runs/sop --images=photos/ --out=emb.npy [--batch_size=N]

`--images` is a folder (every image file under it, recursively, in sorted path order), a text
file with one image path per line, or a CSV whose first column is the image path (a header row
starting with `path` is skipped); relative paths in a list are relative to the list's folder.

Images go through the training pipeline's own steps: packed and checked once into the image
cache (`dnc_jax.data.store.cache.cached_images`, under WORKDIR/embed_cache unless --cache_dir; a
second run over the same unchanged files reads nothing again; entries of other file sets stay
until the folder is cleared by hand), then the run's eval transform (Resize + CenterCrop at the
images' own resolution, `host_views`) and the network on the device. Writes

    emb.npy          float32 [N, d], row i the evaluation embedding of path i
    emb.paths.txt    the N absolute image paths, one per line, in the same order

and prints N and d. `dnc-jax search` queries such an index.
"""
from __future__ import annotations

import csv
import os

from absl import flags

from dnc_jax import cli

from dnc_jax.errors import DataError
from dnc_jax.data.sources.image_lists import IMAGE_EXTENSIONS, check_images_exist, is_image_file

CACHE_NAME = "embed"  # file-name prefix of this tool's decode-cache entries


def _define_flags():
    # Defined only when run as a program, so that `search` (and tests) can import this module
    # next to another tool that also defines --workdir.
    cli.define_trained_run_flags(
        out_help="Output .npy of the embeddings; the paths go beside it (X.paths.txt for X.npy).",
        batch_help="Images per embedding step (default: the run's data.eval_batch_size).")
    flags.DEFINE_string("images", None, "A folder of images (searched recursively), a text file "
                        "with one image path per line, or a CSV with the path first.")
    flags.DEFINE_string("cache_dir", None, "Where the decoded images are cached (default: "
                        "WORKDIR/embed_cache).")
    flags.DEFINE_integer("workers", None, "Decoding processes (default: one per CPU core).")
    flags.DEFINE_bool("usearch", False, "Also write X.usearch, an HNSW index of the rows "
                      "(dnc_jax.inference.vector_index; needs usearch).")
    flags.mark_flag_as_required("images")


def paths_file(index_path: str) -> str:
    """emb.npy -> emb.paths.txt: where the row order of an index is written."""
    stem = index_path[:-4] if index_path.endswith(".npy") else index_path
    return stem + ".paths.txt"


def list_images(source: str) -> list[str]:
    """Absolute paths of the images named by `source` (a folder, a text list or a CSV)."""
    source = os.path.expanduser(source)
    if os.path.isdir(source):
        root = os.path.abspath(source)
        files = sorted(os.path.join(dirpath, name)
                       for dirpath, _, names in os.walk(root, followlinks=True)
                       for name in names if is_image_file(name))
        if not files:
            raise DataError(f"no image files under {root} (looked for "
                            f"{' '.join(IMAGE_EXTENSIONS)})")
        return files
    if not os.path.isfile(source):
        raise DataError(f"--images: {source} is neither a folder nor a list file")
    base = os.path.dirname(os.path.abspath(source))
    entries = _read_list(source)
    if not entries:
        raise DataError(f"{source}: lists no image (expected one path per line)")
    files = [os.path.normpath(os.path.join(base, os.path.expanduser(p))) for _, p in entries]
    check_images_exist(files, [f"{source}:{line}" for line, _ in entries],
                       "paths in a list are relative to the list's folder")
    return files


def _read_list(path: str) -> list[tuple[int, str]]:
    """(line number, path) of each entry: a CSV's first column, or a text file's lines."""
    entries = []
    if path.lower().endswith(".csv"):
        with open(path, newline="") as f:
            reader = csv.reader(f)
            for fields in reader:
                first = fields[0].strip() if fields else ""
                if not first or (not entries and first.lower() == "path"):
                    continue  # blank line, or the header
                entries.append((reader.line_num, first))
        return entries
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if line and not line.startswith("#"):
                entries.append((line_no, line))
    return entries


def cache_files(files: list[str], cache_dir: str, workers=None, progress: bool = True):
    """(EncodedImages, sizes [N, 2]) through the training image cache."""
    from dnc_jax.data.store.cache import cached_images

    return cached_images(files, cache_dir, CACHE_NAME, workers=workers, progress=progress)


def embed_files(workdir: str, files: list[str], out: str, batch_size=None, cache_dir=None,
                workers=None, progress: bool = True, usearch: bool = False):
    """Embeds `files` with the run in `workdir`, writes `out` and its paths file (and, with
    `usearch`, an HNSW index of the rows beside them: `vector_index`).

    Returns (embeddings float32 [N, d], the loaded TrainedModel).
    """
    import numpy as np

    from dnc_jax.inference.restore import load_trained

    if usearch:
        from dnc_jax.inference import vector_index

        vector_index.require_usearch()
    trained = load_trained(workdir, batch_size)
    cache_dir = os.path.expanduser(cache_dir or os.path.join(workdir, "embed_cache"))
    images, sizes = cache_files(files, cache_dir, workers, progress)
    embeddings = trained.embed_fn(images, sizes, progress=progress)
    out = out if out.endswith(".npy") else out + ".npy"  # np.save would append it anyway
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    # Written beside and renamed: an interrupted run never leaves a short index behind that
    # would be taken for a complete one, or an index whose paths file is from another run.
    partial = out[:-4] + ".partial.npy"
    np.save(partial, embeddings)
    with open(paths_file(partial), "w") as f:
        f.writelines(p + "\n" for p in files)
    os.replace(paths_file(partial), paths_file(out))
    os.replace(partial, out)
    if usearch:
        from dnc_jax.inference import vector_index

        vector_index.write_usearch(embeddings, vector_index.index_path(out))
    return embeddings, trained


def main():
    FLAGS = flags.FLAGS
    files = list_images(FLAGS.images)
    embeddings, trained = embed_files(FLAGS.workdir, files, FLAGS.out, FLAGS.batch_size,
                                      FLAGS.cache_dir, FLAGS.workers, usearch=FLAGS.usearch)
    n, d = embeddings.shape
    out = FLAGS.out if FLAGS.out.endswith(".npy") else FLAGS.out + ".npy"
    print(f"embedded {n} images, d={d} (checkpoint step {trained.embed_fn.step}, epoch "
          f"{trained.embed_fn.epoch}) -> {out}, paths in {paths_file(out)}", flush=True)
    if FLAGS.usearch:
        from dnc_jax.inference import vector_index

        print(f"HNSW index (usearch, squared L2, keys = rows): {vector_index.index_path(out)}")


if __name__ == "__main__":
    _define_flags()
    cli.run(main)

"""The nearest indexed images to a query image, by the trained run's evaluation embedding.

    dnc-jax search --workdir=runs/sop --index=emb.npy --query=photo.jpg --top=10 \
        [--sheet=hits.png]

`--index` is what `dnc-jax embed` wrote with the same workdir (emb.npy and
emb.paths.txt beside it). The query is decoded and embedded exactly as the indexed images were
(the cache's decoder, the run's eval transform), so an indexed image finds itself at distance 0.
Prints rank, Euclidean distance and path of the `--top` nearest (the evaluation embedding is the
concatenation of K unit-norm blocks, so distances lie in [0, 2 sqrt(K)]); `--sheet` draws them
as a contact sheet PNG: the query first, then the hits with rank and distance. Embed the index
and the queries on the same kind of device: with `dtype='auto'` a GPU computes in bfloat16 and
a CPU in float32, and the two differ by more than rounding.

The search is exact brute force in numpy (float64 distances, ties to the lower index row, as in
`evaluation/retrieval.py`) over the memory-mapped index in blocks of 64k rows: N x d work per
query, 0.8 s for 100k images of d = 512 on two CPU cores, small next to loading the model. An
index of millions would want a vector library (faiss); `evaluation/retrieval.py` has no
neighbour-list function to reuse, as it reduces each query to metrics on the device.
"""
from __future__ import annotations

import math
import os
from typing import NamedTuple

import numpy as np
from absl import flags

from dnc_jax import cli

from dnc_jax.errors import DataError

# Contact-sheet layout, in pixels: square tiles in rows of COLUMNS, a caption strip under each.
TILE = 160
CAPTION = 30
MARGIN = 6
COLUMNS = 6
_CHUNK = 65536  # index rows per distance block: bounds the float64 copy to 64k x d


class Hit(NamedTuple):
    """One indexed image near the query: its rank, distance, row of the index and path."""

    rank: int        # 1 = nearest
    distance: float  # Euclidean, in the evaluation embedding
    row: int         # row of the index
    path: str


class SearchResult(NamedTuple):
    """What `search` returns: the query's embedding, its `Hit`s nearest first, the index's size."""

    query_embedding: np.ndarray  # float32 [d]
    hits: list
    index_size: int


def _define_flags():
    # Defined only when run as a program, so this module imports next to `dnc_jax.inference.embed`
    # (which also defines --workdir).
    flags.DEFINE_string("workdir", None, "Training run folder (config.json, checkpoints/), "
                        "the one the index was embedded with.")
    flags.DEFINE_string("index", None, "Embeddings .npy written by `dnc-jax embed` "
                        "(its .paths.txt beside it).")
    flags.DEFINE_string("query", None, "The query image file.")
    flags.DEFINE_integer("top", 10, "How many nearest images to list.", lower_bound=1)
    flags.DEFINE_string("sheet", None, "Also draw the query and its hits into this PNG.")
    flags.mark_flags_as_required(["workdir", "index", "query"])


def load_index(index_path: str) -> tuple[np.ndarray, list[str]]:
    """(embeddings [N, d] memory-mapped, N paths) of an index written by `dnc-jax embed`."""
    from dnc_jax.inference.embed import paths_file

    if not os.path.isfile(index_path):
        raise DataError(f"index not found: {index_path} does not exist (write it with "
                        f"dnc-jax embed)")
    embeddings = np.load(index_path, mmap_mode="r")
    names = paths_file(index_path)
    if not os.path.isfile(names):
        raise DataError(f"{names} does not exist: the paths of {index_path} are missing")
    with open(names) as f:
        paths = [line.rstrip("\n") for line in f if line.strip()]
    if embeddings.ndim != 2 or len(paths) != len(embeddings):
        raise DataError(f"{index_path} holds {embeddings.shape} embeddings but {names} lists "
                        f"{len(paths)} paths: not a pair written by dnc-jax embed")
    return embeddings, paths


def embed_query(trained, path: str) -> np.ndarray:
    """float32 [d]: the image at `path` decoded and cut as every indexed image is, embedded."""
    from dnc_jax.data.views import augment, host_views
    from dnc_jax.data.store.cache import read_checked
    from dnc_jax.data.store.encoded import decode_bytes

    if not os.path.isfile(path):
        raise DataError(f"query image not found: {path}")
    # The cache's own reader and the loader's own eval view, so the query's pixels are those
    # an indexed copy of the file gets, without adding a cache entry per query.
    data, _ = read_checked(path)
    aug = trained.config.augment
    view = host_views.eval_view(decode_bytes(data), aug.image_size,
                                augment.eval_resize_size(aug))
    return trained.embed_fn.embed_views(view[None])[0]


def nearest(index, query, top: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, Euclidean distances) of the `top` nearest index rows to `query`, nearest first.

    Exact: squared differences summed in float64 (no ||a||^2 - 2ab + ||b||^2 cancellation, so a
    duplicate of the query is at distance 0, not ~1e-4); equal distances rank the lower row first.
    """
    q = np.asarray(query, np.float64)
    squared = np.empty(len(index), np.float64)
    for start in range(0, len(index), _CHUNK):
        diff = np.asarray(index[start:start + _CHUNK], np.float64) - q
        squared[start:start + _CHUNK] = np.einsum("ij,ij->i", diff, diff)
    rows = np.argsort(squared, kind="stable")[:top]
    return rows, np.sqrt(squared[rows])


def search(workdir: str, index_path: str, query_path: str, top: int = 10,
           sheet: str | None = None) -> SearchResult:
    """Embeds the query with the run in `workdir`, ranks the index; draws `sheet` if given."""
    import jax

    from dnc_jax.inference.restore import load_trained

    index, paths = load_index(index_path)
    # One image: the smallest batch the devices accept, not the run's eval batch of hundreds.
    trained = load_trained(workdir, batch_size=jax.device_count())
    dim = trained.slices.shape[1]
    if index.shape[1] != dim:
        raise DataError(f"{index_path} holds {index.shape[1]}-d embeddings but the run in "
                        f"{workdir} embeds in {dim} dimensions: embed the images with this run")
    query = embed_query(trained, query_path)
    rows, distances = nearest(index, query, top)
    hits = [Hit(rank, float(d), int(r), paths[r])
            for rank, (r, d) in enumerate(zip(rows, distances), 1)]
    if sheet:
        contact_sheet(query_path, hits, sheet)
    return SearchResult(query, hits, len(index))


def format_hits(hits) -> str:
    lines = [f"{'rank':>4}  {'distance':>8}  path"]
    lines += [f"{h.rank:>4}  {h.distance:8.4f}  {h.path}" for h in hits]
    return "\n".join(lines)


def sheet_size(num_tiles: int) -> tuple[int, int]:
    """(width, height) of a contact sheet of `num_tiles` tiles (the query counts as one)."""
    columns, rows = min(num_tiles, COLUMNS), math.ceil(num_tiles / COLUMNS)
    return columns * (TILE + MARGIN) + MARGIN, rows * (TILE + CAPTION + MARGIN) + MARGIN


def _thumbnail(path: str):
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            # Small images (glyphs) are enlarged with NEAREST so their pixels stay sharp.
            upscale = max(im.size) * 2 <= TILE
            return ImageOps.contain(im, (TILE, TILE),
                                    Image.NEAREST if upscale else Image.LANCZOS)
    except Exception:  # a file gone or damaged since indexing: a grey tile, not a crash
        return None


def contact_sheet(query_path: str, hits, out: str) -> None:
    """PNG of the query (framed) and its hits, COLUMNS per row, each captioned."""
    from PIL import Image, ImageDraw, ImageFont

    tiles = [(query_path, "query")] + [(h.path, f"#{h.rank}  d={h.distance:.3f}") for h in hits]
    sheet = Image.new("RGB", sheet_size(len(tiles)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, (path, caption) in enumerate(tiles):
        row, column = divmod(i, COLUMNS)
        x, y = MARGIN + column * (TILE + MARGIN), MARGIN + row * (TILE + CAPTION + MARGIN)
        thumb = _thumbnail(path)
        if thumb is None:
            draw.rectangle([x, y, x + TILE - 1, y + TILE - 1], fill=(200, 200, 200))
            caption += "  (unreadable)"
        else:
            sheet.paste(thumb, (x + (TILE - thumb.width) // 2, y + (TILE - thumb.height) // 2))
        if i == 0:
            draw.rectangle([x - 3, y - 3, x + TILE + 2, y + TILE + 2], outline=(30, 90, 200),
                           width=3)
        # The parent folder too: in a folder of class folders it names the class.
        name = os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path))
        name = name if len(name) <= 26 else name[:11] + "..." + name[-12:]
        draw.text((x, y + TILE + 3), caption, fill="black", font=font)
        draw.text((x, y + TILE + 16), name, fill=(90, 90, 90), font=font)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    sheet.save(out)


def main():
    FLAGS = flags.FLAGS
    result = search(FLAGS.workdir, FLAGS.index, FLAGS.query, FLAGS.top, FLAGS.sheet)
    print(f"query {FLAGS.query}: {len(result.hits)} nearest of {result.index_size} indexed "
          f"images (exact search)")
    print(format_hits(result.hits), flush=True)
    if FLAGS.sheet:
        print(f"contact sheet: {FLAGS.sheet}")


if __name__ == "__main__":
    _define_flags()
    cli.run(main)

"""The pictures of the retrieval report (`dnc_jax.evaluation.report`): the Recall@K curve and the
worst classes as PNG charts (matplotlib Agg), and image thumbnails as PNG files."""
from __future__ import annotations

import os

import matplotlib
import numpy as np
from PIL import Image

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def recall_curve(recall: np.ndarray, marks, path: str, title: str) -> str:
    """Recall@K for K = 1..len(recall) (log K axis), the protocol's cut-offs `marks` labelled."""
    ks = np.arange(1, len(recall) + 1)
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    ax.plot(ks, 100 * recall, color="#1f77b4")
    for k in marks:
        if 1 <= k <= len(recall):
            ax.plot(k, 100 * recall[k - 1], "o", color="#1f77b4")
            ax.annotate(f"R@{k} {100 * recall[k - 1]:.1f}", (k, 100 * recall[k - 1]),
                        textcoords="offset points", xytext=(4, -12), fontsize="small")
    if len(recall) > 1:
        ax.set_xscale("log")
    ax.set(xlabel="K (neighbours retrieved)", ylabel="Recall@K (% of queries)", title=title,
           ylim=(0, 102))
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def class_bars(names, values, path: str, title: str) -> str:
    """Horizontal bars of `values` (in [0, 1]) for the classes `names`, worst at the top."""
    fig, ax = plt.subplots(figsize=(6.4, 0.8 + 0.26 * max(len(names), 1)))
    y = np.arange(len(names))
    ax.barh(y, 100 * np.asarray(values, float), color="#d62728")
    ax.set_yticks(y, [_short(n) for n in names], fontsize="small")
    ax.invert_yaxis()
    ax.set(xlim=(0, 100), xlabel="Recall@1 of the class's queries (%)", title=title)
    ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, path)


def thumbnail(images, row: int, side: int) -> Image.Image:
    """Image `row` of an ImageSet's `images` (uint8 rows, or `EncodedImages` decoded from its
    file), fitted into side x side pixels with its aspect ratio kept."""
    if hasattr(images, "decode"):
        image = images.decode(int(row)).convert("RGB")
    else:
        pixels = np.asarray(images[int(row)])
        if pixels.ndim == 3 and pixels.shape[-1] == 1:
            pixels = pixels[..., 0]
        image = Image.fromarray(pixels.astype(np.uint8)).convert("RGB")
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.BICUBIC
    return image.resize(size, resample)


def save_thumbnail(images, row: int, side: int, path: str) -> str:
    thumbnail(images, row, side).save(path, format="PNG", optimize=True)
    return path


def _short(name: str, limit: int = 28) -> str:
    return name if len(name) <= limit else name[:limit - 1] + "…"


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=100)
    os.replace(path + ".tmp.png", path)
    plt.close(fig)
    return path

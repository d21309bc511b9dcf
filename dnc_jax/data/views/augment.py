"""Image views computed on device, inside jit, from uint8 rows of an image array.

This is the path of data held as fixed-size rows (the rendered glyphs; any uint8 [N, S, S, 3]
array, optionally with each image's original (height, width) when the rows are resized
copies). Image files take the other path: their views are cut on the host at the images' own
resolution (`host_views.py`) and only flipped and normalised here (`flip_and_normalize`).

The transforms are torchvision's, computed in ORIGINAL-image
integer coordinates exactly as torchvision computes them, then mapped into row coordinates
(y_cache = y_orig * S / H, x_cache = x_orig * S / W) and resampled in one
`jax.image.scale_and_translate` per image (bilinear, antialiased when downsampling, like PIL's
BILINEAR that torchvision uses on PIL images):

- train: `RandomResizedCrop(out, scale, ratio)` with torchvision's `get_params` (10 attempts,
  then a center crop with the ratio clamped), `RandomHorizontalFlip(0.5)`;
- eval and the clustering pass: `Resize(resize_size)` of the shorter side, then
  `CenterCrop(out)`;
- then the mean/std normalisation the backbone's weights expect (`augment.normalization`:
  torchvision's ImageNet constants, OpenAI CLIP's, or Inception's 0.5/0.5), RGB.

All shapes are fixed and everything is vmapped per image, so a batch is one fused op with no host
sync. When the rows are the originals the views are torchvision's up to the filter's arithmetic;
a crop's border pixels may draw on pixels just outside the crop box, where PIL's
crop-then-resize clips its filter at the box.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from dnc_jax.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# (mean, std) in [0, 1] units, RGB, by `augment.normalization`: torchvision / timm's
# IMAGENET_DEFAULT (ResNets, DINO), OpenAI CLIP's, and Inception's 0.5 / 0.5 (timm's
# ImageNet-21k 'augreg' ViTs).
NORMALIZATIONS = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
RRC_ATTEMPTS = 10  # torchvision's RandomResizedCrop.get_params


def _original_sizes(images, sizes):
    """float32 [B, 2] (height, width); `sizes=None` means the rows are the originals."""
    if sizes is None:
        return jnp.full((images.shape[0], 2), images.shape[1], jnp.float32)
    return jnp.asarray(sizes).astype(jnp.float32)


def random_resized_crop_boxes(key, sizes, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """int32 [B, 4] boxes (top, left, height, width) in original pixels, torchvision's get_params.

    `sizes` is [B, 2] (height, width). All RRC_ATTEMPTS draws are made at once and the first one
    that fits is taken, else torchvision's fallback; top and left are drawn for the chosen box
    only, which has the same distribution as torchvision drawing them for the accepted attempt.
    """
    sizes = jnp.asarray(sizes).astype(jnp.float32)
    num = sizes.shape[0]
    height, width = sizes[:, 0:1], sizes[:, 1:2]
    k_area, k_ratio, k_top, k_left = jax.random.split(key, 4)
    shape = (num, RRC_ATTEMPTS)
    target_area = height * width * jax.random.uniform(k_area, shape, minval=scale[0],
                                                      maxval=scale[1])
    aspect = jnp.exp(jax.random.uniform(k_ratio, shape, minval=math.log(ratio[0]),
                                        maxval=math.log(ratio[1])))
    # jnp.round is half-to-even, like Python's round() in torchvision.
    w = jnp.round(jnp.sqrt(target_area * aspect))
    h = jnp.round(jnp.sqrt(target_area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = jnp.argmax(fits, axis=1)  # index of the first accepted attempt (0 when none)
    found = jnp.any(fits, axis=1)
    h = jnp.take_along_axis(h, first[:, None], axis=1)[:, 0]
    w = jnp.take_along_axis(w, first[:, None], axis=1)[:, 0]
    height, width = height[:, 0], width[:, 0]

    # Fallback: the whole image, its aspect ratio clamped to [min(ratio), max(ratio)], centered.
    in_ratio = width / height
    lo, hi = min(ratio), max(ratio)
    fb_w = jnp.where(in_ratio < lo, width, jnp.where(in_ratio > hi, jnp.round(height * hi), width))
    fb_h = jnp.where(in_ratio < lo, jnp.round(width / lo), height)
    h, w = jnp.where(found, h, fb_h), jnp.where(found, w, fb_w)

    # randint(0, H - h + 1) as torchvision; the fallback is centered with floor division.
    top = jax.random.randint(k_top, (num,), 0, (height - h + 1).astype(jnp.int32))
    left = jax.random.randint(k_left, (num,), 0, (width - w + 1).astype(jnp.int32))
    top = jnp.where(found, top, ((height - h) // 2).astype(jnp.int32))
    left = jnp.where(found, left, ((width - w) // 2).astype(jnp.int32))
    return jnp.stack([top, left, h.astype(jnp.int32), w.astype(jnp.int32)], axis=1)


def center_crop_boxes(sizes, out_size: int, resize_size: int):
    """float32 [B, 4] boxes in original pixels of torchvision's Resize(resize_size) + CenterCrop.

    Resize scales the shorter side to `resize_size` and the longer to
    int(resize_size * long / short); CenterCrop takes offsets int(round((side - out) / 2)) of the
    resized image. The box is that crop mapped back onto the original.
    """
    if resize_size < out_size:
        raise ValueError(f"resize_size {resize_size} < out_size {out_size}: torchvision would "
                         "pad the crop, which is not supported here")
    sizes = jnp.asarray(sizes).astype(jnp.int32)
    height, width = sizes[:, 0], sizes[:, 1]
    short, long = jnp.minimum(height, width), jnp.maximum(height, width)
    new_long = (resize_size * long) // short  # == int(resize_size * long / short), exactly
    portrait = width <= height
    new_h = jnp.where(portrait, new_long, resize_size)
    new_w = jnp.where(portrait, resize_size, new_long)
    top = jnp.round((new_h - out_size) / 2.0)  # half-to-even, like Python's round()
    left = jnp.round((new_w - out_size) / 2.0)
    per_h = height / new_h  # original pixels per resized pixel
    per_w = width / new_w
    return jnp.stack([top * per_h, left * per_w, out_size * per_h, out_size * per_w],
                     axis=1).astype(jnp.float32)


def _resample_box(image, size_hw, box, out_size):
    """Resample `box` (original pixels) of one S x S row to out_size^2, float [0, 255]."""
    cache_side = image.shape[0]
    to_cache = cache_side / size_hw  # cache pixels per original pixel, (y, x)
    top_left, extent = box[:2] * to_cache, box[2:] * to_cache
    scale = out_size / extent
    return jax.image.scale_and_translate(
        image, (out_size, out_size, image.shape[-1]), (0, 1), scale, -top_left * scale,
        method="linear", antialias=True)


def resample_boxes(images, sizes, boxes, out_size: int):
    """uint8 [B, S, S, C] rows -> float32 [B, out, out, C] in [0, 255]: each box
    (top, left, height, width, in original pixels) resized to out x out."""
    sizes = _original_sizes(images, sizes)
    return jax.vmap(_resample_box, in_axes=(0, 0, 0, None))(
        images.astype(jnp.float32), sizes, jnp.asarray(boxes, jnp.float32), out_size)


def eval_resize_size(aug_config) -> int:
    """Resize(r) before CenterCrop(image_size): r = round(image_size / eval_crop_fraction)."""
    return round(aug_config.image_size / aug_config.eval_crop_fraction)


def normalization_constants(name: str) -> tuple[tuple, tuple]:
    """(mean, std) of an `augment.normalization` name."""
    if name not in NORMALIZATIONS:
        raise ConfigError(f"augment.normalization must be one of {list(NORMALIZATIONS)}, got "
                          f"{name!r}")
    return NORMALIZATIONS[name]


def normalize(images_float, normalization: str | None = "imagenet"):
    """[0, 255] floats -> (x / 255 - mean) / std per RGB channel; None: unchanged."""
    if normalization is None:
        return images_float
    mean, std = normalization_constants(normalization)
    return (images_float - jnp.asarray(mean, jnp.float32) * 255.0) / (
        jnp.asarray(std, jnp.float32) * 255.0)


def train_views(images, sizes, key, out_size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                flip=True, normalization="imagenet"):
    """uint8 [B, S, S, C] (+ original sizes [B, 2] or None) -> float32 [B, out, out, C]:
    RandomResizedCrop, optional horizontal flip (p=0.5), normalised (None: [0, 255])."""
    k_box, k_flip = jax.random.split(key)
    boxes = random_resized_crop_boxes(k_box, _original_sizes(images, sizes), scale, ratio)
    views = resample_boxes(images, sizes, boxes, out_size)
    if flip:
        mirror = jax.random.bernoulli(k_flip, 0.5, (images.shape[0],))
        views = jnp.where(mirror[:, None, None, None], views[:, :, ::-1, :], views)
    return normalize(views, normalization)


def flip_and_normalize(views, key, flip=True, normalization="imagenet"):
    """uint8 [B, out, out, C] train crops cut on the host -> float32, each mirrored with
    probability 0.5 (when `flip`), normalised."""
    views = views.astype(jnp.float32)
    if flip:
        mirror = jax.random.bernoulli(key, 0.5, (views.shape[0],))
        views = jnp.where(mirror[:, None, None, None], views[:, :, ::-1, :], views)
    return normalize(views, normalization)


def eval_views(images, sizes, out_size: int, resize_size: int, normalization="imagenet"):
    """uint8 [B, S, S, C] (+ original sizes [B, 2] or None) -> float32 [B, out, out, C]:
    Resize(resize_size) of the shorter side, CenterCrop(out_size), normalised (None: [0, 255]).
    For a crop fraction f, resize_size = round(out_size / f)."""
    side = images.shape[1]
    if sizes is None and resize_size == out_size == side:
        views = images.astype(jnp.float32)  # the identity transform; skip the resampling
    else:
        boxes = center_crop_boxes(_original_sizes(images, sizes), out_size, resize_size)
        views = resample_boxes(images, sizes, boxes, out_size)
    return normalize(views, normalization)

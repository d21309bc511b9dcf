"""Image views computed on device, inside jit, from uint8 cache rows.

Train: RandomResizedCrop (area fraction and log-uniform aspect ratio, as torchvision) and an
optional horizontal flip. Eval and the clustering pass: resize so the crop takes
`crop_fraction` of the image (torchvision's Resize(256) + CenterCrop(224) is 224/256), then
center crop. Both resample with one `jax.image.scale_and_translate` per image (antialiased
bilinear), so there is no intermediate image and the whole batch is one fused op.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _crop_resize(image, top, left, height, width, out_size):
    """Resample the box (top, left, height, width) of `image` [S, S, C] to out_size^2."""
    scale = jnp.stack([out_size / height, out_size / width])
    translation = -jnp.stack([top, left]) * scale
    return jax.image.scale_and_translate(
        image, (out_size, out_size, image.shape[-1]), (0, 1), scale, translation,
        method="linear", antialias=True)


def random_resized_crop_boxes(key, num, size, scale, ratio):
    """Boxes (top, left, height, width) in pixels of an S x S image, one per example.

    torchvision retries up to 10 times when a box does not fit and then falls back to a center
    crop; drawing once and clamping the box to the image is the fixed-shape equivalent (boxes
    that do not fit are rare for ratios near 1 and only shrink slightly).
    """
    k_area, k_ratio, k_y, k_x = jax.random.split(key, 4)
    area = size * size * jax.random.uniform(k_area, (num,), minval=scale[0], maxval=scale[1])
    log_r = jax.random.uniform(k_ratio, (num,), minval=jnp.log(ratio[0]),
                               maxval=jnp.log(ratio[1]))
    aspect = jnp.exp(log_r)  # width / height
    width = jnp.clip(jnp.sqrt(area * aspect), 1.0, size)
    height = jnp.clip(jnp.sqrt(area / aspect), 1.0, size)
    top = jax.random.uniform(k_y, (num,)) * (size - height)
    left = jax.random.uniform(k_x, (num,)) * (size - width)
    return top, left, height, width


def normalize(images_float):
    """[0, 255] floats -> ImageNet mean/std normalised, RGB order."""
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32) * 255.0
    std = jnp.asarray(IMAGENET_STD, jnp.float32) * 255.0
    return (images_float - mean) / std


def train_views(images, key, out_size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip=True):
    """uint8 [B, S, S, C] -> float32 [B, out, out, C], randomly cropped (and flipped)."""
    b, size = images.shape[0], images.shape[1]
    k_box, k_flip = jax.random.split(key)
    boxes = random_resized_crop_boxes(k_box, b, size, scale, ratio)
    views = jax.vmap(_crop_resize, in_axes=(0, 0, 0, 0, 0, None))(
        images.astype(jnp.float32), *boxes, out_size)
    if flip:
        mirror = jax.random.bernoulli(k_flip, 0.5, (b,))
        views = jnp.where(mirror[:, None, None, None], views[:, :, ::-1, :], views)
    return normalize(views)


def eval_views(images, out_size, crop_fraction=224 / 256):
    """uint8 [B, S, S, C] -> the center crop covering `crop_fraction` of each side."""
    size = images.shape[1]
    side = size * crop_fraction
    offset = (size - side) / 2.0
    if out_size == size and crop_fraction == 1.0:
        return normalize(images.astype(jnp.float32))
    views = jax.vmap(lambda im: _crop_resize(im, offset, offset, side, side, out_size))(
        images.astype(jnp.float32))
    return normalize(views)

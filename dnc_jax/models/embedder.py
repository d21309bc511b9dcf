"""Backbone + pooling + dropout + linear head: the embedding network of both papers.

The backbone is a torchvision-layout ResNet (the papers') or a timm-layout Vision Transformer;
either way the pooled vector feeds the same head, features and dtype policy.

Returns the raw head output (masking and normalisation belong to the learners, see
`dnc_jax.divide.masks`) and the L2-normalised pooled features, which the official code
clusters on (docs/method.md §1.1).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dnc_jax import defaults
from dnc_jax.models import convnext, resnet, vit
from dnc_jax.normalize import l2_normalize
from dnc_jax.errors import ConfigError


class Embedder(nn.Module):
    backbone: nn.Module
    embedding_dim: int = 128
    pooling: str = "avg"
    dropout_rate: float = 0.01
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images, train: bool = False):
        pooled = pool(self.backbone(images, train=train), self.pooling)
        # Embeddings, features and everything downstream (losses, k-means) in float32.
        pooled = pooled_raw = pooled.astype(jnp.float32)
        features = l2_normalize(pooled)
        pooled = nn.Dropout(self.dropout_rate, deterministic=not train)(pooled)
        # torch.nn.Linear's default init: uniform(+-1/sqrt(fan_in)) for weight and bias,
        # the PAMI code's `pt_default` head initialisation (docs/method.md §2.1).
        bound = 1.0 / jnp.sqrt(pooled.shape[-1])
        embedding = nn.Dense(
            self.embedding_dim,
            dtype=jnp.float32,
            kernel_init=_uniform(bound),
            bias_init=_uniform(bound),
            name="head",
        )(pooled)
        return {"embedding": embedding, "features": features, "pooled": pooled_raw}


def pool(outputs, pooling: str):
    """[B, D] from a ResNet's feature map [B, H, W, D] (global average or max) or a ViT's tokens
    [B, 1 + N, D] ('token': the class token; 'avg' / 'max' over the patch tokens); a [B, D]
    the backbone pooled itself (a ViT with fc_norm, the MAP head, a projection or no class
    token; a ConvNeXt) as it is."""
    if outputs.ndim == 2:
        return outputs
    if outputs.ndim == 3 and pooling == "token":
        return outputs[:, 0]
    spatial = (1, 2) if outputs.ndim == 4 else 1
    if outputs.ndim == 3:
        outputs = outputs[:, 1:]
    if pooling == "avg":
        return jnp.mean(outputs, axis=spatial)
    if pooling == "max":
        return jnp.max(outputs, axis=spatial)
    raise ConfigError(f"model.pooling must be one of {list(_POOLINGS[outputs.ndim == 3])}, "
                      f"got {pooling!r}")


_POOLINGS = {False: ("avg", "max"), True: vit.POOLINGS}


def _uniform(bound):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def compute_dtype(name: str):
    """The `dtype` config key as a jnp type: 'auto' is bfloat16 on accelerators, float32 on
    the CPU (where bfloat16 is emulated and slower)."""
    if name == "auto":
        return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
    if name not in ("float32", "bfloat16"):
        raise ConfigError(f"dtype must be 'auto', 'float32' or 'bfloat16', got {name!r}")
    return jnp.dtype(name).type


def check_model_config(model_config, image_size: int | None = None) -> None:
    """The `model` keys a run needs, checked before anything loads or is written (the network
    itself only meets them when it is first applied); `image_size`, the crop, must tile into
    a ViT's patches."""
    name = model_config.name
    if vit.is_vit(name):
        vit.make_vit(name, defaults.filled(model_config, "model").vit,
                     pooling=model_config.pooling)
        if image_size is not None:
            vit.check_crop(name, image_size)
    elif convnext.is_convnext(name):
        convnext.make_convnext(name, model_config.pooling,
                               drop_path=defaults.filled(model_config, "model").convnext.drop_path)
        if image_size is not None:
            convnext.check_crop(name, image_size)
    else:
        resnet.make_resnet(name)
    choices = {"stem": ("imagenet", "small"), "pooling": _POOLINGS[vit.is_vit(name)],
               "head_init": ("cvpr", "pt_default")}
    for key, allowed in choices.items():
        if model_config[key] not in allowed:
            raise ConfigError(f"model.{key} must be one of {list(allowed)}, got "
                              f"{model_config[key]!r}")


def make_embedder(model_config, dtype=jnp.float32) -> Embedder:
    """Builds the network from the `model` section of a config."""
    if vit.is_vit(model_config.name):
        backbone = vit.make_vit(model_config.name, defaults.filled(model_config, "model").vit,
                                dtype=dtype, pooling=model_config.pooling)
    elif convnext.is_convnext(model_config.name):  # pools itself: timm's norm follows the pool
        backbone = convnext.make_convnext(
            model_config.name, model_config.pooling,
            drop_path=defaults.filled(model_config, "model").convnext.drop_path, dtype=dtype)
    else:
        backbone = resnet.make_resnet(
            model_config.name,
            width=model_config.width,
            stem=model_config.stem,
            bn_frozen=model_config.bn_frozen,
            dtype=dtype,
        )
    return Embedder(
        backbone=backbone,
        embedding_dim=model_config.embedding_dim,
        pooling=model_config.pooling,
        dropout_rate=model_config.dropout,
        dtype=dtype,
    )

"""Vision Transformers in Flax Linen, laid out like timm's `VisionTransformer`.

The module tree mirrors timm's names (`patch_embed/proj`, `cls_token`, `pos_embed`, optional
`norm_pre`, `blocks_{i}` with `norm1`, `attn/qkv`, `attn/proj`, `norm2`, `mlp/fc1`, `mlp/fc2`,
and the final `norm`), so that timm's checkpoints (DINO, CLIP, ImageNet-21k, ...) import by
name (`dnc_jax.models.vit_import`). Blocks are pre-norm: x + attn(norm1(x)), x + mlp(norm2(x)).

timm's variants built on request (`model.vit.*`): LayerScale (`blocks_{i}/ls1/gamma`, `ls2`:
DINOv2, DeiT-III), register tokens (`reg_token`, after the class token, with or without
position embeddings for the prefix tokens: `no_embed_class`), no class token (SigLIP),
timm's SwiGLUPacked MLP (`mlp/fc1` packs the value and the gate halves: DINOv2's giant),
timm's global_pool='avg' with `fc_norm` (model.pooling='fc_norm'), its attention pooling
`attn_pool` (model.pooling='map': SigLIP's head, one learned query attending over the patch
tokens, then an MLP) and CLIP's output projection (`head`).

The backbone returns every token after the final norm, [B, 1 + N, D] with the class token
first and the register tokens dropped; pooling (class token, mean or max of the patch tokens)
belongs to the embedder, as the ResNet's global pooling does, except where the backbone has
parameters after it (fc_norm, the MAP head, a projection) or no class token: then the
backbone pools and returns [B, D]. The position embeddings are sized from the input at `init`
(prefix + (crop / patch)^2 rows, the patches' alone with `no_embed_class`), so a checkpoint
made at another resolution is resampled when it is imported, not here.

Parameters stay float32; `dtype` is the compute dtype (bfloat16 on accelerators). The
attention softmax and the LayerNorm statistics are computed in float32 whatever `dtype` is.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from dnc_jax.errors import ConfigError
from dnc_jax.models.vit_layers import (ACTIVATIONS, AttentionPool, Block, PatchEmbed,
                                       dense_init)


@dataclasses.dataclass(frozen=True)
class ViTArchitecture:
    patch_size: int
    width: int       # D, the token dimension
    depth: int       # number of blocks
    num_heads: int
    mlp_ratio: float = 4.0  # fc1's width over D for the plain MLP (and the MAP head's MLP)


# timm's sizes: ViT-Ti, -S, -B, -L (Dosovitskiy et al.; Touvron et al. for Ti and S), DINOv2's
# giant (-g: 1536 wide, 40 blocks, used with its SwiGLU MLP) and SigLIP's shape-optimised
# So400m (Alabdulmohsin et al. 2023: 1152 wide, 27 blocks, MLP ratio 3.7362).
_SIZES = {"ti": (192, 12, 3, 4.0), "s": (384, 12, 6, 4.0), "b": (768, 12, 12, 4.0),
          "l": (1024, 24, 16, 4.0), "g": (1536, 40, 24, 4.0), "so400m": (1152, 27, 16, 3.7362)}
# Not a timm model: 4x4 patches and four narrow blocks, for tests and the 32 px CPU demo.
_MICRO = ViTArchitecture(patch_size=4, width=64, depth=4, num_heads=4)
_NAME = re.compile(r"vit_(ti|s|b|l|g|so400m)(\d+)")
MLPS = ("plain", "swiglu")


def is_vit(name: str) -> bool:
    return name.startswith("vit_")


def architecture(name: str) -> ViTArchitecture:
    """'vit_s16' -> ViT-S with 16 px patches (timm's vit_small_patch16_*); 'vit_micro'."""
    if name == "vit_micro":
        return _MICRO
    match = _NAME.fullmatch(name)
    if not match or int(match.group(2)) < 1:
        raise ConfigError(
            f"model.name {name!r} is not a ViT this library builds: use vit_<size><patch> with "
            f"size ti|s|b|l|g|so400m and the patch side in pixels (vit_s16, vit_b14, "
            f"vit_so400m14, ...) or vit_micro")
    width, depth, heads, mlp_ratio = _SIZES[match.group(1)]
    return ViTArchitecture(patch_size=int(match.group(2)), width=width, depth=depth,
                           num_heads=heads, mlp_ratio=mlp_ratio)


def mlp_hidden(arch: ViTArchitecture, mlp: str, hidden: int = 0) -> int:
    """The width of `mlp/fc1`'s output: `hidden` when set, else the plain MLP's
    int(D x mlp_ratio), or for SwiGLU DINOv2's rule, both halves of 8/3 D rounded up to a
    multiple of 8 (timm builds its giant with mlp_ratio 2.66667 x 2: 8192 for D = 1536)."""
    if hidden:
        return hidden
    if mlp == "swiglu":
        return 2 * ((int(arch.width * 4 * 2 / 3) + 7) // 8 * 8)
    return int(arch.width * arch.mlp_ratio)


def check_crop(name: str, image_size: int) -> None:
    patch = architecture(name).patch_size
    if image_size % patch:
        raise ConfigError(f"augment.image_size {image_size} is not a multiple of the patch "
                          f"side {patch} of model.name {name!r}")



class VisionTransformer(nn.Module):
    """Returns the tokens [B, 1 + N, D] after the final norm, class token first (register
    tokens are dropped); with `pool` set the pooled vector [B, D] instead ([B, projection]
    with a projection). Without a class token `pool` must be set."""

    arch: ViTArchitecture
    pre_norm: bool = False     # CLIP: a LayerNorm (`norm_pre`) before the blocks
    act: str = "gelu"
    norm_eps: float = 1e-6     # timm's ViTs 1e-6; CLIP's 1e-5
    drop_path: float = 0.0     # stochastic depth of the last block; linear from 0 over depth
    layer_scale: bool = False  # DINOv2, DeiT-III: LayerScale (`ls1`, `ls2`) in every block
    reg_tokens: int = 0        # register tokens (`reg_token` [1, R, D]) after the class token
    no_embed_class: bool = False  # position embeddings for the patches only (timm's reg4 ViTs)
    class_token: bool = True   # SigLIP: none, the tokens are the patches' (and registers')
    mlp: str = "plain"         # 'plain' | 'swiglu' (timm's SwiGLUPacked)
    mlp_hidden: int = 0        # fc1's width; 0: `mlp_hidden()`'s default for the size
    pool: str | None = None    # pooling in the backbone: 'token' | 'avg' | 'max' | 'fc_norm'
                               # (timm's global_pool='avg' + fc_norm) | 'map' (attention
                               # pooling, `attn_pool`); None: the tokens
    projection: int = 0        # CLIP: a Linear (`head`) from the pooled vector to this size
    dtype: Any = jnp.float32

    @property
    def prefix_tokens(self) -> int:
        return int(self.class_token) + self.reg_tokens

    @nn.compact
    def __call__(self, images, train: bool = False):
        arch = self.arch
        norm = functools.partial(nn.LayerNorm, epsilon=self.norm_eps, dtype=self.dtype,
                                 use_fast_variance=False)
        # timm drops the patch-embedding bias when a pre-norm follows it (CLIP).
        x = PatchEmbed(arch.patch_size, arch.width, use_bias=not self.pre_norm,
                       dtype=self.dtype, name="patch_embed")(images)
        batch = x.shape[0]
        prefix = []
        if self.class_token:
            cls_token = self.param("cls_token", nn.initializers.normal(1e-6),
                                   (1, 1, arch.width))
            prefix.append(jnp.broadcast_to(cls_token, (batch, 1, arch.width)).astype(x.dtype))
        if self.reg_tokens:
            reg_token = self.param("reg_token", nn.initializers.normal(1e-6),
                                   (1, self.reg_tokens, arch.width))
            prefix.append(jnp.broadcast_to(reg_token, (batch, self.reg_tokens, arch.width))
                          .astype(x.dtype))
        # timm's _pos_embed: with no_embed_class the patches alone get position embeddings,
        # the class and register tokens are concatenated after; else all tokens get them.
        rows = x.shape[1] if self.no_embed_class else self.prefix_tokens + x.shape[1]
        pos_embed = self.param("pos_embed", dense_init, (1, rows, arch.width))
        if self.no_embed_class:
            x = jnp.concatenate(prefix + [x + pos_embed.astype(x.dtype)], axis=1)
        else:
            x = jnp.concatenate(prefix + [x], axis=1) + pos_embed.astype(x.dtype)
        if self.pre_norm:
            x = norm(name="norm_pre")(x)
        rates = np.linspace(0.0, self.drop_path, arch.depth)
        hidden = mlp_hidden(arch, self.mlp, self.mlp_hidden)
        for i in range(arch.depth):
            x = Block(arch.num_heads, hidden, self.act, norm, float(rates[i]), self.layer_scale,
                      self.mlp, self.dtype, name=f"blocks_{i}")(x, train)
        if self.pool == "fc_norm":
            # timm's global_pool='avg' with fc_norm: no final norm on the tokens; the mean of
            # the patch tokens (class and register tokens left out), then `fc_norm`.
            pooled = norm(name="fc_norm")(jnp.mean(x[:, self.prefix_tokens:], axis=1))
        else:
            x = norm(name="norm")(x)
            patches = x[:, self.prefix_tokens:]  # the class and register tokens left out
            if self.pool is None:
                if not self.class_token:
                    raise ConfigError("a ViT without a class token (model.vit.class_token="
                                      "False) pools itself: set model.pooling")
                # registers are kept out of every pooling
                return jnp.concatenate([x[:, :1], patches], axis=1) if self.reg_tokens else x
            if self.pool == "map":
                pooled = AttentionPool(arch.num_heads, int(arch.width * arch.mlp_ratio),
                                       self.act, norm, self.dtype, name="attn_pool")(patches)
            else:
                pooled = (x[:, 0] if self.pool == "token" else
                          jnp.mean(patches, axis=1) if self.pool == "avg" else
                          jnp.max(patches, axis=1))
        if self.projection:
            # CLIP's output projection as timm imports it: `head`, bias zero in OpenAI's.
            # Initialised as OpenAI's `proj` (normal, std width^-0.5), not timm's 0.02 (timm
            # only loads it): from scratch the small one stalled the tiny CLIP layout's
            # Recall@1 (tests/test_backbone_runs.py).
            pooled = nn.Dense(self.projection, dtype=self.dtype,
                              kernel_init=nn.initializers.normal(pooled.shape[-1] ** -0.5),
                              name="head")(pooled)
        return pooled


BACKBONE_POOLINGS = ("fc_norm", "map")  # model.pooling values the ViT itself applies
POOLINGS = ("token", "avg", "max") + BACKBONE_POOLINGS


def _int_at_least_zero(vit_config, key, meaning=""):
    value = vit_config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"model.vit.{key} must be an integer >= 0{meaning}, got {value!r}")
    return value


def make_vit(name: str, vit_config, dtype=jnp.float32,
             pooling: str | None = None) -> VisionTransformer:
    """The ViT `name` with the `model.vit` options (pre_norm, act, norm_eps, drop_path,
    layer_scale, reg_tokens, no_embed_class, projection, class_token, mlp, mlp_hidden);
    `pooling`, model.pooling, applied in the backbone when the backbone needs it
    (BACKBONE_POOLINGS, before a projection, or without a class token)."""
    if vit_config.act not in ACTIVATIONS:
        raise ConfigError(f"model.vit.act must be one of {sorted(ACTIVATIONS)}, got "
                          f"{vit_config.act!r}")
    drop_path = float(vit_config.drop_path)
    if not 0.0 <= drop_path < 1.0:
        raise ConfigError(f"model.vit.drop_path must be in [0, 1), got {drop_path}")
    reg_tokens = _int_at_least_zero(vit_config, "reg_tokens")
    projection = _int_at_least_zero(vit_config, "projection", " (0: none)")
    hidden = _int_at_least_zero(vit_config, "mlp_hidden", " (0: the size's own)")
    if vit_config.mlp not in MLPS:
        raise ConfigError(f"model.vit.mlp must be one of {list(MLPS)}, got {vit_config.mlp!r}")
    if vit_config.mlp == "swiglu" and hidden % 2:
        raise ConfigError(f"model.vit.mlp_hidden must be even with model.vit.mlp='swiglu' (fc1 "
                          f"packs two halves), got {hidden}")
    class_token = vit_config.class_token
    if not isinstance(class_token, bool):
        raise ConfigError(f"model.vit.class_token must be True or False, got {class_token!r}")
    if pooling is not None and pooling not in POOLINGS:
        raise ConfigError(f"model.pooling must be one of {list(POOLINGS)} for a ViT, got "
                          f"{pooling!r}")
    if not class_token and pooling == "token":
        raise ConfigError("model.pooling='token' needs a class token: with "
                          "model.vit.class_token=False use avg, max, fc_norm or map")
    backbone_pools = pooling in BACKBONE_POOLINGS or bool(projection) or not class_token
    return VisionTransformer(
        arch=architecture(name),
        pre_norm=bool(vit_config.pre_norm),
        act=vit_config.act,
        norm_eps=float(vit_config.norm_eps),
        drop_path=drop_path,
        layer_scale=bool(vit_config.layer_scale),
        reg_tokens=reg_tokens,
        no_embed_class=bool(vit_config.no_embed_class),
        class_token=class_token,
        mlp=vit_config.mlp,
        mlp_hidden=hidden,
        pool=pooling if backbone_pools else None,
        projection=projection,
        dtype=dtype,
    )

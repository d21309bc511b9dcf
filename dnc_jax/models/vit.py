"""Vision Transformers in Flax Linen, laid out like timm's `VisionTransformer`.

The module tree mirrors timm's names (`patch_embed/proj`, `cls_token`, `pos_embed`, optional
`norm_pre`, `blocks_{i}` with `norm1`, `attn/qkv`, `attn/proj`, `norm2`, `mlp/fc1`, `mlp/fc2`,
and the final `norm`), so that timm's checkpoints (DINO, CLIP, ImageNet-21k, ...) import by
name (`dnc_jax.models.vit_import`). Blocks are pre-norm: x + attn(norm1(x)), x + mlp(norm2(x)).

timm's variants built on request (`model.vit.*`): LayerScale (`blocks_{i}/ls1/gamma`, `ls2`:
DINOv2, DeiT-III), register tokens (`reg_token`, after the class token, with or without
position embeddings for the prefix tokens: `no_embed_class`), timm's global_pool='avg' with
`fc_norm` (model.pooling='fc_norm') and CLIP's output projection (`head`).

The backbone returns every token after the final norm, [B, 1 + N, D] with the class token
first and the register tokens dropped; pooling (class token, mean or max of the patch tokens)
belongs to the embedder, as the ResNet's global pooling does, except where the backbone has
parameters after it (fc_norm, a projection): then the backbone pools and returns [B, D]. The
position embeddings are sized from the input at `init` (1 + R + (crop / patch)^2 rows, the
patches' alone with `no_embed_class`), so a checkpoint made at another resolution is
resampled when it is imported, not here.

Parameters stay float32; `dtype` is the compute dtype (bfloat16 on accelerators). The
attention softmax and the LayerNorm statistics are computed in float32 whatever `dtype` is.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dnc_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ViTArchitecture:
    patch_size: int
    width: int       # D, the token dimension
    depth: int       # number of blocks
    num_heads: int
    mlp_ratio: float = 4.0


# timm's sizes: ViT-Ti, -S, -B, -L (Dosovitskiy et al.; Touvron et al. for Ti and S).
_SIZES = {"ti": (192, 12, 3), "s": (384, 12, 6), "b": (768, 12, 12), "l": (1024, 24, 16)}
# Not a timm model: 4x4 patches and four narrow blocks, for tests and the 32 px CPU demo.
_MICRO = ViTArchitecture(patch_size=4, width=64, depth=4, num_heads=4)
_NAME = re.compile(r"vit_(ti|s|b|l)(\d+)")


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
            f"size ti|s|b|l and the patch side in pixels (vit_s16, vit_b16, vit_s8, ...) or "
            f"vit_micro")
    width, depth, heads = _SIZES[match.group(1)]
    return ViTArchitecture(patch_size=int(match.group(2)), width=width, depth=depth,
                           num_heads=heads)


def check_crop(name: str, image_size: int) -> None:
    patch = architecture(name).patch_size
    if image_size % patch:
        raise ConfigError(f"augment.image_size {image_size} is not a multiple of the patch "
                          f"side {patch} of model.name {name!r}")


# timm's init ('jax'-free default): Linear weights truncated normal std 0.02, biases zero; the
# patch-embedding conv keeps torch's default uniform(+-1/sqrt(fan_in)); class token normal with
# std 1e-6 and position embeddings truncated normal std 0.02.
_dense_init = nn.initializers.truncated_normal(0.02)
_conv_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def _conv_bias_init(fan_in):
    bound = 1.0 / np.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def quick_gelu(x):
    """OpenAI CLIP's activation: x * sigmoid(1.702 x)."""
    return x * jax.nn.sigmoid(1.702 * x)


_ACTIVATIONS = {"gelu": lambda x: nn.gelu(x, approximate=False), "quick_gelu": quick_gelu}


class Attention(nn.Module):
    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        batch, tokens, width = x.shape
        head_dim = width // self.num_heads
        qkv = nn.Dense(3 * width, dtype=self.dtype, kernel_init=_dense_init, name="qkv")(x)
        # timm's qkv Linear emits [q | k | v], each split into heads: [B, N, 3, H, hd].
        q, k, v = jnp.moveaxis(qkv.reshape(batch, tokens, 3, self.num_heads, head_dim), 2, 0)
        # Logits and softmax in float32 (jax.nn.dot_product_attention's XLA path does this for
        # bfloat16 inputs too); scale 1/sqrt(head_dim) as timm.
        out = jax.nn.dot_product_attention(q, k, v)
        out = out.reshape(batch, tokens, width)
        return nn.Dense(width, dtype=self.dtype, kernel_init=_dense_init, name="proj")(out)


class Mlp(nn.Module):
    hidden: int
    act: str = "gelu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        width = x.shape[-1]
        x = nn.Dense(self.hidden, dtype=self.dtype, kernel_init=_dense_init, name="fc1")(x)
        x = _ACTIVATIONS[self.act](x)
        return nn.Dense(width, dtype=self.dtype, kernel_init=_dense_init, name="fc2")(x)


class DropPath(nn.Module):
    """Stochastic depth: drops a residual branch per sample (rng 'dropout'), as timm's."""

    rate: float

    @nn.compact
    def __call__(self, x, train: bool):
        if not train or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


class LayerScale(nn.Module):
    """timm's LayerScale (CaiT; DINOv2, DeiT-III): a learned per-channel factor `gamma` on a
    residual branch, initialised to `init_values`."""

    init_values: float = 1e-5

    @nn.compact
    def __call__(self, x):
        gamma = self.param("gamma", nn.initializers.constant(self.init_values), (x.shape[-1],))
        return x * gamma.astype(x.dtype)


class Block(nn.Module):
    num_heads: int
    mlp_hidden: int
    act: str
    norm: Any
    drop_path: float = 0.0
    layer_scale: bool = False  # timm's init_values: ls1/ls2 on the two branches
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = Attention(self.num_heads, self.dtype, name="attn")(self.norm(name="norm1")(x))
        if self.layer_scale:
            y = LayerScale(name="ls1")(y)
        x = x + DropPath(self.drop_path)(y, train)
        y = Mlp(self.mlp_hidden, self.act, self.dtype, name="mlp")(self.norm(name="norm2")(x))
        if self.layer_scale:
            y = LayerScale(name="ls2")(y)
        return x + DropPath(self.drop_path)(y, train)


class PatchEmbed(nn.Module):
    patch_size: int
    width: int
    use_bias: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images):
        p = self.patch_size
        fan_in = 3 * p * p
        x = nn.Conv(self.width, (p, p), (p, p), padding="VALID", use_bias=self.use_bias,
                    dtype=self.dtype, kernel_init=_conv_init,
                    bias_init=_conv_bias_init(fan_in), name="proj")(images)
        # Row-major over the patch grid, as timm's flatten(2).transpose(1, 2).
        return x.reshape(x.shape[0], -1, self.width)


class VisionTransformer(nn.Module):
    """Returns the tokens [B, 1 + N, D] after the final norm, class token first (register
    tokens are dropped); with `pool` set the pooled vector [B, D] instead ([B, projection]
    with a projection)."""

    arch: ViTArchitecture
    pre_norm: bool = False     # CLIP: a LayerNorm (`norm_pre`) before the blocks
    act: str = "gelu"
    norm_eps: float = 1e-6     # timm's ViTs 1e-6; CLIP's 1e-5
    drop_path: float = 0.0     # stochastic depth of the last block; linear from 0 over depth
    layer_scale: bool = False  # DINOv2, DeiT-III: LayerScale (`ls1`, `ls2`) in every block
    reg_tokens: int = 0        # register tokens (`reg_token` [1, R, D]) after the class token
    no_embed_class: bool = False  # position embeddings for the patches only (timm's reg4 ViTs)
    pool: str | None = None    # pooling in the backbone: 'token' | 'avg' | 'max' | 'fc_norm'
                               # (timm's global_pool='avg' + fc_norm); None: the tokens
    projection: int = 0        # CLIP: a Linear (`head`) from the pooled vector to this size
    dtype: Any = jnp.float32

    @property
    def prefix_tokens(self) -> int:
        return 1 + self.reg_tokens

    @nn.compact
    def __call__(self, images, train: bool = False):
        arch = self.arch
        norm = functools.partial(nn.LayerNorm, epsilon=self.norm_eps, dtype=self.dtype,
                                 use_fast_variance=False)
        # timm drops the patch-embedding bias when a pre-norm follows it (CLIP).
        x = PatchEmbed(arch.patch_size, arch.width, use_bias=not self.pre_norm,
                       dtype=self.dtype, name="patch_embed")(images)
        batch = x.shape[0]
        cls_token = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, arch.width))
        prefix = [jnp.broadcast_to(cls_token, (batch, 1, arch.width)).astype(x.dtype)]
        if self.reg_tokens:
            reg_token = self.param("reg_token", nn.initializers.normal(1e-6),
                                   (1, self.reg_tokens, arch.width))
            prefix.append(jnp.broadcast_to(reg_token, (batch, self.reg_tokens, arch.width))
                          .astype(x.dtype))
        # timm's _pos_embed: with no_embed_class the patches alone get position embeddings,
        # the class and register tokens are concatenated after; else all tokens get them.
        rows = x.shape[1] if self.no_embed_class else self.prefix_tokens + x.shape[1]
        pos_embed = self.param("pos_embed", _dense_init, (1, rows, arch.width))
        if self.no_embed_class:
            x = jnp.concatenate(prefix + [x + pos_embed.astype(x.dtype)], axis=1)
        else:
            x = jnp.concatenate(prefix + [x], axis=1) + pos_embed.astype(x.dtype)
        if self.pre_norm:
            x = norm(name="norm_pre")(x)
        rates = np.linspace(0.0, self.drop_path, arch.depth)
        for i in range(arch.depth):
            x = Block(arch.num_heads, int(arch.width * arch.mlp_ratio), self.act, norm,
                      float(rates[i]), self.layer_scale, self.dtype, name=f"blocks_{i}")(x, train)
        if self.pool == "fc_norm":
            # timm's global_pool='avg' with fc_norm: no final norm on the tokens; the mean of
            # the patch tokens (class and register tokens left out), then `fc_norm`.
            pooled = norm(name="fc_norm")(jnp.mean(x[:, self.prefix_tokens:], axis=1))
        else:
            x = norm(name="norm")(x)
            if self.reg_tokens:  # registers are kept out of every pooling
                x = jnp.concatenate([x[:, :1], x[:, self.prefix_tokens:]], axis=1)
            if self.pool is None:
                return x
            pooled = (x[:, 0] if self.pool == "token" else
                      jnp.mean(x[:, 1:], axis=1) if self.pool == "avg" else
                      jnp.max(x[:, 1:], axis=1))
        if self.projection:
            # CLIP's output projection as timm imports it: `head`, bias zero in OpenAI's.
            pooled = nn.Dense(self.projection, dtype=self.dtype, kernel_init=_dense_init,
                              name="head")(pooled)
        return pooled


BACKBONE_POOLINGS = ("fc_norm",)  # model.pooling values the ViT itself applies


def make_vit(name: str, vit_config, dtype=jnp.float32,
             pooling: str | None = None) -> VisionTransformer:
    """The ViT `name` with the `model.vit` options (pre_norm, act, norm_eps, drop_path,
    layer_scale, reg_tokens, no_embed_class, projection); `pooling`, model.pooling, applied in
    the backbone when the backbone needs it (BACKBONE_POOLINGS, or before a projection)."""
    if vit_config.act not in _ACTIVATIONS:
        raise ConfigError(f"model.vit.act must be one of {sorted(_ACTIVATIONS)}, got "
                          f"{vit_config.act!r}")
    drop_path = float(vit_config.drop_path)
    if not 0.0 <= drop_path < 1.0:
        raise ConfigError(f"model.vit.drop_path must be in [0, 1), got {drop_path}")
    reg_tokens = vit_config.reg_tokens
    if isinstance(reg_tokens, bool) or not isinstance(reg_tokens, int) or reg_tokens < 0:
        raise ConfigError(f"model.vit.reg_tokens must be an integer >= 0, got {reg_tokens!r}")
    projection = vit_config.projection
    if isinstance(projection, bool) or not isinstance(projection, int) or projection < 0:
        raise ConfigError(f"model.vit.projection must be an integer >= 0 (0: none), got "
                          f"{projection!r}")
    if projection and pooling not in (None, "token", "avg", "max", "fc_norm"):
        raise ConfigError(f"model.pooling must be one of ['token', 'avg', 'max', 'fc_norm'] "
                          f"with model.vit.projection, got {pooling!r}")
    return VisionTransformer(
        arch=architecture(name),
        pre_norm=bool(vit_config.pre_norm),
        act=vit_config.act,
        norm_eps=float(vit_config.norm_eps),
        drop_path=drop_path,
        layer_scale=bool(vit_config.layer_scale),
        reg_tokens=reg_tokens,
        no_embed_class=bool(vit_config.no_embed_class),
        pool=pooling if pooling in BACKBONE_POOLINGS or (projection and pooling) else None,
        projection=projection,
        dtype=dtype,
    )

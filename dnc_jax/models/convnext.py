"""ConvNeXt (Liu et al. 2022) in Flax Linen, laid out like timm's `ConvNeXt`.

The module tree mirrors timm's names so that its checkpoints (`convnext_tiny.fb_in22k`,
`convnext_base.fb_in22k_ft_in1k`, ...) import by name (`dnc_jax.models.convnext_import`):

- `stem_0`: 4x4 stride-4 conv; `stem_1`: LayerNorm over the channels (timm's LayerNorm2d);
- `stages_{s}`: `downsample_0` LayerNorm + `downsample_1` 2x2 stride-2 conv (stages 1-3
  only), then `blocks_{b}`: `conv_dw` 7x7 depthwise (padding 3, bias), `norm` LayerNorm,
  `mlp/fc1` C -> 4C, exact GELU, `mlp/fc2` 4C -> C, `gamma` layer scale [C] (init 1e-6),
  added to the block's input through stochastic depth;
- `head/norm`: the LayerNorm timm applies after global pooling (its `head.norm`; `head.fc`,
  the classifier, is not built).

timm's ConvNeXt pools before its final norm, so the backbone pools itself ('avg' as timm, or
'max') and returns the normalised pooled vector [B, C]; the embedder passes a [B, C] backbone
output through unchanged. Every LayerNorm has epsilon 1e-6 (timm's default for these models).

Parameters stay float32; `dtype` is the compute dtype (bfloat16 on accelerators). The LayerNorm
statistics are computed in float32 whatever `dtype` is.
"""
from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from dnc_jax.errors import ConfigError
from dnc_jax.models.vit_layers import DropPath


@dataclasses.dataclass(frozen=True)
class ConvNeXtArchitecture:
    depths: tuple[int, ...]  # blocks per stage
    dims: tuple[int, ...]    # channels per stage
    patch_size: int = 4      # the stem's conv side and stride
    kernel_size: int = 7     # the depthwise conv side


# timm's convnext_tiny / _small / _base (timm/models/convnext.py).
ARCHITECTURES = {
    "convnext_tiny": ConvNeXtArchitecture((3, 3, 9, 3), (96, 192, 384, 768)),
    "convnext_small": ConvNeXtArchitecture((3, 3, 27, 3), (96, 192, 384, 768)),
    "convnext_base": ConvNeXtArchitecture((3, 3, 27, 3), (128, 256, 512, 1024)),
    # Not a timm model: one narrow block per stage, for the tests and a CPU demo.
    "convnext_micro": ConvNeXtArchitecture((1, 1, 1, 1), (16, 32, 64, 128)),
}
POOLINGS = ("avg", "max")
NORM_EPS = 1e-6

# timm's init: conv and Linear weights truncated normal std 0.02, biases zero; norms ones/zeros.
_weight_init = nn.initializers.truncated_normal(0.02)


def is_convnext(name: str) -> bool:
    return name.startswith("convnext_")


def architecture(name: str) -> ConvNeXtArchitecture:
    if name not in ARCHITECTURES:
        raise ConfigError(f"model.name {name!r} is not a ConvNeXt this library builds: use one "
                          f"of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def check_crop(name: str, image_size: int) -> None:
    """The crop must survive the stem and three downsamplings (stride 32 in all): timm floors
    odd sides at each stride as our VALID convolutions do, but a side under 32 leaves nothing."""
    stride = architecture(name).patch_size * 2 ** (len(architecture(name).dims) - 1)
    if image_size < stride:
        raise ConfigError(f"augment.image_size {image_size} is smaller than the total stride "
                          f"{stride} of model.name {name!r}")


class Mlp(nn.Module):
    hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        width = x.shape[-1]
        x = nn.Dense(self.hidden, dtype=self.dtype, kernel_init=_weight_init, name="fc1")(x)
        x = nn.gelu(x, approximate=False)
        return nn.Dense(width, dtype=self.dtype, kernel_init=_weight_init, name="fc2")(x)


class Block(nn.Module):
    kernel_size: int
    drop_path: float = 0.0
    ls_init: float = 1e-6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        width = x.shape[-1]
        pad = self.kernel_size // 2
        y = nn.Conv(width, (self.kernel_size, self.kernel_size), padding=((pad, pad), (pad, pad)),
                    feature_group_count=width, dtype=self.dtype, kernel_init=_weight_init,
                    name="conv_dw")(x)
        y = _norm(self.dtype, "norm")(y)
        y = Mlp(4 * width, self.dtype, name="mlp")(y)
        gamma = self.param("gamma", nn.initializers.constant(self.ls_init), (width,))
        y = y * gamma.astype(y.dtype)
        return x + DropPath(self.drop_path)(y, train)


def _norm(dtype, name):
    return nn.LayerNorm(epsilon=NORM_EPS, dtype=dtype, use_fast_variance=False, name=name)


def _conv(features, side, dtype, name):
    return nn.Conv(features, (side, side), (side, side), padding="VALID", dtype=dtype,
                   kernel_init=_weight_init, name=name)


class Stage(nn.Module):
    """timm's ConvNeXtStage: `downsample_0` LayerNorm + `downsample_1` 2x2 stride-2 conv to
    `dim` channels (all stages but the first), then the blocks `blocks_{b}`."""

    depth: int
    dim: int
    kernel_size: int
    downsample: bool
    drop_path: tuple[float, ...]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.downsample:
            x = _norm(self.dtype, "downsample_0")(x)
            x = _conv(self.dim, 2, self.dtype, "downsample_1")(x)
        for b in range(self.depth):
            x = Block(self.kernel_size, self.drop_path[b], dtype=self.dtype,
                      name=f"blocks_{b}")(x, train)
        return x


class Head(nn.Module):
    """timm's NormMlpClassifierHead up to its pre-logits: the LayerNorm `norm` of the pooled
    vector (the classifier `fc` is the embedder's own head)."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, pooled):
        return _norm(self.dtype, "norm")(pooled)


class ConvNeXt(nn.Module):
    """Returns head.norm(global pool(features)), [B, C_last], as timm's pre-logits."""

    arch: ConvNeXtArchitecture
    pooling: str = "avg"
    drop_path: float = 0.0   # stochastic depth of the last block; linear from 0 over all blocks
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images, train: bool = False):
        arch = self.arch
        x = _conv(arch.dims[0], arch.patch_size, self.dtype, "stem_0")(images)
        x = _norm(self.dtype, "stem_1")(x)
        rates = [float(r) for r in np.linspace(0.0, self.drop_path, sum(arch.depths))]
        first = 0
        for s, (depth, dim) in enumerate(zip(arch.depths, arch.dims)):
            x = Stage(depth, dim, arch.kernel_size, s > 0, tuple(rates[first:first + depth]),
                      self.dtype, name=f"stages_{s}")(x, train)
            first += depth
        if self.pooling not in POOLINGS:
            raise ConfigError(f"model.pooling must be one of {list(POOLINGS)} for a ConvNeXt, "
                              f"got {self.pooling!r}")
        # Pooled in float32 (a mean over up to 49 positions); the norm computes in `dtype`.
        pool = jnp.mean if self.pooling == "avg" else jnp.max
        pooled = pool(x.astype(jnp.float32), axis=(1, 2))
        return Head(self.dtype, name="head")(pooled)


def make_convnext(name: str, pooling: str = "avg", drop_path: float = 0.0,
                  dtype=jnp.float32) -> ConvNeXt:
    """The ConvNeXt `name` pooling its last feature map with `pooling` ('avg' or 'max');
    `drop_path` (`model.convnext.drop_path`) is the last block's stochastic depth rate."""
    if pooling not in POOLINGS:
        raise ConfigError(f"model.pooling must be one of {list(POOLINGS)} for a ConvNeXt, got "
                          f"{pooling!r}")
    return ConvNeXt(arch=architecture(name), pooling=pooling,
                    drop_path=_checked_drop_path(drop_path), dtype=dtype)


def _checked_drop_path(drop_path) -> float:
    """`model.convnext.drop_path` as a float in [0, 1), or a one-line ConfigError naming it."""
    if isinstance(drop_path, bool) or not isinstance(drop_path, numbers.Real):
        raise ConfigError(f"model.convnext.drop_path must be a number in [0, 1), got "
                          f"{drop_path!r} ({type(drop_path).__name__})")
    if not 0.0 <= float(drop_path) < 1.0:  # NaN fails too
        raise ConfigError(f"model.convnext.drop_path must be in [0, 1), got {drop_path!r}")
    return float(drop_path)

"""ResNet backbones in Flax Linen, laid out like torchvision's (v1.5: stride on the 3x3 conv).

The layout mirrors torchvision's module tree (conv1/bn1, layer1..layer4, blocks with
conv1/bn1/conv2/bn2[/conv3/bn3] and a `downsample` conv+bn) so that ImageNet weights can be
mapped onto it name by name. BatchNorm is either trained (`bn_frozen=False`) or frozen at its
stored statistics while its scale and bias stay trainable, which is what the official
Divide and Conquer code does with the ImageNet model.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from dnc_jax.errors import ConfigError

# torchvision's BatchNorm defaults: eps 1e-5, momentum 0.1 (i.e. 0.9 in Flax's convention).
_BN_EPSILON = 1e-5
_BN_MOMENTUM = 0.9


class _Block(nn.Module):
    filters: int
    strides: int
    norm: Any
    conv: Any

    def _add_shortcut(self, x, y):
        """relu(shortcut + y): the identity, or torchvision's `downsample` 1x1 conv + BN when
        the block changes the shape."""
        if x.shape != y.shape:
            x = _Downsample(y.shape[-1], self.strides, self.norm, self.conv,
                            name="downsample")(x)
        return nn.relu(x + y)


class BasicBlock(_Block):
    """Two 3x3 convolutions (ResNet-18/34)."""

    @nn.compact
    def __call__(self, x):
        y = self.conv(self.filters, (3, 3), (self.strides, self.strides), name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(self.filters, (3, 3), name="conv2")(y)
        return self._add_shortcut(x, self.norm(name="bn2")(y))


class Bottleneck(_Block):
    """1x1 -> 3x3 (strided, torchvision v1.5) -> 1x1 x4 (ResNet-50/101)."""

    @nn.compact
    def __call__(self, x):
        y = self.conv(self.filters, (1, 1), name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(self.filters, (3, 3), (self.strides, self.strides), name="conv2")(y)
        y = nn.relu(self.norm(name="bn2")(y))
        y = self.conv(self.filters * 4, (1, 1), name="conv3")(y)
        return self._add_shortcut(x, self.norm(name="bn3")(y))


class _Downsample(nn.Module):
    filters: int
    strides: int
    norm: Any
    conv: Any

    @nn.compact
    def __call__(self, x):
        x = self.conv(self.filters, (1, 1), (self.strides, self.strides), name="conv")(x)
        return self.norm(name="bn")(x)


class ResNet(nn.Module):
    """Returns the last feature map [B, H', W', C]; pooling belongs to the embedder.

    `stem='imagenet'` is torchvision's 7x7/2 conv + 3x3/2 max-pool; `stem='small'` is a single
    3x3/1 conv for tiny images (the CPU demo), where the ImageNet stem would discard most pixels.
    """

    stage_sizes: Sequence[int]
    block: Any
    width: int = 64
    stem: str = "imagenet"
    bn_frozen: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        # torchvision initialises convolutions with kaiming_normal_(mode='fan_out').
        conv = _torch_padding_conv(functools.partial(
            nn.Conv, use_bias=False, dtype=self.dtype,
            kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal")))
        norm = functools.partial(
            nn.BatchNorm,
            use_running_average=self.bn_frozen or not train,
            momentum=_BN_MOMENTUM,
            epsilon=_BN_EPSILON,
            dtype=self.dtype,
        )
        if self.stem == "imagenet":
            x = conv(self.width, (7, 7), (2, 2), name="conv1")(x)
            x = nn.relu(norm(name="bn1")(x))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        elif self.stem == "small":
            x = conv(self.width, (3, 3), name="conv1")(x)
            x = nn.relu(norm(name="bn1")(x))
        else:
            raise ConfigError(f"model.stem must be 'imagenet' or 'small', got {self.stem!r}")
        for stage, num_blocks in enumerate(self.stage_sizes):
            for index in range(num_blocks):
                strides = 2 if stage > 0 and index == 0 else 1
                x = self.block(self.width * 2**stage, strides, norm, conv,
                               name=f"layer{stage + 1}_{index}")(x)
        return x


def _torch_padding_conv(conv):
    """Convolutions padded like torch's (k // 2 on each side), not XLA 'SAME'.

    'SAME' pads asymmetrically for even inputs with stride 2, which shifts every strided
    layer by half a pixel against torchvision and would break weight import parity.
    """

    def make(features, kernel_size, strides=(1, 1), **kwargs):
        pad = [(k // 2, k // 2) for k in kernel_size]
        return conv(features, kernel_size, strides, padding=pad, **kwargs)

    return make


_ARCHITECTURES = {
    "resnet18": ((2, 2, 2, 2), BasicBlock),
    "resnet34": ((3, 4, 6, 3), BasicBlock),
    "resnet50": ((3, 4, 6, 3), Bottleneck),
    "resnet101": ((3, 4, 23, 3), Bottleneck),
    # Not a torchvision model: one basic block per stage, for tests and the CPU demo.
    "resnet_tiny": ((1, 1, 1, 1), BasicBlock),
}


def _architecture(name: str):
    if name not in _ARCHITECTURES:
        raise ConfigError(f"model.name must be one of {sorted(_ARCHITECTURES)}, got {name!r}")
    return _ARCHITECTURES[name]


def make_resnet(name: str, **kwargs) -> ResNet:
    stages, block = _architecture(name)
    return ResNet(stage_sizes=stages, block=block, **kwargs)

"""A torch.nn ConvNeXt in timm's key layout: the reference of the ConvNeXt import tests.

timm needs torchvision, which cannot be installed beside the CPU torch wheel here, so this is
a replica of timm's `ConvNeXt` (patch stem, LayerNorm2d, stages of a 2x2/2 downsample and
blocks of 7x7 depthwise conv -> LayerNorm -> Linear 4C -> GELU -> Linear C -> layer scale,
then global average pooling and the `head.norm` LayerNorm), written from its definition in
NCHW with channels-last LayerNorms as timm's. `load_state_dict(strict=True)` makes it refuse
any key timm's model would not have (apart from the classifier `head.fc`, left out).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-6


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (timm's LayerNorm2d)."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class _Mlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim, kernel_size=7):
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=EPS)
        self.mlp = _Mlp(dim)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x):
        y = self.conv_dw(x).permute(0, 2, 3, 1)
        y = self.mlp(self.norm(y)).permute(0, 3, 1, 2)
        return x + y * self.gamma.reshape(1, -1, 1, 1)


class _Stage(nn.Module):
    def __init__(self, in_dim, dim, depth, downsample):
        super().__init__()
        self.downsample = (nn.Sequential(LayerNorm2d(in_dim, eps=EPS),
                                         nn.Conv2d(in_dim, dim, 2, 2))
                           if downsample else nn.Identity())
        self.blocks = nn.Sequential(*[_Block(dim) for _ in range(depth)])

    def forward(self, x):
        return self.blocks(self.downsample(x))


class TorchConvNeXt(nn.Module):
    def __init__(self, depths, dims, patch_size=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], patch_size, patch_size),
                                  LayerNorm2d(dims[0], eps=EPS))
        self.stages = nn.Sequential(*[
            _Stage(dims[max(i - 1, 0)], dims[i], depths[i], downsample=i > 0)
            for i in range(len(depths))])
        self.head = nn.Module()
        self.head.norm = LayerNorm2d(dims[-1], eps=EPS)

    def forward_features(self, images_nchw):
        """The last stage's map [B, C, H, W], as timm's forward_features."""
        return self.stages(self.stem(images_nchw))

    def pre_logits(self, images_nchw, pooling="avg"):
        """head.norm(global pool(features)) [B, C], as timm's forward_head(pre_logits=True)."""
        x = self.forward_features(images_nchw)
        x = x.mean((2, 3), keepdim=True) if pooling == "avg" else x.amax((2, 3), keepdim=True)
        return self.head.norm(x).flatten(1)


def random_state_dict(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor of `model` drawn at random (norm scales around 1, layer scales around 0.5
    so that the residual branches count), so that a wrongly mapped or transposed tensor
    changes the output."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in model.state_dict().items():
        noise = torch.randn(value.shape, generator=gen)
        if key.endswith("gamma"):
            out[key] = 0.5 + 0.1 * noise
        elif key.endswith("weight") and value.ndim == 1:
            out[key] = 1.0 + 0.2 * noise
        elif key.endswith("weight"):  # uniform-ish scale: std ~ 1/sqrt(fan_in)
            fan_in = value[0].numel()
            out[key] = noise / fan_in ** 0.5
        else:
            out[key] = 0.05 * noise
    return out

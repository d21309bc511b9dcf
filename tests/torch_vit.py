"""A torch.nn Vision Transformer in timm's key layout: the reference of the ViT import tests.

timm itself needs torchvision, whose PyPI wheels link CUDA libraries that the CPU torch of the
test machines lacks, so the reference is this replica of timm's `VisionTransformer` (class token,
learned position embeddings, optional pre-norm, pre-norm blocks, final norm), written from its
definition with an explicit softmax(q k^T / sqrt(d)) v attention. `load_state_dict(strict=True)`
makes it refuse any key that timm's model would not have.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class _Attention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        return self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d))


class _Mlp(nn.Module):
    def __init__(self, width, hidden, act):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = act
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, width, heads, act, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.attn = _Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = _Mlp(width, 4 * width, act)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


class TorchViT(nn.Module):
    def __init__(self, patch, width, depth, heads, image_size, pre_norm=False, act="gelu",
                 eps=1e-6):
        super().__init__()
        grid = image_size // patch
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, width, patch, patch, bias=not pre_norm)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, width))
        self.norm_pre = nn.LayerNorm(width, eps=eps) if pre_norm else nn.Identity()
        activation = _quick_gelu if act == "quick_gelu" else nn.GELU()
        self.blocks = nn.Sequential(*[_Block(width, heads, activation, eps)
                                      for _ in range(depth)])
        self.norm = nn.LayerNorm(width, eps=eps)

    def forward_features(self, images_nchw):
        """Every token after the final norm, [B, 1 + N, D], as timm's forward_features."""
        x = self.patch_embed.proj(images_nchw).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.norm(self.blocks(self.norm_pre(x)))


def random_state_dict(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor of `model` drawn at random (norm scales around 1), so that a wrongly mapped
    or transposed tensor changes the output."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in model.state_dict().items():
        noise = torch.randn(value.shape, generator=gen)
        is_norm_scale = key.endswith("weight") and value.ndim == 1
        out[key] = 1.0 + 0.2 * noise if is_norm_scale else 0.05 * noise
    return out

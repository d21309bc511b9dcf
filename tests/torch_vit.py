"""A torch.nn Vision Transformer in timm's key layout: the reference of the ViT import tests.

timm itself needs torchvision, whose PyPI wheels link CUDA libraries that the CPU torch of the
test machines lacks, so the reference is this replica of timm's `VisionTransformer` (class token,
learned position embeddings, optional pre-norm, pre-norm blocks, final norm; LayerScale,
register tokens, no class token, the SwiGLUPacked MLP, fc_norm, the MAP attention-pooling head
and CLIP's projection on request), written from its definition with an explicit
softmax(q k^T / sqrt(d)) v attention. `load_state_dict(strict=True)`
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


class _SwiGLUPacked(nn.Module):
    """timm's GluMlp(gate_last=False): fc1 -> [a | b], fc2(act(a) * b), fc2 half as wide."""

    def __init__(self, width, hidden, act):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = act
        self.fc2 = nn.Linear(hidden // 2, width)

    def forward(self, x):
        a, b = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(self.act(a) * b)


class _AttentionPoolLatent(nn.Module):
    """timm's AttentionPoolLatent with one latent query, pool_type 'token' (SigLIP's MAP)."""

    def __init__(self, width, heads, mlp_hidden, act, eps):
        super().__init__()
        self.heads = heads
        self.latent = nn.Parameter(torch.zeros(1, 1, width))
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width, eps=eps)
        self.mlp = _Mlp(width, mlp_hidden, act)

    def forward(self, x):
        b, n, d = x.shape
        hd = d // self.heads
        q = self.q(self.latent.expand(b, -1, -1)).reshape(b, 1, self.heads, hd).transpose(1, 2)
        k, v = self.kv(x).reshape(b, n, 2, self.heads, hd).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) / math.sqrt(hd)).softmax(-1)
        x = self.proj((attn @ v).transpose(1, 2).reshape(b, 1, d))
        return (x + self.mlp(self.norm(x)))[:, 0]


class _LayerScale(nn.Module):
    def __init__(self, width, init_values=1e-5):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(width))

    def forward(self, x):
        return x * self.gamma


class _Block(nn.Module):
    def __init__(self, width, heads, act, eps, layer_scale=False, mlp=_Mlp, mlp_hidden=None):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.attn = _Attention(width, heads)
        self.ls1 = _LayerScale(width) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = mlp(width, mlp_hidden or 4 * width, act)
        self.ls2 = _LayerScale(width) if layer_scale else nn.Identity()

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


def _quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


class TorchViT(nn.Module):
    """`layer_scale`: timm's init_values (ls1/ls2 gammas); `reg_tokens`, `no_embed_class`,
    `class_token`: as timm's; `mlp`: 'plain' or 'swiglu' (timm's SwiGLUPacked, `mlp_hidden` its
    fc1 width); `global_pool`: 'token', 'avg' (with `fc_norm`: timm's default for 'avg', the
    final norm then an Identity and a LayerNorm after pooling) or 'map' (`attn_pool`, timm's
    AttentionPoolLatent over the patch tokens, its MLP 4 x width); `projection`: CLIP's output
    projection as timm's `head` Linear."""

    def __init__(self, patch, width, depth, heads, image_size, pre_norm=False, act="gelu",
                 eps=1e-6, layer_scale=False, reg_tokens=0, no_embed_class=False,
                 global_pool="token", fc_norm=False, projection=0, class_token=True,
                 mlp="plain", mlp_hidden=None):
        super().__init__()
        grid = image_size // patch
        self.num_prefix_tokens = int(class_token) + reg_tokens
        self.no_embed_class = no_embed_class
        self.global_pool = global_pool
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, width, patch, patch, bias=not pre_norm)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width)) if class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, reg_tokens, width)) if reg_tokens else None
        embed_len = grid * grid if no_embed_class else self.num_prefix_tokens + grid * grid
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_len, width))
        self.norm_pre = nn.LayerNorm(width, eps=eps) if pre_norm else nn.Identity()
        activation = {"quick_gelu": _quick_gelu, "gelu": nn.GELU(),
                      "gelu_tanh": nn.GELU(approximate="tanh"), "silu": nn.SiLU()}[act]
        block_mlp = _SwiGLUPacked if mlp == "swiglu" else _Mlp
        self.blocks = nn.Sequential(*[_Block(width, heads, activation, eps, layer_scale,
                                             block_mlp, mlp_hidden) for _ in range(depth)])
        self.attn_pool = (_AttentionPoolLatent(width, heads, 4 * width, activation, eps)
                          if global_pool == "map" else None)
        self.norm = nn.Identity() if fc_norm else nn.LayerNorm(width, eps=eps)
        self.fc_norm = nn.LayerNorm(width, eps=eps) if fc_norm else nn.Identity()
        self.head = nn.Linear(width, projection) if projection else nn.Identity()

    def _pos_embed(self, x):
        """timm's VisionTransformer._pos_embed."""
        to_cat = [] if self.cls_token is None else [self.cls_token.expand(x.shape[0], -1, -1)]
        if self.reg_token is not None:
            to_cat.append(self.reg_token.expand(x.shape[0], -1, -1))
        if self.no_embed_class:
            return torch.cat(to_cat + [x + self.pos_embed], dim=1)
        return torch.cat(to_cat + [x], dim=1) + self.pos_embed

    def forward_features(self, images_nchw):
        """Every token after the final norm, [B, prefix + N, D], as timm's forward_features."""
        x = self.patch_embed.proj(images_nchw).flatten(2).transpose(1, 2)
        return self.norm(self.blocks(self.norm_pre(self._pos_embed(x))))

    def forward_head(self, tokens):
        """The pooled feature, as timm's forward_head(pre_logits=True), then `head` when it is a
        projection (CLIP's, which timm imports as the classifier)."""
        if self.global_pool == "map":
            pooled = self.attn_pool(tokens[:, self.num_prefix_tokens:])
        elif self.global_pool == "avg":
            pooled = tokens[:, self.num_prefix_tokens:].mean(dim=1)
        else:
            pooled = tokens[:, 0]
        return self.head(self.fc_norm(pooled))


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

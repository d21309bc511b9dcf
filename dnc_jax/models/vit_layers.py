"""The layers of the ViT (`dnc_jax.models.vit`), each named as timm names its module so that
timm's checkpoints import by name: `Attention` (qkv, proj), `Mlp` (fc1, fc2) and
`SwiGLUPacked`, `LayerScale` (gamma), `Block` (norm1, attn, ls1, norm2, mlp, ls2),
`AttentionPool` (SigLIP's MAP head: latent, q, kv, proj, norm, mlp), `PatchEmbed` (proj) and
`DropPath` (stochastic depth, shared with the ConvNeXt).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


# timm's init ('jax'-free default): Linear weights truncated normal std 0.02, biases zero; the
# patch-embedding conv keeps torch's default uniform(+-1/sqrt(fan_in)); class token normal with
# std 1e-6 and position embeddings truncated normal std 0.02.
dense_init = nn.initializers.truncated_normal(0.02)
_conv_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def _conv_bias_init(fan_in):
    bound = 1.0 / np.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def silu(x):
    """x * sigmoid(x), as jax.nn.silu, written out: jax.nn.silu is a jitted function, whose
    nested `jit` jax2onnx 0.17 fails to lower under jax 0.12 (ONNX export of SwiGLU)."""
    return x * jax.nn.sigmoid(x)


def quick_gelu(x):
    """OpenAI CLIP's activation: x * sigmoid(1.702 x)."""
    return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS = {"gelu": lambda x: nn.gelu(x, approximate=False), "quick_gelu": quick_gelu,
                "gelu_tanh": lambda x: nn.gelu(x, approximate=True), "silu": silu}


class Attention(nn.Module):
    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        batch, tokens, width = x.shape
        head_dim = width // self.num_heads
        qkv = nn.Dense(3 * width, dtype=self.dtype, kernel_init=dense_init, name="qkv")(x)
        # timm's qkv Linear emits [q | k | v], each split into heads: [B, N, 3, H, hd].
        q, k, v = jnp.moveaxis(qkv.reshape(batch, tokens, 3, self.num_heads, head_dim), 2, 0)
        # Logits and softmax in float32 (jax.nn.dot_product_attention's XLA path does this for
        # bfloat16 inputs too); scale 1/sqrt(head_dim) as timm.
        out = jax.nn.dot_product_attention(q, k, v)
        out = out.reshape(batch, tokens, width)
        return nn.Dense(width, dtype=self.dtype, kernel_init=dense_init, name="proj")(out)


class Mlp(nn.Module):
    hidden: int
    act: str = "gelu"
    dtype: Any = jnp.float32
    kernel_init: Any = dense_init

    @nn.compact
    def __call__(self, x):
        width = x.shape[-1]
        x = nn.Dense(self.hidden, dtype=self.dtype, kernel_init=self.kernel_init, name="fc1")(x)
        x = ACTIVATIONS[self.act](x)
        return nn.Dense(width, dtype=self.dtype, kernel_init=self.kernel_init, name="fc2")(x)


class SwiGLUPacked(nn.Module):
    """timm's GluMlp with gate_last=False (its SwiGLUPacked): `fc1` emits [a | b], the block
    computes fc2(act(a) * b); `hidden` is fc1's width, both halves. With act='silu' SwiGLU
    (Shazeer 2020), DINOv2's giant."""

    hidden: int
    act: str = "silu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        width = x.shape[-1]
        x = nn.Dense(self.hidden, dtype=self.dtype, kernel_init=dense_init, name="fc1")(x)
        value, gate = jnp.split(x, 2, axis=-1)
        x = ACTIVATIONS[self.act](value) * gate
        return nn.Dense(width, dtype=self.dtype, kernel_init=dense_init, name="fc2")(x)


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
    mlp: str = "plain"         # 'plain' | 'swiglu'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = Attention(self.num_heads, self.dtype, name="attn")(self.norm(name="norm1")(x))
        if self.layer_scale:
            y = LayerScale(name="ls1")(y)
        x = x + DropPath(self.drop_path)(y, train)
        mlp = SwiGLUPacked if self.mlp == "swiglu" else Mlp
        y = mlp(self.mlp_hidden, self.act, self.dtype, name="mlp")(self.norm(name="norm2")(x))
        if self.layer_scale:
            y = LayerScale(name="ls2")(y)
        return x + DropPath(self.drop_path)(y, train)


# big_vision's MAPHead (SigLIP's own code) initialises its attention and MLP kernels
# xavier-uniform; timm's 0.02 never meets a from-scratch run there (it loads SigLIP's weights),
# and from scratch it stalls the head: R@1 fell below the untrained network's in
# tests/test_backbone_runs.py, and rises with this.
map_init = nn.initializers.xavier_uniform()


class AttentionPool(nn.Module):
    """timm's AttentionPoolLatent as SigLIP uses it (global_pool='map'): a learned query
    `latent` [1, 1, D] projected by `q` attends over the tokens (keys and values from one `kv`
    Linear, [k | v]), `proj`, then a residual MLP on a LayerNorm: x + mlp(norm(x)). [B, D]."""

    num_heads: int
    mlp_hidden: int
    act: str
    norm: Any
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        batch, tokens, width = x.shape
        head_dim = width // self.num_heads
        # timm's init: truncated normal with std latent_dim^-0.5.
        latent = self.param("latent", nn.initializers.truncated_normal(width ** -0.5),
                            (1, 1, width))
        q = nn.Dense(width, dtype=self.dtype, kernel_init=map_init, name="q")(
            jnp.broadcast_to(latent, (batch, 1, width)).astype(x.dtype))
        kv = nn.Dense(2 * width, dtype=self.dtype, kernel_init=map_init, name="kv")(x)
        k, v = jnp.moveaxis(kv.reshape(batch, tokens, 2, self.num_heads, head_dim), 2, 0)
        out = jax.nn.dot_product_attention(q.reshape(batch, 1, self.num_heads, head_dim), k, v)
        out = nn.Dense(width, dtype=self.dtype, kernel_init=map_init, name="proj")(
            out.reshape(batch, 1, width))
        out = out + Mlp(self.mlp_hidden, self.act, self.dtype, map_init, name="mlp")(
            self.norm(name="norm")(out))
        return out[:, 0]


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

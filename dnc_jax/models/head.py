"""Initialisations of the embedding head, as each paper's code does it (docs/method.md §2.1).

- `pt_default` (PAMI): torch.nn.Linear's default, uniform(+-1/sqrt(fan_in)) for weight and bias.
- `cvpr`: each learner's block of ceil(d/K) output units gets its own xavier_normal_ draw
  (gain 1) with fan_out = d/K (std ~ 0.0311 for 2048 -> 128, K=8); the bias keeps torch's
  default uniform(+-1/sqrt(fan_in)).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from dnc_jax.errors import ConfigError


def init_head(rng, in_dim: int, dim: int, num_learners: int, method: str):
    """{'kernel': [in_dim, dim], 'bias': [dim]} float32 (flax layout: kernel is W^T)."""
    k_w, k_b = jax.random.split(rng)
    bound = 1.0 / math.sqrt(in_dim)
    bias = jax.random.uniform(k_b, (dim,), jnp.float32, -bound, bound)
    if method == "pt_default":
        kernel = jax.random.uniform(k_w, (in_dim, dim), jnp.float32, -bound, bound)
    elif method == "cvpr":
        block = math.ceil(dim / num_learners)
        columns = []
        for k, start in enumerate(range(0, dim, block)):
            width = min(block, dim - start)
            std = math.sqrt(2.0 / (in_dim + width))
            columns.append(std * jax.random.normal(jax.random.fold_in(k_w, k),
                                                   (in_dim, width), jnp.float32))
        kernel = jnp.concatenate(columns, axis=1)
    else:
        raise ConfigError(f"model.head_init must be 'pt_default' or 'cvpr', got {method!r}")
    return {"kernel": kernel, "bias": bias}

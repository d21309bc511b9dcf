"""`l2_normalize`, the one normalisation of the embedding, its learner blocks and the proxies."""
import jax
import jax.numpy as jnp


def l2_normalize(x, axis=-1, eps=1e-12):
    # rsqrt of a clamped sum of squares: jnp.linalg.norm has a NaN gradient at 0, and
    # all-zero rows are routine here (the blocks and masks of inactive learners).
    sum_sq = jnp.sum(x * x, axis=axis, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(sum_sq, eps * eps))

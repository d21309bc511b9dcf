"""dnc_jax: Divide and Conquer deep metric learning in JAX/Flax."""

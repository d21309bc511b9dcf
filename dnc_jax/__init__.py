"""dnc_jax: Divide and Conquer deep metric learning in JAX/Flax.

The Python API (`dnc_jax.api`, also reachable from here without importing JAX up front):

    import dnc_jax
    config = dnc_jax.get_config("demo")           # a shipped config by name, or a file path
    dnc_jax.train_run(config, "runs/demo")
    model = dnc_jax.load_run("runs/demo")          # the trained run's evaluation embedder
    embeddings = model.embed_fn(images)            # uint8 rows or image files
"""
__version__ = "0.4.0"

# Not named like a submodule: `from dnc_jax import train` must stay the module.
_API = ("get_config", "train_run", "load_run", "embed_images", "embed_folder", "search_index")


def __getattr__(name):
    # Lazily, so `import dnc_jax` (and `dnc-jax --help`) does not pay for JAX.
    if name in _API:
        import importlib

        return getattr(importlib.import_module("dnc_jax.api"), name)
    raise AttributeError(f"module 'dnc_jax' has no attribute {name!r}")

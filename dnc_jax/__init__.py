"""dnc_jax: Divide and Conquer deep metric learning in JAX/Flax.

The Python API (`dnc_jax.api`, also reachable from here without importing JAX up front):

    import dnc_jax
    config = dnc_jax.get_config("demo")           # a shipped config by name, or a file path
    dnc_jax.train_run(config, "runs/demo")
    model = dnc_jax.load_run("runs/demo")          # the trained run's evaluation embedder
    embeddings = model.embed_fn(images)            # uint8 rows or image files
"""
import os as _os

__version__ = "0.4.0"

# XLA's C++ log (absl) drops messages below TF_CPP_MIN_LOG_LEVEL (0 INFO, 1 WARNING, 2 ERROR,
# 3 FATAL), read once when each XLA library loads: jaxlib at `import jax`, the CUDA plugin
# when the first backend starts, so setting it here, before either, covers the GPU's messages.
# Its GPU autotuner times candidate kernels behind a "delay kernel"; when one times out it logs
# "Delay kernel timed out: measured time has sub-optimal accuracy" (cuda_timer.cc), a timing's
# accuracy and no fault of the run. XLA logs it as a WARNING, at most 5 times a process, since
# openxla/xla#47191 (before: an ERROR at every timing, openxla/xla#26466). Level 2 keeps
# every ERROR and FATAL and drops INFO and WARNING lines, this one with them; no finer switch
# exists (TF_CPP_VMODULE sets VLOG verbosity only, and --xla_gpu_autotune_level would change
# the kernels chosen). Where an older XLA logs it as an ERROR, only level 3 would hide it, and
# that hides real errors too, so it stays. A value the user set is kept: TF_CPP_MIN_LOG_LEVEL=0
# shows everything again.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Not named like a submodule: `from dnc_jax import train` must stay the module.
_API = ("get_config", "train_run", "load_run", "embed_images", "embed_folder", "search_index")


def __getattr__(name):
    # Lazily, so `import dnc_jax` (and `dnc-jax --help`) does not pay for JAX.
    if name in _API:
        import importlib

        return getattr(importlib.import_module("dnc_jax.api"), name)
    raise AttributeError(f"module 'dnc_jax' has no attribute {name!r}")

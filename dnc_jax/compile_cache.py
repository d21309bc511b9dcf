"""JAX's persistent compilation cache for runs (`compilation_cache_dir`).

Every start and every resume used to compile the run's programs again (the train step, the
embedding pass, retrieval, k-means): with the cache on, the second start of a config and every
resume load them from disk. JAX keys each entry on the program, the compiler options, the devices and
the versions of jax and jaxlib, so a cache is never used for a program it was not made for.
Programs that compile in under a second are not written (JAX's default threshold): the cache
holds the few programs that cost.
"""
from __future__ import annotations

import os

import jax
from absl import logging

ENV = "JAX_COMPILATION_CACHE_DIR"


def enable(directory: str) -> str | None:
    """Points JAX's persistent cache at `directory` (made if missing; '~' expanded) and returns
    it, unless JAX_COMPILATION_CACHE_DIR is set (the environment wins: a cluster's or a test
    suite's own cache) or `directory` is '' (off). Call it before the run's first compile."""
    if os.environ.get(ENV):
        return os.environ[ENV]
    if not directory:
        return None
    path = os.path.abspath(os.path.expanduser(directory))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:  # a cache that cannot be written only costs time: say so and go on
        logging.warning("compilation_cache_dir=%s cannot be created (%s): compiling without "
                        "a persistent cache", directory, e)
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    return path

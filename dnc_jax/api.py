"""The Python API: train from a config, load a trained run, embed images, search an index.

    import dnc_jax

    config = dnc_jax.get_config("demo", num_epochs=2)    # shipped name or file, + overrides
    record = dnc_jax.train_run(config, "runs/demo")       # the last epoch's metrics
    model = dnc_jax.load_run("runs/demo")                 # restore.TrainedModel
    vectors = dnc_jax.embed_images(model, uint8_rows)     # float32 [N, d]
    vectors, paths = dnc_jax.embed_folder("runs/demo", "photos/", "emb.npy")
    hits = dnc_jax.search_index("runs/demo", "emb.npy", "query.jpg", top=5).hits

Each function is a thin door onto the module that owns the work (`train`, `restore`, `embed`,
`search`); their errors are `dnc_jax.errors.UserError`s with one-line messages.
"""
from __future__ import annotations

import importlib.util
import os


def get_config(name_or_path: str = "default", **overrides):
    """A run config: a config shipped with the package by name ('demo', 'sop', 'cvpr/sop',
    'pami/cub_learned'; 'default' = every key's default) or a config file's path, with dotted
    `overrides` applied: `get_config('sop', **{'data.root': '/data/sop'})` or
    `get_config('demo', num_epochs=2)`. Text after a ':' goes to the file's get_config, as
    --config=FILE:ARG does (`get_config('vit/sop:dinov2_b14_reg4')`)."""
    from dnc_jax import commands, defaults
    from dnc_jax.errors import ConfigError

    if name_or_path == "default":
        config = defaults.get_config()
    else:
        name, colon, argument = name_or_path.partition(":")
        path = name if os.path.isfile(name) else commands.shipped_config(name)
        if path is None:
            raise ConfigError(f"no config {name_or_path!r}: neither a file nor a shipped config "
                              f"(e.g. 'demo', 'sop', 'cvpr/sop')")
        spec = importlib.util.spec_from_file_location("dnc_jax_user_config", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.get_config(argument) if colon else module.get_config()
    for key, value in overrides.items():
        _set(config, key, value)
    return config


def _set(config, dotted: str, value) -> None:
    from dnc_jax.errors import ConfigError

    *parents, leaf = dotted.split(".")
    node = config
    for part in parents:
        if part not in node:
            raise ConfigError(f"config has no section {part!r} (in {dotted!r})")
        node = node[part]
    if leaf not in node:
        raise ConfigError(f"config has no key {dotted!r}")
    node[leaf] = value


def train_run(config, workdir: str, allow_config_change: bool = False) -> dict:
    """Trains (or resumes) the run in `workdir`; the last epoch's metrics record."""
    from dnc_jax.training import train as train_lib

    return train_lib.train_and_evaluate(config, workdir, allow_config_change)


def load_run(workdir: str, batch_size: int | None = None):
    """The trained run's `restore.TrainedModel` (config, model, params, BN statistics, slices,
    `embed_fn`), from its newest readable checkpoint."""
    from dnc_jax.inference import restore

    return restore.load_trained(workdir, batch_size)


def embed_images(model, images, sizes=None):
    """float32 [N, d] evaluation embeddings of uint8 rows [N, H, W, 3] (their eval view is
    computed on the device) or of an `EncodedImages`; `model` from `load_run`."""
    return model.embed_fn(images, sizes)


def embed_folder(workdir: str, images: str, out: str, **options):
    """Embeds a folder (or a list file) of images with a run and writes `out` (.npy) and its
    paths file, as `dnc-jax embed`; returns (embeddings, paths)."""
    from dnc_jax.inference import embed

    files = embed.list_images(images)
    embeddings, _ = embed.embed_files(workdir, files, out, **options)
    return embeddings, files


def search_index(workdir: str, index: str, query: str, top: int = 10, sheet: str | None = None):
    """The `top` nearest images of `query` in the index written by `embed_folder`."""
    from dnc_jax.inference import search as search_lib

    return search_lib.search(workdir, index, query, top, sheet)

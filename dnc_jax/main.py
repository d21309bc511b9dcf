"""Command line: python -m dnc_jax.main --config=configs/sop.py [--workdir=DIR] [--config.k=v]."""
from __future__ import annotations

import os
import time

from absl import flags
from ml_collections import config_flags

from dnc_jax import cli
from dnc_jax.errors import ConfigError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run folder (checkpoints, metrics.jsonl, plots). An existing run resumes. "
    "Default: a fresh folder runs/<config>-<time>.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir even though the config differs from the "
    "one it was started with.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for a multi-process run launched by "
    "hand (SLURM, TPU pods and Open MPI are detected without it).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes of a run launched by hand.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, launched by hand.")
flags.mark_flags_as_required(["config"])


def default_workdir(config_path: str) -> str:
    """runs/<config>-<time>; a config in a sub-folder of configs/ keeps its folder in the name
    (configs/cvpr/sop.py -> runs/cvpr-sop-...), so paper runs and ours do not look alike, and
    the argument after a ':' too (configs/vit/sop.py:clip_b16 -> runs/vit-sop-clip_b16-...)."""
    config_file, _, argument = config_path.partition(":")
    path = os.path.splitext(os.path.normpath(config_file))[0]
    parts = path.split(os.sep)
    if "configs" in parts:
        parts = parts[len(parts) - parts[::-1].index("configs"):]
    else:
        parts = parts[-1:]
    name = "-".join(parts + ([argument] if argument else []))
    return os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")


def loaded_config():
    """The --config file's config, or a ConfigError in one line (ml_collections defers a file
    that does not load to the first use of the config, with a traceback)."""
    path = flags.FLAGS["config"].config_filename.split(":")[0]
    if not os.path.isfile(path):
        raise ConfigError(f"--config={path}: no such config file (a path such as "
                          f"configs/sop.py; `dnc-jax train` also takes a shipped name: sop)")
    try:
        config = _CONFIG.value
        config.keys()  # loads it
    except Exception as e:  # the user's Python: any error, told in its first line
        cause = e.__cause__ or e
        reason = f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1]}"
        raise ConfigError(f"--config={path}: cannot load it ({reason})") from None
    return config


def main():
    config = loaded_config()
    # Imported here so `--help` and config errors do not pay for initialising JAX.
    from dnc_jax import parallel

    parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    workdir = _WORKDIR.value or default_workdir(flags.FLAGS["config"].config_filename)
    if parallel.is_main_process():
        print(f"dnc_jax: workdir {workdir}", flush=True)
    from dnc_jax.training import train

    train.train_and_evaluate(config, workdir, _ALLOW_CONFIG_CHANGE.value)


if __name__ == "__main__":
    cli.run(main)

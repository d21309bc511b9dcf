"""Re-evaluate a trained run with its data set's full protocol and print a table.

    python -m dnc_jax.evaluate --workdir=runs/sop-... [--nmi] [--nmi_seeds=10]

Reads WORKDIR/config.json, loads the held-out splits, restores the newest readable checkpoint,
embeds with the eval transform and runs `dnc_jax.evaluation.protocols` for the
data set (SOP R@1/10/100/1000, In-shop query vs gallery, VehicleID's three lists both ways,
...), with MAP@R, R-precision and the PAMI code's mARP; `--nmi` adds NMI. Writes
WORKDIR/evaluation.json. `--set=key=value` overrides a scalar of the run's config, e.g.
`--set=data.root=/new/place` when the data moved.
"""
from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging

from dnc_jax.data.errors import DataError

_WORKDIR = flags.DEFINE_string("workdir", None, "The run folder to evaluate.")
_NMI = flags.DEFINE_bool("nmi", False, "Also NMI (k-means with one cluster per test class).")
_NMI_SEEDS = flags.DEFINE_integer("nmi_seeds", 1, "NMI k-means runs (the PAMI code: 10).")
_OVERRIDES = flags.DEFINE_multi_string("set", [], "config overrides key=value, e.g. "
                                       "--set=data.root=/data/sop")
flags.mark_flags_as_required(["workdir"])


def load_run_config(workdir: str, overrides=()):
    import ml_collections

    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise DataError(f"{path} does not exist: --workdir must be a dnc_jax run folder")
    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    for item in overrides:
        key, _, value = item.partition("=")
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = type(node[leaf])(value) if not isinstance(node[leaf], bool) else \
            value.lower() in ("1", "true", "yes")
    return config


def evaluate_run(workdir: str, nmi: bool = False, nmi_seeds: int = 1, overrides=()):
    """(ProtocolResult, epoch) of the newest checkpoint of `workdir`."""
    from dnc_jax import checkpoint as checkpoint_lib
    from dnc_jax import parallel, train
    from dnc_jax.data import sources
    from dnc_jax.divide import schedule

    config = load_run_config(workdir, overrides)
    config.eval.nmi = nmi
    config.eval.nmi_seeds = tuple(range(nmi_seeds))
    datasets = sources.load_dataset(config.data)
    trainer = train.Trainer(config, datasets, parallel.make_mesh())
    import jax

    template = trainer.init_state(jax.random.key(config.seed))
    ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                       keep=config.checkpoint.keep)
    restored = ckpt.restore_latest(template, len(datasets["train"]))
    if restored is None:
        raise DataError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}")
    state, _, meta = restored
    slices = train.phase_arrays(config, schedule.phase(config.divide, meta["epoch"]))["slices"]
    return trainer.evaluate(state, slices, full_protocol=True), meta


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from dnc_jax.evaluation import protocols

    try:
        result, meta = evaluate_run(_WORKDIR.value, _NMI.value, _NMI_SEEDS.value,
                                    _OVERRIDES.value)
    except DataError as e:
        print(f"dnc_jax: {e}", file=sys.stderr)
        sys.exit(2)
    state = "end of" if meta["complete"] else "inside"
    print(f"{result.protocol} ({state} epoch {meta['epoch']})")
    print(protocols.format_table(result.metrics))
    with open(os.path.join(_WORKDIR.value, "evaluation.json"), "w") as f:
        json.dump({"epoch": meta["epoch"], "complete_epoch": meta["complete"],
                   "protocol": result.protocol, "metrics": result.metrics}, f, indent=2)


if __name__ == "__main__":
    app.run(main)

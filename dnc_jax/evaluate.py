"""Re-evaluate a trained run with its data set's full protocol and print a table.

    python -m dnc_jax.evaluate --workdir=runs/sop-... [--nmi] [--nmi_seeds=10]

Reads WORKDIR/config.json, loads the held-out splits only, restores the network of the newest
readable checkpoint, embeds with the eval transform and runs the data set's protocol
(`dnc_jax.evaluation.evaluator` with `full_protocol`: SOP R@1/10/100/1000, In-shop query vs
gallery, VehicleID's three lists both ways, ...), with MAP@R, R-precision and the PAMI code's
mARP; `--nmi` adds NMI. Writes WORKDIR/evaluation.json. `--set=key=value` overrides a scalar of
the run's config, e.g. `--set=data.root=/new/place` when the data moved. Nothing of training is
imported: the network alone is read from the checkpoint (`dnc_jax.restore`).
"""
from __future__ import annotations

import json
import os

from absl import flags

from dnc_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "The run folder to evaluate.")
_NMI = flags.DEFINE_bool("nmi", False, "Also NMI (k-means with one cluster per test class).")
_NMI_SEEDS = flags.DEFINE_integer("nmi_seeds", 1, "NMI k-means runs (the PAMI code: 10).")
_OVERRIDES = flags.DEFINE_multi_string("set", [], "config overrides key=value, e.g. "
                                       "--set=data.root=/data/sop")
flags.mark_flags_as_required(["workdir"])


def evaluate_run(workdir: str, nmi: bool = False, nmi_seeds: int = 1, overrides=()):
    """(ProtocolResult, {'epoch', 'complete'}) of the newest checkpoint of `workdir`."""
    from dnc_jax import parallel, restore
    from dnc_jax.data import sources
    from dnc_jax.evaluation.evaluator import Evaluator

    trained = restore.load_trained(workdir, overrides=overrides)
    config = trained.config
    config.eval.nmi = nmi
    config.eval.nmi_seeds = tuple(range(nmi_seeds))
    datasets = sources.load_dataset(config.data, held_out_only=True)
    evaluator = Evaluator(config, datasets, full_protocol=True, mesh=parallel.make_mesh())
    embed_fn = trained.embed_fn
    try:
        result = evaluator(lambda image_set: embed_fn(image_set.images, image_set.sizes),
                           datasets)
    finally:
        embed_fn.close()
    return result, {"epoch": embed_fn.epoch, "complete": embed_fn.complete}


def main():
    from dnc_jax.evaluation import protocols

    result, meta = evaluate_run(_WORKDIR.value, _NMI.value, _NMI_SEEDS.value, _OVERRIDES.value)
    state = "end of" if meta["complete"] else "inside"
    print(f"{result.protocol} ({state} epoch {meta['epoch']})")
    print(protocols.format_table(result.metrics))
    with open(os.path.join(_WORKDIR.value, "evaluation.json"), "w") as f:
        json.dump({"epoch": meta["epoch"], "complete_epoch": meta["complete"],
                   "protocol": result.protocol, "metrics": result.metrics}, f, indent=2)


if __name__ == "__main__":
    cli.run(main)

"""Re-evaluate a trained run with its data set's full protocol and print a table.

    dnc-jax evaluate --workdir=runs/sop-... [--nmi] [--nmi_seeds=10]

Reads WORKDIR/config.json, loads the held-out splits only, restores the network of the newest
readable checkpoint, embeds with the eval transform and runs the data set's protocol
(`dnc_jax.evaluation.evaluator` with `full_protocol`: SOP R@1/10/100/1000, In-shop query vs
gallery, VehicleID's three lists both ways, ...), with MAP@R, R-precision and the PAMI code's
mARP; `--nmi` adds NMI. Writes WORKDIR/evaluation.json. `--set=key=value` overrides a scalar of
the run's config, e.g. `--set=data.root=/new/place` when the data moved. Nothing of training is
imported: the network alone is read from the checkpoint (`dnc_jax.inference.restore`).

`--report` also writes an HTML retrieval report (`dnc_jax.evaluation.report`) to --report_dir
(default WORKDIR/report/): the worst queries with their top --report_top_k neighbours framed
green/right or red/wrong, Recall@1 per class, the most confused classes, the R@K curve, the
metrics, the protocol and the run's config; open report.html in a browser.
"""
from __future__ import annotations

import dataclasses
import json
import os

from absl import flags

from dnc_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "The run folder to evaluate.")
_NMI = flags.DEFINE_bool("nmi", False, "Also NMI (k-means with one cluster per test class).")
_NMI_SEEDS = flags.DEFINE_integer("nmi_seeds", 1, "NMI k-means runs (the PAMI code: 10).")
_OVERRIDES = flags.DEFINE_multi_string("set", [], "config overrides key=value, e.g. "
                                       "--set=data.root=/data/sop")
_REPORT = flags.DEFINE_bool("report", False, "Also write an HTML retrieval report (worst "
                            "queries and their neighbours, per-class recall, R@K curve).")
_REPORT_DIR = flags.DEFINE_string("report_dir", None, "Folder of the report (default: "
                                  "WORKDIR/report); implies --report.")
_REPORT_TOP_K = flags.DEFINE_integer("report_top_k", 5, "Neighbours drawn beside each query.")
_REPORT_QUERIES = flags.DEFINE_integer("report_queries", 30, "Worst queries drawn.")
_REPORT_CLASSES = flags.DEFINE_integer("report_classes", 20, "Worst classes listed.")
_REPORT_THUMB = flags.DEFINE_integer("report_thumb", 96, "Thumbnail side in pixels.")
flags.mark_flags_as_required(["workdir"])


def evaluate_run(workdir: str, nmi: bool = False, nmi_seeds: int = 1, overrides=(),
                 report_dir: str | None = None, report_options=None):
    """(ProtocolResult, {'epoch', 'complete'}) of the newest checkpoint of `workdir`; with
    `report_dir`, also writes the retrieval report there (meta['report']: its page)."""
    from dnc_jax import parallel
    from dnc_jax.inference import restore
    from dnc_jax.data import sources
    from dnc_jax.evaluation.evaluator import Evaluator

    trained = restore.load_trained(workdir, overrides=overrides)
    config = trained.config
    config.eval.nmi = nmi
    config.eval.nmi_seeds = tuple(range(nmi_seeds))
    datasets = sources.load_dataset(config.data, held_out_only=True)
    evaluator = Evaluator(config, datasets, full_protocol=True, mesh=parallel.make_mesh())
    embed_fn = trained.embed_fn
    names = {id(image_set): name for name, image_set in datasets.items()}
    embedded = {}

    def embed(image_set):
        embeddings = embed_fn(image_set.images, image_set.sizes)
        if report_dir is not None:
            embedded[names[id(image_set)]] = embeddings
        return embeddings

    try:
        result = evaluator(embed, datasets)
    finally:
        embed_fn.close()
    meta = {"epoch": embed_fn.epoch, "complete": embed_fn.complete}
    if report_dir is not None:
        from dnc_jax.evaluation import report

        options = report_options or report.ReportOptions()
        options = dataclasses.replace(options, block_size=config.eval.block_size)
        meta["report"] = report.write_report(
            report_dir, datasets, embedded, result, epoch=embed_fn.epoch,
            complete=embed_fn.complete, config=config, workdir=workdir, options=options)
    return result, meta


def _report_options():
    from dnc_jax.errors import UserError
    from dnc_jax.evaluation import report

    values = {"top_k": _REPORT_TOP_K, "queries": _REPORT_QUERIES, "classes": _REPORT_CLASSES,
              "thumb": _REPORT_THUMB}
    for name, flag in values.items():
        if flag.value < 1:
            raise UserError(f"--report_{name}={flag.value}: must be at least 1")
    return report.ReportOptions(**{name: flag.value for name, flag in values.items()})


def main():
    from dnc_jax.evaluation import protocols

    report_dir = options = None
    if _REPORT.value or _REPORT_DIR.value:
        options = _report_options()
        report_dir = _REPORT_DIR.value or os.path.join(_WORKDIR.value, "report")
    result, meta = evaluate_run(_WORKDIR.value, _NMI.value, _NMI_SEEDS.value, _OVERRIDES.value,
                                report_dir, options)
    state = "end of" if meta["complete"] else "inside"
    print(f"{result.protocol} ({state} epoch {meta['epoch']})")
    print(protocols.format_table(result.metrics))
    with open(os.path.join(_WORKDIR.value, "evaluation.json"), "w") as f:
        json.dump({"epoch": meta["epoch"], "complete_epoch": meta["complete"],
                   "protocol": result.protocol, "metrics": result.metrics}, f, indent=2)
    if "report" in meta:
        print(f"report: {meta['report']}")


if __name__ == "__main__":
    cli.run(main)

"""The evaluator of a run: which protocol scores it, on which held-out splits, under which
metric names. Training, `dnc-jax evaluate` and the run's summary all ask it.

    evaluator = Evaluator(config, split_names=datasets)           # during training
    result = evaluator(lambda image_set: embed(image_set), datasets)
    result.metrics      # {'recall@1': ..., 'map@r': ...}, result.protocol: what was measured

During training a run is scored quickly and the same way every epoch: leave-one-out over
'test', or 'query' against 'gallery' (In-shop, a csv with those splits), at `eval.recall_ks`.
`full_protocol=True` runs the data set's own protocol (`protocols.protocol_for_dataset`: SOP's
R@1/10/100/1000, VehicleID's three lists both ways, ...) on every held-out split, with its own
cut-offs. Either way `eval.map_at_r`, `eval.nmi`, `eval.nmi_seeds` and `eval.block_size` apply.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dnc_jax.evaluation import protocols

HEADLINE = "recall@1"  # the metric a run is summarised and (optionally) selected by
# Leaves of the metric names the protocols report (VehicleID prefixes '<list>/<protocol>/').
METRIC_PREFIXES = ("recall@", "map@r", "r_precision", "nmi", "marp")


def is_metric(key: str) -> bool:
    """Whether a key of a metrics record is an evaluation metric (not a loss or a count)."""
    return key.rsplit("/", 1)[-1].startswith(METRIC_PREFIXES)


def metrics_of(record: Mapping[str, Any]) -> dict[str, float]:
    """The evaluation metrics of a record, in its order."""
    return {k: v for k, v in record.items() if is_metric(k)}


class Evaluator:
    def __init__(self, config, split_names: Iterable[str], *, full_protocol: bool = False,
                 mesh=None):
        held_out = [name for name in split_names if name != "train"]
        ev = config.eval
        if full_protocol:
            self.split_names = held_out
            self.protocol = protocols.protocol_for_dataset(config.data.name,
                                                           config.data.tfds_name, held_out)
            ks = None
        else:
            self.split_names = ["test"] if "test" in held_out else ["query", "gallery"]
            self.protocol = "loo" if "test" in held_out else "query_gallery"
            ks = tuple(ev.recall_ks)
        self.options = dict(ks=ks, map_at_r=ev.map_at_r, nmi=ev.nmi,
                            nmi_seeds=tuple(ev.nmi_seeds), block_size=ev.block_size, mesh=mesh)

    def __call__(self, embed: Callable[[Any], Any], datasets: Mapping[str, Any]
                 ) -> protocols.ProtocolResult:
        """Embeds each split this evaluator scores (`embed(image_set) -> [N, d]`) and runs the
        protocol on them."""
        missing = [name for name in self.split_names if name not in datasets]
        if missing:
            raise ValueError(f"the {self.protocol!r} protocol needs the split(s) {missing}; "
                             f"got {sorted(datasets)}")
        splits = {name: protocols.EmbeddedSplit(embed(datasets[name]), datasets[name].labels)
                  for name in self.split_names}
        return protocols.evaluate(self.protocol, splits, **self.options)

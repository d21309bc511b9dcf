"""Each benchmark's evaluation protocol by name, as a function of the embedded splits.

    result = protocols.evaluate("sop", {"test": (embeddings, labels)}, map_at_r=True)
    print(result.protocol); print(protocols.format_table(result.metrics))

A protocol takes `{split_name: (embeddings, labels)}` (the split names of `dnc_jax.data`:
'test', 'query'/'gallery', 'test_small'/'test_medium'/'test_large') and returns a
`ProtocolResult(metrics, protocol)`: a flat {name: float in [0, 1]} dict and a sentence saying
exactly what was measured. The protocols follow docs/method.md §4:

* 'cub', 'cars': leave-one-out over 'test', R@1/2/4/8.
* 'sop': leave-one-out over 'test', R@1/10/100/1000 ([PAMI] reports 1/10/100).
* 'inshop': 'query' against 'gallery' (no self-removal needed), R@1/10/20/30/40/50; NMI, when
  asked, clusters query and gallery together, as `evaluate_in_shop` does.
* 'vehicleid': for each of 'test_small', 'test_medium', 'test_large' present (or 'test' alone,
  the list evaluated during training), R@1/5 under two protocols, keyed '<list>/<protocol>/...':
  'loo', [PAMI]'s leave-one-out over the whole list, and 'one_per_id', the usual VehicleID
  protocol: one random image per identity forms the gallery, all others are queries, averaged
  over `gallery_draws` draws with seeds 0, 1, ... (`one_gallery_image_per_id`), with the std.
* 'loo': generic leave-one-out over 'test' (glyphs, folder, csv), R@1/2/4/8.
* 'query_gallery': generic 'query' against 'gallery' (a csv with those splits), R@1/2/4/8.

Options (`EvalOptions`, or keywords of `evaluate`): `ks` overrides the protocol's cut-offs;
`map_at_r` adds 'map@r', 'r_precision' and 'marp_official' (retrieval.py); `nmi` adds 'nmi'
(and 'nmi_std' over several `nmi_seeds`; [PAMI] uses `clustering.PAMI_NMI_SEEDS`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Optional

import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from dnc_jax.evaluation import clustering, retrieval

VEHICLEID_LISTS = ("test_small", "test_medium", "test_large")


class EmbeddedSplit(NamedTuple):
    """One split after the embedding pass; any (embeddings, labels) tuple works the same."""
    embeddings: Any   # (N, D) numpy or jax array, possibly sharded over the ('data',) mesh
    labels: Any       # (N,) labels


class ProtocolResult(NamedTuple):
    metrics: dict[str, float]
    protocol: str


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    ks: Optional[tuple[int, ...]] = None  # Recall@K cut-offs; None: the protocol's own
    map_at_r: bool = False                # + MAP@R, R-precision, [PAMI] mARP
    nmi: bool = False                     # + NMI of k-means with #classes clusters
    nmi_seeds: tuple[int, ...] = (0,)     # one NMI run per seed: mean, and std if several
    block_size: int = 1024                # queries per step of the blocked k-NN pass
    mesh: Optional[Mesh] = None           # ('data',) mesh to split the query blocks over
    gallery_draws: int = 10               # VehicleID 'one_per_id': number of random galleries


def evaluate(name: str, splits: Mapping[str, Any], **options) -> ProtocolResult:
    """Runs protocol `name` (a key of PROTOCOLS) on the embedded splits."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {name!r}; known: {sorted(PROTOCOLS)}")
    return PROTOCOLS[name](splits, EvalOptions(**options))


def protocol_for_dataset(data_name: str, tfds_name: str = "",
                         split_names: Sequence[str] = ()) -> str:
    """The protocol a `config.data.name` (and tfds name / split names) is evaluated with."""
    if data_name in ("cub", "cars", "sop", "inshop", "vehicleid"):
        return data_name
    if data_name == "tfds" and tfds_name in _TFDS_PROTOCOLS:
        return _TFDS_PROTOCOLS[tfds_name]
    if {"query", "gallery"} <= set(split_names):
        return "query_gallery"
    return "loo"


_TFDS_PROTOCOLS = {"caltech_birds2011": "cub", "cars196": "cars",
                   "stanford_online_products": "sop"}


# ----------------------------------------------------------------------------------------------
# The protocols


def _leave_one_out(title: str, default_ks: tuple[int, ...]) -> Callable:
    def protocol(splits, options: EvalOptions) -> ProtocolResult:
        emb, labels = _get(splits, "test")
        ks = options.ks or default_ks
        metrics = _retrieval(emb, labels, None, None, ks, options)
        if options.nmi:
            metrics.update(_nmi(emb, labels, options))
        text = (f"{title}: leave-one-out retrieval over the 'test' split, {_count(labels)}: each "
                f"image queries all the others, itself excluded by index; R@{_ks(ks)}")
        return ProtocolResult(metrics, text + _extras(options))
    return protocol


def _query_gallery(title: str, default_ks: tuple[int, ...]) -> Callable:
    def protocol(splits, options: EvalOptions) -> ProtocolResult:
        q_emb, q_labels = _get(splits, "query")
        g_emb, g_labels = _get(splits, "gallery")
        ks = options.ks or default_ks
        metrics = _retrieval(q_emb, q_labels, g_emb, g_labels, ks, options)
        if options.nmi:
            # docs/method.md §4: In-shop's NMI clusters query and gallery together.
            both = jnp.concatenate([jnp.asarray(q_emb), jnp.asarray(g_emb)])
            metrics.update(_nmi(both, np.concatenate([np.asarray(q_labels),
                                                      np.asarray(g_labels)]), options))
        text = (f"{title}: the 'query' split, {_count(q_labels)}, retrieves from the 'gallery' "
                f"split, {_count(g_labels)}; R@{_ks(ks)}")
        extras = _extras(options)
        if options.nmi:
            extras = extras.replace("NMI:", "NMI on query+gallery:", 1)
        return ProtocolResult(metrics, text + extras)
    return protocol


def _vehicleid(splits, options: EvalOptions) -> ProtocolResult:
    ks = options.ks or (1, 5)
    lists = [name for name in VEHICLEID_LISTS if name in splits] or ["test"]
    metrics, sizes = {}, []
    for split in lists:
        emb, labels = _get(splits, split)
        labels = np.asarray(labels).reshape(-1)
        prefix = split.replace("test_", "")
        sizes.append(f"{prefix} {_count(labels)}")
        loo = _retrieval(emb, labels, None, None, ks, options)
        metrics.update({f"{prefix}/loo/{k}": v for k, v in loo.items()})
        metrics.update({f"{prefix}/one_per_id/{k}": v
                        for k, v in _one_per_id_recall(emb, labels, ks, options).items()})
        if options.nmi:
            metrics.update({f"{prefix}/{k}": v for k, v in _nmi(emb, labels, options).items()})
    text = (f"VehicleID lists {'; '.join(sizes)}, R@{_ks(ks)} under two protocols: 'loo' = "
            f"leave-one-out over the whole list ([PAMI] eval_model.py); 'one_per_id' = one random "
            f"gallery image per identity, all other images query it, mean (and std) over "
            f"{options.gallery_draws} draws with seeds 0-{options.gallery_draws - 1} (the "
            f"standard VehicleID protocol)")
    return ProtocolResult(metrics, text + _extras(options).replace("MAP@R", "'loo' MAP@R", 1))


def one_gallery_image_per_id(labels, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(query rows, gallery rows): one uniformly random image of each identity is the gallery.

    The gallery image of an identity is its first image in `default_rng(seed).permutation(N)`.
    Identities with a single image contribute a gallery image and no query.
    """
    labels = np.asarray(labels).reshape(-1)
    order = np.random.default_rng(seed).permutation(len(labels))
    _, first = np.unique(labels[order], return_index=True)
    is_gallery = np.zeros(len(labels), bool)
    is_gallery[order[first]] = True
    return np.flatnonzero(~is_gallery), np.flatnonzero(is_gallery)


def _one_per_id_recall(emb, labels, ks, options: EvalOptions) -> dict[str, float]:
    if options.gallery_draws < 1:
        raise ValueError(f"gallery_draws must be >= 1, got {options.gallery_draws}")
    emb = jnp.asarray(emb)
    draws = []
    for seed in range(options.gallery_draws):
        query, gallery = one_gallery_image_per_id(labels, seed)
        if len(query) == 0:
            raise ValueError("one_per_id needs an identity with at least two images")
        draws.append(retrieval.recall_at_k(emb[query], labels[query], emb[gallery],
                                           labels[gallery], ks=ks,
                                           block_size=options.block_size, mesh=options.mesh))
    out = {}
    for k in ks:
        values = [d[k] for d in draws]
        out[f"recall@{k}"] = float(np.mean(values))
        out[f"recall@{k}_std"] = float(np.std(values))
    return out


PROTOCOLS: dict[str, Callable[[Mapping[str, Any], EvalOptions], ProtocolResult]] = {
    "cub": _leave_one_out("CUB-200-2011", (1, 2, 4, 8)),
    "cars": _leave_one_out("Cars196", (1, 2, 4, 8)),
    "sop": _leave_one_out("Stanford Online Products", (1, 10, 100, 1000)),
    "inshop": _query_gallery("In-shop Clothes", (1, 10, 20, 30, 40, 50)),
    "vehicleid": _vehicleid,
    "loo": _leave_one_out("Leave-one-out", (1, 2, 4, 8)),
    "query_gallery": _query_gallery("Query/gallery", (1, 2, 4, 8)),
}


# ----------------------------------------------------------------------------------------------
# Shared pieces


def _get(splits, name: str):
    if name not in splits:
        raise ValueError(f"this protocol needs the {name!r} split; got {sorted(splits)}")
    emb, labels = splits[name]
    return emb, labels


def _retrieval(q_emb, q_labels, g_emb, g_labels, ks, options: EvalOptions) -> dict[str, float]:
    return retrieval.retrieval_metrics(q_emb, q_labels, g_emb, g_labels, ks=ks,
                                       block_size=options.block_size,
                                       map_at_r=options.map_at_r, mesh=options.mesh)


def _nmi(emb, labels, options: EvalOptions) -> dict[str, float]:
    result = clustering.normalized_mutual_information(emb, labels, seeds=options.nmi_seeds)
    out = {"nmi": result.mean}
    if len(options.nmi_seeds) > 1:
        out["nmi_std"] = result.std
    return out


def _count(labels) -> str:
    labels = np.asarray(labels).reshape(-1)
    return f"{len(labels):,} images ({len(np.unique(labels)):,} classes)"


def _ks(ks) -> str:
    return "/".join(str(k) for k in ks)


def _extras(options: EvalOptions) -> str:
    text = "; Euclidean distance, exact k-NN, ties by lower gallery index"
    if options.map_at_r:
        text += ("; MAP@R and R-precision (Musgrave et al. 2020, over queries with R >= 1) and "
                 "'marp_official' ([PAMI]'s hits-normalised mARP, not the standard MAP@R)")
    if options.nmi:
        seeds = options.nmi_seeds
        runs = (f"mean (std) of {len(seeds)} k-means runs, seeds {_ks(seeds)}" if len(seeds) > 1
                else f"one k-means run, seed {seeds[0]}")
        text += f"; NMI: k-means with one cluster per class, arithmetic NMI, {runs}"
    return text + "."


# ----------------------------------------------------------------------------------------------
# Printing


def format_table(metrics: Mapping[str, float], digits: int = 2) -> str:
    """A Markdown table, values in percent: one row per prefix ('large/loo'), one column per
    metric name ('recall@1'); un-prefixed metrics form one row."""
    rows: dict[str, dict[str, float]] = {}
    columns: list[str] = []
    for key, value in metrics.items():
        row, _, column = key.rpartition("/")
        rows.setdefault(row, {})[column] = value
        if column not in columns:
            columns.append(column)
    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row, values in rows.items():
        cells = [f"{100 * values[c]:.{digits}f}" if c in values else "-" for c in columns]
        lines.append(f"| {row or 'all'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

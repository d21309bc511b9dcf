"""The retrieval report: which queries fail, what they retrieve instead, which classes fail.

    dnc-jax evaluate --workdir=runs/cub-... --report [--report_dir=DIR] [--report_top_k=5]

`write_report` writes DIR/report.html (default WORKDIR/report/) and, beside it, PNG charts and
images/ (thumbnails), all linked by relative paths, so the folder can be moved or zipped whole.
The page (`report_html.render`) shows the run (checkpoint epoch, protocol, metrics, the key
parts of its config, its training curves), the Recall@K curve, the worst classes (Recall@1 per
class, a chart and a table), the class pairs most confused at rank 1, and the worst queries
first (`worst_queries`), each beside its top-k neighbours framed green (same class) or red.

The numbers come from the metric code itself: ranks and AP@R from `retrieval.query_stats`, the
neighbours from `retrieval.nearest_neighbours` (the same ranking function, ties by lower gallery
index, self excluded by index under leave-one-out), so the page agrees with the metrics.
The split reported: leave-one-out over 'test' (or over the first VehicleID list present), else
'query' against 'gallery'.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
from typing import NamedTuple, Optional

import numpy as np

from dnc_jax.evaluation import report_figures, report_html, retrieval

MISS = int(retrieval._MISS)  # first_hit of a query with no same-label item within the depth


@dataclasses.dataclass(frozen=True)
class ReportOptions:
    top_k: int = 5          # neighbours drawn beside each query
    queries: int = 30       # worst queries drawn
    classes: int = 20       # worst classes (and confused pairs) listed
    thumb: int = 96         # thumbnail side in pixels
    depth: int = 1000       # ranks searched for the first correct neighbour and the R@K curve
    block_size: int = 1024  # queries per step of the retrieval passes


class Analysis(NamedTuple):
    """Per-query retrieval of the reported split (numpy, Q rows)."""
    first_hit: np.ndarray     # 0-based rank of the first same-label neighbour, MISS if none
    num_relevant: np.ndarray  # R: same-label candidates
    ap_at_r: np.ndarray       # float64 AP@R (Musgrave et al.), NaN where R = 0
    neighbours: np.ndarray    # int (Q, k) gallery rows, nearest first
    distances: np.ndarray     # float (Q, k) Euclidean distances
    hits: np.ndarray          # bool (Q, k) neighbour has the query's label
    depth: int                # ranks searched: a first hit beyond it is MISS


def report_splits(split_names) -> tuple[str, Optional[str]]:
    """(query split, gallery split or None for leave-one-out) the report looks at."""
    names = list(split_names)
    if "test" in names:
        return "test", None
    if "query" in names and "gallery" in names:
        return "query", "gallery"
    lists = [n for n in ("test_small", "test_medium", "test_large") if n in names]
    if lists:
        return lists[0], None
    raise ValueError(f"no split to report on among {names}")


def analyse(query, query_labels, gallery=None, gallery_labels=None,
            options: ReportOptions = ReportOptions()) -> Analysis:
    q_labels = np.asarray(query_labels).reshape(-1)
    g_labels = q_labels if gallery is None else np.asarray(gallery_labels).reshape(-1)
    stats = retrieval.query_stats(query, q_labels, gallery, gallery_labels, k=options.depth,
                                  block_size=options.block_size, map_at_r=True)
    near = retrieval.nearest_neighbours(query, gallery, k=options.top_k,
                                        block_size=options.block_size)
    r = stats.num_relevant.astype(np.int64)
    n_candidates = len(g_labels) - int(gallery is None)
    depth = min(max(options.depth, int(r.max(initial=0))), n_candidates)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(r > 0, stats.precision_sum.astype(np.float64) / r, np.nan)
    hits = g_labels[near.indices] == q_labels[:, None]
    return Analysis(stats.first_hit.astype(np.int64), r, ap, near.indices, near.distances,
                    hits, depth)


def worst_queries(analysis: Analysis, n: int) -> np.ndarray:
    """The n worst queries that have a relevant item, worst first: the first correct neighbour
    furthest down (none within the depth first), then lower AP@R, then lower row."""
    rows = np.flatnonzero(analysis.num_relevant > 0)
    order = np.lexsort((rows, analysis.ap_at_r[rows], -analysis.first_hit[rows]))
    return rows[order[:n]]


def recall_curve(analysis: Analysis) -> np.ndarray:
    """Recall@K for K = 1..depth, over all queries (as `retrieval_metrics`)."""
    counts = np.bincount(analysis.first_hit[analysis.first_hit < analysis.depth],
                         minlength=analysis.depth)
    return np.cumsum(counts) / len(analysis.first_hit)


def class_table(analysis: Analysis, query_labels, top_k: int) -> list[dict]:
    """One row per query class, worst first (Recall@1, then MAP@R, then label): 'label',
    'queries', 'recall@1', 'recall@k' and 'map@r' (NaN when no query of it has R >= 1)."""
    labels = np.asarray(query_labels).reshape(-1)
    rows = []
    for label in np.unique(labels):
        mine = labels == label
        ap = analysis.ap_at_r[mine]
        rows.append({"label": label, "queries": int(mine.sum()),
                     "recall@1": float(np.mean(analysis.first_hit[mine] < 1)),
                     "recall@k": float(np.mean(analysis.first_hit[mine] < top_k)),
                     "map@r": float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")})
    rows.sort(key=lambda row: (row["recall@1"], np.nan_to_num(row["map@r"], nan=-1.0),
                               row["label"]))
    return rows


def confusions(analysis: Analysis, query_labels, gallery_labels, n: int) -> list[tuple]:
    """(query class, class retrieved at rank 1, count) of the wrong first neighbours, most
    frequent first."""
    q = np.asarray(query_labels).reshape(-1)
    wrong = ~analysis.hits[:, 0] if analysis.hits.shape[1] else np.zeros(len(q), bool)
    got = np.asarray(gallery_labels).reshape(-1)[analysis.neighbours[wrong, 0]]
    pairs: dict[tuple, int] = {}
    for pair in zip(q[wrong].tolist(), got.tolist()):
        pairs[pair] = pairs.get(pair, 0) + 1
    ranked = sorted(pairs.items(), key=lambda item: (-item[1], item[0]))
    return [(a, b, count) for (a, b), count in ranked[:n]]


def write_report(out_dir: str, datasets, embeddings, result, *, epoch: int, complete: bool,
                 config=None, workdir: Optional[str] = None,
                 options: ReportOptions = ReportOptions()) -> str:
    """Writes out_dir/report.html and its files; returns the page's path.

    `datasets`: {split: ImageSet}; `embeddings`: {split: (N, d) array} of (at least) the
    reported splits; `result`: the `ProtocolResult` the page prints."""
    query_split, gallery_split = report_splits(embeddings)
    q_set = datasets[query_split]
    g_set = q_set if gallery_split is None else datasets[gallery_split]
    gallery = None if gallery_split is None else embeddings[gallery_split]
    analysis = analyse(embeddings[query_split], q_set.labels, gallery,
                       None if gallery is None else g_set.labels, options)
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)

    curve = recall_curve(analysis)
    marks = sorted({1} | {int(m.group(1)) for k in result.metrics
                          if (m := re.fullmatch(r"recall@(\d+)", k.rsplit("/", 1)[-1]))})
    report_figures.recall_curve(curve, marks, os.path.join(out_dir, "recall_at_k.png"),
                                f"Recall@K, {_where(query_split, gallery_split)}")
    classes = class_table(analysis, q_set.labels, options.top_k)
    worst_classes = classes[:options.classes]
    report_figures.class_bars([_name(q_set, row["label"]) for row in worst_classes],
                              [row["recall@1"] for row in worst_classes],
                              os.path.join(out_dir, "class_recall.png"),
                              f"The {len(worst_classes)} worst of {len(classes)} classes")

    shown = worst_queries(analysis, options.queries)
    thumbs = {}

    def thumb(image_set, split, row):
        key = (split, int(row))
        if key not in thumbs:
            name = f"images/{split}-{int(row)}.png"
            report_figures.save_thumbnail(image_set.images, row, options.thumb,
                                          os.path.join(out_dir, name))
            thumbs[key] = name
        return thumbs[key]

    # The first correct neighbour of the shown queries that have none among the top k.
    late = [r for r in shown if options.top_k <= analysis.first_hit[r] < analysis.depth]
    first_correct = {}
    if late:
        deep = retrieval.nearest_neighbours(
            embeddings[query_split], gallery, rows=late, block_size=options.block_size,
            k=int(max(analysis.first_hit[late])) + 1)
        first_correct = {r: int(deep.indices[i, analysis.first_hit[r]])
                         for i, r in enumerate(late)}
    queries = []
    for row in shown:
        neighbours = [dict(row=int(g), label=_name(g_set, g_set.labels[g]), hit=bool(hit),
                           distance=float(d), src=thumb(g_set, gallery_split or query_split, g),
                           path=_path(g_set, g))
                      for g, hit, d in zip(analysis.neighbours[row], analysis.hits[row],
                                           analysis.distances[row])]
        queries.append(dict(row=int(row), label=_name(q_set, q_set.labels[row]),
                            src=thumb(q_set, query_split, row), path=_path(q_set, row),
                            first_hit=int(analysis.first_hit[row]),
                            relevant=int(analysis.num_relevant[row]),
                            ap=float(analysis.ap_at_r[row]), neighbours=neighbours))
        if row in first_correct:
            g = first_correct[row]
            queries[-1]["first_correct"] = dict(
                row=g, label=_name(g_set, g_set.labels[g]), path=_path(g_set, g),
                src=thumb(g_set, gallery_split or query_split, g))

    run_figures = []
    for name in ("recall.png", "loss.png", "clusters.png"):
        source = os.path.join(workdir, name) if workdir else ""
        if source and os.path.isfile(source):
            shutil.copyfile(source, os.path.join(out_dir, "run_" + name))
            run_figures.append("run_" + name)

    page = report_html.render(
        title=os.path.basename(os.path.normpath(workdir)) if workdir else "retrieval",
        epoch=epoch, complete=complete, protocol=result.protocol, metrics=result.metrics,
        config=report_html.config_rows(config) if config is not None else [],
        where=_where(query_split, gallery_split), depth=analysis.depth,
        top_k=options.top_k, thumb=options.thumb, queries=queries,
        lone=int(np.sum(analysis.num_relevant == 0)),
        classes=[dict(row, name=_name(q_set, row["label"])) for row in worst_classes],
        n_classes=len(classes),
        confusions=[(_name(q_set, a), _name(g_set, b), c)
                    for a, b, c in confusions(analysis, q_set.labels, g_set.labels,
                                              options.classes)],
        n_queries=len(analysis.first_hit), run_figures=run_figures)
    path = os.path.join(out_dir, "report.html")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(path + ".tmp", path)
    return path


def _where(query_split: str, gallery_split: Optional[str]) -> str:
    if gallery_split is None:
        return f"leave-one-out over '{query_split}'"
    return f"'{query_split}' against '{gallery_split}'"


def _name(image_set, label) -> str:
    names = image_set.class_names
    return str(names[int(label)]) if 0 <= int(label) < len(names) else str(label)


def _path(image_set, row) -> str:
    return image_set.paths[int(row)] if image_set.paths else ""

"""The HTML page of the retrieval report (`dnc_jax.evaluation.report`): one self-contained file,
its images linked by relative paths, styled inline, with a small inline script that marks the
page once every image has loaded (`<body data-images="ok">`, or 'broken' with a visible note
naming the missing files, e.g. when the page was moved without its folder)."""
from __future__ import annotations

import datetime
import math
from html import escape

# The key parts of a run's config shown on the page, those present and non-empty.
CONFIG_KEYS = (
    "data.name", "data.tfds_name", "data.root", "model.name", "model.embedding_dim",
    "model.pretrained", "loss.name", "loss.miner", "divide.schedule", "divide.num_learners",
    "divide.masks", "divide.learner_schedule", "divide.recluster_every", "num_epochs",
    "data.batch_size", "data.samples_per_class", "optim.algorithm",
    "optim.backbone.learning_rate", "optim.head.learning_rate", "augment.image_size", "dtype",
    "seed")

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1180px;color:#222;
  padding:0 12px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.meta{color:#555}.headline{font-size:26px;font-weight:600}
table{border-collapse:collapse;font-size:13px}
td,th{padding:2px 10px;border-bottom:1px solid #eee;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.cols{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
.query{margin:10px 0;padding:8px;border:1px solid #e3e3e3;border-radius:6px}
.query .head{font-size:13px;margin-bottom:6px}
.strip{display:flex;gap:8px;flex-wrap:wrap}
figure{margin:0;text-align:center;font-size:11px}
figure img{display:block;object-fit:contain;background:#f4f4f4;border:4px solid #999;
  border-radius:3px}
figure.q img{border-color:#1f77b4}figure.hit img{border-color:#2ca02c}
figure.first-correct img{border:4px dashed #2ca02c}.first-correct figcaption b{color:#2ca02c}
.gap{align-self:center;color:#888;font-size:20px;padding:0 4px}figure.miss img{border-color:#d62728}
figure.q{margin-right:14px}figcaption{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.hit figcaption b{color:#2ca02c}.miss figcaption b{color:#d62728}
nav{margin:6px 0 0}nav a{color:#1f77b4}
#broken{display:none;background:#fee;border:1px solid #d62728;padding:8px}
"""

_SCRIPT = """
window.addEventListener("load", function () {
  var images = document.images, loaded = 0, missing = [];
  for (var i = 0; i < images.length; i++) {
    if (images[i].complete && images[i].naturalWidth > 0) loaded++;
    else missing.push(images[i].getAttribute("src"));
  }
  document.body.setAttribute("data-images-loaded", String(loaded));
  document.body.setAttribute("data-images", missing.length ? "broken" : "ok");
  if (missing.length) {
    var note = document.getElementById("broken");
    note.textContent = missing.length + " image(s) did not load (keep report.html beside its "
      + "PNG files and images/): " + missing.slice(0, 5).join(", ");
    note.style.display = "block";
  }
});
"""


def config_rows(config) -> list[tuple[str, str]]:
    rows = []
    for key in CONFIG_KEYS:
        node = config
        try:
            for part in key.split("."):
                node = node[part]
        except (KeyError, AttributeError, TypeError):
            continue
        if node not in ("", None):
            rows.append((key, str(node)))
    return rows


def _pct(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def _table(head, rows, row_attrs=None) -> str:
    out = ["<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
    for i, row in enumerate(rows):
        attrs = row_attrs[i] if row_attrs else ""
        cells = "".join(f'<td class="num">{escape(c)}</td>' if isinstance(c, _Num)
                        else f"<td>{escape(c)}</td>" for c in row)
        out.append(f"<tr{attrs}>{cells}</tr>")
    return "\n".join(out) + "</table>"


class _Num(str):
    """A right-aligned cell of `_table`."""


_num = _Num


def _rank_text(query, depth: int) -> str:
    if query["first_hit"] < depth:
        return f"first correct at rank {query['first_hit'] + 1}"
    return f"no correct neighbour in the first {depth}"


def _query_card(i: int, query, depth: int, thumb: int) -> str:
    ap = "–" if math.isnan(query["ap"]) else f"{query['ap']:.3f}"
    first_hit = query["first_hit"] if query["first_hit"] < depth else -1
    tiles = [f'<figure class="q"><img src="{escape(query["src"])}" width="{thumb}" '
             f'height="{thumb}" alt="query" title="{escape(query["path"] or query["label"])}">'
             f'<figcaption style="max-width:{thumb + 8}px">query: {escape(query["label"])}'
             f"</figcaption></figure>"]
    for rank, nb in enumerate(query["neighbours"], 1):
        kind = "hit" if nb["hit"] else "miss"
        mark = "✓" if nb["hit"] else "✗"
        tiles.append(
            f'<figure class="{kind}" data-rank="{rank}" data-row="{nb["row"]}" '
            f'data-label="{escape(nb["label"])}"><img src="{escape(nb["src"])}" '
            f'width="{thumb}" height="{thumb}" alt="rank {rank}" '
            f'title="{escape(nb["path"] or nb["label"])} (distance {nb["distance"]:.4f})">'
            f'<figcaption style="max-width:{thumb + 8}px"><b>{mark} {rank}</b> '
            f'{escape(nb["label"])}</figcaption></figure>')
    found = query.get("first_correct")
    if found:
        rank = query["first_hit"] + 1
        tiles.append(
            f'<span class="gap">…</span><figure class="first-correct" data-rank="{rank}" '
            f'data-row="{found["row"]}" data-label="{escape(found["label"])}">'
            f'<img src="{escape(found["src"])}" width="{thumb}" height="{thumb}" '
            f'alt="first correct, rank {rank}" title="{escape(found["path"] or found["label"])}">'
            f'<figcaption style="max-width:{thumb + 8}px"><b>✓ {rank}</b> first correct'
            f'</figcaption></figure>')
    return (f'<div class="query" data-order="{i}" data-row="{query["row"]}" '
            f'data-label="{escape(query["label"])}" data-first-hit="{first_hit}" '
            f'data-ap="{ap}"><div class="head"><b>#{i + 1}</b> query row {query["row"]}, '
            f'class <b>{escape(query["label"])}</b>: {_rank_text(query, depth)}, '
            f'{query["relevant"]} relevant, AP@R {ap}</div>'
            f'<div class="strip">{"".join(tiles)}</div></div>')


def render(*, title, epoch, complete, protocol, metrics, config, where, depth, top_k, thumb,
           queries, lone, classes, n_classes, confusions, n_queries, run_figures) -> str:
    """The page, as a string (arguments: see `report.write_report`)."""
    state = "end of" if complete else "inside"
    headline = next((v for k, v in metrics.items() if k.endswith("recall@1")), None)
    metric_table = _table(["metric", "%"], [(k, _num(_pct(v))) for k, v in metrics.items()])
    config_table = _table(["key", "value"], config) if config else "<p>(no config)</p>"
    class_table = _table(
        ["class", "queries", "R@1 %", f"R@{top_k} %", "MAP@R %"],
        [(c["name"], _num(str(c["queries"])), _num(_pct(c["recall@1"])),
          _num(_pct(c["recall@k"])), _num(_pct(c["map@r"]))) for c in classes],
        [f' class="class-row" data-label="{escape(c["name"])}" data-queries="{c["queries"]}" '
         f'data-recall="{c["recall@1"]:.6f}"' for c in classes])
    confusion_table = _table(["query class", "retrieved at rank 1", "times"],
                             [(a, b, _num(str(n))) for a, b, n in confusions])
    cards = "\n".join(_query_card(i, q, depth, thumb) for i, q in enumerate(queries))
    lone_note = (f" Left out: {lone} quer{'y' if lone == 1 else 'ies'} with no image of its "
                 f"class to find." if lone else "")
    figures = "".join(f'<img src="{escape(f)}" alt="{escape(f)}" width="380">'
                      for f in run_figures)
    written = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    head_pct = f"R@1 {_pct(headline)}%" if headline is not None else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Retrieval report: {escape(title)}</title>
<style>{_STYLE}</style>
<script>{_SCRIPT}</script>
</head><body data-images="pending">
<h1>Retrieval report: {escape(title)}</h1>
<p class="meta">Checkpoint of epoch {epoch} ({state} the epoch), written {written}.
<span class="headline">{head_pct}</span></p>
<nav><a href="#summary">summary</a> · <a href="#queries">worst queries</a> ·
<a href="#classes">worst classes</a> · <a href="#confusions">confusions</a> ·
<a href="#run">the run</a></nav>
<div id="broken"></div>
<section id="summary"><h2>Summary</h2><p>{escape(protocol)}</p>
<p>Below: {escape(where)}, {n_queries:,} queries, ranked by the evaluation's own exact k-NN.</p>
<div class="cols">{metric_table}<img src="recall_at_k.png" alt="Recall@K curve"></div>
</section>
<section id="queries"><h2>Worst queries</h2>
<p>The {len(queries)} queries whose first correct neighbour comes latest (then lowest AP@R),
each with its {top_k} nearest neighbours: <b style="color:#2ca02c">green</b> same class,
<b style="color:#d62728">red</b> another class; past them, dashed, the first correct one and its
rank. Hover an image for its file and
distance.{lone_note}</p>
{cards}</section>
<section id="classes"><h2>Worst classes</h2>
<p>Recall@1 of each class's queries; the {len(classes)} worst of {n_classes} classes.</p>
<div class="cols"><img src="class_recall.png" alt="worst classes">{class_table}</div></section>
<section id="confusions"><h2>What they retrieve instead</h2>
<p>Query class and the class of a wrong first neighbour, most frequent pairs first.</p>
{confusion_table}</section>
<section id="run"><h2>The run</h2><div class="cols">{config_table}<div>{figures}</div></div>
</section>
</body></html>
"""

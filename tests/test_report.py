"""The retrieval report (`dnc-jax evaluate --report`): its neighbours against a float64 brute
force, its page against an independent numpy computation, and the page in headless Chromium."""
import html.parser
import io
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dnc_jax.data.store.encoded import EncodedImages
from dnc_jax.data.store.image_set import ImageSet
from dnc_jax.evaluation import protocols, report, report_figures, retrieval
from tests.chromium import Browser

REPO = pathlib.Path(__file__).resolve().parent.parent
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def brute_force(query, gallery=None):
    """Every query's gallery rows nearest first, float64, ties by lower index, self excluded
    by index under leave-one-out; and the float64 distances."""
    loo = gallery is None
    q = np.asarray(query, np.float64)
    g = q if loo else np.asarray(gallery, np.float64)
    dist = np.sqrt(((q[:, None, :] - g[None, :, :]) ** 2).sum(-1))
    orders = []
    for i in range(len(q)):
        cols = np.delete(np.arange(len(g)), i) if loo else np.arange(len(g))
        orders.append(cols[np.argsort(dist[i, cols], kind="stable")])
    return np.array(orders), dist


@pytest.mark.parametrize("loo", [True, False])
@pytest.mark.parametrize("block_size", [1, 7, 1024])
def test_nearest_neighbours_match_a_float64_brute_force(loo, block_size):
    rng = np.random.default_rng(3)
    query = rng.normal(size=(60, 8)).astype(np.float32)
    gallery = None if loo else rng.normal(size=(45, 8)).astype(np.float32)
    order, dist = brute_force(query, gallery)
    rows = np.array([0, 59, 17, 17, 3])
    got = retrieval.nearest_neighbours(query, gallery, k=6, rows=rows, block_size=block_size)
    np.testing.assert_array_equal(got.indices, order[rows, :6])
    np.testing.assert_allclose(got.distances, np.take_along_axis(dist[rows], order[rows, :6], 1),
                               rtol=1e-4, atol=1e-4)
    everything = retrieval.nearest_neighbours(query, gallery, k=1000, block_size=block_size)
    assert everything.indices.shape == (60, 59 if loo else 45)  # k clamped to the candidates
    np.testing.assert_array_equal(everything.indices, order)


def test_nearest_neighbours_break_ties_by_index_and_keep_duplicates():
    """Integer coordinates: exact ties in float32 too; a duplicate of a query is retrievable."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(80, 2)).astype(np.float32)
    x[10] = x[40]
    order, _ = brute_force(x)
    got = retrieval.nearest_neighbours(x, k=20, block_size=16)
    np.testing.assert_array_equal(got.indices, order[:, :20])
    assert got.distances[40, 0] == 0  # its duplicate, row 10 or an earlier equal row
    # The metrics' own first hits are the first same-label columns of these neighbours.
    labels = rng.integers(0, 6, size=80)
    stats = retrieval.query_stats(x, labels, k=20, block_size=16, map_at_r=False)
    hits = labels[got.indices] == labels[:, None]
    expected = np.where(hits.any(1), hits.argmax(1), report.MISS)
    np.testing.assert_array_equal(stats.first_hit, expected)


def test_analysis_on_a_query_gallery_split():
    rng = np.random.default_rng(1)
    q_labels, g_labels = rng.integers(0, 5, size=40), rng.integers(0, 6, size=50)
    query, gallery = rng.normal(size=(40, 4)), rng.normal(size=(50, 4))
    options = report.ReportOptions(top_k=3, depth=1000)
    a = report.analyse(query, q_labels, gallery, g_labels, options)
    order, _ = brute_force(query, gallery)
    hits = g_labels[order] == q_labels[:, None]
    first = np.where(hits.any(1), hits.argmax(1), report.MISS)
    np.testing.assert_array_equal(a.first_hit, first)
    np.testing.assert_array_equal(a.neighbours, order[:, :3])
    assert a.depth == 50
    np.testing.assert_allclose(report.recall_curve(a),
                               [np.mean(first < k) for k in range(1, 51)])
    worst = report.worst_queries(a, 40)
    keys = [(-first[i], a.ap_at_r[i], i) for i in worst]
    assert keys == sorted(keys)
    table = report.class_table(a, q_labels, 3)
    for row in table:
        mine = q_labels == row["label"]
        assert row["queries"] == mine.sum()
        assert row["recall@1"] == pytest.approx(np.mean(first[mine] < 1))
        assert row["recall@k"] == pytest.approx(np.mean(first[mine] < 3))
    assert [r["recall@1"] for r in table] == sorted(r["recall@1"] for r in table)
    pairs = report.confusions(a, q_labels, g_labels, 100)
    assert sum(c for _, _, c in pairs) == np.sum(first != 0)
    assert all(a_ != b for a_, b, _ in pairs)


def test_thumbnails_of_uint8_rows_and_of_image_files(tmp_path):
    rows = np.zeros((2, 8, 8, 3), np.uint8)
    rows[1, :, :4] = 255
    assert report_figures.thumbnail(rows, 1, 32).size == (32, 32)
    pictures = [Image.new("RGB", (60, 30), (200, 10, 10)), Image.new("L", (20, 40), 90)]
    blobs = []
    for picture in pictures:
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        blobs.append(np.frombuffer(buffer.getvalue(), np.uint8))
    np.save(tmp_path / "data.npy", np.concatenate(blobs))
    np.save(tmp_path / "offsets.npy", np.cumsum([0] + [len(b) for b in blobs]))
    files = EncodedImages(str(tmp_path / "data.npy"), str(tmp_path / "offsets.npy"))
    assert report_figures.thumbnail(files, 0, 48).size == (48, 24)  # aspect ratio kept
    small = report_figures.thumbnail(files, 1, 48)
    assert small.size == (24, 48) and small.mode == "RGB"


def test_a_query_gallery_report_of_uint8_rows(tmp_path):
    """'query' against 'gallery' (In-shop's layout), images as uint8 rows: the page lists the
    worst queries first, leaves out a query whose class the gallery lacks, and marks each
    neighbour by its label."""
    rng = np.random.default_rng(2)
    names = ["cat", "dog", "<owl>", "eel"]
    q_labels, g_labels = np.array([0, 0, 1, 1, 2, 3]), np.array([0, 1, 1, 2, 2, 2, 0])
    sets = {"query": ImageSet(rng.integers(0, 255, (6, 8, 8, 3), np.uint8), q_labels, names),
            "gallery": ImageSet(rng.integers(0, 255, (7, 8, 8, 3), np.uint8), g_labels, names)}
    emb = {"query": rng.normal(size=(6, 3)), "gallery": rng.normal(size=(7, 3))}
    result = protocols.evaluate("query_gallery", {k: (emb[k], sets[k].labels) for k in sets})
    path = report.write_report(str(tmp_path / "r"), sets, emb, result, epoch=2, complete=False,
                               options=report.ReportOptions(top_k=3, queries=10, thumb=16))
    page = _Page()
    page.feed(open(path, encoding="utf-8").read())
    order, _ = brute_force(emb["query"], emb["gallery"])
    hits = g_labels[order] == q_labels[:, None]
    first = np.where(hits.any(1), hits.argmax(1), -1)
    assert [int(q["data-row"]) for q in page.queries] == sorted(
        range(5), key=lambda r: (-first[r], r))  # row 5 ('eel') has nothing to find
    for q in page.queries:
        row = int(q["data-row"])
        assert [int(t["data-row"]) for t in q["tiles"]] == list(order[row, :3])
        assert [t["class"] == "hit" for t in q["tiles"]] == list(hits[row, :3])
    text = open(path, encoding="utf-8").read()
    assert "&lt;owl&gt;" in text and "<owl>" not in text  # class names are escaped
    assert "Left out: 1 query with no image of its class" in text
    assert "inside the epoch" in text and "&#x27;query&#x27; against &#x27;gallery&#x27;" in text
    for src in page.images:
        assert Image.open(tmp_path / "r" / src).size[0] > 0


# ----------------------------------------------------------------------------------------------
# A trained run's report


class _Page(html.parser.HTMLParser):
    """The report's query cards, class rows and images, from its HTML."""

    def __init__(self):
        super().__init__()
        self.queries, self.classes, self.images, self._figure = [], [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "div" and "query" in attrs.get("class", "").split():
            self.queries.append({**attrs, "tiles": []})
        elif tag == "figure" and self.queries and attrs.get("class") in ("hit", "miss"):
            self.queries[-1]["tiles"].append(attrs)
        elif tag == "figure" and self.queries and attrs.get("class") == "first-correct":
            self.queries[-1]["first_correct"] = attrs
        elif tag == "tr" and attrs.get("class") == "class-row":
            self.classes.append(attrs)
        elif tag == "img":
            self.images.append(attrs["src"])


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """(workdir, report folder) of a tiny 1-epoch run evaluated with `dnc-jax evaluate
    --report` on the command line."""
    from tests.helpers import train_tiny_run

    root = tmp_path_factory.mktemp("report")
    _, workdir = train_tiny_run(root, epochs=1)
    out = root / "the report"  # a space in the path: relative links must still work
    proc = subprocess.run(
        [sys.executable, "-m", "dnc_jax.commands", "evaluate", f"--workdir={workdir}", "--report",
         f"--report_dir={out}", "--report_top_k=4", "--report_queries=12", "--report_thumb=40"],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"report: {out / 'report.html'}" in proc.stdout
    return workdir, out


def _embedded_test_split(workdir):
    from dnc_jax.inference import restore
    from dnc_jax.data import sources

    trained = restore.load_trained(workdir)
    test = sources.load_dataset(trained.config.data, held_out_only=True)["test"]
    try:
        return test, trained.embed_fn(test.images, test.sizes)
    finally:
        trained.embed_fn.close()


def test_the_report_of_a_trained_run_agrees_with_numpy(reported):
    workdir, out = reported
    page = _Page()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    test, emb = _embedded_test_split(workdir)
    names = np.array(test.class_names)[test.labels]
    order, _ = brute_force(emb)
    hits = test.labels[order] == test.labels[:, None]
    first = np.where(hits.any(1), hits.argmax(1), -1)  # -1: no same-class image at all

    # The worst queries, worst first: the first correct neighbour latest, as numpy ranks them.
    assert len(page.queries) == 12
    shown = [int(q["data-row"]) for q in page.queries]
    ranks = [int(q["data-first-hit"]) for q in page.queries]
    assert ranks == [first[r] for r in shown]
    assert sorted(first[first >= 0])[::-1][:12] == ranks
    for q in page.queries:
        assert q["data-label"] == names[int(q["data-row"])]
        tiles = q["tiles"]
        assert [int(t["data-row"]) for t in tiles] == list(order[int(q["data-row"]), :4])
        for t in tiles:  # green/red agrees with the labels
            assert t["data-label"] == names[int(t["data-row"])]
            assert (t["class"] == "hit") == (t["data-label"] == q["data-label"])
        # Past the top 4, the first correct neighbour at its rank.
        row, rank = int(q["data-row"]), int(q["data-first-hit"])
        if rank >= 4:
            found = q["first_correct"]
            assert int(found["data-row"]) == order[row, rank]
            assert int(found["data-rank"]) == rank + 1
            assert found["data-label"] == q["data-label"]
        else:
            assert "first_correct" not in q
    assert any("first_correct" in q for q in page.queries)
    # Recall@1 per class, worst first, as numpy computes it.
    expected = {name: np.mean(first[names == name] == 0) for name in test.class_names}
    assert len(page.classes) == min(20, len(expected))
    for row in page.classes:
        assert float(row["data-recall"]) == pytest.approx(expected[row["data-label"]], abs=1e-6)
        assert int(row["data-queries"]) == np.sum(names == row["data-label"])
    recalls = [float(row["data-recall"]) for row in page.classes]
    assert recalls == sorted(recalls) and recalls[0] == min(expected.values())
    # Every picture is a file of the folder, linked relatively.
    assert {"recall_at_k.png", "class_recall.png"} <= set(page.images)
    for src in page.images:
        assert not os.path.isabs(src) and (out / src).stat().st_size > 100
    metrics = retrieval_metrics_of(emb, test.labels)
    text = (out / "report.html").read_text(encoding="utf-8")
    assert f"{100 * metrics['recall@1']:.2f}" in text and "leave-one-out" in text


def retrieval_metrics_of(emb, labels):
    return protocols.evaluate("loo", {"test": (emb, labels)}).metrics


def test_bad_report_flags_are_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "dnc_jax.commands", "evaluate", f"--workdir={tmp_path}", "--report",
         "--report_top_k=0"], cwd=REPO, capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "dnc_jax: --report_top_k=0: must be at least 1"


# ----------------------------------------------------------------------------------------------
# The page in a real browser

WAIT_FOR_IMAGES = """new Promise(resolve => {
  const check = () => document.body.dataset.images !== "pending"
    ? resolve({state: document.body.dataset.images,
               loaded: Number(document.body.dataset.imagesLoaded),
               images: document.images.length,
               drawn: Array.from(document.images).filter(i => i.naturalWidth > 0).length,
               queries: document.querySelectorAll("div.query").length,
               note: document.getElementById("broken").textContent})
    : setTimeout(check, 50);
  check();
})"""


def test_the_report_renders_in_chromium_with_every_image(reported, tmp_path):
    _, out = reported
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copyfile(out / "report.html", moved / "report.html")
    with Browser() as browser:
        page = browser.open((out / "report.html").resolve().as_uri())
        status = page.evaluate(WAIT_FOR_IMAGES)
        assert status["state"] == "ok", status
        assert status["loaded"] == status["drawn"] == status["images"] > 12 * 5
        assert status["queries"] == 12 and not status["note"]
        assert page.errors() == []
        shot = np.asarray(Image.open(io.BytesIO(page.screenshot(1200, 4000))).convert("RGB"))
        colours = shot.reshape(-1, 3).astype(int)
        for rgb in ((214, 39, 40), (44, 160, 44)):  # the red and green frames are drawn
            assert np.sum(np.abs(colours - rgb).sum(1) < 30) > 300, rgb

        # The checks can fail: moved without its images, the page says so, and the browser
        # reports the failed loads.
        page = browser.open((moved / "report.html").resolve().as_uri())
        status = page.evaluate(WAIT_FOR_IMAGES)
        assert status["state"] == "broken" and status["loaded"] == 0
        assert "did not load" in status["note"]
        assert any("Failed to load resource" in e for e in page.errors())

"""Using a trained run: `restore.load_trained`, `dnc-jax embed` and `dnc_jax.inference.search`.

One tiny run is trained for the module; a few glyphs of the held-out classes, written as PNG
files, are embedded with the command line and compared with what training's own
`Trainer.embed` gives for the same pixels, then searched.
"""
import os
import re
import shutil
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
from PIL import Image

from dnc_jax import checkpoint, errors, parallel
from dnc_jax.inference import embed, restore, search
from dnc_jax.training import train
from dnc_jax.divide import masks
from dnc_jax.data import sources
from dnc_jax.errors import DataError
from dnc_jax.data.store.image_set import ImageSet
from dnc_jax.divide import schedule
from tests.helpers import train_tiny_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed_search")
    config, workdir = train_tiny_run(root)
    datasets = sources.load_dataset(config.data)
    test = datasets["test"]
    # Every 7th held-out glyph, in class folders: the folder walk must recurse and sort.
    rows = np.arange(0, len(test), 7)
    paths = []
    for row in rows:
        path = root / "images" / f"c{test.labels[row]:02d}" / f"g{row:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(test.images[row])).save(path)
        paths.append(str(path))
    return types.SimpleNamespace(root=root, config=config, workdir=workdir, datasets=datasets,
                                 rows=rows, paths=paths)


@pytest.fixture(scope="module")
def index(run):
    out = str(run.root / "emb.npy")
    proc = subprocess.run(
        [sys.executable, "-m", "dnc_jax.inference.embed", f"--workdir={run.workdir}",
         f"--images={run.root / 'images'}", f"--out={out}", "--workers=1", "--usearch"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr
    return types.SimpleNamespace(path=out, stdout=proc.stdout)


def _trainer_reference(run):
    """(state, slices) as training restores them, and the trainer that embeds with them."""
    trainer = train.Trainer(run.config, run.datasets, parallel.make_mesh())
    template = trainer.init_state(jax.random.key(0))
    ckpt = checkpoint.Checkpointer(os.path.join(run.workdir, "checkpoints"))
    state, _, meta = ckpt.restore_latest(template, len(run.datasets["train"]))
    slices = masks.phase_arrays(run.config, schedule.phase(run.config.divide, meta["epoch"]))
    return trainer, state, slices["slices"]


def test_embed_command_gives_the_trainers_evaluation_embedding(run, index):
    n = len(run.rows)
    assert f"embedded {n} images, d=16" in index.stdout
    embeddings = np.load(index.path)
    with open(embed.paths_file(index.path)) as f:
        listed = f.read().splitlines()
    assert embeddings.shape == (n, 16) and embeddings.dtype == np.float32
    assert listed == sorted(run.paths)

    trainer, state, slices = _trainer_reference(run)
    test = run.datasets["test"]
    subset = ImageSet(images=np.asarray(test.images)[run.rows], labels=test.labels[run.rows],
                      class_names=test.class_names)
    expected = np.asarray(trainer.embed(state, subset, slices))
    order = [run.paths.index(p) for p in listed]
    np.testing.assert_allclose(embeddings, expected[order], atol=1e-5)
    # Two unit-norm learner blocks (K=2 slices): the evaluation embedding, not the raw output.
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), np.sqrt(2), rtol=1e-5)

    # The partial restore reads the same network as training's full restore.
    trained = restore.load_trained(run.workdir)
    np.testing.assert_array_equal(trained.slices, slices)
    jax.tree.map(np.testing.assert_array_equal,
                 (trained.model_params, trained.batch_stats),
                 (state.params["model"], state.batch_stats))


def test_search_finds_the_query_first_and_ranks_like_brute_force(run, index):
    embeddings = np.load(index.path)
    with open(embed.paths_file(index.path)) as f:
        listed = f.read().splitlines()
    query_row = 5
    sheet = str(run.root / "sheet.png")
    proc = subprocess.run(
        [sys.executable, "-m", "dnc_jax.inference.search", f"--workdir={run.workdir}",
         f"--index={index.path}", f"--query={listed[query_row]}", "--top=10",
         f"--sheet={sheet}"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr
    printed = [re.match(r"^\s*(\d+)\s+(\d+\.\d+)\s+(\S.*)$", line)
               for line in proc.stdout.splitlines()]
    printed = [(int(m[1]), float(m[2]), m[3]) for m in printed if m]

    distances = np.linalg.norm(embeddings.astype(np.float64) - embeddings[query_row], axis=1)
    brute = np.argsort(distances, kind="stable")[:10]
    assert [rank for rank, _, _ in printed] == list(range(1, 11))
    assert [path for _, _, path in printed] == [listed[i] for i in brute]
    np.testing.assert_allclose([d for _, d, _ in printed], distances[brute], atol=2e-4)
    assert printed[0][2] == listed[query_row] and printed[0][1] < 1e-4

    with Image.open(sheet) as im:
        assert im.size == search.sheet_size(11)  # the query and its 10 hits


def test_the_usearch_index_ranks_like_the_exact_scan(index):
    """The optional HNSW file beside emb.npy: keys are rows; on a set this small its graph
    search returns the exact neighbours."""
    from usearch.index import Index

    from dnc_jax.inference import vector_index

    embeddings = np.load(index.path)
    hnsw = Index.restore(vector_index.index_path(index.path))
    assert len(hnsw) == len(embeddings)
    for row in (0, 5, len(embeddings) - 1):
        matches = hnsw.search(embeddings[row], 5)
        distances = np.sum((embeddings.astype(np.float64) - embeddings[row]) ** 2, axis=1)
        assert int(matches.keys[0]) == row
        np.testing.assert_allclose(np.sort(matches.distances), np.sort(distances)[:5],
                                   atol=1e-4)


def test_nearest_is_exact_with_ties_to_the_lower_row():
    index = np.array([[3.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, -1.0]], np.float32)
    rows, distances = search.nearest(index, np.zeros(2, np.float32), top=3)
    assert rows.tolist() == [1, 2, 3] and distances.tolist() == [1.0, 1.0, 1.0]


def test_lists_of_images_resolve_relative_to_the_list(run, tmp_path):
    folder = run.root / "images"
    relative = [os.path.relpath(p, folder) for p in run.paths[:3]]
    (folder / "list.txt").write_text("# three glyphs\n" + "\n".join(relative) + "\n\n")
    (folder / "list.csv").write_text("path,label\n" + "".join(f"{p},x\n" for p in relative))
    for name in ("list.txt", "list.csv"):
        assert embed.list_images(str(folder / name)) == run.paths[:3]
    (folder / "bad.txt").write_text(relative[0] + "\nnope.png\n")
    with pytest.raises(DataError, match=re.escape(f"{folder / 'bad.txt'}:2") + ".*nope.png"):
        embed.list_images(str(folder / "bad.txt"))
    with pytest.raises(DataError, match=f"no image files under {re.escape(str(tmp_path))}"):
        embed.list_images(str(tmp_path))


def test_unusable_workdirs_fail_with_one_line_naming_the_path(run, index, tmp_path):
    missing = str(tmp_path / "nowhere")
    no_config = str(tmp_path / "no_config")
    no_checkpoints = str(tmp_path / "no_checkpoints")
    os.makedirs(no_config)
    os.makedirs(no_checkpoints)
    shutil.copy(os.path.join(run.workdir, "config.json"), no_checkpoints)
    for workdir, named in ((missing, missing),
                           (no_config, os.path.join(no_config, "config.json")),
                           (no_checkpoints, os.path.join(no_checkpoints, "checkpoints"))):
        with pytest.raises(errors.RestoreError) as error:
            restore.load_trained(workdir)
        assert named in str(error.value) and "\n" not in str(error.value)
    assert not os.path.exists(os.path.join(no_checkpoints, "checkpoints"))  # nothing created

    # The command line prints that line alone and exits 2.
    proc = subprocess.run(
        [sys.executable, "-m", "dnc_jax.inference.search", f"--workdir={no_checkpoints}",
         f"--index={index.path}", f"--query={run.paths[0]}"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("dnc_jax: no checkpoints") and no_checkpoints in last


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(run, tmp_path, capsys):
    saved = os.path.join(run.workdir, "checkpoints")
    (step,) = [int(d) for d in os.listdir(saved) if d.isdigit()]
    copy = tmp_path / "run"
    shutil.copytree(saved, copy / "checkpoints")
    shutil.copy(os.path.join(run.workdir, "config.json"), copy)
    newer = copy / "checkpoints" / str(step + 100)
    shutil.copytree(copy / "checkpoints" / str(step), newer)
    for chunk in (newer / "arrays" / "ocdbt.process_0" / "d").iterdir():
        chunk.unlink()  # the array data of the newest checkpoint lost

    trained = restore.load_trained(str(copy))
    assert trained.embed_fn.step == step
    assert f"checkpoint at step {step + 100} cannot be read" in capsys.readouterr().out

"""`dnc-jax export`: a trained run's evaluation embedder as ONNX, checked with onnxruntime.

One tiny run is trained for the module and exported; onnxruntime on the CPU must give what
`embed_fn.embed_views` gives for the same eval views (real photographs cut by
`host_views.eval_view`, and random pixels) to < 1e-4 in float32. jax2onnx and onnxruntime are
test requirements (requirements-test.txt): without them this module fails, it does not skip.
"""
import json
import os
import shutil
import subprocess
import sys
import types

import jax2onnx  # noqa: F401  (a missing exporter fails here, at collection)
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from sklearn.datasets import load_sample_images

from dnc_jax.inference import export, restore
from dnc_jax.data.views import augment, host_views
from dnc_jax.errors import RestoreError
from tests.helpers import train_tiny_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}
TOLERANCE = 1e-4  # max abs difference, float32


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    config, workdir = train_tiny_run(root)
    trained = restore.load_trained(workdir)
    model_path = str(root / "model.onnx")
    description = export.export_onnx(workdir, model_path)
    yield types.SimpleNamespace(root=root, workdir=workdir, trained=trained,
                                model_path=model_path, description=description)
    trained.embed_fn.close()


def _session(path):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def _photo_views(config) -> np.ndarray:
    """Eval views of real photographs, cut as evaluation cuts image files: sklearn's china and
    flower (landscape), and the flower turned to portrait (the other branch of the resize)."""
    photos = [Image.fromarray(image) for image in load_sample_images().images]
    photos.append(photos[1].transpose(Image.Transpose.ROTATE_90))
    side, resize = config.augment.image_size, augment.eval_resize_size(config.augment)
    return np.stack([host_views.eval_view(p, side, resize) for p in photos])


def _random_views(n, side, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def _max_difference(session, views, embed_fn) -> float:
    (onnx_out,) = session.run(None, {export.INPUT_NAME: views})
    jax_out = embed_fn.embed_views(views)
    assert onnx_out.shape == jax_out.shape and onnx_out.dtype == np.float32
    return float(np.abs(onnx_out - jax_out).max())


def test_onnx_gives_the_jax_embedding_with_a_dynamic_batch(run):
    session = _session(run.model_path)
    side = run.trained.config.augment.image_size
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape) == ("views", "tensor(uint8)", ["N", side, side, 3])
    assert (out.name, out.type, out.shape) == ("embedding", "tensor(float)", ["N", 16])

    photos = _photo_views(run.trained.config)
    random = _random_views(5, side)
    # Three batch sizes through the one model: the batch dimension is dynamic.
    differences = [_max_difference(session, views, run.trained.embed_fn)
                   for views in (photos, random, np.concatenate([photos, random]))]
    print(f"max abs difference ONNX vs JAX: {max(differences):.2e}")
    assert max(differences) < TOLERANCE
    # The evaluation embedding, not the raw head: two unit-norm learner blocks.
    (embedding,) = session.run(None, {"views": photos})
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), np.sqrt(2), rtol=1e-5)


def test_exportable_pooling_is_the_same_function_in_jax(run):
    # The explicit -inf pad + 'VALID' pool swapped in for the exporter computes what the
    # network's own padded max-pool does (outside an export it wraps flax's max_pool).
    views = _photo_views(run.trained.config)
    embed = export.embedder_function(run.trained)
    np.testing.assert_allclose(np.asarray(embed(views)), run.trained.embed_fn.embed_views(views),
                               atol=1e-6)


def test_the_model_and_its_json_state_the_preprocessing(run):
    embed_fn = run.trained.embed_fn
    with open(export.description_path(run.model_path)) as f:
        written = json.load(f)
    assert written == run.description
    assert written["input"] == {"name": "views", "shape": ["N", 16, 16, 3], "dtype": "uint8",
                                "layout": written["input"]["layout"]}
    assert "NHWC" in written["input"]["layout"] and "RGB" in written["input"]["layout"]
    pre = written["preprocessing"]
    assert (pre["resize_shorter_side"], pre["center_crop"]) == (16, 16)
    assert "bilinear" in pre["interpolation"] and pre["mean"] == [0.485, 0.456, 0.406]
    assert pre["std"] == [0.229, 0.224, 0.225]  # torchvision's ImageNet constants
    assert written["slices"] == {"epoch": embed_fn.epoch, "step": embed_fn.step, "blocks": 2}
    assert written["compute_dtype"] == "float32"

    meta = _session(run.model_path).get_modelmeta()
    assert "Resize(16)" in meta.description and "CenterCrop(16)" in meta.description
    assert json.loads(meta.custom_metadata_map["dnc_jax.preprocessing"]) == pre
    assert json.loads(meta.custom_metadata_map["dnc_jax.input"]) == written["input"]


def test_a_fixed_batch_size(run):
    path = str(run.root / "fixed.onnx")
    description = export.export_onnx(run.workdir, path, batch_size=3)
    assert description["input"]["shape"] == [3, 16, 16, 3]
    session = _session(path)
    assert session.get_inputs()[0].shape == [3, 16, 16, 3]
    assert _max_difference(session, _photo_views(run.trained.config), run.trained.embed_fn) \
        < TOLERANCE
    with pytest.raises(Exception, match="dimension|shape"):
        session.run(None, {"views": _random_views(2, 16)})


def test_a_bfloat16_run_exports_in_float32(run):
    # Same weights, config saying bfloat16: the graph still computes in float32, so it gives
    # the float32 embedding of the original run.
    workdir = str(run.root / "bf16_run")
    shutil.copytree(run.workdir, workdir)
    config_path = os.path.join(workdir, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["dtype"] = "bfloat16"
    with open(config_path, "w") as f:
        json.dump(config, f)
    path = str(run.root / "bf16.onnx")
    description = export.export_onnx(workdir, path)
    assert (description["trained_dtype"], description["compute_dtype"]) == ("bfloat16",
                                                                            "float32")
    views = _random_views(4, 16, seed=1)
    assert _max_difference(_session(path), views, run.trained.embed_fn) < TOLERANCE


def test_the_command_writes_the_model_and_its_description(run):
    out = str(run.root / "cli" / "model.onnx")
    proc = subprocess.run(
        [sys.executable, "-m", "dnc_jax.inference.export", f"--workdir={run.workdir}",
         f"--out={out}"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout
    assert "host preprocessing: RGB image" in proc.stdout and "Resize(16)" in proc.stdout
    assert "input  views: uint8 ['N', 16, 16, 3]" in proc.stdout
    with open(export.description_path(out)) as f:
        assert json.load(f)["input"]["shape"] == ["N", 16, 16, 3]
    assert not [name for name in os.listdir(os.path.dirname(out)) if "partial" in name]
    views = _random_views(3, 16, seed=2)
    np.testing.assert_allclose(_session(out).run(None, {"views": views})[0],
                               _session(run.model_path).run(None, {"views": views})[0])


def test_the_command_without_a_run_exits_2_with_one_line(tmp_path):
    missing = tmp_path / "no_such_run"
    proc = subprocess.run(
        [sys.executable, "-m", "dnc_jax.inference.export", f"--workdir={missing}",
         f"--out={tmp_path / 'model.onnx'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"dnc_jax: run folder not found: {missing} does not exist"]
    assert not os.path.exists(tmp_path / "model.onnx")


def test_a_run_without_checkpoint_is_a_restore_error(run, tmp_path):
    workdir = tmp_path / "fresh"
    workdir.mkdir()
    shutil.copy(os.path.join(run.workdir, "config.json"), workdir)
    with pytest.raises(RestoreError) as raised:
        export.export_onnx(str(workdir), str(tmp_path / "model.onnx"))
    assert "\n" not in str(raised.value)
    assert not os.path.exists(tmp_path / "model.onnx")


def test_without_the_exporter_the_error_says_what_to_install(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "jax2onnx", None)  # `import jax2onnx` now fails
    with pytest.raises(export.ExporterMissing, match=r"pip install --no-deps \"jax2onnx"):
        export.export_onnx(run.workdir, str(tmp_path / "model.onnx"))

"""The package's ownership holds: using a trained model imports nothing of training."""
import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["dnc_jax.restore", "dnc_jax.evaluate", "dnc_jax.embed",
                                    "dnc_jax.search"])
def test_inference_modules_do_not_import_training(module):
    # A fresh interpreter: this test process has imported dnc_jax.train through other tests.
    code = (f"import {module}, sys; "
            f"bad = [m for m in ('dnc_jax.train', 'dnc_jax.steps', 'dnc_jax.plots', "
            f"'dnc_jax.run_guard') if m in sys.modules]; "
            f"assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr[-2000:]


def test_restore_uses_a_trained_model_without_the_trainer():
    """What load_trained pulls in is the model, the checkpoint reader and the embedding pass."""
    code = ("import dnc_jax.restore, sys; "
            "assert 'dnc_jax.embedding' in sys.modules and 'dnc_jax.checkpoint' in sys.modules; "
            "assert 'dnc_jax.losses' not in sys.modules, 'losses'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("tool", ["dnc_jax.evaluate", "dnc_jax.embed", "dnc_jax.search"])
def test_every_tool_tells_a_user_error_in_one_line(tool, tmp_path):
    """The shared start-up (`dnc_jax.cli`): a UserError is one line on stderr, exit status 2."""
    missing = tmp_path / "no-such-run"
    args = {"dnc_jax.evaluate": [],
            "dnc_jax.embed": [f"--images={tmp_path}", f"--out={tmp_path / 'e.npy'}"],
            "dnc_jax.search": [f"--index={tmp_path / 'e.npy'}", f"--query={tmp_path / 'q.jpg'}"]}
    result = subprocess.run([sys.executable, "-m", tool, f"--workdir={missing}", *args[tool]],
                            capture_output=True, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dnc_jax: "), result.stderr[-2000:]

"""The command line as a user meets it: one line for each mistake (nothing written), a run
killed before its first checkpoint restarted cleanly, and the installed package's commands."""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import sysconfig
import time

import pytest

from dnc_jax.training import train
from dnc_jax.errors import DataError
from tests.helpers import tiny_config

REPO = pathlib.Path(__file__).resolve().parent.parent
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def _main(*args, cwd=REPO, timeout=300):
    return subprocess.run([sys.executable, "-m", "dnc_jax.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=ENV)


def _one_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def test_a_mistyped_config_key_is_one_line_with_the_nearest_key(tmp_path):
    workdir = tmp_path / "run"
    line = _one_line(_main("--config=configs/demo.py", f"--workdir={workdir}",
                           "--config.data.batchsize=3"))
    assert line == ("dnc_jax: --config.data.batchsize: the config has no key "
                    "'data.batchsize'; did you mean --config.data.batch_size?")
    line = _one_line(_main("--config=configs/demo.py", f"--workdir={workdir}",
                           "--config.data.batch_size=three"))
    assert "--config.data.batch_size=three" in line
    assert not workdir.exists()


@pytest.mark.parametrize("args, expected", [
    (["--config=nope.py"], "--config=nope.py: no such config file"),
    (["--config={bad}"], "cannot load the --config file: SyntaxError: invalid syntax"),
    (["--config=configs/demo.py", "--config.loss.name=foo"], "loss.name='foo' is not one of"),
    (["--config=configs/demo.py", "--config.model.name=resnet9"], "model.name must be one of"),
    (["--config=configs/demo.py", "--config.divide.num_learners=0"],
     "divide.num_learners=0 must be at least 1"),
    (["--config=configs/demo.py", "--config.dtype=fp16"], "dtype must be 'auto'"),
    (["--config=configs/demo.py", "--config.data.batch_size=30"],
     "data.batch_size=30 is not a whole number of classes of data.samples_per_class=4"),
    (["--config=configs/demo.py", "--config.data.samples_per_class=1"],
     "data.samples_per_class=1 must be an integer >= 2: a class needs a positive pair"),
])
def test_each_bad_config_is_one_line_before_anything_is_written(tmp_path, args, expected):
    bad = tmp_path / "bad_config.py"
    bad.write_text("def get_config(:\n")
    workdir = tmp_path / "run"
    line = _one_line(_main(*[a.format(bad=bad) for a in args], f"--workdir={workdir}"))
    assert line.startswith("dnc_jax: ") and expected in line, line
    assert not workdir.exists()


def test_a_data_set_too_small_for_k_says_the_largest_k_that_works(tmp_path):
    """Two training classes (four glyph classes, half of them train) and K=4."""
    config = tiny_config()
    config.data.cache_dir = str(tmp_path / "cache")
    config.data.glyphs.max_classes = 4
    config.divide.num_learners = 4
    config.data.batch_size = 64
    workdir = tmp_path / "run"
    with pytest.raises(DataError, match=r"the training split has 2 classes with at least two "
                                        r"images, too few for divide.num_learners=4 .*"
                                        r"--config.divide.num_learners=1 or less"):
        train.train_and_evaluate(config, str(workdir))
    assert not workdir.exists()
    line = _one_line(_main("--config=tests/helpers.py", f"--workdir={workdir}",
                           f"--config.data.cache_dir={tmp_path / 'cache'}",
                           "--config.data.glyphs.max_classes=4",
                           "--config.divide.num_learners=4", "--config.data.batch_size=64"))
    assert line.startswith("dnc_jax: the training split has 2 classes")
    assert not workdir.exists()


def _metric_epochs(workdir):
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines() if line.strip()
            and line.endswith("}")]


def test_a_run_killed_before_its_first_checkpoint_lists_each_epoch_once(tmp_path):
    workdir = tmp_path / "run"
    args = [sys.executable, "-m", "dnc_jax.main", "--config=tests/helpers.py",
            f"--workdir={workdir}", f"--config.data.cache_dir={tmp_path / 'cache'}",
            "--config.num_epochs=2"]
    for _ in range(2):
        proc = subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while -1 not in _metric_epochs(workdir) and proc.poll() is None \
                and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # right after the untrained row: no checkpoint yet
        proc.wait()
        steps = workdir / "checkpoints"
        assert not steps.exists() or not [p for p in steps.iterdir() if p.name.isdigit()]
        assert _metric_epochs(workdir) == [-1]
    proc = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _metric_epochs(workdir) == [-1, 0, 1]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["last_epoch"]["epoch"] == 1


def _fresh_venv_with_the_wheel(tmp_path) -> pathlib.Path:
    """A new venv outside the repository with the built wheel installed. Its dependencies are
    those of the interpreter running the tests (a .pth line to its site-packages): CI installs
    them once from requirements.txt; downloading them again here would test the registry."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), str(REPO)], check=True,
                   capture_output=True, text=True, timeout=300, cwd=tmp_path)
    (wheel,) = wheels.glob("dnc_jax-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; "
                           "print(sysconfig.get_paths()['purelib'])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    (pathlib.Path(site) / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True, text=True,
                   timeout=300)
    return venv


def test_the_installed_package_trains_and_embeds_outside_the_repository(tmp_path):
    venv = _fresh_venv_with_the_wheel(tmp_path)
    command = str(venv / "bin" / "dnc-jax")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {**ENV, "PYTHONPATH": ""}
    run = lambda *a, **k: subprocess.run([command, *a], cwd=outside, env=env,  # noqa: E731
                                         capture_output=True, text=True, timeout=600, **k)
    help_ = run("--help")
    assert help_.returncode == 0 and "train" in help_.stdout and "export" in help_.stdout
    train_help = run("train", "--help")  # absl prints the flags, then exits 1
    assert train_help.returncode in (0, 1) and "Traceback" not in train_help.stderr
    assert "--workdir" in train_help.stdout + train_help.stderr
    assert "--config" in train_help.stdout + train_help.stderr
    located = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import dnc_jax; print(dnc_jax.__file__)"], cwd=outside, env=env,
                             capture_output=True, text=True)
    assert str(venv) in located.stdout, located  # the installed copy, not the checkout

    # A shipped config by name, made tiny by overrides, from a folder that is not the repo.
    tiny = ["--config.num_epochs=1", "--config.progress=False",
            f"--config.data.cache_dir={tmp_path / 'cache'}", "--config.data.image_size=16",
            "--config.data.view_workers=0", "--config.data.glyphs.max_classes=8",
            "--config.augment.image_size=16", "--config.model.width=8",
            "--config.model.embedding_dim=16", "--config.divide.num_learners=2",
            "--config.data.batch_size=32", "--config.data.eval_batch_size=64",
            "--config.divide.kmeans_iterations=5", "--config.eval.block_size=64"]
    trained = run("train", "--config=demo", f"--workdir={outside / 'run'}", *tiny)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (outside / "run" / "summary.json").exists()

    images = outside / "images"
    images.mkdir()
    from sklearn.datasets import load_sample_images
    from PIL import Image

    for i, photo in enumerate(load_sample_images().images):
        Image.fromarray(photo).save(images / f"{i}.jpg")
    embedded = run("embed", f"--workdir={outside / 'run'}", f"--images={images}",
                   f"--out={outside / 'emb.npy'}")
    assert embedded.returncode == 0, embedded.stderr[-3000:]
    import numpy as np

    assert np.load(outside / "emb.npy").shape == (2, 16)
    assert len((outside / "emb.paths.txt").read_text().splitlines()) == 2
    shutil.rmtree(tmp_path / "wheels")


def test_shipped_configs_resolve_by_name_and_files_win(tmp_path, monkeypatch):
    from dnc_jax import commands

    shipped = commands.shipped_config("cvpr/sop")
    assert shipped and shipped.endswith(os.path.join("configs", "cvpr", "sop.py"))
    assert commands.shipped_config("pami/_unpublished") is None  # helpers are not configs
    assert commands.resolve_config_flag(["--config=demo:x", "--y"]) == [
        f"--config={commands.shipped_config('demo')}:x", "--y"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").write_text("")  # a file of the user's own is never replaced
    assert commands.resolve_config_flag(["--config", "demo"]) == ["--config", "demo"]


def test_an_unknown_command_is_one_line(capsys):
    from dnc_jax import commands

    with pytest.raises(SystemExit) as exit_:
        commands.main(["trian"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["dnc_jax: unknown command 'trian'; one of train, evaluate, embed, search, "
                   "export, backbone (dnc-jax --help)"]

"""The persistent compilation cache of runs (`compilation_cache_dir`): a second start of the
same config compiles nothing, it loads every program the first start wrote."""
import os
import subprocess
import sys

from dnc_jax import compile_cache

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _entries(path):
    """{entry: (size, mtime)}: a program compiled again would be written again (a new mtime)."""
    if not os.path.isdir(path):
        return {}
    return {name: (os.stat(os.path.join(path, name)).st_size,
                   os.stat(os.path.join(path, name)).st_mtime_ns)
            for name in os.listdir(path) if not name.endswith("-atime")}


def _run(tmp_path, workdir, cache):
    env = {k: v for k, v in os.environ.items() if k != compile_cache.ENV}
    # Every program is written, however fast it compiles (JAX's default skips those < 1 s).
    env.update(JAX_PLATFORMS="cpu", JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    done = subprocess.run(
        [sys.executable, "-m", "dnc_jax.main", "--config=tests/helpers.py",
         f"--workdir={tmp_path / workdir}", "--config.num_epochs=1",
         f"--config.data.cache_dir={tmp_path / 'data'}",
         f"--config.compilation_cache_dir={cache}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_second_start_loads_every_program_the_first_wrote(tmp_path):
    cache = tmp_path / "xla"
    _run(tmp_path, "first", cache)
    written = _entries(cache)
    assert len(written) >= 3  # at least the train step, the embedding step and retrieval
    _run(tmp_path, "second", cache)
    assert _entries(cache) == written  # every lookup a hit: nothing compiled or written again


def test_evaluate_uses_the_run_s_cache(tmp_path):
    cache = tmp_path / "xla"
    _run(tmp_path, "run", cache)
    for name in os.listdir(cache):  # emptied: what evaluate finds there, it wrote
        os.remove(cache / name)
    env = {k: v for k, v in os.environ.items() if k != compile_cache.ENV}
    env.update(JAX_PLATFORMS="cpu", JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")

    def evaluate():
        done = subprocess.run([sys.executable, "-m", "dnc_jax.inference.evaluate",
                               f"--workdir={tmp_path / 'run'}"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]

    evaluate()
    written = _entries(cache)
    assert len(written) >= 2  # at least the embedding step and retrieval
    evaluate()
    assert _entries(cache) == written


def test_off_and_the_environment_win(tmp_path, monkeypatch):
    monkeypatch.delenv(compile_cache.ENV, raising=False)
    assert compile_cache.enable("") is None
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "env"))
    assert compile_cache.enable(str(tmp_path / "config")) == str(tmp_path / "env")
    assert not (tmp_path / "config").exists()

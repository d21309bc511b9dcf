"""Seconds from a run's start to its first results, first start against second start, with the
persistent compilation cache (`compilation_cache_dir`) that the second start reads.

    python bench/startup.py                       # the CPU demo, 1 epoch, a fresh cache
    python bench/startup.py --config=configs/sop.py --set data.root=/data/Stanford_Online_Products

Each start is `python -m dnc_jax.main` in its own process and workdir, timed from the process's
launch to the first console line of each kind: the untrained evaluation (the embedding pass
and retrieval compiled and run) and the first epoch's line (the train step compiled and an
epoch run), and to its exit. The first start compiles and writes the cache, the second loads it;
a third start with the cache off (`--config.compilation_cache_dir=`) is the reference.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKERS = {"untrained evaluation": " untrained ", "first epoch": "epoch 0 "}


def timed_start(config, workdir, cache, sets) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-u", "-m", "dnc_jax.main", f"--config={config}",
           f"--workdir={workdir}", "--config.num_epochs=1", "--config.progress=False",
           f"--config.compilation_cache_dir={cache}", *[f"--config.{s}" for s in sets]]
    start = time.perf_counter()
    seen = {}
    with subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            for name, marker in MARKERS.items():
                if name not in seen and marker in line:
                    seen[name] = time.perf_counter() - start
        proc.wait()
    if proc.returncode != 0:
        raise SystemExit(f"bench/startup.py: {' '.join(cmd)} failed (exit {proc.returncode})")
    seen["exit"] = time.perf_counter() - start
    return seen


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/demo.py")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    scratch = tempfile.mkdtemp(prefix="dnc_jax-startup-")
    try:
        cache = os.path.join(scratch, "xla")
        rows = [("first start (compiles, writes the cache)", cache),
                ("second start (loads the cache)", cache),
                ("cache off", "")]
        results = [(name, timed_start(args.config, os.path.join(scratch, f"run{i}"), c,
                                      args.set)) for i, (name, c) in enumerate(rows)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"Seconds from launch: {args.config}, 1 epoch ({os.cpu_count()} CPUs)\n")
    print("| start | untrained evaluation | first epoch | exit |")
    print("|---|---|---|---|")
    for name, seen in results:
        print(f"| {name} | " + " | ".join(f"{seen.get(k, float('nan')):.1f}" for k in
                                          ("untrained evaluation", "first epoch", "exit")) + " |")


if __name__ == "__main__":
    main()

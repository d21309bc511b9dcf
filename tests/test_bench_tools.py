"""The performance benches' own helpers: what they feed the code under test must stay valid.

A bench that silently stopped applying its overrides (a key renamed in the configs) would time
another run than the one BENCHMARKS.md describes; one whose synthetic features were not unit
rows would time another k-means.
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np

from dnc_jax import api, defaults

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def bench_module(name):
    """A bench script as a module, loaded from its path (bench/ is not put on sys.path, where
    its recluster.py or evaluate.py would shadow other modules for the whole session)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}",
                                                  os.path.join(BENCH, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


loop_overhead = bench_module("loop_overhead")
recluster_bench = bench_module("recluster")
sop_scale = bench_module("sop_scale")


def test_like_sop_scale_applies_every_override_of_the_printed_command():
    name, overrides = loop_overhead.like_sop_scale()
    assert len(overrides) == len(sop_scale.OVERRIDES)
    config = defaults.complete(api.get_config(name, **overrides))
    flat = {}

    def walk(node, prefix=""):
        for key, value in node.items():
            if hasattr(value, "items"):
                walk(value, prefix + key + ".")
            else:
                flat[prefix + key] = value

    walk(config.to_dict())
    for flag in sop_scale.OVERRIDES:  # the command line's text, read back from the config
        key, text = flag.removeprefix("--config.").split("=", 1)
        assert str(flat[key]) == text or flat[key] == loop_overhead._value(text), key
    assert config.data.name == "sop" and config.divide.num_learners == 8


def test_cpu_seconds_reads_this_process_like_the_os():
    import time

    start_os, start_proc = os.times(), loop_overhead.cpu_seconds([os.getpid()])
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    end_os, end_proc = os.times(), loop_overhead.cpu_seconds([os.getpid()])
    by_os = (end_os.user + end_os.system) - (start_os.user + start_os.system)
    assert abs((end_proc - start_proc) - by_os) < 0.05


def test_recluster_bench_features_are_unit_float32_rows_of_a_mixture():
    x = recluster_bench.mixture(1000, 64, 8, np.random.default_rng(3), chunk=300)  # 300 does
    assert x.dtype == np.float32 and x.shape == (1000, 64)                         # not divide n
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    assert np.all(np.abs(x).sum(axis=1) > 0) and len(np.unique(x[:, 0])) == 1000
    np.testing.assert_array_equal(
        x, recluster_bench.mixture(1000, 64, 8, np.random.default_rng(3), chunk=300))

"""The performance benches' own helpers: what they feed the code under test must stay valid.

A bench that silently stopped applying its overrides (a key renamed in the configs) would time
another run than the one BENCHMARKS.md describes; one whose synthetic features were not unit
rows would time another k-means.
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

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


def _train_step_module():
    """bench/train_step.py as a module; it imports its neighbour bench/flops.py as `flops`,
    which is put in sys.modules only while it loads."""
    import sys

    spec = importlib.util.spec_from_file_location("flops", os.path.join(BENCH, "flops.py"))
    flops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(flops)
    saved = sys.modules.get("flops")
    sys.modules["flops"] = flops
    try:
        return bench_module("train_step")
    finally:
        if saved is None:
            del sys.modules["flops"]
        else:
            sys.modules["flops"] = saved


def test_train_step_backbones_are_the_configs_networks_and_pass_their_checks():
    from dnc_jax.configs.vit import _recipe
    from dnc_jax.models.embedder import check_model_config

    train_step = _train_step_module()
    assert train_step.BACKBONES == ("resnet50", *_recipe.BACKBONES, "convnext_tiny")
    for name in train_step.BACKBONES:
        config = train_step.backbone_config(name)
        check_model_config(config.model, 224)  # 224 tiles into 14 and 16 px patches
        if name in _recipe.BACKBONES:  # the ViT configs' network and optimiser
            from dnc_jax.configs.vit import sop

            assert config.model.to_dict() == sop.get_config(name).model.to_dict()
            assert config.optim.to_dict() == sop.get_config(name).optim.to_dict()
        else:
            assert config.model.name == name


def test_train_step_times_backbones_in_turn_resnet50_first_with_the_ratio(monkeypatch, capsys):
    import sys

    train_step = _train_step_module()
    real = train_step.backbone_config

    def tiny(name):  # each backbone's config and optimiser, on a network small enough for CPU
        config = real(name)
        config.model.name = {"resnet50": "resnet_tiny", "convnext_tiny": "convnext_micro"}.get(
            config.model.name, "vit_micro")
        config.model.width = 8
        config.model.stem = "small"
        return config

    monkeypatch.setattr(train_step, "backbone_config", tiny)
    monkeypatch.setattr(sys, "argv", [
        "train_step.py", "--backbone=clip_b16,resnet50,dinov2_s14_reg4", "--batch=8",
        "--learners=2", "--steps=1", "--image_size=16", "--dtype=float32",
        "--schedule=round_robin"])
    train_step.main()
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()
            if line.startswith("|")]
    assert len(rows) == 2 + 3 and rows[0][-1].strip() == "time / ResNet-50's"
    assert [r[1].strip() for r in rows[2:]] == [
        "resnet50 (resnet_tiny)", "clip_b16 (vit_micro)", "dinov2_s14_reg4 (vit_micro)"]
    assert all(len(r) == len(rows[0]) for r in rows)
    assert rows[2][-1].strip() == "1.00" and all(float(r[-1]) > 0 for r in rows[3:])
    monkeypatch.setattr(sys, "argv", ["train_step.py", "--backbone=resnet50,vit_l16"])
    with pytest.raises(SystemExit) as e:
        train_step.main()
    assert e.value.code == 2 and "unknown vit_l16; one of resnet50, dino_s16" in \
        capsys.readouterr().err

"""Retrieval metrics and protocols give identical results on 1 device and on 8 simulated ones.

One subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8 computes every case with
the inputs sharded over the ('data',) mesh (or placed by the mesh argument); this process computes
the same cases on its single device; the two JSON dumps must be equal, bit for bit.
"""
import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def compute_cases(mesh):
    from dnc_jax import parallel
    from dnc_jax.evaluation import protocols, retrieval
    from tests.test_retrieval import tied_embeddings

    def shard(x):  # as the embedding pass leaves them: rows over the devices
        return x if mesh is None else parallel.put_batch(x, mesh)

    rng = np.random.default_rng(0)
    x_tied = tied_embeddings(rng, 96, dim=2, high=3)
    y_tied = rng.integers(0, 10, size=96)
    xq = rng.normal(size=(96, 16)).astype(np.float32)
    xg = rng.normal(size=(80, 16)).astype(np.float32)
    yq, yg = rng.integers(0, 7, size=96), rng.integers(0, 6, size=80)
    x_odd, y_odd = tied_embeddings(rng, 53, dim=3, high=3), rng.integers(0, 6, size=53)

    cases = {}
    for block in (16, 7):  # 7 becomes 8 on 8 devices: a different split, the same rows
        cases[f"loo_ties_block{block}"] = retrieval.retrieval_metrics(
            shard(x_tied), y_tied, ks=(1, 2, 4, 8), block_size=block)
    stats = retrieval.query_stats(shard(x_tied), y_tied, k=8, block_size=16)
    cases["loo_ties_stats"] = [a.tolist() for a in stats]
    cases["query_gallery_floats"] = retrieval.retrieval_metrics(
        shard(xq), yq, shard(xg), yg, ks=(1, 5, 10), block_size=24)
    # Host inputs, mesh given explicitly: 53 queries pad the last 16-block across 8 devices.
    cases["odd_size_host_input"] = retrieval.retrieval_metrics(
        x_odd, y_odd, ks=(1, 4), block_size=16, mesh=mesh)
    vid = protocols.evaluate("vehicleid", {"test_small": (shard(x_tied), y_tied)},
                             gallery_draws=3, map_at_r=True, block_size=32, mesh=mesh)
    cases["vehicleid"] = vid.metrics
    return cases


def _child():
    import jax

    from dnc_jax import parallel
    from dnc_jax.evaluation import retrieval

    mesh = parallel.make_mesh()
    assert jax.device_count() == 8
    x = parallel.put_batch(np.zeros((16, 2), np.float32), mesh)
    assert retrieval._mesh_of(x) is mesh  # a sharded input brings its mesh along
    # The program really runs over the 8 devices: its outputs come back replicated on all.
    out = retrieval._query_stats_program(
        x, np.zeros(16, np.int32), np.ones(16, np.int32), x, np.zeros(16, np.int32),
        k=2, block=8, leave_one_out=True, map_at_r=True, mesh=mesh)
    assert len(out[0].sharding.device_set) == 8
    # Each device scores only its own rows: (block / 8) x G, never the whole block x G.
    hlo = retrieval._query_stats_program.lower(
        x, np.zeros(16, np.int32), np.ones(16, np.int32), np.zeros((40, 2), np.float32),
        np.zeros(40, np.int32), k=2, block=16, leave_one_out=False, map_at_r=True,
        mesh=mesh).compile().as_text()
    assert "f32[2,40]" in hlo and "f32[16,40]" not in hlo
    print(json.dumps(compute_cases(mesh)))


def test_one_and_eight_devices_agree_exactly():
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO,
           "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    eight = json.loads(proc.stdout.strip().splitlines()[-1])
    one = json.loads(json.dumps(compute_cases(None)))
    assert eight.keys() == one.keys()
    for case in one:
        assert eight[case] == one[case], case


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    _child()

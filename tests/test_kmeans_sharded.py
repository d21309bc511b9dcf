"""k-means on data sharded over 8 simulated devices equals k-means on one device."""
import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    from dnc_jax.divide import kmeans
    assert jax.device_count() == 8
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4096, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    key = jax.random.key(3)
    one = kmeans.kmeans_jit(jax.device_put(x, jax.devices()[0]), 16, key, n_init=2,
                            max_iter=30, init="kmeans++")
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    sharded = jax.device_put(x, NamedSharding(mesh, P("data")))
    eight = kmeans.kmeans_jit(sharded, 16, key, n_init=2, max_iter=30, init="kmeans++")
    same = np.mean(np.asarray(one.assignment) == np.asarray(eight.assignment))
    rel = abs(float(one.inertia) - float(eight.inertia)) / float(one.inertia)
    print("agreement", same, "inertia_rel", rel)
    assert same == 1.0 and rel < 1e-5, (same, rel)
""")


def test_sharded_kmeans_equals_single_device():
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "agreement 1.0" in proc.stdout

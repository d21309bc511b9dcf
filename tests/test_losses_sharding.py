"""Every loss gives the same value and gradients for one global batch on 1 device and sharded over 8
simulated devices (docs/decisions.md: losses see the global batch, so mining does
not depend on the device count). One subprocess runs every loss; run this file directly to debug
it."""
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]

# One configuration per loss and per miner family.
CASES = {
    "margin_distance_weighted": dict(name="margin"),
    "margin_easy_peasy": dict(name="margin", miner="easy_peasy", beta_mode="per_class"),
    "triplet_semi_hard": dict(name="triplet", miner="semi_hard"),
    "triplet_batch_hard": dict(name="triplet", miner="batch_hard"),
    "triplet_all": dict(name="triplet", miner="all"),
    "contrastive": dict(name="contrastive"),
    "multi_similarity": dict(name="multi_similarity"),
    "proxy_anchor": dict(name="proxy_anchor"),
    "normalized_softmax": dict(name="normalized_softmax"),
    "npairs": dict(name="npairs"),
}


def test_losses_match_on_one_and_eight_devices():
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
           "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    proc = subprocess.run([sys.executable, __file__], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all losses match" in proc.stdout


def _main():
    import jax
    import ml_collections
    import numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec

    from dnc_jax import defaults, losses

    assert jax.device_count() == 8, jax.devices()
    b, d, k_max, num_classes = 32, 8, 4, 16
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(num_classes), 2).astype(np.int32)  # 16 classes x 2
    learners = labels % 3  # three active learners of four, interleaved across the shards
    valid = np.arange(b) < b - 3
    masks = np.zeros((k_max, d), np.float32)
    for k in range(3):
        masks[k, k * 3:(k + 1) * 3] = 1.0
    view = rng.normal(size=(b, d)) * masks[learners]
    emb = (view / np.linalg.norm(view, axis=1, keepdims=True)).astype(np.float32)
    n_dim = (masks > 0).sum(1)[learners].astype(np.float32)

    fns, params = {}, {}
    for case, overrides in CASES.items():
        config = ml_collections.ConfigDict({**defaults.get_config().loss.to_dict(),
                                            **overrides})
        fns[case] = losses.make_loss(config, k_max, samples_per_class=2)
        params[case] = losses.init_loss_params(config, num_classes, d, jax.random.key(1))

    @jax.jit
    def all_losses(emb, params, labels, learners, valid, masks, n_dim, key):
        out = {}
        for case, fn in fns.items():
            def objective(e, p, fn=fn):
                return fn(e, labels, learners, valid, key, p, n_dim=n_dim, masks=masks)
            (loss, aux), grads = jax.value_and_grad(objective, argnums=(0, 1),
                                                    has_aux=True)(emb, params[case])
            out[case] = {"loss": loss, "per_learner": aux["per_learner"], "grads": grads}
        return out

    key = jax.random.key(2)
    args = (emb, params, labels, learners, valid, masks, n_dim)
    single = jax.device_get(all_losses(*jax.device_put(args, jax.devices()[0]), key))

    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    batch, replicated = NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh,
                                                                                  PartitionSpec())
    placed = [jax.device_put(x, batch if i in (0, 2, 3, 4, 6) else replicated)
              for i, x in enumerate(args)]
    assert len(placed[0].sharding.device_set) == 8
    sharded = jax.device_get(all_losses(*placed, key))

    for case in CASES:
        for (path, a), b_ in zip(jax.tree_util.tree_leaves_with_path(single[case]),
                                 jax.tree.leaves(sharded[case])):
            np.testing.assert_allclose(b_, a, rtol=2e-5, atol=2e-6,
                                       err_msg=f"{case} {jax.tree_util.keystr(path)}")
        assert single[case]["loss"] > 0, case
        print(f"{case}: {float(single[case]['loss']):.6f} == {float(sharded[case]['loss']):.6f}")
    print("all losses match")


if __name__ == "__main__":
    _main()

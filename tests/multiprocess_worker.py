"""Subprocess bodies for tests/test_multidevice_train.py: a few train steps of a tiny Trainer.

Run as a script, in one of two modes:

  python tests/multiprocess_worker.py meshes OUT.npz
      Under XLA_FLAGS=--xla_force_host_platform_device_count=8: the same steps on the 8-device
      mesh and on a 1-device mesh; saves both results.
  python tests/multiprocess_worker.py process COORDINATOR NUM_PROCESSES PROCESS_ID START.npz OUT.npz
      One process of a multi-process run on this machine (CPU collectives over gloo): joins
      the run, starts from the initial state saved in START.npz (a `meshes` output), trains on
      the global mesh feeding only its own rows; process 0 saves the result.

Every mode trains through `train.Trainer` (its jitted step with the real shardings and donation)
on batches placed with `parallel.put_rows`, exactly as `Trainer.train_epoch` places them.
"""
from __future__ import annotations

import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script: make `dnc_jax` and `tests` importable
    sys.path.insert(0, REPO)

NUM_STEPS = 2
NUM_LEARNERS = 2
NUM_IMAGES = 64  # the source the batches index into; 16 classes of 4 images


class RecordingRows:
    """An image source that counts the rows read, to check how much each process loads."""

    def __init__(self, array):
        self.array = array
        self.shape = array.shape
        self.rows_read = 0

    def __getitem__(self, rows):
        # A run of consecutive rows comes as a slice (parallel._take reads it in place).
        self.rows_read += (len(range(*rows.indices(len(self.array)))) if isinstance(rows, slice)
                           else np.atleast_1d(rows).size)
        return self.array[rows]


def tiny_training_data():
    """Deterministic images, labels and the rows of each step's global batch (4 per class)."""
    from dnc_jax.data.store.image_set import ImageSet

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (NUM_IMAGES, 16, 16, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(NUM_IMAGES // 4), 4).astype(np.int32)
    train_set = ImageSet(images=RecordingRows(images), labels=labels,
                         class_names=[str(c) for c in range(labels.max() + 1)])
    # Each step: 8 of the 16 classes, all 4 images of each, in a shuffled class order.
    step_rows = [np.concatenate([np.arange(4 * c, 4 * c + 4) for c in rng.permutation(16)[:8]])
                 for _ in range(NUM_STEPS)]
    return train_set, step_rows


def train_steps(mesh, initial_leaves=None) -> dict[str, np.ndarray]:
    """NUM_STEPS steps on `mesh`, from `Trainer.init_state` or from given initial state leaves.

    Returns `loss` and `grad_norm` per step, `param/<path>` and `init_param/<path>` per final
    and initial parameter, `init/<i>` per leaf of the initial train state (to start another run
    from), and `images_read` (the image rows this process loaded).
    """
    import jax

    from dnc_jax import parallel
    from dnc_jax.training import train
    from dnc_jax.divide import masks
    from dnc_jax.divide import schedule
    from tests.helpers import tiny_config

    config = tiny_config()
    config.divide.num_learners = NUM_LEARNERS
    train_set, step_rows = tiny_training_data()
    trainer = train.Trainer(config, {"train": train_set}, mesh)
    init_key = jax.random.key(config.seed)
    if initial_leaves is None:
        state = trainer.init_state(init_key)
    else:
        # The structure, without compiling the initialisation again (it costs as much as the
        # step, and processes other than 0 never hit JAX's persistent compilation cache: only
        # process 0 writes entries, under keys that differ per process).
        structure = jax.tree.structure(jax.eval_shape(trainer.init_state, init_key))
        state = parallel.put_replicated(jax.tree.unflatten(structure, initial_leaves), mesh)
    out = {f"init/{i}": np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(state))}
    for path, leaf in jax.tree_util.tree_leaves_with_path(state.params):
        out["init_param/" + jax.tree_util.keystr(path)] = np.asarray(leaf)
    phase = schedule.Phase(0, NUM_LEARNERS, False, False, False, False, False)
    phase_dev = parallel.put_replicated(masks.phase_arrays(config, phase), mesh)
    b = config.data.batch_size
    learners = np.repeat(np.arange(NUM_LEARNERS), b // NUM_LEARNERS).astype(np.int32)
    slots = np.arange(b)
    losses, grad_norms = [], []
    for rows in step_rows:
        batch = {  # as Trainer.train_epoch builds it
            "images": parallel.put_rows(train_set.images, rows, mesh),
            "labels": parallel.put_rows(train_set.labels, rows, mesh),
            "learners": parallel.put_rows(learners, slots, mesh),
            "valid": parallel.put_rows(np.ones(b, bool), slots, mesh),
        }
        state, metrics = trainer.train_step(state, batch, phase_dev, jax.random.key(1))
        losses.append(float(metrics["loss"]))
        grad_norms.append(float(metrics["grad_norm"]))
    # The parameters must span the whole mesh, or the comparison would prove nothing.
    for leaf in jax.tree.leaves(state.params):
        assert leaf.sharding.device_set == set(mesh.devices.flat), leaf.sharding
    out.update(loss=np.array(losses), grad_norm=np.array(grad_norms),
               images_read=np.array(train_set.images.rows_read))
    for path, leaf in jax.tree_util.tree_leaves_with_path(state.params):
        out["param/" + jax.tree_util.keystr(path)] = np.asarray(leaf)  # replicated: readable
    return out


def initial_leaves(result, prefix=""):
    """The `{prefix}init/<i>` entries of a (saved) `train_steps` result, in leaf order."""
    count = sum(k.startswith(prefix + "init/") for k in result)
    return [result[f"{prefix}init/{i}"] for i in range(count)]


def one_device_mesh():
    import jax
    from jax.sharding import AxisType

    from dnc_jax import parallel

    return jax.make_mesh((1,), (parallel.DATA_AXIS,), devices=jax.devices()[:1],
                         axis_types=(AxisType.Auto,))


def _meshes(out_path):
    import jax

    from dnc_jax import parallel

    assert jax.device_count() == 8, jax.devices()
    eight = train_steps(parallel.make_mesh())
    one = train_steps(one_device_mesh(), initial_leaves(eight))
    np.savez(out_path, **{f"eight/{k}": v for k, v in eight.items()},
             **{f"one/{k}": v for k, v in one.items()})


def _process(coordinator, num_processes, process_id, start_path, out_path):
    import jax

    # JAX's CPU client needs a collectives implementation to run programs across processes;
    # gloo (TCP) ships with jaxlib and is the default in jax 0.10, named here so that a change
    # of default cannot turn this into a hang or a "collectives not implemented" error.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    from dnc_jax import parallel

    # Through the project's entry point, as `--coordinator_address` etc. reach it.
    parallel.initialize_distributed(coordinator, num_processes, process_id)
    assert jax.process_count() == num_processes and jax.process_index() == process_id
    mesh = parallel.make_mesh()
    result = train_steps(mesh, initial_leaves(np.load(start_path), prefix="one/"))
    # put_rows made this process read only the rows its own devices hold.
    from tests.helpers import tiny_config

    global_rows = NUM_STEPS * tiny_config().data.batch_size
    share = global_rows * jax.local_device_count() // jax.device_count()
    assert int(result["images_read"]) == share, (int(result["images_read"]), share)
    if parallel.is_main_process():
        np.savez(out_path, **result)
    jax.distributed.shutdown()


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "meshes":
        _meshes(*args)
    elif mode == "process":
        _process(args[0], int(args[1]), int(args[2]), args[3], args[4])
    else:
        raise SystemExit(f"unknown mode {mode!r}")

"""The device mesh, shardings and host -> device batch placement.

Data parallelism is `jax.jit` over a 1-D mesh `('data',)` of every global device: batches are
sharded on their leading axis, the train state is replicated, and XLA inserts the gradient
all-reduce. This is what `pmap` is built on in current JAX (pmap is in maintenance mode), and
because each loss sees the *global* batch, mining and loss values do not depend on the number
of devices. The axis type is Auto: Explicit mode rejects the all-pairs similarity matrices that
metric losses build on a batch-sharded array (docs/decisions.md).
"""
from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from dnc_jax.errors import ConfigError

DATA_AXIS = "data"


def make_mesh() -> jax.sharding.Mesh:
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def batch_sharding(mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_global_batch(batch_size: int, mesh, key: str = "data.batch_size") -> None:
    devices = mesh.devices.size
    if batch_size % devices:
        raise ConfigError(f"{key}={batch_size} must be divisible by the {devices} devices")


def put_batch(tree, mesh):
    """Places host numpy arrays holding the *global* batch, sharded on the leading axis.

    Every process holds the same global index list (the sampler is deterministic), so each
    one contributes the rows of its own addressable devices.
    """
    sharding = batch_sharding(mesh)

    def place(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(place, tree)


def put_replicated(tree, mesh):
    return jax.device_put(tree, replicated(mesh))


def put_rows(source, rows, mesh):
    """The global batch `source[rows]`, gathering on each host only its own devices' rows.

    `source` is any array-like indexed by a row list (e.g. a memory-mapped uint8 array),
    so a host never reads images that other hosts feed.
    """
    rows = np.asarray(rows)
    shape = (len(rows),) + tuple(source.shape[1:])
    return jax.make_array_from_callback(
        shape, batch_sharding(mesh), lambda index: _take(source, rows[index[0]]))


def _take(source, rows):
    """source[rows]; consecutive rows (an embedding pass's batches) as a slice, which the copy
    to the device reads in place instead of a gathered copy first."""
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 \
            and np.array_equal(rows, np.arange(rows[0], rows[-1] + 1)):
        return np.asarray(source[rows[0]:rows[-1] + 1])
    return np.asarray(source[rows])


def local_span(num_rows: int, mesh) -> tuple[int, int]:
    """[lo, hi): the rows of a global batch of `num_rows` that this process's devices hold.

    The mesh orders devices by process, so they are one contiguous block; a host computes only
    those rows (its share of the decoding, for host-side views).
    """
    index_map = batch_sharding(mesh).addressable_devices_indices_map((num_rows,))
    spans = [range(num_rows)[index[0]] for index in index_map.values()]
    lo, hi = min(r.start for r in spans), max(r.stop for r in spans)
    if sum(len(r) for r in set(spans)) != hi - lo:
        raise ValueError(f"this process's rows of a batch of {num_rows} are not contiguous")
    return lo, hi


def put_local(local, lo: int, num_rows: int, mesh):
    """The global batch of `num_rows` rows from `local`, this process's rows [lo, hi) of it."""
    local = np.asarray(local)

    def rows(index):
        span = range(num_rows)[index[0]]
        return local[span.start - lo:span.stop - lo]

    return jax.make_array_from_callback((num_rows,) + local.shape[1:], batch_sharding(mesh),
                                        rows)


def is_main_process() -> bool:
    return jax.process_index() == 0


def _launched_by_a_cluster() -> bool:
    """True under a multi-task SLURM step, a multi-host TPU VM slice, or Open MPI."""
    env = os.environ
    if int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1")) or 1) > 1 and \
            "SLURM_STEP_ID" in env:
        return True
    if "," in env.get("TPU_WORKER_HOSTNAMES", ""):
        return True
    return int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1


def _slurm_one_task_per_node_gpus():
    """Under a SLURM step with one task per node: ids of every GPU the task sees; else None.

    jax.distributed's SLURM detection assumes one task per GPU and limits each process to GPU
    number SLURM_LOCALID, which with `--ntasks-per-node=1` (launch/slurm.sbatch) would leave
    all but one GPU of every node idle. With several tasks per node, or an explicit
    JAX_LOCAL_DEVICE_IDS, JAX's own choice stands (None).
    """
    env = os.environ
    if "SLURM_STEP_ID" not in env or "JAX_LOCAL_DEVICE_IDS" in env:
        return None
    tasks = env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS"))
    nodes = env.get("SLURM_STEP_NUM_NODES", env.get("SLURM_NNODES"))
    if not tasks or tasks != nodes:
        return None
    for name in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"):
        visible = [d for d in env.get(name, "").split(",") if d.strip()]
        if visible:  # the ids JAX takes are positions among the visible GPUs
            return list(range(len(visible)))
    gpus = int(env.get("SLURM_GPUS_ON_NODE", "0") or 0)
    return list(range(gpus)) if gpus else None


def initialize_distributed(coordinator_address=None, num_processes=None, process_id=None):
    """`jax.distributed.initialize` when this is one process of several; a no-op otherwise.

    Every process then runs the same program: the mesh spans all global devices, each process
    places the rows of the global batch that its own devices hold.
    """
    if coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize(
            coordinator_address=coordinator_address or os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=num_processes if num_processes is not None else
            int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=process_id if process_id is not None else
            int(os.environ["JAX_PROCESS_ID"]))
    elif _launched_by_a_cluster():
        # Auto-detects SLURM, TPU pods and Open MPI; one SLURM task per node keeps all its GPUs.
        jax.distributed.initialize(local_device_ids=_slurm_one_task_per_node_gpus())


def any_process(flag: bool) -> bool:
    """True when `flag` is true on any process (a collective: every process must call it)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.asarray(multihost_utils.process_allgather(np.int32(bool(flag)))).any())


def from_main_process(value: float) -> float:
    """Process 0's `value` on every process (a collective), for host-side decisions that every
    process must take alike, such as whether to write a checkpoint."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return float(multihost_utils.broadcast_one_to_all(np.float32(value)))

"""Saving and restoring the run state with orbax's CheckpointManager.

A checkpoint holds the train state (params incl. masks and loss parameters, BN statistics,
optimiser state, step) and the cluster assignment in force as arrays, and a JSON `meta`: the
epoch, whether it was complete, and for a checkpoint taken inside an epoch the step reached,
the epoch's record so far and its per-step metrics. Checkpoints are keyed by the global step.
The sampler and every RNG are pure functions of (seed, epoch, step), so nothing else is needed
to continue exactly where the run stopped. orbax writes each checkpoint to a temporary folder
and renames it when complete, and it coordinates the hosts of a multi-host run.
"""
from __future__ import annotations

import os
import re

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from dnc_jax import parallel
from dnc_jax.errors import RestoreError


# Folders of a run's checkpoints under its workdir.
LATEST = "checkpoints"
BEST_ON_TEST = "checkpoint_best_selected_on_test"  # model selection on the test set, kept apart


def directory(workdir: str, kind: str = LATEST) -> str:
    return os.path.join(workdir, kind)


def barrier_prefix(directory: str) -> str:
    """The prefix of a checkpoint folder's multi-process barrier names: its own name, the same
    on every process and different for every folder of a run."""
    return "dnc_jax_" + re.sub(r"[^A-Za-z0-9_]", "_", os.path.basename(os.path.normpath(directory)))


class Checkpointer:
    """The checkpoints of one folder; each save names what it is (epoch end, inside an epoch,
    best on the test set), and its meta is written here only.

    In a run of several processes every save is a collective: orbax's processes meet at
    barriers named after the step saved. Two folders saving the same step (the epoch end and
    the best-on-test copy of one epoch) would meet at one barrier name, which the
    coordination service refuses ("already ongoing") and the save then times out on one
    process. So each folder's barriers carry the folder's name as their prefix.
    """

    def __init__(self, directory: str, keep: int = 2):
        directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True,
                multiprocessing_options=ocp.options.MultiprocessingOptions(
                    barrier_sync_key_prefix=barrier_prefix(directory))))

    def save_epoch_end(self, state, assignment, epoch: int) -> None:
        """After `epoch`'s last step: resuming starts the next epoch."""
        self._save(state, assignment, {"epoch": epoch, "complete": True})

    def save_in_epoch(self, state, assignment, epoch: int, record: dict, history: list) -> None:
        """Inside `epoch`, after `len(history)` steps: the epoch's record so far and its per-step
        metrics, from which a resumed run finishes the epoch as if never stopped."""
        self._save(state, assignment, {"epoch": epoch, "complete": False,
                                       "step_in_epoch": len(history), "record": record,
                                       "history": history})

    def save_best(self, state, assignment, epoch: int, metric: str, value: float) -> None:
        """The epoch with the best `metric` so far, selected on the test set."""
        self._save(state, assignment, {"epoch": epoch, "complete": True,
                                       "selected_on_test": metric, metric: value})

    def _save(self, state, assignment, meta: dict) -> None:
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return  # already saved at this step (e.g. an epoch end right after a stop)
        arrays = {"state": state, "assignment": np.asarray(assignment, np.int32)}
        self.manager.save(step, args=ocp.args.Composite(
            arrays=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)))

    def restore_latest(self, state_template, num_train_images: int):
        """(state, assignment, meta) of the newest readable checkpoint, or None if none.

        A checkpoint that cannot be read (truncated, corrupted) is skipped with a warning and
        the one before it is used.
        """
        target = {
            "state": jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template),
            "assignment": jax.ShapeDtypeStruct((num_train_images,), np.int32),
        }
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                item = self.manager.restore(step, args=ocp.args.Composite(
                    arrays=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
            except Exception as e:  # orbax raises many types for damaged files
                logging.warning("checkpoint at step %d cannot be read (%s); trying the one "
                                "before it", step, str(e).splitlines()[0][:200])
                print(f"dnc_jax: warning: checkpoint at step {step} cannot be read; using "
                      f"the one before it", flush=True)
                continue
            arrays = item["arrays"]
            return arrays["state"], np.asarray(arrays["assignment"]), dict(item["meta"])
        return None

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for the saves in flight, then stops the manager's threads."""
        self.manager.wait_until_finished()
        self.manager.close()


def restore_network(checkpoint_dir: str, params_template, stats_template, mesh):
    """(model params, batch_stats, meta, step) of the newest checkpoint that reads: only the
    network, for using a trained model, whose user need not have the training set that sizes
    the rest of the state (optimiser, loss parameters, assignment).

    Like `Checkpointer.restore_latest`, a damaged checkpoint is skipped with a warning; one that
    does not match the model built from config.json (shapes) fails the same way on every step,
    and the newest step's error is reported.
    """
    if not os.path.isdir(checkpoint_dir):
        raise RestoreError(f"no checkpoints: {checkpoint_dir} does not exist (the run has not "
                           f"finished an epoch yet?)")
    # Only ever restored from: nothing is created, saved or deleted. (read_only=True would say
    # so too, but it logs two warnings on every use.)
    manager = ocp.CheckpointManager(os.path.abspath(checkpoint_dir),
                                    options=ocp.CheckpointManagerOptions(create=False))
    all_steps = sorted(manager.all_steps(), reverse=True)
    if not all_steps:
        manager.close()
        raise RestoreError(f"no checkpoints in {checkpoint_dir} (the run has not finished an "
                           f"epoch yet?)")
    replicated = parallel.replicated(mesh)
    # Restored straight onto this machine's devices: the saved sharding may name devices of
    # another machine (a run trained on 8 GPUs, used on a laptop).
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
        {"state": {"params": {"model": params_template}, "batch_stats": stats_template}})
    restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), target)
    errors = []
    try:
        for step in all_steps:
            try:
                item = manager.restore(step, args=ocp.args.Composite(
                    arrays=ocp.args.PyTreeRestore(target, restore_args=restore_args,
                                                  partial_restore=True),
                    meta=ocp.args.JsonRestore()))
            except Exception as e:  # orbax raises many types for damaged or mismatched files
                errors.append((step, _explain(e)))
                if step != all_steps[-1]:
                    print(f"dnc_jax: warning: checkpoint at step {step} cannot be read "
                          f"({errors[-1][1]}); trying the one before it", flush=True)
                continue
            state = item["arrays"]["state"]
            return state["params"]["model"], state["batch_stats"], dict(item["meta"]), step
    finally:
        manager.close()  # its threads left running make the interpreter's exit noisy
    step, reason = errors[0]
    raise RestoreError(f"no readable checkpoint in {checkpoint_dir}; the newest (step {step}): "
                       f"{reason}")


def _explain(error: Exception) -> str:
    """One line for a failed restore; orbax's shape-mismatch advice (strict=False) is wrong here."""
    text = str(error).strip() or type(error).__name__
    mismatch = re.search(r"Requested shape: (\(.*?\)) is not compatible with the stored "
                         r"shape: (\(.*?\))", text)
    if mismatch:
        return (f"its arrays do not fit the model config.json describes (an array of shape "
                f"{mismatch[2]} where the model has {mismatch[1]}): was config.json edited?")
    return text.splitlines()[0][:300]

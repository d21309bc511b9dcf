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

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging


class Checkpointer:
    def __init__(self, directory: str, keep: int = 2):
        self.manager = ocp.CheckpointManager(
            os.path.abspath(directory),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

    def save(self, state, assignment, meta: dict) -> None:
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

"""Saving and restoring the run state with orbax's CheckpointManager.

A checkpoint is taken at the end of an epoch and holds the train state (params, BN statistics,
optimiser state, step) and the cluster assignment in force, keyed by the epoch. The sampler and
every RNG are pure functions of (seed, epoch, step), so nothing else is needed to continue
exactly where the run stopped.
"""
from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, directory: str, keep: int = 2):
        self.manager = ocp.CheckpointManager(
            os.path.abspath(directory),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

    def save(self, epoch: int, state, assignment) -> None:
        item = {"state": state, "assignment": np.asarray(assignment, np.int32)}
        self.manager.save(epoch, args=ocp.args.StandardSave(item))

    def restore_latest(self, state_template, num_train_images: int):
        """(state, assignment, epoch) of the newest checkpoint, or None when there is none."""
        epoch = self.manager.latest_step()
        if epoch is None:
            return None
        target = {
            "state": jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template),
            "assignment": jax.ShapeDtypeStruct((num_train_images,), np.int32),
        }
        item = self.manager.restore(epoch, args=ocp.args.StandardRestore(target))
        return item["state"], np.asarray(item["assignment"]), epoch

    def wait(self) -> None:
        self.manager.wait_until_finished()

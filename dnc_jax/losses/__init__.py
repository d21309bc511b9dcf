"""Base losses by name. Every loss is a pure function of one flat batch holding several learners'
sub-batches: `(embeddings, labels, learners, valid, rng, n_dim) -> (loss, aux)`."""
from __future__ import annotations

import functools

from dnc_jax.losses.margin import margin_loss

_REGISTRY = {"margin": margin_loss}


def make_loss(loss_config, num_learners_max: int, samples_per_class: int):
    name = loss_config.name
    if name not in _REGISTRY:
        raise ValueError(f"loss.name={name!r} is not one of {sorted(_REGISTRY)}")
    if name == "margin":
        return functools.partial(
            margin_loss,
            num_learners_max=num_learners_max,
            # One negative per positive of a P x M batch, as the official miner ends up doing.
            num_triplets=max(1, samples_per_class - 1),
            margin=loss_config.margin,
            beta=loss_config.beta,
            cutoff=loss_config.cutoff,
            nonzero_loss_cutoff=loss_config.nonzero_loss_cutoff,
        )
    raise AssertionError(name)

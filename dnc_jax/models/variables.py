"""The starting weights of a run: initialised network, paper-specific head, imported backbone."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from dnc_jax.models import head as head_lib
from dnc_jax.models import convnext, convnext_import, pretrained, vit, vit_import


def initial_variables(model, model_config, num_learners: int, rng, image_size: int):
    """(params, batch_stats) of the Embedder `model` as `model_config` asks."""
    k_init, k_head = jax.random.split(rng)
    dummy = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    variables = jax.jit(lambda r: model.init({"params": r}, dummy, train=False))(k_init)
    params = dict(variables["params"])
    batch_stats = dict(variables.get("batch_stats", {}))
    in_dim = params["head"]["kernel"].shape[0]
    params["head"] = head_lib.init_head(k_head, in_dim, model_config.embedding_dim,
                                        num_learners, model_config.head_init)
    if model_config.pretrained:
        state_dict = pretrained.read_state_dict(model_config.pretrained)
        if vit.is_vit(model_config.name):  # no batch statistics
            params["backbone"] = vit_import.load_vit_backbone(state_dict, params["backbone"])
        elif convnext.is_convnext(model_config.name):  # no batch statistics either
            params["backbone"] = convnext_import.load_convnext_backbone(state_dict,
                                                                        params["backbone"])
        else:
            params["backbone"], batch_stats["backbone"] = pretrained.load_backbone(
                state_dict, params["backbone"], batch_stats["backbone"])
    return params, batch_stats

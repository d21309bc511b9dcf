"""CUB-200-2011 around a ViT-S/16 DINO backbone (configs/cub.py's schedule, K=4).

See configs/vit/_recipe.py for the backbone and optimiser. Set --config.data.root to the
CUB_200_2011 folder (the one holding images/).
"""
from dnc_jax.configs import cub
from dnc_jax.configs.vit import _recipe


def get_config():
    return _recipe.apply(cub.get_config(), train_images=5864)

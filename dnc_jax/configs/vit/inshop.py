"""In-shop Clothes Retrieval around a ViT-S/16 DINO backbone (configs/inshop.py's schedule, K=8).

See configs/vit/_recipe.py for the backbone and optimiser. Set --config.data.root to the folder
holding Eval/list_eval_partition.txt and img/.
"""
from dnc_jax.configs import inshop
from dnc_jax.configs.vit import _recipe


def get_config():
    return _recipe.apply(inshop.get_config(), train_images=25882)

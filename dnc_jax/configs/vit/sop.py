"""Stanford Online Products around a ViT-S/16 DINO backbone (configs/sop.py's schedule, K=8).

See configs/vit/_recipe.py for the backbone and optimiser. Set --config.data.root to the folder
holding Ebay_train.txt and Ebay_test.txt.
"""
from dnc_jax.configs import sop
from dnc_jax.configs.vit import _recipe


def get_config():
    return _recipe.apply(sop.get_config(), train_images=59551)

"""CARS196 around a ViT-S/16 DINO backbone (configs/cars.py's schedule).

See configs/vit/_recipe.py for the backbone and optimiser. Set --config.data.root as for
configs/cars.py.
"""
from dnc_jax.configs import cars
from dnc_jax.configs.vit import _recipe


def get_config():
    return _recipe.apply(cars.get_config(), train_images=8054)

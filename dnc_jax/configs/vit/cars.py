"""CARS196 around a pretrained ViT (configs/cars.py's schedule).

    python -m dnc_jax.main --config=configs/vit/cars.py --config.data.root=DIR     # dino_s16
    python -m dnc_jax.main --config=configs/vit/cars.py:dinov2_b14_reg4 --config.data.root=DIR

The text after the colon names the backbone: dino_s16 (ViT-S/16 DINO, the default),
dinov2_s14, dinov2_s14_reg4, dinov2_b14_reg4 (DINOv2) or clip_b16 (OpenAI CLIP ViT-B/16);
configs/vit/_recipe.py holds each one's keys and the optimiser, and says where the values come
from.

Not run yet: no GPU run is recorded for any of these configs, the default included.

Set --config.data.root as for configs/cars.py.
"""
from dnc_jax.configs import cars
from dnc_jax.configs.vit import _recipe


def get_config(backbone: str = _recipe.DEFAULT):
    return _recipe.apply(cars.get_config(), train_images=8054, backbone_name=backbone)

"""In-shop Clothes Retrieval around a pretrained ViT (configs/inshop.py's schedule, K=8).

    python -m dnc_jax.main --config=configs/vit/inshop.py --config.data.root=DIR     # dino_s16
    python -m dnc_jax.main --config=configs/vit/inshop.py:dinov2_b14_reg4 --config.data.root=DIR

The text after the colon names the backbone: dino_s16 (ViT-S/16 DINO, the default),
dinov2_s14, dinov2_s14_reg4, dinov2_b14_reg4 (DINOv2) or clip_b16 (OpenAI CLIP ViT-B/16);
configs/vit/_recipe.py holds each one's keys and the optimiser, and says where the values come
from.

Not run yet: no GPU run is recorded for any of these configs, the default included.

Set --config.data.root to the folder holding Eval/list_eval_partition.txt and img/.
"""
from dnc_jax.configs import inshop
from dnc_jax.configs.vit import _recipe


def get_config(backbone: str = _recipe.DEFAULT):
    return _recipe.apply(inshop.get_config(), train_images=25882, backbone_name=backbone)

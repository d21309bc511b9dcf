"""The ViT-S/16 DINO recipe the configs in this folder share (not a config itself).

Divide and Conquer around a self-supervised ViT-S/16 (Caron et al. 2021, timm's
`vit_small_patch16_224.dino` weights), the backbone of today's strongest public metric-learning
models, instead of the papers' ResNet-50. Everything not set here is the data set's config in
configs/: the D&C schedule, K, the margin loss with distance-weighted mining, batches of 20
classes x 4 images, 224 px crops.

The optimiser follows transformer fine-tuning practice (DINO's and timm's fine-tuning recipes,
BEiT's layer decay) rather than the papers' coupled Adam: AdamW with decay 0.05 off the biases,
norms and tokens, layer-wise decay 0.75, a two-epoch linear warm-up, clipping at norm 3 and
stochastic depth 0.1. The backbone keeps the papers' rate 1e-5 and the new head gets 1e-4.
These values are taken from those recipes, not yet measured here at full size: no GPU run is
recorded (docs/vit.md).
"""

DINO_VIT_S16 = "timm/vit_small_patch16_224.dino"


def apply(config, train_images: int):
    """`config` (a data set's config) with the ViT-S/16 DINO backbone and optimiser;
    `train_images`: the size of its training split, to express the warm-up in epochs."""
    config.model.name = "vit_s16"
    config.model.pretrained = DINO_VIT_S16
    config.model.pooling = "token"   # DINO's retrieval features are the class token
    config.model.dropout = 0.0
    config.model.embedding_dim = 384  # the token width: a square head, OML's ViT-S/16 size
    config.model.vit.drop_path = 0.1
    config.augment.normalization = "imagenet"  # DINO was trained with ImageNet's mean/std
    config.optim.algorithm = "adamw"
    config.optim.backbone.learning_rate = 1e-5
    config.optim.head.learning_rate = 1e-4
    for group in ("backbone", "head"):
        config.optim[group].weight_decay = 0.05
    config.optim.no_decay_1d = True
    config.optim.layer_decay = 0.75
    steps_per_epoch = max(1, train_images // config.data.batch_size)
    config.optim.warmup_steps = 2 * steps_per_epoch
    config.optim.clip_grad_norm = 3.0
    return config

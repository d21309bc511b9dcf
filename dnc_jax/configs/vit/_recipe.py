"""The pretrained ViTs and the fine-tuning recipe the configs in this folder share (not a config).

Divide and Conquer around a pretrained Vision Transformer, the backbone of today's strongest
public metric-learning models, instead of the papers' ResNet-50. Everything not set here is the
data set's config in configs/: the D&C schedule, K, the margin loss with distance-weighted
mining, batches of 20 classes x 4 images, 224 px crops. Each config in this folder takes the
backbone after a colon, `--config=configs/vit/sop.py:dinov2_s14` (ml_collections passes that
text to `get_config`); without one it is `dino_s16`, the recipe these configs had first.

`BACKBONES`, one row a checkpoint: timm's hub id, `model.name`, the `model.vit.*` keys its layout
needs (timm's model of that name builds the same network), the mean/std it was trained with,
the embedding size (the token width, or CLIP's projection) and its three recipe values.

* `dino_s16`: ViT-S/16, DINO (Caron et al. 2021), `timm/vit_small_patch16_224.dino`.
* `dinov2_s14`, `dinov2_s14_reg4`: ViT-S/14, DINOv2 (Oquab et al. 2023), without and with four
  register tokens (Darcet et al. 2023): LayerScale; reg4 adds the registers and position
  embeddings for the patches only. The checkpoints are 518 px (a 37 x 37 grid), resampled to
  the 224 px crop's 16 x 16 grid when imported; 224 = 16 x 14 tiles into 14 px patches.
* `dinov2_b14_reg4`: ViT-B/14, DINOv2 with registers. The registered ViT-B is the one taken,
  not the plain `vit_base_patch14_dinov2.lvd142m`: open-metric-learning's zoo measures both
  without fine-tuning at 224 px (R@1 SOP 0.557 against 0.565, In-shop 0.324 / 0.342, CUB 0.833 /
  0.842, Cars 0.828 / 0.644), so the registers cost under two points on three data sets and
  gain 18 on Cars. The registers take over the global information that plain DINOv2 stores in
  a few high-norm background patch tokens; they are kept out of every pooling here.
* `clip_b16`: ViT-B/16, OpenAI CLIP (Radford et al. 2021), `timm/vit_base_patch16_clip_224.openai`:
  a LayerNorm before the blocks, LayerNorm epsilon 1e-5, CLIP's mean/std, and exact GELU as
  timm's model of that name runs the checkpoint (OpenAI trained it with quick GELU, timm's
  `_quickgelu` variant: `--config.model.vit.act=quick_gelu`). The pooled vector is CLIP's
  512-d projection of the class token (`model.vit.projection=512`), not the 768-d token: the
  projected space is the one CLIP trained to compare by cosine, as retrieval does, and the one
  open-metric-learning's zoo evaluates CLIP's retrieval in (its CLIP extractor applies `proj`).

The optimiser follows transformer fine-tuning practice rather than the papers' coupled Adam:
AdamW, no decay on biases, norms and the class / position tokens, a two-epoch linear warm-up,
clipping at global norm 3, the backbone at 1e-5 (the papers' rate; open-metric-learning's ViT
fine-tuning also uses 1e-5) and the new, randomly initialised head ten times faster, 1e-4.

* DINO and DINOv2: weight decay 0.05, layer decay 0.75 and stochastic depth 0.1, the values of
  the self-supervised ViTs' fine-tuning recipes (DINO's and timm's; BEiT's and MAE's layer
  decay, 0.65 for their 12-block ViT-B and 0.75 for the 24-block ViT-L at rates of order 1e-3:
  at 1e-5 the milder 0.75). Layer decay goes with depth, and ViT-S and ViT-B both have 12
  blocks, so one value serves both. DINOv2's paper evaluates its features frozen (linear
  probes, k-NN) and reports end-to-end fine-tuning as a modest gain on top: the pretrained
  features are the point, so the rate stays small and the lower blocks move least.
* CLIP: FLYP's (Goyal et al. 2022) and WiSE-FT's (Wortsman et al. 2022) end-to-end fine-tuning
  of CLIP ViT-B/16: AdamW at 1e-5 (FLYP; WiSE-FT 3e-5), weight decay 0.1, no layer decay, no
  stochastic depth. FT-CLIP (Dong et al. 2022) does use layer decay 0.6 for ViT-B/16, but
  with a rate of 6e-4: on top of 1e-5 it would leave the lower half of the network below 1e-6,
  all but frozen, which neither recipe does.

None of these values is measured here at full size: no GPU run is recorded for any of these
backbones in these configs (not run yet; docs/backbones.md).
"""
from __future__ import annotations

import dataclasses

from dnc_jax.errors import ConfigError

DINO_VIT_S16 = "timm/vit_small_patch16_224.dino"


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A pretrained ViT and what it needs besides the shared recipe."""
    model_name: str      # model.name
    weights: str         # model.pretrained: timm's hub id
    embedding_dim: int   # model.embedding_dim: the pooled vector's size, a square head
    normalization: str = "imagenet"  # augment.normalization: the mean/std it was trained with
    vit: dict = dataclasses.field(default_factory=dict)  # model.vit.* keys its layout needs
    weight_decay: float = 0.05  # optim.{backbone,head}.weight_decay
    layer_decay: float = 0.75   # optim.layer_decay
    drop_path: float = 0.1      # model.vit.drop_path


_DINOV2 = {"layer_scale": True}
_REG4 = {**_DINOV2, "reg_tokens": 4, "no_embed_class": True}
BACKBONES = {
    "dino_s16": Backbone("vit_s16", DINO_VIT_S16, 384),
    "dinov2_s14": Backbone("vit_s14", "timm/vit_small_patch14_dinov2.lvd142m", 384,
                           vit=_DINOV2),
    "dinov2_s14_reg4": Backbone("vit_s14", "timm/vit_small_patch14_reg4_dinov2.lvd142m", 384,
                                vit=_REG4),
    "dinov2_b14_reg4": Backbone("vit_b14", "timm/vit_base_patch14_reg4_dinov2.lvd142m", 768,
                                vit=_REG4),
    "clip_b16": Backbone("vit_b16", "timm/vit_base_patch16_clip_224.openai", 512,
                         normalization="clip",
                         vit={"pre_norm": True, "norm_eps": 1e-5, "act": "gelu",
                              "projection": 512},
                         weight_decay=0.1, layer_decay=1.0, drop_path=0.0),
}
DEFAULT = "dino_s16"


def backbone(name: str) -> Backbone:
    """The row of `name` ('' is the default), or a ConfigError listing the names."""
    name = name or DEFAULT
    if name not in BACKBONES:
        raise ConfigError(f"unknown ViT backbone {name!r}: one of {', '.join(BACKBONES)} "
                          f"(after the config file, e.g. --config=configs/vit/sop.py:"
                          f"dinov2_s14; none: {DEFAULT})")
    return BACKBONES[name]


def apply(config, train_images: int, backbone_name: str = DEFAULT):
    """`config` (a data set's config) with the backbone `backbone_name` of BACKBONES and the
    optimiser; `train_images`: the size of its training split, to express the warm-up in
    epochs."""
    b = backbone(backbone_name)
    config.model.name = b.model_name
    config.model.pretrained = b.weights
    config.model.pooling = "token"   # DINO's, DINOv2's and CLIP's image feature: the class token
    config.model.dropout = 0.0
    config.model.embedding_dim = b.embedding_dim  # a square head (OML's ViT-S/16 size: 384)
    for key, value in b.vit.items():
        config.model.vit[key] = value
    config.model.vit.drop_path = b.drop_path
    config.augment.normalization = b.normalization
    config.optim.algorithm = "adamw"
    config.optim.backbone.learning_rate = 1e-5
    config.optim.head.learning_rate = 1e-4
    for group in ("backbone", "head"):
        config.optim[group].weight_decay = b.weight_decay
    config.optim.no_decay_1d = True
    config.optim.layer_decay = b.layer_decay
    steps_per_epoch = max(1, train_images // config.data.batch_size)
    config.optim.warmup_steps = 2 * steps_per_epoch
    config.optim.clip_grad_norm = 3.0
    return config

"""The CPU demo with a Vision Transformer: Divide and Conquer on rendered glyphs, offline.

configs/demo.py's data, schedule and loss around `vit_micro` (4 x 4 patches, 4 blocks of width
64, not a timm model) trained from scratch, pooled by its class token, with the transformer
optimiser options (AdamW, warm-up, clipping, no decay on 1-d parameters and tokens). Each option
is kept because taking it away lowered R@1 in `bench/accuracy.py --config=configs/demo_vit.py
--grid=vit_optim` (BENCHMARKS.md, "ViT"); the rates and the decay were not tuned.
"""
from dnc_jax.configs import demo


def get_config():
    config = demo.get_config()
    config.model.name = "vit_micro"
    config.model.pooling = "token"
    config.model.dropout = 0.0
    config.optim.algorithm = "adamw"
    for group in ("backbone", "head"):
        config.optim[group].learning_rate = 1e-3
        config.optim[group].weight_decay = 0.05
    config.optim.warmup_steps = 200
    config.optim.clip_grad_norm = 1.0
    config.optim.no_decay_1d = True
    return config

"""The demo fine-tuned from a pretrained backbone, as the papers fine-tune ImageNet weights.

The network of configs/demo.py starts from a backbone pretrained on a disjoint glyph corpus
(configs/pretrain_glyphs.py, then `dnc-jax backbone`): no K=1 warm-up (the papers
cluster the pretrained features at epoch 0), BatchNorm statistics kept from pretraining (as the
papers freeze them), fewer epochs and a smaller rate than from scratch.

    python -m dnc_jax.main --config=configs/pretrain_glyphs.py --workdir=runs/pretrain
    dnc-jax backbone --workdir=runs/pretrain --out=runs/pretrained/model.safetensors
    python -m dnc_jax.main --config=configs/demo_finetune.py --workdir=runs/finetune

The rates and batch are those the sweep of BENCHMARKS.md ("Accuracy from a pretrained start")
found best for this schedule.
"""
from dnc_jax.configs import demo


def get_config():
    config = demo.get_config()
    config.model.pretrained = "runs/pretrained/model.safetensors"
    config.model.bn_frozen = True
    config.divide.warmup_epochs = 0
    config.num_epochs = 6
    config.divide.full_embedding_epoch = 4
    config.divide.finetune_epoch = 5
    for group in ("backbone", "head"):
        config.optim[group].learning_rate = 1e-4
    return config

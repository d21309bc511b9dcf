"""Pretraining a backbone for the glyph demos, as ImageNet pretrains the papers' ResNet-50.

Classification (normalised softmax, one learner) of the 'pretrain' glyph corpus by script or
symbol block: about 1,900 characters of 21 blocks that neither demo target draws from, none a
look-alike of a target character (dnc_jax/data/sources/glyph_classes.py); half its characters train,
the other half measure retrieval of their blocks. The network is the demos' (configs/demo.py), so

    python -m dnc_jax.main --config=configs/pretrain_glyphs.py --workdir=runs/pretrain
    dnc-jax backbone --workdir=runs/pretrain --out=runs/pretrained/model.safetensors

gives the file that configs/demo_finetune.py fine-tunes (model.pretrained).
"""
from dnc_jax.configs import demo


def get_config():
    config = demo.get_config()
    config.num_epochs = 8
    config.data.glyphs.classes = "pretrain"
    # Most of the corpus is drawn by DejaVu Sans' 4 faces only: 4 jittered renderings each,
    # so that every class has 16 images or more.
    config.data.glyphs.min_faces = 4
    config.data.glyphs.instances_per_face = 4
    config.loss.name = "normalized_softmax"
    config.loss.proxy_learning_rate = 1e-2
    config.data.batch_size = 128
    config.data.samples_per_class = 8  # 16 blocks a batch, of the 21
    # Labels are blocks, not characters: a task coarser than the targets' (which character is
    # this?), as ImageNet's classes are coarser than CUB's species or SOP's products. Trained
    # on characters instead, the backbone already retrieves the demo's letters at R@1 86-89
    # before any fine-tuning, which adds about a point (BENCHMARKS.md): not the papers'
    # regime, where fine-tuning is most of the gain.
    config.data.glyphs.labels = "block"
    config.divide.num_learners = 1
    config.divide.warmup_epochs = 0
    config.divide.recluster_every = 0
    config.divide.full_embedding_epoch = -1
    config.divide.finetune_epoch = -1
    config.optim.lr_decay_every = 3   # 1e-3, then 3e-4 from epoch 3, 9e-5 from epoch 6
    config.eval.every_epochs = 4
    return config

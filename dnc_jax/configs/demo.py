"""The CPU demo: Divide and Conquer on rendered glyphs, offline, in a few minutes on 2 cores.

Classes are characters, instances are font faces (with a small affine jitter); the test classes
are characters never seen in training. A tiny ResNet trained from scratch, K=4 learners taking
turns, after a 2-epoch K=1 warm-up.
"""
from dnc_jax.configs import default


def get_config():
    config = default.get_config()
    config.num_epochs = 30
    config.dtype = "float32"
    config.data.name = "glyphs"
    config.data.image_size = 32
    # Round robin on 8 classes x 4 a step, and one learner for 2 epochs before the first
    # clustering: a from-scratch network's first features split classes by font face (class
    # purity 59% at K=4), two epochs of training make them keep classes (87%), and that beat
    # clustering at epoch 0 by 2 points of R@1 over three seeds (BENCHMARKS.md, Accuracy).
    config.divide.learner_schedule = "round_robin"
    config.data.batch_size = 32
    config.divide.warmup_epochs = 2
    config.data.samples_per_class = 4
    config.data.eval_batch_size = 512
    config.augment.image_size = 32
    # Glyphs are small and centred: mild crops, and no flip (a mirrored 'b' is a 'd').
    config.augment.crop_scale = (0.6, 1.0)
    config.augment.crop_ratio = (0.8, 1.25)
    config.augment.flip = False
    config.augment.eval_crop_fraction = 1.0
    config.model.name = "resnet_tiny"
    config.model.width = 32
    config.model.stem = "imagenet"  # measured 1.5x faster than "small" at width 32, 32 px
    config.model.bn_frozen = False   # trained from scratch: BN must learn its statistics
    config.model.embedding_dim = 64
    config.model.pretrained = ""     # trained from scratch (no ImageNet model for glyphs)
    config.model.head_init = "pt_default"
    for group in ("backbone", "head"):
        config.optim[group].learning_rate = 1e-3
        config.optim[group].weight_decay = 1e-5
    config.divide.num_learners = 4
    config.divide.recluster_every = 2
    config.divide.full_embedding_epoch = 20
    config.divide.finetune_epoch = 26
    config.divide.kmeans_restarts = 4
    config.divide.kmeans_init = "kmeans++"
    config.eval.recall_ks = (1, 2, 4, 8)
    return config

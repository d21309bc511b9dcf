"""Stanford Online Products: the CVPR 2019 repository's README command, exactly.

That command (CompVis/metric-learning-divide-and-conquer, README "Usage"; only --dataset
changes between SOP, In-shop and VehicleID):

    python experiment.py --dataset=sop --dir=test --exp=0 --random-seed=0 --nb-clusters=8
        --nb-epochs=200 --sz-batch=80 --backend=faiss-gpu --embedding-lr=1e-5
        --embedding-wd=1e-4 --backbone-lr=1e-5 --backbone-wd=1e-4 --finetune-epoch=190

with experiment.py's defaults for what it leaves out (--mod-epoch=2, --sz-embedding=128) and
what the code fixes: 4 images per class in a batch (so 20 classes x 4), the whole embedding
from epoch finetune_epoch * 8/19 = 80, margin loss alpha 0.2 with beta 1.2 never trained, the
EasyPeasy miner with its fill-in when a row has too few valid negatives, each learner's block
initialised with xavier_normal, one k-means run per reclustering, clustering the ImageNet model
before epoch 0 (no warm-up), len(cluster) // 80 class-uniform batches per learner an epoch,
learners taking turns batch by batch, no learning-rate schedule, float32 (the paper's).

Every recipe key is set here, not inherited from dnc_jax/defaults.py, so that a change of the
project's defaults cannot change this run. The README expects R@1 of about 76.40 on SOP.
Set --config.data.root to the folder holding Ebay_train.txt and Ebay_test.txt.
tests/test_paper_configs.py checks this file against the command.
"""
from dnc_jax.configs import default


def get_config():
    config = default.get_config()
    config.seed = 0                             # --random-seed=0
    config.num_epochs = 200                     # --nb-epochs=200
    config.dtype = "float32"                    # the paper trained in float32

    config.data.name = "sop"                    # --dataset=sop
    config.data.batch_size = 80                 # --sz-batch=80
    config.data.samples_per_class = 4           # hard-coded in the official batch sampler
    config.data.epoch_length = "official"       # len(cluster) // 80 batches per learner
    config.data.sampler = "official"            # class-uniform batches, as its sampler draws

    config.augment.image_size = 224             # RandomResizedCrop(224), torchvision defaults
    config.augment.crop_scale = (0.08, 1.0)
    config.augment.crop_ratio = (3 / 4, 4 / 3)
    config.augment.flip = True
    config.augment.eval_crop_fraction = 224 / 256  # Resize(256) + CenterCrop(224)

    config.model.name = "resnet50"              # torchvision ImageNet ResNet-50
    config.model.width = 64
    config.model.stem = "imagenet"
    config.model.bn_frozen = True               # BN statistics frozen, affine trained
    config.model.pooling = "avg"
    config.model.dropout = 0.01
    config.model.embedding_dim = 128            # --sz-embedding default
    config.model.head_init = "cvpr"             # xavier_normal per learner block
    config.model.pretrained = "timm/resnet50.tv_in1k"  # torchvision's ImageNet-1k V1 weights

    config.loss.name = "margin"
    config.loss.miner = "easy_peasy"            # the repository's only miner
    config.loss.easy_peasy_strict = False       # its fill-in when negatives run short
    config.loss.negatives_per_anchor = 0        # 0 = M - 1, as the official sampler
    config.loss.cutoff = 0.5
    config.loss.margin = 0.2                    # alpha
    config.loss.beta = 1.2
    config.loss.beta_mode = "fixed"             # beta is never given to the optimiser
    config.loss.nu = 0.0

    config.optim.backbone.learning_rate = 1e-5  # --backbone-lr=1e-5
    config.optim.backbone.weight_decay = 1e-4   # --backbone-wd=1e-4 (coupled L2, torch Adam)
    config.optim.head.learning_rate = 1e-5      # --embedding-lr=1e-5
    config.optim.head.weight_decay = 1e-4       # --embedding-wd=1e-4
    config.optim.lr_decay_every = 0             # no schedule in the repository
    config.optim.lr_decay_factor = 0.3          # (unused)

    config.divide.schedule = "cvpr"             # K fixed, whole-data finetune at the end
    config.divide.num_learners = 8              # --nb-clusters=8
    config.divide.learner_schedule = "round_robin"  # learners take turns, batch by batch
    config.divide.masks = "slices"              # contiguous blocks of d/K
    config.divide.recluster_every = 2           # --mod-epoch default
    config.divide.warmup_epochs = 0             # cluster the ImageNet model before epoch 0
    config.divide.full_embedding_epoch = 80     # 190 * 8/19, hard-coded in train.py
    config.divide.finetune_epoch = 190          # --finetune-epoch=190
    config.divide.freeze_epochs = 0
    config.divide.kmeans_trials = 1             # one faiss run, no acceptance test
    config.divide.cluster_on = "features"       # L2-normalised pooled backbone features
    config.divide.kmeans_init = "random"        # faiss: K random points
    config.divide.kmeans_restarts = 1           # nredo=1
    config.divide.kmeans_iterations = 100       # niter=100

    config.eval.recall_ks = (1, 10, 100, 1000)  # the paper's SOP table (the code logs 1/2/4/8)
    config.eval.every_epochs = 1                # evaluated after every epoch
    config.checkpoint.keep_best_on_test = True  # the repository keeps the best test R@1
    return config

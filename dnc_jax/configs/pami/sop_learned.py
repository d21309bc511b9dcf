"""Stanford Online Products, learned masks: the PAMI 2021 repository's README command, exactly.

That command (CompVis/metric-learning-divide-and-conquer-improved, README "Training"):

    python train.py --experiment margin_loss_resnet50 --dataset=sop -i=$NAME -seed=4
        --sz-embedding=512 --mod-epoch=2 --nb-clusters=32 --nb-epochs=180 --batch-size=80
        --num-samples-per-class=2 --backend=faiss-gpu --lr-gamma=0.3 --mod-epoch-freeze=1
        --sampler=distanceweighted --weight-decay=1e-4 --batch-sampler=adaptbalanced
        --force-full-embedding-epoch=80 --mask-lr-mult=100 --masking-lambda=0.01
        --mask-wd-mult=1 --dataset-dir=$datadir

with experiment/margin_loss_resnet50.py's defaults for the rest: base lr 1e-5 for every group,
top_bot hierarchy (its help text: all the paper's results used it), masks initialised to ones
behind a relu, margin loss alpha 0.2 with beta 1.2 never trained, PyTorch's default head init,
30 k-means trials and 30 trials per 2-means split, no whole-data finetune. So: K grows 1 -> 32
by splitting every cluster in two at each recluster, mask lr 1e-5 x 100, mask wd 1 x 1e-4,
orthogonality lambda 0.01, the backbone frozen on every recluster epoch, the whole 512-d
embedding from epoch 80, 180 epochs, batches of 40 classes x 2 images, Adam with coupled wd
1e-4, distance-weighted sampling whose distance density uses n = 512 (the code always passes
the embedding width, even for a masked view), len(cluster) // 80 class-uniform batches per
learner an epoch, float32. --lr-gamma has no effect: the code never creates a scheduler.

Every recipe key is set here, not inherited from dnc_jax/defaults.py. The README reports R@1
79.80 / NMI 89.68 for this ("learn") row; configs/pami/sop_fixed.py is the "fixed" row.
Evaluation uses the normalised, unmasked embedding. Set --config.data.root to the folder holding
Ebay_train.txt and Ebay_test.txt. tests/test_paper_configs.py checks this file against the
command.
"""
from dnc_jax.configs import default


def get_config():
    config = default.get_config()
    config.seed = 4                             # -seed=4
    config.num_epochs = 180                     # --nb-epochs=180
    config.dtype = "float32"                    # the paper trained in float32

    config.data.name = "sop"                    # --dataset=sop
    config.data.batch_size = 80                 # --batch-size=80
    config.data.samples_per_class = 2           # --num-samples-per-class=2: 40 classes x 2
    config.data.epoch_length = "official"       # len(cluster) // 80 batches per learner
    config.data.sampler = "official"            # --batch-sampler=adaptbalanced: class-uniform

    config.augment.image_size = 224             # --sz-crop default, torchvision augmentation
    config.augment.crop_scale = (0.08, 1.0)
    config.augment.crop_ratio = (3 / 4, 4 / 3)
    config.augment.flip = True
    config.augment.eval_crop_fraction = 224 / 256  # --sz-resize 256, centre crop 224

    config.model.name = "resnet50"              # --arch default
    config.model.width = 64
    config.model.stem = "imagenet"
    config.model.bn_frozen = True               # bn_learnable False: statistics frozen
    config.model.pooling = "avg"                # --features-pooling default
    config.model.dropout = 0.01                 # features_dropout_prob
    config.model.embedding_dim = 512            # --sz-embedding=512
    config.model.head_init = "pt_default"       # PyTorch's default Linear init
    config.model.pretrained = "timm/resnet50.tv_in1k"  # torchvision's ImageNet-1k V1 weights

    config.loss.name = "margin"                 # --criterion default MarginLoss
    config.loss.miner = "distance_weighted"     # --sampler=distanceweighted
    config.loss.distance_weighted_dim = "embedding"  # n = 512 even for a masked view
    config.loss.negatives_per_anchor = 0        # 0 = M - 1
    config.loss.cutoff = 0.5
    config.loss.nonzero_loss_cutoff = 1.4      # 1.2 + margin
    config.loss.margin = 0.2                    # --margin default
    config.loss.beta = 1.2
    config.loss.beta_mode = "fixed"             # --lr-beta default 0
    config.loss.nu = 0.0

    config.optim.backbone.learning_rate = 1e-5  # --base-lr default
    config.optim.backbone.weight_decay = 1e-4   # --weight-decay=1e-4 (coupled L2, torch Adam)
    config.optim.head.learning_rate = 1e-5      # --base-lr x --emb-lr-mult default 1
    config.optim.head.weight_decay = 1e-4       # --weight-decay=1e-4
    config.optim.masks.learning_rate = 1e-3     # --mask-lr-mult=100 x 1e-5
    config.optim.masks.weight_decay = 1e-4      # --mask-wd-mult=1 x 1e-4
    config.optim.lr_decay_every = 0             # --lr-gamma=0.3 has no effect: no scheduler
    config.optim.lr_decay_factor = 0.3          # (unused)

    config.divide.schedule = "pami"             # --hierarchy-method default top_bot
    config.divide.num_learners = 32             # --nb-clusters=32 (final K)
    config.divide.learner_schedule = "round_robin"  # learners take turns, batch by batch
    config.divide.masks = "learned"             # --fixed-mask default 0
    config.divide.mask_init = "ones"            # --masking-init default
    config.divide.orthogonality_weight = 0.01   # --masking-lambda=0.01
    config.divide.recluster_every = 2           # --mod-epoch=2
    config.divide.freeze_epochs = 1             # --mod-epoch-freeze=1
    config.divide.warmup_epochs = 0
    config.divide.full_embedding_epoch = 80     # --force-full-embedding-epoch=80
    config.divide.finetune_epoch = -1           # finetune_epoch default inf: never
    config.divide.kmeans_trials = 30            # ntrials=30 in train.py
    config.divide.split_trials = 30
    config.divide.cluster_on = "features"       # --penultimate-for-clusters default 1
    config.divide.kmeans_init = "random"        # faiss: K random points
    config.divide.kmeans_restarts = 1           # nredo=1
    config.divide.kmeans_iterations = 100       # niter=100

    config.eval.recall_ks = (1, 10, 100, 1000)  # the README's table: R@1/10/100
    config.eval.every_epochs = 1                # evaluated after every epoch
    config.checkpoint.keep_best_on_test = True  # the repository keeps the best test R@1
    return config

"""Every key of a dnc_jax run with its default, and what an older saved config is completed with.

Dataset configs start from `get_config()` (through `configs/default.py`) and override it.

Defaults follow the CVPR 2019 code's SOP run (docs/method.md §2.4): ResNet-50, 128-d, K=8 learners
on contiguous slices, recluster every 2 epochs, full embedding from epoch 80, whole-data finetune
from epoch 190, 200 epochs, learners taking turns (round robin) on batches of 20 classes x 4 images,
Adam 1e-5 with coupled wd 1e-4, margin loss alpha=0.2, beta=1.2 with distance-weighted sampling.
Round robin is the default because it trained better than the faster 'joint' step at equal images
seen (bench/accuracy.py, BENCHMARKS.md); 'joint' with the 'linear' learning-rate rule is the fast
variant.
"""
import copy
import functools

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.seed = 0                # model init, sampler order, augmentation and mining RNG
    config.num_epochs = 200        # training epochs (CVPR: 200)
    config.dtype = "auto"          # compute dtype: 'auto' = bfloat16 on GPU/TPU, float32 on CPU;
                                   # or 'float32' / 'bfloat16'. Params, embeddings, losses: float32.
    config.progress = True         # tqdm bar per epoch (process 0 only)
    config.log_every_steps = 20    # loss shown on the bar every this many steps
    config.steps_per_call = 1      # optimiser steps per compiled call: N > 1 runs a lax.scan
                                   # over N consecutive batches, each its own step (the updates
                                   # of one call per step, one dispatch); 0 = one round of
                                   # learners (divide.num_learners) under round_robin, 1 under
                                   # joint. 1 by default: XLA's CPU backend runs the scan's body
                                   # 2.5-3x slower (BENCHMARKS.md); on a GPU not measured yet
    config.compilation_cache_dir = "~/.cache/dnc_jax/xla"  # JAX's persistent compilation
                                   # cache: a second start or a resume of the same config
                                   # loads its compiled programs instead of compiling again;
                                   # '' turns it off (JAX_COMPILATION_CACHE_DIR, when set, wins)

    config.data = ml_collections.ConfigDict()
    config.data.name = "glyphs"    # data set: 'glyphs' (offline demo) | 'sop' | 'cub' | 'cars'
                                   # | 'inshop' | 'vehicleid' | 'folder' (one sub-folder per
                                   # class, or train/ + test/ or train/ + query/ + gallery/
                                   # of class folders) | 'csv' (path,label[,split] lines) | 'tfds'
    config.data.root = ""          # folder holding the data set in its official layout;
                                   # 'folder': the folder of class (or split) folders;
                                   # 'csv': the CSV file
    config.data.vehicleid_test = "large"  # VehicleID list evaluated as 'test' during training:
                                          # 'small' (800 ids) | 'medium' (1600) | 'large' (2400)
    config.data.split_seed = 0     # 'folder'/'csv' without splits given: seed of the shuffle
                                   # of the sorted class names that picks the train classes
    config.data.train_fraction = 0.5  # 'folder'/'csv' without splits given: the share of
                                      # classes that train (the rest: test)
    config.data.tfds_name = ""     # 'tfds': caltech_birds2011 | cars196 | stanford_online_products
    config.data.tfds_data_dir = ""  # 'tfds': where it is prepared ('': $TFDS_DATA_DIR, else
                                    # ~/tensorflow_datasets); never downloaded
    config.data.cache_dir = "~/.cache/dnc_jax"  # image files are packed (their own bytes,
                                   # checked once) into one cache file per split here
    config.data.view_workers = -1  # image files: processes decoding and cropping at the images'
                                   # own resolution (-1: one per core; 0: the main process)
    config.data.cache_eval_views = True  # image files: keep each eval view after its first
                                   # decode (an unlinked file under cache_dir, gone at exit), so
                                   # later evaluation/reclustering passes skip the decode (SOP at
                                   # 224 px: 18 GB of disk; False: decode every pass)
    config.data.image_size = 256   # glyphs: side of the rendered images (image files are used
                                   # at their own resolution)
    config.data.skip_bad_images = False  # skip corrupt/truncated images (warned) instead of failing
    config.data.batch_size = 80    # global batch of one step (all devices, all learners).
                                   # 'round_robin': the whole batch is one learner's (papers: 80);
                                   # 'joint': split among the K learners, batch_size // K each
                                   # (use K x 80 so each learner gets the papers' 20 classes x 4)
    config.data.samples_per_class = 4  # M images per class in a batch (P = batch / M classes)
    config.data.epoch_length = "exact"  # 'exact': every usable image drawn once an epoch;
                                        # 'official': len(cluster) // batch batches per learner,
                                        # the official sampler's (fewer images where classes are
                                        # small: SOP 1 / 1.5)
    config.data.sampler = "exact"  # 'exact': every usable image once an epoch (chunks of M per
                                   # class); 'official': classes drawn uniformly for every
                                   # batch, as the paper's own code (CVPR: short classes repeat
                                   # images; PAMI: other images fill the batch)
    config.data.eval_batch_size = 256  # images per embedding step at evaluation/clustering
    config.data.glyphs = ml_collections.ConfigDict()
    config.data.glyphs.classes = "letters"  # 'letters' (Latin, Greek, Cyrillic, digits,
                                   # symbols) | 'scripts' (9 scripts and symbol blocks as
                                   # super-classes, 40 characters each) | 'pretrain' (a
                                   # corpus disjoint from both, for pretraining)
    config.data.glyphs.labels = "character"  # 'character' | 'block': a character's script or
                                   # symbol block is its label (scripts, pretrain), a task
                                   # coarser than the targets', as ImageNet's is to CUB's
    config.data.glyphs.seed = 0        # glyph rendering and class split (not the training seed)
    config.data.glyphs.min_faces = 12  # keep characters drawn by at least this many font faces
    config.data.glyphs.instances_per_face = 1  # jittered renderings per (character, face)
    config.data.glyphs.max_classes = -1  # keep only this many characters (-1: all), for tests

    config.augment = ml_collections.ConfigDict()
    config.augment.image_size = 224          # side of the network's input crop
    config.augment.crop_scale = (0.08, 1.0)  # RandomResizedCrop area fraction range
    config.augment.crop_ratio = (3 / 4, 4 / 3)  # RandomResizedCrop aspect ratio range
    config.augment.flip = True               # random horizontal flip in training
    config.augment.eval_crop_fraction = 224 / 256  # eval: center crop of this share of the side
    config.augment.normalization = "imagenet"  # mean/std the backbone's weights expect:
                                   # 'imagenet' (torchvision, timm's DINO and ImageNet-21k ViTs)
                                   # | 'clip' (OpenAI CLIP) | 'inception' (0.5/0.5)

    config.model = ml_collections.ConfigDict()
    config.model.name = "resnet50"   # resnet18 | resnet34 | resnet50 | resnet101 | resnet_tiny
                                     # | vit_s16 | vit_b16 | vit_<ti|s|b|l><patch> (timm's
                                     # ViT layout) | vit_micro (tests, CPU demo)
                                     # | convnext_tiny | convnext_small | convnext_base (timm's
                                     # ConvNeXt layout) | convnext_micro (tests)
    config.model.width = 64          # channels of the first stage (torchvision: 64)
    config.model.stem = "imagenet"   # 'imagenet' (7x7/2 + max-pool) | 'small' (3x3/1, tiny images)
    config.model.bn_frozen = True    # BN statistics frozen, scale/bias trained (official code)
    config.model.pooling = "avg"     # 'avg' | 'max' global pooling; ViT also 'token' (the
                                     # class token); ViT 'avg'/'max' pool the patch tokens;
                                     # ViT 'fc_norm': patch mean then a LayerNorm, no final
                                     # norm (timm's global_pool='avg' checkpoints); ViT 'map':
                                     # attention pooling by a learned query (SigLIP's head)
    config.model.dropout = 0.01      # dropout after pooling (official code)
    config.model.embedding_dim = 128  # d, the embedding size (CVPR 128, PAMI 512)
    config.model.head_init = "cvpr"  # 'cvpr' (xavier_normal per learner block) | 'pt_default'
    # Backbone weights: a .safetensors/.npz/.pth file of a torchvision-layout state dict, or a
    # Hugging Face hub id; '' = random init. Default: torchvision's ImageNet-1k V1 ResNet-50.
    config.model.pretrained = "timm/resnet50.tv_in1k"
    config.model.vit = ml_collections.ConfigDict()  # ViT backbones only (model.name vit_*)
    config.model.vit.pre_norm = False  # LayerNorm on the tokens before the blocks (CLIP: True)
    config.model.vit.act = "gelu"      # MLP activation: 'gelu' (exact) | 'quick_gelu' (OpenAI
                                       # CLIP) | 'gelu_tanh' (tanh approximation) | 'silu'
    config.model.vit.norm_eps = 1e-6   # LayerNorm epsilon (timm's ViTs 1e-6, CLIP 1e-5)
    config.model.vit.drop_path = 0.0   # stochastic depth rate of the last block (linear in depth)
    config.model.vit.layer_scale = False  # LayerScale ls1/ls2 in the blocks (DINOv2, DeiT-III)
    config.model.vit.reg_tokens = 0    # register tokens after the class token (timm's *_reg4_*: 4)
    config.model.vit.no_embed_class = False  # position embeddings for the patches only, none
                                       # for the class/register tokens (timm's reg4 DINOv2: True)
    config.model.vit.projection = 0    # CLIP's output projection (timm's `head`, e.g. 512 for
                                       # ViT-B/16) after pooling, as the pooled feature; 0: none
    config.model.vit.class_token = True  # a class token first (SigLIP: False; then pooling is
                                       # 'avg', 'max', 'fc_norm' or 'map')
    config.model.vit.mlp = "plain"     # block MLP: 'plain' (fc1, act, fc2) | 'swiglu' (timm's
                                       # SwiGLUPacked: fc1 packs value and gate; DINOv2 giant)
    config.model.vit.mlp_hidden = 0    # fc1's output width; 0: the size's own (4 x width;
                                       # SwiGLU: DINOv2's 2 x round8(8/3 x width))
    config.model.convnext = ml_collections.ConfigDict()  # ConvNeXt backbones only
    config.model.convnext.drop_path = 0.0  # stochastic depth rate of the last block (linear in
                                       # depth over all stages, as timm)

    config.loss = ml_collections.ConfigDict()
    config.loss.name = "margin"       # base loss each learner applies to its cluster: margin |
                                      # triplet | contrastive | multi_similarity | proxy_anchor |
                                      # normalized_softmax | npairs
    config.loss.miner = "distance_weighted"  # margin/triplet miner: distance_weighted |
                                      # easy_peasy (CVPR code) | semi_hard | batch_hard | all
    config.loss.negatives_per_anchor = 0  # distance_weighted/easy_peasy k; 0 = M - 1 (official)
    config.loss.cutoff = 0.5          # distances clamped below this (distance_weighted) or never
                                      # a negative (easy_peasy)
    config.loss.nonzero_loss_cutoff = 1.4  # distance_weighted: farther negatives get weight 1e-6
    config.loss.distance_weighted_dim = "view"  # distance_weighted: n of the distance density
                                      # it undoes: 'view' (the dims a learner's mask keeps, d/K
                                      # for slices) | 'embedding' (d, as PAMI's code always does)
    config.loss.easy_peasy_strict = True  # too few valid negatives: drop the penalised picks
                                      # (False reproduces the official code's fill-in)
    config.loss.margin = 0.2          # alpha of the margin loss; the triplet margin
    config.loss.beta = 1.2            # beta, or its initial value when learnable
    config.loss.beta_mode = "fixed"   # fixed (both official runs) | global | per_class
    config.loss.nu = 0.0              # weight of the L1 penalty on the betas used
    config.loss.soft = False          # triplet: softplus(d_ap - d_an) instead of the hinge
    config.loss.triplet_average = "auto"  # triplet: average over 'nonzero' or 'valid' triplets
    config.loss.pos_margin = 0.0      # contrastive: relu(d - pos_margin)^2 for positives
    config.loss.neg_margin = 1.0      # contrastive: relu(neg_margin - d)^2 for negatives
    config.loss.ms_alpha = 2.0        # multi-similarity alpha
    config.loss.ms_beta = 50.0        # multi-similarity beta
    config.loss.ms_lambda = 0.5       # multi-similarity lambda (the authors' code value)
    config.loss.ms_epsilon = 0.1      # multi-similarity pair-mining margin
    config.loss.proxy_alpha = 32.0    # proxy-anchor alpha
    config.loss.proxy_delta = 0.1     # proxy-anchor delta
    config.loss.temperature = 0.05    # normalised softmax temperature
    config.loss.npairs_alpha = 1.0    # npairs initial scale
    config.loss.beta_learning_rate = 5e-4   # Adam lr of learnable betas (no weight decay)
    config.loss.proxy_learning_rate = 1e-3  # Adam lr of proxies (100 x the head's)
    config.loss.alpha_learning_rate = 1.0   # Adam lr of the npairs scale (PAMI --lr-alpha)

    config.optim = ml_collections.ConfigDict()
    for group in ("backbone", "head"):     # Adam with coupled L2 weight decay per group
        config.optim[group] = ml_collections.ConfigDict()
        config.optim[group].learning_rate = 1e-5  # Adam learning rate (both official repos)
        config.optim[group].weight_decay = 1e-4   # coupled L2 (CVPR and PAMI README: 1e-4)
    config.optim.joint_lr_rule = "sqrt"    # 'joint' schedule: network rate x sqrt(K) ('sqrt'),
                                           # x K ('linear') or x 1 ('none'), K = the epoch's
                                           # active learners (a joint epoch has K x fewer steps;
                                           # 'linear' helped from scratch, overshot at K=8 from
                                           # a pretrained start: BENCHMARKS.md)
    config.optim.lr_decay_every = 0        # every this many epochs, multiply every learning
                                           # rate by lr_decay_factor (0: constant, both repos)
    config.optim.lr_decay_factor = 0.3     # the factor of that step decay (lr_decay_every)
    config.optim.algorithm = "adam_coupled"  # 'adam_coupled': torch Adam, weight decay added to
                                   # the gradient (both papers) | 'adamw': decoupled decay,
                                   # lr x weight_decay x param a step (torch/optax AdamW)
    config.optim.layer_decay = 1.0   # ViT/ConvNeXt layer-wise lr decay (timm's layer ids):
                                     # block i of L trains at rate x layer_decay^(L - i),
                                     # embeddings at ^L+1 (1.0: off)
    config.optim.warmup_steps = 0    # backbone and head rates ramp linearly from 0 over this
                                     # many optimiser steps (0: off)
    config.optim.trust_ratio = False   # LAMB's layer-wise trust ratio on the backbone and head:
                                     # each leaf's update rescaled to ||param|| / ||update||,
                                     # a large-batch remedy (then rates are relative steps)
    config.optim.clip_grad_norm = 0.0  # clip the global gradient norm to this (0: off)
    config.optim.no_decay_1d = False   # no weight decay on biases, norms and ViT tokens
    config.optim.masks = ml_collections.ConfigDict()  # PAMI learned masks (divide.masks='learned')
    config.optim.masks.learning_rate = 1e-3  # Adam learning rate of the masks (PAMI README:
                                             # base lr 1e-5 x mask_lr_mult 100)
    config.optim.masks.weight_decay = 1e-4   # coupled L2 of the masks (PAMI README:
                                             # mask_wd_mult 1 x 1e-4)

    config.divide = ml_collections.ConfigDict()
    config.divide.num_learners = 8         # K clusters / learners; 1 = the plain baseline
    config.divide.learner_schedule = "round_robin"  # 'joint': every step splits its batch among the
                                              # K learners (one summed loss); 'round_robin':
                                              # learners take turns, one batch and one optimiser
                                              # step each (the official code's schedule)
    config.divide.recluster_every = 2      # epochs between reclusterings (0: never)
    config.divide.warmup_epochs = 0        # 'cvpr': train one learner on all data for this many
                                           # epochs before the first clustering (0: cluster the
                                           # starting model, as the papers do)
    config.divide.full_embedding_epoch = 80  # from this epoch learners train the whole
                                             # embedding on their clusters (-1: never)
    config.divide.finetune_epoch = 190     # from this epoch one learner, all data (-1: never)
    config.divide.schedule = "cvpr"        # phase plan: 'cvpr' (K fixed, finetune at the end) |
                                           # 'pami' (K doubles 1 -> num_learners, top_bot splits)
    config.divide.freeze_epochs = 0        # backbone lr 0 on the first this-many epochs of every
                                           # recluster period (PAMI README: 1)
    config.divide.masks = "slices"         # 'slices': CVPR blocks, each normalised on its own;
                                           # 'fixed': PAMI fixed hierarchical halves;
                                           # 'learned': PAMI learnable masks (relu)
    config.divide.mask_init = "ones"       # learned masks start as 'ones' | 'normal' N(0.9, 0.7)
    config.divide.orthogonality_weight = 0.01  # lambda of the mask orthogonality penalty
    config.divide.kmeans_trials = 1        # k-means runs until every cluster has >= 2 classes
                                           # with >= 2 images (PAMI: 30; CVPR: 1)
    config.divide.split_trials = 30        # the same rule for each 2-means split (PAMI)
    config.divide.cluster_on = "features"  # 'features' (L2-normalised pooled backbone output,
                                           # official) | 'embedding'
    config.divide.kmeans_init = "random"   # 'random' (faiss default) | 'kmeans++'
    config.divide.kmeans_restarts = 1      # restarts, best inertia kept (official: 1)
    config.divide.kmeans_iterations = 100  # Lloyd iterations at most (official: 100)

    config.eval = ml_collections.ConfigDict()
    config.eval.recall_ks = (1, 2, 4, 8)   # Recall@K reported on the test classes
    config.eval.every_epochs = 1           # evaluate on the test split every this many epochs
    config.eval.block_size = 1024          # queries per blocked similarity matmul
    config.eval.map_at_r = True            # also MAP@R, R-precision and the PAMI code's mARP
    config.eval.nmi = False                # also NMI (k-means with one cluster per test class;
                                           # costly on SOP: 11k clusters)
    config.eval.nmi_seeds = (0,)           # one k-means per seed; mean (and std) reported

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.keep = 2             # most recent checkpoints kept
    config.checkpoint.every_epochs = 1     # save after every this many epochs
    config.checkpoint.keep_best_on_test = True  # also keep the best-R@1 epoch's weights in
                                           # checkpoint_best_selected_on_test/ (model selection
                                           # on the test set, as the official repos do)
    config.checkpoint.every_steps = 0      # also save every this many steps inside an epoch
                                           # (0: only at epoch ends and on SIGTERM/SIGINT)
    return config


# Keys added after runs were saved without them, with the value that does what the code did
# before the key existed: a run saved without such a key resumes, evaluates and embeds as it was
# trained (`complete`), and counts as unchanged on resume when the key holds that value
# (`run_guard.changed_keys`). These are the fallbacks the code's own `.get(key, value)` reads
# gave such a run; a key whose older value is its default is listed too, so that resuming an
# older run with the default is no change.
ADDED_KEYS = {
    "steps_per_call": 1,
    "compilation_cache_dir": "",
    "data.epoch_length": "exact",
    "data.sampler": "exact",
    "data.glyphs.classes": "letters",
    "data.glyphs.labels": "character",
    "data.view_workers": -1,
    "data.cache_eval_views": False,
    "data.skip_bad_images": False,
    "data.tfds_name": "",
    "augment.normalization": "imagenet",
    "optim.algorithm": "adam_coupled",
    "optim.layer_decay": 1.0,
    "optim.warmup_steps": 0,
    "optim.clip_grad_norm": 0.0,
    "optim.trust_ratio": False,
    "optim.no_decay_1d": False,
    "loss.distance_weighted_dim": "view",
    "optim.joint_lr_rule": "none",
    "optim.lr_decay_every": 0,
    "optim.lr_decay_factor": 1.0,
    "divide.schedule": "cvpr",
    "divide.warmup_epochs": 0,
    "divide.freeze_epochs": 0,
    "checkpoint.every_steps": 0,
    "checkpoint.keep_best_on_test": False,
    "model.vit.layer_scale": False,
    "model.vit.reg_tokens": 0,
    "model.vit.no_embed_class": False,
    "model.vit.projection": 0,
    "model.vit.class_token": True,
    "model.vit.mlp": "plain",
    "model.vit.mlp_hidden": 0,
    "model.convnext.drop_path": 0.0,
}


@functools.lru_cache(maxsize=1)
def _defaults() -> dict:
    """`get_config()` as a plain dict, built once: `filled` runs per epoch. Only read, never
    handed out (`_fill` copies what it takes)."""
    return get_config().to_dict()


def _fill(values: dict, default: dict, prefix: str) -> dict:
    """`values` with every key of `default` it lacks; `prefix` dots the names ADDED_KEYS uses.
    An absent section is filled key by key, so its added keys get their older values too."""
    out = dict(values)
    for key, value in default.items():
        name = prefix + key
        if isinstance(value, dict):
            present = out.get(key, {})
            if isinstance(present, dict):
                out[key] = _fill(present, value, name + ".")
        elif key not in out:
            out[key] = copy.deepcopy(ADDED_KEYS.get(name, value))
    return out


def _as_dict(config) -> dict:
    """A plain, unshared dict of a ConfigDict, FrozenConfigDict or dict (nested ones too)."""
    if not isinstance(config, ml_collections.ConfigDict | ml_collections.FrozenConfigDict):
        config = ml_collections.ConfigDict(dict(config))
    return copy.deepcopy(config.to_dict())


def complete(config) -> ml_collections.ConfigDict:
    """A new, unlocked copy of a whole run config with every absent key filled: with its
    ADDED_KEYS value where listed (an older saved run keeps its behaviour), else with the
    default. Present keys are kept as they are (lists read back from JSON too), unknown ones
    too."""
    return ml_collections.ConfigDict(_fill(_as_dict(config), _defaults(), ""))


def filled(section, name: str) -> ml_collections.ConfigDict:
    """`complete` for one section, `name` its dotted place in a run config
    (`filled(loss_config, "loss")`): functions that take a section accept a partial one, as
    tests and library users build them."""
    default = _defaults()
    for part in name.split("."):
        default = default[part]
    return ml_collections.ConfigDict(_fill(_as_dict(section), default, name + "."))

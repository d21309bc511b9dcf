"""Stanford Online Products with the PAMI 2021 README run (METHOD.md §1.3, §1.4, §2.4).

K grows 1 -> 32 by splitting every cluster in two at each recluster (top_bot), learned masks
(relu, init ones, lr 1e-3, wd 1e-4, orthogonality lambda 0.01), the backbone frozen on every
recluster epoch, the whole 512-d embedding from epoch 80, 180 epochs, batches of 40 classes x 2
images, Adam 1e-5 with coupled wd 1e-4, margin loss with distance-weighted sampling, seed 4,
30 k-means trials. Evaluation uses the normalised, unmasked embedding.

Set --config.data.root to the folder holding Ebay_train.txt and Ebay_test.txt. For the README's
"fixed" rows use --config.divide.masks=fixed.
"""
from configs import sop


def get_config():
    config = sop.get_config()
    config.seed = 4
    config.num_epochs = 180
    config.model.embedding_dim = 512
    config.model.head_init = "pt_default"
    config.data.batch_size = 80
    config.data.samples_per_class = 2
    config.divide.schedule = "pami"
    config.divide.num_learners = 32
    config.divide.recluster_every = 2
    config.divide.freeze_epochs = 1
    config.divide.full_embedding_epoch = 80
    config.divide.finetune_epoch = -1
    config.divide.masks = "learned"
    config.divide.orthogonality_weight = 0.01
    config.divide.kmeans_trials = 30
    config.divide.split_trials = 30
    config.divide.learner_schedule = "round_robin"  # the official code's schedule
    config.data.epoch_length = "official"  # its samplers' len(cluster) // 80 batches an epoch
    # PAMI's DistanceWeightedSampler takes n = the embedding width (512) even for masked views.
    config.loss.distance_weighted_dim = "embedding"
    config.optim.masks.learning_rate = 1e-3
    config.optim.masks.weight_decay = 1e-4
    return config

"""Stanford Online Products, the fast variant of configs/sop.py: one joint step for all learners.

configs/sop.py with divide.learner_schedule='joint': every step's batch of 640 is split among the
K=8 learners, each part holding the papers' 20 classes x 4 from its cluster, and the loss is the
sum of the learners' losses, so an epoch takes 8 times fewer optimiser steps (one compiled step,
the accelerator kept busy) for the same images. optim.joint_lr_rule='sqrt' multiplies the
network's learning rate by sqrt(K) of the epoch's active K to make up for the fewer Adam steps:
from a pretrained backbone, at K=8 and the rate that suits round robin, 'linear' (x 8) lost 4.6
points of R@1 to it, while from scratch a larger rate helped joint (BENCHMARKS.md, "From a
pretrained start"): sqrt lies between the two. Joint trained worse than round
robin in this project's accuracy grids (docs/accuracy.md; it is not the papers' schedule):
use it for speed, configs/sop.py or configs/cvpr/sop.py for accuracy.
"""
from dnc_jax.configs import sop


def get_config():
    config = sop.get_config()
    config.divide.learner_schedule = "joint"
    config.data.batch_size = 640           # K x 80: each learner's part is 20 classes x 4
    config.optim.joint_lr_rule = "sqrt"  # network lr x sqrt(K): a joint epoch has K x fewer steps
    return config

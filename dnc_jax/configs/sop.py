"""Stanford Online Products with this project's recipe (dnc_jax/defaults.py's values).

This project's recipe: the CVPR schedule (K=8 slices of a 128-d embedding, recluster every 2
epochs, whole embedding from epoch 80, whole-data finetune from 190, 200 epochs, learners taking
turns on batches of 20 classes x 4, Adam 1e-5 / coupled wd 1e-4, margin loss alpha 0.2 beta 1.2)
with distance-weighted mining (the author's advice in the CVPR repository's issue #6), every
usable image once an epoch, and bfloat16 compute on accelerators. It is not the official
recipe: that is configs/cvpr/sop.py (the CVPR README command: EasyPeasy miner, the official
sampler's epoch length and batches, float32); configs/sop_joint.py is the fast variant of this
one. docs/papers.md, "This project's recipe against the CVPR command", lists the differences.

Set --config.data.root to the folder holding Ebay_train.txt and Ebay_test.txt.
"""
from dnc_jax.configs import default


def get_config():
    config = default.get_config()
    config.data.name = "sop"
    # The papers' SOP protocol (CVPR table: R@1/10/100/1000); the CVPR code logs R@1/2/4/8.
    config.eval.recall_ks = (1, 10, 100, 1000)
    return config

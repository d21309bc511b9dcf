"""In-shop Clothes Retrieval with this project's recipe (dnc_jax/defaults.py's values).

This project's recipe: the CVPR schedule (K=8, d=128, 200 epochs, batches of 20 classes x 4,
Adam 1e-5 / wd 1e-4, recluster every 2 epochs, full embedding from epoch 80, whole-data finetune
from 190) with distance-weighted mining, every usable image once an epoch, and bfloat16 compute
on accelerators. The official recipe, the CVPR README command, is configs/cvpr/inshop.py.

Set --config.data.root to the folder holding Eval/list_eval_partition.txt and img/. Evaluation
retrieves the query images (14,218) from the gallery (12,612), 3,985 identities.
"""
from dnc_jax.configs import default


def get_config():
    config = default.get_config()
    config.data.name = "inshop"
    # The In-shop protocol; the CVPR code logs R@1/10/20/30/50, 40 completes the usual table.
    config.eval.recall_ks = (1, 10, 20, 30, 40, 50)
    return config
